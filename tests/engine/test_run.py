"""Whole runs on the embedded local target: real processes, real HTTP, real reverts.

Load is off in most of these (it is tested on its own and end to end in test_quickstart);
what is checked here is the timeline, the journal and that every fault is reverted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chaos_runner import api
from chaos_runner.clock import SystemClock
from chaos_runner.engine.listener import RunListener
from chaos_runner.engine.run import Run
from chaos_runner.journal import Journal, read_journal
from chaos_runner.plugins import Handle
from chaos_runner.registry import default_registry

HEALTH_PROBE = """
probes:
  - name: health
    kind: http
    interval: 50ms
    timeout: 300ms
    params: {url: "${target.url}/health"}
"""


def experiment(tmp_path: Path, body: str, *, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        metadata: {{name: {name}}}
        target: {{kind: local, params: {{replicas: 2, restart_delay: 500ms}}}}
        """)
        + textwrap.dedent(HEALTH_PROBE)
        + textwrap.dedent(body)
    )
    return path


def records(result_journal: str | None, type_: str) -> list[dict[str, Any]]:
    assert result_journal
    return [r for r in read_journal(Path(result_journal)) if r["type"] == type_]


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1]
    except FileNotFoundError:
        return None
    return None


def test_a_pause_is_injected_on_schedule_and_reverted(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        """
        faults:
          - {name: freeze, kind: pause, offset: 500ms, duration: 1s, selector: {count: 1, seed: 1}}
        phases: {baseline: 1s, hold: 500ms, recovery_deadline: 10s}
        slos:
          - {name: recovery, kind: recovery_time, max: 5s}
    """,
    )
    result = api.run(path, reports_dir=tmp_path / "reports", handle_signals=False)
    assert result.status == "passed", result.reason
    handles = records(result.journal, "handle")
    injects = records(result.journal, "inject")
    reverts = records(result.journal, "revert")
    assert len(handles) == len(injects) == len(reverts) == 1
    assert injects[0]["ok"] and reverts[0]["ok"] and reverts[0]["reason"] == "scheduled"
    assert reverts[0]["t"] - injects[0]["t"] == pytest.approx(1.0, abs=0.2)
    fault = result.faults[0]
    assert fault.reverted and fault.recovery_time is not None
    phases = [r["name"] for r in records(result.journal, "phase")]
    assert phases == ["preflight", "baseline", "faults", "recovery", "teardown"]
    assert records(result.journal, "end")[0]["status"] == "completed"
    for name in ("result.json", "junit.xml", "report.md"):
        assert (Path(result.journal).parent / name).is_file()


def test_an_exception_mid_run_still_reverts_the_active_fault(tmp_path: Path) -> None:
    """The load generator "dies" while a pause is active: the run aborts, the replica is
    resumed before teardown stops the system."""

    class DyingLoad:
        error: str | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    load = DyingLoad()

    class Listener(RunListener):
        def __init__(self) -> None:
            self.paused: list[str | None] = []
            self.resumed: list[str | None] = []

        def fault_injected(self, handle: Handle, error: str | None) -> None:
            self.paused.append(process_state(int(handle.data["pid"])))
            load.error = "worker exited with code -9"

        def fault_reverted(self, handle: Handle, error: str | None, reason: str) -> None:
            self.resumed.append(process_state(int(handle.data["pid"])))

    path = experiment(
        tmp_path,
        """
        load: {users: 1}
        faults:
          - {name: freeze, kind: pause, offset: 200ms, duration: 30s}
        phases: {baseline: 500ms, hold: 500ms, recovery_deadline: 5s}
    """,
    )
    listener = Listener()
    loaded = api.validate(path)
    journal_path = tmp_path / "journal.jsonl"
    with Journal(journal_path) as journal:
        status, reason = Run(
            loaded,
            run_id="t",
            journal=journal,
            registry=default_registry(),
            clock=SystemClock(),
            stop=threading.Event(),
            listener=listener,
            dry_run=False,
            seed=1,
            load_factory=lambda *a, **k: load,
        ).execute()
    assert status == "aborted" and "load generator died" in reason
    assert listener.paused == ["T"]
    assert listener.resumed and listener.resumed[0] not in ("T", "t"), "the replica was resumed"
    reverts = [r for r in read_journal(journal_path) if r["type"] == "revert"]
    assert [r["reason"] for r in reverts] == ["abort"] and reverts[0]["ok"]


def test_a_system_that_is_not_steady_gets_nothing_injected(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        textwrap.dedent("""
        metadata: {name: broken}
        target: {kind: local, params: {replicas: 1}}
        probes:
          - {name: nothing-here, kind: tcp, interval: 100ms, timeout: 200ms,
             params: {host: 127.0.0.1, port: 9}}
        faults:
          - {name: k, kind: kill}
        phases: {preflight_timeout: 1s}
    """)
    )
    result = api.run(path, reports_dir=tmp_path / "reports", handle_signals=False)
    assert result.status == "not_steady" and result.exit_code == 2
    assert "not in steady state" in result.reason and "nothing-here" in result.reason
    assert records(result.journal, "handle") == []
    assert records(result.journal, "inject") == []


