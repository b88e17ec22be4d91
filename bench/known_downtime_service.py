"""A service whose downtime is known exactly, for bench/recovery_accuracy.py.

Serves /health with 200. On SIGUSR1 it answers 503 for exactly DOWN seconds (measured on its
own monotonic clock), then 200 again, and appends "<down_start> <down_end>" to TRUTH_FILE.
Never used by the runner itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOWN = float(os.environ.get("DOWN_SECONDS", "2.0"))
TRUTH_FILE = os.environ.get("TRUTH_FILE", "/dev/null")
state = {"down_until": 0.0}


def on_signal(signum: int, frame: object) -> None:
    start = time.monotonic()
    state["down_until"] = start + DOWN
    with open(TRUTH_FILE, "a") as truth:
        truth.write(f"{start:.6f} {start + DOWN:.6f}\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        down = time.monotonic() < state["down_until"]
        body = b"down" if down else b"ok"
        self.send_response(503 if down else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    signal.signal(signal.SIGUSR1, on_signal)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
