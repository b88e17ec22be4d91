"""The `markdown` reporter: report.md, what an SRE reads after a game day or in CI artifacts.

Verdict first, then SLOs, faults, phases, the timeline and errors, as GitHub-flavoured tables.
It formats what the result holds and computes nothing new.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from chaos_runner.reports import MISSING, format_measure, write_atomic
from chaos_runner.result import ErrorBudget, FaultOutcome, PhaseSummary, RunResult, Stats

# --------------------------------------------------------------------- formatting


def _seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f} s"


def _ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f} ms"


def _percent(ratio: float | None, decimals: int = 3) -> str:
    """A ratio (1.0 = all) as a percentage."""
    return MISSING if ratio is None else f"{ratio * 100:.{decimals}f}%"


def _yes_no(value: bool | None) -> str:
    return MISSING if value is None else ("yes" if value else "no")


def _duration(seconds: float) -> str:
    """A window length as people write it: 30d, 12h, 90m, 45s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _cell(text: str) -> str:
    """Text safe inside a table cell: a pipe or a newline would break the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines.extend("| " + " | ".join(_cell(c) or MISSING for c in row) + " |" for row in rows)
    return [*lines, ""]


def _status(status: str) -> str:
    return status.replace("_", " ").upper()


# --------------------------------------------------------------------- sections


def _header(result: RunResult) -> list[str]:
    lines = [f"# Chaos run: {result.experiment} — {_status(result.status)}", ""]
    verdict = f"**{_status(result.status)}** (exit code {result.exit_code})"
    lines += [verdict + (f": {result.reason}" if result.reason else ""), ""]
    facts = [("Run", f"`{result.run_id}`")]
    if result.source:
        facts.append(("Experiment file", f"`{result.source}`"))
    if result.started_wall is not None:
        started = _dt.datetime.fromtimestamp(result.started_wall, tz=_dt.UTC)
        facts.append(("Started", started.strftime("%Y-%m-%d %H:%M:%S UTC")))
    facts.append(("Duration", _seconds(result.duration)))
    if result.hold is not None:
        facts.append(("Recovery hold", _seconds(result.hold)))
    facts.append(("Steady state restored", _yes_no(result.steady_state_restored)))
    if result.recovered_at is not None:
        facts.append(("Recovered after the last fault at", _seconds(result.recovered_at)))
    if result.journal:
        facts.append(("Journal", f"`{result.journal}`"))
    return [*lines, *(f"- {key}: {value}" for key, value in facts), ""]


def _budget_cells(budget: ErrorBudget | None) -> list[str]:
    if budget is None:
        return [MISSING, MISSING, MISSING]
    share = _percent(budget.window_consumed)
    if budget.window is not None and budget.window_consumed is not None:
        share += f" of {_duration(budget.window)}"
    burns = ", ".join(f"{fault}: {rate:g}x" for fault, rate in budget.burn_rates.items())
    return [_percent(budget.consumed, 1), share, burns or MISSING]


def _slos(result: RunResult) -> list[str]:
    headers = ["SLO", "Kind", "Observed", "Target", "Verdict"]
    headers += ["Budget consumed", "Window share", "Burn rate per fault", "Detail"]
    rows = [
        [
            slo.name,
            slo.kind,
            format_measure(slo.observed, slo.unit),
            f"{slo.comparison} {format_measure(slo.target, slo.unit)}",
            "met" if slo.passed else "**NOT MET**",
            *_budget_cells(slo.budget),
            slo.detail,
        ]
        for slo in result.slos
    ]
    return ["## SLOs", "", *_table(headers, rows)]


def _recovery(fault: FaultOutcome) -> str:
    if fault.recovery_time is not None:
        return f"{fault.recovery_time:.3f} s ± {fault.resolution:.3f} s"
    if fault.ended_at is not None:
        return "**not recovered**"
    return MISSING


def _availability(stats: Stats | None) -> str:
    if stats is None or stats.success_ratio is None:
        return MISSING
    ok = stats.total - stats.failures
    return f"{_percent(stats.success_ratio)} ({ok} of {stats.total})"


def _faults(result: RunResult) -> list[str]:
    headers = ["Fault", "Kind", "Members", "Injected at", "Ended at", "Time to impact"]
    headers += ["Recovery time", "Availability during impact", "Reverted", "Errors"]
    rows = [
        [
            fault.name,
            fault.kind,
            ", ".join(fault.members),
            _seconds(fault.injected_at),
            _seconds(fault.ended_at),
            _seconds(fault.time_to_impact),
            _recovery(fault),
            _availability(fault.availability),
            _yes_no(fault.reverted) if fault.reversible else "n/a",
            "; ".join(fault.errors),
        ]
        for fault in result.faults
    ]
    return ["## Faults", "", *_table(headers, rows)]


def _phases(phases: Sequence[PhaseSummary]) -> list[str]:
    probes = list(dict.fromkeys(name for phase in phases for name in phase.probes))
    headers = ["Phase", "Span", "Requests", "Success", "p50", "p95", "p99"]
    for probe in probes:
        headers += [f"{probe} success", f"{probe} p95"]
    rows: list[list[str]] = []
    noted: list[str] = []
    for phase in phases:
        load = phase.load or Stats()
        row = [phase.name, f"{phase.start:.3f} to {phase.end:.3f} s"]
        row += [str(load.total) if phase.load else MISSING, _percent(load.success_ratio)]
        row += [_ms(load.p50_ms), _ms(load.p95_ms), _ms(load.p99_ms)]
        sources = [("load", load)]
        for probe in probes:
            stats = phase.probes.get(probe, Stats())
            row += [_percent(stats.success_ratio), _ms(stats.p95_ms)]
            sources.append((probe, stats))
        rows.append(row)
        noted += [
            f"- {phase.name}, {source}: {_cell(error)} ({count})"
            for source, stats in sources
            for error, count in stats.errors.items()
        ]
    lines = ["## Phases", "", *_table(headers, rows)]
    if noted:
        lines += ["Most frequent errors:", "", *noted, ""]
    return lines


def _timeline(result: RunResult) -> list[str]:
    headers = ["t", "Source", "Action", "Member", "Detail"]
    rows = [
        [_seconds(e.t), e.source, e.action, e.member or MISSING, e.detail] for e in result.events
    ]
    return ["## Timeline", "", *_table(headers, rows)]


def render(result: RunResult) -> str:
    """The whole report as Markdown text; sections without content are left out."""
    lines = _header(result)
    lines += _slos(result) if result.slos else ["## SLOs", "", "No SLO was judged.", ""]
    if result.faults:
        lines += _faults(result)
    if result.phases:
        lines += _phases(result.phases)
    if result.events:
        lines += _timeline(result)
    if result.errors:
        lines += ["## Errors", "", *(f"- {_cell(error)}" for error in result.errors), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


class MarkdownReporter:
    """Writes report.md."""

    name: ClassVar[str] = "markdown"
    filename: ClassVar[str] = "report.md"

    def write(self, result: RunResult, directory: Path) -> Path:
        return write_atomic(directory / self.filename, render(result))
