"""The json, junit and markdown reporters, fed hand-made RunResults.

Checks what a user of each file notices: result.json reads back whole, junit.xml parses and
fails exactly when the run did, report.md shows verdicts, recovery times and gaps.
"""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from chaos_runner.plugins import Reporter
from chaos_runner.registry import default_registry
from chaos_runner.reports import write_atomic
from chaos_runner.reports.json import JsonReporter
from chaos_runner.reports.junit import JunitReporter
from chaos_runner.reports.markdown import MarkdownReporter
from chaos_runner.result import (
    ErrorBudget,
    FaultOutcome,
    PhaseSummary,
    RunResult,
    SloVerdict,
    Stats,
    TimelineEvent,
)


def availability_slo(*, passed: bool = True) -> SloVerdict:
    return SloVerdict(
        name="checkout availability",
        kind="availability",
        passed=passed,
        observed=99.95 if passed else 97.5,
        target=99.9,
        unit="percent",
        comparison=">=",
        phase="run",
        source="load",
        detail="1999 of 2000 succeeded",
        budget=ErrorBudget(
            allowed=0.001,
            consumed=0.5,
            window=2592000.0,
            window_consumed=0.0000123,
            burn_rates={"kill-api": 12.5},
        ),
    )


def kill_fault(**changes: object) -> FaultOutcome:
    fault = FaultOutcome(
        name="kill-api",
        kind="kill",
        members=["api-1", "api-2"],
        injected_at=10.0,
        ended_at=10.0,
        reversible=False,
        reverted=False,
        time_to_impact=0.25,
        recovered_at=14.2,
        recovery_time=4.2,
        resolution=0.5,
        availability=Stats(total=400, failures=12, success_ratio=0.97),
    )
    return fault.model_copy(update=changes)


def passed_run() -> RunResult:
    recovery = SloVerdict(
        name="api recovers",
        kind="recovery",
        passed=True,
        observed=4.2,
        target=10.0,
        unit="s",
        comparison="<=",
        detail="kill-api: 4.200s",
    )
    phase_stats = Stats(total=2000, failures=1, success_ratio=0.9995, p50_ms=12.0, p95_ms=40.0)
    return RunResult(
        run_id="20240501-120000-abcd",
        experiment="checkout",
        status="passed",
        exit_code=0,
        started_wall=1714564800.0,
        duration=30.5,
        hold=2.0,
        steady_state_restored=True,
        recovered_at=14.2,
        phases=[
            PhaseSummary(
                name="faults",
                start=10.0,
                end=20.0,
                load=phase_stats.model_copy(update={"errors": {"ConnectionRefused": 1}}),
                probes={"health": Stats(total=100, failures=0, success_ratio=1.0, p95_ms=3.5)},
            )
        ],
        faults=[kill_fault()],
        slos=[availability_slo(), recovery],
        events=[TimelineEvent(t=10.01, source="local", action="die", member="api-1")],
    )


def failed_run() -> RunResult:
    latency = SloVerdict(
        name="p95 latency",
        kind="latency",
        passed=False,
        observed=812.0,
        target=500.0,
        unit="ms",
        comparison="<=",
        phase="faults",
        source="load",
        detail="p95 of load over faults",
    )
    fault = kill_fault(time_to_impact=None, availability=None)
    return RunResult(
        run_id="run-failed",
        experiment="checkout",
        status="failed",
        exit_code=1,
        reason="SLO not met: p95 latency",
        duration=31.0,
        faults=[fault],
        slos=[availability_slo(), latency],
    )


def aborted_run() -> RunResult:
    return RunResult(
        run_id="run-aborted",
        experiment="checkout",
        status="aborted",
        exit_code=3,
        reason="the journal has no end record (interrupted): the run did not finish",
        duration=4.0,
        errors=["engine: interrupted | by SIGINT"],
    )


RUNS = [passed_run, failed_run, aborted_run]


def junit(tmp_path: Path, result: RunResult) -> ET.Element:
    path = JunitReporter().write(result, tmp_path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite


def case(suite: ET.Element, name: str) -> ET.Element:
    found = [c for c in suite.iter("testcase") if c.get("name") == name]
    assert len(found) == 1, f"no single testcase {name!r}"
    return found[0]


# --------------------------------------------------------------------- json


@pytest.mark.parametrize("make", RUNS)
def test_result_json_reads_back_equal(tmp_path: Path, make: Callable[[], RunResult]) -> None:
    result = make()
    path = JsonReporter().write(result, tmp_path)
    assert path == tmp_path / "result.json"
    assert RunResult.model_validate_json(path.read_text(encoding="utf-8")) == result


def test_write_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "report.txt"
    write_atomic(target, "old and longer\n")
    old_umask = os.umask(0o022)
    try:
        write_atomic(target, "new\n")
    finally:
        os.umask(old_umask)
    assert target.read_text(encoding="utf-8") == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["report.txt"]
    # Readable by an artifact uploader running as another user, like any ordinary file.
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# --------------------------------------------------------------------- junit


def test_junit_passed_run_has_one_passing_case_per_slo(tmp_path: Path) -> None:
    suite = junit(tmp_path, passed_run())
    assert suite.get("name") == "chaos-runner: checkout"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert suite.get("time") == "30.500"
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names == ["checkout availability", "api recovers"]
    assert {c.get("classname") for c in suite.iter("testcase")} == {"chaos_runner.checkout"}
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == {"status": "passed", "exit_code": "0", "run_id": "20240501-120000-abcd"}


def test_junit_failing_slo_names_observed_and_target(tmp_path: Path) -> None:
    suite = junit(tmp_path, failed_run())
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failure = case(suite, "p95 latency").find("failure")
    assert failure is not None
    assert failure.get("message") == "observed 812.0 ms, target <= 500.0 ms"
    assert failure.text == "p95 of load over faults"
    assert case(suite, "checkout availability").find("failure") is None


def test_junit_aborted_run_is_an_error(tmp_path: Path) -> None:
    suite = junit(tmp_path, aborted_run())
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "1")
    error = case(suite, "run").find("error")
    assert error is not None
    assert error.get("message") == aborted_run().reason
    system_out = suite.findtext("system-out") or ""
    assert "engine: interrupted | by SIGINT" in system_out


