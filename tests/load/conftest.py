"""Fixtures of the load tests: a real counting HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from load_test_server import CountingServer, serve


@pytest.fixture
def http_server() -> Iterator[CountingServer]:
    with serve() as server:
        yield server
