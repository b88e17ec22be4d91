"""The probe sampler: every probe sampled continuously, on its own deadline-based schedule.

Tick k of a probe is due at origin + k * interval (no drift). Each probe has a few worker
threads, started as needed up to ceil(timeout / interval) + 1 and then kept, so a sample that
outlasts its interval (a blackhole) never delays the next ones. Every sample goes to the
journal stamped with the monotonic and wall time of its *start*. The sampler keeps only a
bounded window of outcomes in memory (the journal is the record) and never faults anything.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

from chaos_runner.clock import Clock
from chaos_runner.experiment import ProbeSpec, format_duration
from chaos_runner.journal import Journal
from chaos_runner.plugins import Outcome, ProbeCheck

HISTORY = 36_000
"""Outcomes kept in memory per probe for `recent()` (30 minutes at 20 Hz), whatever the
engine forgets: memory stays bounded on a run of any length."""

RATIO_WINDOW = 20
"""Samples over which `latest()` computes a probe's recent ok ratio."""

REPORT_EVERY = 5.0
"""Seconds between two `error` records about one probe's skipped ticks."""


@dataclass(frozen=True)
class LastSample:
    """What a live view shows of one probe: its last sample and how the recent ones went."""

    ok: bool | None
    latency_ms: float | None
    error: str | None
    started: float | None
    """Monotonic start of the last sample; None before the first one."""
    recent_ok_ratio: float | None
    """Share of the last RATIO_WINDOW samples that passed."""
    samples: int
    skipped: int
    """Ticks skipped because every worker of the probe was still busy (see `Sampler`)."""


class _Probe:
    """One probe's schedule, workers and recent outcomes; guarded by its own lock."""

    def __init__(self, spec: ProbeSpec, check: ProbeCheck, history: int) -> None:
        self.check = check
        self.name = spec.name
        self.interval = spec.interval
        self.timeout = spec.timeout
        self.cap = math.ceil(spec.timeout / spec.interval) + 1
        self.lock = threading.Lock()
        self.next_tick = 0
        self.threads: list[threading.Thread] = []
        self.waiting = 0
        self.skipped = 0
        self.unreported = 0
        self.reported_at: float | None = None
        self.samples = 0
        # (start, end, ok), in the order samples ended.
        self.history: deque[tuple[float, float, bool]] = deque(maxlen=history)
        self.recent_oks: deque[bool] = deque(maxlen=RATIO_WINDOW)
        self.last: tuple[float, bool, float, str | None] | None = None


