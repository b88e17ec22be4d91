"""The container probe: is a Docker container (or every container of a Compose service)
running, or healthy, and how many times has its restart policy restarted it?

It asks through the Docker target's methods (the run's own target when it is a Docker one,
else a connection of its own with default parameters) and never imports the Docker SDK. A
sample never raises: an unreachable engine or a vanished container is a failing Outcome.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chaos_runner.errors import ChaosRunnerError
from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext
from chaos_runner.targets.docker import ContainerGone, ContainerState, DockerParams, DockerTarget

WORKERS = 4
"""Engine calls in flight at once per probe; a call that outlives its sample's timeout
keeps a worker until the target's own timeout ends it."""


class ContainerParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    container: str | None = None
    """The container's name (or id)."""
    service: str | None = None
    """A Compose service instead: every one of its containers must meet `expect`."""
    project: str | None = None
    """The service's Compose project; default: the target's `project`."""
    expect: Literal["running", "healthy"] = "running"
    """running: the container runs (paused or restarting do not count); healthy: its
    healthcheck says healthy (a container without a healthcheck fails)."""
    max_restart_count: int | None = Field(default=None, ge=0)
    """Fail when the restart policy has restarted it more often than this. Docker resets
    the count when a container is started or restarted by hand."""

    @model_validator(mode="after")
    def _one_subject(self) -> ContainerParams:
        if (self.container is None) == (self.service is None):
            raise ValueError("give either container or service (with an optional project)")
        if self.project is not None and self.service is None:
            raise ValueError("project goes with service, not with container")
        return self


class ContainerProbe:
    """Samples a container's state; Outcome.value is its restart count (a service's total)."""

    kind: ClassVar[str] = "container"
    Params: ClassVar[type[BaseModel]] = ContainerParams

    def bind(self, params: Any, context: ProbeContext) -> ProbeCheck:
        return ContainerCheck(params, context)


class ContainerCheck:
    """One bound container probe. Safe to call from several sampler threads at once."""

    def __init__(self, params: ContainerParams, context: ProbeContext) -> None:
        self.params = params
        self._context = context
        self._shared = context.target if isinstance(context.target, DockerTarget) else None
        self._own: DockerTarget | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="container-probe")

    def __call__(self, timeout: float) -> Outcome:
        try:
            future = self._pool.submit(self._sample)
        except RuntimeError:
            return Outcome(ok=False, error="the probe is closed")
        try:
            return future.result(timeout)
        except FutureTimeout:
            return Outcome(ok=False, error=f"the Docker engine did not answer within {timeout:g}s")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._closed = True
            own, self._own = self._own, None
        if own is not None:
            own.stop()

    def _target(self) -> DockerTarget:
        if self._shared is not None:
            return self._shared
        with self._lock:
            if self._own is not None:
                return self._own
        # Not a Docker run: the probe watches through a connection of its own, made
        # outside the lock so that a hanging engine cannot hold up close().
        own = DockerTarget(DockerParams(), base_dir=self._context.base_dir, journal=None)
        own.attach()
        with self._lock:
            if self._own is None and not self._closed:
                self._own = own
                return own
            spare = self._own
        own.stop()
        if spare is None:
            raise ChaosRunnerError("the probe is closed")
        return spare

    def _sample(self) -> Outcome:
        params = self.params
        try:
            target = self._target()
            if params.container is not None:
                states = [target.container_state(params.container)]
            else:
                assert params.service is not None  # the model's validator sees to it
                states = target.service_states(params.service, params.project)
        except ContainerGone as exc:
            if params.container is None:  # one of the service's went while it was listed
                return Outcome(ok=False, error=str(exc))
            return Outcome(ok=False, error=f"container {params.container} does not exist")
        except ChaosRunnerError as exc:
            return Outcome(ok=False, error=str(exc))
        except Exception as exc:  # a sample must never raise into the sampler
            return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        if not states:
            project = params.project or target.params.project
            where = f" in project {project}" if project else ""
            return Outcome(ok=False, error=f"no container of service {params.service}{where}")
        problems = [p for state in states for p in self._problems(state)]
        restarts = sum(state.restart_count for state in states)
        return Outcome(ok=not problems, error="; ".join(problems) or None, value=float(restarts))

    def _problems(self, state: ContainerState) -> list[str]:
        found: list[str] = []
        if not state.running:
            found.append(f"{state.name} is {state.status}")
        elif self.params.expect == "healthy" and state.health != "healthy":
            found.append(
                f"{state.name} has no healthcheck"
                if state.health is None
                else f"{state.name} is {state.health}"
            )
        limit = self.params.max_restart_count
        if limit is not None and state.restart_count > limit:
            found.append(
                f"{state.name} was restarted {state.restart_count} times (at most {limit} allowed)"
            )
        return found
