"""The embedded local target: real replicas, a real proxy, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from local_processes import StartLocal, children
from pydantic import ValidationError

from chaos_runner.errors import TargetError
from chaos_runner.experiment import Selector
from chaos_runner.journal import Journal, read_journal
from chaos_runner.targets.local.driver import LocalParams, LocalTarget


def get(url: str, timeout: float = 1.0) -> urllib3.BaseHTTPResponse:
    """One request on a fresh connection (a new proxy connection, a new round-robin turn)."""
    return urllib3.request(
        "GET", url, headers={"Connection": "close"}, retries=False, timeout=timeout
    )


def test_the_replicas_serve_through_the_proxy_in_turn(start_local: StartLocal) -> None:
    target = start_local(replicas=3)
    variables = target.variables()
    assert variables["target.url"] == f"http://127.0.0.1:{variables['target.port']}"
    assert variables["target.host"] == "127.0.0.1"
    seen = set()
    for _ in range(9):
        response = get(variables["target.url"] + "/health")
        assert response.status == 200
        seen.add(response.json()["replica"])
    assert seen == {"replica-0", "replica-1", "replica-2"}
    for i in range(3):
        assert get(variables[f"target.replicas.{i}.url"] + "/").json()["replica"] == f"replica-{i}"
    work = get(variables["target.url"] + "/work?ms=50")
    assert work.status == 200 and work.json()["worked_ms"] == 50
    assert get(variables["target.url"] + "/nothing-here").status == 404


def test_keep_alive_connections_are_reused(start_local: StartLocal) -> None:
    target = start_local(replicas=2)
    assert target.proxy is not None
    with urllib3.PoolManager(maxsize=1, retries=False, timeout=1.0) as http:
        for _ in range(20):
            assert http.request("GET", target.variables()["target.url"] + "/").status == 200
    status = target.proxy.status()
    assert status["accepted"] == 1


def test_describe_names_every_replica_and_the_proxy(start_local: StartLocal) -> None:
    target = start_local(replicas=2)
    described = json.loads(json.dumps(target.describe()))
    assert described["kind"] == "local" and described["command"] == "demo"
    assert described["proxy"]["port"] == int(target.variables()["target.port"])
    assert [r["id"] for r in described["replicas"]] == ["replica-0", "replica-1"]
    assert all(r["running"] and r["pid"] > 0 for r in described["replicas"])


def test_a_killed_replica_fails_requests_until_the_supervisor_restarts_it(
    start_local: StartLocal, tmp_path: Path
) -> None:
    with Journal(tmp_path / "journal.jsonl") as journal:
        target = start_local(replicas=1, restart_delay="1s", journal=journal)
        url = target.variables()["target.url"] + "/health"
        member = target.members(Selector())[0]
        old_pid = int(member.attrs["pid"])
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        failures, recovered_at = 0, None
        while time.monotonic() - killed_at < 10:
            try:
                get(url, timeout=0.5)
            except urllib3.exceptions.HTTPError:
                failures += 1
                time.sleep(0.02)
                continue
            if failures:
                recovered_at = time.monotonic()
                break
        assert failures > 0, "requests failed while the replica was dead"
        assert recovered_at is not None, "the replica was restarted"
        assert recovered_at - killed_at >= 0.5, "not before the restart delay"
        new = target.members(Selector())[0]
        assert int(new.attrs["pid"]) != old_pid and new.attrs["port"] == member.attrs["port"]
    events = [r for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "event"]
    actions = [(e["source"], e["action"], e["member"]) for e in events]
    assert actions == [
        ("supervisor", "start", "replica-0"),
        ("supervisor", "die", "replica-0"),
        ("supervisor", "restart", "replica-0"),
    ]
    assert events[1]["detail"]["signal"] == "SIGKILL" and events[1]["detail"]["pid"] == old_pid
    assert events[2]["t"] - events[1]["t"] == pytest.approx(1.0, abs=0.3)


def test_a_paused_replica_is_alive_and_answers_again_once_resumed(
    start_local: StartLocal, tmp_path: Path
) -> None:
    with Journal(tmp_path / "journal.jsonl") as journal:
        target = start_local(replicas=1, restart_delay="100ms", journal=journal)
        pid = int(target.members(Selector())[0].attrs["pid"])
        replica_url = target.variables()["target.replicas.0.url"]
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(urllib3.exceptions.ReadTimeoutError):
                get(replica_url, timeout=0.5)
            # Several restart delays later it is still the same, un-restarted process.
            assert [m.attrs["pid"] for m in target.members(Selector())] == [str(pid)]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert get(replica_url).status == 200
    actions = [
        r["action"] for r in read_journal(tmp_path / "journal.jsonl") if r["type"] == "event"
    ]
    assert actions == ["start"]


def test_stop_leaves_no_process_behind_even_a_paused_one(
    start_local: StartLocal, alive: Callable[[int], bool]
) -> None:
    before = children()
    target = start_local(replicas=3)
    assert target.proxy is not None
    pids = [int(m.attrs["pid"]) for m in target.members(Selector())] + [target.proxy.pid]
    assert children() - before == set(pids)
    os.kill(pids[0], signal.SIGSTOP)
    target.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert children() - before == set()
    target.stop()  # idempotent
    with pytest.raises(TargetError, match="not running"):
        target.variables()


def test_a_dead_runner_takes_its_replicas_and_proxy_with_it(
    tmp_path: Path, alive: Callable[[int], bool], wait_until: Callable[..., None]
) -> None:
    """PR_SET_PDEATHSIG: nothing outlives a runner killed with SIGKILL (no cleanup runs).
    The replicas run a plain http.server, which does not watch its parent by itself."""
    script = textwrap.dedent("""
        import json, sys, time
        from pathlib import Path
        from chaos_runner.targets.local.driver import LocalParams, LocalTarget
        command = (sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1")
        params = LocalParams(replicas=2, command=command, ready_path="/")
        target = LocalTarget(params, base_dir=Path("."), journal=None)
        target.start()
        pids = [s.pid for s in target.supervisor.replicas()] + [target.proxy.pid]
        print(json.dumps(pids), flush=True)
        time.sleep(60)
    """)
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    pids: list[int] = []
    try:
        assert runner.stdout is not None
        pids = json.loads(runner.stdout.readline())
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        runner.kill()
        runner.wait(5)
        wait_until(lambda: not any(alive(pid) for pid in pids), "the children to die", 5.0)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_members_are_selected_by_name_and_other_filters_are_refused(
    start_local: StartLocal,
) -> None:
    target = start_local(replicas=3)
    everyone = target.members(Selector())
    assert [m.id for m in everyone] == ["replica-0", "replica-1", "replica-2"]
    assert all(m.name == m.id and int(m.attrs["pid"]) > 0 for m in everyone)
    chosen = target.members(Selector(names=("replica-2", "replica-0")))
    assert [m.id for m in chosen] == ["replica-0", "replica-2"]
    with pytest.raises(TargetError, match=r"selector\.names: no replica named replica-7"):
        target.members(Selector(names=("replica-7",)))
    for field, value in [
        ("labels", {"app": "web"}),
        ("service", "web"),
        ("project", "demo"),
        ("namespace", "default"),
    ]:
        with pytest.raises(TargetError, match=rf"selector\.{field}: local replicas have no"):
            target.members(Selector.model_validate({field: value}))


def test_a_dead_replica_is_not_a_member_until_it_is_back(
    start_local: StartLocal, wait_until: Callable[..., None]
) -> None:
    target = start_local(replicas=2, restart_delay="1s")
    victim = target.members(Selector(names=("replica-1",)))[0]
    os.kill(int(victim.attrs["pid"]), signal.SIGKILL)
    wait_until(lambda: len(target.members(Selector())) == 1, "replica-1 to be seen dead")
    assert [m.id for m in target.members(Selector())] == ["replica-0"]
    wait_until(lambda: len(target.members(Selector())) == 2, "replica-1 to be restarted")


def test_your_own_command_runs_with_its_port_substituted(
    start_local: StartLocal, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("hello from my service")
    target = start_local(
        replicas=2,
        command=[sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
        ready_path="/index.html",
    )
    response = get(target.variables()["target.url"] + "/index.html")
    assert response.status == 200 and response.data == b"hello from my service"
    assert target.describe()["command"][0] == sys.executable


def test_a_command_that_exits_at_once_is_a_target_error_with_its_output(tmp_path: Path) -> None:
    params = LocalParams(
        replicas=1, command=(sys.executable, "-c", "import sys; sys.exit('no config found')")
    )
    target = LocalTarget(params, base_dir=tmp_path, journal=None)
    with pytest.raises(TargetError) as caught:
        target.start()
    message = str(caught.value)
    assert "replica-0 exited before it answered GET /health" in message
    assert "(exit code 1)" in message and "no config found" in message
    assert target.proxy is None and target.supervisor is None


def test_a_command_that_never_answers_is_a_target_error_after_ready_timeout(
    tmp_path: Path,
) -> None:
    script = "print('booting forever', flush=True); import time; time.sleep(60)"
    params = LocalParams(replicas=2, command=(sys.executable, "-c", script), ready_timeout=0.5)
    target = LocalTarget(params, base_dir=tmp_path, journal=None)
    with pytest.raises(TargetError) as caught:
        target.start()
    message = str(caught.value)
    assert "did not answer GET http://127.0.0.1:" in message and "within 0.5s" in message
    assert "Connection refused" in message and "booting forever" in message


def test_a_slow_booting_demo_replica_is_waited_for(start_local: StartLocal) -> None:
    started = time.monotonic()
    target = start_local(replicas=2, start_delay="400ms")
    assert time.monotonic() - started >= 0.4
    assert get(target.variables()["target.url"] + "/health").status == 200


def test_a_taken_proxy_port_is_a_target_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        target = LocalTarget(LocalParams(replicas=1, port=port), base_dir=tmp_path, journal=None)
        with pytest.raises(TargetError, match=r"cannot listen on 127\.0\.0\.1"):
            target.start()
    assert target.supervisor is None


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"replicas": 0}, "greater than or equal to 1"),
        ({"replicas": 33}, "less than or equal to 32"),
        ({"restart_delay": "soon"}, "expected a duration"),
        ({"ready_path": "health"}, "must start with '/'"),
        ({"command": ["x"], "start_delay": "1s"}, "demo service only"),
        ({"replica": 2}, "Extra inputs are not permitted"),
    ],
)
def test_params_are_validated(params: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        LocalParams.model_validate(params)


def test_a_replica_that_cannot_be_restarted_is_retried(
    start_local: StartLocal, tmp_path: Path, wait_until: Callable[..., None]
) -> None:
    launcher = tmp_path / "serve.sh"
    script = f'#!/bin/sh\nexec {sys.executable} -m http.server "$1" --bind 127.0.0.1\n'
    launcher.write_text(script)
    launcher.chmod(0o755)
    with Journal(tmp_path / "journal.jsonl") as journal:
        target = start_local(
            replicas=1,
            command=[str(launcher), "{port}"],
            ready_path="/",
            restart_delay=0.1,
            journal=journal,
        )
        launcher.unlink()
        os.kill(int(target.members(Selector())[0].attrs["pid"]), signal.SIGKILL)

        def actions() -> list[str]:
            records = read_journal(tmp_path / "journal.jsonl")
            return [r["action"] for r in records if r["type"] == "event"]

        wait_until(lambda: "restart_failed" in actions(), "a failed restart")
        launcher.write_text(script)
        launcher.chmod(0o755)
        wait_until(lambda: "restart" in actions(), "the retried restart")
        assert actions()[:3] == ["start", "die", "restart_failed"]

        def serving() -> bool:
            try:
                return get(target.variables()["target.url"] + "/").status == 200
            except urllib3.exceptions.HTTPError:
                return False

        wait_until(serving, "the restarted replica to serve")
