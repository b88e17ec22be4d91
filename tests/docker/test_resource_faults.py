"""Resource faults on real containers: CPU, memory, disk fill, process kill.

The CPU, memory and disk faults act on a target whose image holds nothing but `sleep` and
libc, so everything they need must come from the helper. Effects are read from the engine
(container stats, the file in the container's filesystem) and so is their undoing.
"""

from __future__ import annotations

import io
import os
import secrets
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_runner.errors import FaultError
from chaos_runner.experiment import FaultSpec
from chaos_runner.faults.docker_resources import CpuStress, DiskFill, KillProcess, MemoryPressure
from chaos_runner.plugins import Handle, Member
from chaos_runner.targets.docker import sidecar

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

BASE = os.environ.get("CHAOS_RUNNER_BASE_IMAGE", "chaos-runner/base:bookworm")
NO_TOOLS = "chaos-runner/test-no-tools:latest"

# An image with nothing in it but sleep and what sleep links to: no shell, no python, no
# ps, no iptables.
NO_TOOLS_DOCKERFILE = f"""
FROM {BASE} AS source
RUN mkdir -p /out/tmp && chmod 1777 /out/tmp \\
    && cp --parents /bin/sleep $(ldd /bin/sleep | grep -o '/[^ ]*') /out
FROM scratch
COPY --from=source /out/ /
CMD ["/bin/sleep", "infinity"]
"""

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def client(docker_client: Any) -> Any:
    """The session's client: it skips, or in CI fails, when no engine answers."""
    return docker_client


@pytest.fixture(scope="module")
def target(client: Any) -> Any:
    """What the faults need of a Docker target: its SDK client."""
    return types.SimpleNamespace(client=client)


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"crt-res-{secrets.token_hex(3)}"


def _run(client: Any, name: str, image: str, command: list[str] | None = None) -> Any:
    return client.containers.run(
        image, command, name=name, detach=True, labels={"chaos-runner.test": "1"}
    )


def _remove(client: Any, box: Any) -> None:
    sidecar.remove_helpers(client, target=box.id)
    box.remove(force=True)


@pytest.fixture(scope="module")
def no_tools(client: Any) -> str:
    client.images.build(fileobj=io.BytesIO(NO_TOOLS_DOCKERFILE.encode()), tag=NO_TOOLS, rm=True)
    return NO_TOOLS


@pytest.fixture(scope="module")
def bare(client: Any, prefix: str, no_tools: str) -> Iterator[Any]:
    """A running container whose image has no tools at all."""
    box = _run(client, f"{prefix}-bare", no_tools)
    try:
        yield box
    finally:
        _remove(client, box)


def _plan(kind: Any, target: Any, box: Any, **params: Any) -> tuple[Handle, Any]:
    validated = kind.Params(**params)
    kind.check(validated, target)
    spec = FaultSpec(kind=kind.kind, duration=30, params=params)
    (handle,) = kind.plan(spec, "f", validated, [Member(box.id, box.name)], target)
    return handle, validated


def _cpus_used(box: Any) -> float:
    """CPUs the container's cgroup used over the engine's last second of samples."""
    stats = box.stats(stream=False)
    used = stats["cpu_stats"]["cpu_usage"]["total_usage"]
    used -= stats["precpu_stats"]["cpu_usage"]["total_usage"]
    system = stats["cpu_stats"]["system_cpu_usage"] - stats["precpu_stats"]["system_cpu_usage"]
    return float(used / system * stats["cpu_stats"]["online_cpus"]) if system else 0.0


def _memory_used(box: Any) -> int:
    return int(box.stats(stream=False, one_shot=True)["memory_stats"]["usage"])


def _wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _gone(client: Any, name: str) -> bool:
    try:
        client.containers.get(name)
    except docker.errors.NotFound:
        return True
    return False


def test_cpu_stress_loads_the_target_until_reverted(client: Any, target: Any, bare: Any) -> None:
    assert _cpus_used(bare) < 0.3
    fault = CpuStress()
    handle, params = _plan(fault, target, bare, workers=1, load=100)
    fault.inject(handle, params, target)
    try:
        helper = client.containers.get(handle.data["helper"])
        assert any("python3" in p[-1] for p in helper.top()["Processes"])
        # Where the stressor is a child of the target's cgroup (cgroupfs driver, cgroup v1,
        # as here), the target's own stats show the load; elsewhere only the helper's do.
        loaded = bare if handle.data["counts_against_target"] else helper
        assert _cpus_used(loaded) > 0.5
    finally:
        fault.revert(Handle.from_json(handle.to_json()), target)
    fault.revert(handle, target)
    assert _gone(client, handle.data["helper"])
    assert _cpus_used(bare) < 0.3


