"""Starts the local target's replicas and restarts dead ones after a delay, like an orchestrator.

One long-lived thread forks every child (the replicas, and the fault proxy through `spawn`)
and watches the replicas every 20 ms. Children get PR_SET_PDEATHSIG=SIGKILL, which fires
when the *thread* that forked them exits; with one thread that lives as long as the
supervisor, no child outlives the runner. A paused (SIGSTOPped) replica is alive, not dead.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_runner.errors import TargetError

POLL = 0.02
"""Seconds between two looks at the replicas: how late a death is noticed, at most."""

EventSink = Callable[[str, str, dict[str, Any]], None]
"""on_event(action, member, detail): action is "start", "die", "restart" or "restart_failed"."""

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when its parent thread exits."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class ReplicaSpec:
    """How to start one replica. It keeps its port across restarts, so the proxy's
    backend list stays valid."""

    name: str
    port: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ReplicaState:
    """A replica as the supervisor last saw it."""

    index: int
    name: str
    port: int
    pid: int | None
    running: bool
    restarts: int
    last_exit: str | None


@dataclass
class _Replica:
    spec: ReplicaSpec
    log: Path
    process: subprocess.Popen[bytes] | None = None
    running: bool = False
    restarts: int = 0
    died_at: float | None = None
    restart_at: float | None = None
    last_exit: str | None = None


def describe_exit(code: int) -> dict[str, Any]:
    """A Popen return code as journal detail: {"exit_code": 1} or {"signal": "SIGKILL"}."""
    if code < 0:
        try:
            return {"signal": signal.Signals(-code).name}
        except ValueError:
            return {"signal": str(-code)}
    return {"exit_code": code}


def exit_text(code: int) -> str:
    """A Popen return code for people: 'exit code 1' or 'killed by SIGKILL'."""
    detail = describe_exit(code)
    return f"killed by {detail['signal']}" if "signal" in detail else f"exit code {code}"


class Supervisor:
    """The replicas of one local target, and the thread that forks and watches them."""

    def __init__(
        self,
        specs: Sequence[ReplicaSpec],
        *,
        restart_delay: float,
        log_dir: Path,
        on_event: EventSink | None = None,
        poll: float = POLL,
    ) -> None:
        self.restart_delay = restart_delay
        self.poll = poll
        self.on_event = on_event
        self._replicas = [_Replica(spec, log_dir / f"{spec.name}.log") for spec in specs]
        self._calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the watcher thread, then every replica (from that thread)."""
        self._thread = threading.Thread(target=self._loop, name="local-supervisor", daemon=True)
        self._thread.start()
        for replica in self._replicas:
            self._on_thread(functools.partial(self._launch, replica)).result()
            assert replica.process is not None
            self._emit("start", replica, {"pid": replica.process.pid, "port": replica.spec.port})

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start another child (the fault proxy) from the supervisor's thread, so it dies
        with the runner too. Keyword arguments go to subprocess.Popen."""

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                list(argv), preexec_fn=_die_with_parent, start_new_session=True, **popen
            )

        process: subprocess.Popen[bytes] = self._on_thread(launch).result()
        return process

    def stop(self, timeout: float = 3.0) -> None:
        """Terminate every replica (SIGCONT first for a paused one, SIGTERM, then SIGKILL
        after `timeout`), then end the thread. Idempotent."""
        if self._thread is None:
            return
        try:
            if self._thread.is_alive():
                self._on_thread(lambda: self._terminate(timeout)).result()
        finally:
            self._stopping.set()
            self._calls.put(lambda: None)
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------- views

    def replicas(self) -> list[ReplicaState]:
        with self._lock:
            return [
                ReplicaState(
                    index=i,
                    name=r.spec.name,
                    port=r.spec.port,
                    pid=r.process.pid if r.process is not None else None,
                    running=r.running,
                    restarts=r.restarts,
                    last_exit=r.last_exit,
                )
                for i, r in enumerate(self._replicas)
            ]

    def log_tail(self, index: int, lines: int = 15) -> str:
        """The last lines a replica wrote (stdout and stderr), for error messages."""
        try:
            with open(self._replicas[index].log, "rb") as log:
                # Only the end: a chatty command may have logged every request.
                log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    # ---------------------------------------------------------- the one thread

    def _on_thread(self, call: Callable[[], Any]) -> Future[Any]:
        if self._thread is None or not self._thread.is_alive():
            raise TargetError("the local supervisor is not running")
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

        self._calls.put(run)
        return future

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Empty):
                self._calls.get(timeout=self.poll)()
            try:
                self._watch()
            except Exception as exc:
                # This thread must outlive any one bad turn: its children die with it.
                if self.on_event is not None:
                    with contextlib.suppress(Exception):
                        self.on_event("error", "supervisor", {"error": repr(exc)})
        # Launch requests that raced with stop() must not wait forever.
        while not self._calls.empty():
            self._calls.get_nowait()()

    def _launch(self, replica: _Replica) -> None:
        spec = replica.spec
        with open(replica.log, "ab") as log:
            try:
                process = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **spec.env},
                    cwd=spec.cwd,
                    preexec_fn=_die_with_parent,
                    start_new_session=True,
                )
            except OSError as exc:
                raise TargetError(
                    f"{spec.name}: cannot start {' '.join(spec.argv)!r}: {exc}"
                ) from exc
        with self._lock:
            replica.process = process
            replica.running = True

    def _terminate(self, timeout: float) -> None:
        # On the watcher's own thread, so that no restart can race with the shutdown.
        self._stopping.set()
        processes = [r.process for r in self._replicas if r.process is not None]
        for process in processes:
            _signal_group(process, signal.SIGCONT)
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            # A replica's own children (a user command that forks) go with it.
            _signal_group(process, signal.SIGKILL, reaped_ok=True)

    def _watch(self) -> None:
        now = time.monotonic()
        for replica in self._replicas:
            if self._stopping.is_set():
                return
            process = replica.process
            if replica.restart_at is None and process is not None:
                # poll() does not report a stopped child (no WUNTRACED): paused is alive.
                code = process.poll()
                if code is None:
                    continue
                _signal_group(process, signal.SIGKILL, reaped_ok=True)
                with self._lock:
                    replica.running = False
                    replica.last_exit = exit_text(code)
                replica.died_at = now
                replica.restart_at = now + self.restart_delay
                detail = {"pid": process.pid, **describe_exit(code)}
                self._emit("die", replica, {**detail, "restart_in": self.restart_delay})
            if replica.restart_at is not None and now >= replica.restart_at:
                self._restart(replica, now)

    def _restart(self, replica: _Replica, now: float) -> None:
        down = now - (replica.died_at or now)
        try:
            self._launch(replica)
        except TargetError as exc:
            replica.restart_at = now + max(self.restart_delay, 1.0)
            self._emit("restart_failed", replica, {"error": str(exc)})
            return
        with self._lock:
            replica.restarts += 1
        replica.restart_at = None
        assert replica.process is not None
        detail = {"pid": replica.process.pid, "port": replica.spec.port, "down": round(down, 3)}
        self._emit("restart", replica, detail)

    def _emit(self, action: str, replica: _Replica, detail: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        # A failing sink (a closed journal at teardown) must not stop the watching.
        with contextlib.suppress(Exception):
            self.on_event(action, replica.spec.name, detail)


def _signal_group(
    process: subprocess.Popen[bytes], signum: int, *, reaped_ok: bool = False
) -> None:
    """Signal the replica's process group (it leads its own session).

    Once the leader is reaped its pid may be reused, but not while its group still has
    members; `reaped_ok` allows signalling such leftovers of a dead replica.
    """
    if process.returncode is not None and not reaped_ok:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
