"""What the runner and its Locust worker process say to each other, in one place.

The runner passes a `WorkerConfig` as JSON on the worker's command line; the worker answers
with one JSON object a line on stdout (windows and events) and reads "stop" or EOF on stdin.
Both sides import this module, so it must never import Locust, gevent or the engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

STOP_COMMAND: Final = "stop"
"""A line the runner writes on the worker's stdin to end the load."""

EVENT_STARTED: Final = "started"
"""Users are running: `{"event": "started", "t": <monotonic>, "users": n}`."""
EVENT_STOPPED: Final = "stopped"
"""The load ended normally: `{"event": "stopped", "t": .., "reason": .., "requests": n}`."""
EVENT_ERROR: Final = "error"
"""The worker cannot run the load (bad locustfile, no User class): `{"event": "error",
"message": ..}`, then exit code EXIT_INVALID."""

PATHS_VARIABLE: Final = "CHAOS_RUNNER_LOAD_PATHS"
"""Built-in user: a JSON list of paths, e.g. '["/", "/health"]'; "/" when unset."""
RATE_VARIABLE: Final = "CHAOS_RUNNER_LOAD_RATE_PER_USER"
"""Built-in user: requests per second per user (constant throughput); unset for a small wait."""

EXIT_OK: Final = 0
EXIT_INVALID: Final = 2
"""Exit code of a worker whose configuration or locustfile cannot be used."""

WINDOW_KEYS: Final = (
    "t0",
    "t1",
    "requests",
    "failures",
    "users",
    "p50",
    "p95",
    "p99",
    "max",
    "hist",
    "errors",
)
"""Keys of a statistics window record, as the journal's `load` record has them."""


class WorkerConfig(BaseModel):
    """Everything the worker needs to run one load, resolved by the runner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Base URL the users request (Locust's --host).")
    locustfile: str | None = Field(
        default=None, description="Absolute path of a locustfile; None uses the built-in user."
    )
    user_classes: tuple[str, ...] = Field(
        default=(), description="Names of the User classes to run; empty runs them all."
    )
    users: Annotated[int, Field(ge=1, description="Number of concurrent users.")] = 10
    spawn_rate: Annotated[float, Field(gt=0, description="Users started per second.")] = 50.0
    window: Annotated[
        float, Field(ge=0.1, le=1.0, description="Seconds of one statistics window.")
    ] = 0.5
    max_duration: Annotated[
        float, Field(gt=0, description="Hard bound: the worker stops by itself after this.")
    ] = 600.0
    max_requests: Annotated[
        int | None, Field(ge=1, description="Hard bound on the number of requests recorded.")
    ] = None
    rate_per_user: Annotated[
        float | None,
        Field(gt=0, description="Requests per second per built-in user (constant throughput)."),
    ] = None
    paths: tuple[str, ...] = Field(
        default=("/",), min_length=1, description="Paths the built-in user requests, in turn."
    )


def is_window(record: dict[str, Any]) -> bool:
    """True for a statistics window, False for an event line."""
    return "event" not in record and "t0" in record
