"""The timeline of a run: its journal records parsed into typed lists, and statistics over
spans of it (success ratio, rate, latency percentiles of load windows and probe samples).

Pure, like the analysis built on it: no process, socket or clock. Times are seconds from the
run's first record.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chaos_runner.experiment import Experiment
from chaos_runner.result import Stats, TimelineEvent

TOP_ERRORS = 5
"""How many distinct error texts a Stats keeps."""


@dataclass
class ProbeSample:
    """One probe sample: `t` is its start, `ms` its latency, `err` why it failed."""

    probe: str
    t: float
    ok: bool
    ms: float | None
    err: str | None


@dataclass
class LoadWindow:
    """One window of load statistics, [t0, t1), with its latency histogram (Locust's
    rounded buckets in ms, as strings)."""

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
class FaultRecords:
    """What the journal says of one fault: its selection, handles, injections, reverts."""

    name: str
    kind: str
    members: list[str]
    reversible: bool
    handles: list[str] = field(default_factory=list)
    injects: list[tuple[float, bool, str | None]] = field(default_factory=list)
    reverts: list[tuple[float, bool, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Timeline:
    """The records of one run, sorted by kind, with times made relative to its start."""

    origin: float = 0.0
    run: dict[str, Any] = field(default_factory=dict)
    experiment: Experiment | None = None
    experiment_name: str = "unknown"
    phases: list[tuple[str, float]] = field(default_factory=list)
    samples: list[ProbeSample] = field(default_factory=list)
    windows: list[LoadWindow] = field(default_factory=list)
    faults: dict[str, FaultRecords] = field(default_factory=dict)
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


def parse_journal(records: Iterable[Mapping[str, Any]]) -> Timeline:
    """The records of a run, as a Timeline; records of unknown types are ignored."""
    timeline = Timeline()
    records = list(records)
    if records:
        timeline.origin = float(records[0].get("t", 0.0))
    origin = timeline.origin

    def rel(value: Any) -> float:
        return float(value) - origin

    for record in records:
        kind = record.get("type")
        t = rel(record.get("t", origin))
        timeline.last_t = max(timeline.last_t, t)
        if kind == "run":
            timeline.run = dict(record)
            raw = record.get("experiment")
            if isinstance(raw, Mapping):
                name = raw.get("metadata", {}).get("name")
                timeline.experiment_name = str(name) if name else timeline.experiment_name
                try:
                    timeline.experiment = Experiment.model_validate(raw)
                except ValidationError as exc:
                    timeline.errors.append(f"the timeline's experiment does not validate: {exc}")
        elif kind == "phase":
            timeline.phases.append((str(record["name"]), t))
        elif kind == "sample":
            timeline.samples.append(
                ProbeSample(
                    str(record["probe"]),
                    t,
                    bool(record["ok"]),
                    None if record.get("ms") is None else float(record["ms"]),
                    record.get("err"),
                )
            )
        elif kind == "load":
            timeline.windows.append(
                LoadWindow(
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
            timeline.faults[name] = FaultRecords(
                name,
                str(record.get("kind", "")),
                [str(m.get("name", m.get("id"))) for m in record.get("members", [])],
                bool(record.get("reversible", True)),
            )
        elif kind == "handle":
            handle = record["handle"]
            fault = timeline.faults.get(str(handle["fault"]))
            if fault is not None:
                fault.handles.append(str(handle["id"]))
                timeline.handle_fault[str(handle["id"])] = fault.name
        elif kind in ("inject", "revert"):
            owner = timeline.handle_fault.get(str(record.get("handle")))
            if owner is None:
                continue
            fault = timeline.faults[owner]
            entry = (t, bool(record.get("ok")), record.get("error"))
            (fault.injects if kind == "inject" else fault.reverts).append(entry)
            if record.get("error"):
                fault.errors.append(f"{kind}: {record['error']}")
        elif kind == "event":
            timeline.events.append(
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
            timeline.errors.append(message)
            for fault in timeline.faults.values():
                if message.startswith(f"fault {fault.name}:"):
                    fault.errors.append(message.split(": ", 1)[1])
        elif kind == "abort":
            timeline.aborts.append(str(record.get("reason", "")))
        elif kind == "end":
            timeline.end = dict(record)
    return timeline


# --------------------------------------------------------------------- statistics


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def hist_percentile(hist: Mapping[float, int], fraction: float) -> float | None:
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


def _windows_in(windows: Sequence[LoadWindow], begin: float, end: float) -> list[LoadWindow]:
    """Windows whose middle falls in [begin, end): adjacent spans never count one twice."""
    return [w for w in windows if begin <= w.middle < end]


def merged_hist(windows: Sequence[LoadWindow], begin: float, end: float) -> Counter[float]:
    hist: Counter[float] = Counter()
    for w in _windows_in(windows, begin, end):
        for bucket, count in w.hist.items():
            hist[float(bucket)] += int(count)
    return hist


def load_stats(windows: Sequence[LoadWindow], begin: float, end: float) -> Stats:
    chosen = _windows_in(windows, begin, end)
    total = sum(w.requests for w in chosen)
    failures = sum(w.failures for w in chosen)
    hist = merged_hist(windows, begin, end)
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
        p50_ms=hist_percentile(hist, 0.50),
        p95_ms=hist_percentile(hist, 0.95),
        p99_ms=hist_percentile(hist, 0.99),
        max_ms=max(maxima) if maxima else None,
        errors=_top(errors),
    )


def probe_stats(samples: Sequence[ProbeSample], begin: float, end: float) -> Stats:
    chosen = [s for s in samples if begin <= s.t < end]
    total = len(chosen)
    failures = sum(1 for s in chosen if not s.ok)
    latencies = sorted(s.ms for s in chosen if s.ms is not None)
    return Stats(
        total=total,
        failures=failures,
        success_ratio=(total - failures) / total if total else None,
        per_second=total / (end - begin) if end > begin else None,
        p50_ms=nearest_rank(latencies, 0.50),
        p95_ms=nearest_rank(latencies, 0.95),
        p99_ms=nearest_rank(latencies, 0.99),
        max_ms=latencies[-1] if latencies else None,
        errors=_top(Counter(s.err or "failed" for s in chosen if not s.ok)),
    )
