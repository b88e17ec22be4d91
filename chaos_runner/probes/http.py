"""The `http` probe: one HTTP request per sample, judged on status, body and latency.

By default every sample opens a new connection, as a new client would (so a round-robin load
balancer spreads samples over its backends). urllib3 does the HTTP, with no retries and no
redirects unless asked. A sample never raises and reads at most `max_body` bytes of the body;
every failure is an Outcome with a short text ("connection refused", "status 503").
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import urllib3
from pydantic import BaseModel, ConfigDict, Field, field_validator
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.util import parse_url

from chaos_runner.experiment import Duration, format_duration
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext
from chaos_runner.probes.tcp import describe_socket_error

_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_CHUNK = 16 * 1024


class HttpParams(BaseModel):
    """The request a probe sends, and what its answer must be to count as steady."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="Absolute http(s) URL; may use ${target.url}.")
    method: str = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    body: str | None = Field(default=None, description="Request body (UTF-8).")
    expect_status: tuple[int | str, ...] = Field(
        default=("2xx", "3xx"),
        min_length=1,
        description="Statuses that pass: codes (200) or classes ('2xx').",
    )
    body_contains: str | None = Field(
        default=None, description="Text the response body must contain."
    )
    body_regex: str | None = Field(
        default=None, description="Regular expression the response body must match (search)."
    )
    max_latency: Duration | None = Field(
        default=None, description="A response slower than this counts as failed."
    )
    new_connection: bool = Field(
        default=True,
        description="Open a new connection for every sample, as a new client would.",
    )
    follow_redirects: bool = Field(default=False, description="Follow up to 5 redirects.")
    verify_tls: bool = Field(default=True, description="Verify the server's certificate.")
    ca_file: str | None = Field(
        default=None,
        description="CA bundle (PEM) to verify against, relative to the experiment file.",
    )
    max_body: Annotated[int, Field(ge=1)] = Field(
        default=1024 * 1024, description="Bytes of the body read at most for the body checks."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # A URL with ${...} in it is checked again once the engine has substituted it.
        if "${" not in value:
            _split_url(value)
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError(f"not an HTTP method: {value!r}")
        return value.upper()

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: tuple[int | str, ...]) -> tuple[int | str, ...]:
        for status in value:
            if isinstance(status, int) and not 100 <= status <= 599:
                raise ValueError(f"a status code is between 100 and 599, got {status}")
            if isinstance(status, str) and not _STATUS_CLASS.match(status):
                raise ValueError(f"expected a status code (200) or class ('2xx'), got {status!r}")
        return value

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _split_url(url: str) -> None:
    parsed = parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"expected an absolute http:// or https:// URL, got {url!r}")


