"""The exception tree of chaos_runner, in one place.

    ChaosRunnerError
    ├── ExperimentError        the experiment file is wrong: names the file, field and fix
    ├── RegistryError          a plugin entry point is broken or does not satisfy its protocol
    ├── PreflightError         the run cannot start: a fault is unavailable, a target missing
    │   └── NotSteadyError     the system is not in steady state before any fault (nothing injected)
    ├── TargetError            a target driver failed (engine unreachable, member vanished)
    ├── FaultError             injecting or reverting one fault failed
    └── LoadError              the load generator could not start or died

Every error a user can cause carries a message meant to be printed as it is, without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ChaosRunnerError(Exception):
    """Base of every error chaos_runner raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an experiment: where (a field path) and what was expected."""

    location: str
    message: str

    def render(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ExperimentError(ChaosRunnerError):
    """An experiment file that cannot be used, with every problem found in it."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: invalid experiment ({len(self.problems)} problem(s))"]
        lines += [f"  - {p.render()}" for p in self.problems]
        super().__init__("\n".join(lines))


class RegistryError(ChaosRunnerError):
    """A plugin registered through an entry point cannot be used."""


class PreflightError(ChaosRunnerError):
    """The run cannot start; nothing has been injected."""


class NotSteadyError(PreflightError):
    """The system under test is not in its steady state before any fault."""


class TargetError(ChaosRunnerError):
    """A target driver failed: the engine is unreachable or a member vanished."""


class FaultError(ChaosRunnerError):
    """Injecting or reverting a fault failed."""


class LoadError(ChaosRunnerError):
    """The load generator could not start, or died during the run."""
