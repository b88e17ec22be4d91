"""The runner's side of the load: a Locust worker process and the windows it streams back.

`LoadGenerator` spawns `python -m chaos_runner.load.worker`, hands it a `WorkerConfig` and
passes each statistics window to a callback from a reader thread. It must never import Locust
or gevent (they monkey-patch the interpreter they are imported in): it only speaks the JSON
lines of `protocol`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from chaos_runner.errors import LoadError
from chaos_runner.load.protocol import (
    EVENT_ERROR,
    EVENT_STARTED,
    EVENT_STOPPED,
    STOP_COMMAND,
    WorkerConfig,
    is_window,
)

if TYPE_CHECKING:
    from chaos_runner.experiment import LoadSpec

logger = logging.getLogger(__name__)

WORKER_MODULE = "chaos_runner.load.worker"
STDERR_TAIL_LINES = 40
"""How much of the worker's stderr is kept for error messages."""
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
# The directory holding the chaos_runner package, so the worker imports this very copy.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _die_with_parent() -> None:
    """Between fork and exec: have Linux send the worker SIGTERM when its parent dies.

    Caveats: Linux ties this to the *thread* that forked, not the process, so a worker started
    from a short-lived thread is killed when that thread ends: start the load from a thread
    that lives as long as the run (the engine's main thread). And preexec_fn runs in a child
    forked from a process that may have other threads, so it does nothing but one call into
    libc, loaded beforehand. The worker also stops on stdin EOF, which covers the rest.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LoadGenerator:
    """Locust load in its own process; `on_window(record)` gets each statistics window.

    `on_window` is called from a reader thread, in order, with the keys of `WINDOW_KEYS`.
    Every window the worker measured has been delivered when `stop()` returns.
    """

    def __init__(
        self,
        spec: LoadSpec,
        *,
        host: str,
        base_dir: Path,
        max_duration: float,
        on_window: Callable[[dict[str, Any]], None],
        python: str = sys.executable,
    ) -> None:
        locustfile = (
            None if spec.locustfile is None else str((base_dir / spec.locustfile).resolve())
        )
        self.config = WorkerConfig(
            host=host,
            locustfile=locustfile,
            user_classes=spec.user_classes,
            users=spec.users,
            spawn_rate=spec.spawn_rate,
            window=spec.window,
            max_duration=max_duration,
            max_requests=spec.max_requests,
            rate_per_user=spec.rate_per_user,
            paths=spec.paths,
        )
        self._base_dir = base_dir
        self._on_window = on_window
        self._python = python
        self._process: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._settled = threading.Event()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stopping = False
        self._stopped = False
        self._error: str | None = None
        self._stop_reason: str | None = None

    @property
    def alive(self) -> bool:
        """True while the worker process runs."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return None if self._process is None else self._process.pid

    @property
    def error(self) -> str | None:
        """Why the worker failed or died unexpectedly; None while it runs or after a normal stop."""
        return self._error

    @property
    def stop_reason(self) -> str | None:
        """Why the load ended (stop requested, max_duration, max_requests, shape finished...)."""
        return self._stop_reason

    def start(self, timeout: float = 30) -> None:
        """Spawn the worker and return once its users run; LoadError if they do not."""
        with self._lock:
            if self._process is not None:
                raise RuntimeError("a LoadGenerator starts once")
            environment = dict(os.environ)
            environment["PYTHONPATH"] = os.pathsep.join(
                p for p in (_PACKAGE_ROOT, environment.get("PYTHONPATH")) if p
            )
            try:
                self._process = subprocess.Popen(
                    [self._python, "-m", WORKER_MODULE, self.config.model_dump_json()],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    bufsize=1,
                    cwd=self._base_dir,
                    env=environment,
                    # Its own session: a Ctrl-C meant for the runner must not kill the load
                    # before the runner has reverted its faults; the runner stops it itself.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise LoadError(f"cannot start the load worker ({self._python}): {exc}") from exc
            process = self._process
            assert process.stdout is not None and process.stderr is not None
            self._threads = [
                threading.Thread(
                    target=self._read_stderr,
                    args=(process.stderr,),
                    name="load-stderr",
                    daemon=True,
                ),
                threading.Thread(
                    target=self._read_stdout, args=(process,), name="load-windows", daemon=True
                ),
            ]
            for thread in self._threads:
                thread.start()
        # Settled either way: users running, or the worker ended (an error, or a load so
        # bounded that it finished before its users were seen running).
        if not self._settled.wait(timeout):
            self.stop()
            raise LoadError(f"the load worker did not start within {timeout:g}s{self._tail()}")
        if self._error is not None:
            self.stop()
            raise LoadError(self._error)

    def stop(self, timeout: float = 10) -> None:
        """Stop the load and wait for its last window; then terminate, then kill. Idempotent."""
        with self._lock:
            process = self._process
            if process is None or self._stopped:
                return
            self._stopping = True
            try:
                assert process.stdin is not None
                process.stdin.write(STOP_COMMAND + "\n")
                process.stdin.close()
            except OSError:
                pass  # The worker is already gone; its exit is reaped below.
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("the load worker did not stop within %gs; terminating it", timeout)
                process.terminate()
                try:
                    process.wait(2)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for thread in self._threads:
                thread.join(5)
            self._stopped = True

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_stderr(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self._stderr_tail.append(line.rstrip("\n"))

    def _read_stdout(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        error: str | None = None
        with process.stdout:
            for line in process.stdout:
                try:
                    record = json.loads(line)
                except ValueError:
                    self._stderr_tail.append(line.rstrip("\n"))
                    continue
                if not isinstance(record, dict):
                    continue
                event = record.get("event")
                if is_window(record):
                    self._deliver(record)
                elif event == EVENT_STARTED:
                    self._settled.set()
                elif event == EVENT_STOPPED:
                    self._stop_reason = str(record.get("reason"))
                elif event == EVENT_ERROR:
                    error = str(record.get("message"))
        code = process.wait()
        self._threads[0].join(5)  # the whole stderr tail, for the message below
        if error is not None:
            self._error = error
        elif self._stop_reason is None and not self._stopping:
            self._error = f"the load worker exited unexpectedly (code {code}){self._tail()}"
        self._settled.set()

    def _deliver(self, record: dict[str, Any]) -> None:
        try:
            self._on_window(record)
        except Exception:
            # A failing consumer must not stop the reading: the worker would block on a
            # full pipe and the load would silently stall.
            logger.exception("on_window failed for a load window")

    def _tail(self) -> str:
        lines = [line for line in self._stderr_tail if line.strip()]
        if not lines:
            return ""
        return "; the worker said:\n  " + "\n  ".join(lines[-15:])
