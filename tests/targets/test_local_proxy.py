"""The fault proxy process at the TCP level: bytes, flow control, half-close, control channel.

The backends are real TCP servers in this process (an echo server, servers that say their
name); the proxy is the real process, driven through ProxyClient.
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaos_runner.errors import TargetError
from chaos_runner.targets.local.proxy_client import ProxyClient


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)


class _Name(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.server.name)  # type: ignore[attr-defined]


@contextmanager
def tcp_server(handler: type[socketserver.BaseRequestHandler], name: bytes = b"") -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    with tcp_server(_Echo) as port:
        yield port


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ProxyClient]]:
    proxies: list[ProxyClient] = []

    def start(*backends: int, port: int = 0) -> ProxyClient:
        proxy = ProxyClient.launch(port=port, backends=backends, log=tmp_path / "proxy.log")
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()


def connect(proxy: ProxyClient, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_a_large_stream_passes_intact_through_backpressure(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    payload = os.urandom(8 * 1024 * 1024)
    with connect(proxy, timeout=10) as sock:
        # Everything is sent before anything is read: the proxy must hold back, not drop.
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = recv_exactly(sock, len(payload))
        sender.join(10)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_a_half_close_reaches_the_backend_and_the_answer_still_comes_back(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 100) == b"last words"  # then EOF: the echo server closed


def test_latency_with_jitter_keeps_the_stream_in_order(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    proxy.set_fault("slow", "latency", latency=0.02, jitter=0.02)
    lines = b"".join(b"%05d\n" % i for i in range(200))
    with connect(proxy) as sock:
        for i in range(0, len(lines), 60):
            sock.sendall(lines[i : i + 60])
        assert recv_exactly(sock, len(lines)) == lines


def test_a_blackhole_freezes_an_open_connection_and_the_revert_lets_it_flow(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    with connect(proxy) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        proxy.set_fault("hole", "blackhole", share=1.0)
        sock.sendall(b"during")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert proxy.clear_fault("hole") is True
        sock.settimeout(2.0)
        assert recv_exactly(sock, 6) == b"during"


def test_refuse_without_reset_keeps_open_connections_and_reopens_the_same_port(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    port = proxy.port
    with connect(proxy) as sock:
        proxy.set_fault("closed", "refuse", reset_existing=False)
        assert proxy.status()["listening"] is False
        with pytest.raises(ConnectionRefusedError):
            connect(proxy).close()
        sock.sendall(b"still here")
        assert recv_exactly(sock, 10) == b"still here"
        proxy.clear_fault("closed")
    assert proxy.port == port and proxy.status()["listening"] is True
    with connect(proxy) as sock:
        sock.sendall(b"back")
        assert recv_exactly(sock, 4) == b"back"


def test_new_connections_go_round_robin_to_the_current_backends(
    launch: Callable[..., ProxyClient],
) -> None:
    with tcp_server(_Name, b"a") as a, tcp_server(_Name, b"b") as b, tcp_server(_Name, b"c") as c:
        proxy = launch(a, b)

        def names(count: int) -> list[bytes]:
            answers = []
            for _ in range(count):
                with connect(proxy) as sock:
                    answers.append(recv_exactly(sock, 1))
            return answers

        assert sorted(names(4)) == [b"a", b"a", b"b", b"b"]
        proxy.set_backends([c])
        assert names(2) == [b"c", b"c"]
        assert proxy.status()["backends"] == [c]


def test_a_backend_that_refuses_makes_the_client_connection_fail(
    launch: Callable[..., ProxyClient],
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    proxy = launch(dead)
    with connect(proxy) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_the_control_channel_refuses_bad_requests_and_keeps_going(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    with pytest.raises(TargetError, match="unknown fault kind 'flood'"):
        proxy.set_fault("x", "flood")
    with pytest.raises(TargetError, match="share must be between 0 and 1"):
        proxy.set_fault("x", "reset", share=1.5)
    with pytest.raises(TargetError, match="unknown op 'explode'"):
        proxy.request({"op": "explode"})
    assert proxy.clear_fault("never-set") is False
    proxy.set_fault("a", "latency", latency=0.01)
    proxy.set_fault("b", "reset", share=0.0)
    assert proxy.status()["faults"] == {"a": "latency", "b": "reset"}
    assert proxy.clear_fault("a") and proxy.clear_fault("b")
    assert proxy.status()["faults"] == {}


def test_closing_its_stdin_ends_the_proxy_and_its_faults(
    launch: Callable[..., ProxyClient], echo_port: int
) -> None:
    proxy = launch(echo_port)
    proxy.set_fault("refused", "refuse")
    assert proxy.process.stdin is not None
    proxy.process.stdin.close()
    assert proxy.process.wait(5) == 0
    with pytest.raises(TargetError, match="not running"):
        proxy.status()
    proxy.stop()  # idempotent


def test_finished_connections_are_let_go(launch: Callable[..., ProxyClient]) -> None:
    """The backend answers and closes, the client reads and closes: nothing stays open."""
    with tcp_server(_Name, b"n") as backend:
        proxy = launch(backend)
        baseline = len(os.listdir(f"/proc/{proxy.pid}/fd"))
        for _ in range(300):
            with connect(proxy) as sock:
                assert recv_exactly(sock, 10) == b"n"
        assert proxy.status()["accepted"] == 300
        deadline = time.monotonic() + 5
        while proxy.status()["connections"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.status()["connections"] == 0
        assert len(os.listdir(f"/proc/{proxy.pid}/fd")) <= baseline + 2
