"""Analysis: the journal of a run in, its RunResult out. A pure function.

It never touches a process, a socket or the clock: recovery times, success ratios, latency
percentiles and SLO verdicts are computed from journal records alone, so `chaos-runner
report` can regenerate any report, and tests can feed it a handful of hand-made records.
Times in the result are seconds from the run's first record; DESIGN.md defines the terms.
The parsed journal and the statistics over its spans are in `timeline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
)
from chaos_runner.timeline import (
    Timeline,
    hist_percentile,
    load_stats,
    merged_hist,
    nearest_rank,
    parse_journal,
    probe_stats,
)

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


# --------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Window:
    """A fault's impact window: injection to recovery (or to the end of the run)."""

    begin: float
    end: float


def _fault_outcomes(
    timeline: Timeline, experiment: Experiment
) -> tuple[list[FaultOutcome], dict[str, _Window]]:
    steady = [p.name for p in experiment.probes if p.steady]
    steady_set = set(steady)
    resolution = max((p.interval for p in experiment.probes if p.steady), default=0.0)
    hold = experiment.phases.hold
    samples = [(s.probe, s.t, s.ok) for s in timeline.samples]
    run_end = timeline.span("run")
    last = run_end[1] if run_end else timeline.last_t
    outcomes: list[FaultOutcome] = []
    windows: dict[str, _Window] = {}
    for name in experiment.fault_names():
        records = timeline.faults.get(name)
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
                    for s in timeline.samples
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
                    load_stats(timeline.windows, window.begin, window.end)
                    if window is not None and timeline.windows
                    else None
                ),
            )
        )
    return outcomes, windows


# --------------------------------------------------------------------- SLOs


def _source_stats(
    timeline: Timeline, experiment: Experiment, source: str, begin: float, end: float
) -> Stats:
    if source == "load":
        return load_stats(timeline.windows, begin, end)
    if source == "probes":
        steady = {p.name for p in experiment.probes if p.steady}
        return probe_stats([s for s in timeline.samples if s.probe in steady], begin, end)
    probe = source.removeprefix("probe:")
    return probe_stats([s for s in timeline.samples if s.probe == probe], begin, end)


def _slo_span(
    timeline: Timeline, phase: str, windows: Mapping[str, _Window]
) -> tuple[float, float] | None:
    if phase.startswith("fault:"):
        window = windows.get(phase.removeprefix("fault:"))
        return (window.begin, window.end) if window is not None else None
    return timeline.span(phase)


