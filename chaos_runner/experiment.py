"""The experiment model: frozen pydantic v2 models of what a user declares.

An experiment says what system to act on (target), how to load it, which probes define its
steady state, which faults to inject when, and which SLOs decide the verdict. Models here are
never mutated by the engine; plugin parameters (`params`) are validated by the plugin's own
model at load time (see `loader`). This module imports no plugin and touches no system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> object:
    """'500ms', '30s', '2m', '1h', '28d' or a number of seconds -> seconds (float).

    Anything else is passed through for pydantic to reject with its own message.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '500ms', '30s' or '2m', not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative (got {value})")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"expected a duration such as '500ms', '30s', '2m', '1h' or '28d', got {value!r}"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(
        ge=0,
        json_schema_extra={
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"},
            ]
        },
    ),
]
"""Seconds, written as a number or as '500ms', '30s', '2m', '1h', '28d'."""

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class Model(BaseModel):
    """Base of every experiment model: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Metadata(Model):
    name: Name
    description: str = ""
    owner: str | None = None
    tags: tuple[str, ...] = ()


class TargetSpec(Model):
    """The system faults act on; `params` are validated by the target driver of `kind`."""

    kind: str = "local"
    params: dict[str, Any] = Field(default_factory=dict)


class Selector(Model):
    """Which members of the target a fault acts on.

    Filters (names, labels, service, project, namespace) narrow the candidates; a driver
    rejects filters it does not understand. Then `count` or `percent` of the candidates are
    chosen at random with `seed`, so that a rehearsal can be replayed. Neither: one member.
    """

    names: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    service: str | None = None
    project: str | None = None
    namespace: str | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    percent: Annotated[float, Field(gt=0, le=100)] | None = None
    all: bool = False
    seed: int | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> Selector:
        given = [n for n in ("count", "percent") if getattr(self, n) is not None]
        if self.all:
            given.append("all")
        if len(given) > 1:
            raise ValueError(f"give only one of count, percent and all (got {', '.join(given)})")
        return self


class FaultSpec(Model):
    """One fault: a kind, where it acts, when (offset from the start of the faults phase)
    and for how long. A kill-like fault has no revert; its `duration` is how long the faults
    phase watches it before recovery is awaited."""

    name: Name | None = None
    kind: str
    selector: Selector = Field(default_factory=Selector)
    offset: Duration = 0.0
    duration: Duration = 0.0
    params: dict[str, Any] = Field(default_factory=dict)


class ProbeSpec(Model):
    """A steady-state probe, sampled continuously at `interval` through every phase."""

    name: Name
    kind: str
    interval: Annotated[Duration, Field(ge=0.01)] = 1.0
    timeout: Annotated[Duration, Field(gt=0)] = 1.0
    steady: bool = True
    """Part of the steady-state hypothesis: preflight and recovery wait on it."""
    params: dict[str, Any] = Field(default_factory=dict)


class LoadSpec(Model):
    """Locust load for the whole run (baseline, faults, recovery)."""

    enabled: bool = True
    locustfile: str | None = None
    """Path relative to the experiment file; None uses the built-in default user."""
    host: str | None = None
    """Base URL of the load; defaults to ${target.url}."""
    users: Annotated[int, Field(ge=1, le=100_000)] = 10
    spawn_rate: Annotated[float, Field(gt=0)] = 50.0
    user_classes: tuple[str, ...] = ()
    rate_per_user: Annotated[float, Field(gt=0)] | None = None
    """Requests per second per user for the built-in user (constant throughput)."""
    paths: tuple[str, ...] = ("/",)
    """Paths the built-in user requests, in turn."""
    window: Annotated[Duration, Field(ge=0.1, le=1.0)] = 0.5
    """Length of a statistics window; percentiles are computed from each window's own samples."""
    max_requests: Annotated[int, Field(ge=1)] | None = None
    """Hard bound on the number of requests; the load stops by itself when it is reached."""


class Phases(Model):
    baseline: Duration = 5.0
    hold: Annotated[Duration, Field(gt=0)] = 2.0
    """How long every steady probe must pass for the system to count as recovered."""
    recovery_deadline: Annotated[Duration, Field(gt=0)] = 60.0
    """From the end of the faults phase; past it, recovery has failed."""
    preflight_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    """How long preflight waits for every probe to pass once before refusing to start."""


class Safety(Model):
    dry_run: bool = False
    max_blast_radius: Annotated[float, Field(gt=0, le=100)] = 100.0
    """Largest share (percent) of a target's members any one fault may select."""
    abort_error_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    """Abort the run (and revert everything) when the load's error ratio over
    `abort_window` exceeds this: a stop condition for rehearsals on shared systems."""
    abort_window: Annotated[Duration, Field(gt=0)] = 5.0


