"""The run: preflight, baseline, faults, recovery, teardown, as DESIGN.md describes them.

Everything that happens is written to the journal first; the result is computed from it
afterwards. Every handle is journalled before its fault is made, and every active fault is
reverted in teardown whatever ended the run (success, failure, exception, a stop signal).
The engine never mutates the experiment and reads time only through the injected clock.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from chaos_runner import analysis
from chaos_runner.clock import Clock
from chaos_runner.engine.listener import PlannedFault, ProbeState, RunListener, Snapshot
from chaos_runner.engine.sampler import Sampler
from chaos_runner.errors import ChaosRunnerError, FaultError, NotSteadyError, PreflightError
from chaos_runner.experiment import FaultSpec, substitute
from chaos_runner.journal import Journal
from chaos_runner.loader import LoadedExperiment
from chaos_runner.plugins import FaultKind, Handle, Member, ProbeCheck, ProbeContext, Target
from chaos_runner.registry import Registry
from chaos_runner.selection import choose

POLL = 0.05
"""How often the recovery phase re-evaluates the steady state (seconds)."""


class Aborted(ChaosRunnerError):
    """The run was stopped before its end: a signal, a stop condition, a dead load generator."""


@dataclass
class _Fault:
    spec: FaultSpec
    name: str
    kind: FaultKind
    params: Any
    members: list[Member]
    at: float = 0.0
    handles: list[Handle] = field(default_factory=list)
    injected: list[Handle] = field(default_factory=list)


@dataclass
class _LoadView:
    """The last few load windows, for the live view and the stop condition."""

    windows: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=64))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, window: dict[str, Any]) -> None:
        with self.lock:
            self.windows.append(window)

    def over(self, seconds: float, now: float) -> tuple[int, int, float | None]:
        """Requests, failures and the worst p95 of the windows ending in the last `seconds`."""
        with self.lock:
            recent = [w for w in self.windows if w.get("t1", 0.0) >= now - seconds]
        requests = sum(int(w.get("requests", 0)) for w in recent)
        failures = sum(int(w.get("failures", 0)) for w in recent)
        p95 = max((float(w["p95"]) for w in recent if w.get("p95") is not None), default=None)
        return requests, failures, p95


class Run:
    """One run of one experiment. Call `execute()` once; it returns the engine's status."""

    def __init__(
        self,
        loaded: LoadedExperiment,
        *,
        run_id: str,
        journal: Journal,
        registry: Registry,
        clock: Clock,
        stop: threading.Event,
        listener: RunListener,
        dry_run: bool,
        seed: int,
        load_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.loaded = loaded
        self.experiment = loaded.experiment
        self.run_id = run_id
        self.journal = journal
        self.registry = registry
        self.clock = clock
        self.stop = stop
        self.stop_reason = ""
        self.listener = listener
        self.dry_run = dry_run
        self.seed = seed
        self._load_factory = load_factory
        self.phase = "created"
        self._started = clock.monotonic()
        self._target: Target | None = None
        self._sampler: Sampler | None = None
        self._load: Any = None
        self._load_view = _LoadView()
        self._faults: list[_Fault] = []
        self._active: dict[str, tuple[_Fault, Handle]] = {}
        self._active_lock = threading.Lock()
        self._teardown_done = False

    # ----------------------------------------------------------------- the timeline

    def execute(self) -> tuple[str, str]:
        """Run the whole timeline; return (status, reason) as written in the `end` record."""
        status, reason = "error", ""
        try:
            self._enter("preflight")
            self._preflight()
            if self.dry_run:
                status, reason = "dry_run", "dry run: nothing was injected"
                return status, reason
            self._start_load()
            self._enter("baseline")
            baseline_start = self.clock.monotonic()
            self._wait_until(baseline_start + self.experiment.phases.baseline)
            self._enter("faults")
            # The journal keeps every sample; the sampler's memory only serves recovery.
            self._forget_samples_before(self.clock.monotonic())
            last_end = self._faults_phase()
            self._enter("recovery")
            self._forget_samples_before(last_end)
            restored = self._recovery_phase(last_end)
            status = "completed" if restored else "failed"
            reason = (
                ""
                if restored
                else (
                    f"steady state not restored within the recovery deadline "
                    f"({self.experiment.phases.recovery_deadline:g}s)"
                )
            )
        except NotSteadyError as exc:
            status, reason = "not_steady", str(exc)
        except PreflightError as exc:
            status, reason = "invalid", str(exc)
        except Aborted as exc:
            status, reason = "aborted", str(exc)
        except KeyboardInterrupt:
            status, reason = "aborted", "interrupted (Ctrl-C)"
        except Exception as exc:
            # Our own errors read as they are; anything else is named by its type.
            status = "error"
            reason = (
                str(exc) if isinstance(exc, ChaosRunnerError) else f"{type(exc).__name__}: {exc}"
            )
            self.journal.write("error", message=reason, where=self.phase)
        finally:
            self._teardown(status, reason)
        return status, reason

    def _enter(self, phase: str) -> None:
        self._check_stop()
        self.phase = phase
        self.journal.write("phase", name=phase)
        self._notify(self.listener.phase_started, phase)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Aborted(self.stop_reason or "stopped")

    def _wait_until(self, deadline: float) -> None:
        if not self.clock.sleep_until(deadline, self.stop):
            self._check_stop()
        self._check_stop()
        self._check_load()

    # ----------------------------------------------------------------- preflight

    def _preflight(self) -> None:
        experiment = self.experiment
        factory = self.registry.target(experiment.target.kind)
        target = factory(
            self.loaded.target_params, base_dir=self.loaded.base_dir, journal=self.journal
        )
        self._target = target
        for i, spec in enumerate(experiment.faults):
            kind = self.registry.fault(spec.kind, experiment.target.kind)
            self._faults.append(
                _Fault(spec, experiment.fault_names()[i], kind, self.loaded.fault_params[i], [])
            )
        target.start()
        self.journal.write("target", kind=experiment.target.kind, description=target.describe())
        for fault in self._faults:
            fault.kind.check(fault.params, target)
        faults_start = experiment.phases.baseline
        for fault in self._faults:
            selector = fault.spec.selector
            if selector.seed is None:
                # A seed per fault, derived from the run's seed, so a run can be replayed.
                selector = selector.model_copy(update={"seed": self.seed + len(fault.name)})
            if fault.kind.scope == "target":
                planned = fault.kind.plan(fault.spec, fault.name, fault.params, [], target)
                fault.members = [Member(member, member) for member in _unique(planned)]
            else:
                fault.members = choose(
                    target.members(selector),
                    selector,
                    fault=fault.name,
                    max_blast_radius=experiment.safety.max_blast_radius,
                )
            fault.at = faults_start + fault.spec.offset
            self.journal.write(
                "selection",
                fault=fault.name,
                kind=fault.spec.kind,
                members=[{"id": m.id, "name": m.name} for m in fault.members],
                reversible=fault.kind.reversible,
                offset=fault.spec.offset,
                duration=fault.spec.duration,
                seed=selector.seed,
            )
        plan = [
            PlannedFault(
                f.name, f.spec.kind, tuple(f.members), f.at, f.spec.duration, f.kind.reversible
            )
            for f in self._faults
        ]
        self._notify(self.listener.plan_ready, plan, target.describe())
        self._sampler = Sampler(self._bind_probes(target), journal=self.journal, clock=self.clock)
        self._sampler.start()
        self._await_steady()

    def _bind_probes(self, target: Target) -> list[tuple[Any, ProbeCheck]]:
        variables = dict(target.variables())
        context = ProbeContext(base_dir=self.loaded.base_dir, variables=variables, target=target)
        bound: list[tuple[Any, ProbeCheck]] = []
        for i, spec in enumerate(self.experiment.probes):
            kind = self.registry.probe(spec.kind)
            where = f"probes[{i}] ({spec.name})"
            try:
                raw = substitute(self.loaded.probe_params[i].model_dump(mode="json"), variables)
                params: BaseModel = kind.Params.model_validate(raw)
                bound.append((spec, kind.bind(params, context)))
            except (KeyError, ValueError, ValidationError) as exc:
                raise PreflightError(f"{where}: {exc}") from exc
        return bound

    def _await_steady(self) -> None:
        """Every steady probe must pass once (they get until preflight_timeout to do so)."""
        assert self._sampler is not None
        steady = [p for p in self.experiment.probes if p.steady]
        deadline = self.clock.monotonic() + self.experiment.phases.preflight_timeout
        failing: dict[str, str] = {}
        passed: set[str] = set()
        while True:
            outcomes = self._sampler.sample_once_all(timeout=max(p.timeout for p in steady))
            for probe in steady:
                outcome = outcomes.get(probe.name)
                if outcome is not None and outcome.ok:
                    passed.add(probe.name)
                    failing.pop(probe.name, None)
                elif probe.name not in passed:
                    failing[probe.name] = (outcome.error if outcome else None) or "failed"
            if len(passed) == len(steady):
                return
            if self.clock.monotonic() >= deadline:
                detail = "; ".join(f"{name}: {why}" for name, why in sorted(failing.items()))
                raise NotSteadyError(
                    f"the system is not in steady state before any fault, nothing was "
                    f"injected ({detail})"
                )
            self._check_stop()
            self.clock.sleep_until(self.clock.monotonic() + 0.2, self.stop)

    # ----------------------------------------------------------------- load

    def _start_load(self) -> None:
        spec = self.experiment.load
        if spec is None or not spec.enabled:
            return
        assert self._target is not None
        variables = dict(self._target.variables())
        host = substitute(spec.host or "${target.url}", variables)
        experiment = self.experiment
        longest = (
            experiment.phases.baseline
            + experiment.faults_phase_length()
            + experiment.phases.recovery_deadline
            + experiment.phases.hold
            + 60.0
        )
        if self._load_factory is None:
            from chaos_runner.load import LoadGenerator

            factory: Callable[..., Any] = LoadGenerator
        else:
            factory = self._load_factory
        self._load = factory(
            spec,
            host=host,
            base_dir=self.loaded.base_dir,
            max_duration=longest,
            on_window=self._on_window,
        )
        self._load.start()

    def _on_window(self, window: dict[str, Any]) -> None:
        record = dict(window)
        t1 = float(record.get("t1", self.clock.monotonic()))
        self.journal.write("load", t=t1, **{k: v for k, v in record.items() if k != "t"})
        self._load_view.add(record)
        safety = self.experiment.safety
        if safety.abort_error_ratio is not None and self.phase in (
            "baseline",
            "faults",
            "recovery",
        ):
            requests, failures, _ = self._load_view.over(safety.abort_window, t1)
            if requests >= 10 and failures / requests > safety.abort_error_ratio:
                self._request_stop(
                    f"stop condition: load error ratio {failures / requests:.1%} over the last "
                    f"{safety.abort_window:g}s exceeds safety.abort_error_ratio "
                    f"({safety.abort_error_ratio:.1%})"
                )

    def _check_load(self) -> None:
        if self._load is not None and self._load.error:
            raise Aborted(f"the load generator died: {self._load.error}")

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop as soon as it can; teardown still reverts everything."""
        self._request_stop(reason)

    def _request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.journal.write("abort", reason=reason)
            self._notify(self.listener.message, f"aborting: {reason}", warning=True)
            self.stop.set()

    # ----------------------------------------------------------------- faults

    def _faults_phase(self) -> float:
        """Inject and revert on schedule; return the monotonic time of the last fault's end."""
        origin = self.clock.monotonic() - self.experiment.phases.baseline
        actions: list[tuple[float, int, str, _Fault]] = []
        for fault in self._faults:
            actions.append((origin + fault.at, 0, "inject", fault))
            if fault.kind.reversible:
                actions.append((origin + fault.at + fault.spec.duration, 1, "revert", fault))
        actions.sort(key=lambda a: (a[0], a[1]))
        end_of_phase = (
            origin + self.experiment.phases.baseline + (self.experiment.faults_phase_length())
        )
        last_end = self.clock.monotonic()
        for when, _, action, fault in actions:
            self._wait_until(when)
            if action == "inject":
                self._inject(fault)
                if not fault.kind.reversible:
                    last_end = max(last_end, self.clock.monotonic())
            else:
                self._revert_fault(fault, reason="scheduled")
                last_end = max(last_end, self.clock.monotonic())
        self._wait_until(end_of_phase)
        return last_end

    def _inject(self, fault: _Fault) -> None:
        assert self._target is not None
        target = self._target
        try:
            # Members are re-resolved now: a replica restarted since preflight has a new pid.
            current = {m.id: m for m in target.members(fault.spec.selector)}
            members = [current.get(m.id, m) for m in fault.members]
            fault.handles = fault.kind.plan(fault.spec, fault.name, fault.params, members, target)
        except ChaosRunnerError as exc:
            self._fault_failed(fault, f"planning failed: {exc}")
            return
        for handle in fault.handles:
            self._check_stop()
            # Journalled (and fsynced) before the fault is made: a crash from here on can
            # still be reverted from the journal.
            self.journal.write("handle", handle=handle.to_json(), reversible=fault.kind.reversible)
            if fault.kind.reversible:
                with self._active_lock:
                    self._active[handle.id] = (fault, handle)
            error: str | None = None
            try:
                fault.kind.inject(handle, fault.params, target)
                fault.injected.append(handle)
            except Exception as exc:
                error = (
                    f"{type(exc).__name__}: {exc}" if not isinstance(exc, FaultError) else str(exc)
                )
            self.journal.write("inject", handle=handle.id, ok=error is None, error=error)
            self._notify(self.listener.fault_injected, handle, error)

    def _fault_failed(self, fault: _Fault, error: str) -> None:
        self.journal.write("error", message=f"fault {fault.name}: {error}", where="faults")
        self._notify(self.listener.message, f"fault {fault.name}: {error}", warning=True)

    def _revert_fault(self, fault: _Fault, *, reason: str) -> None:
        for handle in fault.handles:
            with self._active_lock:
                active = self._active.pop(handle.id, None)
            if active is not None:
                self._revert(fault, handle, reason)

    def _revert(self, fault: _Fault, handle: Handle, reason: str) -> None:
        assert self._target is not None
        error: str | None = None
        try:
            fault.kind.revert(handle, self._target)
        except Exception as exc:
            error = str(exc) if isinstance(exc, FaultError) else f"{type(exc).__name__}: {exc}"
        self.journal.write("revert", handle=handle.id, ok=error is None, error=error, reason=reason)
        self._notify(self.listener.fault_reverted, handle, error, reason)

    # ----------------------------------------------------------------- recovery

    def _forget_samples_before(self, t: float) -> None:
        if self._sampler is not None:
            self._sampler.forget_before(t)

    def _recovery_phase(self, last_end: float) -> bool:
        assert self._sampler is not None
        phases = self.experiment.phases
        steady = [p.name for p in self.experiment.probes if p.steady]
        deadline = self.clock.monotonic() + phases.recovery_deadline
        while True:
            start = analysis.recovery_start(
                self._sampler.recent(after=last_end), steady, after=last_end, hold=phases.hold
            )
            if start is not None:
                self._notify(self.listener.steady_state_restored, start - last_end)
                return True
            now = self.clock.monotonic()
            if now >= deadline:
                self._notify(
                    self.listener.message,
                    "recovery deadline passed: the steady state was not restored",
                    warning=True,
                )
                return False
            self._wait_until(min(deadline, now + POLL))

    # ----------------------------------------------------------------- teardown

    def _teardown(self, status: str, reason: str) -> None:
        """Load off, every active fault reverted, probes and target stopped. Runs once."""
        if self._teardown_done:
            return
        self._teardown_done = True
        self.phase = "teardown"
        self.journal.write("phase", name="teardown")
        self._notify(self.listener.phase_started, "teardown")
        revert_reason = "abort" if status in ("aborted", "error") else "teardown"
        with self._active_lock:
            leftovers = list(self._active.values())
            self._active.clear()
        # In parallel: each revert may have to start a helper (a Docker network revert takes
        # ~0.4 s), and a SIGTERM'd runner has seconds at most before it is killed outright.
        if leftovers:
            with ThreadPoolExecutor(
                max_workers=min(len(leftovers), 16), thread_name_prefix="revert"
            ) as pool:
                # list(): a revert that raised past its own handling surfaces here.
                list(
                    pool.map(
                        lambda active: self._revert(active[0], active[1], revert_reason),
                        reversed(leftovers),
                    )
                )
        steps: list[tuple[str, Callable[[], None]]] = []
        if self._load is not None:
            steps.append(("load", self._load.stop))
        if self._sampler is not None:
            steps.append(("probes", self._sampler.stop))
        if self._target is not None:
            steps.append(("target", self._target.stop))
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                self.journal.write("error", message=f"stopping {what}: {exc}", where="teardown")
        self.journal.write("end", status=status, reason=reason)

    # ----------------------------------------------------------------- live view

    def snapshot(self) -> Snapshot:
        now = self.clock.monotonic()
        requests, failures, p95 = self._load_view.over(2.0, now)
        span = 2.0
        probes: dict[str, ProbeState] = {}
        if self._sampler is not None:
            for name, last in self._sampler.latest().items():
                probes[name] = ProbeState(
                    ok=last.ok,
                    latency_ms=last.latency_ms,
                    error=last.error,
                    recent_ok_ratio=last.recent_ok_ratio,
                )
        with self._active_lock:
            active = tuple(sorted({f.name for f, _ in self._active.values()}))
        return Snapshot(
            run_id=self.run_id,
            phase=self.phase,
            elapsed=now - self._started,
            requests_per_second=requests / span if self._load is not None else None,
            error_ratio=(failures / requests) if requests else None,
            p95_ms=p95,
            probes=probes,
            active_faults=active,
        )

    def _notify(self, hook: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            hook(*args, **kwargs)
        except Exception as exc:  # a listener must never break a run
            self.journal.write(
                "error", message=f"listener {hook.__name__}: {exc}", where="listener"
            )


def derive_seed(seed: int | None) -> int:
    """The run's seed: the one given, or a fresh one that the journal records."""
    return seed if seed is not None else random.SystemRandom().randrange(2**31)


def _unique(handles: list[Handle]) -> list[str]:
    """The members the handles act on, each once, in order."""
    return list(dict.fromkeys(handle.member for handle in handles))