def test_junit_fault_that_was_not_reverted_fails(tmp_path: Path) -> None:
    fault = kill_fault(name="pause-db", reversible=True, reverted=False, errors=["revert: 409"])
    result = passed_run().model_copy(update={"status": "failed", "exit_code": 1})
    suite = junit(tmp_path, result.model_copy(update={"faults": [fault]}))
    failure = case(suite, "fault pause-db").find("failure")
    assert failure is not None
    assert "not reverted" in (failure.get("message") or "")
    assert failure.text == "revert: 409"
    assert suite.get("failures") == "1"


def test_junit_failed_run_fails_even_when_every_slo_passed(tmp_path: Path) -> None:
    result = passed_run().model_copy(
        update={"status": "failed", "exit_code": 1, "reason": "steady state not restored"}
    )
    suite = junit(tmp_path, result)
    failure = case(suite, "run").find("failure")
    assert failure is not None
    assert failure.get("message") == "steady state not restored"


def test_junit_dry_run_is_skipped_not_failed(tmp_path: Path) -> None:
    result = aborted_run().model_copy(update={"status": "dry_run", "exit_code": 0, "reason": ""})
    suite = junit(tmp_path, result)
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "1")
    assert case(suite, "run").find("skipped") is not None


def test_junit_survives_control_characters_in_error_texts(tmp_path: Path) -> None:
    latency = failed_run().slos[1].model_copy(update={"detail": "curl said \x1b[31mno\x00"})
    result = failed_run().model_copy(update={"slos": [latency]})
    failure = case(junit(tmp_path, result), "p95 latency").find("failure")
    assert failure is not None
    assert "curl said" in (failure.text or "")


# --------------------------------------------------------------------- markdown


def markdown(tmp_path: Path, result: RunResult) -> str:
    path = MarkdownReporter().write(result, tmp_path)
    assert path == tmp_path / "report.md"
    return path.read_text(encoding="utf-8")


def test_markdown_passed_run_shows_verdicts_and_recovery(tmp_path: Path) -> None:
    text = markdown(tmp_path, passed_run())
    assert text.startswith("# Chaos run: checkout — PASSED\n")
    assert "(exit code 0)" in text
    assert "checkout availability" in text and "api recovers" in text
    assert ">= 99.900%" in text and "99.950%" in text
    assert "4.200 s ± 0.500 s" in text
    assert "97.000% (388 of 400)" in text
    assert "kill-api: 12.5x" in text and "0.001% of 30d" in text
    assert "| n/a |" in text
    assert "ConnectionRefused (1)" in text
    assert "| faults | 10.000 to 20.000 s | 2000 | 99.950% | 12.0 ms | 40.0 ms | — |" in text
    assert "## Timeline" in text and "die" in text


def test_markdown_failed_run_shows_failure_and_missing_values(tmp_path: Path) -> None:
    text = markdown(tmp_path, failed_run())
    assert "— FAILED" in text
    assert "SLO not met: p95 latency" in text
    assert "| p95 latency | latency | 812.0 ms | <= 500.0 ms | **NOT MET** |" in text
    fault_row = next(line for line in text.splitlines() if line.startswith("| kill-api |"))
    assert "| — |" in fault_row  # no time to impact, no availability
    assert "## Timeline" not in text


def test_markdown_aborted_run_keeps_tables_intact(tmp_path: Path) -> None:
    text = markdown(tmp_path, aborted_run())
    assert "— ABORTED" in text
    assert "did not finish" in text
    assert "No SLO was judged." in text
    assert "engine: interrupted \\| by SIGINT" in text


def test_markdown_shows_a_fault_that_never_recovered(tmp_path: Path) -> None:
    fault = kill_fault(recovered_at=None, recovery_time=None)
    text = markdown(tmp_path, passed_run().model_copy(update={"faults": [fault]}))
    assert "**not recovered**" in text


# --------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "cls", "filename"),
    [
        ("json", JsonReporter, "result.json"),
        ("junit", JunitReporter, "junit.xml"),
        ("markdown", MarkdownReporter, "report.md"),
    ],
)
def test_registry_finds_each_reporter(tmp_path: Path, name: str, cls: type, filename: str) -> None:
    reporter = default_registry().reporter(name)
    assert isinstance(reporter, cls)
    assert isinstance(reporter, Reporter)
    assert reporter.name == name
    assert reporter.write(passed_run(), tmp_path) == tmp_path / filename
    assert [p.name for p in tmp_path.iterdir()] == [filename]
