"""The Docker target: containers on one engine, reached through the Docker SDK.

It selects running containers (by name, label, Compose service and project), reports their
state, and carries out the lifecycle operations the Docker fault kinds and the container
probe ask for. SDK errors leave this module as TargetError (engine unreachable, container
gone) or FaultError (the engine refused an operation); it never decides what a fault does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import docker.client
import docker.errors
import requests.exceptions
from pydantic import BaseModel, ConfigDict, Field

from chaos_runner.errors import FaultError, TargetError
from chaos_runner.experiment import Duration, Selector
from chaos_runner.plugins import Member
from chaos_runner.targets.docker import crash, sidecar
from chaos_runner.targets.docker.events import EngineEvent, EventFollower

if TYPE_CHECKING:
    from chaos_runner.journal import Journal

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"

DEFAULT_BASE_URL = "unix:///var/run/docker.sock"
"""Where the SDK (like the docker CLI) looks when neither params nor $DOCKER_HOST say."""

CrashVia = Literal["auto", "host", "helper"]


class DockerParams(BaseModel):
    """How to reach the Docker engine, and the defaults of selectors."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    base_url: str | None = None
    """The engine's address (unix:///var/run/docker.sock, tcp://host:2375). Default:
    $DOCKER_HOST (with $DOCKER_TLS_VERIFY and $DOCKER_CERT_PATH), else the local socket,
    as the docker CLI does."""
    project: str | None = None
    """The Compose project that selectors naming a `service` mean when they give no
    `project`; its containers' events are journalled too."""
    url: str | None = None
    """The address of the system under test (e.g. a port its load balancer publishes),
    offered to probes and load as ${target.url}."""
    timeout: Annotated[Duration, Field(gt=0)] = 30.0
    """How long any one call to the engine may take."""


class ContainerGone(TargetError):
    """The container no longer exists on the engine (removed while the run went on)."""


