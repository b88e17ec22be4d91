"""Network faults on real containers: partition, loss, bandwidth, and netem's refusal.

Each fault is injected and reverted on a container of the local engine; the effect is seen
over real HTTP (from the host through a published port, or from another container on a
user-defined bridge) and so is the restoration, and no rule or qdisc is left behind.
"""

from __future__ import annotations

import os
import secrets
import time
import types
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import FaultSpec
from chaos_runner.faults.docker_network import (
    QDISC_HANDLE,
    Bandwidth,
    NetemLatency,
    PacketLoss,
    Partition,
)
from chaos_runner.plugins import Handle, Member
from chaos_runner.targets.docker import sidecar

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

BASE = os.environ.get("CHAOS_RUNNER_BASE_IMAGE", "chaos-runner/base:bookworm")
BIG = 1_000_000
"""Bytes of the file the server offers for the bandwidth test."""

# A server with a file to download, on a user-defined bridge, published on 127.0.0.1 only.
SERVE = f"head -c {BIG} /dev/zero > /srv/big && cd /srv && exec python3 -m http.server 8000"


@pytest.fixture(scope="module")
def client(docker_client: Any) -> Any:
    """The session's client: it skips, or in CI fails, when no engine answers."""
    return docker_client


@pytest.fixture(scope="module")
def target(client: Any) -> Any:
    """What the faults need of a Docker target: its SDK client."""
    return types.SimpleNamespace(client=client)


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"crt-net-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def network(client: Any, prefix: str) -> Iterator[Any]:
    net = client.networks.create(f"{prefix}-net", labels={"chaos-runner.test": "1"})
    try:
        yield net
    finally:
        net.remove()


def _start(client: Any, name: str, network: Any, command: list[str], **options: Any) -> Any:
    return client.containers.run(
        BASE,
        command,
        name=name,
        detach=True,
        network=network.name,
        labels={"chaos-runner.test": "1"},
        **options,
    )


def _remove(client: Any, container: Any) -> None:
    sidecar.remove_helpers(client, target=container.id)
    container.remove(force=True)


@dataclass(frozen=True)
class Server:
    box: Any
    url: str
    """Through the port published on 127.0.0.1."""
    ip: str
    """On the user-defined bridge."""

    @property
    def id(self) -> str:
        return str(self.box.id)

    @property
    def name(self) -> str:
        return str(self.box.name)


@pytest.fixture(scope="module")
def server(client: Any, network: Any, prefix: str) -> Iterator[Server]:
    box = _start(
        client,
        f"{prefix}-server",
        network,
        ["sh", "-c", SERVE],
        ports={"8000/tcp": ("127.0.0.1", None)},
    )
    try:
        box.reload()
        url = f"http://127.0.0.1:{box.ports['8000/tcp'][0]['HostPort']}"
        ip = box.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        _wait_until(lambda: _get(url) is None, "the server to answer")
        yield Server(box, url, ip)
    finally:
        _remove(client, box)


@pytest.fixture(scope="module")
def peer(client: Any, network: Any, prefix: str, server: Server) -> Iterator[Any]:
    """Another container on the same bridge, from which the server is fetched."""
    box = _start(client, f"{prefix}-peer", network, ["sleep", "infinity"])
    try:
        yield box
    finally:
        _remove(client, box)


