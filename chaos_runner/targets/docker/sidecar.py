"""Helper (sidecar) containers that run tools inside a target container's namespaces.

Network and resource faults must work on images with no tools in them, so, as Pumba does,
the tools run in a helper container that joins the target's network and/or PID namespace
and, for stressors, sits in the target's cgroup. Every helper is labelled so leftovers can
be found and removed. This module never decides what a fault does; it only runs argv.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions

from chaos_runner.errors import FaultError, PreflightError, TargetError

HELPER_IMAGE = "chaos-runner/helper:latest"
"""The image every helper runs; built locally from docker/helper/Dockerfile when absent."""

PUBLIC_BASE = "debian:bookworm-slim"
LOCAL_BASE = "chaos-runner/base:bookworm"
"""The base used when the public one cannot be pulled (no registry reachable)."""

HELPER_LABEL = "chaos-runner.helper"
HANDLE_LABEL = "chaos-runner.handle"
TARGET_LABEL = "chaos-runner.target"
RECIPE_LABEL = "chaos-runner.helper-recipe"
"""On the helper image: a digest of the Dockerfile it was built from."""

DOCKERFILE = Path(__file__).resolve().parents[3] / "docker" / "helper" / "Dockerfile"
"""Present in a source checkout; an installed wheel must be given a prebuilt helper image."""


class NotRunning(TargetError):
    """The target container is stopped or gone, so its namespaces no longer exist."""

    def __init__(self, message: str, *, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone
        """True when the container no longer exists at all (nothing of it is left)."""


@dataclass(frozen=True)
class CgroupPlacement:
    """Where a stressor helper's cgroup goes, and whether it counts against the target."""

    parent: str
    shared: bool
    """True: a child of the target's cgroup (its limits apply, `docker stats` include it)."""
    description: str


def client_of(target: object) -> Any:
    """The Docker SDK client of a Docker target (DockerTarget.client)."""
    client = getattr(target, "client", None)
    if client is None:
        raise PreflightError(
            f"this fault needs a Docker target; got a {type(target).__name__} without a client"
        )
    return client


