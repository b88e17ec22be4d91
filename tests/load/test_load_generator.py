"""LoadGenerator against a real HTTP server: real Locust, in its own process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from load_test_server import SLOW_SECONDS, CountingServer

from chaos_runner.errors import LoadError
from chaos_runner.experiment import LoadSpec
from chaos_runner.load import LoadGenerator
from chaos_runner.load.protocol import WINDOW_KEYS

pytestmark = pytest.mark.timeout(60)


class Windows:
    """Collects the windows a generator delivers (from its reader thread)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.records.append(record)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records)

    def total(self, key: str) -> int:
        return sum(int(w[key]) for w in self.snapshot())


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def merged_percentile(windows: list[dict[str, Any]], fraction: float) -> float:
    """A percentile merged from the windows' histograms, as a report would compute it."""
    buckets: dict[float, int] = {}
    for window in windows:
        for ms, count in window["hist"].items():
            buckets[float(ms)] = buckets.get(float(ms), 0) + count
    total = sum(buckets.values())
    seen = 0
    for ms in sorted(buckets):
        seen += buckets[ms]
        if seen >= fraction * total:
            return ms
    raise AssertionError("no samples")


@pytest.fixture
def generators() -> Iterator[Callable[..., LoadGenerator]]:
    """Makes LoadGenerators that are stopped at the end of the test, whatever happened."""
    made: list[LoadGenerator] = []

    def make(
        spec: LoadSpec,
        host: str,
        on_window: Callable[[dict[str, Any]], None],
        base_dir: Path | None = None,
        max_duration: float = 30.0,
    ) -> LoadGenerator:
        generator = LoadGenerator(
            spec,
            host=host,
            base_dir=base_dir or Path.cwd(),
            max_duration=max_duration,
            on_window=on_window,
        )
        made.append(generator)
        return generator

    try:
        yield make
    finally:
        for generator in made:
            generator.stop()


def test_windows_stream_while_the_load_runs_and_add_up_to_what_the_server_saw(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    windows = Windows()
    users = 4
    spec = LoadSpec(users=users, spawn_rate=100, window=0.25, paths=("/", "/fail"))
    load = generators(spec, http_server.url, windows)
    load.start()
    assert load.alive
    # Windows arrive while the load runs, not at its end.
    assert wait_until(lambda: len(windows.snapshot()) >= 6, timeout=20)
    assert load.alive
    load.stop()

    records = windows.snapshot()
    assert load.error is None and load.stop_reason == "stop requested"
    assert all(set(w) == set(WINDOW_KEYS) for w in records)
    # Back to back, each about `window` long (the last one is partial).
    for before, after in itertools.pairwise(records):
        assert after["t0"] == before["t1"]
    assert all(w["t1"] - w["t0"] < 1.0 for w in records)
    assert any(w["users"] == users for w in records)
    # Every request the worker recorded reached the server; those still in flight when the
    # users were stopped (at most one a user) reached it without being recorded.
    served, recorded = http_server.count(), windows.total("requests")
    assert recorded > 0
    assert served - users <= recorded <= served
    failed = windows.total("failures")
    assert http_server.count("/fail") - users <= failed <= http_server.count("/fail")
    assert all(sum(w["hist"].values()) == w["requests"] for w in records)
    errors = " ".join(text for w in records for text in w["errors"])
    assert "/fail" in errors and "500" in errors


def test_percentiles_come_from_each_windows_own_samples(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    windows = Windows()
    spec = LoadSpec(users=2, window=0.25, paths=("/slow",), max_requests=40)
    load = generators(spec, http_server.url, windows)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=30)

    timed = [w for w in windows.snapshot() if w["requests"]]
    slow_ms = SLOW_SECONDS * 1000
    assert timed and all(w["p50"] >= slow_ms for w in timed)
    assert all(w["p50"] <= w["p95"] <= w["p99"] <= w["max"] for w in timed)
    assert merged_percentile(timed, 0.5) >= slow_ms
    assert windows.total("failures") == 0


def test_max_requests_stops_the_load_by_itself(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    windows = Windows()
    users = 3
    spec = LoadSpec(users=users, window=0.25, max_requests=50)
    load = generators(spec, http_server.url, windows)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=30)
    load.stop()

    assert load.error is None and load.stop_reason == "max_requests"
    assert 50 <= windows.total("requests") <= 50 + users
    assert http_server.count() <= 50 + 2 * users


def test_max_duration_stops_the_load_by_itself(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    load = generators(LoadSpec(users=1, window=0.1), http_server.url, Windows(), max_duration=1.0)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=20)
    assert load.error is None and load.stop_reason == "max_duration"


def test_rate_per_user_bounds_the_throughput(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    windows = Windows()
    users, rate = 2, 5.0
    spec = LoadSpec(users=users, window=0.5, rate_per_user=rate)
    load = generators(spec, http_server.url, windows, max_duration=2.0)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=20)

    records = windows.snapshot()
    span = records[-1]["t1"] - records[0]["t0"]
    # Constant throughput: no more than rate x users x time (plus each user's first request).
    assert 0 < windows.total("requests") <= users * rate * span + users


def test_a_locustfile_with_a_load_shape_runs_until_the_shape_ends(
    http_server: CountingServer, generators: Callable[..., LoadGenerator], tmp_path: Path
) -> None:
    (tmp_path / "shaped.py").write_text(
        textwrap.dedent(
            """
            from locust import FastHttpUser, LoadTestShape, constant, task

            class Visitor(FastHttpUser):
                wait_time = constant(0.02)

                @task
                def visit(self):
                    self.client.get("/other")

            class TwoUsersForASecond(LoadTestShape):
                def tick(self):
                    return (2, 10) if self.get_run_time() < 1.0 else None
            """
        )
    )
    windows = Windows()
    # users=7 is overridden by the shape, as under the locust command.
    spec = LoadSpec(locustfile="shaped.py", users=7, window=0.2)
    load = generators(spec, http_server.url, windows, base_dir=tmp_path)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=30)

    assert load.error is None and load.stop_reason == "shape finished"
    assert max(w["users"] for w in windows.snapshot()) == 2
    assert http_server.count("/other") >= windows.total("requests") > 0