def _wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _get(url: str, timeout: float = 1.0) -> str | None:
    """None when the request succeeds, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        return None
    except OSError as exc:
        return repr(exc)


def _get_from(box: Any, url: str) -> int:
    """Exit status of an HTTP GET made from inside another container (0: it worked)."""
    code = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1).read()"
    return int(box.exec_run(["python3", "-c", code, url]).exit_code)


def _plan(kind: Any, target: Any, member: Any, **params: Any) -> tuple[Handle, Any]:
    validated = kind.Params(**params)
    kind.check(validated, target)
    spec = FaultSpec(kind=kind.kind, duration=10, params=params)
    (handle,) = kind.plan(spec, "f", validated, [Member(member.id, member.name)], target)
    return handle, validated


def _netns(client: Any, box: Any, argv: list[str]) -> str:
    code, output = sidecar.run_in_namespaces(client, box.id, argv, caps=("NET_ADMIN",))
    assert code == 0, output
    return output


def _rules(client: Any, box: Any) -> str:
    return _netns(client, box, ["sh", "-c", "iptables -S; ip6tables -S"])


def test_partition_cuts_http_from_the_host_until_reverted(
    client: Any, target: Any, server: Server
) -> None:
    fault = Partition()
    handle, params = _plan(fault, target, server)
    fault.inject(handle, params, target)
    try:
        assert _get(server.url) is not None, "the partitioned server still answered"
        assert f"chaos-runner:{handle.id}" in _rules(client, server)
    finally:
        # From the journalled form alone, as after a crash; twice, as revert is idempotent.
        fault.revert(Handle.from_json(handle.to_json()), target)
    fault.revert(handle, target)
    assert _get(server.url) is None
    assert "chaos-runner" not in _rules(client, server)
    assert sidecar.helpers(client, target=server.id) == []


def test_partition_from_a_named_peer_cuts_only_that_peer(
    client: Any, target: Any, server: Server, peer: Any
) -> None:
    url = f"http://{server.ip}:8000/"
    assert _get_from(peer, url) == 0
    fault = Partition()
    handle, params = _plan(fault, target, server, peers=[peer.name], direction="in")
    fault.inject(handle, params, target)
    try:
        assert _get_from(peer, url) != 0, "the peer still reached the partitioned server"
        assert _get(server.url) is None, "the host, not a peer, was cut off too"
    finally:
        fault.revert(handle, target)
    assert _get_from(peer, url) == 0
    assert "chaos-runner" not in _rules(client, server)


def test_total_packet_loss_fails_requests_until_reverted(
    client: Any, target: Any, server: Server
) -> None:
    fault = PacketLoss()
    handle, params = _plan(fault, target, server, percent=100, direction="out")
    fault.inject(handle, params, target)
    try:
        assert "statistic" in _rules(client, server)
        assert _get(server.url) is not None, "requests got through 100% loss"
    finally:
        fault.revert(handle, target)
    assert _get(server.url) is None
    assert "chaos-runner" not in _rules(client, server)


def test_half_packet_loss_fails_some_requests(client: Any, target: Any, server: Server) -> None:
    fault = PacketLoss()
    handle, params = _plan(fault, target, server, percent=50)
    fault.inject(handle, params, target)
    try:
        # A request needs several packets through, each dropped half the time, and 0.3 s
        # leaves no room for a retransmission: ten successes in a row would be a fluke of
        # well under one in a billion.
        failures = sum(_get(server.url, timeout=0.3) is not None for _ in range(10))
    finally:
        fault.revert(handle, target)
    assert failures > 0
    assert _get(server.url) is None


def _download_seconds(url: str) -> float:
    start = time.monotonic()
    with urllib.request.urlopen(f"{url}/big", timeout=30) as response:
        size = len(response.read())
    assert size == BIG
    return time.monotonic() - start


def test_bandwidth_slows_a_download_until_reverted(
    client: Any, target: Any, server: Server
) -> None:
    unshaped = _download_seconds(server.url)
    fault = Bandwidth()
    # 4 mbit/s is 500 kB/s: the 1 MB download takes about 2 s instead of milliseconds.
    handle, params = _plan(fault, target, server, rate="4mbit")
    fault.inject(handle, params, target)
    try:
        assert "tbf" in _netns(client, server, ["tc", "qdisc", "show"])
        shaped = _download_seconds(server.url)
    finally:
        fault.revert(handle, target)
    fault.revert(handle, target)
    assert shaped > max(1.0, 5 * unshaped), f"shaped {shaped:.2f}s, unshaped {unshaped:.2f}s"
    assert QDISC_HANDLE not in _netns(client, server, ["tc", "qdisc", "show"])
    assert _download_seconds(server.url) < shaped / 2


def test_netem_latency_is_refused_in_preflight_naming_the_missing_module(target: Any) -> None:
    fault = NetemLatency()
    params = fault.Params(delay="100ms", jitter="10ms")
    try:
        fault.check(params, target)
    except PreflightError as exc:
        message = str(exc)
    else:
        pytest.skip("this Docker host's kernel has netem: nothing to refuse")
    assert "sch_netem" in message
    assert "'latency' on a local target" in message
    assert "toxiproxy" in message


def _interface_of(client: Any, box: Any, ip: str) -> str:
    for line in _netns(client, box, ["ip", "-o", "addr", "show"]).splitlines():
        words = line.split()
        if words[3].split("/")[0] == ip:
            return str(words[1])
    raise AssertionError(f"no interface carries {ip}")


def _reconnect(client: Any, box: Any, network: Any) -> str:
    """Disconnect and reconnect the box, which renames its interface; its new IP."""
    network.disconnect(box)
    network.connect(box)
    box.reload()
    return str(box.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])


def test_partition_finds_the_interface_by_ip_after_a_reconnect(
    client: Any, target: Any, network: Any, prefix: str, peer: Any
) -> None:
    other = client.networks.create(f"{prefix}-other", labels={"chaos-runner.test": "1"})
    box = _start(client, f"{prefix}-moved", network, ["python3", "-m", "http.server", "8000"])
    try:
        other.connect(box)
        ip = _reconnect(client, box, network)
        assert _interface_of(client, box, ip) != "eth0", "the reconnect did not rename"
        url = f"http://{ip}:8000/"
        _wait_until(lambda: _get_from(peer, url) == 0, "the moved server to answer")
        fault = Partition()
        handle, params = _plan(fault, target, box)
        fault.inject(handle, params, target)
        try:
            assert _get_from(peer, url) != 0, "the partition missed the renamed interface"
            # Renamed again while the fault is on: revert still finds its rules by tag.
            ip = _reconnect(client, box, network)
            url = f"http://{ip}:8000/"
        finally:
            fault.revert(handle, target)
        assert "chaos-runner" not in _rules(client, box)
        _wait_until(lambda: _get_from(peer, url) == 0, "the moved server to answer again")
    finally:
        _remove(client, box)
        other.remove()


def test_revert_after_the_container_is_gone_is_not_an_error(
    client: Any, target: Any, network: Any, prefix: str
) -> None:
    box = _start(client, f"{prefix}-gone", network, ["sleep", "infinity"])
    try:
        handles = []
        for fault in (Partition(), Bandwidth()):
            params = {"rate": "1mbit"} if isinstance(fault, Bandwidth) else {}
            handle, validated = _plan(fault, target, box, **params)
            fault.inject(handle, validated, target)
            handles.append((fault, handle))
    finally:
        box.remove(force=True)
    for fault, handle in handles:
        fault.revert(handle, target)


def test_a_container_on_the_host_network_is_refused(client: Any, target: Any, prefix: str) -> None:
    box = client.containers.run(
        BASE,
        ["sleep", "infinity"],
        name=f"{prefix}-host",
        detach=True,
        network_mode="host",
        labels={"chaos-runner.test": "1"},
    )
    try:
        for fault in (Partition(), Bandwidth()):
            params = (
                {"rate": "1mbit"} if isinstance(fault, Bandwidth) else {"peers": ["10.0.0.0/8"]}
            )
            handle, validated = _plan(fault, target, box, **params)
            with pytest.raises(FaultError, match="host"):
                fault.inject(handle, validated, target)
    finally:
        _remove(client, box)


def test_the_helper_image_is_built_when_absent_with_every_tool(client: Any) -> None:
    tag = f"chaos-runner/helper:test-{secrets.token_hex(3)}"
    try:
        assert sidecar.ensure_helper_image(client, tag=tag) == tag
        tools = "for t in ip tc iptables ip6tables ps python3; do command -v $t || exit 1; done"
        output = client.containers.run(tag, ["sh", "-c", tools], remove=True).decode()
        assert len(output.split()) == 6, output
    finally:
        client.images.remove(tag, force=True)
