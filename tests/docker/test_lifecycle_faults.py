"""Lifecycle faults on real containers: each injected and reverted, its effect seen over HTTP
(through the published port) or in the engine's own account of the container.

Reverts are made from the journalled form of the handle, as after a crash of the runner,
and made twice, as a revert must be idempotent.
"""

from __future__ import annotations

import random
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import FaultSpec, Selector
from chaos_runner.faults.docker import (
    ContainerCrash,
    ContainerKill,
    ContainerPause,
    ContainerRestart,
    ContainerStop,
    CrashParams,
    KillParams,
    NetworkDisconnect,
)
from chaos_runner.plugins import FaultKind, Handle
from chaos_runner.registry import Registry
from chaos_runner.targets.docker import DockerTarget, EngineEvent

pytest.importorskip("docker")

pytestmark = pytest.mark.docker


def _plan(fault: Any, target: DockerTarget, name: str, **params: Any) -> tuple[Handle, Any]:
    """Check and plan `fault` on the one running container called `name`."""
    validated = fault.Params(**params)
    fault.check(validated, target)
    members = target.members(Selector(names=(name,)))
    assert [m.name for m in members] == [name]
    spec = FaultSpec(kind=fault.kind, duration=5, params=params)
    (handle,) = fault.plan(spec, "f", validated, members, target)
    assert handle.data["container"] == members[0].id and handle.data["name"] == name
    return handle, validated


def _revert_twice(fault: Any, handle: Handle, target: DockerTarget) -> None:
    fault.revert(Handle.from_json(handle.to_json()), target)
    fault.revert(handle, target)


def test_the_fault_kinds_are_registered_for_docker_targets() -> None:
    registry = Registry()
    for ep in entry_points(group="chaos_runner.faults"):
        if ep.name.split(".")[0] == "docker" and ep.value.startswith("chaos_runner.faults.docker:"):
            registry.add("faults", ep.name, ep.load())
    expected = {
        "kill": ContainerKill,
        "crash": ContainerCrash,
        "stop": ContainerStop,
        "restart": ContainerRestart,
        "pause": ContainerPause,
        "disconnect": NetworkDisconnect,
    }
    for kind, cls in expected.items():
        fault = registry.fault(kind, "docker")
        assert type(fault) is cls and fault.kind == kind
        assert isinstance(fault, FaultKind)
    assert {k for k, c in expected.items() if c.reversible} == {"stop", "pause", "disconnect"}


def test_signals_are_validated_and_named() -> None:
    assert KillParams(signal="term").signal == "SIGTERM"
    assert KillParams.model_validate({"signal": 9}).signal == "SIGKILL"
    assert KillParams().signal == "SIGKILL"
    with pytest.raises(ValidationError, match="unknown signal"):
        KillParams(signal="SIGNOPE")
    with pytest.raises(ValidationError):
        CrashParams(via="ssh")  # type: ignore[arg-type]


def test_a_docker_fault_on_another_kind_of_target_is_refused() -> None:
    class Local:
        kind = "local"

    with pytest.raises(PreflightError, match="needs a docker target"):
        ContainerPause().check(ContainerPause.Params(), Local())  # type: ignore[arg-type]


def test_kill_stops_the_container_and_its_restart_policy_does_not_apply(
    docker_target: DockerTarget, http_container: Any, wait_until: Any
) -> None:
    server = http_container(restart_policy={"Name": "always"})
    fault = ContainerKill()
    handle, params = _plan(fault, docker_target, server.name)
    fault.inject(handle, params, docker_target)
    wait_until(lambda: server.state()["Status"] == "exited", "the container to exit")
    assert server.state()["ExitCode"] == 137
    assert server.fetch() is not None
    # The engine took it as a manual stop: a second later it is still down, never restarted.
    time.sleep(1.0)
    assert server.state()["Status"] == "exited" and server.state()["RestartCount"] == 0
    fault.revert(handle, docker_target)  # not reversible: nothing to do
    assert server.state()["Status"] == "exited"


@pytest.mark.parametrize("via", ["auto", "host", "helper"])
def test_crash_lets_the_restart_policy_bring_the_container_back(
    via: str,
    docker_target: DockerTarget,
    http_container: Any,
    wait_until: Any,
    docker_journal: Any,
) -> None:
    server = http_container(restart_policy={"Name": "on-failure"})
    if via == "host" and not _shares_pids_with_the_engine(server.state()["Pid"], server.id):
        pytest.skip("this runner does not share the Docker host's PID namespace")
    fault = ContainerCrash()
    handle, params = _plan(fault, docker_target, server.name, via=via)
    seen: list[EngineEvent] = []
    docker_target.start_events(seen.append)
    old_pid = server.state()["Pid"]
    before = time.monotonic()
    fault.inject(handle, params, docker_target)
    wait_until(
        lambda: server.state()["RestartCount"] == 1 and server.state()["Running"],
        "the restart policy to restart the crashed container",
    )
    assert server.state()["Pid"] != old_pid
    wait_until(lambda: server.fetch() is None, "the restarted server to answer")
    wait_until(lambda: "start" in [e.action for e in seen], "the start event")
    after = time.monotonic()
    docker_target.stop_events()

    actions = [e.action for e in seen if e.action in ("die", "start", "kill")]
    # No kill event: the engine did not do it, it saw its container die on its own.
    assert actions == ["die", "start"], actions
    die, start = (e for e in seen if e.action in ("die", "start"))
    assert die.detail["exit_code"] == 137
    assert before - 0.5 <= die.t <= start.t <= after + 0.5
    journalled = [r for r in docker_journal(docker_target, "event") if r["action"] != "connect"]
    assert [r["action"] for r in journalled if r["action"] != "disconnect"] == ["die", "start"]


