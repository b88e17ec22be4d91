"""The code's own gates, as tests: ruff (lint and format), mypy --strict, import-linter.

They run with the rest of the suite so that the one test command is the whole of CI, and a
layer broken or an SDK imported in the wrong place fails as plainly as a broken fault.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = {
    "ruff check": [
        sys.executable,
        "-m",
        "ruff",
        "check",
        "chaos_runner",
        "tests",
        "bench",
        "probes",
    ],
    "ruff format": [
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--check",
        "chaos_runner",
        "tests",
        "bench",
        "probes",
    ],
    "mypy --strict": [sys.executable, "-m", "mypy", "--strict", "chaos_runner"],
    "import-linter": ["lint-imports"],
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_code_passes(name: str) -> None:
    command = CHECKS[name]
    if command[0] == "lint-imports" and shutil.which("lint-imports") is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
