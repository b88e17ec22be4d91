"""A real HTTP server on 127.0.0.1 for the probe tests, with endpoints that misbehave on cue.

Named apart from conftest so that test modules can import its types without clashing with
another directory's conftest.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Server:
    url: str
    peers: list[tuple[str, int]] = field(default_factory=list)
    """(address, port) of the client connection of every request, in order."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address)  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path == "/ok":
            self._send(200, b"ok")
        elif path == "/fail":
            self._send(500, b"internal error")
        elif path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
            self._send(200, b"slow ok")
        elif path == "/body":
            self._send(200, b"hello world, version 1.2.3")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/drip":
            # Headers at once, then the body a byte at a time: a slow body, not a slow server.
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/hangup":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path == "/health":
            healthy = int(query.get("healthy", ["3"])[0])
            replicas = [{"name": f"app-{i}", "healthy": i < healthy} for i in range(3)]
            self._send(200, json.dumps({"replicas": replicas}).encode())
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._send(201, b"got " + body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """Clients that give up (timeouts are the point here) are not errors worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state = Server(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.peers = state.peers  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
