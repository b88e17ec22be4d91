"""Typed hooks through which a run tells the outside world what it is doing.

The CLI's live progress and the pytest plugin implement `RunListener`; the engine calls every
hook from its own thread and never waits on a listener for long. A listener must not raise
(what it raises is logged in the journal and ignored) and must never change the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chaos_runner.plugins import Handle, Member


@dataclass(frozen=True)
class PlannedFault:
    """One fault as the run will carry it out: where, when (seconds from baseline start)."""

    name: str
    kind: str
    members: tuple[Member, ...]
    at: float
    duration: float
    reversible: bool


@dataclass(frozen=True)
class ProbeState:
    ok: bool | None
    latency_ms: float | None
    error: str | None
    recent_ok_ratio: float | None


@dataclass(frozen=True)
class Snapshot:
    """What a live view shows: polled by the listener, never pushed."""

    run_id: str
    phase: str
    elapsed: float
    requests_per_second: float | None
    error_ratio: float | None
    p95_ms: float | None
    probes: dict[str, ProbeState] = field(default_factory=dict)
    active_faults: tuple[str, ...] = ()


class RunListener:
    """Base listener: every hook does nothing. Subclass and override what you need."""

    def run_started(self, run_id: str, directory: str, snapshot: Callable[[], Snapshot]) -> None:
        """The run has a journal; nothing has been started yet. `snapshot` may be polled
        from any thread, as often as a live view needs, until the run returns."""

    def plan_ready(self, plan: list[PlannedFault], target: dict[str, object]) -> None:
        """Targets are resolved and every fault's members chosen; nothing is injected yet."""

    def phase_started(self, name: str) -> None:
        """A phase of the timeline begins (preflight, baseline, faults, recovery, teardown)."""

    def fault_injected(self, handle: Handle, error: str | None) -> None:
        """One handle was injected (error is None) or failed to be."""

    def fault_reverted(self, handle: Handle, error: str | None, reason: str) -> None:
        """One handle was reverted (error is None) or failed to be; reason says why now."""

    def steady_state_restored(self, seconds_after_last_fault: float) -> None:
        """Every steady probe has held for `hold` seconds after the last fault's end."""

    def message(self, text: str, *, warning: bool = False) -> None:
        """Something a person watching the run should read."""
