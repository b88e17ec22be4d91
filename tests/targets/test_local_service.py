"""The demo service, one real replica process spoken to over raw sockets and urllib3."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import urllib3


@pytest.fixture
def replica() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    argv = [sys.executable, "-m", "chaos_runner.targets.local.service", "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--name", "replica-7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith(f"ready replica-7 127.0.0.1:{port}"), ready
        yield port
    finally:
        process.terminate()
        assert process.wait(5) == 0, "SIGTERM ends it cleanly"


def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the replica closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_endpoints_answer_with_the_replica_name(replica: int) -> None:
    with urllib3.HTTPConnectionPool("127.0.0.1", replica, retries=False, timeout=2) as pool:
        for path in ("/", "/health"):
            response = pool.request("GET", path)
            assert response.status == 200 and response.json() == {
                "replica": "replica-7",
                "ok": True,
            }
        work = pool.request("GET", "/work?ms=30")
        assert work.json()["worked_ms"] == 30
        assert pool.request("GET", "/work?ms=soon").status == 400
        assert pool.request("GET", "/elsewhere").status == 404
        head = pool.request("HEAD", "/health")
        assert head.status == 200 and head.data == b""
        assert pool.num_connections == 1, "one keep-alive connection served them all"


def test_pipelined_requests_are_answered_in_order(replica: int) -> None:
    answer = exchange(
        replica,
        b"GET /work?ms=50 HTTP/1.1\r\n\r\n"
        b"GET /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b'"worked_ms": 50') < answer.index(b"Connection: close")


def test_http_1_0_closes_after_the_answer(replica: int) -> None:
    answer = exchange(replica, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer


def test_a_malformed_request_is_refused_and_closed(replica: int) -> None:
    assert exchange(replica, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(replica, chunked).startswith(b"HTTP/1.1 400")
