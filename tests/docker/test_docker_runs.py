"""Whole runs of the engine against real containers: the CLI (or api.run) end to end.

Each test writes its experiment into tmp_path, runs it, and checks what the engine did
through the engine's own account (inspect, top, events) and the netns of the target (through
a helper), never through the runner's word alone. Containers come from the conftest
fixtures, so these tests skip without an engine on a developer machine and fail in CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from engine_requirement import unavailable
from runner_cli import run_argv

from chaos_runner import api
from chaos_runner.journal import read_journal

pytestmark = pytest.mark.docker

RUN_TIMEOUT = 120.0
"""Longest any one runner process may take before the test kills it and fails."""

CLI_ENV = {**os.environ, "COLUMNS": "200"}
"""A wide console, so rich never wraps a container name in the printed plan."""


# --------------------------------------------------------------------- helpers


def _experiment(tmp_path: Path, text: str, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _run_cli(path: Path, reports: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(path, reports, *options),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=CLI_ENV,
    )


def _journal_path(reports: Path) -> Path | None:
    found = sorted(reports.glob("*/journal.jsonl"))
    return found[0] if found else None


def _of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == kind]


def _netns(client: Any, container: Any, argv: list[str]) -> str:
    """What argv prints when run in the container's network namespace (from a helper)."""
    from chaos_runner.targets.docker import sidecar

    code, output = sidecar.run_in_namespaces(client, container.id, argv, caps=("NET_ADMIN",))
    assert code == 0, output
    return output


