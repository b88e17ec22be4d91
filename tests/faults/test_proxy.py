"""Proxy faults on the local target: what an HTTP client sees, and that reverts restore it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from pydantic import ValidationError

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import FaultSpec, Selector
from chaos_runner.faults.proxy import (
    ProxyBlackhole,
    ProxyLatency,
    ProxyRefuse,
    ProxyReset,
)
from chaos_runner.plugins import Handle
from chaos_runner.registry import default_registry
from chaos_runner.targets.local.driver import LocalParams, LocalTarget

ProxyFault = ProxyLatency | ProxyReset | ProxyRefuse | ProxyBlackhole


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    local = LocalTarget(LocalParams(replicas=2), base_dir=tmp_path, journal=None)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    """A keep-alive client, like the load generator's: its connection outlives injections."""
    with urllib3.PoolManager(maxsize=1, retries=False, timeout=1.0) as pool:
        yield pool


def fresh(url: str, timeout: float = 1.0) -> int:
    """One request on a new connection."""
    response = urllib3.request(
        "GET", url, headers={"Connection": "close"}, retries=False, timeout=timeout
    )
    return response.status


def inject(kind: ProxyFault, target: LocalTarget, **raw: Any) -> tuple[Handle, Any]:
    params = kind.Params.model_validate(raw)
    kind.check(params, target)
    handles = kind.plan(FaultSpec(kind=kind.kind), "f", params, target.members(Selector()), target)
    assert len(handles) == 1 and handles[0].member == "proxy"
    kind.inject(handles[0], params, target)
    return handles[0], params


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_the_kinds_are_registered_for_local_targets() -> None:
    registry = default_registry()
    for name, kind in [
        ("latency", ProxyLatency),
        ("reset", ProxyReset),
        ("refuse", ProxyRefuse),
        ("blackhole", ProxyBlackhole),
    ]:
        assert isinstance(registry.fault(name, "local"), kind)
        assert kind.reversible is True


def test_latency_slows_open_and_new_connections_until_reverted(
    target: LocalTarget, http: urllib3.PoolManager
) -> None:
    url = target.variables()["target.url"] + "/health"
    assert http.request("GET", url).status == 200
    latency = ProxyLatency()
    handle, _ = inject(latency, target, latency="300ms", jitter="20ms")
    assert timed(lambda: http.request("GET", url)) >= 0.28
    assert timed(lambda: fresh(url)) >= 0.28
    latency.revert(handle, target)
    assert timed(lambda: http.request("GET", url)) < 0.28
    latency.revert(handle, target)  # idempotent


def test_two_latency_faults_add_up_and_clear_independently(target: LocalTarget) -> None:
    url = target.variables()["target.url"] + "/health"
    first, _ = inject(ProxyLatency(), target, latency="200ms")
    second, _ = inject(ProxyLatency(), target, latency="200ms")
    assert timed(lambda: fresh(url)) >= 0.38
    ProxyLatency().revert(first, target)
    assert 0.18 <= timed(lambda: fresh(url)) < 0.38
    ProxyLatency().revert(second, target)
    assert timed(lambda: fresh(url)) < 0.18


def test_reset_breaks_open_and_new_connections_until_reverted(
    target: LocalTarget, http: urllib3.PoolManager
) -> None:
    url = target.variables()["target.url"] + "/health"
    assert http.request("GET", url).status == 200
    reset = ProxyReset()
    handle, _ = inject(reset, target, share=1.0)
    # The open connection was reset: the pool sees it dropped, reconnects, and is reset again.
    with pytest.raises(urllib3.exceptions.HTTPError, match="reset"):
        http.request("GET", url)
    # Reset right after accept: seen while connecting or at the first read, by timing.
    with pytest.raises(
        (urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError), match="reset"
    ):
        fresh(url)
    reset.revert(handle, target)
    assert fresh(url) == 200 and http.request("GET", url).status == 200


def test_reset_of_a_share_hits_some_connections_and_spares_others(target: LocalTarget) -> None:
    url = target.variables()["target.url"] + "/health"
    handle, _ = inject(ProxyReset(), target, share=0.5)
    outcomes = []
    for _ in range(40):
        try:
            outcomes.append(fresh(url) == 200)
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError):
            outcomes.append(False)
    ProxyReset().revert(handle, target)
    assert 0 < sum(outcomes) < 40


def test_refuse_closes_the_port_until_reverted(
    target: LocalTarget, http: urllib3.PoolManager
) -> None:
    url = target.variables()["target.url"] + "/health"
    assert http.request("GET", url).status == 200
    refuse = ProxyRefuse()
    handle, _ = inject(refuse, target)
    with pytest.raises(urllib3.exceptions.NewConnectionError, match="refused"):
        fresh(url)
    with pytest.raises(urllib3.exceptions.HTTPError):
        http.request("GET", url)  # the open connection was reset with it
    refuse.revert(handle, target)
    assert fresh(url) == 200


def test_a_blackhole_never_answers_until_reverted(
    target: LocalTarget, http: urllib3.PoolManager
) -> None:
    url = target.variables()["target.url"] + "/health"
    assert http.request("GET", url).status == 200
    blackhole = ProxyBlackhole()
    handle, _ = inject(blackhole, target)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        fresh(url, timeout=0.3)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        http.request("GET", url, timeout=0.3)
    blackhole.revert(handle, target)
    assert fresh(url) == 200


def test_a_revert_without_a_live_proxy_is_a_no_op(target: LocalTarget, tmp_path: Path) -> None:
    handle, _ = inject(ProxyRefuse(), target)
    journalled = Handle.from_json(handle.to_json())
    # After a crash the proxy died with the runner, and its faults with it.
    attached = LocalTarget(LocalParams(replicas=2), base_dir=tmp_path, journal=None)
    attached.attach()
    ProxyRefuse().revert(journalled, attached)
    target.stop()
    ProxyRefuse().revert(journalled, target)


def test_injecting_on_a_stopped_target_fails(target: LocalTarget) -> None:
    params = ProxyLatency.Params.model_validate({"latency": "10ms"})
    handle = ProxyLatency().plan(FaultSpec(kind="latency"), "f", params, [], target)[0]
    target.stop()
    with pytest.raises(FaultError, match="fault proxy is not running"):
        ProxyLatency().inject(handle, params, target)


def test_a_proxy_fault_refuses_any_other_target() -> None:
    class Elsewhere:
        kind = "docker"

    with pytest.raises(PreflightError, match="cannot act on a 'docker' target"):
        ProxyBlackhole().check(ProxyBlackhole.Params(), Elsewhere())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "raw", "complaint"),
    [
        (ProxyLatency, {}, "latency\n  Field required"),
        (ProxyLatency, {"latency": "1s", "share": 1.5}, "less than or equal to 1"),
        (ProxyReset, {"share": -0.1}, "greater than or equal to 0"),
        (ProxyRefuse, {"share": 0.5}, "Extra inputs are not permitted"),
        (ProxyBlackhole, {"latency": "1s"}, "Extra inputs are not permitted"),
    ],
)
def test_params_are_validated(kind: type[ProxyFault], raw: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        kind.Params.model_validate(raw)
