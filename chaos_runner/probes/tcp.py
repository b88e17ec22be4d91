"""The `tcp` probe: can a new client open a TCP connection (and optionally exchange bytes)?

Each sample opens a fresh connection, as a new client would, and closes it. A sample never
raises and never outlasts its timeout: every socket operation is bounded by what is left of
it. `describe_socket_error` is shared with the http probe so both word failures alike.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaos_runner.experiment import format_duration
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext

MAX_RECEIVE = 64 * 1024
"""Bytes read at most while waiting for `expect`: a probe is not a download."""

_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by the peer",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


def describe_socket_error(exc: BaseException, timeout: float) -> str:
    """A short text for a failed connection: 'connection refused', 'timeout after 1s'...

    Walks the exception's causes, since libraries (urllib3) wrap the OSError that says it.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | socket.timeout):
            return f"timeout after {format_duration(timeout)}"
        if isinstance(seen, socket.gaierror):
            return f"cannot resolve host ({seen.strerror})"
        if isinstance(seen, OSError) and seen.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[seen.errno]
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class TcpParams(BaseModel):
    """Where to connect, and what to say and hear once connected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Host name or address, e.g. '127.0.0.1' or '${target.host}'.")
    port: int | str = Field(
        description="Port number, or a '${target.port}' variable the engine substitutes."
    )
    send: str | None = Field(
        default=None, description="Text (UTF-8) sent once connected, e.g. 'PING\\r\\n'."
    )
    expect: str | None = Field(
        default=None,
        description="Text that must arrive (within the timeout) for the sample to pass.",
    )

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a port number, not a boolean")
        if isinstance(value, str):
            if "${" in value:
                return value  # substituted by the engine before bind
            if not value.strip().isdigit():
                raise ValueError(f"expected a port number or '${{target.port}}', got {value!r}")
            value = int(value)
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError(f"a port is between 1 and 65535, got {value}")
        return value


class TcpCheck:
    """One bound tcp probe; safe to call from several threads at once."""

    def __init__(self, host: str, port: int, send: bytes | None, expect: bytes | None) -> None:
        self.host = host
        self.port = port
        self.send = send
        self.expect = expect

    def __call__(self, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        try:
            conn = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            return Outcome(ok=False, error=describe_socket_error(exc, timeout))
        with conn:
            try:
                if self.send:
                    conn.settimeout(max(deadline - time.monotonic(), 0.001))
                    conn.sendall(self.send)
                if self.expect:
                    return self._await(conn, deadline, timeout)
            except OSError as exc:
                return Outcome(ok=False, error=describe_socket_error(exc, timeout))
        return Outcome(ok=True)

    def _await(self, conn: socket.socket, deadline: float, timeout: float) -> Outcome:
        assert self.expect is not None
        received = b""
        while self.expect not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Outcome(ok=False, error=self._missing(f"within {format_duration(timeout)}"))
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                return Outcome(ok=False, error=self._missing(f"within {format_duration(timeout)}"))
            if not chunk:
                return Outcome(ok=False, error=self._missing("before the peer closed"))
            # Keep only what could still hold the expected bytes across chunk boundaries.
            received = (received + chunk)[-MAX_RECEIVE:]
        return Outcome(ok=True)

    def _missing(self, when: str) -> str:
        assert self.expect is not None
        return f"no {self.expect.decode('utf-8', 'replace')!r} received {when}"

    def close(self) -> None:
        """Nothing is kept open between samples."""


class TcpProbe:
    """Probe kind `tcp`: a TCP connection (and an optional exchange) must succeed."""

    kind = "tcp"
    Params = TcpParams

    def bind(self, params: TcpParams, context: ProbeContext) -> ProbeCheck:
        if isinstance(params.port, str):
            raise ValueError(
                f"port {params.port!r} is not a number: a variable in it was not substituted"
            )
        if "${" in params.host:
            raise ValueError(f"host {params.host!r}: a variable in it was not substituted")
        return TcpCheck(
            params.host,
            params.port,
            params.send.encode() if params.send else None,
            params.expect.encode() if params.expect else None,
        )