def test_user_classes_pick_among_the_locustfiles_users(
    http_server: CountingServer, generators: Callable[..., LoadGenerator], tmp_path: Path
) -> None:
    (tmp_path / "two_users.py").write_text(
        textwrap.dedent(
            """
            from locust import FastHttpUser, constant, task

            class Reader(FastHttpUser):
                wait_time = constant(0.01)

                @task
                def read(self):
                    self.client.get("/")

            class Writer(FastHttpUser):
                wait_time = constant(0.01)

                @task
                def write(self):
                    self.client.get("/other")
            """
        )
    )
    windows = Windows()
    spec = LoadSpec(locustfile="two_users.py", user_classes=("Writer",), users=2, max_requests=20)
    load = generators(spec, http_server.url, windows, base_dir=tmp_path)
    load.start()
    assert wait_until(lambda: not load.alive, timeout=30)

    assert load.error is None
    assert http_server.count("/other") >= 20 and http_server.count("/") == 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "does not exist"),
        ("this is not python(\n", "cannot load locustfile"),
        ("raise RuntimeError('no config here')\n", "RuntimeError: no config here"),
        ("import locust\n\nclass NotAUser:\n    pass\n", "defines no User class"),
        (
            "from locust import HttpUser, task\n\nclass Browser(HttpUser):\n"
            "    @task\n    def t(self):\n        pass\n",
            "has no User class Nobody (it has Browser)",
        ),
    ],
    ids=["missing", "syntax-error", "raises", "no-user", "unknown-user-class"],
)
def test_an_unusable_locustfile_gives_a_clear_load_error(
    source: str | None,
    message: str,
    http_server: CountingServer,
    generators: Callable[..., LoadGenerator],
    tmp_path: Path,
) -> None:
    if source is not None:
        (tmp_path / "users.py").write_text(source)
    spec = LoadSpec(locustfile="users.py", user_classes=("Nobody",) if "Nobody" in message else ())
    load = generators(spec, http_server.url, Windows(), base_dir=tmp_path)
    with pytest.raises(LoadError, match=r"users\.py") as raised:
        load.start()
    assert message in str(raised.value)
    assert not load.alive
    assert http_server.count() == 0


