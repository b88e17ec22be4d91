"""Load for a run: Locust in its own process, statistics windows streamed back.

The runner uses `LoadGenerator` only; `worker` and `default_locustfile` run in the worker
process. Nothing here may import Locust or gevent, and exports are lazy so that the worker's
`python -m chaos_runner.load.worker` imports nothing before Locust patches the interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["LoadGenerator", "WorkerConfig"]

if TYPE_CHECKING:
    from chaos_runner.load.generator import LoadGenerator
    from chaos_runner.load.protocol import WorkerConfig

_LAZY = {
    "LoadGenerator": "chaos_runner.load.generator",
    "WorkerConfig": "chaos_runner.load.protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chaos_runner.load' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
