"""Fixtures for tests against the real Docker engine, shared by every file in tests/docker.

- `docker_client`: the Docker SDK client (for test setup and observation only; the code
  under test goes through `DockerTarget`). Without an engine every Docker test is skipped,
  unless CI=true or CHAOS_RUNNER_REQUIRE_DOCKER=1, where it fails instead.
- `docker_target`: a started DockerTarget journalling into the test's tmp_path.
- `docker_prefix`: a name prefix unique to the test; `docker_container`, `http_container`
  and `docker_network` create containers and networks named with it and labelled
  `chaos-runner.test=1`, and remove them (and any fault helper left on them) afterwards.
- `wait_until`: poll a condition until it holds, or fail naming what was awaited.

Containers run the local base image (CHAOS_RUNNER_BASE_IMAGE overrides it); ports are
published on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_requirement import unavailable

from chaos_runner.journal import Journal, read_journal

BASE_IMAGE = os.environ.get("CHAOS_RUNNER_BASE_IMAGE", "chaos-runner/base:bookworm")
TEST_LABEL = "chaos-runner.test"
HTTP_PORT = 8000


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The Docker SDK client; skips (or fails, see above) when no engine answers."""
    try:
        import docker.client
        import docker.errors
    except ImportError:
        unavailable("the docker SDK is not installed (pip install chaos-runner[docker])")
    try:
        client = docker.client.DockerClient.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        unavailable(f"no Docker engine answers ({exc})")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        unavailable(
            f"the base image {BASE_IMAGE} is not on the engine (build it offline: "
            "mmdebstrap --variant=essential --include=python3,iproute2,iptables,"
            f"ca-certificates,procps bookworm - | docker import - {BASE_IMAGE})"
        )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def docker_prefix() -> str:
    """A prefix for the names of this test's containers and networks."""
    return f"crt-{secrets.token_hex(3)}"


@pytest.fixture
def docker_target(docker_client: Any, tmp_path: Path) -> Iterator[Any]:
    """A started DockerTarget with default params whose journal is tmp_path/journal.jsonl
    (read it with `journal_records(target)`)."""
    from chaos_runner.targets.docker import DockerParams, DockerTarget

    journal = Journal(tmp_path / "journal.jsonl")
    target = DockerTarget(DockerParams(), base_dir=tmp_path, journal=journal)
    target.start()
    try:
        yield target
    finally:
        target.stop()
        journal.close()


def journal_records(target: Any, type: str | None = None) -> list[dict[str, Any]]:
    """The records the target has journalled so far (of one type, if given)."""
    assert target.journal is not None
    records = read_journal(target.journal.path)
    return [r for r in records if type is None or r["type"] == type]


@pytest.fixture
def docker_journal() -> Callable[..., list[dict[str, Any]]]:
    """`docker_journal(target, type=None)`: the records a target has journalled so far."""
    return journal_records


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """`wait_until(condition, what, timeout=15.0)`: poll every 50 ms until condition() is
    true; fail naming `what` if it is not within `timeout` seconds."""

    def wait(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.05)

    return wait


@pytest.fixture
def docker_network(docker_client: Any, docker_prefix: str) -> Iterator[Callable[..., Any]]:
    """`docker_network(suffix="net", subnet=None)`: a new user-defined bridge network (SDK
    object); with `subnet` (e.g. "10.213.7.0/24") its addresses can be chosen."""
    import docker.types

    made: list[Any] = []

    def create(suffix: str = "net", subnet: str | None = None) -> Any:
        options: dict[str, Any] = {}
        if subnet is not None:
            pool = docker.types.IPAMPool(subnet=subnet)
            options["ipam"] = docker.types.IPAMConfig(pool_configs=[pool])
        network = docker_client.networks.create(
            f"{docker_prefix}-{suffix}", labels={TEST_LABEL: "1"}, **options
        )
        made.append(network)
        return network

    try:
        yield create
    finally:
        for network in reversed(made):
            with contextlib.suppress(Exception):
                network.reload()
                for container in network.containers:
                    network.disconnect(container, force=True)
            with contextlib.suppress(Exception):
                network.remove()


