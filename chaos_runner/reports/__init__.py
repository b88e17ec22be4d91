"""Reporters: each turns a RunResult into one file in the run's directory (json, junit, md).

They read the result only, never the journal or a system, and write atomically so that a
CI job or a person never reads half a report. What they share lives here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["format_measure", "write_atomic"]

MISSING = "—"
"""How every report shows a value that was not measured."""


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file in the same directory.

    os.replace makes the new file appear whole or not at all. The file is created with
    os.open and mode 0o666 so that the umask applies, as for any ordinary file (a
    tempfile.mkstemp file would stay 0o600 and unreadable to a CI artifact uploader).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def format_measure(value: float | None, unit: str) -> str:
    """An SLO's observed value or target in its unit, the same in every report."""
    if value is None:
        return MISSING
    if unit == "percent":
        return f"{value:.3f}%"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:g} {unit}"
