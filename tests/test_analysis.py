"""Analysis on hand-made journals: exact recovery times, ratios, percentiles and verdicts.

No process, socket or clock: each journal is a list of records written out below, so every
expected figure can be worked out by hand from the test itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from chaos_runner.analysis import analyse, recovery_start

T0 = 1000.0
"""Monotonic time of the run record; the result's times are relative to it."""


def experiment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "hand-made"},
        "target": {"kind": "local", "params": {}},
        "probes": [
            {"name": "health", "kind": "http", "interval": 0.1, "params": {"url": "x"}},
            {"name": "port", "kind": "tcp", "interval": 0.5, "params": {"port": 1}},
        ],
        "faults": [{"name": "kill-one", "kind": "kill", "offset": 0, "duration": 0}],
        "phases": {"baseline": 2, "hold": 1, "recovery_deadline": 10},
        "load": {"users": 1},
        "slos": [],
    }
    body.update(overrides)
    return body


class JournalBuilder:
    """Records in the journal's format, with `t` given relative to the run's start."""

    def __init__(self, exp: dict[str, Any], *, reversible: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.add("run", 0.0, run_id="r1", experiment=exp, source="x.yaml")
        self.reversible = reversible

    def add(self, type_: str, t: float, **fields: Any) -> None:
        self.records.append({"type": type_, "t": T0 + t, "w": 5e8 + t, **fields})

    def phases(self, **starts: float) -> None:
        for name, t in starts.items():
            self.add("phase", t, name=name)

    def fault(
        self, name: str, injected: float, reverted: float | None = None, *, ok: bool = True
    ) -> None:
        self.add(
            "selection",
            injected - 0.001,
            fault=name,
            kind="kill",
            members=[{"id": "1", "name": "replica-0"}],
            reversible=self.reversible,
        )
        handle = {"id": f"{name}-h", "fault": name, "kind": "kill", "member": {}, "data": {}}
        self.add("handle", injected, handle=handle, reversible=self.reversible)
        self.add("inject", injected, handle=f"{name}-h", ok=ok, error=None if ok else "boom")
        if reverted is not None:
            self.add("revert", reverted, handle=f"{name}-h", ok=True, error=None, reason="x")

    def samples(
        self, probe: str, start: float, stop: float, step: float, failing: tuple[float, float]
    ) -> None:
        """Samples every `step` from `start` to `stop`; failing when in [failing)."""
        n = round((stop - start) / step)
        for i in range(n + 1):
            t = round(start + i * step, 6)
            ok = not (failing[0] <= t < failing[1])
            self.add("sample", t, probe=probe, ok=ok, ms=10.0 if ok else 300.0, err=None)

    def window(self, t0: float, t1: float, requests: int, failures: int, **hist: int) -> None:
        self.add(
            "load",
            t1,
            t0=T0 + t0,
            t1=T0 + t1,
            requests=requests,
            failures=failures,
            users=1,
            p50=None,
            p95=None,
            p99=None,
            max=max((float(k[1:]) for k in hist), default=None),
            hist={k[1:]: v for k, v in hist.items()},
            errors={"GET /: 503": failures} if failures else {},
        )

    def end(self, t: float, status: str = "completed", reason: str = "") -> None:
        self.add("end", t, status=status, reason=reason)


def kill_run(slos: list[dict[str, Any]] | None = None) -> JournalBuilder:
    """Baseline 0.5-2 s, a kill at 2.0 s, health failing 2.3-4.0 s, port failing 2.5-3.5 s."""
    journal = JournalBuilder(experiment(slos=slos or []))
    journal.phases(preflight=0.0, baseline=0.5, faults=2.0, recovery=3.0, teardown=8.0)
    journal.fault("kill-one", 2.0)
    journal.samples("health", 0.5, 7.9, 0.1, failing=(2.3, 4.0))
    journal.samples("port", 0.5, 7.5, 0.5, failing=(2.5, 3.5))
    for i in range(15):  # 0.5 s windows from 0.5 to 8.0; those from 2.0 to 4.0 lose half
        t0 = 0.5 + i * 0.5
        failures = 50 if 2.0 <= t0 < 4.0 else 0
        journal.window(t0, t0 + 0.5, 100, failures, _10=90, _20=9, _500=1)
    journal.end(8.2)
    return journal


def test_recovery_is_the_start_of_the_first_stretch_that_holds() -> None:
    samples = [("a", t / 10, not (3 <= t < 20)) for t in range(0, 60)]
    samples += [("b", t / 2, t != 4) for t in range(0, 12)]
    # a fails until 2.0, b fails only at 2.0; both pass from 2.5 (b's next sample) on.
    assert recovery_start(samples, ["a", "b"], after=0.25, hold=1.0) == 2.5
    # A hold longer than the evidence: no stretch yet.
    assert recovery_start(samples, ["a", "b"], after=0.25, hold=4.0) is None


def test_a_relapse_inside_the_hold_restarts_the_stretch() -> None:
    samples = [("a", t / 10, t not in (5, 6, 15)) for t in range(0, 50)]
    assert recovery_start(samples, ["a"], after=0.5, hold=1.0) == pytest.approx(1.6)


def test_a_probe_without_a_sample_after_the_fault_keeps_recovery_open() -> None:
    samples = [("a", t / 10, True) for t in range(0, 50)] + [("b", 0.0, True)]
    assert recovery_start(samples, ["a", "b"], after=0.1, hold=1.0) is None


def test_the_kill_fault_gets_exact_impact_and_recovery_times() -> None:
    result = analyse(kill_run().records)
    (fault,) = result.faults
    assert fault.injected_at == pytest.approx(2.0)
    assert fault.ended_at == pytest.approx(2.0)  # a kill ends when it is injected
    assert fault.time_to_impact == pytest.approx(0.3)  # health's first failure at 2.3
    # Health passes from 4.0, port from 3.5: the stretch starts at 4.0 and holds to 5.0.
    assert fault.recovered_at == pytest.approx(4.0)
    assert fault.recovery_time == pytest.approx(2.0)
    assert fault.resolution == pytest.approx(0.5)  # the slowest steady probe's interval
    assert fault.members == ["replica-0"]
    # Load during the impact window 2.0-4.0: four windows, half of their requests failed.
    assert fault.availability is not None
    assert (fault.availability.total, fault.availability.failures) == (400, 200)
    assert result.status == "passed" and result.exit_code == 0
    assert result.steady_state_restored is True
    assert result.recovered_at == pytest.approx(4.0)


def test_phase_summaries_split_windows_and_samples_without_counting_one_twice() -> None:
    result = analyse(kill_run().records)
    phases = {p.name: p for p in result.phases}
    assert [p.name for p in result.phases] == ["baseline", "faults", "recovery"]
    assert phases["baseline"].start == pytest.approx(0.5)
    assert phases["baseline"].end == pytest.approx(2.0)
    totals = sum(p.load.total for p in result.phases if p.load)
    assert totals == 1500  # every window in exactly one phase
    baseline_load = phases["baseline"].load
    assert baseline_load is not None
    assert baseline_load.failures == 0 and baseline_load.total == 300
    # Histogram merge: 90 % at 10 ms, 9 % at 20 ms, 1 % at 500 ms.
    assert (baseline_load.p50_ms, baseline_load.p95_ms, baseline_load.p99_ms) == (10, 20, 20)
    assert baseline_load.max_ms == 500
    assert baseline_load.per_second == pytest.approx(200.0)
    health = phases["baseline"].probes["health"]
    assert (health.total, health.failures) == (15, 0)


def test_availability_slo_reports_error_budget_window_share_and_burn_rate() -> None:
    slo = {
        "name": "avail",
        "kind": "availability",
        "objective": 99.0,
        "window": "28d",
        "phase": "run",
    }
    result = analyse(kill_run([slo]).records)
    (verdict,) = result.slos
    # Run phase 0.5-8.0: 15 windows, 1500 requests, 200 failures.
    assert verdict.observed == pytest.approx(1300 / 1500 * 100)
    assert not verdict.passed
    assert result.status == "failed" and result.exit_code == 1
    assert "avail" in result.reason
    budget = verdict.budget
    assert budget is not None
    assert budget.allowed == pytest.approx(0.01)
    assert budget.consumed == pytest.approx((200 / 1500) / 0.01)
    # 7.5 s at a 13.3 % error ratio is 1 s of full outage; 28 d at 1 % allows 24192 s.
    assert budget.window_consumed == pytest.approx(1.0 / 24192)
    assert budget.burn_rates["kill-one"] == pytest.approx(50.0)  # 50 % errors / 1 % allowed


def test_latency_recovery_and_detection_slos() -> None:
    slos = [
        {"name": "p99", "kind": "latency", "percentile": 99, "max": "100ms", "phase": "baseline"},
        {
            "name": "probe-p50",
            "kind": "latency",
            "source": "probe:health",
            "percentile": 50,
            "max": "20ms",
        },
        {"name": "recovers", "kind": "recovery_time", "max": "1500ms"},
        {"name": "detects", "kind": "time_to_detect", "probe": "port", "max": "1s"},
    ]
    verdicts = {v.name: v for v in analyse(kill_run(slos).records).slos}
    assert verdicts["p99"].observed == 20 and verdicts["p99"].passed
    assert verdicts["p99"].unit == "ms" and verdicts["p99"].target == 100
    assert verdicts["probe-p50"].observed == 10 and verdicts["probe-p50"].passed
    assert verdicts["recovers"].observed == pytest.approx(2.0)
    assert not verdicts["recovers"].passed
    assert verdicts["detects"].observed == pytest.approx(0.5)  # port's failure at 2.5
    assert verdicts["detects"].passed


def test_a_reversible_fault_recovers_from_its_revert() -> None:
    journal = JournalBuilder(experiment(), reversible=True)
    journal.phases(preflight=0.0, baseline=0.5, faults=2.5, recovery=5.0, teardown=9.0)
    journal.fault("kill-one", 2.5, reverted=4.5)
    journal.samples("health", 0.5, 8.9, 0.1, failing=(2.6, 4.7))
    journal.samples("port", 0.5, 8.5, 0.5, failing=(9.0, 9.0))
    journal.end(9.1)
    (fault,) = analyse(journal.records).faults
    assert fault.ended_at == pytest.approx(4.5)
    assert fault.reverted
    assert fault.recovery_time == pytest.approx(0.2)
    assert fault.availability is None  # no load in this run


def test_a_fault_that_never_heals_fails_recovery() -> None:
    journal = JournalBuilder(experiment(slos=[{"name": "r", "kind": "recovery_time", "max": 5}]))
    journal.phases(preflight=0.0, baseline=0.5, faults=2.5, recovery=3.0, teardown=6.0)
    journal.fault("kill-one", 2.0)
    journal.samples("health", 0.5, 5.9, 0.1, failing=(2.3, 99))
    journal.samples("port", 0.5, 5.5, 0.5, failing=(99, 99))
    journal.end(6.1, "failed", "steady state not restored within the recovery deadline (3s)")
    result = analyse(journal.records)
    (fault,) = result.faults
    assert fault.recovered_at is None and fault.recovery_time is None
    assert result.status == "failed" and result.steady_state_restored is False
    assert "not restored" in result.reason
    (verdict,) = result.slos
    assert not verdict.passed and "no recovery for kill-one" in verdict.detail


def test_a_journal_without_an_end_is_an_aborted_run() -> None:
    journal = kill_run()
    records = [r for r in journal.records if r["type"] != "end"]
    records.insert(-3, {"type": "abort", "t": T0 + 7.0, "w": 0, "reason": "SIGTERM"})
    result = analyse(records)
    assert result.status == "aborted" and result.exit_code == 3
    assert "SIGTERM" in result.reason


@pytest.mark.parametrize(
    ("engine", "status", "code"),
    [
        ("not_steady", "not_steady", 2),
        ("invalid", "invalid", 2),
        ("aborted", "aborted", 3),
        ("error", "error", 2),
        ("dry_run", "dry_run", 0),
    ],
)
def test_engine_statuses_map_to_documented_exit_codes(engine: str, status: str, code: int) -> None:
    journal = JournalBuilder(experiment())
    journal.phases(preflight=0.0, teardown=0.5)
    journal.end(0.6, engine, "why")
    result = analyse(journal.records)
    assert (result.status, result.exit_code, result.reason) == (status, code, "why")


def test_a_fault_that_failed_to_inject_fails_the_run() -> None:
    journal = JournalBuilder(experiment())
    journal.phases(preflight=0.0, baseline=0.5, faults=2.5, recovery=3.0, teardown=5.0)
    journal.fault("kill-one", 2.0, ok=False)
    journal.samples("health", 0.5, 4.9, 0.1, failing=(99, 99))
    journal.samples("port", 0.5, 4.5, 0.5, failing=(99, 99))
    journal.end(5.1)
    result = analyse(journal.records)
    assert result.status == "failed"
    assert "never injected: kill-one" in result.reason
    assert result.faults[0].errors == ["inject: boom"]


def test_events_are_kept_on_the_timeline() -> None:
    journal = kill_run()
    journal.add("event", 2.01, source="supervisor", action="die", member="replica-0", detail="")
    result = analyse(journal.records)
    assert [(e.action, round(e.t, 2)) for e in result.events] == [("die", 2.01)]
