"""The http probe against a real HTTP(S) server on 127.0.0.1."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from probe_test_server import Server
from pydantic import ValidationError

from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext
from chaos_runner.probes.http import HttpParams, HttpProbe


def bind(context: ProbeContext, **params: Any) -> ProbeCheck:
    return HttpProbe().bind(HttpParams.model_validate(params), context)


def sample(context: ProbeContext, timeout: float = 2.0, **params: Any) -> Outcome:
    check = bind(context, **params)
    try:
        return check(timeout)
    finally:
        check.close()


def test_a_200_passes_with_the_status_as_value(http_server: Server, context: ProbeContext) -> None:
    assert sample(context, url=f"{http_server.url}/ok") == Outcome(ok=True, value=200)


def test_a_500_fails_with_the_status(http_server: Server, context: ProbeContext) -> None:
    outcome = sample(context, url=f"{http_server.url}/fail")
    assert outcome == Outcome(ok=False, error="status 500", value=500)


def test_expect_status_accepts_codes_and_classes(
    http_server: Server, context: ProbeContext
) -> None:
    assert sample(context, url=f"{http_server.url}/fail", expect_status=[500]).ok
    assert sample(context, url=f"{http_server.url}/fail", expect_status=["5xx"]).ok
    assert not sample(context, url=f"{http_server.url}/ok", expect_status=["5xx", 404]).ok


def test_a_refused_connection_says_so(closed_port: int, context: ProbeContext) -> None:
    outcome = sample(context, url=f"http://127.0.0.1:{closed_port}/")
    assert outcome == Outcome(ok=False, error="connection refused")


def test_a_slow_server_times_out_within_the_timeout(
    http_server: Server, context: ProbeContext
) -> None:
    started = time.monotonic()
    outcome = sample(context, timeout=0.3, url=f"{http_server.url}/slow?s=3")
    assert outcome == Outcome(ok=False, error="timeout after 300ms")
    assert time.monotonic() - started < 2.0


def test_a_slow_body_times_out_within_the_timeout(
    http_server: Server, context: ProbeContext
) -> None:
    started = time.monotonic()
    outcome = sample(context, timeout=0.4, url=f"{http_server.url}/drip", body_contains="y")
    assert outcome.ok is False
    assert outcome.error == "timeout after 400ms"
    assert time.monotonic() - started < 2.0


def test_a_server_hanging_up_says_so(http_server: Server, context: ProbeContext) -> None:
    outcome = sample(context, url=f"{http_server.url}/hangup")
    assert outcome == Outcome(ok=False, error="connection closed without a response")


def test_body_checks_say_what_was_missing(http_server: Server, context: ProbeContext) -> None:
    url = f"{http_server.url}/body"
    assert sample(context, url=url, body_contains="hello").ok
    assert sample(context, url=url, body_regex=r"version \d+\.\d+").ok
    missing = sample(context, url=url, body_contains="goodbye")
    assert missing == Outcome(ok=False, error="body does not contain 'goodbye'", value=200)
    unmatched = sample(context, url=url, body_regex=r"version 2\.")
    assert unmatched.error == r"body does not match /version 2\\./"


def test_a_response_slower_than_max_latency_fails(
    http_server: Server, context: ProbeContext
) -> None:
    outcome = sample(context, url=f"{http_server.url}/slow?s=0.2", max_latency="50ms")
    assert outcome.ok is False and outcome.value == 200
    assert outcome.error is not None and outcome.error.startswith("slow: ")
    assert outcome.error.endswith("> max_latency 50ms")
    assert sample(context, url=f"{http_server.url}/ok", max_latency="5s").ok


def test_every_sample_opens_a_new_connection_by_default(
    http_server: Server, context: ProbeContext
) -> None:
    check = bind(context, url=f"{http_server.url}/ok")
    try:
        assert all(check(2.0).ok for _ in range(5))
    finally:
        check.close()
    assert len(set(http_server.peers)) == 5


def test_connections_are_reused_when_asked(http_server: Server, context: ProbeContext) -> None:
    check = bind(context, url=f"{http_server.url}/body", new_connection=False)
    try:
        assert all(check(2.0).ok for _ in range(5))
    finally:
        check.close()
    assert len(set(http_server.peers)) == 1


def test_redirects_are_followed_only_when_asked(http_server: Server, context: ProbeContext) -> None:
    url = f"{http_server.url}/redirect"
    assert sample(context, url=url) == Outcome(ok=True, value=302)
    assert sample(context, url=url, expect_status=[200]).error == "status 302"
    assert sample(context, url=url, expect_status=[200], follow_redirects=True).ok


def test_method_headers_and_body_are_sent(http_server: Server, context: ProbeContext) -> None:
    outcome = sample(
        context,
        url=f"{http_server.url}/anything",
        method="post",
        body="payload",
        headers={"X-Probe": "1"},
        expect_status=[201],
        body_contains="got payload",
    )
    assert outcome == Outcome(ok=True, value=201)


@pytest.mark.parametrize("new_connection", [True, False])
def test_concurrent_samples_of_one_check(
    http_server: Server, context: ProbeContext, new_connection: bool
) -> None:
    check = bind(context, url=f"{http_server.url}/slow?s=0.2", new_connection=new_connection)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: check(2.0), range(8)))
    finally:
        check.close()
    assert results == [Outcome(ok=True, value=200)] * 8


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "ftp://example.com/"}, "expected an absolute http:// or https:// URL"),
        ({"url": "/health"}, "expected an absolute http:// or https:// URL"),
        ({"url": "http://x/", "expect_status": ["6xx"]}, "expected a status code (200)"),
        ({"url": "http://x/", "expect_status": [42]}, "between 100 and 599"),
        ({"url": "http://x/", "body_regex": "("}, "not a valid regular expression"),
        ({"url": "http://x/", "max_latency": "fast"}, "expected a duration"),
        ({"url": "http://x/", "timeout": 1}, "Extra inputs are not permitted"),
    ],
)
def test_params_are_validated(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HttpParams.model_validate(params)


def test_a_url_with_a_variable_is_checked_once_substituted(context: ProbeContext) -> None:
    params = HttpParams.model_validate({"url": "${target.url}/health"})
    with pytest.raises(ValueError, match="absolute http"):
        HttpProbe().bind(params, context)


def test_a_missing_ca_file_is_a_bind_error(context: ProbeContext) -> None:
    params = HttpParams.model_validate({"url": "https://127.0.0.1/", "ca_file": "nope.pem"})
    with pytest.raises(ValueError, match="ca_file: no such file"):
        HttpProbe().bind(params, context)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_unless_told_otherwise(
    https_server: tuple[str, Path], context: ProbeContext
) -> None:
    url, cert = https_server
    untrusted = sample(context, url=f"{url}/ok")
    assert untrusted.ok is False
    assert untrusted.error is not None and untrusted.error.startswith("TLS error: ")
    assert "certificate verify failed" in untrusted.error
    assert sample(context, url=f"{url}/ok", verify_tls=False) == Outcome(ok=True, value=200)
    trusted = ProbeContext(base_dir=cert.parent, variables={})
    assert sample(trusted, url=f"{url}/ok", ca_file=cert.name) == Outcome(ok=True, value=200)


def test_errors_behind_redirects_read_the_same(closed_port: int, context: ProbeContext) -> None:
    outcome = sample(context, url=f"http://127.0.0.1:{closed_port}/", follow_redirects=True)
    assert outcome == Outcome(ok=False, error="connection refused")