class Sampler:
    """Samples every probe until stopped; see the module docstring for the schedule.

    When every worker of a probe is still busy at a tick (its checks do not return within
    their timeout, or the process is starved of CPU), the tick is skipped rather than faked:
    no sample is written for it, `LastSample.skipped` counts it and an `error` record says
    so (at most once per REPORT_EVERY seconds per probe, and once more at stop). A made-up
    failed sample would claim an observation nobody made; the gap in the journal is the
    honest record.
    """

    def __init__(
        self,
        probes: Sequence[tuple[ProbeSpec, ProbeCheck]],
        *,
        journal: Journal,
        clock: Clock,
        history: int = HISTORY,
    ) -> None:
        names = [spec.name for spec, _ in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique, got {names}")
        self.journal = journal
        self.clock = clock
        self._probes = [_Probe(spec, check, history) for spec, check in probes]
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()
        self._started = False
        self._stopped = False
        self._origin = 0.0
        # Held while writing a sample, so that once stop() has silenced the sampler no
        # sample can land in the journal after it (e.g. after the run's `end` record).
        self._record_lock = threading.Lock()
        self._silenced = False
        self._once: ThreadPoolExecutor | None = None

    @property
    def origin(self) -> float:
        """Monotonic time of tick 0 of every probe (tick k is due at origin + k * interval)."""
        return self._origin

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        with self._lifecycle:
            if self._started:
                raise RuntimeError("a Sampler can be started only once")
            self._started = True
            self._origin = self.clock.monotonic()
            for probe in self._probes:
                with probe.lock:
                    self._spawn(probe)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sampling, wait up to `timeout` seconds for samples in flight (they are
        journalled), then close every check. Idempotent; safe before start()."""
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            self._stop.set()
        threads: list[threading.Thread] = []
        for probe in self._probes:
            with probe.lock:  # no worker spawns another once the stop flag is seen
                threads.extend(probe.threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for probe in self._probes:
            with probe.lock:
                unreported, probe.unreported = probe.unreported, 0
            if unreported:
                self._report_skipped(probe, unreported)
        with self._record_lock:
            self._silenced = True
        if self._once is not None:
            self._once.shutdown(wait=False, cancel_futures=True)
        for probe in self._probes:
            try:
                probe.check.close()
            except Exception as exc:  # closing one probe must not keep the others open
                self.journal.write(
                    "error", message=f"closing probe {probe.name}: {exc}", where="sampler"
                )

    # ----------------------------------------------------------------- scheduling

    def _spawn(self, probe: _Probe) -> None:
        """Start one more worker for `probe`; the caller holds probe.lock."""
        thread = threading.Thread(
            target=self._work,
            args=(probe,),
            name=f"probe-{probe.name}-{len(probe.threads) + 1}",
            daemon=True,  # a check that hangs must never keep the runner from exiting
        )
        probe.threads.append(thread)
        thread.start()

    def _work(self, probe: _Probe) -> None:
        # The worker that sleeps until a tick is the one that samples it: no hand-off
        # between threads, so a sample starts as close to its deadline as the OS allows.
        while not self._stop.is_set():  # checked first: a claim after stop skips nothing
            with probe.lock:
                tick, report = self._claim(probe)
                probe.waiting += 1
            if report:
                self._report_skipped(probe, report)
            awake = self.clock.sleep_until(self._origin + tick * probe.interval, self._stop)
            with probe.lock:
                probe.waiting -= 1
                if not awake or self._stop.is_set():
                    return
                if probe.waiting == 0 and len(probe.threads) < probe.cap:
                    self._spawn(probe)  # so that the next tick has a worker waiting for it
            self._sample(probe, probe.timeout)

    def _claim(self, probe: _Probe) -> tuple[int, int]:
        """The next tick to sample, and the number of skipped ticks to report now (at
        most one report per REPORT_EVERY seconds); the caller holds probe.lock.

        A tick already overdue by a whole interval or more found no free worker in time:
        it and the ticks after it up to the current one are skipped, and the current
        one (less than an interval late) is sampled.
        """
        tick = probe.next_tick
        now = self.clock.monotonic()
        current = math.floor((now - self._origin) / probe.interval)
        report = 0
        if current > tick:
            probe.skipped += current - tick
            probe.unreported += current - tick
            tick = current
            if probe.reported_at is None or now - probe.reported_at >= REPORT_EVERY:
                report, probe.unreported, probe.reported_at = probe.unreported, 0, now
        probe.next_tick = tick + 1
        return tick, report

    def _report_skipped(self, probe: _Probe, skipped: int) -> None:
        self._write(
            "error",
            message=(
                f"probe {probe.name}: {skipped} tick(s) skipped, every one of its "
                f"{len(probe.threads)} workers was busy (checks outlasting their "
                f"{format_duration(probe.timeout)} timeout, or the runner starved of CPU)"
            ),
            where="sampler",
        )

    # ----------------------------------------------------------------- sampling

    def _sample(self, probe: _Probe, timeout: float) -> Outcome:
        start = self.clock.monotonic()
        wall = self.clock.wall()
        try:
            outcome = probe.check(timeout)
        except Exception as exc:  # the protocol forbids it; a third-party probe may still
            text = f"probe raised {type(exc).__name__}: {exc}"
            outcome = Outcome(ok=False, error=text if len(text) <= 200 else text[:197] + "...")
        end = self.clock.monotonic()
        ms = round((end - start) * 1000, 2)
        with probe.lock:
            probe.samples += 1
            probe.history.append((start, end, outcome.ok))
            probe.recent_oks.append(outcome.ok)
            if probe.last is None or start >= probe.last[0]:
                probe.last = (start, outcome.ok, ms, outcome.error)
        fields: dict[str, object] = {
            "t": start,
            "w": wall,
            "probe": probe.name,
            "ok": outcome.ok,
            "ms": ms,
            "err": outcome.error,
        }
        if outcome.value is not None:
            fields["v"] = outcome.value
        self._write("sample", **fields)
        return outcome

    def _write(self, type: str, **fields: object) -> None:
        with self._record_lock:
            if not self._silenced:
                self.journal.write(type, **fields)

    def sample_once_all(self, timeout: float) -> dict[str, Outcome]:
        """Sample every probe once, concurrently (for preflight), each with its own timeout
        capped at `timeout`. The samples are journalled like any other. A check that has not
        returned shortly after `timeout` counts as failed."""
        if self._once is None:
            self._once = ThreadPoolExecutor(
                max_workers=max(1, len(self._probes)), thread_name_prefix="probe-once"
            )
        futures = {
            probe.name: self._once.submit(self._sample, probe, min(probe.timeout, timeout))
            for probe in self._probes
        }
        wait_futures(futures.values(), timeout=timeout + 1.0)
        outcomes: dict[str, Outcome] = {}
        for name, future in futures.items():
            if future.done() and not future.cancelled():
                outcomes[name] = future.result()
            else:
                outcomes[name] = Outcome(
                    ok=False, error=f"did not return within {format_duration(timeout)}"
                )
        return outcomes

    # ----------------------------------------------------------------- views

    def latest(self) -> dict[str, LastSample]:
        """Each probe's last sample (by start time) and its recent ok ratio."""
        view: dict[str, LastSample] = {}
        for probe in self._probes:
            with probe.lock:
                last = probe.last
                oks = list(probe.recent_oks)
                samples, skipped = probe.samples, probe.skipped
            view[probe.name] = LastSample(
                ok=last[1] if last else None,
                latency_ms=last[2] if last else None,
                error=last[3] if last else None,
                started=last[0] if last else None,
                recent_ok_ratio=sum(oks) / len(oks) if oks else None,
                samples=samples,
                skipped=skipped,
            )
        return view

    def recent(self, after: float) -> list[tuple[str, float, bool]]:
        """(probe, start, ok) of every sample kept that started at or after `after`, in
        order of start. Samples still in flight are not in it yet."""
        found: list[tuple[str, float, bool]] = []
        for probe in self._probes:
            with probe.lock:
                # History is in order of end; a sample that ended before `after` started
                # before it, so the scan from the newest end stops there.
                for start, end, ok in reversed(probe.history):
                    if end < after:
                        break
                    if start >= after:
                        found.append((probe.name, start, ok))
        found.sort(key=lambda sample: sample[1])
        return found

    def forget_before(self, t: float) -> None:
        """Drop kept outcomes of samples that ended before `t` (the journal keeps them)."""
        for probe in self._probes:
            with probe.lock:
                while probe.history and probe.history[0][1] < t:
                    probe.history.popleft()