@dataclass(frozen=True)
class ContainerState:
    """What the engine says of one container, at one moment."""

    id: str
    name: str
    status: str
    """created, running, paused, restarting, removing, exited or dead."""
    health: str | None
    """starting, healthy or unhealthy; None when the container has no healthcheck."""
    restart_count: int
    """Restarts made by the restart policy; Docker resets it on a manual start or restart."""
    pid: int
    """The main process's pid on the engine's host (0 when not running)."""
    exit_code: int
    networks: Mapping[str, str] = field(default_factory=dict)
    """Network name -> IPv4 address on it ('' when it has none)."""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one network: what reconnecting it must restore."""

    network: str
    network_id: str
    aliases: tuple[str, ...]
    ipv4: str
    ipv6: str
    static_ipv4: str | None
    static_ipv6: str | None
    links: tuple[str, ...]


def signal_name(value: str | int) -> str:
    """'KILL', 'sigterm', 9 or '9' -> 'SIGKILL'; a name Python does not know is a ValueError."""
    text = str(value).strip().upper()
    try:
        return signal.Signals(int(text)).name
    except ValueError:
        pass
    name = text if text.startswith("SIG") else f"SIG{text}"
    if name not in signal.Signals.__members__:
        raise ValueError(f"unknown signal {value!r} (e.g. SIGKILL, SIGTERM, 9)")
    return name


class DockerTarget:
    """Containers on one Docker engine. `start` and `attach` connect; `stop` disconnects."""

    kind: ClassVar[str] = "docker"
    Params: ClassVar[type[BaseModel]] = DockerParams

    def __init__(self, params: DockerParams, *, base_dir: Path, journal: Journal | None) -> None:
        self.params = params
        self.base_dir = base_dir
        self.journal = journal
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self._client: Any = None
        self._events: EventFollower | None = None
        self._known: dict[str, str] = {}
        """Container id -> name of every container members() returned: whose events matter."""

    # ----------------------------------------------------------------- connection

    @property
    def base_url(self) -> str:
        """The engine's address as given, or as the environment gives it."""
        return self.params.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_BASE_URL

    @property
    def client(self) -> Any:
        """The Docker SDK client (docker.DockerClient), for the driver's own modules."""
        if self._client is None:
            raise TargetError("the Docker target is not connected: call start() or attach()")
        return self._client

    def start(self) -> None:
        """Connect, and follow the engine's events into the journal (when there is one), so
        that reports show when the engine saw a container die and start beside the probes."""
        self.attach()
        if self.journal is not None:
            self.start_events()

    def attach(self) -> None:
        if self._client is not None:
            return
        advice = (
            "start the engine (dockerd) or point the target at it with params.base_url "
            "or $DOCKER_HOST"
        )
        try:
            if self.params.base_url:
                client = docker.client.DockerClient(
                    base_url=self.params.base_url, timeout=self.params.timeout
                )
            else:
                client = docker.client.DockerClient.from_env(timeout=self.params.timeout)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise TargetError(
                f"cannot reach the Docker engine at {self.base_url}: {_reason(exc)}; {advice}"
            ) from exc
        self._client = client

    def stop(self) -> None:
        self.stop_events()
        if self._client is not None:
            self._client.close()
            self._client = None

    def variables(self) -> Mapping[str, str]:
        found = {"target.docker_host": self.base_url}
        if self.params.project:
            found["target.project"] = self.params.project
        if self.params.url:
            found["target.url"] = self.params.url
        return found

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = {"kind": self.kind, "base_url": self.base_url}
        if self.params.project:
            description["project"] = self.params.project
        if self._client is not None:
            with self._call("describe the engine"):
                version = self._client.version()
            description["engine"] = version.get("Version")
            description["api"] = version.get("ApiVersion")
        return description

    # ----------------------------------------------------------------- selection

    def members(self, selector: Selector) -> list[Member]:
        if selector.namespace is not None:
            raise TargetError(
                "selector.namespace is a Kubernetes filter; a docker target selects by "
                "names, labels, service and project"
            )
        labels = [f"{key}={value}" for key, value in sorted(selector.labels.items())]
        project = selector.project or self.params.project
        if project:
            labels.append(f"{COMPOSE_PROJECT}={project}")
        if selector.service:
            labels.append(f"{COMPOSE_SERVICE}={selector.service}")
        filters: dict[str, Any] = {"status": "running"}
        if labels:
            filters["label"] = labels
        with self._call("list containers"):
            found = self.client.api.containers(filters=filters)
        wanted = set(selector.names)
        members: list[Member] = []
        for summary in found:
            name = _summary_name(summary)
            if wanted and name not in wanted:
                continue
            if sidecar.HELPER_LABEL in (summary.get("Labels") or {}):
                continue  # a fault's own helper is never a member
            members.append(_member(summary, name))
            self._known[str(summary["Id"])] = name
        return members

    def service_states(self, service: str, project: str | None = None) -> list[ContainerState]:
        """Every container of a Compose service, running or not (project defaults as for
        selectors)."""
        labels = [f"{COMPOSE_SERVICE}={service}"]
        project = project or self.params.project
        if project:
            labels.append(f"{COMPOSE_PROJECT}={project}")
        with self._call("list containers"):
            found = self.client.api.containers(all=True, filters={"label": labels})
        return [self.container_state(str(summary["Id"])) for summary in found]

    # ----------------------------------------------------------------- state

    def container_state(self, ref: str) -> ContainerState:
        """The state of a container given by id or name; ContainerGone if it does not exist."""
        with self._call("inspect", ref):
            attrs = self.client.api.inspect_container(ref)
        return _state(attrs)

    def endpoint(self, ref: str, network: str) -> Endpoint:
        """The container's attachment to `network` (name or id); FaultError if not attached."""
        with self._call("inspect", ref):
            attrs = self.client.api.inspect_container(ref)
        name = str(attrs["Name"]).lstrip("/")
        attached = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        net = self.network(network)
        for net_name, settings in attached.items():
            if net_name == net["Name"] or settings.get("NetworkID") == net["Id"]:
                short_id = str(attrs["Id"])[:12]
                ipam = settings.get("IPAMConfig") or {}
                return Endpoint(
                    network=str(net["Name"]),
                    network_id=str(net["Id"]),
                    # Docker adds the short id as an alias by itself on every connect.
                    aliases=tuple(a for a in settings.get("Aliases") or () if a != short_id),
                    ipv4=str(settings.get("IPAddress") or ""),
                    ipv6=str(settings.get("GlobalIPv6Address") or ""),
                    static_ipv4=ipam.get("IPv4Address") or None,
                    static_ipv6=ipam.get("IPv6Address") or None,
                    links=tuple(settings.get("Links") or ()),
                )
        raise FaultError(
            f"container {name} is not attached to network {network!r} "
            f"(it is on: {', '.join(sorted(attached)) or 'none'})"
        )

    def network(self, name: str) -> dict[str, Any]:
        """The engine's description of a network; TargetError naming it if there is none."""
        try:
            with self._call("inspect", name, thing="network"):
                found: dict[str, Any] = self.client.api.inspect_network(name)
        except ContainerGone as exc:
            raise TargetError(f"there is no Docker network {name!r} on the engine") from exc
        return found

    # ----------------------------------------------------------------- lifecycle

    def kill(self, ref: str, sig: str | int = "SIGKILL") -> None:
        """Send a signal through the engine. Docker counts this as a manual stop, so the
        restart policy does not bring the container back (see `crash` for that)."""
        with self._call("kill", ref):
            self.client.api.kill(ref, signal=signal_name(sig))

    def crash(self, ref: str, sig: str | int = "SIGKILL", *, via: CrashVia = "auto") -> str:
        """Kill the container's main process behind the engine's back, so the engine sees it
        die on its own and applies the restart policy, as after a real crash (see `crash`
        for why and how). `via`: "host" (this process signals it), "helper" (a helper
        container in the host's PID namespace does), or "auto" (host if it can, else
        helper). Returns how it was done."""
        state = self.container_state(ref)
        if not state.running or state.pid <= 0:
            raise FaultError(f"container {state.name} is {state.status}: there is nothing to crash")
        signum = signal.Signals[signal_name(sig)]
        if via in ("auto", "host"):
            if crash.signal_from_host(state.id, state.name, state.pid, signum):
                return "host"
            if via == "host":
                raise FaultError(
                    f"cannot signal container {state.name}'s process {state.pid} from here: "
                    "the runner does not share the engine host's PID namespace (or lacks "
                    "the right to signal it); use via: helper"
                )
        with self._call("crash", state.name):
            crash.signal_from_helper(
                self.client, state.id, state.name, state.pid, signum, timeout=self.params.timeout
            )
        return "helper"

    def stop_container(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; a manual stop (no restart policy)."""
        with self._call("stop", ref):
            self.client.api.stop(ref, timeout=_whole_seconds(timeout))

    def start_container(self, ref: str) -> None:
        """Start a stopped container; starting a running one does nothing."""
        with self._call("start", ref):
            self.client.api.start(ref)

    def restart(self, ref: str, timeout: float = 10.0) -> None:
        with self._call("restart", ref):
            self.client.api.restart(ref, timeout=_whole_seconds(timeout))

    def pause(self, ref: str) -> None:
        """Freeze every process of the container (the cgroup freezer)."""
        with self._call("pause", ref):
            self.client.api.pause(ref)

    def unpause(self, ref: str) -> None:
        """Thaw a paused container; one that is not paused is left as it is."""
        if self.container_state(ref).status != "paused":
            return
        with self._call("unpause", ref):
            self.client.api.unpause(ref)

    def disconnect(self, network: str, ref: str) -> None:
        """Detach the container from a network; one already detached is left as it is."""
        with self._call("disconnect", ref):
            attrs = self.client.api.inspect_container(ref)
        net = self.network(network)
        attached = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if not any(
            n == net["Name"] or s.get("NetworkID") == net["Id"] for n, s in attached.items()
        ):
            return
        with self._call(f"disconnect from network {net['Name']}", ref):
            self.client.api.disconnect_container_from_network(ref, net["Id"])

    def connect(
        self,
        network: str,
        ref: str,
        *,
        aliases: Sequence[str] = (),
        ipv4: str | None = None,
        ipv6: str | None = None,
        links: Sequence[str] = (),
    ) -> None:
        """Attach the container to a network again, with its aliases and, where the network
        has a subnet of its own, the same addresses; one already attached is left as it is.

        Ports published on an ephemeral host port get a new one on reconnect (Docker's doing).
        """
        state = self.container_state(ref)
        net = self.network(network)
        if net["Name"] in state.networks:
            return
        user_subnet = any(c.get("Subnet") for c in (net.get("IPAM") or {}).get("Config") or ())
        options: dict[str, Any] = {"aliases": list(aliases) or None, "links": list(links) or None}
        if user_subnet:
            # Docker accepts a chosen address only on a network with a configured subnet.
            options.update(ipv4_address=ipv4 or None, ipv6_address=ipv6 or None)
        try:
            with self._call(f"connect to network {net['Name']}", ref):
                self.client.api.connect_container_to_network(ref, net["Id"], **options)
        except FaultError:
            if not (options.get("ipv4_address") or options.get("ipv6_address")):
                raise
            # The old address was taken meanwhile: reconnect with a new one rather than not
            # at all; the aliases still lead to it.
            options.update(ipv4_address=None, ipv6_address=None)
            with self._call(f"connect to network {net['Name']}", ref):
                self.client.api.connect_container_to_network(ref, net["Id"], **options)

    def exec(self, ref: str, argv: Sequence[str]) -> tuple[int, str]:
        """Run argv (no shell) in the container to its end: (exit code, stdout and stderr)."""
        with self._call("exec in", ref):
            created = self.client.api.exec_create(ref, list(argv))
            output = self.client.api.exec_start(created["Id"])
            code = self.client.api.exec_inspect(created["Id"]).get("ExitCode")
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        return (int(code) if code is not None else -1), text

    # ----------------------------------------------------------------- events

    def start_events(self, on_event: Callable[[EngineEvent], None] | None = None) -> None:
        """Follow the engine's events for the containers of interest (those members() has
        returned, and the containers of params.project), journalling each as an `event`
        record stamped on the runner's monotonic clock, and passing it to `on_event`.

        Events that happen after this returns are never missed. Idempotent: a later call
        only adds its `on_event` (once) to those already called.
        """
        if on_event is not None and on_event not in self._listeners:
            self._listeners.append(on_event)
        if self._events is not None:
            return
        follower = EventFollower(
            self.client,
            journal=self.journal,
            on_event=self._dispatch,
            interesting=self._interesting,
            known=self._known,
        )
        follower.start()
        self._events = follower

    def _dispatch(self, event: EngineEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def stop_events(self) -> None:
        """Stop following events; safe to call when they were never started, or twice."""
        follower, self._events = self._events, None
        if follower is not None:
            follower.stop()

    def _interesting(self, container_id: str, labels: Mapping[str, str]) -> bool:
        if container_id in self._known:
            return True
        project = self.params.project
        return bool(project) and labels.get(COMPOSE_PROJECT) == project

    # ----------------------------------------------------------------- internals

    @contextmanager
    def _call(
        self, what: str, ref: str | None = None, *, thing: str = "container"
    ) -> Iterator[None]:
        """Turn the SDK's exceptions into the runner's, with messages that name the object."""
        if ref and len(ref) == 64:
            ref = ref[:12]  # a full id, shortened as the docker CLI shows it
        subject = f"{what} {thing} {ref}" if ref else what
        try:
            yield
        except docker.errors.NotFound as exc:
            raise ContainerGone(
                f"cannot {subject}: it no longer exists on the engine ({_reason(exc)})"
            ) from exc
        except docker.errors.APIError as exc:
            raise FaultError(f"cannot {subject}: the engine refused: {_reason(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise TargetError(
                f"cannot {subject}: the Docker engine at {self.base_url} did not answer "
                f"({_reason(exc)})"
            ) from exc


def _whole_seconds(timeout: float) -> int:
    # The engine's stop and restart timeouts are whole seconds; round up, never to zero
    # unless zero was asked for.
    return int(timeout) if timeout == int(timeout) else int(timeout) + 1


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    return str(exc) or type(exc).__name__


def _summary_name(summary: Mapping[str, Any]) -> str:
    names = summary.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(summary["Id"])[:12]


def _member(summary: Mapping[str, Any], name: str) -> Member:
    labels: Mapping[str, str] = summary.get("Labels") or {}
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    ips = [str(n.get("IPAddress")) for n in networks.values() if n.get("IPAddress")]
    attrs = {"image": str(summary.get("Image", ""))}
    if labels.get(COMPOSE_SERVICE):
        attrs["service"] = labels[COMPOSE_SERVICE]
    if labels.get(COMPOSE_PROJECT):
        attrs["project"] = labels[COMPOSE_PROJECT]
    if ips:
        attrs["ip"] = ips[0]
    return Member(id=str(summary["Id"]), name=name, attrs=attrs)


def _state(attrs: Mapping[str, Any]) -> ContainerState:
    state = attrs.get("State") or {}
    health = state.get("Health") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerState(
        id=str(attrs["Id"]),
        name=str(attrs["Name"]).lstrip("/"),
        status=str(state.get("Status", "unknown")),
        health=str(health["Status"]) if health.get("Status") else None,
        restart_count=int(attrs.get("RestartCount") or 0),
        pid=int(state.get("Pid") or 0),
        exit_code=int(state.get("ExitCode") or 0),
        networks={name: str(s.get("IPAddress") or "") for name, s in networks.items()},
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
    )