def _availability(
    slo: AvailabilitySLO,
    timeline: Timeline,
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
    span = _slo_span(timeline, slo.phase, windows)
    if span is None:
        return base.model_copy(update={"detail": f"the run never reached {slo.phase}"})
    stats = _source_stats(timeline, experiment, slo.source, *span)
    if stats.success_ratio is None:
        detail = f"no {slo.source} data in {slo.phase}: nothing to judge"
        return base.model_copy(update={"detail": detail})
    error_ratio = 1 - stats.success_ratio
    burn_rates = {}
    for fault, window in windows.items():
        during = _source_stats(timeline, experiment, slo.source, window.begin, window.end)
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
    slo: LatencySLO, timeline: Timeline, experiment: Experiment, windows: Mapping[str, _Window]
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
    span = _slo_span(timeline, slo.phase, windows)
    if span is None:
        return base.model_copy(update={"detail": f"the run never reached {slo.phase}"})
    fraction = slo.percentile / 100
    begin, end = span
    if slo.source == "load":
        observed = hist_percentile(merged_hist(timeline.windows, begin, end), fraction)
    else:
        steady = {p.name for p in experiment.probes if p.steady}
        wanted = steady if slo.source == "probes" else {slo.source.removeprefix("probe:")}
        observed = nearest_rank(
            sorted(
                s.ms
                for s in timeline.samples
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
    slo: DetectionSLO, timeline: Timeline, outcomes: Sequence[FaultOutcome]
) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for outcome in outcomes:
        found[outcome.name] = None
        if outcome.injected_at is None:
            continue
        end = outcome.recovered_at if outcome.recovered_at is not None else timeline.last_t
        for s in timeline.samples:
            if s.probe == slo.probe and not s.ok and outcome.injected_at <= s.t <= end:
                found[outcome.name] = s.t - outcome.injected_at
                break
    return found


def _verdicts(
    timeline: Timeline,
    experiment: Experiment,
    outcomes: Sequence[FaultOutcome],
    windows: Mapping[str, _Window],
) -> list[SloVerdict]:
    verdicts: list[SloVerdict] = []
    for slo in experiment.slos:
        if isinstance(slo, AvailabilitySLO):
            verdicts.append(_availability(slo, timeline, experiment, windows))
        elif isinstance(slo, LatencySLO):
            verdicts.append(_latency(slo, timeline, experiment, windows))
        elif isinstance(slo, RecoverySLO):
            measure = {o.name: o.recovery_time for o in outcomes}
            verdicts.append(_per_fault(slo, outcomes, measure, "recovery"))
        else:
            measure = _time_to_detect(slo, timeline, outcomes)
            verdicts.append(_per_fault(slo, outcomes, measure, f"failing {slo.probe} sample"))
    return verdicts


# --------------------------------------------------------------------- the result


def _status(
    timeline: Timeline, verdicts: Sequence[SloVerdict], outcomes: Sequence[FaultOutcome]
) -> tuple[Status, str]:
    if timeline.end is None:
        why = timeline.aborts[-1] if timeline.aborts else "the runner died"
        return "aborted", f"the journal has no end record ({why}): the run did not finish"
    engine = str(timeline.end.get("status", "error"))
    reason = str(timeline.end.get("reason") or "")
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
    timeline = parse_journal(records)
    experiment = timeline.experiment
    outcomes: list[FaultOutcome] = []
    verdicts: list[SloVerdict] = []
    phases: list[PhaseSummary] = []
    recovered_at: float | None = None
    if experiment is not None:
        outcomes, windows = _fault_outcomes(timeline, experiment)
        verdicts = _verdicts(timeline, experiment, outcomes, windows)
        probe_names = [p.name for p in experiment.probes]
        for name in ("baseline", "faults", "recovery"):
            span = timeline.span(name)
            if span is None:
                continue
            phases.append(
                PhaseSummary(
                    name=name,
                    start=span[0],
                    end=span[1],
                    load=load_stats(timeline.windows, *span) if timeline.windows else None,
                    probes={
                        probe: probe_stats([s for s in timeline.samples if s.probe == probe], *span)
                        for probe in probe_names
                    },
                )
            )
        ends = [o.ended_at for o in outcomes if o.ended_at is not None]
        if ends and timeline.span("recovery") is not None:
            steady = [p.name for p in experiment.probes if p.steady]
            recovered_at = recovery_start(
                [(s.probe, s.t, s.ok) for s in timeline.samples],
                steady,
                after=max(ends),
                hold=experiment.phases.hold,
            )
    status, reason = _status(timeline, verdicts, outcomes)
    engine_status = timeline.end.get("status") if timeline.end else None
    run = timeline.run
    return RunResult(
        run_id=str(run.get("run_id", "unknown")),
        experiment=timeline.experiment_name,
        source=run.get("source"),
        status=status,
        exit_code=EXIT_CODES[status],
        reason=reason,
        started_wall=run.get("w"),
        duration=timeline.last_t,
        hold=experiment.phases.hold if experiment is not None else None,
        steady_state_restored=(
            engine_status == "completed" if engine_status in ("completed", "failed") else None
        ),
        recovered_at=recovered_at,
        phases=phases,
        faults=outcomes,
        slos=verdicts,
        events=timeline.events,
        errors=timeline.errors,
        journal=journal_path,
    )
