"""The TCP fault proxy of the embedded local target, run in its own process.

It round-robins each new client connection over the replicas' ports (on 127.0.0.1) and
applies faults that the runner sets and clears through its stdin and stdout. It exits when
its stdin closes (the runner is gone), so a fault never outlives the runner that made it.
It never retries a backend: a replica that refuses is a client error, as it should be.

    python -m chaos_runner.targets.local.proxy --port 0 --backend 8081 --backend 8082

The control channel is described in `control`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
MAX_DELAYED = 1 << 20
"""Bytes a latency fault may hold back per connection before the upstream read pauses."""

FAULT_KINDS = frozenset({"latency", "reset", "refuse", "blackhole"})


@dataclass(eq=False)
class Fault:
    """One active fault. `links` are the connections it was drawn for (latency, blackhole)."""

    id: str
    kind: str
    share: float = 1.0
    latency: float = 0.0
    jitter: float = 0.0
    reset_existing: bool = False
    links: set[Link] = field(default_factory=set)

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> Fault:
        kind = str(request.get("kind"))
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})"
            )
        fault = cls(
            id=str(request["id"]),
            kind=kind,
            share=float(request.get("share", 1.0)),
            latency=float(request.get("latency", 0.0)),
            jitter=float(request.get("jitter", 0.0)),
            reset_existing=bool(request.get("reset_existing", False)),
        )
        if not 0.0 <= fault.share <= 1.0:
            raise ValueError(f"share must be between 0 and 1, got {fault.share}")
        if fault.latency < 0 or fault.jitter < 0:
            raise ValueError("latency and jitter cannot be negative")
        return fault

    def draw(self) -> bool:
        return self.share >= 1.0 or random.random() < self.share


def reset(transport: asyncio.Transport) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN: the peer sees 'connection reset'."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Link(asyncio.Protocol):
    """One client connection and its upstream connection to a replica.

    Reading from a side pauses when the other side's write buffer is full (flow control),
    while a blackhole freezes the link, or (client side) until the upstream is connected.
    """

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.early = bytearray()
        self.dropping = False
        self.frozen = False
        self.client_full = False
        self.upstream_full = False
        self.release_at = 0.0
        self.delayed = 0
        self.client_done = False
        self.upstream_done = False
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- client side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client = transport
        self.proxy.accepted += 1
        if any(f.kind == "reset" and f.draw() for f in self.proxy.faults.values()):
            self.closed = True
            reset(transport)
            return
        self.proxy.links.add(self)
        for fault in self.proxy.faults.values():
            if fault.kind in ("latency", "blackhole") and fault.draw():
                fault.links.add(self)
                self.dropping = self.dropping or fault.kind == "blackhole"
        if self.dropping:
            return
        port = self.proxy.next_backend()
        if port is None:
            self.abort()
            return
        self.refresh()
        # Held here: the loop keeps only a weak reference to its tasks.
        self.connecting = self.loop.create_task(self.connect(port))

    async def connect(self, port: int) -> None:
        try:
            await self.loop.create_connection(lambda: Upstream(self), HOST, port)
        except OSError:
            # A dead or booting replica: the client sees its connection reset, as it
            # would behind a load balancer that does not retry.
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self.dropping:
            return
        if self.upstream is None:
            self.early += data
        else:
            self.upstream.write(data)

    def eof_received(self) -> bool:
        # Half-close: the client is done sending, the answer may still come back.
        self.client_done = True
        if self.dropping:
            self.close()
        elif self.upstream is not None:
            _write_eof(self.upstream)
        self.close_when_done()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client = None
        self.close()

    def pause_writing(self) -> None:
        self.client_full = True
        self.refresh()

    def resume_writing(self) -> None:
        self.client_full = False
        self.refresh()

    # -------------------------------------------------------------- upstream side

    def upstream_made(self, transport: asyncio.Transport) -> None:
        if self.closed:
            transport.abort()
            return
        self.upstream = transport
        if self.early:
            transport.write(bytes(self.early))
            self.early.clear()
        if self.client_done:
            _write_eof(transport)
        self.refresh()

    def upstream_data(self, data: bytes) -> None:
        delay = self.proxy.delay(self)
        if delay <= 0 and self.delayed == 0:
            if self.client is not None:
                self.client.write(data)
            return
        # Chunks leave in order: none before the one ahead of it, even with jitter.
        self.release_at = max(self.loop.time() + delay, self.release_at)
        self.delayed += len(data)
        self.loop.call_at(self.release_at, self.release, data)
        self.refresh()

    def release(self, data: bytes) -> None:
        self.delayed -= len(data)
        if self.client is not None:
            self.client.write(data)
        self.refresh()

    def upstream_eof(self) -> None:
        self.loop.call_at(max(self.release_at, self.loop.time()), self.client_eof)

    def client_eof(self) -> None:
        self.upstream_done = True
        if self.client is not None:
            _write_eof(self.client)
        self.close_when_done()

    def close_when_done(self) -> None:
        """Both sides have finished sending: nothing more can pass, let both sockets go."""
        if self.client_done and self.upstream_done:
            self.close()

    def upstream_lost(self) -> None:
        self.upstream = None
        # Whatever the replica sent before it went away still reaches the client (late).
        self.loop.call_at(max(self.release_at, self.loop.time()), self.close)

    # ------------------------------------------------------------------ control

    def refresh(self) -> None:
        """Pause or resume reading on each side from the flow-control and freeze state."""
        if self.client is not None and not self.dropping:
            _reading(self.client, not (self.frozen or self.upstream is None or self.upstream_full))
        if self.upstream is not None:
            stalled = self.frozen or self.client_full or self.delayed > MAX_DELAYED
            _reading(self.upstream, not stalled)

    def abort(self) -> None:
        """Close both sides with RST."""
        self.closed = True
        for transport in (self.client, self.upstream):
            if transport is not None:
                reset(transport)
        self.close()

    def close(self) -> None:
        self.closed = True
        self.proxy.links.discard(self)
        for fault in self.proxy.faults.values():
            fault.links.discard(self)
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.close()


def _write_eof(transport: asyncio.Transport) -> None:
    # A peer that reset meanwhile makes shutdown() fail; its connection_lost follows.
    with contextlib.suppress(OSError):
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()


def _reading(transport: asyncio.Transport, wanted: bool) -> None:
    if transport.is_closing() or transport.is_reading() == wanted:
        return
    if wanted:
        transport.resume_reading()
    else:
        transport.pause_reading()


class Upstream(asyncio.Protocol):
    """The replica side of a Link: forwards everything to the link."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link.upstream_made(transport)

    def data_received(self, data: bytes) -> None:
        self.link.upstream_data(data)

    def eof_received(self) -> bool:
        self.link.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.upstream_lost()

    def pause_writing(self) -> None:
        self.link.upstream_full = True
        self.link.refresh()

    def resume_writing(self) -> None:
        self.link.upstream_full = False
        self.link.refresh()