def ensure_helper_image(client: Any, base: str | None = None, *, tag: str = HELPER_IMAGE) -> str:
    """The helper image's tag, building it first when it is not on the engine (or was built
    from another version of docker/helper/Dockerfile).

    The base is `base` if given, else $CHAOS_RUNNER_BASE_IMAGE, else the public Debian image
    when it is present or can be pulled, else the local base (for hosts with no registry).
    """
    recipe = DOCKERFILE.read_bytes() if DOCKERFILE.is_file() else None
    digest = hashlib.sha256(recipe).hexdigest()[:16] if recipe is not None else None
    try:
        image = client.images.get(tag)
        if digest is None or image.labels.get(RECIPE_LABEL) == digest:
            return tag
    except docker.errors.ImageNotFound:
        pass
    chosen = base or os.environ.get("CHAOS_RUNNER_BASE_IMAGE") or _available_base(client)
    if recipe is None or digest is None:
        raise PreflightError(
            f"the helper image {tag} is not on the Docker engine and {DOCKERFILE} is not "
            "here to build it; build it from the chaos-runner repository: "
            f"docker build --build-arg BASE={chosen} -t {tag} docker/helper"
        )
    try:
        client.images.build(
            fileobj=io.BytesIO(recipe),
            tag=tag,
            buildargs={"BASE": chosen},
            labels={RECIPE_LABEL: digest},
            pull=False,
            rm=True,
            forcerm=True,
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise PreflightError(
            f"could not build the helper image {tag} on base {chosen}: {exc}"
        ) from exc
    return tag


def _available_base(client: Any) -> str:
    for candidate in (PUBLIC_BASE, LOCAL_BASE):
        try:
            client.images.get(candidate)
            return candidate
        except docker.errors.ImageNotFound:
            pass
        if candidate == PUBLIC_BASE:
            try:
                client.images.pull(candidate)
                return candidate
            except docker.errors.APIError:
                continue  # no registry reachable: try the local base
    raise PreflightError(
        f"cannot build the helper image: neither {PUBLIC_BASE} (pull failed) nor {LOCAL_BASE} "
        "is available; set CHAOS_RUNNER_BASE_IMAGE to a local Debian-based image"
    )


def container_ips(client: Any, ref: str) -> list[str]:
    """Every IP address (v4 and v6) the container has on its Docker networks."""
    try:
        attrs = client.containers.get(ref).attrs
    except docker.errors.NotFound as exc:
        raise NotRunning(f"container {ref!r} does not exist", gone=True) from exc
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ips: list[str] = []
    for settings in networks.values():
        for key in ("IPAddress", "GlobalIPv6Address"):
            if settings.get(key):
                ips.append(str(settings[key]))
    return ips


def cgroup_placement(client: Any, container_id: str) -> CgroupPlacement:
    """Where a stressor's cgroup must go to weigh on the target.

    With the cgroupfs driver on cgroup v1, Docker nests the helper under the target's own
    cgroup, so the target's limits apply and its stats include the stressor. The systemd
    driver cannot nest under a container scope and cgroup v2 forbids controllers below a
    cgroup that holds processes; there the helper goes beside the target, in its slice.
    """
    attrs = _running(client, container_id)
    info = client.info()
    parent = str(attrs["HostConfig"].get("CgroupParent") or "")
    if info.get("CgroupDriver") == "cgroupfs" and str(info.get("CgroupVersion", "1")) == "1":
        child = f"{(parent or '/docker').rstrip('/')}/{attrs['Id']}"
        return CgroupPlacement(
            child, True, f"{child}, a child of the target's: its limits and stats include it"
        )
    sibling = parent or ("system.slice" if info.get("CgroupDriver") == "systemd" else "/docker")
    return CgroupPlacement(
        sibling,
        False,
        f"beside the target's, in {sibling} ({info.get('CgroupDriver')} driver, cgroup "
        f"v{info.get('CgroupVersion')}): shares the host with it but not its limits or stats",
    )


def run_in_namespaces(
    client: Any,
    container_id: str,
    argv: list[str],
    *,
    net: bool = True,
    pid: bool = False,
    caps: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run argv to its end in a helper sharing the target's namespaces: (exit code, output)."""
    helper = _create(
        client, container_id, argv, net=net, pid=pid, caps=caps, labels=labels, name=name
    )
    try:
        return _finish(helper, timeout)
    finally:
        remove_helper(client, helper.id)


def run_isolated(
    client: Any, argv: list[str], *, caps: Iterable[str] = (), timeout: float = 60.0
) -> tuple[int, str]:
    """Run argv in a helper with a network namespace of its own and no network: a throwaway
    place to find out what the kernel supports (a qdisc kind, an iptables match)."""
    helper = client.containers.create(
        ensure_helper_image(client),
        argv,
        network_mode="none",
        cap_add=list(caps),
        labels={HELPER_LABEL: "1"},
        name=f"chaos-runner-helper-{secrets.token_hex(4)}",
    )
    try:
        helper.start()
        return _finish(helper, timeout)
    finally:
        remove_helper(client, helper.id)


def start_in_namespaces(
    client: Any,
    container_id: str,
    argv: list[str],
    *,
    net: bool = False,
    pid: bool = False,
    cgroup: CgroupPlacement | None = None,
    caps: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
) -> str:
    """Start a long-running helper (a stressor) and return its id. Name it in advance (from
    the handle id) so that a revert can remove it knowing only the handle."""
    helper = _create(
        client,
        container_id,
        argv,
        net=net,
        pid=pid,
        cgroup=cgroup,
        caps=caps,
        labels=labels,
        name=name,
    )
    helper.reload()
    if helper.status != "running":
        output = helper.logs(stdout=True, stderr=True).decode(errors="replace").strip()
        remove_helper(client, helper.id)
        raise FaultError(f"the helper exited as soon as it started: {output or helper.status}")
    return str(helper.id)


def remove_helper(client: Any, helper_id: str) -> None:
    """Remove one helper (killing what runs in it); a helper already gone is not an error."""
    try:
        client.api.remove_container(helper_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise FaultError(f"could not remove helper container {helper_id}: {exc}") from exc


def helpers(client: Any, *, handle: str | None = None, target: str | None = None) -> list[Any]:
    """Helper containers, running or not: all of them, or those of one handle or target
    (full id)."""
    wanted = [f"{HELPER_LABEL}=1"]
    for label, value in ((HANDLE_LABEL, handle), (TARGET_LABEL, target)):
        if value:
            wanted.append(f"{label}={value}")
    return list(client.containers.list(all=True, filters={"label": wanted}))


def remove_helpers(
    client: Any, *, handle: str | None = None, target: str | None = None
) -> list[str]:
    """Remove leftover helpers: all of them, or those of one handle or target (full id)."""
    found = helpers(client, handle=handle, target=target)
    for helper in found:
        remove_helper(client, helper.id)
    return [str(h.id) for h in found]


def _running(client: Any, container_id: str) -> dict[str, Any]:
    try:
        container = client.containers.get(container_id)
    except docker.errors.NotFound as exc:
        raise NotRunning(f"container {container_id} no longer exists", gone=True) from exc
    if container.status != "running":
        raise NotRunning(
            f"container {container.name} is {container.status}, not running", gone=False
        )
    attrs: dict[str, Any] = container.attrs
    return attrs


def _create(
    client: Any,
    container_id: str,
    argv: list[str],
    *,
    net: bool,
    pid: bool,
    cgroup: CgroupPlacement | None = None,
    caps: Iterable[str],
    labels: Mapping[str, str] | None,
    name: str | None,
) -> Any:
    image = ensure_helper_image(client)
    attrs = _running(client, container_id)
    options: dict[str, Any] = {}
    if net and attrs["HostConfig"].get("NetworkMode") == "host":
        raise FaultError(
            f"container {attrs['Name'].lstrip('/')} uses the host's network namespace: a "
            "network fault there would act on the host itself, so it is refused"
        )
    if net:
        options["network_mode"] = f"container:{attrs['Id']}"
    if pid:
        options["pid_mode"] = f"container:{attrs['Id']}"
    if cgroup is not None:
        options["cgroup_parent"] = cgroup.parent
    try:
        helper = client.containers.create(
            image,
            argv,
            cap_add=list(caps),
            labels={HELPER_LABEL: "1", TARGET_LABEL: attrs["Id"], **(labels or {})},
            name=name or f"chaos-runner-helper-{secrets.token_hex(4)}",
            **options,
        )
    except docker.errors.APIError as exc:
        raise FaultError(f"could not create a helper for {attrs['Name']}: {exc}") from exc
    try:
        helper.start()
    except docker.errors.APIError as exc:
        remove_helper(client, helper.id)
        # The target may have stopped between the check and the start.
        if "non running container" in str(exc) or "is not running" in str(exc):
            raise NotRunning(f"container {attrs['Name'].lstrip('/')} stopped", gone=False) from exc
        raise FaultError(f"could not start a helper for {attrs['Name']}: {exc}") from exc
    return helper


def _finish(helper: Any, timeout: float) -> tuple[int, str]:
    try:
        status = helper.wait(timeout=timeout)
    except requests.exceptions.RequestException as exc:  # how the SDK reports a timeout
        raise FaultError(f"the helper did not finish within {timeout:g}s") from exc
    output = helper.logs(stdout=True, stderr=True).decode(errors="replace")
    return int(status.get("StatusCode", -1)), output
