"""The Docker target driver: containers on a Docker engine, through the Docker SDK.

This package is the only place that imports the `docker` SDK; fault kinds and probes call
the methods of `DockerTarget` (and `sidecar` for helper containers), never the SDK itself.
"""

from chaos_runner.targets.docker.engine import (
    ContainerGone,
    ContainerState,
    DockerParams,
    DockerTarget,
    Endpoint,
    signal_name,
)
from chaos_runner.targets.docker.events import EngineEvent

__all__ = [
    "ContainerGone",
    "ContainerState",
    "DockerParams",
    "DockerTarget",
    "Endpoint",
    "EngineEvent",
    "signal_name",
]
