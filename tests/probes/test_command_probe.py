"""The command probe with real programs: true, false, sleep, sh."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chaos_runner.plugins import Outcome, ProbeContext
from chaos_runner.probes.command import CommandParams, CommandProbe


def sample(context: ProbeContext, timeout: float = 5.0, **params: Any) -> Outcome:
    check = CommandProbe().bind(CommandParams.model_validate(params), context)
    try:
        return check(timeout)
    finally:
        check.close()


def test_exit_zero_passes_and_other_codes_fail(context: ProbeContext) -> None:
    assert sample(context, argv=["true"]) == Outcome(ok=True, value=0)
    assert sample(context, argv=["false"]) == Outcome(
        ok=False, error="exit 1 (expected 0)", value=1
    )
    assert sample(context, argv=["false"], expect_exit=1) == Outcome(ok=True, value=1)
    assert sample(context, argv=["false"], expect_exit=[0, 1]).ok


def test_a_failure_quotes_the_last_line_of_stderr(context: ProbeContext) -> None:
    outcome = sample(context, argv=["sh", "-c", "echo starting; echo 'db: refused' >&2; exit 3"])
    assert outcome == Outcome(ok=False, error="exit 3 (expected 0): db: refused", value=3)


def test_stdout_must_contain_what_is_asked(context: ProbeContext) -> None:
    assert sample(context, argv=["echo", "accepting connections"], stdout_contains="accepting").ok
    outcome = sample(context, argv=["echo", "no response"], stdout_contains="accepting")
    assert outcome == Outcome(ok=False, error="stdout does not contain 'accepting'", value=0)


def test_a_hung_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    context = ProbeContext(base_dir=tmp_path, variables={})
    started = time.monotonic()
    outcome = sample(
        context, timeout=0.5, argv=["sh", "-c", "sleep 30 & echo $! > child.pid; wait"]
    )
    assert outcome == Outcome(ok=False, error="timeout after 500ms (killed)")
    assert time.monotonic() - started < 3.0
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5.0
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the command's child outlived the timeout"


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_cwd_and_env(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    script = tmp_path / "checks" / "ready.sh"
    script.write_text('#!/bin/sh\ntest "$MODE" = ready && pwd\n')
    script.chmod(0o755)
    context = ProbeContext(base_dir=tmp_path, variables={})
    outcome = sample(
        context,
        argv=["./ready.sh"],
        cwd="checks",
        env={"MODE": "ready"},
        stdout_contains=str(tmp_path / "checks"),
    )
    assert outcome == Outcome(ok=True, value=0)
    assert not sample(context, argv=["./ready.sh"], cwd="checks", env={"MODE": "down"}).ok


def test_one_string_with_spaces_is_refused_with_a_hint() -> None:
    with pytest.raises(ValidationError) as caught:
        CommandParams.model_validate({"argv": "curl -fsS http://localhost/health"})
    message = str(caught.value)
    assert "not one string" in message
    assert "['curl', '-fsS', 'http://localhost/health']" in message
    assert CommandParams.model_validate({"argv": "true"}).argv == ("true",)


def test_a_missing_program_or_directory_is_a_bind_error(context: ProbeContext) -> None:
    with pytest.raises(ValueError, match="no program 'no-such-program-here' on the PATH"):
        CommandProbe().bind(CommandParams(argv=("no-such-program-here",)), context)
    with pytest.raises(ValueError, match="is not an executable file"):
        CommandProbe().bind(CommandParams(argv=("./missing.sh",)), context)
    with pytest.raises(ValueError, match="cwd: no such directory"):
        CommandProbe().bind(CommandParams(argv=("true",), cwd="nowhere"), context)


def test_no_shell_is_involved(tmp_path: Path) -> None:
    context = ProbeContext(base_dir=tmp_path, variables={})
    outcome = sample(context, argv=["echo", "$HOME; touch pwned"], stdout_contains="$HOME")
    assert outcome.ok
    assert not (tmp_path / "pwned").exists()
    assert os.listdir(tmp_path) == []