class HttpCheck:
    """One bound http probe; safe to call from several threads at once."""

    def __init__(self, params: HttpParams, ca_file: Path | None) -> None:
        self.params = params
        self._pool_options: dict[str, Any] = {
            "retries": (
                urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)
                if params.follow_redirects
                else False
            ),
            "cert_reqs": "CERT_REQUIRED" if params.verify_tls else "CERT_NONE",
        }
        if ca_file is not None:
            self._pool_options["ca_certs"] = str(ca_file)
        self._statuses = {s for s in params.expect_status if isinstance(s, int)}
        self._classes = {int(s[0]) for s in params.expect_status if isinstance(s, str)}
        self._regex = re.compile(params.body_regex) if params.body_regex else None
        # No "Connection: close": a fresh pool per sample already gives each sample its own
        # connection, and redirects within a sample may reuse it, as a new client's would.
        self._headers = dict(params.headers)
        self._body = params.body.encode() if params.body is not None else None
        # Shared across samples only when connections may be reused; `block=False` lets
        # concurrent samples (one outlasting the interval) open extra connections.
        self._shared = (
            None
            if params.new_connection
            else urllib3.PoolManager(maxsize=4, block=False, **self._pool_options)
        )

    def __call__(self, timeout: float) -> Outcome:
        started = time.monotonic()
        deadline = started + timeout
        pool = self._shared or urllib3.PoolManager(maxsize=1, **self._pool_options)
        try:
            response = pool.request(
                self.params.method,
                self.params.url,
                body=self._body,
                headers=self._headers,
                timeout=urllib3.Timeout(total=timeout),
                redirect=self.params.follow_redirects,
                preload_content=False,
            )
            body, complete = b"", False
            try:
                # Read even when no check needs the body: a shared connection is reused only
                # once its response is read through, and closing a socket with unread data
                # resets the connection, which servers log as an error.
                body, complete = self._read_body(response, deadline)
            finally:
                if self._shared is not None and complete:
                    response.release_conn()
                else:
                    response.close()  # a partly read response's connection cannot be reused
        except Exception as exc:  # a probe must never raise into the sampler
            return Outcome(ok=False, error=_error_text(exc, timeout))
        finally:
            if self._shared is None:
                pool.clear()
        elapsed = time.monotonic() - started
        return self._judge(response.status, body, elapsed)

    def _read_body(self, response: urllib3.BaseHTTPResponse, deadline: float) -> tuple[bytes, bool]:
        """Up to max_body bytes, each read bounded by what is left of the timeout; and
        whether the body was read to its end."""
        chunks: list[bytes] = []
        size = 0
        while size < self.params.max_body:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("reading the body")
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if isinstance(sock, socket.socket):
                sock.settimeout(remaining)
            chunk = response.read1(min(_CHUNK, self.params.max_body - size))
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False

    def _judge(self, status: int, body: bytes, elapsed: float) -> Outcome:
        if status not in self._statuses and status // 100 not in self._classes:
            return Outcome(ok=False, error=f"status {status}", value=status)
        params = self.params
        if params.body_contains is not None or self._regex is not None:
            text = body.decode("utf-8", "replace")
            if params.body_contains is not None and params.body_contains not in text:
                return Outcome(
                    ok=False,
                    error=f"body does not contain {_quote(params.body_contains)}",
                    value=status,
                )
            if self._regex is not None and not self._regex.search(text):
                return Outcome(
                    ok=False,
                    error=f"body does not match /{_quote(self._regex.pattern, 40)[1:-1]}/",
                    value=status,
                )
        if params.max_latency is not None and elapsed > params.max_latency:
            return Outcome(
                ok=False,
                error=(
                    f"slow: {elapsed * 1000:.0f}ms > max_latency "
                    f"{format_duration(params.max_latency)}"
                ),
                value=status,
            )
        return Outcome(ok=True, value=status)

    def close(self) -> None:
        if self._shared is not None:
            self._shared.clear()


def _error_text(exc: Exception, timeout: float) -> str:
    """A short text for a request that got no response: 'connection refused', 'TLS error: ...'."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # following redirects wraps the error that happened
    if isinstance(exc, SSLError):
        return f"TLS error: {_short(exc.__cause__ or exc)}"
    if isinstance(exc, ProtocolError):
        text = describe_socket_error(exc, timeout)
        if "RemoteDisconnected" in text or "without response" in text:
            return "connection closed without a response"
        return text
    # NewConnectionError subclasses urllib3's TimeoutError: its cause says what happened.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(exc, NewConnectionError):
        return f"timeout after {format_duration(timeout)}"
    if isinstance(exc, HTTPError | OSError):
        return describe_socket_error(exc, timeout)
    return f"{type(exc).__name__}: {_short(exc)}"


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 160 else text[:157] + "..."


class HttpProbe:
    """Probe kind `http`: a request whose status, body and latency must be as expected."""

    kind = "http"
    Params = HttpParams

    def bind(self, params: HttpParams, context: ProbeContext) -> ProbeCheck:
        _split_url(params.url)
        ca_file = None
        if params.ca_file is not None:
            ca_file = context.base_dir / params.ca_file
            if not ca_file.is_file():
                raise ValueError(
                    f"ca_file: no such file {str(ca_file)!r} "
                    "(paths are relative to the experiment file)"
                )
        return HttpCheck(params, ca_file)