def test_stop_is_prompt_and_idempotent(
    http_server: CountingServer, generators: Callable[..., LoadGenerator]
) -> None:
    windows = Windows()
    load = generators(LoadSpec(users=5, window=0.5), http_server.url, windows, max_duration=120)
    load.start()
    begun = time.monotonic()
    load.stop()
    # Far sooner than max_duration, and without needing the terminate/kill escalation.
    assert time.monotonic() - begun < 5
    assert not load.alive and load.error is None and load.stop_reason == "stop requested"
    delivered = len(windows.snapshot())
    assert delivered >= 1  # at least the last, partial window
    load.stop()
    assert len(windows.snapshot()) == delivered


def test_a_worker_that_dies_is_reported_as_an_error(
    http_server: CountingServer, generators: Callable[..., LoadGenerator], tmp_path: Path
) -> None:
    (tmp_path / "suicidal.py").write_text(
        textwrap.dedent(
            """
            import os, signal
            from locust import FastHttpUser, constant, task

            class Suicidal(FastHttpUser):
                wait_time = constant(0.2)

                @task
                def die(self):
                    self.client.get("/")
                    os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    load = generators(
        LoadSpec(locustfile="suicidal.py", users=1), http_server.url, Windows(), base_dir=tmp_path
    )
    try:
        load.start()
    except LoadError as exc:  # it may die before its users were seen running
        assert "exited unexpectedly" in str(exc)
    assert wait_until(lambda: load.error is not None, timeout=20)
    assert "exited unexpectedly" in str(load.error)
    assert f"code {-signal.SIGKILL}" in str(load.error)


RUNNER_SCRIPT = """
import json, sys, time
from pathlib import Path
from chaos_runner.experiment import LoadSpec
from chaos_runner.load import LoadGenerator

windows = []
load = LoadGenerator(LoadSpec(users=2, max_requests=20), host=sys.argv[1], base_dir=Path.cwd(),
                     max_duration=20, on_window=windows.append)
load.start()
print(load.pid, flush=True)
if sys.argv[2] == "finish":
    deadline = time.monotonic() + 20
    while load.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    load.stop()
    print(json.dumps({"requests": sum(w["requests"] for w in windows), "error": load.error,
        "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("locust", "gevent"))}))
else:
    time.sleep(60)
"""


def test_the_runner_process_never_imports_locust_or_gevent(http_server: CountingServer) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, http_server.url, "finish"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert done.returncode == 0, done.stderr
    _pid, last = done.stdout.splitlines()
    report = json.loads(last)
    assert report["error"] is None and report["requests"] >= 20
    assert report["imported"] == []


def test_the_worker_dies_with_its_parent(http_server: CountingServer) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, http_server.url, "hang"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert is_running(worker)
        parent.kill()
        parent.wait(10)
        assert wait_until(lambda: not is_running(worker), timeout=10)
    finally:
        parent.kill()
        parent.wait(10)


def is_running(pid: int) -> bool:
    """True unless the process is gone or a zombie (a reparented child nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_the_worker_reads_its_config_from_stdin_and_stops_on_a_stop_line(
    http_server: CountingServer,
) -> None:
    config = f'{{"host": "{http_server.url}", "users": 1, "window": 0.1, "max_duration": 20}}'
    worker = subprocess.Popen(
        [sys.executable, "-m", "chaos_runner.load.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(config + "\n")
        worker.stdin.flush()
        lines = iter(worker.stdout.readline, "")
        assert any('"event":"started"' in line for line in lines)
        worker.stdin.write("stop\n")
        worker.stdin.flush()
        out, _err = worker.communicate(timeout=20)
        assert worker.returncode == 0
        assert '"reason":"stop requested"' in out.splitlines()[-1]
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)


def test_the_worker_rejects_a_bad_configuration_with_exit_code_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos_runner.load.worker", '{"host": "http://x", "users": 0}'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert '"event":"error"' in done.stdout and "users" in done.stdout
