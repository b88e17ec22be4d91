"""Example user probes: plain Python functions an experiment calls through `kind: python`.

A probe function says whether the system is steady: it returns True or None (steady), False
(not steady) or a number (steady; the number is kept as the sample's value), and anything it
raises counts as a failed sample whose text is the exception's. It is called from a worker
thread, possibly concurrently with itself, so keep it free of shared state. Use it like so:

    probes:
      - name: replicas
        kind: python
        interval: 1s
        timeout: 2s
        params:
          file: ../probes/example.py      # relative to the experiment file
          function: replica_health
          kwargs: {url: "${target.url}/health", min_healthy: 2}

A function with a parameter named `context` also receives the run's ProbeContext (its
`variables` hold ${target.*}). These examples use only the standard library.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any


def replica_health(url: str, min_healthy: int = 1, timeout: float = 1.0) -> int:
    """Steady when at least `min_healthy` replicas are healthy; the count is the value.

    Expects the health endpoint to answer JSON such as
    {"replicas": [{"name": "app-1", "healthy": true}, {"name": "app-2", "healthy": false}]}.
    Adapt the parsing to what your service reports.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:  # raises on 4xx/5xx
        document: Any = json.load(response)
    replicas = document.get("replicas") if isinstance(document, dict) else None
    if not isinstance(replicas, list):
        raise ValueError(f"{url} did not report a list of replicas")
    healthy = [r.get("name", "?") for r in replicas if isinstance(r, dict) and r.get("healthy")]
    if len(healthy) < min_healthy:
        raise RuntimeError(
            f"{len(healthy)} of {len(replicas)} replicas healthy, at least {min_healthy} needed"
        )
    return len(healthy)


def user_journey(
    base_url: str, paths: Sequence[str] = ("/", "/health"), timeout: float = 2.0
) -> float:
    """Steady when a user's few requests in a row all succeed, on one connection, as a
    browser session would; the value is the journey's total time in milliseconds.

    Unlike an http probe, a failure of any step fails the journey: "the page loads but the
    cart does not" is not steady.
    """
    parts = urllib.parse.urlsplit(base_url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.netloc, timeout=timeout)
    started = time.monotonic()
    try:
        for path in paths:
            connection.request("GET", parts.path.rstrip("/") + path)
            response = connection.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"GET {path}: status {response.status}")
    finally:
        connection.close()
    return round((time.monotonic() - started) * 1000, 2)
