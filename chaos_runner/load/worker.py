"""The load worker process: `python -m chaos_runner.load.worker '<WorkerConfig JSON>'`.

Runs Locust (local runner, user classes or a LoadTestShape) and writes one JSON line a
statistics window on stdout, with percentiles from that window's own samples. It stops by
itself on "stop" or EOF on stdin, max_duration, max_requests or the end of a shape. This is
the only process that imports Locust (which monkey-patches the interpreter with gevent):
nothing of the runner may ever import this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event
import gevent.fileobject
import locust
import locust.stats
from locust.env import Environment
from locust.runners import STATE_RUNNING, Runner
from locust.shape import LoadTestShape
from locust.user import User
from locust.util.load_locustfile import load_locustfile
from pydantic import ValidationError

from chaos_runner.load.protocol import (
    EVENT_ERROR,
    EVENT_STARTED,
    EVENT_STOPPED,
    EXIT_INVALID,
    EXIT_OK,
    PATHS_VARIABLE,
    RATE_VARIABLE,
    STOP_COMMAND,
    WorkerConfig,
)

DEFAULT_LOCUSTFILE = Path(__file__).with_name("default_locustfile.py")
"""The built-in user, loaded like any locustfile (never imported here: it reads its
configuration from the environment at import)."""

TOP_ERRORS = 10
"""How many distinct error texts a window carries (the most frequent)."""


class LocustfileError(Exception):
    """The locustfile cannot be used: missing, broken, or without the User classes asked for."""


class Protocol:
    """Writes the worker's JSON lines on a private copy of stdout.

    Locustfiles and libraries may print; fd 1 is pointed at stderr so that nothing but these
    lines ever reaches the runner's reader.
    """

    def __init__(self) -> None:
        self._out: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.broken = False

    def emit(self, record: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._out.flush()
        except BrokenPipeError:
            # The runner is gone; stdin EOF will stop the load.
            self.broken = True

    def error(self, message: str) -> int:
        self.emit({"event": EVENT_ERROR, "message": message})
        return EXIT_INVALID


def read_config(argv: list[str], stdin: gevent.fileobject.FileObjectPosix) -> WorkerConfig:
    """The configuration from the first argument, or else from the first line of stdin."""
    raw = argv[0] if argv else stdin.readline().decode()
    return WorkerConfig.model_validate_json(raw)


def load_users(config: WorkerConfig) -> tuple[list[type[User]], LoadTestShape | None]:
    """The User classes to run and the shape, loaded the way Locust itself loads them."""
    if config.locustfile is None:
        os.environ[PATHS_VARIABLE] = json.dumps(list(config.paths))
        if config.rate_per_user is not None:
            os.environ[RATE_VARIABLE] = repr(config.rate_per_user)
        else:
            os.environ.pop(RATE_VARIABLE, None)
        path = DEFAULT_LOCUSTFILE
    else:
        path = Path(config.locustfile)
    if not path.is_file():
        raise LocustfileError(f"locustfile {path} does not exist")
    try:
        available, shapes = load_locustfile(str(path))
    except Exception as exc:
        raise LocustfileError(
            f"cannot load locustfile {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if not available:
        raise LocustfileError(f"locustfile {path} defines no User class")
    if config.user_classes:
        missing = sorted(set(config.user_classes) - set(available))
        if missing:
            raise LocustfileError(
                f"locustfile {path} has no User class {', '.join(missing)} "
                f"(it has {', '.join(sorted(available))})"
            )
        users = [available[name] for name in config.user_classes]
    else:
        users = list(available.values())
    return users, (shapes[0] if shapes else None)


def create_runner(environment: Environment) -> Runner:
    """The Locust runner. The one place to choose local or distributed (master) mode."""
    runner: Runner = environment.create_local_runner()
    return runner


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class LoadSession:
    """One Locust load: records each request, emits windows, stops on the first bound hit."""

    def __init__(
        self, config: WorkerConfig, environment: Environment, runner: Runner, out: Protocol
    ) -> None:
        self.config = config
        self.environment = environment
        self.runner = runner
        self.out = out
        self.stopped = gevent.event.Event()
        self.reason = ""
        self.total = 0
        # The window's samples: appended by the request hook, swapped out by the window
        # greenlet. Under gevent nothing runs between two statements that do no I/O, so the
        # swap needs no lock.
        self._times: list[float] = []
        self._untimed = 0
        self._failed: list[tuple[str, str, Any]] = []
        self._t0 = time.monotonic()
        # Locust's EventHook is untyped.
        environment.events.request.add_listener(self._on_request)  # type: ignore[no-untyped-call]
        environment.events.test_stop.add_listener(self._on_test_stop)  # type: ignore[no-untyped-call]

    def request_stop(self, reason: str) -> None:
        if not self.stopped.is_set():
            self.reason = reason
            self.stopped.set()

    def _on_request(
        self,
        request_type: str,
        name: str,
        response_time: float | None,
        response_length: int,
        exception: Any = None,
        **_kwargs: Any,
    ) -> None:
        # Called for every request: keep it to a few appends.
        if response_time is None:
            self._untimed += 1
        else:
            self._times.append(response_time)
        if exception is not None:
            self._failed.append((request_type, name, exception))
        self.total += 1
        if self.config.max_requests is not None and self.total >= self.config.max_requests:
            self.request_stop("max_requests")

    def _on_test_stop(self, **_kwargs: Any) -> None:
        # The runner stopped without us: a shape's tick returned None, or the locustfile
        # called runner.quit().
        shaped = self.environment.shape_class is not None
        self.request_stop("shape finished" if shaped else "runner stopped")

    def _window(self, t1: float, users: int | None = None) -> dict[str, Any]:
        times, self._times = self._times, []
        failed, self._failed = self._failed, []
        untimed, self._untimed = self._untimed, 0
        t0, self._t0 = self._t0, t1
        bucket = locust.stats.bucket_response_time
        hist = Counter(bucket(t) for t in times)
        errors = Counter(
            f"{method} {name}: {locust.stats.StatsError.parse_error(exc)}"
            for method, name, exc in failed
        )
        times.sort()
        record: dict[str, Any] = {
            "t0": t0,
            "t1": t1,
            "requests": len(times) + untimed,
            "failures": len(failed),
            "users": self.runner.user_count if users is None else users,
            "p50": round(percentile(times, 0.50), 3) if times else None,
            "p95": round(percentile(times, 0.95), 3) if times else None,
            "p99": round(percentile(times, 0.99), 3) if times else None,
            "max": round(times[-1], 3) if times else None,
            "hist": {str(ms): n for ms, n in sorted(hist.items())},
            "errors": dict(errors.most_common(TOP_ERRORS)),
        }
        return record

    def _emit_windows(self) -> None:
        window = self.config.window
        boundary = self._t0
        while True:
            boundary += window
            # Sleep to a fixed schedule so that windows do not drift; a late wake-up (a busy
            # process) makes one window longer, with its true bounds.
            gevent.sleep(max(0.0, boundary - time.monotonic()))
            now = time.monotonic()
            self.out.emit(self._window(now))
            boundary = max(boundary, now - window)

    def _watch_stdin(self, stdin: gevent.fileobject.FileObjectPosix) -> None:
        while True:
            line = stdin.readline()
            if not line:
                self.request_stop("stdin closed")
                return
            if line.strip().decode(errors="replace") == STOP_COMMAND:
                self.request_stop("stop requested")
                return

    def _users_running(self) -> bool:
        return self.runner.user_count > 0 or self.runner.state == STATE_RUNNING

    def run(self, stdin: gevent.fileobject.FileObjectPosix) -> str:
        """Run the load until a bound or a stop; returns why it stopped."""
        deadline = time.monotonic() + self.config.max_duration
        self._t0 = time.monotonic()
        watcher = gevent.spawn(self._watch_stdin, stdin)
        windows = gevent.spawn(self._emit_windows)
        if self.environment.shape_class is not None:
            self.runner.start_shape()
        else:
            self.runner.start(self.config.users, self.config.spawn_rate)
        while not self.stopped.is_set() and not self._users_running():
            self.stopped.wait(0.01)
        if not self.stopped.is_set():
            self.out.emit(
                {"event": EVENT_STARTED, "t": time.monotonic(), "users": self.runner.user_count}
            )
        if not self.stopped.wait(max(0.0, deadline - time.monotonic())):
            self.request_stop("max_duration")
        windows.kill()
        users = self.runner.user_count
        self.runner.quit()
        # The last, partial window: what the users had done when they were stopped.
        self.out.emit(self._window(time.monotonic(), users))
        self.out.emit(
            {
                "event": EVENT_STOPPED,
                "t": time.monotonic(),
                "reason": self.reason,
                "requests": self.total,
            }
        )
        watcher.kill()
        return self.reason


def main(argv: list[str] | None = None) -> int:
    """Run one load as configured; the exit code says whether it could be carried out."""
    out = Protocol()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stdin = gevent.fileobject.FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    try:
        config = read_config(sys.argv[1:] if argv is None else argv, stdin)
    except ValidationError as exc:
        return out.error(f"invalid load worker configuration: {exc}")
    try:
        user_classes, shape = load_users(config)
    except LocustfileError as exc:
        return out.error(str(exc))
    # Locustfiles register hooks on the global `locust.events`, as under the locust command.
    environment = Environment(
        user_classes=user_classes,
        shape_class=shape,
        host=config.host,
        events=locust.events,
        locustfile=config.locustfile,
    )
    runner = create_runner(environment)
    session = LoadSession(config, environment, runner, out)
    # The hooks a locustfile may rely on, fired as the locust command fires them (untyped).
    environment.events.init.fire(environment=environment, runner=runner, web_ui=None)  # type: ignore[no-untyped-call]
    session.run(stdin)
    environment.events.quitting.fire(environment=environment, reverse=True)  # type: ignore[no-untyped-call]
    environment.events.quit.fire(exit_code=EXIT_OK)  # type: ignore[no-untyped-call]
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
