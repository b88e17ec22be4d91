"""The command line: options -> a call of the library API -> an exit code.

Exit codes: 0 every SLO met (or a dry run), 1 an SLO failed or the steady state was not
restored, 2 the run could not be carried out (invalid input, not steady), 3 aborted or
interrupted. No defaults or precedence rules live here; they are the library's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from chaos_runner import __version__, api
from chaos_runner.engine.listener import RunListener, Snapshot
from chaos_runner.errors import ChaosRunnerError, ExperimentError
from chaos_runner.plugins import Handle
from chaos_runner.registry import default_registry
from chaos_runner.schema import experiment_schema, result_schema
from chaos_runner.terminal import render_plan, render_result, render_snapshot

EXIT_INVALID = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False, highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        code: int = args.command(args, console)
        return code
    except ExperimentError as exc:
        errors.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return EXIT_INVALID
    except ChaosRunnerError as exc:
        errors.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaos-runner",
        description="Run declarative chaos experiments: load, faults, continuous probes, "
        "recovery times and SLO verdicts.",
    )
    parser.add_argument("--version", action="version", version=f"chaos-runner {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment")
    run.add_argument("experiment", type=Path)
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="resolve targets and print the plan; inject nothing",
    )
    run.add_argument("--reports-dir", type=Path, default=Path("reports"))
    run.add_argument("--run-id", default=None)
    run.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for member selection (default: random, journalled)",
    )
    run.add_argument(
        "--report",
        action="append",
        dest="reporters",
        metavar="NAME",
        help="reporter to write (repeatable; default: json, junit, markdown)",
    )
    run.add_argument("--quiet", action="store_true", help="no live progress")
    run.set_defaults(command=_run)

    validate = sub.add_parser("validate", help="validate experiment files")
    validate.add_argument("experiments", type=Path, nargs="+")
    validate.set_defaults(command=_validate)

    schema = sub.add_parser("schema", help="print the JSON Schema of experiments (or results)")
    schema.add_argument("--result", action="store_true", help="the schema of result.json")
    schema.set_defaults(command=_schema)

    report = sub.add_parser("report", help="regenerate every report of a run from its journal")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--report", action="append", dest="reporters", metavar="NAME")
    report.set_defaults(command=_report)

    revert = sub.add_parser(
        "revert", help="revert the faults a dead run left behind, from its journal"
    )
    revert.add_argument("run_dir", type=Path)
    revert.set_defaults(command=_revert)

    plugins = sub.add_parser("plugins", help="list targets, fault kinds, probes and reporters")
    plugins.set_defaults(command=_plugins)
    return parser


def _run(args: argparse.Namespace, console: Console) -> int:
    listener = _ConsoleListener(console, live=not args.quiet and console.is_terminal)
    result = api.run(
        args.experiment,
        reports_dir=args.reports_dir,
        run_id=args.run_id,
        dry_run=args.dry_run,
        seed=args.seed,
        reporters=tuple(args.reporters or api.DEFAULT_REPORTERS),
        listener=listener,
    )
    listener.close()
    console.print(render_result(result))
    console.print(f"reports: {Path(result.journal or '').parent}")
    return result.exit_code


def _validate(args: argparse.Namespace, console: Console) -> int:
    failed = 0
    for path in args.experiments:
        try:
            loaded = api.validate(path)
        except ExperimentError as exc:
            failed += 1
            console.print(f"[red]✗[/] {exc}", soft_wrap=True)
            continue
        e = loaded.experiment
        console.print(
            f"[green]✓[/] {path}: {e.metadata.name} ({len(e.probes)} probes, "
            f"{len(e.faults)} faults, {len(e.slos)} SLOs)"
        )
    return EXIT_INVALID if failed else 0


def _schema(args: argparse.Namespace, console: Console) -> int:
    schema = result_schema() if args.result else experiment_schema(default_registry())
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    result = api.report(args.run_dir, reporters=tuple(args.reporters or api.DEFAULT_REPORTERS))
    console.print(render_result(result))
    return result.exit_code


def _revert(args: argparse.Namespace, console: Console) -> int:
    outcomes = api.revert(args.run_dir)
    if not outcomes:
        console.print("nothing to revert: every journalled fault was reverted")
        return 0
    for outcome in outcomes:
        mark = "[green]reverted[/]" if outcome.error is None else f"[red]{outcome.error}[/]"
        console.print(f"{outcome.handle.fault} on {outcome.handle.member}: {mark}")
    return 0 if all(o.error is None for o in outcomes) else 1


def _plugins(args: argparse.Namespace, console: Console) -> int:
    registry = default_registry()
    console.print("targets: " + ", ".join(sorted(registry.targets)))
    console.print("faults: " + ", ".join(sorted(registry.faults)))
    console.print("probes: " + ", ".join(sorted(registry.probes)))
    console.print("reporters: " + ", ".join(sorted(registry.reporters)))
    for name, why in sorted(registry.unavailable.items()):
        console.print(f"[yellow]unavailable[/] {name}: {why}")
    return 0


class _ConsoleListener(RunListener):
    """Prints what happens; on a terminal, also a live panel refreshed four times a second."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live_enabled = live
        self._snapshot: Callable[[], Snapshot] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = 0.0

    def run_started(self, run_id: str, directory: str, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self.console.print(f"run [bold]{run_id}[/] → {directory}")
        self._thread = threading.Thread(target=self._refresh, name="live-view", daemon=True)
        self._thread.start()

    def plan_ready(self, plan: list, target: dict[str, object]) -> None:  # type: ignore[type-arg]
        self.console.print(render_plan(plan, target))

    def phase_started(self, name: str) -> None:
        self.console.print(f"[bold cyan]▶ {name}[/]")

    def fault_injected(self, handle: Handle, error: str | None) -> None:
        if error is None:
            self.console.print(
                f"  [magenta]⚡ injected[/] {handle.fault} ({handle.kind}) on {handle.member}"
            )
        else:
            self.console.print(
                f"  [red]✗ injection failed[/] {handle.fault} on {handle.member}: {error}"
            )

    def fault_reverted(self, handle: Handle, error: str | None, reason: str) -> None:
        if error is None:
            self.console.print(
                f"  [green]↺ reverted[/] {handle.fault} on {handle.member} ({reason})"
            )
        else:
            self.console.print(
                f"  [red]✗ revert failed[/] {handle.fault} on {handle.member}: {error}"
            )

    def steady_state_restored(self, seconds_after_last_fault: float) -> None:
        self.console.print(
            f"  [green]✓ steady state restored[/] {seconds_after_last_fault:.2f}s after the "
            "last fault's end"
        )

    def message(self, text: str, *, warning: bool = False) -> None:
        self.console.print(f"  [yellow]! {text}[/]" if warning else f"  {text}")

    def _refresh(self) -> None:
        """A status line every few seconds (or a live panel on a terminal)."""
        if self._snapshot is None:
            return
        if self.live_enabled:
            with self.console.status("", spinner="dots") as status:
                while not self._stop.wait(0.25):
                    status.update(render_snapshot(self._snapshot()))
            return
        while not self._stop.wait(5.0):
            self.console.print(render_snapshot(self._snapshot()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
