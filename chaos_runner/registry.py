"""Discovery of targets, fault kinds, probe kinds and reporters through entry points.

The built-ins are registered through the same groups (pyproject.toml), so there is one way to
extend. Each plugin is checked against its protocol when loaded; a broken one is an error that
names its entry point. The lookup functions are the only place that maps a `kind` to code.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast

from pydantic import BaseModel

from chaos_runner.errors import RegistryError
from chaos_runner.plugins import FaultKind, ProbeKind, Reporter, TargetFactory

GROUPS = {
    "targets": "chaos_runner.targets",
    "faults": "chaos_runner.faults",
    "probes": "chaos_runner.probes",
    "reporters": "chaos_runner.reporters",
}


@dataclass
class Registry:
    targets: dict[str, TargetFactory] = field(default_factory=dict)
    faults: dict[str, FaultKind] = field(default_factory=dict)
    probes: dict[str, ProbeKind] = field(default_factory=dict)
    reporters: dict[str, Reporter] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Entry points that failed to import (an optional SDK is missing): name -> why."""

    @classmethod
    def from_entry_points(cls) -> Registry:
        registry = cls()
        for section, group in GROUPS.items():
            for ep in entry_points(group=group):
                try:
                    plugin = ep.load()
                except ImportError as exc:
                    missing = getattr(exc, "name", None) or ""
                    if missing.split(".")[0] == "chaos_runner":
                        # Our own module is missing or broken: a bug, never "optional".
                        raise RegistryError(
                            f"entry point {ep.name!r} in group {group!r} ({ep.value}) "
                            f"failed to load: {exc}"
                        ) from exc
                    # The core must run without the Docker or Kubernetes SDKs installed:
                    # such a plugin is unavailable, and says why when someone asks for it.
                    registry.unavailable[f"{section}:{ep.name}"] = (
                        f"{ep.value} could not be imported ({exc}); "
                        "install chaos-runner[all] or the SDK it names"
                    )
                    continue
                except Exception as exc:
                    raise RegistryError(
                        f"entry point {ep.name!r} in group {group!r} ({ep.value}) "
                        f"failed to load: {exc}"
                    ) from exc
                registry.add(section, ep.name, plugin, origin=f"{group}:{ep.name}={ep.value}")
        return registry

    def add(self, section: str, name: str, plugin: Any, *, origin: str = "") -> None:
        """Register one plugin (a class); checks it against its protocol first."""
        where = origin or f"{section}:{name}"
        required = {
            "targets": ("kind", "Params", "__call__"),
            "faults": (
                "kind",
                "Params",
                "target_kinds",
                "reversible",
                "check",
                "plan",
                "inject",
                "revert",
            ),
            "probes": ("kind", "Params", "bind"),
            "reporters": ("name", "write"),
        }[section]
        missing = [attr for attr in required if not hasattr(plugin, attr)]
        if missing:
            raise RegistryError(f"{where}: does not satisfy the protocol, missing {missing}")
        params = getattr(plugin, "Params", None)
        if section != "reporters" and not (
            isinstance(params, type) and issubclass(params, BaseModel)
        ):
            raise RegistryError(f"{where}: Params must be a pydantic model class")
        book: dict[str, Any] = getattr(self, section)
        if section == "targets":
            book[name] = plugin
        else:
            book[name] = plugin() if isinstance(plugin, type) else plugin

    def target(self, kind: str) -> TargetFactory:
        return cast(TargetFactory, self._lookup("targets", kind, "target kind"))

    def fault(self, kind: str, target_kind: str) -> FaultKind:
        """The fault kind `kind` as it acts on a `target_kind` target.

        Entry points are named "<target kind>.<kind>" (local.kill, docker.kill); a plugin
        registered under a bare name acts on every target kind its `target_kinds` lists.
        """
        for name in (f"{target_kind}.{kind}", kind):
            plugin = self.faults.get(name)
            if plugin is not None and target_kind in plugin.target_kinds:
                return plugin
        for name in (f"{target_kind}.{kind}", kind):
            if f"faults:{name}" in self.unavailable:
                raise RegistryError(
                    f"fault kind {kind!r} for a {target_kind!r} target is unavailable: "
                    + self.unavailable[f"faults:{name}"]
                )
        known = sorted(
            {n.split(".", 1)[-1] for n, p in self.faults.items() if target_kind in p.target_kinds}
        )
        raise RegistryError(
            unknown_message(kind, known, f"fault kind for a {target_kind!r} target")
        )

    def probe(self, kind: str) -> ProbeKind:
        return cast(ProbeKind, self._lookup("probes", kind, "probe kind"))

    def reporter(self, name: str) -> Reporter:
        return cast(Reporter, self._lookup("reporters", name, "reporter"))

    def _lookup(self, section: str, name: str, what: str) -> Any:
        book: dict[str, Any] = getattr(self, section)
        if name in book:
            return book[name]
        if f"{section}:{name}" in self.unavailable:
            raise RegistryError(
                f"{what} {name!r} is unavailable: " + self.unavailable[f"{section}:{name}"]
            )
        raise RegistryError(unknown_message(name, book, what))


def unknown_message(name: str, known: Mapping[str, Any] | list[str], what: str) -> str:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (known: {', '.join(names) or 'none'})"


@functools.cache
def default_registry() -> Registry:
    """The registry of installed entry points, loaded once per process."""
    return Registry.from_entry_points()
