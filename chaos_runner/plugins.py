"""The protocols every pluggable part implements: targets, fault kinds, probe kinds, reporters.

Plugins are registered through entry-point groups (the built-ins too, in pyproject.toml) and
checked against these protocols when loaded (see `registry`). Each validates its own
parameters with its own pydantic model, `Params`. Nothing here touches a system.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from chaos_runner.experiment import FaultSpec, Selector

if TYPE_CHECKING:
    from chaos_runner.journal import Journal
    from chaos_runner.result import RunResult


FaultScope = Literal["members", "target"]
"""What a fault kind acts on: the selected members, or the target as a whole."""


@dataclass(frozen=True)
class Member:
    """One thing a fault can act on: a local replica, a container, a pod."""

    id: str
    name: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Handle:
    """One injection of one fault on one member, journalled before the fault is made.

    `data` is JSON-safe and holds everything a revert needs, even in another process after
    the runner died (pid and start time, container id, the exact iptables rule...).
    """

    id: str
    fault: str
    kind: str
    member: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fault": self.fault,
            "kind": self.kind,
            "member": self.member,
            "data": dict(self.data),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Handle:
        return cls(
            id=str(raw["id"]),
            fault=str(raw["fault"]),
            kind=str(raw["kind"]),
            member=str(raw["member"]),
            data=dict(raw.get("data") or {}),
        )


@runtime_checkable
class Target(Protocol):
    """A system faults act on. One instance per run.

    `start` brings up what the runner owns (the embedded local system) or connects to an
    engine; `attach` only connects (used to revert faults after a crash); `stop` releases
    what `start` brought up. `members` lists the candidates a selector may pick from.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def start(self) -> None: ...

    def attach(self) -> None: ...

    def stop(self) -> None: ...

    def variables(self) -> Mapping[str, str]:
        """Values for ${target.*} in probe and load parameters (e.g. target.url)."""
        ...

    def members(self, selector: Selector) -> list[Member]:
        """Every running member that the selector's filters match (before count/percent)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description for the journal and the dry-run plan."""
        ...


class TargetFactory(Protocol):
    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def __call__(self, params: Any, *, base_dir: Path, journal: Journal | None) -> Target: ...


@runtime_checkable
class FaultKind(Protocol):
    """A kind of fault. Stateless: everything about one injection is in its Handle.

    `check` runs in preflight and raises PreflightError when the fault cannot work here (a
    missing kernel feature, a target kind it does not support). `plan` is pure: it says what
    will be done, as handles, before anything is. `revert` is idempotent and must work from
    the handle alone.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]]
    reversible: ClassVar[bool]
    scope: ClassVar[FaultScope]
    """With "members", one handle per selected member. With "target", the fault acts on the
    target as a whole (the local target's proxy) whatever the selector picks: what it acts on
    is the member of the handles `plan` returns, and that is what the selection shows."""

    def check(self, params: Any, target: Target) -> None: ...

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]: ...

    def inject(self, handle: Handle, params: Any, target: Target) -> None: ...

    def revert(self, handle: Handle, target: Target) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What one probe sample found. `value` is kind-specific (a status code, a metric)."""

    ok: bool
    error: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may know of the run: where relative paths start, the target's variables."""

    base_dir: Path
    variables: Mapping[str, str]
    target: Target | None = None


class ProbeCheck(Protocol):
    """A bound probe. Called from a sampler thread, possibly concurrently with itself when a
    sample outlasts the interval; it must not raise (failures are Outcomes) and must give up
    after `timeout` seconds."""

    def __call__(self, timeout: float) -> Outcome: ...

    def close(self) -> None: ...


@runtime_checkable
class ProbeKind(Protocol):
    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def bind(self, params: Any, context: ProbeContext) -> ProbeCheck: ...


@runtime_checkable
class Reporter(Protocol):
    """Writes one report file from a RunResult, and nothing else."""

    name: ClassVar[str]

    def write(self, result: RunResult, directory: Path) -> Path: ...
