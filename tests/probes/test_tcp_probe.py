"""The tcp probe against real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from chaos_runner.plugins import Outcome, ProbeContext
from chaos_runner.probes.tcp import TcpParams, TcpProbe


def sample(context: ProbeContext, timeout: float = 1.0, **params: Any) -> Outcome:
    check = TcpProbe().bind(TcpParams.model_validate(params), context)
    try:
        return check(timeout)
    finally:
        check.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a listener whose every accepted connection is handed to `reply`; its port."""
    listeners: list[socket.socket] = []
    stop = threading.Event()

    def start(reply: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        listeners.append(listener)

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    reply(conn)

        threading.Thread(target=loop, daemon=True).start()
        port: int = listener.getsockname()[1]
        return port

    try:
        yield start
    finally:
        stop.set()
        for listener in listeners:
            listener.close()


def pong(conn: socket.socket) -> None:
    if conn.recv(64).startswith(b"PING"):
        conn.sendall(b"+PONG\r\n")


def test_a_listening_port_passes(serve: Any, context: ProbeContext) -> None:
    port = serve(lambda conn: None)
    assert sample(context, host="127.0.0.1", port=port) == Outcome(ok=True)


def test_a_closed_port_is_refused(closed_port: int, context: ProbeContext) -> None:
    outcome = sample(context, host="127.0.0.1", port=closed_port)
    assert outcome == Outcome(ok=False, error="connection refused")


def test_an_exchange_passes_when_the_answer_comes(serve: Any, context: ProbeContext) -> None:
    port = serve(pong)
    outcome = sample(context, host="127.0.0.1", port=port, send="PING\r\n", expect="PONG")
    assert outcome == Outcome(ok=True)


def test_a_wrong_answer_fails_when_the_peer_closes(serve: Any, context: ProbeContext) -> None:
    def refuse(conn: socket.socket) -> None:
        conn.recv(64)  # read first: closing on unread data would reset the connection
        conn.sendall(b"-ERR unknown command\r\n")

    port = serve(refuse)
    outcome = sample(context, host="127.0.0.1", port=port, send="PING\r\n", expect="PONG")
    assert outcome == Outcome(ok=False, error="no 'PONG' received before the peer closed")


def test_a_silent_peer_times_out_within_the_timeout(context: ProbeContext) -> None:
    # Listening but never accepting: the kernel completes the handshake, nobody answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        outcome = sample(context, timeout=0.3, host="127.0.0.1", port=port, expect="PONG")
        elapsed = time.monotonic() - started
    assert outcome == Outcome(ok=False, error="no 'PONG' received within 300ms")
    assert elapsed < 2.0


def test_port_may_be_a_variable_until_bind(context: ProbeContext) -> None:
    assert TcpParams.model_validate({"host": "h", "port": "8080"}).port == 8080
    params = TcpParams.model_validate({"host": "${target.host}", "port": "${target.port}"})
    with pytest.raises(ValueError, match="not substituted"):
        TcpProbe().bind(params, context)


@pytest.mark.parametrize(
    ("port", "message"), [("http", "expected a port number"), (70000, "between 1 and 65535")]
)
def test_bad_ports_are_rejected(port: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TcpParams.model_validate({"host": "127.0.0.1", "port": port})
