"""The argv of a `chaos-runner run` in a subprocess, as the Docker tests start it."""

from __future__ import annotations

import sys
from pathlib import Path


def run_argv(path: Path, reports: Path, *options: str) -> list[str]:
    """`python -m chaos_runner run PATH --quiet --reports-dir REPORTS [OPTIONS]`."""
    return [
        *(sys.executable, "-m", "chaos_runner", "run", str(path)),
        *("--quiet", "--reports-dir", str(reports)),
        *options,
    ]
