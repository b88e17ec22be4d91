"""The chaos-demo Compose system (docker-compose.yml) rehearsed as a game day on a real engine.

Brings the system up under a project name and port of its own, checks that the load balancer
spreads requests over three replicas that share one Redis counter, then kills the Redis
primary and waits, bounded, for Sentinel to promote the replica and the app to answer again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_requirement import unavailable
from runner_cli import run_argv

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
COUNTER_KEY = "chaos-demo:counter"
RECOVERY_OBJECTIVE = 30.0
"""Seconds from the primary's death to the first counter served by the promoted replica."""


def compose_command() -> list[str]:
    """Compose v2 (the docker plugin) where present, else docker-compose 1.x."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    why = "neither `docker compose` nor `docker-compose` is installed (see .ci/prepare-docker.sh)"
    unavailable(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Demo:
    """A running chaos-demo project."""

    client: Any
    project: str
    url: str

    def containers(self, service: str) -> list[Any]:
        """The service's containers, running or not."""
        return list(
            self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
        )

    def container(self, service: str) -> Any:
        found = self.containers(service)
        assert len(found) == 1, f"expected one {service} container, found {len(found)}"
        return found[0]

    def redis_cli(self, service: str, *args: str) -> str:
        port = "26379" if service.startswith("sentinel") else "6379"
        code, output = self.container(service).exec_run(["redis-cli", "-p", port, *args])
        return str(output.decode().strip()) if code == 0 else f"<exit {code}> {output!r}"

    def get(self) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of GET / through the load balancer; status 0 if no answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def served(self) -> dict[str, Any] | None:
        """The JSON body of GET / if it succeeded, else None."""
        status, body = self.get()
        return body if status == 200 else None


