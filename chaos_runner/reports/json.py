"""The `json` reporter: result.json, the RunResult exactly as its schema defines it.

The machine-readable record of a run; `RunResult.model_validate_json` reads it back whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from chaos_runner.reports import write_atomic
from chaos_runner.result import RunResult


class JsonReporter:
    """Writes result.json (indented, one trailing newline)."""

    name: ClassVar[str] = "json"
    filename: ClassVar[str] = "result.json"

    def write(self, result: RunResult, directory: Path) -> Path:
        return write_atomic(directory / self.filename, result.model_dump_json(indent=2) + "\n")
