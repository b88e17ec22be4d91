"""chaos_runner: declarative chaos experiments with load, continuous probes, recovery times
and SLO verdicts.

    import chaos_runner
    result = chaos_runner.run("experiments/quickstart.yaml")
    print(result.status, [(s.name, s.passed) for s in result.slos])

The public surface is `__all__`; everything else may change between releases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ChaosRunnerError",
    "Experiment",
    "ExperimentError",
    "RunListener",
    "RunResult",
    "__version__",
    "report",
    "revert",
    "run",
    "validate",
]

if TYPE_CHECKING:
    from chaos_runner.api import report, revert, run, validate
    from chaos_runner.engine.listener import RunListener
    from chaos_runner.errors import ChaosRunnerError, ExperimentError
    from chaos_runner.experiment import Experiment
    from chaos_runner.result import RunResult

_LAZY = {
    "report": "chaos_runner.api",
    "revert": "chaos_runner.api",
    "run": "chaos_runner.api",
    "validate": "chaos_runner.api",
    "RunListener": "chaos_runner.engine.listener",
    "ChaosRunnerError": "chaos_runner.errors",
    "ExperimentError": "chaos_runner.errors",
    "Experiment": "chaos_runner.experiment",
    "RunResult": "chaos_runner.result",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m chaos_runner.load.worker` (which imports Locust) does not pull
    # in the engine, and the engine's imports do not slow down the worker's start.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chaos_runner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