def _exists(client: Any, ref: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_container(ref)
    except docker.errors.NotFound:
        return False
    return True


def _paused(client: Any, ref: str) -> bool:
    return bool(client.api.inspect_container(ref)["State"]["Paused"])


def _processes(container: Any) -> list[str]:
    """The command lines of every process in the container's cgroup (docker top), which
    includes, on cgroup v1 with the cgroupfs driver, a stressor nested under it."""
    top = container.top(ps_args="-eo pid,args")
    column = top["Titles"].index("COMMAND") if "COMMAND" in top["Titles"] else -1
    return [str(p[column]) for p in top["Processes"]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str, timeout: float = 0.2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------- SIGTERM mid-fault


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_mid_fault_leaves_nothing_behind(
    docker_client: Any, http_container: Any, tmp_path: Path, signum: int
) -> None:
    """SIGTERM: the runner reverts everything and exits 3. SIGKILL: nothing can run, the
    faults stay in place, and `chaos-runner revert` undoes them from the journal alone."""
    from chaos_runner.faults.docker_network import QDISC_HANDLE
    from chaos_runner.targets.docker import sidecar

    web = http_container("web")
    frozen = http_container("frozen")
    path = _experiment(
        tmp_path,
        f"""
        metadata: {{name: sigterm-mid-fault}}
        target: {{kind: docker}}
        probes:
          - {{name: web, kind: http, interval: 200ms, timeout: 1s, params: {{url: "{web.url}"}}}}
        faults:
          - {{name: lossy, kind: loss, duration: 60s, selector: {{names: [{web.name}]}},
             params: {{percent: 20}}}}
          - {{name: narrow, kind: bandwidth, duration: 60s, selector: {{names: [{web.name}]}},
             params: {{rate: 1mbit}}}}
          - {{name: busy, kind: cpu, duration: 60s, selector: {{names: [{web.name}]}},
             params: {{workers: 1, load: 30}}}}
          - {{name: freeze, kind: pause, duration: 60s, selector: {{names: [{frozen.name}]}}}}
        phases: {{baseline: 500ms, hold: 500ms, recovery_deadline: 10s, preflight_timeout: 30s}}
        """,
    )
    reports = tmp_path / "reports"
    out_path = tmp_path / "runner.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            run_argv(path, reports), stdout=out, stderr=subprocess.STDOUT, text=True, env=CLI_ENV
        )
    try:
        # Bounded: preflight may build the helper image the first time (a few seconds).
        deadline = time.monotonic() + 90
        journal: Path | None = None
        while True:
            journal = _journal_path(reports)
            records = read_journal(journal) if journal else []
            injects = _of_type(records, "inject")
            failed = [r for r in injects if not r["ok"]]
            assert not failed, f"an injection failed: {failed}\n{out_path.read_text()}"
            if len(injects) == 4:
                break
            assert proc.poll() is None, f"the runner exited early:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, (
                f"timed out waiting for 4 injections (got {len(injects)}):\n{out_path.read_text()}"
            )
            time.sleep(0.05)
        assert journal is not None
        handles = {r["handle"]["id"]: r["handle"] for r in _of_type(records, "handle")}
        by_kind = {h["kind"]: h for h in handles.values()}
        assert sorted(by_kind) == ["bandwidth", "cpu", "loss", "pause"]

        # Every fault is really in place, as the engine and the netns tell it.
        rules = _netns(docker_client, web.container, ["iptables", "-w", "-S"])
        assert f"chaos-runner:{by_kind['loss']['id']}" in rules and "statistic" in rules, rules
        qdiscs = _netns(docker_client, web.container, ["tc", "qdisc", "show"])
        assert "tbf" in qdiscs and QDISC_HANDLE in qdiscs, qdiscs
        assert _paused(docker_client, frozen.id)
        stressor = docker_client.containers.get(by_kind["cpu"]["data"]["helper"])
        assert stressor.status == "running"
        assert any("python3" in p[-1] for p in stressor.top()["Processes"])
        if by_kind["cpu"]["data"]["counts_against_target"]:
            assert any("http.server" not in p for p in _processes(web.container)), (
                "the stressor is not in the target's cgroup"
            )

        sent_wall = time.time()
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=30)
        exit_seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    output = out_path.read_text()

    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, output
        # A killed runner reverts nothing: every fault is still there...
        rules = _netns(docker_client, web.container, ["iptables", "-w", "-S"])
        assert f"chaos-runner:{by_kind['loss']['id']}" in rules, rules
        assert _paused(docker_client, frozen.id)
        assert _exists(docker_client, by_kind["cpu"]["data"]["helper"])
        # ...until `chaos-runner revert` undoes them from what the journal says.
        revert = subprocess.run(
            [sys.executable, "-m", "chaos_runner", "revert", str(journal.parent)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=CLI_ENV,
        )
        assert revert.returncode == 0, revert.stdout + revert.stderr
        reason = "recover"
    else:
        assert proc.returncode == 3, output
        reason = "abort"

    records = read_journal(journal)
    reverts = {r["handle"]: r for r in _of_type(records, "revert")}
    assert set(reverts) == set(handles), "a revert record for every handle"
    assert all(r["ok"] and r["reason"] == reason for r in reverts.values()), reverts
    if signum == signal.SIGTERM:
        aborts = _of_type(records, "abort")
        assert aborts and "SIGTERM" in aborts[0]["reason"]
        assert records[-1]["type"] == "end" and records[-1]["status"] == "aborted"
        reverted_seconds = max(r["w"] for r in reverts.values()) - sent_wall
        print(
            f"\nSIGTERM -> every fault reverted: {reverted_seconds:.3f}s; "
            f"SIGTERM -> runner exited: {exit_seconds:.3f}s (goal: reverted in under 1 s)"
        )
    assert exit_seconds < 30

    # Nothing is left behind: no rule, no qdisc, no pause, no stressor, no helper.
    rules = _netns(docker_client, web.container, ["iptables", "-w", "-S"])
    assert "chaos-runner" not in rules and "statistic" not in rules, rules
    qdiscs = _netns(docker_client, web.container, ["tc", "qdisc", "show"])
    assert "tbf" not in qdiscs and QDISC_HANDLE not in qdiscs, qdiscs
    state = frozen.state()
    assert not state["Paused"] and state["Status"] == "running"
    assert not _exists(docker_client, by_kind["cpu"]["data"]["helper"])
    assert all("http.server" in p for p in _processes(web.container)), _processes(web.container)
    for box in (web, frozen):
        assert sidecar.helpers(docker_client, target=box.id) == []
    for handle_id in handles:
        assert sidecar.helpers(docker_client, handle=handle_id) == []
    assert web.fetch() is None and frozen.fetch() is None


# --------------------------------------------------------------------- crash and recovery


class _Poller:
    """Starts a GET of a URL every 10 ms, each in a thread of its own (a try against a
    restarting container can hang until its timeout, and must not hold up the next), and
    notes (monotonic start, answered) of each: the server's own start-up time, stamped as
    probe samples are, at a resolution ten times finer than the probe's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tries: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="poller")
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self._pool.submit(self._try)

    def _try(self) -> None:
        started = time.monotonic()
        ok = _answers(self.url, timeout=0.5)
        with self._lock:
            self.tries.append((started, ok))

    def answering_steadily_from(self, t: float, hold: float) -> float | None:
        """The start of the first try, from t on, after which every try started within
        `hold` seconds answered: when the server answers through its published port for
        good, as the probe's steady state sees it."""
        with self._lock:
            tries = sorted(x for x in self.tries if x[0] >= t)
        stretch: float | None = None
        for at, ok in tries:
            if not ok:
                stretch = None
            elif stretch is None:
                stretch = at
            elif at >= stretch + hold:
                return stretch
        return None


def test_crash_recovery_agrees_with_the_engine_events(
    docker_container: Any, wait_until: Callable[..., None], tmp_path: Path
) -> None:
    interval = 0.1
    # Pinned, so the port stays the same when the restart policy starts the container again.
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    box = docker_container(
        "crashy",
        ["python3", "-m", "http.server", "8000"],
        ports={"8000/tcp": ("127.0.0.1", port)},
        restart_policy={"Name": "on-failure"},
    )
    wait_until(lambda: _answers(url, timeout=1.0), f"{box.name} to answer HTTP")
    path = _experiment(
        tmp_path,
        f"""
        metadata: {{name: crash-recovery}}
        target: {{kind: docker}}
        probes:
          - {{name: web, kind: http, interval: {interval}s, timeout: 500ms,
             params: {{url: "{url}"}}}}
        faults:
          - {{name: crash, kind: crash, offset: 0s, duration: 3s,
             selector: {{names: [{box.name}]}}}}
        phases: {{baseline: 1s, hold: 1s, recovery_deadline: 20s}}
        slos:
          - {{name: recovery, kind: recovery_time, max: 15s}}
        """,
    )
    reports = tmp_path / "reports"
    with _Poller(url) as poller:
        done = _run_cli(path, reports)
    assert done.returncode == 0, done.stdout + done.stderr
    journal = _journal_path(reports)
    assert journal is not None
    result = json.loads((journal.parent / "result.json").read_text())
    (fault,) = result["faults"]
    assert fault["recovery_time"] is not None and fault["recovered_at"] is not None, fault
    assert fault["errors"] == []

    events = [e for e in result["events"] if e["source"] == "docker" and e["member"] == box.name]
    actions = [e["action"] for e in events]
    assert "die" in actions, actions
    die = events[actions.index("die")]
    start = next((e for e in events[actions.index("die") :] if e["action"] == "start"), None)
    assert start is not None, f"no start event after the die event: {actions}"
    assert fault["injected_at"] - 0.05 <= die["t"] <= start["t"], (fault, die, start)

    # result.json times are seconds from the run's first journal record, on the monotonic
    # clock every process of this machine shares; the poller's times convert by that origin.
    origin = read_journal(journal)[0]["t"]
    steady = poller.answering_steadily_from(origin + start["t"], hold=1.0)
    assert steady is not None, "the poller never saw the restarted server answer steadily"
    # The server's start-up time as a client sees it: from the engine's start event until
    # the published port answers for good. Measured here for this very restart, at 10 ms
    # resolution; it was 0.2 to 0.9 s on this host, of which python3 -m http.server's own
    # import-and-listen is some 50 ms: the rest is the container's network coming back
    # (connections attempted while its address is unreachable wait for TCP's 1 s SYN
    # retransmission, beyond the probe's timeout, and docker-proxy is replaced).
    startup = steady - (origin + start["t"])
    # The first sample of the probe's steady stretch starts at most one probe interval after
    # that; the 50 ms more cover the poller's resolution and the mapping of the engine's
    # wall-clock event times onto the runner's monotonic clock.
    tolerance = interval + max(startup, 0.0) + 0.05
    lag = fault["recovered_at"] - start["t"]
    print(
        f"\nengine: die at {die['t']:.3f}s, start at {start['t']:.3f}s; probe: recovered at "
        f"{fault['recovered_at']:.3f}s ({lag * 1000:+.0f} ms after the start event); server "
        f"start-up (start event -> answering steadily) {startup * 1000:.0f} ms; tolerance "
        f"{tolerance * 1000:.0f} ms; recovery_time {fault['recovery_time']:.3f}s"
    )
    assert -0.05 <= lag <= tolerance


# --------------------------------------------------------------------- selection by label


class _PauseWatcher:
    """Inspects containers every 50 ms in a thread and notes each one ever seen paused."""

    def __init__(self, client: Any, containers: list[Any]) -> None:
        self.client = client
        self.containers = containers
        self.seen_paused: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _PauseWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for box in self.containers:
                if _paused(self.client, box.id):
                    self.seen_paused.add(box.name)
            self.polls += 1


def test_selection_by_label_touches_only_the_selection(
    docker_client: Any, docker_container: Any, docker_prefix: str, tmp_path: Path
) -> None:
    label = {"chaos-runner.test-selection": docker_prefix}
    labelled = [docker_container(f"sel-{i}", labels=label) for i in range(3)]
    bystander = docker_container("bystander")
    everyone = [*labelled, bystander]
    path = _experiment(
        tmp_path,
        f"""
        metadata: {{name: selection}}
        target: {{kind: docker}}
        probes:
          - {{name: bystander, kind: container, interval: 200ms, timeout: 2s,
             params: {{container: {bystander.name}}}}}
        faults:
          - name: freeze-two
            kind: pause
            offset: 0s
            duration: 1500ms
            selector:
              labels: {{chaos-runner.test-selection: {docker_prefix}}}
              count: 2
              seed: 11
        phases: {{baseline: 500ms, hold: 500ms, recovery_deadline: 10s}}
        """,
    )

    dry_reports = tmp_path / "dry"
    dry = _run_cli(path, dry_reports, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    dry_journal = _journal_path(dry_reports)
    assert dry_journal is not None
    dry_records = read_journal(dry_journal)
    (planned,) = _of_type(dry_records, "selection")
    planned_names = {m["name"] for m in planned["members"]}
    assert len(planned_names) == 2 and planned_names < {b.name for b in labelled}
    plan_lines = [line for line in dry.stdout.splitlines() if "freeze-two" in line]
    assert plan_lines, dry.stdout
    printed = {b.name for b in everyone if any(b.name in line for line in plan_lines)}
    assert printed == planned_names, dry.stdout
    assert not _of_type(dry_records, "handle") and not _of_type(dry_records, "inject")
    assert not any(_paused(docker_client, b.id) for b in everyone)

    with _PauseWatcher(docker_client, everyone) as watcher:
        result = api.run(path, reports_dir=tmp_path / "reports", handle_signals=False)
    assert result.status == "passed", result.reason
    assert watcher.polls > 10, "the watcher barely ran"
    assert result.journal is not None
    records = read_journal(Path(result.journal))
    (selection,) = _of_type(records, "selection")
    selected = {m["name"] for m in selection["members"]}
    assert selected == planned_names, "the same seed selects the same containers"
    assert watcher.seen_paused == selected
    assert bystander.name not in watcher.seen_paused
    paused_events = {e.member for e in result.events if e.action == "pause"}
    unpaused_events = {e.member for e in result.events if e.action == "unpause"}
    assert paused_events == unpaused_events == selected
    assert all(r["ok"] for r in _of_type(records, "revert"))
    assert not any(_paused(docker_client, b.id) for b in everyone)


# --------------------------------------------------------------------- unreachable engine


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_unreachable_engine_is_a_clear_error_and_nothing_is_injected(
    where: str, tmp_path: Path
) -> None:
    # No engine is needed here, only the SDK the Docker target is written with.
    try:
        import docker  # noqa: F401
    except ImportError:
        unavailable("the docker SDK is not installed (pip install chaos-runner[docker])")
    with tempfile.TemporaryDirectory(prefix="crt-") as short:  # a unix path must be short
        if where == "tcp":
            base_url = "tcp://127.0.0.1:1"
        else:
            # A socket file nobody listens on: what a stopped dockerd leaves behind.
            sock_path = Path(short) / "docker.sock"
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(sock_path))
            base_url = f"unix://{sock_path}"
        path = _experiment(
            tmp_path,
            f"""
            metadata: {{name: unreachable}}
            target: {{kind: docker, params: {{base_url: "{base_url}", timeout: 5s}}}}
            probes:
              - {{name: web, kind: http, interval: 100ms, timeout: 200ms,
                 params: {{url: "http://127.0.0.1:9/"}}}}
            faults:
              - {{name: freeze, kind: pause, duration: 1s, selector: {{names: [anything]}}}}
            phases: {{baseline: 100ms, preflight_timeout: 1s}}
            """,
        )
        reports = tmp_path / "reports"
        started = time.monotonic()
        done = _run_cli(path, reports)
        took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, output
    flat = " ".join(output.split())  # rich may wrap the message
    assert "Docker engine" in flat and base_url in flat, output
    assert "dockerd" in flat and "DOCKER_HOST" in flat, output
    journal = _journal_path(reports)
    assert journal is not None
    records = read_journal(journal)
    assert not _of_type(records, "selection") and not _of_type(records, "handle")
    assert not _of_type(records, "inject")
    assert records[-1]["type"] == "end" and records[-1]["status"] in ("error", "invalid")
    assert took < 60