def poll(condition: Any, what: str, timeout: float) -> Any:
    """condition()'s first truthy value, polled every 0.1 s; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def demo(docker_client: Any) -> Iterator[Demo]:
    compose = compose_command()
    run(["bash", "docker/build-images.sh"], timeout=600)
    project = f"chaos-demo-test-{secrets.token_hex(3)}"
    port = free_port()
    env = {
        **os.environ,
        "CHAOS_DEMO_PORT": str(port),
        "CHAOS_DEMO_STATS_PORT": str(free_port()),
    }
    base = [*compose, "-p", project, "-f", str(REPO / "docker-compose.yml")]
    try:
        run([*base, "up", "-d"], env=env, timeout=180)
        yield Demo(docker_client, project, f"http://127.0.0.1:{port}/")
    finally:
        subprocess.run(
            [*base, "down", "-v", "--remove-orphans", "-t", "5"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=180,
            check=False,
        )


@pytest.mark.timeout(300)
def test_load_balancer_spreads_over_replicas_sharing_one_counter(demo: Demo) -> None:
    poll(demo.served, "the load balancer to serve a counter", 90)
    replicas: set[str] = set()
    counts: list[int] = []

    def three_replicas_seen() -> bool:
        body = demo.served()
        if body is not None:
            replicas.add(body["replica"])
            counts.append(body["count"])
        return len(replicas) == 3

    poll(three_replicas_seen, "answers from three app replicas", 30)
    assert counts == sorted(set(counts)), "the replicas do not share one counter"


@pytest.mark.timeout(300)
def test_redis_primary_killed_replica_promoted_app_recovers(
    demo: Demo, record_property: Any
) -> None:
    first = poll(demo.served, "the load balancer to serve a counter", 90)
    assert first["redis"] == "redis-primary:6379"
    poll(
        lambda: demo.redis_cli("sentinel-1", "sentinel", "ckquorum", "demo").startswith("OK"),
        "the Sentinels to find each other (quorum and failover authorization)",
        30,
    )
    last = poll(demo.served, "a counter", 10)["count"]
    poll(
        lambda: demo.redis_cli("redis-replica", "get", COUNTER_KEY) == str(last),
        f"the replica to have counter {last}",
        15,
    )

    demo.container("redis-primary").kill()
    killed = time.monotonic()
    failures = 0

    def served_by_promoted_replica() -> dict[str, Any] | None:
        nonlocal failures
        body = demo.served()
        if body is None:
            failures += 1
            return None
        return body if body["redis"] == "redis-replica:6379" else None

    after = poll(served_by_promoted_replica, "the app to answer from the promoted replica", 45)
    failover = time.monotonic() - killed
    record_property("failover_seconds", round(failover, 2))
    print(f"failover: {failover:.2f}s, {failures} failed requests while it lasted")

    assert failover < RECOVERY_OBJECTIVE, (
        f"failover took {failover:.2f}s, over the {RECOVERY_OBJECTIVE:g}s objective"
    )
    assert after["count"] > last, "the counter did not survive the failover"
    master = demo.redis_cli("sentinel-2", "sentinel", "get-master-addr-by-name", "demo")
    assert master.split() == ["redis-replica", "6379"]
    streak = 0

    def steady() -> bool:
        nonlocal streak
        streak = streak + 1 if demo.served() is not None else 0
        return streak >= 10

    poll(steady, "ten successes in a row after the failover", 15)


def wait_until_steady(demo: Demo) -> None:
    poll(demo.served, "the load balancer to serve a counter", 90)
    poll(
        lambda: demo.redis_cli("sentinel-1", "sentinel", "ckquorum", "demo").startswith("OK"),
        "the Sentinels to find each other",
        30,
    )


def run_shipped(
    demo: Demo, name: str, reports: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """experiments/compose/NAME.yaml through the CLI, with only the project and the load
    balancer's address changed to this test's own: (the CLI's outcome, result.json)."""
    experiment = yaml.safe_load((REPO / f"experiments/compose/{name}.yaml").read_text())
    experiment["target"]["params"] = {"project": demo.project, "url": demo.url.rstrip("/")}
    reports.mkdir(parents=True)
    path = reports / f"{name}.yaml"
    path.write_text(yaml.safe_dump(experiment))
    done = subprocess.run(
        run_argv(path, reports),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (run_dir,) = (entry for entry in reports.iterdir() if entry.is_dir())
    return done, json.loads((run_dir / "result.json").read_text())


@pytest.mark.timeout(400)
def test_the_failover_game_day_experiment_runs_as_shipped(
    demo: Demo, tmp_path: Path, record_property: Any
) -> None:
    wait_until_steady(demo)
    done, result = run_shipped(demo, "redis-failover", tmp_path / "reports")
    verdicts = {s["name"]: s for s in result["slos"]}
    logs = "\n".join(
        f"--- {service}\n"
        + "\n".join(
            line
            for line in demo.container(service).logs().decode(errors="replace").splitlines()
            if "Failed to resolve hostname" not in line  # Sentinel's noise once it is gone
        )[-4000:]
        for service in ("sentinel-1", "sentinel-2", "sentinel-3", "redis-replica")
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{verdicts}\n{logs}"
    (fault,) = result["faults"]
    assert fault["members"] == [demo.container("redis-primary").name]
    failover = fault["recovery_time"]
    record_property("failover_seconds_from_probes", round(failover, 2))
    print(
        f"game day: failover {failover:.2f}s, success during it "
        f"{100 * fault['availability']['success_ratio']:.1f}%"
    )
    assert 1.0 < failover < RECOVERY_OBJECTIVE
    # The engine saw the primary die, beside what the probes saw.
    assert any(
        e["source"] == "docker" and e["action"] == "die" and e["member"] == fault["members"][0]
        for e in result["events"]
    )
    assert verdicts["availability-28d"]["budget"]["window_consumed"] > 0


SHIPPED = {
    "crash-app-replica": "app",
    "partition-app-from-redis": "app",
    "cpu-pressure": "app",
    "lb-bandwidth": "lb",
}
"""The other game days in experiments/compose/, and the service each one's fault acts on."""


@pytest.mark.timeout(600)
def test_the_other_game_days_run_as_shipped_and_meet_their_slos(demo: Demo, tmp_path: Path) -> None:
    """One after the other against one project (each leaves the system steady again); every
    one is run, and all that went wrong is reported together."""
    wait_until_steady(demo)
    problems: list[str] = []
    for name, service in SHIPPED.items():
        poll(demo.served, f"the load balancer to serve again before {name}", 60)
        done, result = run_shipped(demo, name, tmp_path / name)
        if done.returncode != 0:
            problems.append(f"{name} exited {done.returncode}:\n{done.stdout[-3000:]}")
            continue
        (fault,) = result["faults"]
        names = {container.name for container in demo.containers(service)}
        if not fault["members"] or not set(fault["members"]) <= names:
            problems.append(f"{name}: acted on {fault['members']}, not on {service}")
        if fault["reversible"] and not fault["reverted"]:
            problems.append(f"{name}: its fault was not reverted")
        print(
            f"{name}: "
            + ", ".join(
                f"{s['name']} {s['observed']:.3g}{'s' if s['unit'] == 's' else ''}"
                for s in result["slos"]
                if s["observed"] is not None
            )
        )
    assert not problems, "\n\n".join(problems)