PhaseName = Annotated[str, Field(pattern=r"^(run|baseline|faults|recovery|fault:.+)$")]
Source = Annotated[str, Field(pattern=r"^(load|probes|probe:.+)$")]


class _SloBase(Model):
    name: Name
    description: str = ""


class AvailabilitySLO(_SloBase):
    """Success ratio of load requests or probe samples over a phase, at least `objective` %."""

    kind: Literal["availability"]
    source: Source = "load"
    phase: PhaseName = "run"
    objective: Annotated[float, Field(gt=0, lt=100)]
    window: Duration | None = None
    """The SLO's compliance window (e.g. 28d): the report says what share of its error
    budget this run consumed, and the burn rate during each fault."""


class LatencySLO(_SloBase):
    """A latency percentile of load requests or probe samples over a phase, at most `max`."""

    kind: Literal["latency"]
    source: Source = "load"
    phase: PhaseName = "run"
    percentile: Annotated[float, Field(gt=0, lt=100)] = 99.0
    max: Annotated[Duration, Field(gt=0)]


class RecoverySLO(_SloBase):
    """Recovery time of every fault (or of one), at most `max`."""

    kind: Literal["recovery_time"]
    fault: str | None = None
    max: Annotated[Duration, Field(gt=0)]


class DetectionSLO(_SloBase):
    """Time from injection to the first failing sample of `probe` (a detector), at most `max`."""

    kind: Literal["time_to_detect"]
    probe: str
    fault: str | None = None
    max: Annotated[Duration, Field(gt=0)]


SLO = Annotated[
    AvailabilitySLO | LatencySLO | RecoverySLO | DetectionSLO, Field(discriminator="kind")
]


class Experiment(Model):
    """A whole experiment, as declared in a YAML or JSON file."""

    version: Literal[1] = 1
    metadata: Metadata
    target: TargetSpec = Field(default_factory=TargetSpec)
    load: LoadSpec | None = None
    probes: Annotated[tuple[ProbeSpec, ...], Field(min_length=1)]
    faults: tuple[FaultSpec, ...] = ()
    slos: tuple[SLO, ...] = ()
    phases: Phases = Field(default_factory=Phases)
    safety: Safety = Field(default_factory=Safety)

    @model_validator(mode="after")
    def _cross_references(self) -> Experiment:
        _unique("probes", [p.name for p in self.probes])
        _unique("faults", self.fault_names())
        _unique("slos", [s.name for s in self.slos])
        probes = {p.name for p in self.probes}
        faults = set(self.fault_names())
        if not any(p.steady for p in self.probes):
            raise ValueError("probes: at least one probe must be steady (steady: true)")
        for slo in self.slos:
            refs: list[tuple[str, set[str], str]] = []
            if isinstance(slo, AvailabilitySLO | LatencySLO):
                if slo.source.startswith("probe:"):
                    refs.append((slo.source[6:], probes, "probe"))
                if slo.source == "load" and self.load is None:
                    raise ValueError(f"slos.{slo.name}: source 'load' needs a load section")
                if slo.phase.startswith("fault:"):
                    refs.append((slo.phase[6:], faults, "fault"))
            if isinstance(slo, RecoverySLO | DetectionSLO) and slo.fault is not None:
                refs.append((slo.fault, faults, "fault"))
            if isinstance(slo, DetectionSLO):
                refs.append((slo.probe, probes, "probe"))
            for ref, known, what in refs:
                if ref not in known:
                    raise ValueError(
                        f"slos.{slo.name}: no {what} named {ref!r} "
                        f"(known: {', '.join(sorted(known)) or 'none'})"
                    )
        return self

    def fault_names(self) -> list[str]:
        """Each fault's name: its own, or `<kind>-<index>` when it has none."""
        return [f.name or f"{f.kind}-{i}" for i, f in enumerate(self.faults)]

    def faults_phase_length(self) -> float:
        return max((f.offset + f.duration for f in self.faults), default=0.0)


def _unique(section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{section}: the name {name!r} is used twice; names must be unique")
        seen.add(name)


_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


def substitute(value: Any, variables: Mapping[str, str]) -> Any:
    """Replace ${name} in every string of a JSON-like value; an unknown name is an error."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in variables:
                known = ", ".join(sorted(variables)) or "none"
                raise KeyError(f"unknown variable ${{{key}}} (known: {known})")
            return variables[key]

        return _VARIABLE.sub(one, value)
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(substitute(v, variables) for v in value)
    return value
