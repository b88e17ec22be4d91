"""Following a Docker engine's event stream, as `event` records in the run's journal.

A thread reads the engine's container and network events (die, start, restart, kill, pause,
health_status, disconnect...) for the containers the target says matter, and stamps each on
the runner's monotonic clock, so analysis can set what the engine saw beside probe samples.
It only records: it never acts on a container, and never lets a bad event stop the thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos_runner.targets.docker import sidecar

if TYPE_CHECKING:
    from chaos_runner.journal import Journal

CONTAINER_ACTIONS = frozenset(
    {
        "create",
        "start",
        "restart",
        "die",
        "kill",
        "stop",
        "pause",
        "unpause",
        "oom",
        "destroy",
        "health_status",
    }
)
"""What a chaos run wants to see; exec_*, attach, resize, top and the like are noise."""

NETWORK_ACTIONS = frozenset({"connect", "disconnect"})

RETRY_SECONDS = 1.0
"""Pause before following again when the engine closed the stream (e.g. it restarted)."""


@dataclass(frozen=True)
class EngineEvent:
    """One event the engine reported about a container of interest."""

    action: str
    """die, start, restart, kill, stop, pause, unpause, oom, create, destroy, health_status,
    connect or disconnect (the last two: to or from a network, named in detail)."""
    member: str
    """The container's name."""
    container_id: str
    t: float
    """When the engine says it happened, on the runner's monotonic clock."""
    w: float
    """The same moment as wall-clock seconds since the epoch (the engine's clock)."""
    detail: Mapping[str, Any] = field(default_factory=dict)


class EventFollower:
    """A thread reading one engine's events; `start` opens the stream before it returns."""

    def __init__(
        self,
        client: Any,
        *,
        journal: Journal | None,
        on_event: Callable[[EngineEvent], None] | None,
        interesting: Callable[[str, Mapping[str, str]], bool],
        known: Mapping[str, str],
    ) -> None:
        self._client = client
        self._journal = journal
        self._on_event = on_event
        self._interesting = interesting
        self._known = known
        """Container id -> name, for network events, which carry no container name."""
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._offset = 0.0
        self._last_nanos = 0
        self._at_last: set[tuple[str, str]] = set()
        """What was recorded at `_last_nanos`, to skip it when the engine sends it again."""
        self._replaying = False

    def start(self) -> None:
        # The engine stamps events with its wall clock in ns; the offset to the monotonic
        # clock is measured once, so every event of a run moves by the same amount.
        self._offset = time.time() - time.monotonic()
        self._stream = self._open(since=None)
        self._thread = threading.Thread(target=self._follow, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping.set()
            stream, self._stream = self._stream, None
        _close(stream)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _open(self, since: str | None) -> Any:
        return self._client.events(
            decode=True, since=since, filters={"type": ["container", "network"]}
        )

    def _follow(self) -> None:
        reported = False
        while not self._stopping.is_set():
            stream = self._stream
            try:
                for raw in stream or ():
                    self._receive(raw)
            except Exception as exc:  # a broken stream must not end the run's event record
                if not self._stopping.is_set() and not reported:
                    self._error(f"the Docker event stream failed: {exc}")
                    reported = True
            if self._stopping.wait(RETRY_SECONDS):
                return
            since = f"{self._last_nanos / 1e9:.9f}" if self._last_nanos else None
            try:
                fresh = self._open(since=since)
            except Exception as exc:
                if not reported:
                    self._error(f"cannot follow the Docker engine's events again: {exc}")
                    reported = True
                continue
            with self._lock:
                if self._stopping.is_set():
                    _close(fresh)
                    return
                self._stream = fresh
                self._replaying = since is not None

    def _receive(self, raw: Mapping[str, Any]) -> None:
        try:
            event = self._event(raw)
        except (KeyError, TypeError, ValueError) as exc:
            self._error(f"an unreadable Docker event ({exc}): {raw!r}")
            return
        if event is None:
            return
        if self._journal is not None:
            self._journal.write(
                "event",
                source="docker",
                action=event.action,
                member=event.member,
                detail={"container": event.container_id, **event.detail},
                t=event.t,
                w=event.w,
            )
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:
                self._error(f"the Docker event callback failed: {exc}")

    def _event(self, raw: Mapping[str, Any]) -> EngineEvent | None:
        kind = raw.get("Type")
        action, _, rest = str(raw.get("Action") or raw.get("status") or "").partition(":")
        attributes: Mapping[str, str] = (raw.get("Actor") or {}).get("Attributes") or {}
        detail: dict[str, Any] = {}
        if kind == "network":
            container_id = str(attributes.get("container") or "")
            name = self._names.get(container_id) or self._known.get(container_id)
            if action not in NETWORK_ACTIONS or name is None:
                return None
            detail["network"] = attributes.get("name")
        elif kind == "container":
            container_id = str((raw.get("Actor") or {}).get("ID") or raw.get("id") or "")
            if action not in CONTAINER_ACTIONS or sidecar.HELPER_LABEL in attributes:
                return None
            if not self._interesting(container_id, attributes):
                return None
            name = str(attributes.get("name") or container_id[:12])
            self._names[container_id] = name
            if "exitCode" in attributes:
                detail["exit_code"] = int(attributes["exitCode"])
            if "signal" in attributes:
                detail["signal"] = int(attributes["signal"])
            if rest.strip():
                detail["status"] = rest.strip()
            if attributes.get("image"):
                detail["image"] = attributes["image"]
        else:
            return None
        nanos = int(raw.get("timeNano") or int(raw["time"]) * 1_000_000_000)
        if self._replaying:
            # Following again from the last event recorded replays it (and its peers).
            if nanos < self._last_nanos or (
                nanos == self._last_nanos and (container_id, action) in self._at_last
            ):
                return None
            self._replaying = False
        if nanos > self._last_nanos:
            self._last_nanos, self._at_last = nanos, set()
        if nanos == self._last_nanos:
            self._at_last.add((container_id, action))
        wall = nanos / 1e9
        return EngineEvent(action, name, container_id, wall - self._offset, wall, detail)

    def _error(self, message: str) -> None:
        if self._journal is not None:
            self._journal.write("error", message=message, where="docker events")


def _close(stream: Any) -> None:
    if stream is None:
        return
    # Already closed by the engine, or never fully open: nothing more to release.
    with contextlib.suppress(Exception):
        stream.close()
