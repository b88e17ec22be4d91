"""Kill and pause on the local target's replicas: real processes, real signals, real HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from pydantic import ValidationError

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import FaultSpec, Selector
from chaos_runner.faults.local import KillReplica, PauseReplica, signal_name, start_time
from chaos_runner.journal import Journal, read_journal
from chaos_runner.plugins import Handle, Member
from chaos_runner.registry import default_registry
from chaos_runner.targets.local.driver import LocalParams, LocalTarget


@pytest.fixture
def start_local(tmp_path: Path) -> Iterator[Callable[..., LocalTarget]]:
    started: list[LocalTarget] = []

    def start(*, journal: Journal | None = None, **params: Any) -> LocalTarget:
        target = LocalTarget(LocalParams.model_validate(params), base_dir=tmp_path, journal=journal)
        started.append(target)
        target.start()
        return target

    try:
        yield start
    finally:
        for target in started:
            target.stop()


def state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line.split()[1] for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return None


def get(url: str, timeout: float = 1.0) -> int:
    response = urllib3.request(
        "GET", url, headers={"Connection": "close"}, retries=False, timeout=timeout
    )
    return response.status


def plan(kind: KillReplica | PauseReplica, target: LocalTarget, params: Any, *names: str) -> Handle:
    members = target.members(Selector(names=names))
    spec = FaultSpec(kind=kind.kind)
    handles = kind.plan(spec, "f", params, members, target)
    assert len(handles) == len(members) == 1
    return handles[0]


def test_the_kinds_are_registered_for_local_targets() -> None:
    registry = default_registry()
    assert isinstance(registry.fault("kill", "local"), KillReplica)
    assert isinstance(registry.fault("pause", "local"), PauseReplica)
    assert KillReplica.reversible is False and PauseReplica.reversible is True


def test_a_kill_fails_requests_until_the_supervisor_restarts_the_replica(
    start_local: Callable[..., LocalTarget], tmp_path: Path
) -> None:
    kill = KillReplica()
    with Journal(tmp_path / "journal.jsonl") as journal:
        target = start_local(replicas=1, restart_delay="800ms", journal=journal)
        params = KillReplica.Params.model_validate({})
        handle = plan(kill, target, params, "replica-0")
        pid = handle.data["pid"]
        assert handle.member == "replica-0" and handle.data["start_time"] == start_time(pid)
        url = target.variables()["target.url"] + "/health"
        assert get(url) == 200
        kill.inject(handle, params, target)
        outcomes: list[bool] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (outcomes and outcomes[-1]):
            try:
                outcomes.append(get(url, timeout=0.5) == 200)
            except urllib3.exceptions.HTTPError:
                outcomes.append(False)
                time.sleep(0.02)
        assert outcomes[0] is False and outcomes[-1] is True, outcomes
        kill.revert(handle, target)  # nothing to undo, and no error
        new_pid = int(target.members(Selector())[0].attrs["pid"])
        assert new_pid != pid and state(pid) is None
    events = [r for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "event"]
    assert [e["action"] for e in events] == ["start", "die", "restart"]
    assert events[1]["detail"]["signal"] == "SIGKILL"


def test_a_kill_sends_the_signal_it_is_given(start_local: Callable[..., LocalTarget]) -> None:
    kill = KillReplica()
    target = start_local(replicas=2, restart_delay="5s")
    params = KillReplica.Params.model_validate({"signal": "TERM"})
    handle = plan(kill, target, params, "replica-1")
    kill.inject(handle, params, target)
    assert target.supervisor is not None
    deadline = time.monotonic() + 5
    while target.supervisor.replicas()[1].running and time.monotonic() < deadline:
        time.sleep(0.02)
    replica = target.supervisor.replicas()[1]
    assert replica.last_exit in ("exit code 0", "killed by SIGTERM")
    assert state(handle.data["pid"]) is None
    assert [m.id for m in target.members(Selector())] == ["replica-0"]


@pytest.mark.parametrize(
    ("given", "name"),
    [("SIGKILL", "SIGKILL"), ("term", "SIGTERM"), (10, "SIGUSR1"), ("2", "SIGINT")],
)
def test_signals_are_named_or_numbered(given: str | int, name: str) -> None:
    assert KillReplica.Params.model_validate({"signal": given}).signal == name  # type: ignore[attr-defined]
    assert signal_name(given) == name


@pytest.mark.parametrize("given", ["SIGNOPE", 999, True, 1.5])
def test_an_unknown_signal_is_refused(given: object) -> None:
    with pytest.raises(ValidationError, match="signal"):
        KillReplica.Params.model_validate({"signal": given})


def test_a_pause_freezes_the_replica_and_the_revert_resumes_it(
    start_local: Callable[..., LocalTarget],
) -> None:
    pause = PauseReplica()
    target = start_local(replicas=1, restart_delay="100ms")
    params = PauseReplica.Params.model_validate({})
    handle = plan(pause, target, params, "replica-0")
    replica_url = target.variables()["target.replicas.0.url"] + "/health"
    pause.inject(handle, params, target)
    try:
        assert state(handle.data["pid"]) == "T"
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            get(replica_url, timeout=0.3)
    finally:
        pause.revert(handle, target)
    assert state(handle.data["pid"]) in ("S", "R")
    assert get(replica_url) == 200
    pause.revert(handle, target)  # idempotent
    assert target.members(Selector())[0].attrs["pid"] == str(handle.data["pid"])


def test_a_pause_is_reverted_from_its_journalled_handle_alone(
    start_local: Callable[..., LocalTarget], tmp_path: Path
) -> None:
    target = start_local(replicas=2)
    params = PauseReplica.Params.model_validate({})
    handle = plan(PauseReplica(), target, params, "replica-1")
    PauseReplica().inject(handle, params, target)
    assert state(handle.data["pid"]) == "T"
    # As `chaos-runner revert` does after a crash: a handle read back from JSON, a fresh
    # fault kind and a target that is only attached (it started nothing).
    journalled = Handle.from_json(handle.to_json())
    attached = LocalTarget(LocalParams(replicas=2), base_dir=tmp_path, journal=None)
    attached.attach()
    PauseReplica().revert(journalled, attached)
    assert state(handle.data["pid"]) in ("S", "R")
    assert get(target.variables()["target.replicas.1.url"] + "/health") == 200


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = start_time(bystander.pid)
        assert started is not None
        stale = Handle(
            "h", "f", "pause", "replica-0", {"pid": bystander.pid, "start_time": started - 1}
        )
        target = LocalTarget(LocalParams(), base_dir=tmp_path, journal=None)
        with pytest.raises(FaultError, match=r"pid \d+ is gone"):
            PauseReplica().inject(stale, PauseReplica.Params(), target)
        PauseReplica().revert(stale, target)
        with pytest.raises(FaultError, match="is gone"):
            KillReplica().inject(stale, KillReplica.Params(), target)
        assert state(bystander.pid) in ("S", "R") and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    gone = Handle("h", "f", "pause", "replica-0", {"pid": bystander.pid, "start_time": started})
    PauseReplica().revert(gone, target)  # the process is gone: nothing to do, no error


def test_planning_on_a_vanished_replica_fails(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "pass"])
    bystander.wait()
    member = Member("replica-0", "replica-0", {"pid": str(bystander.pid), "port": "1"})
    target = LocalTarget(LocalParams(), base_dir=tmp_path, journal=None)
    with pytest.raises(FaultError, match=r"replica-0 \(pid \d+\) is not running"):
        KillReplica().plan(FaultSpec(kind="kill"), "f", KillReplica.Params(), [member], target)


def test_a_replica_fault_refuses_any_other_target() -> None:
    class Elsewhere:
        kind = "docker"

    for kind in (KillReplica(), PauseReplica()):
        with pytest.raises(PreflightError, match="needs a local target, not 'docker'"):
            kind.check(kind.Params(), Elsewhere())  # type: ignore[arg-type]
