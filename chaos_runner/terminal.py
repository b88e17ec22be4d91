"""Terminal renderings with rich: the plan, the live status line and the final summary.

Reads a RunResult, a plan or a snapshot only; prints nothing itself (the CLI does)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chaos_runner.engine.listener import PlannedFault, Snapshot
from chaos_runner.reports import format_measure
from chaos_runner.result import RunResult

_STATUS_STYLE = {
    "passed": "bold green",
    "dry_run": "bold cyan",
    "failed": "bold red",
    "not_steady": "bold yellow",
    "invalid": "bold yellow",
    "error": "bold red",
    "aborted": "bold yellow",
}


def render_plan(plan: Sequence[PlannedFault], target: dict[str, object]) -> RenderableType:
    table = Table(title="plan", title_justify="left", expand=False)
    for column in ("fault", "kind", "members", "at", "duration", "revert"):
        table.add_column(column)
    for fault in plan:
        table.add_row(
            fault.name,
            fault.kind,
            ", ".join(m.name for m in fault.members),
            f"{fault.at:g}s",
            f"{fault.duration:g}s",
            "yes" if fault.reversible else "no (heals itself)",
        )
    return Group(Text(f"target: {target.get('kind', '?')}"), table)


def render_snapshot(snapshot: Snapshot) -> RenderableType:
    parts = [f"[{snapshot.phase}] {snapshot.elapsed:6.1f}s"]
    if snapshot.requests_per_second is not None:
        parts.append(f"{snapshot.requests_per_second:7.0f} req/s")
        if snapshot.error_ratio is not None:
            parts.append(f"errors {snapshot.error_ratio:6.1%}")
        if snapshot.p95_ms is not None:
            parts.append(f"p95 {snapshot.p95_ms:.0f}ms")
    for name, state in snapshot.probes.items():
        mark = "✓" if state.ok else ("·" if state.ok is None else "✗")
        parts.append(f"{name} {mark}")
    if snapshot.active_faults:
        parts.append("faults: " + ", ".join(snapshot.active_faults))
    return Text("  ".join(parts))


def render_result(result: RunResult) -> RenderableType:
    style = _STATUS_STYLE.get(result.status, "bold")
    head = Text.assemble(
        ("verdict: ", "bold"),
        (result.status.upper(), style),
        f"  (exit code {result.exit_code})",
        f"  {result.reason}" if result.reason else "",
    )
    items: list[RenderableType] = [head]
    if result.status == "dry_run":
        return Group(*items)  # The plan, printed in preflight, is all there is to show.
    if result.faults:
        faults = Table(title="faults", title_justify="left")
        for column in (
            "fault",
            "kind",
            "members",
            "time to impact",
            "recovery time",
            "availability during impact",
            "reverted",
        ):
            faults.add_column(column)
        for f in result.faults:
            availability = (
                f"{f.availability.success_ratio:.2%}"
                if f.availability and f.availability.success_ratio is not None
                else "-"
            )
            faults.add_row(
                f.name,
                f.kind,
                ", ".join(f.members),
                _seconds(f.time_to_impact, f.resolution),
                _seconds(f.recovery_time, f.resolution) if f.injected_at is not None else "-",
                availability,
                ("yes" if f.reverted else "[red]NO[/]") if f.reversible else "n/a",
            )
        items.append(faults)
    if result.slos:
        slos = Table(title="SLOs", title_justify="left")
        for column in ("SLO", "verdict", "observed", "target", "detail"):
            slos.add_column(column)
        for s in result.slos:
            slos.add_row(
                s.name,
                "[green]met[/]" if s.passed else "[red]FAILED[/]",
                format_measure(s.observed, s.unit),
                f"{s.comparison} {format_measure(s.target, s.unit)}",
                s.detail,
            )
        items.append(slos)
    for error in result.errors:
        items.append(Text(f"error: {error}", style="red"))
    return Group(*items)


def _seconds(value: float | None, resolution: float) -> str:
    return "-" if value is None else f"{value:.2f}s ±{resolution:g}s"
