"""Whether the Docker tests may skip: on a developer machine yes, in CI never. Named apart
from conftest.py so that test modules can import it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

HOW_TO_RUN = (
    "start dockerd (see README, 'Docker'); set CHAOS_RUNNER_REQUIRE_DOCKER=1 to make a "
    "missing engine fail these tests instead"
)


def docker_required() -> bool:
    """In CI (CI=true) or with CHAOS_RUNNER_REQUIRE_DOCKER=1, a missing engine is a failure."""
    return (
        os.environ.get("CHAOS_RUNNER_REQUIRE_DOCKER") == "1"
        or os.environ.get("CI", "").lower() == "true"
    )


def unavailable(why: str) -> NoReturn:
    """Skip a Docker test on a developer machine; fail it in CI."""
    if docker_required():
        pytest.fail(
            f"Docker is required here (CI or CHAOS_RUNNER_REQUIRE_DOCKER=1) but {why}",
            pytrace=False,
        )
    pytest.skip(f"{why}: {HOW_TO_RUN}")
