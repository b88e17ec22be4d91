"""The demo app of the chaos-demo system: an HTTP counter kept in Redis found through Sentinel.

GET / increments a counter on the current Redis primary and returns it; GET /health answers 200
only while that primary answers. Standard library only (RESP over a socket), so any image with
python3 runs it. It must never go on using a Redis address after an error without asking the
Sentinels again: that is what lets it follow a failover.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COUNTER_KEY = "chaos-demo:counter"
MAX_IDLE_CONNECTIONS = 16
HOSTNAME = socket.gethostname()

Reply = None | int | bytes | list[Any]
"""A decoded RESP reply: simple and bulk strings as bytes, integers, arrays, or None (nil)."""


class RedisError(Exception):
    """An error reply from Redis or Sentinel ("ERR ...", "READONLY ...", "LOADING ...")."""


class RedisUnavailable(Exception):
    """No primary could run the command, even after asking the Sentinels again."""


class RespConnection:
    """One socket to a Redis server or a Sentinel, speaking RESP2."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.address = address
        self._sock = socket.create_connection(address, timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")

    def call(self, *args: str | int) -> Reply:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Reply:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"{self.name}: connection closed")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            raise RedisError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError(f"{self.name}: connection closed mid-reply")
            return data[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ConnectionError(f"{self.name}: not a RESP reply: {line[:40]!r}")

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class Primary:
    """The Redis primary that the Sentinels currently name, with a pool of connections to it.

    Every failure forgets the address and the pool, so the next attempt asks the Sentinels
    afresh; a server that answers ROLE with anything but "master" is never used for writes.
    """

    def __init__(self, sentinels: list[tuple[str, int]], name: str, timeout: float) -> None:
        self._sentinels = sentinels
        self._name = name
        self._timeout = timeout
        self._lock = threading.Lock()
        self._address: tuple[str, int] | None = None
        self._idle: list[RespConnection] = []
        self._announced: tuple[str, int] | None = None

    def call(self, *args: str | int) -> tuple[Reply, str]:
        """Run one command on the primary: its reply and the primary's host:port. After a
        failure, ask the Sentinels again and retry once; raise RedisUnavailable if that fails."""
        try:
            return self._call_once(args)
        except (OSError, RedisError, RedisUnavailable):
            self._forget()
        try:
            return self._call_once(args)
        except (OSError, RedisError) as exc:
            self._forget()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except RedisUnavailable:
            self._forget()
            raise

    def _call_once(self, args: tuple[str | int, ...]) -> tuple[Reply, str]:
        connection = self._checkout()
        try:
            reply = connection.call(*args)
        except BaseException:
            connection.close()
            raise
        self._checkin(connection)
        return reply, connection.name

    def _checkout(self) -> RespConnection:
        with self._lock:
            address = self._address
            if address is not None and self._idle:
                return self._idle.pop()
        if address is None:
            address = self._discover()
        connection = RespConnection(address, self._timeout)
        try:
            role = connection.call("ROLE")
            if not (isinstance(role, list) and role and role[0] == b"master"):
                raise RedisUnavailable(f"{connection.name} is not a primary (yet)")
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self._address = address
            if address != self._announced:
                self._announced = address
                print(f"redis primary: {connection.name}", file=sys.stderr, flush=True)
        return connection

    def _checkin(self, connection: RespConnection) -> None:
        with self._lock:
            if connection.address == self._address and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def _forget(self) -> None:
        # Dropping the address as well as the pool is what makes the next _checkout ask the
        # Sentinels: keeping it would retry a dead primary's name forever after a failover.
        with self._lock:
            idle, self._idle = self._idle, []
            self._address = None
        for connection in idle:
            connection.close()

    def _discover(self) -> tuple[str, int]:
        errors = []
        # A random order spreads the questions and gets past a dead Sentinel on the next try.
        for sentinel in random.sample(self._sentinels, len(self._sentinels)):
            try:
                connection = RespConnection(sentinel, self._timeout)
                try:
                    reply = connection.call("SENTINEL", "get-master-addr-by-name", self._name)
                finally:
                    connection.close()
            except (OSError, RedisError) as exc:
                errors.append(f"{sentinel[0]}:{sentinel[1]}: {exc}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            errors.append(f"{sentinel[0]}:{sentinel[1]}: no primary named {self._name!r}")
        raise RedisUnavailable("no Sentinel names a primary: " + "; ".join(errors))


class Handler(BaseHTTPRequestHandler):
    server_version = "chaos-demo-app"
    primary: Primary  # set on the class by main()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/health"):
            self._reply(404, {"error": f"no such path: {path}"})
            return
        try:
            if path == "/":
                count, redis = self.primary.call("INCR", COUNTER_KEY)
                self._reply(200, {"count": count, "replica": HOSTNAME, "redis": redis})
            else:
                _, redis = self.primary.call("PING")
                self._reply(200, {"status": "ok", "replica": HOSTNAME, "redis": redis})
        except RedisUnavailable as exc:
            self._reply(503, {"error": str(exc), "replica": HOSTNAME})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request under load would bury the lines that matter (primary changes).
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default (5) refuses connections under a modest load
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up first (a health check past its timeout during a failover)
        # is routine here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """The SENTINELS variable, "host:port,host:port", as [(host, port), ...]."""
    sentinels = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        sentinels.append((host, int(port)))
    return sentinels


def main() -> None:
    sentinels = parse_sentinels(
        os.environ.get("SENTINELS", "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379")
    )
    Handler.primary = Primary(
        sentinels,
        os.environ.get("REDIS_MASTER_NAME", "demo"),
        float(os.environ.get("REDIS_TIMEOUT", "1.0")),
    )
    # PID 1 gets no default SIGTERM handler: without this, `docker stop` waits out its grace.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    port = int(os.environ.get("PORT", "8000"))
    with Server(("", port), Handler) as server:
        print(f"chaos-demo app {HOSTNAME} on :{port}, sentinels {sentinels}", file=sys.stderr)
        server.serve_forever()


if __name__ == "__main__":
    main()