def _shares_pids_with_the_engine(pid: int, container_id: str) -> bool:
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def test_crash_of_a_container_that_is_not_running_is_a_fault_error(
    docker_target: DockerTarget, docker_container: Any
) -> None:
    box = docker_container("box")
    fault = ContainerCrash()
    handle, params = _plan(fault, docker_target, box.name)
    box.stop(timeout=0)
    with pytest.raises(FaultError, match=f"{box.name}.*exited"):
        fault.inject(handle, params, docker_target)


def test_stop_takes_the_server_down_until_reverted(
    docker_target: DockerTarget, http_container: Any, wait_until: Any
) -> None:
    server = http_container()
    fault = ContainerStop()
    handle, params = _plan(fault, docker_target, server.name, timeout=1)
    fault.inject(handle, params, docker_target)
    assert server.state()["Status"] == "exited"
    assert server.fetch() is not None
    _revert_twice(fault, handle, docker_target)
    assert server.state()["Status"] == "running"
    wait_until(lambda: server.fetch() is None, "the server to answer again")


def test_restart_gives_the_container_a_new_process(
    docker_target: DockerTarget, http_container: Any, wait_until: Any
) -> None:
    server = http_container()
    old_pid = server.state()["Pid"]
    fault = ContainerRestart()
    handle, params = _plan(fault, docker_target, server.name, timeout=1)
    fault.inject(handle, params, docker_target)
    assert server.state()["Running"] and server.state()["Pid"] != old_pid
    wait_until(lambda: server.fetch() is None, "the restarted server to answer")


def test_pause_freezes_the_server_until_reverted(
    docker_target: DockerTarget, http_container: Any, wait_until: Any
) -> None:
    server = http_container()
    fault = ContainerPause()
    handle, params = _plan(fault, docker_target, server.name)
    fault.inject(handle, params, docker_target)
    try:
        assert server.state()["Paused"]
        error = server.fetch(timeout=0.5)
        assert error is not None and "timed out" in error
    finally:
        _revert_twice(fault, handle, docker_target)
    assert not server.state()["Paused"]
    wait_until(lambda: server.fetch() is None, "the server to answer again")


def test_disconnect_detaches_the_container_and_revert_restores_its_aliases(
    docker_target: DockerTarget,
    http_container: Any,
    docker_container: Any,
    docker_network: Any,
    wait_until: Any,
) -> None:
    network = docker_network()
    server = http_container(network=network.name)
    # A second network, where it has aliases and an address Docker lets us choose again.
    second = docker_network(
        "second", subnet=f"10.{random.randrange(100, 250)}.{random.randrange(256)}.0/24"
    )
    second.connect(server.container, aliases=["shop-api", "api"])
    peer = docker_container("peer", network=second.name)

    def reachable() -> bool:
        code, _ = docker_target.exec(
            peer.id,
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlopen('http://api:8000/', timeout=1)",
            ],
        )
        return code == 0

    wait_until(reachable, "the peer to reach the server by its alias")
    fault = NetworkDisconnect()
    handle, params = _plan(fault, docker_target, server.name, network=second.name)
    assert set(handle.data["aliases"]) == {"shop-api", "api"}
    old_ip = docker_target.container_state(server.id).networks[second.name]
    assert handle.data["ipv4"] == old_ip

    fault.inject(handle, params, docker_target)
    try:
        assert second.name not in docker_target.container_state(server.id).networks
        assert not reachable()
        fault.inject(handle, params, docker_target)  # already detached: nothing to do
    finally:
        _revert_twice(fault, handle, docker_target)
    state = docker_target.container_state(server.id)
    assert second.name in state.networks and network.name in state.networks
    assert set(docker_target.endpoint(server.id, second.name).aliases) == {"shop-api", "api"}
    assert state.networks[second.name] == old_ip
    wait_until(reachable, "the peer to reach the server by its alias again")


def test_disconnect_from_a_network_that_does_not_exist_fails_preflight(
    docker_target: DockerTarget, docker_prefix: str
) -> None:
    fault = NetworkDisconnect()
    with pytest.raises(PreflightError, match=f"no Docker network '{docker_prefix}-none'"):
        fault.check(fault.Params(network=f"{docker_prefix}-none"), docker_target)


def test_disconnect_plan_fails_for_a_container_not_on_the_network(
    docker_target: DockerTarget, docker_container: Any, docker_network: Any
) -> None:
    network = docker_network()
    box = docker_container("box")
    with pytest.raises(FaultError, match=f"{box.name} is not attached to network"):
        _plan(NetworkDisconnect(), docker_target, box.name, network=network.name)


@pytest.mark.parametrize("fault", [ContainerPause(), ContainerStop()], ids=lambda f: f.kind)
def test_reverting_on_a_container_removed_mid_run_is_a_clear_fault_error(
    fault: Any, docker_target: DockerTarget, docker_container: Any, tmp_path: Path
) -> None:
    box = docker_container("doomed")
    handle, params = _plan(fault, docker_target, box.name)
    fault.inject(handle, params, docker_target)
    box.remove(force=True)
    with pytest.raises(FaultError) as caught:
        fault.revert(handle, docker_target)
    message = str(caught.value)
    assert box.name in message and "no longer exists" in message
    # A fresh connection (as after a crash of the runner) says the same.
    fresh = DockerTarget(DockerTarget.Params(), base_dir=tmp_path, journal=None)  # type: ignore[arg-type]
    fresh.attach()
    try:
        with pytest.raises(FaultError, match="no longer exists"):
            fault.revert(Handle.from_json(handle.to_json()), fresh)
    finally:
        fresh.stop()
