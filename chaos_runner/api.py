"""The library face of chaos_runner: run, plan, validate, report and revert experiments.

The CLI and the pytest plugin are thin callers of these functions; defaults and precedence
rules live here. Every dependency of a run (registry, clock, listener, stop flag) can be
passed in. A run always leaves a journal, and reports are always computed from it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import secrets
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from chaos_runner import __version__, analysis
from chaos_runner.clock import Clock, SystemClock
from chaos_runner.engine.listener import RunListener
from chaos_runner.engine.run import Run, derive_seed
from chaos_runner.errors import ChaosRunnerError, FaultError
from chaos_runner.experiment import Experiment
from chaos_runner.journal import JOURNAL_NAME, JOURNAL_VERSION, Journal, read_journal
from chaos_runner.loader import LoadedExperiment, load_experiment
from chaos_runner.plugins import Handle
from chaos_runner.registry import Registry, default_registry
from chaos_runner.result import RunResult

DEFAULT_REPORTERS: tuple[str, ...] = ("json", "junit", "markdown")


def validate(path: str | Path, *, registry: Registry | None = None) -> LoadedExperiment:
    """Load and fully validate an experiment file; raises ExperimentError with every problem."""
    return load_experiment(path, registry or default_registry())


def run(
    experiment: str | Path | LoadedExperiment,
    *,
    reports_dir: str | Path = "reports",
    run_id: str | None = None,
    dry_run: bool | None = None,
    seed: int | None = None,
    reporters: Sequence[str] = DEFAULT_REPORTERS,
    registry: Registry | None = None,
    clock: Clock | None = None,
    listener: RunListener | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Run one experiment and return its result; reports are written to reports_dir/<run-id>.

    `dry_run` None means the experiment's own safety.dry_run. With `handle_signals`, SIGINT and
    SIGTERM stop the run gracefully (every fault reverted; status aborted, exit code 3).
    Raises ExperimentError for an invalid file (nothing is started).
    """
    registry = registry or default_registry()
    loaded = (
        experiment
        if isinstance(experiment, LoadedExperiment)
        else validate(experiment, registry=registry)
    )
    clock = clock or SystemClock()
    listener = listener or RunListener()
    stop = stop or threading.Event()
    dry = loaded.experiment.safety.dry_run if dry_run is None else dry_run
    run_id = run_id or new_run_id(loaded.experiment)
    directory = Path(reports_dir) / run_id
    seed = derive_seed(seed)
    with Journal(directory / JOURNAL_NAME, clock=clock) as journal:
        journal.write(
            "run",
            run_id=run_id,
            version=JOURNAL_VERSION,
            runner=__version__,
            experiment=loaded.experiment.model_dump(mode="json"),
            source=loaded.source,
            base_dir=str(loaded.base_dir),
            sha256=loaded.sha256,
            hostname=platform.node(),
            pid=os.getpid(),
            dry_run=dry,
            seed=seed,
        )
        engine = Run(
            loaded,
            run_id=run_id,
            journal=journal,
            registry=registry,
            clock=clock,
            stop=stop,
            listener=listener,
            dry_run=dry,
            seed=seed,
        )
        listener.run_started(run_id, str(directory), engine.snapshot)
        with _graceful_signals(engine) if handle_signals else contextlib.nullcontext():
            engine.execute()
    return report(directory, reporters=reporters, registry=registry)


def report(
    run_dir: str | Path,
    *,
    reporters: Sequence[str] = DEFAULT_REPORTERS,
    registry: Registry | None = None,
) -> RunResult:
    """Recompute the result of a run from its journal alone and write every report."""
    registry = registry or default_registry()
    directory = Path(run_dir)
    journal_path = directory / JOURNAL_NAME if directory.is_dir() else directory
    directory = journal_path.parent
    if not journal_path.is_file():
        raise ChaosRunnerError(f"{journal_path}: no journal here (is this a run directory?)")
    result = analysis.analyse(read_journal(journal_path), journal_path=str(journal_path))
    for name in reporters:
        registry.reporter(name).write(result, directory)
    return result


@dataclass(frozen=True)
class RevertOutcome:
    handle: Handle
    error: str | None


def revert(run_dir: str | Path, *, registry: Registry | None = None) -> list[RevertOutcome]:
    """Revert every fault a dead run left injected, from its journal alone.

    A handle counts as possibly active when it was journalled (so its injection may have
    begun) and no successful revert follows. Reverts are idempotent, so reverting a fault
    that was never made is harmless. The reverts are appended to the same journal.
    """
    registry = registry or default_registry()
    directory = Path(run_dir)
    journal_path = directory / JOURNAL_NAME if directory.is_dir() else directory
    records = read_journal(journal_path)
    run_record = next((r for r in records if r.get("type") == "run"), None)
    if run_record is None:
        raise ChaosRunnerError(f"{journal_path}: no run record; nothing to revert")
    experiment = Experiment.model_validate(run_record["experiment"])
    pending: dict[str, Handle] = {}
    for record in records:
        if record.get("type") == "handle" and record.get("reversible"):
            handle = Handle.from_json(record["handle"])
            pending[handle.id] = handle
        elif record.get("type") == "revert" and record.get("ok"):
            pending.pop(str(record.get("handle")), None)
    if not pending:
        return []
    factory = registry.target(experiment.target.kind)
    params = factory.Params.model_validate(experiment.target.params)
    base_dir = Path(run_record.get("base_dir") or ".")
    outcomes: list[RevertOutcome] = []
    with Journal(journal_path) as journal:
        target = factory(params, base_dir=base_dir, journal=journal)
        target.attach()
        for handle in reversed(list(pending.values())):
            error: str | None = None
            try:
                registry.fault(handle.kind, experiment.target.kind).revert(handle, target)
            except FaultError as exc:
                error = str(exc)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            journal.write(
                "revert", handle=handle.id, ok=error is None, error=error, reason="recover"
            )
            outcomes.append(RevertOutcome(handle, error))
    return outcomes


def new_run_id(experiment: Experiment) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{experiment.metadata.name}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def _graceful_signals(engine: Run) -> Iterator[None]:
    """SIGINT and SIGTERM ask the run to stop; teardown still reverts every fault."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if engine.stop.is_set():
            engine.listener.message(
                "still reverting faults; the run exits as soon as every fault is reverted",
                warning=True,
            )
            return
        engine.request_stop(names.get(signal.Signals(signum), f"signal {signum}"))

    previous: dict[signal.Signals, Any] = {}
    for sig in names:
        previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
