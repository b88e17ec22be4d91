"""Time as the engine sees it, passed in so that scheduling and recovery tests are exact.

`SystemClock` reads the monotonic and wall clocks (CLOCK_MONOTONIC is shared by every process
on the machine, so a Locust worker's stamps compare with the runner's). `FakeClock` only moves
when told to, or when something sleeps on it.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Sleep until monotonic() >= deadline; return False early if `stop` is set."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if stop is None:
                time.sleep(remaining)
            elif stop.wait(remaining):
                return False


class FakeClock:
    """A clock that advances only by `advance` or by sleeping on it (single-threaded tests)."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        self._now = max(self._now, deadline)
        return True
