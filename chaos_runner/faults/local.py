"""Process faults on the local target's replicas: kill (any signal) and pause (SIGSTOP).

A handle holds the replica's pid and its start time (/proc/<pid>/stat, field 22), and every
signal is sent only if the pid still has that start time, so a reused pid is never hit. A
revert works from the handle alone (in another process after a crash), is idempotent, and is
a no-op when the process is gone. Kill has no revert: the supervisor restarts the replica.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import FaultSpec
from chaos_runner.plugins import FaultScope, Handle, Member, Target
from chaos_runner.targets.local.driver import LocalTarget


def signal_name(value: str | int) -> str:
    """'KILL', 'sigterm', 9 or '9' -> 'SIGKILL'; an unknown signal is a ValueError."""
    text = str(value).strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text)).name
        except ValueError:
            raise ValueError(f"unknown signal number {text}") from None
    name = text if text.startswith("SIG") else f"SIG{text}"
    if name not in signal.Signals.__members__:
        raise ValueError(f"unknown signal {value!r} (e.g. SIGKILL, SIGTERM, 9)")
    return name


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state, ppid, ...); None if there is no process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such process."""
    fields = _stat(pid)
    return int(fields[22 - 3]) if fields else None


def await_stopped(pid: int, stopped: bool, timeout: float = 1.0) -> None:
    """Wait until the process is (or is no longer) stopped: signals are delivered
    asynchronously, and a pause counts from the moment the replica is really frozen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = _stat(pid)
        if fields is None or (fields[0] in ("T", "t")) == stopped:
            return
        time.sleep(0.001)


def signal_process(pid: int, started: int, signum: int) -> bool:
    """Send `signum` to `pid` if it is still the process that started at `started`.

    False when that process is gone (exited, or its pid now belongs to another process).
    """
    if start_time(pid) != started:
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


class KillParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    signal: str = "SIGKILL"
    """The signal to send: a name (SIGKILL, TERM) or a number (9). Any signal will do,
    e.g. SIGUSR1 for a service that reacts to it."""

    @field_validator("signal", mode="before")
    @classmethod
    def _known(cls, value: object) -> str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("expected a signal name such as SIGKILL, or its number")
        return signal_name(value)


class PauseParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def local_target(target: Target) -> LocalTarget:
    if not isinstance(target, LocalTarget):
        raise PreflightError(
            f"a local replica fault needs a local target, not {getattr(target, 'kind', '?')!r}"
        )
    return target


class _ReplicaFault:
    """One handle per replica, holding its pid and start time."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]] = frozenset({"local"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool]

    def check(self, params: Any, target: Target) -> None:
        local_target(target)

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        handles = []
        for member in members:
            pid = int(member.attrs["pid"])
            started = start_time(pid)
            if started is None:
                raise FaultError(f"{name}: {member.name} (pid {pid}) is not running")
            data = {"pid": pid, "start_time": started, "port": member.attrs.get("port")}
            handles.append(
                Handle(f"{name}-{secrets.token_hex(4)}", name, self.kind, member.id, data)
            )
        return handles

    def send(self, handle: Handle, signum: int, verb: str) -> None:
        pid, started = int(handle.data["pid"]), int(handle.data["start_time"])
        try:
            sent = signal_process(pid, started, signum)
        except PermissionError as exc:
            raise FaultError(f"{handle.fault}: cannot {verb} {handle.member}: {exc}") from exc
        if not sent:
            raise FaultError(
                f"{handle.fault}: cannot {verb} {handle.member}: pid {pid} is gone "
                "(it died or was restarted since the fault was planned)"
            )

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        raise NotImplementedError

    def revert(self, handle: Handle, target: Target) -> None:
        raise NotImplementedError


class KillReplica(_ReplicaFault):
    """Sends a signal (SIGKILL by default) to a replica; the supervisor restarts it after
    the target's restart_delay. Nothing to revert."""

    kind: ClassVar[str] = "kill"
    Params: ClassVar[type[BaseModel]] = KillParams
    reversible: ClassVar[bool] = False

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        self.send(handle, signal.Signals[params.signal], f"send {params.signal} to")

    def revert(self, handle: Handle, target: Target) -> None:
        """Nothing to undo: the supervisor heals it, as an orchestrator would."""


class PauseReplica(_ReplicaFault):
    """Freezes a replica (SIGSTOP): its sockets stay open, so connections to it hang rather
    than fail. The revert resumes it (SIGCONT)."""

    kind: ClassVar[str] = "pause"
    Params: ClassVar[type[BaseModel]] = PauseParams
    reversible: ClassVar[bool] = True

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        self.send(handle, signal.SIGSTOP, "pause")
        await_stopped(int(handle.data["pid"]), True)

    def revert(self, handle: Handle, target: Target) -> None:
        """SIGCONT, from the handle alone; a process that is gone needs nothing."""
        pid, started = int(handle.data["pid"]), int(handle.data["start_time"])
        try:
            resumed = signal_process(pid, started, signal.SIGCONT)
        except PermissionError as exc:
            raise FaultError(f"{handle.fault}: cannot resume {handle.member}: {exc}") from exc
        if resumed:
            await_stopped(pid, False)
