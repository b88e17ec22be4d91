"""The `command` probe: run a program (argv, never through a shell) and judge its exit.

The program runs in its own process group so that, on timeout, it is killed with everything
it started. A sample never raises and never leaves a process behind; the exit code is the
sample's value. Paths (cwd) are relative to the experiment file's directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaos_runner.experiment import format_duration
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext

KILL_GRACE = 1.0
"""Seconds to wait for a killed process group's pipes to close before giving up on them."""


class CommandParams(BaseModel):
    """The program to run and the exit (and output) that count as steady."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...] = Field(
        min_length=1,
        description="Program and arguments as a list, e.g. ['pg_isready', '-h', 'db']; "
        "never run through a shell.",
    )
    expect_exit: tuple[int, ...] = Field(
        default=(0,), min_length=1, description="Exit codes that pass (one or a list)."
    )
    stdout_contains: str | None = Field(
        default=None, description="Text the program's standard output must contain."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Variables added to the runner's environment."
    )
    cwd: str | None = Field(
        default=None,
        description="Working directory, relative to the experiment file (default: its folder).",
    )

    @field_validator("argv", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            if any(c.isspace() for c in value.strip()):
                raise ValueError(
                    "argv must be a list of arguments, e.g. "
                    f"{value.split()!r}, not one string: commands run without a shell, "
                    "so quoting, pipes and globs are not interpreted "
                    "(for those, write ['sh', '-c', '...'] explicitly)"
                )
            return (value,)
        return value

    @field_validator("expect_exit", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, int) else value


class CommandCheck:
    """One bound command probe; every call starts its own process."""

    def __init__(self, params: CommandParams, program: str, cwd: Path) -> None:
        self.params = params
        self.argv = [program, *params.argv[1:]]
        self.cwd = cwd
        self.env = {**os.environ, **params.env} if params.env else None

    def __call__(self, timeout: float) -> Outcome:
        try:
            process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: killed whole on timeout
            )
        except OSError as exc:
            return Outcome(ok=False, error=f"cannot start {self.argv[0]!r}: {exc.strerror}")
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            return Outcome(ok=False, error=f"timeout after {format_duration(timeout)} (killed)")
        except BaseException:
            self._kill(process)
            raise
        code = process.returncode
        if code not in self.params.expect_exit:
            expected = ", ".join(str(c) for c in self.params.expect_exit)
            detail = _last_line(stderr) or _last_line(stdout)
            error = f"exit {code} (expected {expected})" + (f": {detail}" if detail else "")
            return Outcome(ok=False, error=error, value=code)
        wanted = self.params.stdout_contains
        if wanted is not None and wanted not in stdout.decode("utf-8", "replace"):
            return Outcome(ok=False, error=f"stdout does not contain {wanted!r}", value=code)
        return Outcome(ok=True, value=code)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            process.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            # Something outside the group still holds the pipes; reap the child and move on.
            process.kill()
            process.wait()

    def close(self) -> None:
        """Nothing outlives a sample."""


def _last_line(output: bytes) -> str:
    lines = output.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return ""
    line = lines[-1].strip()
    return line if len(line) <= 120 else line[:117] + "..."


class CommandProbe:
    """Probe kind `command`: a program must exit as expected (and print what is expected)."""

    kind = "command"
    Params = CommandParams

    def bind(self, params: CommandParams, context: ProbeContext) -> ProbeCheck:
        cwd = context.base_dir / params.cwd if params.cwd else context.base_dir
        if not cwd.is_dir():
            raise ValueError(
                f"cwd: no such directory {str(cwd)!r} (paths are relative to the experiment file)"
            )
        program = params.argv[0]
        if os.sep in program:
            path = cwd / program
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise ValueError(
                    f"argv[0]: {str(path)!r} is not an executable file "
                    "(relative paths start at cwd)"
                )
            program = str(path)
        else:
            found = shutil.which(program, path=params.env.get("PATH", os.environ.get("PATH")))
            if found is None:
                raise ValueError(f"argv[0]: no program {program!r} on the PATH")
            program = found
        return CommandCheck(params, program, cwd)
