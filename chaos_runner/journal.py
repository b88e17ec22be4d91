"""The journal: the append-only record of a run, as JSON lines flushed as they are written.

Reports are a pure function of the journal. Every line has `type`, `t` (monotonic seconds)
and `w` (wall-clock seconds). A fault's handle is written before the fault is made, so a
crashed run can be reverted from its journal alone. Reading tolerates a torn last line.

Record types: run, phase, target, selection, handle, inject, revert, sample, load, event,
abort, error, end (see docs/journal.md for their fields).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from chaos_runner.clock import Clock, SystemClock

JOURNAL_NAME = "journal.jsonl"
JOURNAL_VERSION = 1


class Journal:
    """Thread-safe writer. `durable` records (phases, handles, injections) are also fsynced."""

    DURABLE = frozenset({"run", "phase", "selection", "handle", "inject", "revert", "abort", "end"})

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"type": type}
        record["t"] = fields.pop("t") if "t" in fields else self.clock.monotonic()
        record["w"] = fields.pop("w") if "w" in fields else self.clock.wall()
        record.update(fields)
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._file is None:
                return record
            self._file.write(line)
            self._file.flush()
            if type in self.DURABLE:
                os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record; a torn last line (the runner died mid-write) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_journal(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        path = path / JOURNAL_NAME
    return list(iter_journal(path))
