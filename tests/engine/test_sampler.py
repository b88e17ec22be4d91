"""The probe sampler with real probes (tcp, http) against real sockets, writing a real journal.

Timing assertions are about behaviour (no sample early, no tick twice, a hung probe does not
hold the others back, stop does not wait for a hung check) with generous margins, never
about how fast this machine is.
"""

from __future__ import annotations

import itertools
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chaos_runner.clock import SystemClock
from chaos_runner.engine.sampler import Sampler
from chaos_runner.experiment import ProbeSpec
from chaos_runner.journal import Journal, read_journal
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext
from chaos_runner.probes.http import HttpParams, HttpProbe
from chaos_runner.probes.tcp import TcpParams, TcpProbe


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """Clients that give up (timeouts are the point here) are not errors worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.jsonl") as journal:
        yield journal


@pytest.fixture
def sampler_for(journal: Journal) -> Iterator[Any]:
    """Build samplers that are stopped at the end of the test whatever happens."""
    made: list[Sampler] = []

    def make(*probes: tuple[ProbeSpec, ProbeCheck]) -> Sampler:
        sampler = Sampler(probes, journal=journal, clock=SystemClock())
        made.append(sampler)
        return sampler

    try:
        yield make
    finally:
        for sampler in made:
            sampler.stop(timeout=1.0)


CONTEXT = ProbeContext(base_dir=Path("."), variables={})


def spec(name: str, interval: float, timeout: float) -> ProbeSpec:
    return ProbeSpec(name=name, kind="test", interval=interval, timeout=timeout)


def http(url: str) -> ProbeCheck:
    return HttpProbe().bind(HttpParams(url=url), CONTEXT)


def tcp(url: str) -> ProbeCheck:
    port = int(url.rsplit(":", 1)[1])
    return TcpProbe().bind(TcpParams(host="127.0.0.1", port=port), CONTEXT)


class Sleepy:
    """A check that takes `seconds` whatever its timeout (it breaks the protocol on purpose
    when seconds > timeout) and remembers whether it was closed."""

    def __init__(self, seconds: float, outcome: Outcome | None = None) -> None:
        self.seconds = seconds
        self.outcome = outcome or Outcome(ok=True)
        self.closed = False

    def __call__(self, timeout: float) -> Outcome:
        time.sleep(self.seconds)
        return self.outcome

    def close(self) -> None:
        self.closed = True


def samples(journal: Journal, probe: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in read_journal(journal.path)
        if r["type"] == "sample" and (probe is None or r["probe"] == probe)
    ]


def run_for(sampler: Sampler, seconds: float) -> None:
    sampler.start()
    time.sleep(seconds)
    sampler.stop()


def test_samples_are_journalled_with_both_clocks_on_schedule(
    server: str, journal: Journal, sampler_for: Any
) -> None:
    sampler = sampler_for(
        (spec("web", 0.1, 1.0), http(f"{server}/ok")), (spec("port", 0.05, 1.0), tcp(server))
    )
    before_wall = time.time()
    run_for(sampler, 1.0)
    for name, interval in (("web", 0.1), ("port", 0.05)):
        found = samples(journal, name)
        expected = 1.0 / interval
        assert 0.75 * expected <= len(found) <= expected + 2, (name, len(found))
        starts = sorted(r["t"] for r in found)
        # Never early, never twice: the i-th sample starts at or after the i-th deadline.
        for i, start in enumerate(starts):
            assert start >= sampler.origin + i * interval - 1e-6, (name, i)
        for record in found:
            assert record["ok"] is True and record["err"] is None
            assert record["ms"] >= 0 and round(record["ms"], 2) == record["ms"]
            assert before_wall - 1 <= record["w"] <= time.time()
            # Both stamps are the same instant: wall - monotonic is the same for every sample.
            assert abs((record["w"] - record["t"]) - (found[0]["w"] - found[0]["t"])) < 0.05
    assert all(r["v"] == 200 for r in samples(journal, "web"))
    assert all("v" not in r for r in samples(journal, "port"))


def test_the_schedule_does_not_drift_with_slow_checks(journal: Journal, sampler_for: Any) -> None:
    # Each check takes 60% of the interval: sleeping an interval after each sample would
    # give 12 samples a second; deadlines keep 20.
    sampler = sampler_for((spec("busy", 0.05, 1.0), Sleepy(0.03)))
    run_for(sampler, 1.0)
    assert len(samples(journal, "busy")) >= 17


def test_a_hung_probe_keeps_its_cadence_and_holds_no_one_back(
    server: str, journal: Journal, sampler_for: Any
) -> None:
    sampler = sampler_for(
        (spec("slow", 0.05, 0.3), http(f"{server}/slow")),
        (spec("fast", 0.05, 0.3), http(f"{server}/ok")),
    )
    run_for(sampler, 1.5)
    for name in ("slow", "fast"):
        found = samples(journal, name)
        assert len(found) >= 0.75 * 1.5 / 0.05, (name, len(found))
        starts = sorted(r["t"] for r in found)
        assert max(b - a for a, b in itertools.pairwise(starts)) < 0.2, name
    slow = samples(journal, "slow")
    assert {r["err"] for r in slow} == {"timeout after 300ms"}
    assert all(r["ok"] for r in samples(journal, "fast"))
    assert sampler.latest()["slow"].skipped == 0


def test_stop_is_prompt_final_and_closes_checks(journal: Journal, sampler_for: Any) -> None:
    idle, hung = Sleepy(0.0), Sleepy(1.5)
    sampler = sampler_for((spec("idle", 10.0, 1.0), idle), (spec("hung", 10.0, 2.0), hung))
    sampler.start()
    time.sleep(0.2)  # both have started their first sample; "hung" is in it
    started = time.monotonic()
    sampler.stop(timeout=0.3)
    assert time.monotonic() - started < 1.0
    sampler.stop()  # idempotent
    assert idle.closed and hung.closed
    assert [r["probe"] for r in samples(journal)] == ["idle"]
    time.sleep(1.6)  # the hung sample ends now, after stop: it must not reach the journal
    assert [r["probe"] for r in samples(journal)] == ["idle"]


def test_recent_and_forget_before(server: str, journal: Journal, sampler_for: Any) -> None:
    sampler = sampler_for((spec("a", 0.05, 1.0), tcp(server)), (spec("b", 0.05, 1.0), tcp(server)))
    sampler.start()
    time.sleep(0.5)
    middle = time.monotonic()
    time.sleep(0.5)
    sampler.stop()
    everything = sampler.recent(after=0.0)
    assert {name for name, _, _ in everything} == {"a", "b"}
    assert [start for _, start, _ in everything] == sorted(start for _, start, _ in everything)
    assert len(everything) == len(samples(journal))
    later = sampler.recent(after=middle)
    assert later == [s for s in everything if s[1] >= middle]
    assert 0 < len(later) < len(everything)
    sampler.forget_before(middle)
    kept = sampler.recent(after=0.0)
    assert later == [s for s in kept if s[1] >= middle]
    assert all(start >= middle - 1.0 for _, start, _ in kept)  # at most one timeout earlier
    sampler.forget_before(math.inf)
    assert sampler.recent(after=0.0) == []


def test_sample_once_all_samples_each_probe_once(
    server: str, journal: Journal, sampler_for: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sampler = sampler_for(
        (spec("up", 1.0, 1.0), http(f"{server}/ok")), (spec("down", 1.0, 1.0), http(closed))
    )
    outcomes = sampler.sample_once_all(timeout=1.0)
    assert outcomes == {
        "up": Outcome(ok=True, value=200),
        "down": Outcome(ok=False, error="connection refused"),
    }
    assert sorted((r["probe"], r["ok"]) for r in samples(journal)) == [
        ("down", False),
        ("up", True),
    ]
    assert sampler.latest()["down"].error == "connection refused"


def test_a_check_that_outlasts_its_timeout_skips_ticks_without_faking_samples(
    journal: Journal, sampler_for: Any
) -> None:
    # Timeout 50ms at 50ms: two workers; a check that takes 300ms leaves ticks without one.
    sampler = sampler_for((spec("stuck", 0.05, 0.05), Sleepy(0.3)))
    run_for(sampler, 1.0)
    found = samples(journal, "stuck")
    skipped = sampler.latest()["stuck"].skipped
    assert skipped >= 5
    assert all(r["ok"] for r in found)  # only samples that were taken, as they were
    assert len(found) + skipped <= 1.0 / 0.05 + 2
    errors = [r for r in read_journal(journal.path) if r["type"] == "error"]
    assert errors and "tick(s) skipped" in errors[0]["message"]
    assert sum(int(e["message"].split(": ")[1].split()[0]) for e in errors) == skipped


def test_a_raising_check_is_a_failed_sample(journal: Journal, sampler_for: Any) -> None:
    class Raising(Sleepy):
        def __call__(self, timeout: float) -> Outcome:
            raise RuntimeError("boom")

    sampler = sampler_for((spec("raising", 1.0, 1.0), Raising(0)))
    assert sampler.sample_once_all(timeout=1.0) == {
        "raising": Outcome(ok=False, error="probe raised RuntimeError: boom")
    }


def test_latest_shows_each_probe_before_and_after_sampling(
    journal: Journal, sampler_for: Any
) -> None:
    sampler = sampler_for(
        (spec("good", 0.05, 1.0), Sleepy(0.0)),
        (spec("bad", 0.05, 1.0), Sleepy(0.0, Outcome(ok=False, error="status 503"))),
    )
    before = sampler.latest()
    assert before["good"].ok is None and before["good"].recent_ok_ratio is None
    run_for(sampler, 0.5)
    after = sampler.latest()
    assert after["good"].ok is True and after["good"].recent_ok_ratio == 1.0
    assert after["bad"].ok is False and after["bad"].error == "status 503"
    assert after["bad"].recent_ok_ratio == 0.0
    assert after["good"].samples == len(samples(journal, "good"))


def test_probe_names_must_be_unique(journal: Journal) -> None:
    with pytest.raises(ValueError, match="unique"):
        Sampler(
            [(spec("x", 1, 1), Sleepy(0)), (spec("x", 1, 1), Sleepy(0))],
            journal=journal,
            clock=SystemClock(),
        )
