"""The `python` probe: a function from a user's file (e.g. probes/example.py) judges the system.

The file is loaded once, at bind time; a missing file or function is a bind error (the engine
reports it before anything starts). Each call runs on a daemon worker thread so that a
sample gives up after its timeout; a function that never returns cannot be killed (Python
has no way to stop a thread), it keeps its worker, and never blocks the runner's exit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chaos_runner.experiment import format_duration
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext

MAX_WORKERS = 16
"""Calls of one probe that may run at once, hung ones included. Past it, calls wait their
turn and time out: a function that hangs that often is failing, and says so."""


class PythonParams(BaseModel):
    """Which function to call, and with what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(
        description="Python file, relative to the experiment file, e.g. '../probes/example.py'."
    )
    function: str = Field(description="Name of the function in that file.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of every call; strings may use ${target.url}.",
    )


class _Workers:
    """Daemon threads that run calls, started as needed up to a limit and then kept."""

    def __init__(self, name: str, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._idle == 0 and self._threads < self._limit:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        self._jobs.put((call, future))
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def close(self) -> None:
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)


class PythonCheck:
    """One bound python probe: calls `function(**kwargs)` and turns what it returns into an
    Outcome (True/None pass, False fails, a number passes with that value, raising fails)."""

    def __init__(self, function: Callable[..., Any], kwargs: dict[str, Any], label: str) -> None:
        self._call = lambda: function(**kwargs)
        self._workers = _Workers(f"probe-{label}", MAX_WORKERS)

    def __call__(self, timeout: float) -> Outcome:
        future = self._workers.submit(self._call)
        try:
            result = future.result(timeout=timeout)
        except FutureTimeout:
            started = not future.cancel()
            detail = "" if started else " (not started: earlier calls have not returned)"
            return Outcome(ok=False, error=f"timeout after {format_duration(timeout)}{detail}")
        except Exception as exc:
            return Outcome(ok=False, error=_exception_text(exc))
        except BaseException as exc:  # SystemExit and the like from user code
            return Outcome(ok=False, error=f"{type(exc).__name__} raised")
        return judge(result)

    def close(self) -> None:
        self._workers.close()


def judge(result: Any) -> Outcome:
    """What a probe function's return value means."""
    if isinstance(result, Outcome):
        return result
    if result is None or result is True:
        return Outcome(ok=True)
    if result is False:
        return Outcome(ok=False, error="returned False")
    if isinstance(result, int | float):
        return Outcome(ok=True, value=float(result))
    return Outcome(
        ok=False,
        error=f"returned {type(result).__name__}; expected True, False, None or a number",
    )


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_module(path: Path) -> ModuleType:
    """Import a file under a name of its own; errors become ValueErrors that name the file."""
    if not path.is_file():
        raise ValueError(
            f"file: no such file {str(path)!r} (paths are relative to the experiment file)"
        )
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:10]
    name = f"chaos_runner_user_probes.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"file: {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would, so dataclasses and pickling inside work.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ValueError(f"file: {str(path)!r} failed to import: {_exception_text(exc)}") from exc
    return module


class PythonProbe:
    """Probe kind `python`: a function of the user's decides."""

    kind = "python"
    Params = PythonParams

    def bind(self, params: PythonParams, context: ProbeContext) -> ProbeCheck:
        path = (context.base_dir / params.file).resolve()
        module = load_module(path)
        function = getattr(module, params.function, None)
        if not callable(function):
            known = sorted(
                n
                for n, v in vars(module).items()
                if inspect.isfunction(v) and v.__module__ == module.__name__ and n[0] != "_"
            )
            raise ValueError(
                f"function: {str(path)!r} has no function {params.function!r} "
                f"(functions there: {', '.join(known) or 'none'})"
            )
        kwargs = dict(params.kwargs)
        signature = inspect.signature(function)
        # Only a parameter named `context` gets it: a **kwargs may forward to other code.
        if "context" in signature.parameters and "context" not in kwargs:
            kwargs["context"] = context
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise ValueError(f"kwargs: {params.function}() cannot take them: {exc}") from None
        return PythonCheck(function, kwargs, params.function)