def test_memory_pressure_raises_usage_until_reverted(client: Any, target: Any, bare: Any) -> None:
    before = _memory_used(bare)
    fault = MemoryPressure()
    handle, params = _plan(fault, target, bare, size="128m")
    fault.inject(handle, params, target)
    try:
        holder = bare if handle.data["counts_against_target"] else None
        holder = holder or client.containers.get(handle.data["helper"])
        _wait_until(lambda: _memory_used(holder) > before + 100 * MiB, "memory usage to rise")
    finally:
        fault.revert(handle, target)
    fault.revert(handle, target)
    assert _gone(client, handle.data["helper"])
    _wait_until(lambda: _memory_used(bare) < before + 32 * MiB, "memory usage to fall")


def _file_size(box: Any, path: str) -> int | None:
    """The size of a file in the container, read through the engine (no tools needed)."""
    try:
        _, stat = box.get_archive(path)
    except docker.errors.NotFound:
        return None
    return int(stat["size"])


def test_disk_fill_writes_the_file_and_revert_deletes_it(
    client: Any, target: Any, bare: Any
) -> None:
    fault = DiskFill()
    handle, params = _plan(fault, target, bare, size="20m")
    fault.inject(handle, params, target)
    try:
        assert _file_size(bare, handle.data["path"]) == 20 * MiB
    finally:
        fault.revert(handle, target)
    fault.revert(handle, target)
    assert _file_size(bare, handle.data["path"]) is None


def test_disk_fill_in_a_missing_directory_fails_and_reverts_cleanly(
    client: Any, target: Any, bare: Any
) -> None:
    fault = DiskFill()
    handle, params = _plan(fault, target, bare, size="1m", directory="/no/such/place")
    with pytest.raises(FaultError, match="cannot create"):
        fault.inject(handle, params, target)
    fault.revert(handle, target)


def test_reverts_after_the_container_is_gone_are_not_errors(
    client: Any, target: Any, prefix: str, no_tools: str
) -> None:
    box = _run(client, f"{prefix}-gone", no_tools)
    try:
        injected = []
        for fault, params in ((CpuStress(), {"load": 10}), (DiskFill(), {"size": "1m"})):
            handle, validated = _plan(fault, target, box, **params)
            fault.inject(handle, validated, target)
            injected.append((fault, handle))
        box.remove(force=True)
        for fault, handle in injected:
            fault.revert(handle, target)
        assert _gone(client, injected[0][1].data["helper"])
    finally:
        sidecar.remove_helpers(client, target=box.id)
        if not _gone(client, box.id):
            box.remove(force=True)


def _live_processes(box: Any) -> list[str]:
    listing = box.exec_run(["ps", "-eo", "stat=,args="]).output.decode()
    return [line.split(None, 1)[1] for line in listing.splitlines() if not line.startswith("Z")]


def test_kill_process_kills_the_matching_process(client: Any, target: Any, prefix: str) -> None:
    # PID 1 starts a worker and waits on it, as a supervisor would.
    supervisor = "import subprocess, time; subprocess.run(['sleep', '600']); time.sleep(600)"
    box = _run(client, f"{prefix}-kill", BASE, ["python3", "-c", supervisor])
    try:
        _wait_until(lambda: "sleep 600" in _live_processes(box), "the worker to start")
        fault = KillProcess()
        handle, params = _plan(fault, target, box, pattern="sleep 6", full=True, signal="TERM")
        fault.inject(handle, params, target)
        _wait_until(lambda: "sleep 600" not in _live_processes(box), "the worker to die")
        assert box.exec_run(["true"]).exit_code == 0, "the container itself should live on"
        fault.revert(handle, target)  # nothing to undo, and no error
    finally:
        _remove(client, box)


def test_kill_process_refuses_when_only_the_main_process_matches(
    client: Any, target: Any, bare: Any
) -> None:
    fault = KillProcess()
    handle, params = _plan(fault, target, bare, pattern="^sleep$")
    with pytest.raises(FaultError, match="PID 1"):
        fault.inject(handle, params, target)
    bare.reload()
    assert bare.status == "running"
