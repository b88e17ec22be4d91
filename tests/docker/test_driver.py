"""The Docker target driver against the real engine: selection, state, exec, events, errors.

Containers are made by hand with the labels Compose would give them, so selection by
Compose service and project is tested without Compose.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

import chaos_runner.targets.docker as driver
from chaos_runner.errors import PreflightError, TargetError
from chaos_runner.experiment import Selector
from chaos_runner.journal import Journal, read_journal
from chaos_runner.plugins import Target
from chaos_runner.selection import choose
from chaos_runner.targets.docker import ContainerGone, DockerParams, DockerTarget, EngineEvent

pytest.importorskip("docker")

pytestmark = pytest.mark.docker

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


def test_public_surface_is_sorted_and_importable() -> None:
    assert driver.__all__ == sorted(driver.__all__)
    for name in driver.__all__:
        assert getattr(driver, name) is not None
    assert DockerTarget.kind == "docker"
    assert isinstance(DockerTarget(DockerParams(), base_dir=Path("."), journal=None), Target)


def test_members_select_running_containers_by_name_label_and_compose_labels(
    docker_client: Any, docker_container: Any, docker_prefix: str, tmp_path: Path
) -> None:
    project = f"{docker_prefix}-shop"
    run = {"crt.run": docker_prefix}
    web = docker_container("web", labels={**run, "tier": "front", PROJECT: project, SERVICE: "web"})
    db = docker_container("db", labels={**run, "tier": "back", PROJECT: project, SERVICE: "db"})
    other = docker_container(
        "other", labels={**run, "tier": "front", PROJECT: f"{project}-2", SERVICE: "web"}
    )
    stopped = docker_container(
        "stopped", labels={**run, "tier": "front", PROJECT: project, SERVICE: "web"}, start=False
    )
    target = DockerTarget(DockerParams(), base_dir=tmp_path, journal=None)
    target.start()
    try:

        def names(**selector: Any) -> set[str]:
            return {m.name for m in target.members(Selector(**selector))}

        assert names(names=(web.name, stopped.name, "no-such-container")) == {web.name}
        assert names(labels=run) == {web.name, db.name, other.name}
        assert names(labels={**run, "tier": "front"}) == {web.name, other.name}
        assert names(service="web", project=project) == {web.name}
        assert names(project=project) == {web.name, db.name}
        assert names(labels=run, names=(db.name,)) == {db.name}
        assert stopped.name not in names(labels=run)

        (member,) = target.members(Selector(names=(web.name,)))
        assert member.id == web.id and len(member.id) == 64
        assert member.attrs["service"] == "web"
        assert member.attrs["project"] == project
        assert member.attrs["image"].startswith("chaos-runner/base")
        assert member.attrs["ip"] == web.attrs["NetworkSettings"]["IPAddress"]
    finally:
        target.stop()

    # The target's project is what a selector naming only a service means.
    scoped = DockerTarget(DockerParams(project=project), base_dir=tmp_path, journal=None)
    scoped.start()
    try:
        assert {m.name for m in scoped.members(Selector(service="web"))} == {web.name}
        assert scoped.variables()["target.project"] == project
    finally:
        scoped.stop()


def test_count_and_percent_pick_a_seeded_share_of_the_members(
    docker_target: DockerTarget, docker_container: Any, docker_prefix: str
) -> None:
    run = {"crt.run": docker_prefix}
    made = {docker_container(f"r{i}", labels=run).name for i in range(4)}
    candidates = docker_target.members(Selector(labels=run))
    assert {m.name for m in candidates} == made

    two = choose(candidates, Selector(labels=run, count=2, seed=7), fault="f")
    assert len(two) == 2 and {m.name for m in two} <= made
    assert two == choose(candidates, Selector(labels=run, count=2, seed=7), fault="f")
    assert len(choose(candidates, Selector(labels=run, percent=50, seed=1), fault="f")) == 2
    with pytest.raises(PreflightError, match="only 4 match"):
        choose(candidates, Selector(labels=run, count=5), fault="f")


def test_a_kubernetes_namespace_in_a_selector_is_refused(docker_target: DockerTarget) -> None:
    with pytest.raises(TargetError, match="namespace"):
        docker_target.members(Selector(namespace="default"))


@pytest.mark.parametrize("kind", ["closed unix socket", "closed tcp port"])
def test_an_unreachable_engine_is_a_target_error_naming_it(kind: str, tmp_path: Path) -> None:
    if kind == "closed unix socket":
        path = tmp_path / "docker.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.close()  # the socket file stays; nothing listens on it
        base_url = f"unix://{path}"
    else:
        base_url = "tcp://127.0.0.1:1"
    target = DockerTarget(
        DockerParams(base_url=base_url, timeout=5), base_dir=tmp_path, journal=None
    )
    started = time.monotonic()
    with pytest.raises(TargetError) as caught:
        target.start()
    message = str(caught.value)
    assert base_url in message
    assert "start the engine" in message and "DOCKER_HOST" in message
    assert time.monotonic() - started < 5
    with pytest.raises(TargetError, match="not connected"):
        target.members(Selector())


def test_container_state_exec_and_a_vanished_container(
    docker_client: Any, docker_target: DockerTarget, docker_container: Any
) -> None:
    box = docker_container("box", ["sh", "-c", "echo started; exec sleep infinity"])
    state = docker_target.container_state(box.name)
    assert state.id == box.id and state.name == box.name
    assert state.running and state.status == "running"
    assert state.pid > 0 and state.restart_count == 0 and state.health is None
    assert state.networks["bridge"] == box.attrs["NetworkSettings"]["IPAddress"]

    code, output = docker_target.exec(box.id, ["sh", "-c", "echo out; echo err >&2"])
    assert code == 0 and sorted(output.split()) == ["err", "out"]  # both streams, any order
    code, _ = docker_target.exec(box.id, ["sh", "-c", "exit 3"])
    assert code == 3

    box.remove(force=True)
    with pytest.raises(ContainerGone, match=box.id[:12]):
        docker_target.container_state(box.id)


def test_describe_names_the_engine(docker_target: DockerTarget) -> None:
    description = docker_target.describe()
    assert description["kind"] == "docker"
    assert description["engine"] and description["api"]
    assert "target.docker_host" in docker_target.variables()


def test_events_of_member_containers_are_journalled_on_the_monotonic_clock(
    docker_client: Any, docker_target: DockerTarget, docker_container: Any, docker_journal: Any
) -> None:
    watched = docker_container("watched")
    ignored = docker_container("ignored")
    assert docker_target.members(Selector(names=(watched.name,)))
    seen: list[EngineEvent] = []
    docker_target.start_events(seen.append)
    docker_target.start_events(seen.append)  # a second call changes nothing
    before = time.monotonic()
    docker_client.api.pause(watched.id)
    docker_client.api.unpause(watched.id)
    docker_client.api.pause(ignored.id)
    docker_client.api.unpause(ignored.id)
    docker_client.api.kill(watched.id, signal="SIGKILL")
    deadline = time.monotonic() + 10
    while not any(e.action == "die" for e in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = time.monotonic()
    docker_target.stop_events()
    docker_target.stop_events()

    actions = [e.action for e in seen]
    # A dead container also leaves its network: that event may come before the stop.
    assert actions[:4] == ["pause", "unpause", "kill", "die"], actions
    assert all(e.action == "disconnect" for e in seen[4:]), actions
    assert {e.member for e in seen} == {watched.name}
    die = seen[3]
    assert die.detail["exit_code"] == 137
    assert seen[2].detail["signal"] == 9
    for event in seen:
        # The engine's stamps, moved onto this process's monotonic clock.
        assert before - 0.5 <= event.t <= after + 0.5
    assert [e.t for e in seen] == sorted(e.t for e in seen)

    records = docker_journal(docker_target, "event")
    assert [r["action"] for r in records] == actions
    assert records[3]["source"] == "docker"
    assert records[3]["member"] == watched.name
    assert records[3]["detail"]["container"] == watched.id
    assert records[3]["t"] == die.t


def test_events_of_the_target_project_are_journalled_without_selection(
    docker_client: Any, docker_container: Any, docker_prefix: str, tmp_path: Path
) -> None:
    project = f"{docker_prefix}-p"
    journal = Journal(tmp_path / "journal.jsonl")
    target = DockerTarget(DockerParams(project=project), base_dir=tmp_path, journal=journal)
    target.start()
    try:
        seen: list[EngineEvent] = []
        target.start_events(seen.append)
        box = docker_container("svc", labels={PROJECT: project, SERVICE: "svc"})
        docker_client.api.kill(box.id)
        deadline = time.monotonic() + 10
        while "die" not in [e.action for e in seen] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        target.stop()  # stops the events too
        journal.close()
    lifecycle = [e.action for e in seen if e.action not in ("connect", "disconnect")]
    assert lifecycle == ["create", "start", "kill", "die"], lifecycle
    assert "connect" in [e.action for e in seen]  # to its network, as it started
    assert all(e.member == box.name for e in seen)
    assert [r["action"] for r in read_journal(tmp_path)] == [e.action for e in seen]
