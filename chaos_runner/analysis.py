"""Analysis: the journal of a run in, its RunResult out. A pure function.

It never touches a process, a socket or the clock: recovery times, success ratios, latency
percentiles and SLO verdicts are computed from journal records alone, so `chaos-runner
report` can regenerate any report, and tests can feed it a handful of hand-made records.
Times in the result are seconds from the run's first record; DESIGN.md defines the terms.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chaos_runner.experiment import (
    AvailabilitySLO,
    DetectionSLO,
    Experiment,
    LatencySLO,
    RecoverySLO,
)
from chaos_runner.result import (
    EXIT_CODES,
    ErrorBudget,
    FaultOutcome,
    PhaseSummary,
    RunResult,
    SloVerdict,
    Stats,
    Status,
    TimelineEvent,
)

TOP_ERRORS = 5
"""How many distinct error texts a Stats keeps."""

Sample = tuple[str, float, bool]
"""(probe, start, ok): what recovery needs of a probe sample."""


def recovery_start(
    samples: Iterable[Sample], probes: Sequence[str], *, after: float, hold: float
) -> float | None:
    """Start of the first stretch, from `after` on, in which every probe in `probes` passes
    for `hold` seconds; None while there is no such stretch (yet).

    Only samples started at or after `after` count: a probe's state is unknown until its first
    sample after the fault's end. The stretch starts when the last probe to pass began its
    current run of passing samples, and holds once a sample started `hold` seconds later
    still sees every probe passing. Its accuracy is the largest interval among the probes.
    """
    wanted = set(probes)
    if not wanted:
        return None
    run_start: dict[str, float | None] = {}
    for probe, start, ok in sorted(
        (s for s in samples if s[1] >= after and s[0] in wanted), key=lambda s: s[1]
    ):
        if not ok:
            run_start[probe] = None
            continue
        if run_start.get(probe) is None:
            run_start[probe] = start
        if len(run_start) < len(wanted) or any(v is None for v in run_start.values()):
            continue
        stretch = max(v for v in run_start.values() if v is not None)
        if start >= stretch + hold:
            return stretch
    return None


# --------------------------------------------------------------------- the journal, parsed


@dataclass
class _ProbeSample:
    probe: str
    t: float
    ok: bool
    ms: float | None
    err: str | None


@dataclass
class _LoadWindow:
    t0: float
    t1: float
    requests: int
    failures: int
    max_ms: float | None
    hist: dict[str, int]
    errors: dict[str, int]

    @property
    def middle(self) -> float:
        return (self.t0 + self.t1) / 2


@dataclass
class _FaultRecords:
    name: str
    kind: str
    members: list[str]
    reversible: bool
    handles: list[str] = field(default_factory=list)
    injects: list[tuple[float, bool, str | None]] = field(default_factory=list)
    reverts: list[tuple[float, bool, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Journal:
    """The records of one run, sorted by kind, with times made relative to its start."""

    origin: float = 0.0
    run: dict[str, Any] = field(default_factory=dict)
    experiment: Experiment | None = None
    experiment_name: str = "unknown"
    phases: list[tuple[str, float]] = field(default_factory=list)
    samples: list[_ProbeSample] = field(default_factory=list)
    windows: list[_LoadWindow] = field(default_factory=list)
    faults: dict[str, _FaultRecords] = field(default_factory=dict)
    handle_fault: dict[str, str] = field(default_factory=dict)
    events: list[TimelineEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    end: dict[str, Any] | None = None
    last_t: float = 0.0

    def span(self, phase: str) -> tuple[float, float] | None:
        """[start, end) of a timeline phase; `run` is baseline start to teardown start."""
        starts = {name: t for name, t in self.phases}
        if phase == "run":
            begin = starts.get("baseline")
            if begin is None:
                return None
            return begin, starts.get("teardown", self.last_t)
        for i, (name, t) in enumerate(self.phases):
            if name == phase:
                following = self.phases[i + 1][1] if i + 1 < len(self.phases) else self.last_t
                return t, following
        return None


def _parse(records: Iterable[Mapping[str, Any]]) -> _Journal:
    journal = _Journal()
    records = list(records)
    if records:
        journal.origin = float(records[0].get("t", 0.0))
    origin = journal.origin

    def rel(value: Any) -> float:
        return float(value) - origin

    for record in records:
        kind = record.get("type")
        t = rel(record.get("t", origin))
        journal.last_t = max(journal.last_t, t)
        if kind == "run":
            journal.run = dict(record)
            raw = record.get("experiment")
            if isinstance(raw, Mapping):
                name = raw.get("metadata", {}).get("name")
                journal.experiment_name = str(name) if name else journal.experiment_name
                try:
                    journal.experiment = Experiment.model_validate(raw)
                except ValidationError as exc:
                    journal.errors.append(f"the journal's experiment does not validate: {exc}")
        elif kind == "phase":
            journal.phases.append((str(record["name"]), t))
        elif kind == "sample":
            journal.samples.append(
                _ProbeSample(
                    str(record["probe"]),
                    t,
                    bool(record["ok"]),
                    None if record.get("ms") is None else float(record["ms"]),
                    record.get("err"),
                )
            )
        elif kind == "load":
            journal.windows.append(
                _LoadWindow(
                    rel(record.get("t0", record.get("t", origin))),
                    rel(record.get("t1", record.get("t", origin))),
                    int(record.get("requests", 0)),
                    int(record.get("failures", 0)),
                    None if record.get("max") is None else float(record["max"]),
                    dict(record.get("hist") or {}),
                    dict(record.get("errors") or {}),
                )
            )
        elif kind == "selection":
            name = str(record["fault"])
            journal.faults[name] = _FaultRecords(
                name,
                str(record.get("kind", "")),
                [str(m.get("name", m.get("id"))) for m in record.get("members", [])],
                bool(record.get("reversible", True)),
            )
        elif kind == "handle":
            handle = record["handle"]
            fault = journal.faults.get(str(handle["fault"]))
            if fault is not None:
                fault.handles.append(str(handle["id"]))
                journal.handle_fault[str(handle["id"])] = fault.name
        elif kind in ("inject", "revert"):
            owner = journal.handle_fault.get(str(record.get("handle")))
            if owner is None:
                continue
            fault = journal.faults[owner]
            entry = (t, bool(record.get("ok")), record.get("error"))
            (fault.injects if kind == "inject" else fault.reverts).append(entry)
            if record.get("error"):
                fault.errors.append(f"{kind}: {record['error']}")
        elif kind == "event":
            journal.events.append(
                TimelineEvent(
                    t=t,
                    source=str(record.get("source", "")),
                    action=str(record.get("action", "")),
                    member=None if record.get("member") is None else str(record["member"]),
                    detail=str(record.get("detail") or ""),
                )
            )
        elif kind == "error":
            message = str(record.get("message", ""))
            journal.errors.append(message)
            for fault in journal.faults.values():
                if message.startswith(f"fault {fault.name}:"):
                    fault.errors.append(message.split(": ", 1)[1])
        elif kind == "abort":
            journal.aborts.append(str(record.get("reason", "")))
        elif kind == "end":
            journal.end = dict(record)
    return journal


# --------------------------------------------------------------------- statistics


def _nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _hist_percentile(hist: Mapping[float, int], fraction: float) -> float | None:
    """Nearest-rank percentile of a histogram of rounded latencies (Locust's buckets)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket
    return max(hist)


def _top(errors: Counter[str]) -> dict[str, int]:
    return dict(errors.most_common(TOP_ERRORS))


def _windows_in(windows: Sequence[_LoadWindow], begin: float, end: float) -> list[_LoadWindow]:
    """Windows whose middle falls in [begin, end): adjacent spans never count one twice."""
    return [w for w in windows if begin <= w.middle < end]


def _merged_hist(windows: Sequence[_LoadWindow], begin: float, end: float) -> Counter[float]:
    hist: Counter[float] = Counter()
    for w in _windows_in(windows, begin, end):
        for bucket, count in w.hist.items():
            hist[float(bucket)] += int(count)
    return hist


def _load_stats(windows: Sequence[_LoadWindow], begin: float, end: float) -> Stats:
    chosen = _windows_in(windows, begin, end)
    total = sum(w.requests for w in chosen)
    failures = sum(w.failures for w in chosen)
    hist = _merged_hist(windows, begin, end)
    errors: Counter[str] = Counter()
    for w in chosen:
        errors.update(w.errors)
    covered = sum(w.t1 - w.t0 for w in chosen)
    maxima = [w.max_ms for w in chosen if w.max_ms is not None]
    return Stats(
        total=total,
        failures=failures,
        success_ratio=(total - failures) / total if total else None,
        per_second=total / covered if covered > 0 else None,
        p50_ms=_hist_percentile(hist, 0.50),
        p95_ms=_hist_percentile(hist, 0.95),
        p99_ms=_hist_percentile(hist, 0.99),
        max_ms=max(maxima) if maxima else None,
        errors=_top(errors),
    )


def _probe_stats(samples: Sequence[_ProbeSample], begin: float, end: float) -> Stats:
    chosen = [s for s in samples if begin <= s.t < end]
    total = len(chosen)
    failures = sum(1 for s in chosen if not s.ok)
    latencies = sorted(s.ms for s in chosen if s.ms is not None)
    return Stats(
        total=total,
        failures=failures,
        success_ratio=(total - failures) / total if total else None,
        per_second=total / (end - begin) if end > begin else None,
        p50_ms=_nearest_rank(latencies, 0.50),
        p95_ms=_nearest_rank(latencies, 0.95),
        p99_ms=_nearest_rank(latencies, 0.99),
        max_ms=latencies[-1] if latencies else None,
        errors=_top(Counter(s.err or "failed" for s in chosen if not s.ok)),
    )


# --------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Window:
    """A fault's impact window: injection to recovery (or to the end of the run)."""

    begin: float
    end: float


def _fault_outcomes(
    journal: _Journal, experiment: Experiment
) -> tuple[list[FaultOutcome], dict[str, _Window]]:
    steady = [p.name for p in experiment.probes if p.steady]
    steady_set = set(steady)
    resolution = max((p.interval for p in experiment.probes if p.steady), default=0.0)
    hold = experiment.phases.hold
    samples = [(s.probe, s.t, s.ok) for s in journal.samples]
    run_end = journal.span("run")
    last = run_end[1] if run_end else journal.last_t
    outcomes: list[FaultOutcome] = []
    windows: dict[str, _Window] = {}
    for name in experiment.fault_names():
        records = journal.faults.get(name)
        spec = experiment.faults[experiment.fault_names().index(name)]
        if records is None:
            outcomes.append(
                FaultOutcome(
                    name=name,
                    kind=spec.kind,
                    members=[],
                    injected_at=None,
                    ended_at=None,
                    reversible=True,
                    reverted=False,
                    errors=["never selected: the run ended before this fault"],
                    resolution=resolution,
                )
            )
            continue
        injected = [t for t, ok, _ in records.injects if ok]
        injected_at = min(injected) if injected else None
        ok_reverts = [t for t, ok, _ in records.reverts if ok]
        if injected_at is None:
            ended_at = None
        elif records.reversible:
            ended_at = max(ok_reverts) if ok_reverts else None
        else:
            ended_at = max(injected)
        reverted = (
            records.reversible
            and injected_at is not None
            and len(ok_reverts) >= len([1 for _, ok, _ in records.injects if ok])
        )
        recovered_at = (
            recovery_start(samples, steady, after=ended_at, hold=hold)
            if ended_at is not None
            else None
        )
        impact_end = recovered_at if recovered_at is not None else last
        time_to_impact = None
        window: _Window | None = None
        if injected_at is not None:
            window = _Window(injected_at, max(impact_end, ended_at or injected_at))
            windows[name] = window
            first_failure = next(
                (
                    s.t
                    for s in journal.samples
                    if s.probe in steady_set and not s.ok and injected_at <= s.t < window.end
                ),
                None,
            )
            if first_failure is not None:
                time_to_impact = first_failure - injected_at
        outcomes.append(
            FaultOutcome(
                name=name,
                kind=records.kind,
                members=records.members,
                injected_at=injected_at,
                ended_at=ended_at,
                reversible=records.reversible,
                reverted=reverted,
                errors=records.errors,
                time_to_impact=time_to_impact,
                recovered_at=recovered_at,
                recovery_time=(
                    recovered_at - ended_at
                    if recovered_at is not None and ended_at is not None
                    else None
                ),
                resolution=resolution,
                availability=(
                    _load_stats(journal.windows, window.begin, window.end)
                    if window is not None and journal.windows
                    else None
                ),
            )
        )
    return outcomes, windows


# --------------------------------------------------------------------- SLOs


def _source_stats(
    journal: _Journal, experiment: Experiment, source: str, begin: float, end: float
) -> Stats:
    if source == "load":
        return _load_stats(journal.windows, begin, end)
    if source == "probes":
        steady = {p.name for p in experiment.probes if p.steady}
        return _probe_stats([s for s in journal.samples if s.probe in steady], begin, end)
    probe = source.removeprefix("probe:")
    return _probe_stats([s for s in journal.samples if s.probe == probe], begin, end)


def _slo_span(
    journal: _Journal, phase: str, windows: Mapping[str, _Window]
) -> tuple[float, float] | None:
    if phase.startswith("fault:"):
        window = windows.get(phase.removeprefix("fault:"))
        return (window.begin, window.end) if window is not None else None
    return journal.span(phase)


def _availability(
    slo: AvailabilitySLO,
    journal: _Journal,
    experiment: Experiment,
    windows: Mapping[str, _Window],
) -> SloVerdict:
    allowed = 1 - slo.objective / 100
    base = SloVerdict(
        name=slo.name,
        kind=slo.kind,
        passed=False,
        observed=None,
        target=slo.objective,
        unit="percent",
        comparison=">=",
        phase=slo.phase,
        source=slo.source,
    )
    span = _slo_span(journal, slo.phase, windows)
    if span is None:
        return base.model_copy(update={"detail": f"the run never reached {slo.phase}"})
    stats = _source_stats(journal, experiment, slo.source, *span)
    if stats.success_ratio is None:
        detail = f"no {slo.source} data in {slo.phase}: nothing to judge"
        return base.model_copy(update={"detail": detail})
    error_ratio = 1 - stats.success_ratio
    burn_rates = {}
    for fault, window in windows.items():
        during = _source_stats(journal, experiment, slo.source, window.begin, window.end)
        if during.success_ratio is not None:
            burn_rates[fault] = round((1 - during.success_ratio) / allowed, 3)
    duration = span[1] - span[0]
    budget = ErrorBudget(
        allowed=allowed,
        consumed=error_ratio / allowed,
        window=slo.window,
        # The run's failures as time at full outage, over the window's budgeted bad time.
        window_consumed=(
            error_ratio * duration / (slo.window * allowed) if slo.window is not None else None
        ),
        burn_rates=burn_rates,
    )
    observed = stats.success_ratio * 100
    return base.model_copy(
        update={
            "passed": observed >= slo.objective,
            "observed": observed,
            "detail": f"{stats.total - stats.failures} of {stats.total} succeeded",
            "budget": budget,
        }
    )


def _latency(
    slo: LatencySLO, journal: _Journal, experiment: Experiment, windows: Mapping[str, _Window]
) -> SloVerdict:
    base = SloVerdict(
        name=slo.name,
        kind=slo.kind,
        passed=False,
        observed=None,
        target=slo.max * 1000,
        unit="ms",
        comparison="<=",
        phase=slo.phase,
        source=slo.source,
    )
    span = _slo_span(journal, slo.phase, windows)
    if span is None:
        return base.model_copy(update={"detail": f"the run never reached {slo.phase}"})
    fraction = slo.percentile / 100
    begin, end = span
    if slo.source == "load":
        observed = _hist_percentile(_merged_hist(journal.windows, begin, end), fraction)
    else:
        steady = {p.name for p in experiment.probes if p.steady}
        wanted = steady if slo.source == "probes" else {slo.source.removeprefix("probe:")}
        observed = _nearest_rank(
            sorted(
                s.ms
                for s in journal.samples
                if s.probe in wanted and s.ms is not None and begin <= s.t < end
            ),
            fraction,
        )
    if observed is None:
        return base.model_copy(update={"detail": f"no latencies in {slo.phase}"})
    return base.model_copy(
        update={
            "passed": observed <= slo.max * 1000,
            "observed": observed,
            "detail": f"p{slo.percentile:g} of {slo.source} over {slo.phase}",
        }
    )


def _per_fault(
    slo: RecoverySLO | DetectionSLO,
    outcomes: Sequence[FaultOutcome],
    measure: Mapping[str, float | None],
    what: str,
) -> SloVerdict:
    """Worst value over the faults the SLO covers; a fault without one fails it."""
    covered = [o for o in outcomes if slo.fault is None or o.name == slo.fault]
    missing = [o.name for o in covered if measure.get(o.name) is None]
    values = [v for o in covered if (v := measure.get(o.name)) is not None]
    worst = max(values) if values else None
    detail_parts = [
        f"{o.name}: {measure[o.name]:.3f}s" for o in covered if measure.get(o.name) is not None
    ]
    if missing:
        detail_parts.append(f"no {what} for {', '.join(missing)}")
    passed = bool(covered) and not missing and worst is not None and worst <= slo.max
    if not covered:
        detail_parts.append("no fault to judge")
    return SloVerdict(
        name=slo.name,
        kind=slo.kind,
        passed=passed,
        observed=worst,
        target=slo.max,
        unit="s",
        comparison="<=",
        detail="; ".join(detail_parts),
    )


def _time_to_detect(
    slo: DetectionSLO, journal: _Journal, outcomes: Sequence[FaultOutcome]
) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for outcome in outcomes:
        found[outcome.name] = None
        if outcome.injected_at is None:
            continue
        end = outcome.recovered_at if outcome.recovered_at is not None else journal.last_t
        for s in journal.samples:
            if s.probe == slo.probe and not s.ok and outcome.injected_at <= s.t <= end:
                found[outcome.name] = s.t - outcome.injected_at
                break
    return found


def _verdicts(
    journal: _Journal,
    experiment: Experiment,
    outcomes: Sequence[FaultOutcome],
    windows: Mapping[str, _Window],
) -> list[SloVerdict]:
    verdicts: list[SloVerdict] = []
    for slo in experiment.slos:
        if isinstance(slo, AvailabilitySLO):
            verdicts.append(_availability(slo, journal, experiment, windows))
        elif isinstance(slo, LatencySLO):
            verdicts.append(_latency(slo, journal, experiment, windows))
        elif isinstance(slo, RecoverySLO):
            measure = {o.name: o.recovery_time for o in outcomes}
            verdicts.append(_per_fault(slo, outcomes, measure, "recovery"))
        else:
            measure = _time_to_detect(slo, journal, outcomes)
            verdicts.append(_per_fault(slo, outcomes, measure, f"failing {slo.probe} sample"))
    return verdicts


# --------------------------------------------------------------------- the result


def _status(
    journal: _Journal, verdicts: Sequence[SloVerdict], outcomes: Sequence[FaultOutcome]
) -> tuple[Status, str]:
    if journal.end is None:
        why = journal.aborts[-1] if journal.aborts else "the runner died"
        return "aborted", f"the journal has no end record ({why}): the run did not finish"
    engine = str(journal.end.get("status", "error"))
    reason = str(journal.end.get("reason") or "")
    if engine in ("completed", "failed"):
        failed = [v.name for v in verdicts if not v.passed]
        uninjected = [o.name for o in outcomes if o.injected_at is None]
        reasons = [reason] if engine == "failed" and reason else []
        if failed:
            reasons.append(f"SLO not met: {', '.join(failed)}")
        if uninjected:
            reasons.append(f"never injected: {', '.join(uninjected)}")
        return ("failed" if reasons else "passed"), "; ".join(reasons)
    for status in EXIT_CODES:
        if engine == status:
            return status, reason
    return "error", reason or f"unknown engine status {engine!r}"


def analyse(records: Iterable[Mapping[str, Any]], *, journal_path: str | None = None) -> RunResult:
    """The RunResult of a run, from its journal records alone."""
    journal = _parse(records)
    experiment = journal.experiment
    outcomes: list[FaultOutcome] = []
    verdicts: list[SloVerdict] = []
    phases: list[PhaseSummary] = []
    recovered_at: float | None = None
    if experiment is not None:
        outcomes, windows = _fault_outcomes(journal, experiment)
        verdicts = _verdicts(journal, experiment, outcomes, windows)
        probe_names = [p.name for p in experiment.probes]
        for name in ("baseline", "faults", "recovery"):
            span = journal.span(name)
            if span is None:
                continue
            phases.append(
                PhaseSummary(
                    name=name,
                    start=span[0],
                    end=span[1],
                    load=_load_stats(journal.windows, *span) if journal.windows else None,
                    probes={
                        probe: _probe_stats([s for s in journal.samples if s.probe == probe], *span)
                        for probe in probe_names
                    },
                )
            )
        ends = [o.ended_at for o in outcomes if o.ended_at is not None]
        if ends and journal.span("recovery") is not None:
            steady = [p.name for p in experiment.probes if p.steady]
            recovered_at = recovery_start(
                [(s.probe, s.t, s.ok) for s in journal.samples],
                steady,
                after=max(ends),
                hold=experiment.phases.hold,
            )
    status, reason = _status(journal, verdicts, outcomes)
    engine_status = journal.end.get("status") if journal.end else None
    run = journal.run
    return RunResult(
        run_id=str(run.get("run_id", "unknown")),
        experiment=journal.experiment_name,
        source=run.get("source"),
        status=status,
        exit_code=EXIT_CODES[status],
        reason=reason,
        started_wall=run.get("w"),
        duration=journal.last_t,
        hold=experiment.phases.hold if experiment is not None else None,
        steady_state_restored=(
            engine_status == "completed" if engine_status in ("completed", "failed") else None
        ),
        recovered_at=recovered_at,
        phases=phases,
        faults=outcomes,
        slos=verdicts,
        events=journal.events,
        errors=journal.errors,
        journal=journal_path,
    )