@pytest.fixture
def docker_container(
    docker_client: Any, docker_prefix: str, docker_network: Any
) -> Iterator[Callable[..., Any]]:
    """`docker_container(suffix, command=("sleep", "infinity"), labels=None, start=True,
    **run_options)`: a container of the base image (SDK object), named
    `<prefix>-<suffix>`; `start=False` only creates it. Extra keyword arguments go to the
    SDK's containers.create (network, ports, restart_policy, healthcheck...)."""
    made: list[Any] = []

    def create(
        suffix: str,
        command: Sequence[str] = ("sleep", "infinity"),
        *,
        labels: Mapping[str, str] | None = None,
        start: bool = True,
        **options: Any,
    ) -> Any:
        container = docker_client.containers.create(
            BASE_IMAGE,
            list(command),
            name=f"{docker_prefix}-{suffix}",
            labels={TEST_LABEL: "1", **(labels or {})},
            # A stopped container answers SIGTERM at once instead of after 10 s.
            stop_signal="SIGKILL",
            **options,
        )
        made.append(container)
        if start:
            container.start()
            container.reload()
        return container

    try:
        yield create
    finally:
        from chaos_runner.targets.docker import sidecar

        for container in reversed(made):
            with contextlib.suppress(Exception):
                sidecar.remove_helpers(docker_client, target=container.id)
            with contextlib.suppress(Exception):
                container.remove(force=True)


@dataclass(frozen=True)
class HttpContainer:
    """A running `python3 -m http.server` with its port published on 127.0.0.1."""

    container: Any
    """The SDK's Container object."""

    @property
    def id(self) -> str:
        return str(self.container.id)

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def url(self) -> str:
        """Read afresh: a container reconnected to its network may get a new host port."""
        self.container.reload()
        bindings = (self.container.ports or {}).get(f"{HTTP_PORT}/tcp") or []
        if not bindings:
            return "http://127.0.0.1:9/unpublished"  # the discard port: never answers HTTP
        return f"http://127.0.0.1:{bindings[0]['HostPort']}/"

    def fetch(self, timeout: float = 1.0) -> str | None:
        """None when a GET succeeds, else what went wrong."""
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as response:
                response.read()
            return None
        except OSError as exc:
            return repr(exc)

    def state(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs["State"]) | {
            "RestartCount": self.container.attrs["RestartCount"]
        }


@pytest.fixture
def http_container(
    docker_container: Callable[..., Any], wait_until: Callable[..., None]
) -> Callable[..., HttpContainer]:
    """`http_container(suffix="web", *, labels=None, healthcheck=False, **run_options)`:
    an HTTP server container answering on its published 127.0.0.1 port before it is
    returned. `healthcheck=True` gives it a healthcheck (GET / every 0.25 s);
    `restart_policy={"Name": "always"}` and `network=...` pass through to Docker."""

    def create(
        suffix: str = "web",
        *,
        labels: Mapping[str, str] | None = None,
        healthcheck: bool = False,
        **options: Any,
    ) -> HttpContainer:
        if healthcheck:
            probe = (
                f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{HTTP_PORT}/')"
            )
            options["healthcheck"] = {
                "test": ["CMD", "python3", "-c", probe],
                "interval": 250_000_000,
                "timeout": 1_000_000_000,
                "retries": 2,
            }
        container = docker_container(
            suffix,
            ["python3", "-m", "http.server", str(HTTP_PORT)],
            labels=labels,
            ports={f"{HTTP_PORT}/tcp": ("127.0.0.1", None)},
            **options,
        )
        server = HttpContainer(container)
        wait_until(lambda: server.fetch() is None, f"{server.name} to answer HTTP")
        return server

    return create
