"""Fixtures of the local target's tests: started targets that are always stopped.

- `start_local(**params)`: a started LocalTarget (params as in an experiment), stopped after
  the test even when it fails; `journal=` records its supervisor events.
- `alive(pid)`: whether a process exists and is not a zombie; `children()`: this process's.
- `wait_until(condition, what)`: poll until it holds, or fail naming what was awaited.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos_runner.journal import Journal
from chaos_runner.targets.local.driver import LocalParams, LocalTarget

StartLocal = Callable[..., LocalTarget]


@pytest.fixture
def start_local(tmp_path: Path) -> Iterator[StartLocal]:
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


def process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/status (R, S, T, Z...), None if there is no process."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1]
    except FileNotFoundError:
        return None
    return None


def children() -> set[int]:
    """The live (non-zombie) child processes of this test process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


@pytest.fixture
def alive() -> Callable[[int], bool]:
    return lambda pid: process_state(pid) not in (None, "Z", "X")


@pytest.fixture
def wait_until() -> Callable[..., None]:
    def wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.02)

    return wait
