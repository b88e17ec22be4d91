"""Network faults at the local target's fault proxy: latency, reset, refuse, blackhole.

Each acts on the proxy as a whole, through `LocalTarget.proxy`: a fault has one handle, for
member "proxy", whatever the selector picks (count and percent do not apply; `share` says
how many connections are hit). The proxy lives and dies with the runner, so reverting
without a live proxy (after a crash) is a no-op: its faults died with it.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from chaos_runner.errors import FaultError, PreflightError, TargetError
from chaos_runner.experiment import Duration, FaultSpec
from chaos_runner.plugins import FaultScope, Handle, Member, Target
from chaos_runner.targets.local.driver import LocalTarget
from chaos_runner.targets.local.proxy_client import ProxyClient

Share = Annotated[float, Field(ge=0.0, le=1.0)]


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    def proxy_params(self) -> dict[str, float | bool]:
        """The fault's parameters as the proxy's control channel takes them (seconds)."""
        return dict(self.model_dump())


class LatencyParams(_Params):
    latency: Duration
    """Added to every chunk the service sends back to the client (e.g. 150ms)."""
    jitter: Duration = 0.0
    """Each chunk's delay varies by up to this much either way (never below zero)."""
    share: Share = 1.0
    """The share of connections (0 to 1) that are slowed, existing ones included."""


class ResetParams(_Params):
    share: Share = 1.0
    """The share of new connections (0 to 1) closed with a TCP reset right after accept."""
    reset_existing: bool = True
    """Also reset that share of the connections already open when the fault starts (keep-
    alive clients would otherwise never notice)."""


class RefuseParams(_Params):
    reset_existing: bool = True
    """Also reset every open connection, as if the service's listener had died."""


class BlackholeParams(_Params):
    share: Share = 1.0
    """The share of connections (0 to 1) that go silent: new ones are accepted and never
    answered, open ones freeze until the revert."""


def proxy_of(target: Target) -> ProxyClient:
    """The live fault proxy of a local target."""
    if not isinstance(target, LocalTarget):
        raise PreflightError(
            f"a proxy fault needs a local target, not {getattr(target, 'kind', '?')!r}"
        )
    if target.proxy is None or not target.proxy.alive:
        raise FaultError("the local target's fault proxy is not running")
    return target.proxy


class _ProxyFault:
    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]] = frozenset({"local"})
    scope: ClassVar[FaultScope] = "target"
    reversible: ClassVar[bool] = True

    def check(self, params: Any, target: Target) -> None:
        if not isinstance(target, LocalTarget):
            raise PreflightError(
                f"fault kind {self.kind!r} acts on the local target's proxy; "
                f"it cannot act on a {getattr(target, 'kind', '?')!r} target"
            )

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        """One handle for the proxy, whatever members were selected."""
        proxy = proxy_of(target)
        data = {"proxy_pid": proxy.pid, "proxy_port": proxy.port}
        return [Handle(f"{name}-{secrets.token_hex(4)}", name, self.kind, "proxy", data)]

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        assert isinstance(params, _Params)
        try:
            proxy_of(target).set_fault(handle.id, self.kind, **params.proxy_params())
        except TargetError as exc:
            raise FaultError(f"{handle.fault}: {exc}") from exc

    def revert(self, handle: Handle, target: Target) -> None:
        """Clear the fault; a no-op once cleared, or when the proxy that held it is gone."""
        proxy = target.proxy if isinstance(target, LocalTarget) else None
        if proxy is None or not proxy.alive or proxy.pid != handle.data.get("proxy_pid"):
            return
        try:
            proxy.clear_fault(handle.id)
        except TargetError as exc:
            raise FaultError(f"{handle.fault}: {exc}") from exc


class ProxyLatency(_ProxyFault):
    """Delays what the service sends back, by `latency` ± `jitter`, on a share of connections."""

    kind: ClassVar[str] = "latency"
    Params: ClassVar[type[BaseModel]] = LatencyParams


class ProxyReset(_ProxyFault):
    """Resets (TCP RST) a share of connections: new ones at accept, open ones at once."""

    kind: ClassVar[str] = "reset"
    Params: ClassVar[type[BaseModel]] = ResetParams


class ProxyRefuse(_ProxyFault):
    """Closes the proxy's listening socket: new connections are refused until the revert."""

    kind: ClassVar[str] = "refuse"
    Params: ClassVar[type[BaseModel]] = RefuseParams


class ProxyBlackhole(_ProxyFault):
    """Swallows a share of connections: requests are read and dropped, nothing comes back."""

    kind: ClassVar[str] = "blackhole"
    Params: ClassVar[type[BaseModel]] = BlackholeParams
