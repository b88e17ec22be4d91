"""The embedded local target: a replicated HTTP service run as local processes.

`start` brings up N replicas (the demo service, or the user's own command) under a supervisor
that restarts a dead one after `restart_delay`, and a TCP fault proxy in front of them that
round-robins connections. Nothing it starts outlives it or the runner; `attach` starts
nothing, since the faults of a local system vanish with its processes.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import urllib3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chaos_runner.errors import TargetError
from chaos_runner.experiment import Duration, Selector
from chaos_runner.plugins import Member
from chaos_runner.targets.local.proxy_client import ProxyClient
from chaos_runner.targets.local.supervisor import ReplicaSpec, ReplicaState, Supervisor

if TYPE_CHECKING:
    from chaos_runner.journal import Journal

HOST = "127.0.0.1"
READY_POLL = 0.02


class LocalParams(BaseModel):
    """Parameters of the `local` target (target.params in an experiment)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    replicas: Annotated[int, Field(ge=1, le=32)] = 3
    """How many replicas run behind the proxy."""
    restart_delay: Duration = 1.0
    """How long a dead replica stays dead before the supervisor restarts it."""
    command: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    """Your own service instead of the demo: an argv (no shell), run from the experiment's
    directory. "{port}" and "{name}" in it are replaced by each replica's port and name;
    it must answer HTTP on 127.0.0.1:{port}."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables added to the runner's for every replica."""
    ready_path: str = "/health"
    """The path every replica must answer (any status below 400) before the run starts."""
    ready_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    """How long start waits for every replica to answer ready_path."""
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    """The proxy's port on 127.0.0.1 (the service's address, target.url); 0 picks a free one."""
    start_delay: Duration = 0.0
    """Demo replicas listen only after this delay, at start and at every restart (a slow
    boot). Not for your own command."""

    @field_validator("ready_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"ready_path must start with '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _delay_for_demo_only(self) -> LocalParams:
        if self.command is not None and self.start_delay > 0:
            raise ValueError("start_delay applies to the demo service only, not to a command")
        return self


class LocalTarget:
    """Replicas on 127.0.0.1 behind the fault proxy. Proxy faults act through `proxy`."""

    kind: ClassVar[str] = "local"
    Params: ClassVar[type[BaseModel]] = LocalParams

    def __init__(self, params: LocalParams, *, base_dir: Path, journal: Journal | None) -> None:
        self.params = params
        self.base_dir = base_dir
        self.journal = journal
        self.proxy: ProxyClient | None = None
        """The running fault proxy; None before start, after stop, and when attached."""
        self.supervisor: Supervisor | None = None
        self._log_dir: Path | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the replicas and the proxy; return once every replica answers ready_path."""
        if self.supervisor is not None:
            raise TargetError("the local target is already started")
        self._log_dir = Path(tempfile.mkdtemp(prefix="chaos-runner-local-"))
        specs = [self._spec(i, port) for i, port in enumerate(_free_ports(self.params.replicas))]
        try:
            self.supervisor = Supervisor(
                specs,
                restart_delay=self.params.restart_delay,
                log_dir=self._log_dir,
                on_event=self._record,
            )
            self.supervisor.start()
            self.proxy = ProxyClient.launch(
                port=self.params.port,
                backends=[spec.port for spec in specs],
                log=self._log_dir / "proxy.log",
                spawn=self.supervisor.spawn,
            )
            self._await_ready()
        except BaseException:
            self.stop()
            raise

    def attach(self) -> None:
        """Nothing to connect to: a local system dies with the runner, and its faults too."""

    def stop(self) -> None:
        """Stop the proxy, then every replica; idempotent, leaves no process behind."""
        proxy, self.proxy = self.proxy, None
        supervisor, self.supervisor = self.supervisor, None
        try:
            if proxy is not None:
                proxy.stop()
        finally:
            if supervisor is not None:
                supervisor.stop()
            if self._log_dir is not None:
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._log_dir = None

    # ------------------------------------------------------------------- views

    def variables(self) -> dict[str, str]:
        proxy = self._running_proxy()
        found = {
            "target.url": f"http://{HOST}:{proxy.port}",
            "target.host": HOST,
            "target.port": str(proxy.port),
        }
        for state in self._states():
            found[f"target.replicas.{state.index}.url"] = f"http://{HOST}:{state.port}"
        return found

    def members(self, selector: Selector) -> list[Member]:
        """Running replicas (a paused one counts), filtered by `selector.names` (replica-<i>)."""
        states = self._states()
        for name in ("labels", "service", "project", "namespace"):
            if getattr(selector, name):
                raise TargetError(
                    f"selector.{name}: local replicas have no {name}; select them by names "
                    f"({', '.join(s.name for s in states)})"
                )
        unknown = sorted(set(selector.names) - {s.name for s in states})
        if unknown:
            raise TargetError(
                f"selector.names: no replica named {', '.join(unknown)} "
                f"(known: {', '.join(s.name for s in states)})"
            )
        return [
            Member(
                id=s.name,
                name=s.name,
                attrs={"pid": str(s.pid), "port": str(s.port), "index": str(s.index)},
            )
            for s in states
            if s.running and (not selector.names or s.name in selector.names)
        ]

    def describe(self) -> dict[str, Any]:
        proxy = self.proxy
        return {
            "kind": self.kind,
            "command": list(self.params.command) if self.params.command else "demo",
            "restart_delay": self.params.restart_delay,
            "proxy": {"port": proxy.port, "pid": proxy.pid} if proxy is not None else None,
            "replicas": [
                {
                    "id": s.name,
                    "port": s.port,
                    "pid": s.pid,
                    "running": s.running,
                    "restarts": s.restarts,
                }
                for s in (self.supervisor.replicas() if self.supervisor is not None else [])
            ],
        }

    # ------------------------------------------------------------------ inside

    def _spec(self, index: int, port: int) -> ReplicaSpec:
        name = f"replica-{index}"
        if self.params.command is None:
            argv: tuple[str, ...] = (
                *(sys.executable, "-m", "chaos_runner.targets.local.service"),
                *("--port", str(port), "--name", name),
                *("--start-delay", str(self.params.start_delay)),
            )
        else:
            argv = tuple(
                arg.replace("{port}", str(port)).replace("{name}", name)
                for arg in self.params.command
            )
        return ReplicaSpec(name, port, argv, dict(self.params.env), self.base_dir)

    def _record(self, action: str, member: str, detail: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.write(
                "event", source="supervisor", action=action, member=member, detail=detail
            )

    def _states(self) -> list[ReplicaState]:
        if self.supervisor is None:
            raise TargetError("the local target is not running (start it first)")
        return self.supervisor.replicas()

    def _running_proxy(self) -> ProxyClient:
        if self.proxy is None:
            raise TargetError("the local target is not running (start it first)")
        return self.proxy

    def _await_ready(self) -> None:
        assert self.supervisor is not None
        supervisor = self.supervisor
        path, timeout = self.params.ready_path, self.params.ready_timeout
        pools = {
            s.index: urllib3.HTTPConnectionPool(HOST, s.port, retries=False, timeout=0.5)
            for s in supervisor.replicas()
        }
        last: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        try:
            while pools:
                for state in supervisor.replicas():
                    if state.index not in pools:
                        continue
                    if state.restarts or not state.running:
                        raise TargetError(
                            f"{state.name} exited before it answered GET {path} "
                            f"({state.last_exit or 'exited'})" + self._output(state.index)
                        )
                    try:
                        status = pools[state.index].request("GET", path).status
                    except urllib3.exceptions.HTTPError as exc:
                        last[state.index] = _reason(exc)
                        continue
                    if status < 400:
                        pools.pop(state.index).close()
                    else:
                        last[state.index] = f"HTTP {status}"
                if pools and time.monotonic() > deadline:
                    index = min(pools)
                    state = supervisor.replicas()[index]
                    raise TargetError(
                        f"{state.name} did not answer GET http://{HOST}:{state.port}{path} "
                        f"within {timeout:g}s (last: {last.get(index, 'no answer')}); "
                        "check target.params (command, ready_path, ready_timeout)"
                        + self._output(index)
                    )
                time.sleep(READY_POLL)
        finally:
            for pool in pools.values():
                pool.close()

    def _output(self, index: int) -> str:
        assert self.supervisor is not None
        tail = self.supervisor.log_tail(index)
        if not tail:
            return "; it wrote nothing"
        return "; its output ended with:\n  " + tail.replace("\n", "\n  ")


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The root cause of a failed request, short: 'Connection refused', 'read timed out'."""
    cause: BaseException = exc
    while cause.__context__ is not None and isinstance(cause.__context__, OSError):
        cause = cause.__context__
    text = str(cause)
    return (
        text.split(": ", 1)[-1] if isinstance(exc, urllib3.exceptions.NewConnectionError) else text
    )


def _free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1, all different (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
