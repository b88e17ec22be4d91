"""Process inspection for the local target tests, named apart from conftest.py so that test
modules can import it without clashing with the other test folders' conftest modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from chaos_runner.targets.local.driver import LocalTarget

StartLocal = Callable[..., LocalTarget]


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
