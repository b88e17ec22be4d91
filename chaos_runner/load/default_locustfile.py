"""The built-in load user: a FastHttpUser that requests the configured paths in turn.

A plain locustfile, configured through environment variables (set by the load worker), so the
very same load also runs under `locust -f chaos_runner/load/default_locustfile.py`. It imports
Locust: only the worker process or a `locust` command may import it, never the runner.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator

from locust import FastHttpUser, between, constant_throughput, task

from chaos_runner.load.protocol import PATHS_VARIABLE, RATE_VARIABLE


def _paths() -> tuple[str, ...]:
    raw = os.environ.get(PATHS_VARIABLE)
    if not raw:
        return ("/",)
    paths = json.loads(raw)
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(f"{PATHS_VARIABLE} must be a non-empty JSON list of paths, got {raw!r}")
    return tuple(paths)


def _wait_time() -> Callable[..., float]:
    raw = os.environ.get(RATE_VARIABLE)
    if raw:
        wait: Callable[..., float] = constant_throughput(float(raw))
        return wait
    # Not zero: a user with no wait at all spins as fast as the target answers, which on a
    # small machine starves the very system under test. About 100 requests/s per user at most.
    small: Callable[..., float] = between(0.005, 0.015)
    return small


class DefaultUser(FastHttpUser):
    """Requests each configured path in turn; non-2xx/3xx and connection errors are failures."""

    paths = _paths()
    wait_time = _wait_time()

    def on_start(self) -> None:
        self._next_path: Iterator[str] = itertools.cycle(self.paths)

    @task
    def request_next_path(self) -> None:
        # FastHttpSession already marks statuses >= 400 and connection errors as failures.
        self.client.get(next(self._next_path))
