"""The container probe against real containers: running, healthy, restart counts, services,
and failures (vanished container, unreachable or silent engine) as Outcomes, never raised."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chaos_runner.plugins import Outcome, ProbeContext, ProbeKind
from chaos_runner.probes.container import ContainerProbe
from chaos_runner.targets.docker import DockerParams, DockerTarget

pytest.importorskip("docker")

pytestmark = pytest.mark.docker

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


def _bind(target: Any, tmp_path: Path, **params: Any) -> Any:
    probe = ContainerProbe()
    return probe.bind(probe.Params(**params), ProbeContext(tmp_path, {}, target))


def test_params_name_one_container_or_one_service() -> None:
    assert isinstance(ContainerProbe(), ProbeKind)
    with pytest.raises(ValidationError, match="either container or service"):
        ContainerProbe.Params(container="a", service="b")
    with pytest.raises(ValidationError, match="either container or service"):
        ContainerProbe.Params()
    with pytest.raises(ValidationError, match="project goes with service"):
        ContainerProbe.Params(container="a", project="p")


def test_running_then_paused_then_running_again(
    docker_client: Any, docker_target: DockerTarget, docker_container: Any, tmp_path: Path
) -> None:
    box = docker_container("box")
    check = _bind(docker_target, tmp_path, container=box.name)
    try:
        assert check(1.0) == Outcome(ok=True, error=None, value=0.0)
        docker_client.api.pause(box.id)
        paused = check(1.0)
        assert not paused.ok and paused.error == f"{box.name} is paused"
        docker_client.api.unpause(box.id)
        assert check(1.0).ok
        box.remove(force=True)
        gone = check(1.0)
        assert not gone.ok and gone.error == f"container {box.name} does not exist"
    finally:
        check.close()


def test_healthy_follows_the_healthcheck(
    docker_target: DockerTarget, http_container: Any, docker_container: Any, tmp_path: Path
) -> None:
    server = http_container(healthcheck=True)
    plain = docker_container("plain")
    failing = docker_container(
        "failing",
        healthcheck={"test": ["CMD", "false"], "interval": 200_000_000, "retries": 1},
    )
    healthy = _bind(docker_target, tmp_path, container=server.name, expect="healthy")
    no_check = _bind(docker_target, tmp_path, container=plain.name, expect="healthy")
    unhealthy = _bind(docker_target, tmp_path, container=failing.name, expect="healthy")
    try:
        deadline = time.monotonic() + 15
        while not healthy(1.0).ok and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthy(1.0).ok
        assert no_check(1.0) == Outcome(False, f"{plain.name} has no healthcheck", 0.0)
        while unhealthy(1.0).error != f"{failing.name} is unhealthy":
            assert time.monotonic() < deadline, unhealthy(1.0)
            time.sleep(0.1)
        # running is all the default expectation asks for
        assert _bind(docker_target, tmp_path, container=failing.name)(1.0).ok
    finally:
        for check in (healthy, no_check, unhealthy):
            check.close()


def test_restart_count_is_the_value_and_can_be_bounded(
    docker_client: Any, docker_target: DockerTarget, docker_container: Any, tmp_path: Path
) -> None:
    # Exits with a failure after a short while, and on-failure brings it back.
    box = docker_container(
        "flaky", ["sh", "-c", "sleep 0.3; exit 1"], restart_policy={"Name": "on-failure"}
    )
    bounded = _bind(docker_target, tmp_path, container=box.name, max_restart_count=0)
    try:
        deadline = time.monotonic() + 15
        while docker_target.container_state(box.id).restart_count < 1:
            assert time.monotonic() < deadline, "the restart policy never restarted it"
            time.sleep(0.05)
        docker_client.api.update_container(box.id, restart_policy={"Name": "no"})
        docker_client.api.wait(box.id, timeout=10)  # settles: exited, no more restarts
        outcome = bounded(1.0)
        count = docker_target.container_state(box.id).restart_count
        assert count >= 1 and outcome.value == float(count)
        assert not outcome.ok
        assert f"{box.name} was restarted {count} times (at most 0 allowed)" in (
            outcome.error or ""
        )
    finally:
        bounded.close()


def test_a_service_needs_every_container_running(
    docker_client: Any, docker_container: Any, docker_prefix: str, tmp_path: Path
) -> None:
    project = f"{docker_prefix}-shop"
    one = docker_container("web-1", labels={PROJECT: project, SERVICE: "web"})
    two = docker_container("web-2", labels={PROJECT: project, SERVICE: "web"})
    docker_container("db-1", labels={PROJECT: project, SERVICE: "db"}, start=False)
    # The target's project is the one meant when the probe names none.
    target = DockerTarget(DockerParams(project=project), base_dir=tmp_path, journal=None)
    target.start()
    web = _bind(target, tmp_path, service="web")
    db = _bind(target, tmp_path, service="db", project=project)
    nothing = _bind(target, tmp_path, service="cache")
    try:
        assert web(1.0) == Outcome(True, None, 0.0)
        assert db(1.0) == Outcome(False, f"{docker_prefix}-db-1 is created", 0.0)
        assert nothing(1.0) == Outcome(False, f"no container of service cache in project {project}")
        docker_client.api.kill(two.id)
        docker_client.api.wait(two.id, timeout=10)
        assert web(1.0) == Outcome(False, f"{two.name} is exited", 0.0)
        assert one.name not in (web(1.0).error or "")
    finally:
        for check in (web, db, nothing):
            check.close()
        target.stop()


def test_without_a_docker_target_it_connects_by_itself(
    docker_container: Any, tmp_path: Path
) -> None:
    box = docker_container("box")
    check = _bind(None, tmp_path, container=box.name)
    try:
        assert check(5.0).ok
    finally:
        check.close()
    assert not check(1.0).ok  # closed: fails, does not raise


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: an engine that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_an_engine_that_does_not_answer_fails_the_sample_within_its_timeout(
    silent_engine: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", silent_engine)
    check = _bind(None, tmp_path, container="anything")
    try:
        started = time.monotonic()
        outcome = check(0.5)
        assert time.monotonic() - started < 2.0
        assert outcome == Outcome(False, "the Docker engine did not answer within 0.5s")
    finally:
        check.close()


def test_an_unreachable_engine_is_a_failing_sample(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    check = _bind(None, tmp_path, container="anything")
    try:
        outcome = check(5.0)
        assert not outcome.ok
        assert "cannot reach the Docker engine at tcp://127.0.0.1:1" in (outcome.error or "")
    finally:
        check.close()
