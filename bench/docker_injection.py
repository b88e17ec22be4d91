"""Docker lifecycle faults: how fast they take hold, and how a crash's recovery is seen.

Ten HTTP server containers (local base image, restart policy on-failure) on a user-defined
network. Each lifecycle fault kind is injected through its FaultKind on every container, a
few rounds over. Per kind: the time from the call to its return (the engine's
acknowledgement) and to the state change (the engine's event: die, pause, restart,
disconnect), median and p95; for reversible kinds, the same for the revert. For each crash:
the restart policy's recovery as seen by polling the container's state every 20 ms and by
the engine's die/start events, and when HTTP answered again.

    python bench/docker_injection.py [--containers 10] [--rounds 3] [--crash-via auto]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from chaos_runner.experiment import FaultSpec, Selector
from chaos_runner.faults.docker import (
    ContainerCrash,
    ContainerKill,
    ContainerPause,
    ContainerRestart,
    ContainerStop,
    NetworkDisconnect,
)
from chaos_runner.plugins import Handle, Member
from chaos_runner.targets.docker import DockerParams, DockerTarget, EngineEvent

BASE = os.environ.get("CHAOS_RUNNER_BASE_IMAGE", "chaos-runner/base:bookworm")
POLL = 0.02
"""Seconds between two looks at the container's state when recovery is seen by polling."""

# What the engine reports when each fault has taken hold.
TAKES_HOLD = {
    "kill": "die",
    "crash": "die",
    "stop": "die",
    "restart": "restart",
    "pause": "pause",
    "disconnect": "disconnect",
}
REVERTED = {"stop": "start", "pause": "unpause", "disconnect": "connect"}


class Events:
    """The target's event stream, kept so that a test of one container can wait on it."""

    def __init__(self) -> None:
        self.seen: list[EngineEvent] = []
        self._changed = threading.Condition()

    def add(self, event: EngineEvent) -> None:
        with self._changed:
            self.seen.append(event)
            self._changed.notify_all()

    def wait(self, container: str, action: str, after: float, timeout: float = 30.0) -> float:
        """The monotonic time of the first `action` on `container` at or after `after`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.seen:
                    # The engine stamps events on the same host clock; allow for rounding.
                    if (event.container_id, event.action) == (container, action) and (
                        event.t >= after - 0.01
                    ):
                        return event.t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {action} event for {container[:12]} in {timeout}s")
                self._changed.wait(left)


@dataclass
class Figures:
    ack: list[float] = field(default_factory=list)
    change: list[float] = field(default_factory=list)
    revert_ack: list[float] = field(default_factory=list)
    revert_change: list[float] = field(default_factory=list)


@dataclass
class CrashRecovery:
    polled: list[float] = field(default_factory=list)
    """From injection to the first poll that saw it running again."""
    evented: list[float] = field(default_factory=list)
    """From injection to the engine's start event."""
    die_to_start: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    """From injection to the first successful HTTP GET."""


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            response.read()
        return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL)
    return time.monotonic()


def url_of(target: DockerTarget, container_id: str) -> str:
    attrs = target.client.api.inspect_container(container_id)
    binding = attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]
    return f"http://127.0.0.1:{binding['HostPort']}/"


def handle_for(fault: Any, member: Member, params: Any, target: DockerTarget) -> Handle:
    spec = FaultSpec(kind=fault.kind, duration=1)
    handles: list[Handle] = fault.plan(spec, f"bench-{fault.kind}", params, [member], target)
    return handles[0]


def bench(containers: int, rounds: int, crash_via: str) -> None:
    run = f"crb-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp:
        target = DockerTarget(DockerParams(), base_dir=Path(tmp), journal=None)
        target.start()
        client = target.client
        network = client.networks.create(f"{run}-net", labels={"chaos-runner.bench": run})
        made: list[Any] = []
        try:
            for i in range(containers):
                made.append(
                    client.containers.run(
                        BASE,
                        ["python3", "-m", "http.server", "8000"],
                        name=f"{run}-{i}",
                        detach=True,
                        network=network.name,
                        labels={"chaos-runner.bench": run},
                        ports={"8000/tcp": ("127.0.0.1", None)},
                        restart_policy={"Name": "on-failure"},
                        stop_signal="SIGKILL",
                    )
                )
            members = target.members(Selector(labels={"chaos-runner.bench": run}))
            assert len(members) == containers, members
            for member in members:
                wait_for(partial(answers, url_of(target, member.id)), f"{member.name} to serve")
            events = Events()
            target.start_events(events.add)
            figures, crash = measure(target, members, events, network.name, rounds, crash_via)
        finally:
            target.stop_events()
            for container in made:
                container.remove(force=True)
            network.remove()
            target.stop()
    report(figures, crash, containers, rounds, crash_via)