class FaultProxy:
    """The listening socket, the backends, the live links and the active faults."""

    def __init__(self, port: int, backends: list[int]) -> None:
        self.port = port
        self.backends = list(backends)
        self.turn = 0
        self.links: set[Link] = set()
        self.faults: dict[str, Fault] = {}
        self.server: asyncio.Server | None = None
        self.accepted = 0

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Link(self), HOST, self.port, reuse_address=True, backlog=1024
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def next_backend(self) -> int | None:
        if not self.backends:
            return None
        self.turn = (self.turn + 1) % len(self.backends)
        return self.backends[self.turn - 1]

    def delay(self, link: Link) -> float:
        total = 0.0
        for fault in self.faults.values():
            if fault.kind == "latency" and link in fault.links:
                total += fault.latency + random.uniform(-fault.jitter, fault.jitter)
        return max(total, 0.0)

    async def set_fault(self, fault: Fault) -> None:
        if fault.id in self.faults:
            await self.clear_fault(fault.id)
        self.faults[fault.id] = fault
        if fault.kind in ("latency", "blackhole"):
            fault.links = {link for link in self.links if fault.draw()}
            for link in fault.links:
                link.frozen = link.frozen or fault.kind == "blackhole"
                link.refresh()
        elif fault.kind == "reset" and fault.reset_existing:
            for link in [link for link in self.links if fault.draw()]:
                link.abort()
        elif fault.kind == "refuse":
            if self.server is not None:
                self.server.close()
                self.server = None
            if fault.reset_existing:
                for link in list(self.links):
                    link.abort()

    async def clear_fault(self, fault_id: str) -> bool:
        fault = self.faults.pop(fault_id, None)
        if fault is None:
            return False
        if fault.kind == "blackhole":
            blackholes = [f for f in self.faults.values() if f.kind == "blackhole"]
            for link in list(fault.links):
                if link.dropping:
                    # What it sent was dropped: it can never be answered.
                    link.abort()
                else:
                    link.frozen = any(link in f.links for f in blackholes)
                    link.refresh()
        if fault.kind == "refuse" and not any(f.kind == "refuse" for f in self.faults.values()):
            try:
                await self.listen()
            except OSError:
                # Still refusing: keep the fault, so that the revert can be tried again.
                self.faults[fault.id] = fault
                raise
        return True

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "listening": self.server is not None,
            "backends": self.backends,
            "connections": len(self.links),
            "accepted": self.accepted,
            "faults": {f.id: f.kind for f in self.faults.values()},
        }

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "set":
            await self.set_fault(Fault.from_request(request))
            return {"ok": True}
        if op == "clear":
            return {"ok": True, "cleared": await self.clear_fault(str(request.get("id")))}
        if op == "backends":
            self.backends = [int(p) for p in request.get("ports", [])]
            return {"ok": True}
        if op == "status":
            return {"ok": True, **self.status()}
        raise ValueError(f"unknown op {op!r} (set, clear, backends, status)")

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            link.abort()


