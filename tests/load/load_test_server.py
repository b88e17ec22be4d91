"""A real HTTP/1.1 server on 127.0.0.1 that counts what it serves, for the load tests.

Paths: "/" answers 200 at once, "/fail" answers 500, "/slow" answers 200 after 50 ms,
"/other" answers 200 (to tell user classes apart).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 0.05


@dataclass
class CountingServer:
    url: str
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(self.counts.values()) if path is None else self.counts[path]


def _handler(server: CountingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real service

        def do_GET(self) -> None:
            with server.lock:
                server.counts[self.path] += 1
            if self.path == "/slow":
                time.sleep(SLOW_SECONDS)
            status = 500 if self.path == "/fail" else 200
            body = b"failing on purpose\n" if status == 500 else b"ok\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve() -> Iterator[CountingServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.daemon_threads = True
    server = CountingServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
