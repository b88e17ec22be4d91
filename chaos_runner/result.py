"""RunResult: what a run found, as a versioned, documented model (result.json).

Built by `analysis` from the journal alone; read by reporters and the CLI. Times are seconds
from the start of the run unless a field says otherwise; latencies are milliseconds. The JSON
Schema is `chaos-runner schema --result` (docs/result.schema.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION: Final = "chaos-runner/result/v1"

Status = Literal["passed", "failed", "not_steady", "invalid", "aborted", "error", "dry_run"]

EXIT_CODES: Mapping[Status, int] = MappingProxyType(
    {
        "passed": 0,
        "dry_run": 0,
        "failed": 1,
        "invalid": 2,
        "not_steady": 2,
        "error": 2,
        "aborted": 3,
    }
)
"""0 every SLO met; 1 an SLO failed; 2 the run could not be carried out; 3 aborted."""


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stats(_Result):
    """Counts and latency percentiles of load requests or probe samples over a span."""

    total: int = 0
    failures: int = 0
    success_ratio: float | None = None
    per_second: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: dict[str, int] = Field(default_factory=dict)
    """Most frequent error texts with their counts."""


class PhaseSummary(_Result):
    name: str
    start: float
    end: float
    load: Stats | None = None
    probes: dict[str, Stats] = Field(default_factory=dict)


class FaultOutcome(_Result):
    name: str
    kind: str
    members: list[str]
    injected_at: float | None
    """Seconds from run start to the first successful injection; None if never injected."""
    ended_at: float | None
    """The fault's end: its revert, or its injection for a kill-like fault."""
    reversible: bool
    reverted: bool
    errors: list[str] = Field(default_factory=list)
    time_to_impact: float | None = None
    """From injection to the first failing steady sample; None when no impact was seen."""
    recovered_at: float | None = None
    recovery_time: float | None = None
    """From the fault's end to the start of the first stretch in which every steady probe
    passed for `hold` seconds; None when that never happened (recovery failed)."""
    resolution: float
    """The accuracy of the two times above: the largest steady-probe interval."""
    availability: Stats | None = None
    """Load during the impact window: injection to recovery (or to the run's end when the
    steady state never came back)."""


class ErrorBudget(_Result):
    allowed: float
    """The error ratio the objective allows, 1 - objective."""
    consumed: float | None
    """Share of the allowed error ratio used over the SLO's phase (1.0 = all of it)."""
    window: float | None = None
    """The SLO's compliance window in seconds, when it states one."""
    window_consumed: float | None = None
    """Share of the whole window's budget this run consumed (bad time / budgeted time)."""
    burn_rates: dict[str, float] = Field(default_factory=dict)
    """Per fault: error ratio in its impact window divided by the allowed ratio."""


class SloVerdict(_Result):
    name: str
    kind: str
    passed: bool
    observed: float | None
    target: float
    unit: Literal["percent", "ms", "s"]
    comparison: Literal[">=", "<="]
    phase: str | None = None
    source: str | None = None
    detail: str = ""
    budget: ErrorBudget | None = None


class TimelineEvent(_Result):
    """Something an engine or the local supervisor saw (a container died, started...)."""

    t: float
    source: str
    action: str
    member: str | None = None
    detail: str = ""


class RunResult(_Result):
    schema_version: Literal["chaos-runner/result/v1"] = RESULT_SCHEMA_VERSION
    run_id: str
    experiment: str
    source: str | None = None
    status: Status
    exit_code: int
    reason: str = ""
    started_wall: float | None = None
    """Wall-clock time of the run's start, seconds since the epoch (the one absolute time)."""
    duration: float = 0.0
    hold: float | None = None
    steady_state_restored: bool | None = None
    recovered_at: float | None = None
    phases: list[PhaseSummary] = Field(default_factory=list)
    faults: list[FaultOutcome] = Field(default_factory=list)
    slos: list[SloVerdict] = Field(default_factory=list)
    events: list[TimelineEvent] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    journal: str | None = None