def measure(
    target: DockerTarget,
    members: list[Member],
    events: Events,
    network: str,
    rounds: int,
    crash_via: str,
) -> tuple[dict[str, Figures], CrashRecovery]:
    faults: list[tuple[Any, Any]] = [
        (ContainerKill(), ContainerKill.Params()),
        (ContainerCrash(), ContainerCrash.Params(via=crash_via)),
        (ContainerStop(), ContainerStop.Params(timeout=1)),
        (ContainerRestart(), ContainerRestart.Params(timeout=1)),
        (ContainerPause(), ContainerPause.Params()),
        (NetworkDisconnect(), NetworkDisconnect.Params(network=network)),
    ]
    figures = {fault.kind: Figures() for fault, _ in faults}
    crash = CrashRecovery()
    for _ in range(rounds):
        for fault, params in faults:
            for member in members:
                handle = handle_for(fault, member, params, target)
                before = target.container_state(member.id)
                t0 = time.monotonic()
                fault.inject(handle, params, target)
                t1 = time.monotonic()
                changed = events.wait(member.id, TAKES_HOLD[fault.kind], t0)
                mine = figures[fault.kind]
                mine.ack.append(t1 - t0)
                mine.change.append(changed - t0)
                if fault.kind == "crash":
                    polled = wait_for(
                        partial(_restarted, target, member.id, before.restart_count),
                        f"{member.name} to be restarted",
                    )
                    start = events.wait(member.id, "start", changed)
                    url = url_of(target, member.id)
                    http = wait_for(partial(answers, url), f"{member.name} to serve again")
                    crash.polled.append(polled - t1)
                    crash.evented.append(start - t1)
                    crash.die_to_start.append(start - changed)
                    crash.http.append(http - t1)
                elif fault.kind in REVERTED:
                    t2 = time.monotonic()
                    fault.revert(handle, target)
                    t3 = time.monotonic()
                    restored = events.wait(member.id, REVERTED[fault.kind], t2)
                    mine.revert_ack.append(t3 - t2)
                    mine.revert_change.append(restored - t2)
                elif fault.kind == "kill":
                    target.start_container(member.id)
    return figures, crash


def _restarted(target: DockerTarget, container_id: str, count_before: int) -> bool:
    state = target.container_state(container_id)
    return state.running and state.restart_count > count_before


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:7.1f} {p95 * 1000:7.1f}"


def report(
    figures: dict[str, Figures], crash: CrashRecovery, containers: int, rounds: int, via: str
) -> None:
    print(f"{containers} containers x {rounds} rounds (crash via {via}); ms, median and p95")
    print(f"{'kind':<11} {'inject: ack':>15} {'took hold':>15} {'revert: ack':>15} {'undone':>15}")
    for kind, f in figures.items():
        print(
            f"{kind:<11} {ms(f.ack):>15} {ms(f.change):>15} "
            f"{ms(f.revert_ack):>15} {ms(f.revert_change):>15}"
        )
    print("\ncrash recovery (restart policy on-failure), from the injection call's return:")
    print(f"  polling the state every {POLL * 1000:.0f} ms: {ms(crash.polled)}")
    print(f"  engine start event:             {ms(crash.evented)}")
    print(f"  engine die -> start events:     {ms(crash.die_to_start)}")
    print(f"  first successful HTTP GET:      {ms(crash.http)}")
    lag = [p - e for p, e in zip(crash.polled, crash.evented, strict=True)]
    print(f"  polling later than the event by: {ms(lag)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crash-via", choices=("auto", "host", "helper"), default="auto")
    args = parser.parse_args()
    bench(args.containers, args.rounds, args.crash_via)


if __name__ == "__main__":
    main()