async def control(proxy: FaultProxy) -> None:
    """Answer control requests from stdin until it closes.

    Control channel: one JSON object a line on stdin, one answer line on stdout for each, in
    order. Once listening, the proxy prints {"ready": true, "port": P, "pid": N}. Requests:

        {"op": "set", "id": "f1", "kind": "latency", "latency": 0.1, "jitter": 0.02, "share": 1}
        {"op": "set", "id": "f2", "kind": "reset", "share": 0.5, "reset_existing": true}
        {"op": "set", "id": "f3", "kind": "refuse", "reset_existing": true}
        {"op": "set", "id": "f4", "kind": "blackhole", "share": 1}
        {"op": "clear", "id": "f1"}            answer: {"ok": true, "cleared": true|false}
        {"op": "backends", "ports": [8081, 8082]}
        {"op": "status"}                        answer: connections, accepted, faults, listening

    Every answer has "ok"; a failed request answers {"ok": false, "error": "..."}. Durations are
    seconds; `share` is the probability (0-1) that a connection is affected. Faults:
    latency delays every upstream-to-client chunk (existing connections too); reset closes new
    connections with RST (and, with reset_existing, existing ones at once); refuse closes the
    listening socket (connection refused) and reopens it on the same port when cleared;
    blackhole reads and drops what a share of new connections send and never answers, and
    freezes that share of the open ones until cleared.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    answer({"ready": True, "port": proxy.port, "pid": os.getpid()})
    while line := await reader.readline():
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
            reply = await proxy.handle(request)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer(reply)


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(port: int, backends: list[int]) -> None:
    proxy = FaultProxy(port, backends)
    await proxy.listen()
    loop = asyncio.get_running_loop()
    done = loop.create_task(control(proxy))
    loop.add_signal_handler(signal.SIGTERM, done.cancel)
    try:
        await done
    except asyncio.CancelledError:
        pass
    finally:
        proxy.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TCP fault proxy of the local target")
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: any)")
    parser.add_argument(
        "--backend", type=int, action="append", default=[], help="a replica's port (repeat)"
    )
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole foreground group; the runner decides when the
    # proxy goes (it closes our stdin), so that its faults are reverted in order first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(serve(args.port, args.backend))
    except OSError as exc:
        print(f"fault proxy: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