def test_a_dry_run_prints_the_plan_and_injects_nothing(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        """
        faults:
          - {name: k, kind: kill, offset: 1s, selector: {count: 1, seed: 3}}
          - {name: slow, kind: latency, offset: 2s, duration: 1s, params: {latency: 100ms}}
    """,
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos_runner",
            "run",
            str(path),
            "--dry-run",
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "plan" in out.stdout and "replica-" in out.stdout and "slow" in out.stdout
    assert "DRY_RUN" in out.stdout
    assert "SLOs" not in out.stdout  # nothing ran, so nothing is judged
    journal = next((tmp_path / "reports").glob("*/journal.jsonl"))
    entries = read_journal(journal)
    selected = {r["fault"]: r["members"] for r in entries if r["type"] == "selection"}
    assert [m["name"] for m in selected["k"]] in (["replica-0"], ["replica-1"])
    # The latency fault acts on the proxy, whatever the selector says: the plan says so.
    assert [m["id"] for m in selected["slow"]] == ["proxy"]
    assert not {r["type"] for r in entries} & {"handle", "inject", "revert"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_fault_reverts_everything_and_exits_3(tmp_path: Path, signum: int) -> None:
    path = experiment(
        tmp_path,
        """
        faults:
          - {name: freeze, kind: pause, offset: 0s, duration: 60s, selector: {count: 1}}
          - {name: slow, kind: latency, offset: 0s, duration: 60s, params: {latency: 200ms}}
        phases: {baseline: 500ms, hold: 500ms, recovery_deadline: 10s}
    """,
    )
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaos_runner",
            "run",
            str(path),
            "--reports-dir",
            str(reports),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        journal: Path | None = None
        while time.monotonic() < deadline:
            found = list(reports.glob("*/journal.jsonl"))
            if found and sum(r["type"] == "inject" for r in read_journal(found[0])) == 2:
                journal = found[0]
                break
            time.sleep(0.05)
        assert journal is not None, "both faults were injected"
        paused_pid = next(
            int(r["handle"]["data"]["pid"])
            for r in read_journal(journal)
            if r["type"] == "handle" and r["handle"]["kind"] == "pause"
        )
        assert process_state(paused_pid) == "T"
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, output
    entries = read_journal(journal)
    reverts = [r for r in entries if r["type"] == "revert"]
    assert sorted(r["reason"] for r in reverts) == ["abort", "abort"]
    assert all(r["ok"] for r in reverts)
    aborts = [r for r in entries if r["type"] == "abort"]
    assert aborts and ("SIGTERM" in aborts[0]["reason"] or "SIGINT" in aborts[0]["reason"])
    assert entries[-1]["type"] == "end" and entries[-1]["status"] == "aborted"
    # Nothing of the local system survives the run: no process still stopped or running.
    assert process_state(paused_pid) is None
    result = json.loads((journal.parent / "result.json").read_text())
    assert result["status"] == "aborted" and result["exit_code"] == 3


def test_a_stop_condition_aborts_and_reverts(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        """
        load: {users: 4, rate_per_user: 20, window: 250ms}
        faults:
          - {name: refuse-all, kind: reset, offset: 500ms, duration: 30s, params: {share: 1.0}}
        phases: {baseline: 1s, hold: 500ms, recovery_deadline: 10s}
        safety: {abort_error_ratio: 0.5, abort_window: 1s}
    """,
    )
    result = api.run(path, reports_dir=tmp_path / "reports", handle_signals=False)
    assert result.status == "aborted", result.reason
    assert "stop condition" in result.reason
    reverts = records(result.journal, "revert")
    assert reverts and all(r["ok"] for r in reverts)
    assert result.faults[0].reverted


def test_the_journal_survives_a_killed_runner_and_revert_command_cleans_up(
    tmp_path: Path,
) -> None:
    path = experiment(
        tmp_path,
        """
        faults:
          - {name: slow, kind: latency, offset: 0s, duration: 60s, params: {latency: 100ms}}
        phases: {baseline: 300ms}
    """,
    )
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaos_runner",
            "run",
            str(path),
            "--reports-dir",
            str(reports),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        journal = None
        while time.monotonic() < deadline:
            found = list(reports.glob("*/journal.jsonl"))
            if found and any(r["type"] == "inject" for r in read_journal(found[0])):
                journal = found[0]
                break
            time.sleep(0.05)
        assert journal is not None
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    entries = read_journal(journal)
    assert any(r["type"] == "sample" for r in entries)
    assert not any(r["type"] == "end" for r in entries)
    result = api.report(journal.parent)
    assert result.status == "aborted" and result.exit_code == 3
    outcomes = api.revert(journal.parent)
    assert len(outcomes) == 1 and outcomes[0].error is None
    assert api.revert(journal.parent) == [], "a second revert finds nothing left to do"
