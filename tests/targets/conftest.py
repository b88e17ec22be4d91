"""Fixtures of the local target's tests: started targets that are always stopped.

- `start_local(**params)`: a started LocalTarget (params as in an experiment), stopped after
  the test even when it fails; `journal=` records its supervisor events.
- `alive(pid)`: whether a process exists and is not a zombie; `children()`: this process's.
- `wait_until(condition, what)`: poll until it holds, or fail naming what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_processes import StartLocal, children, process_state  # noqa: F401

from chaos_runner.journal import Journal
from chaos_runner.targets.local.driver import LocalParams, LocalTarget


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
