"""The demo HTTP service of the embedded local target: one replica per process.

A minimal asyncio HTTP/1.1 responder (keep-alive, pipelining) on 127.0.0.1: `/` and `/health`
answer a small JSON naming the replica, `/work?ms=N` answers after N ms. It holds no state
worth keeping and must never outlive the runner that started it.

    python -m chaos_runner.targets.local.service --port 8081 --name replica-0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from urllib.parse import parse_qs, urlsplit

READY_LINE = "ready"
"""First word of the line printed on stdout once the replica listens."""

MAX_HEAD = 64 * 1024
MAX_WORK_MS = 60_000
PARENT_CHECK = 0.5


class HttpReplica(asyncio.Protocol):
    """One client connection. Requests are answered in order, one at a time (pipelining)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closing = False
        ok = json.dumps({"replica": name, "ok": True}).encode()
        self.ok_response = _response(200, ok, keep_alive=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.answer_buffered()

    def answer_buffered(self) -> None:
        """Answer every complete request in the buffer, stopping at a slow one (/work)."""
        while self.transport is not None and not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.fail(431, "request head too large")
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self.fail(400, "malformed request line")
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self.fail(400, "bad content-length")
                return
            if length < 0 or "chunked" in headers.get("transfer-encoding", "").lower():
                self.fail(400, "only content-length bodies are accepted")
                return
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                version == "HTTP/1.1" or connection == "keep-alive"
            )
            if not self.respond(method, target, keep_alive=keep_alive):
                return

    def respond(self, method: str, target: str, *, keep_alive: bool) -> bool:
        """Answer one request; False when the answer is deferred or the connection closes."""
        url = urlsplit(target)
        head = method == "HEAD"
        if url.path == "/work":
            try:
                ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            except ValueError:
                bad = _response(400, b'{"error":"ms must be an integer"}', keep_alive)
                return self.finish(bad, keep_alive, head_only=head)
            self.busy = True
            delay = min(max(ms, 0), MAX_WORK_MS) / 1000.0
            asyncio.get_running_loop().call_later(delay, self.work_done, ms, keep_alive, head)
            return False
        if url.path in ("/", "/health"):
            ok = self.ok_response if keep_alive else _response(200, self.body(), keep_alive)
            return self.finish(ok, keep_alive, head_only=head)
        missing = _response(404, b'{"error":"not found"}', keep_alive)
        return self.finish(missing, keep_alive, head_only=head)

    def finish(self, response: bytes, keep_alive: bool, *, head_only: bool = False) -> bool:
        """Send an answer and close after it unless the connection is kept alive."""
        self.send(response, head_only=head_only)
        if not keep_alive:
            self.close()
        return keep_alive

    def work_done(self, ms: int, keep_alive: bool, head: bool) -> None:
        self.busy = False
        done = _response(200, self.body(worked_ms=ms), keep_alive)
        if self.finish(done, keep_alive, head_only=head):
            self.answer_buffered()

    def body(self, **extra: object) -> bytes:
        return json.dumps({"replica": self.name, "ok": True, **extra}).encode()

    def send(self, response: bytes, *, head_only: bool = False) -> None:
        if self.transport is None:
            return
        if head_only:
            response = response[: response.index(b"\r\n\r\n") + 4]
        self.transport.write(response)

    def fail(self, status: int, reason: str) -> None:
        self.send(_response(status, json.dumps({"error": reason}).encode(), keep_alive=False))
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Header Too Large"}


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def serve(port: int, name: str, start_delay: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    if start_delay > 0:
        # A slow boot: the port stays closed (connections refused) until the delay is over.
        await asyncio.sleep(start_delay)
    server = await loop.create_server(
        lambda: HttpReplica(name), "127.0.0.1", port, reuse_address=True, backlog=1024
    )
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound = server.sockets[0].getsockname()[1]
    print(f"{READY_LINE} {name} 127.0.0.1:{bound} pid={os.getpid()}", flush=True)
    while not stop.is_set():
        # Whoever started us is gone (reparented): a replica never outlives its runner,
        # even when it was started without PR_SET_PDEATHSIG.
        if os.getppid() != parent:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_CHECK)
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--name", default="replica", help="name reported in every answer")
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds before listening (slow boot)"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.name, args.start_delay))
    except OSError as exc:
        print(f"{args.name}: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
