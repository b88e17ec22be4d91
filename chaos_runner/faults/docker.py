"""Lifecycle faults on Docker containers: kill, crash, stop, restart, pause, disconnect.

Each acts through the Docker target's methods (never the SDK). A handle holds the container's
id and name and whatever its revert needs (a network's aliases and addresses), so a revert
works from the journal alone; reverting is idempotent, and a container that vanished makes
the revert fail with a FaultError that names it, never an unhandled exception.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from chaos_runner.errors import FaultError, PreflightError, TargetError
from chaos_runner.experiment import Duration, FaultSpec
from chaos_runner.plugins import FaultScope, Handle, Member, Target
from chaos_runner.targets.docker import DockerTarget, sidecar, signal_name


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class _SignalParams(_Params):
    signal: str = "SIGKILL"
    """The signal to send: a name (SIGKILL, TERM) or a number (9)."""

    @field_validator("signal", mode="before")
    @classmethod
    def _known_signal(cls, value: object) -> str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("expected a signal name such as SIGKILL, or its number")
        return signal_name(value)


class KillParams(_SignalParams):
    pass


class CrashParams(_SignalParams):
    via: Literal["auto", "host", "helper"] = "auto"
    """How the main process is signalled: from the runner itself when it runs on the
    engine's host ("host"), from a helper container in the host's PID namespace ("helper",
    works against a remote engine too), or the first of these that can ("auto")."""


class StopParams(_Params):
    timeout: Duration = 10.0
    """Seconds between SIGTERM and SIGKILL (rounded up to whole seconds by the engine)."""


class RestartParams(StopParams):
    pass


class PauseParams(_Params):
    pass


class DisconnectParams(_Params):
    network: str
    """The network (name or id) the container is detached from."""


def docker_target(target: Target) -> DockerTarget:
    """The target as a DockerTarget; a fault on any other kind of target is refused."""
    if not isinstance(target, DockerTarget):
        raise PreflightError(
            f"a Docker fault needs a docker target, not a {type(target).__name__} "
            f"({getattr(target, 'kind', '?')!r})"
        )
    return target


@contextmanager
def _acting(verb: str, handle: Handle) -> Iterator[None]:
    """Name the fault and the container in whatever goes wrong, as a FaultError."""
    try:
        yield
    except (TargetError, FaultError) as exc:
        name = handle.data.get("name") or handle.member
        raise FaultError(f"{handle.fault}: cannot {verb} container {name}: {exc}") from exc


class _Lifecycle:
    """One handle per member, holding its container id and name."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = False

    def check(self, params: Any, target: Target) -> None:
        docker_target(target)

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        docker = docker_target(target)
        handles = []
        for member in members:
            data = {
                "container": member.id,
                "name": member.name,
                **self.data(member, params, docker),
            }
            handles.append(
                Handle(f"{name}-{secrets.token_hex(4)}", name, self.kind, member.id, data)
            )
        return handles

    def data(self, member: Member, params: Any, docker: DockerTarget) -> dict[str, Any]:
        """What, beyond the container, the revert of this kind needs."""
        return {}

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        raise NotImplementedError

    def revert(self, handle: Handle, target: Target) -> None:
        """Nothing to undo: the system has to heal itself (a restart policy, an orchestrator)."""


class ContainerKill(_Lifecycle):
    """A signal through the engine (docker kill). The engine counts it as a manual stop, so
    the restart policy never brings the container back: use `crash` to test that."""

    kind: ClassVar[str] = "kill"
    Params: ClassVar[type[BaseModel]] = KillParams

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting(f"send {params.signal} to", handle):
            docker_target(target).kill(str(handle.data["container"]), params.signal)


class ContainerCrash(_Lifecycle):
    """The container's main process dies, signalled behind the engine's back, so the engine
    sees an unexpected exit and applies the restart policy as after a real crash."""

    kind: ClassVar[str] = "crash"
    Params: ClassVar[type[BaseModel]] = CrashParams

    def check(self, params: Any, target: Target) -> None:
        docker = docker_target(target)
        remote = not docker.base_url.startswith(("unix://", "/"))
        if params.via == "helper" or (params.via == "auto" and remote):
            # The helper is what crashes it; have its image ready before anything starts.
            sidecar.ensure_helper_image(docker.client)

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting(f"crash (send {params.signal} to the main process of)", handle):
            docker_target(target).crash(
                str(handle.data["container"]), params.signal, via=params.via
            )


class ContainerStop(_Lifecycle):
    """docker stop (SIGTERM, then SIGKILL after `timeout`); the revert starts it again."""

    kind: ClassVar[str] = "stop"
    Params: ClassVar[type[BaseModel]] = StopParams
    reversible: ClassVar[bool] = True

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting("stop", handle):
            docker_target(target).stop_container(str(handle.data["container"]), params.timeout)

    def revert(self, handle: Handle, target: Target) -> None:
        with _acting("start again", handle):
            docker_target(target).start_container(str(handle.data["container"]))


class ContainerRestart(_Lifecycle):
    """docker restart (stop with `timeout`, then start). The engine resets the container's
    restart count when it does this."""

    kind: ClassVar[str] = "restart"
    Params: ClassVar[type[BaseModel]] = RestartParams

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting("restart", handle):
            docker_target(target).restart(str(handle.data["container"]), params.timeout)


class ContainerPause(_Lifecycle):
    """docker pause (every process frozen, connections held open); the revert unpauses."""

    kind: ClassVar[str] = "pause"
    Params: ClassVar[type[BaseModel]] = PauseParams
    reversible: ClassVar[bool] = True

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting("pause", handle):
            docker_target(target).pause(str(handle.data["container"]))

    def revert(self, handle: Handle, target: Target) -> None:
        with _acting("unpause", handle):
            docker_target(target).unpause(str(handle.data["container"]))


class NetworkDisconnect(_Lifecycle):
    """The container is detached from a network; the revert attaches it again with the same
    aliases and, where the network allows a chosen address, the same IP. Ports published on
    an ephemeral host port come back on a new one (the engine allocates them again)."""

    kind: ClassVar[str] = "disconnect"
    Params: ClassVar[type[BaseModel]] = DisconnectParams
    reversible: ClassVar[bool] = True

    def check(self, params: Any, target: Target) -> None:
        try:
            docker_target(target).network(params.network)
        except TargetError as exc:
            raise PreflightError(f"disconnect: {exc}") from exc

    def data(self, member: Member, params: Any, docker: DockerTarget) -> dict[str, Any]:
        # Read just before the injection (the engine plans then), so the revert restores
        # what the container had at that moment.
        endpoint = docker.endpoint(member.id, params.network)
        return {
            "network": endpoint.network,
            "aliases": list(endpoint.aliases),
            "ipv4": endpoint.static_ipv4 or endpoint.ipv4,
            "ipv6": endpoint.static_ipv6 or endpoint.ipv6,
            "links": list(endpoint.links),
        }

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        with _acting(f"disconnect from network {handle.data['network']}", handle):
            docker_target(target).disconnect(
                str(handle.data["network"]), str(handle.data["container"])
            )

    def revert(self, handle: Handle, target: Target) -> None:
        data = handle.data
        with _acting(f"reconnect to network {data['network']}", handle):
            docker_target(target).connect(
                str(data["network"]),
                str(data["container"]),
                aliases=[str(a) for a in data.get("aliases") or ()],
                ipv4=str(data.get("ipv4") or "") or None,
                ipv6=str(data.get("ipv6") or "") or None,
                links=[str(link) for link in data.get("links") or ()],
            )
