"""The python probe with real probe files, and the example user probes in probes/."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from probe_test_server import Server

from chaos_runner.plugins import Outcome, ProbeCheck, ProbeContext
from chaos_runner.probes.python import PythonParams, PythonProbe

REPO = Path(__file__).resolve().parents[2]

PROBES = """
import time

def steady():
    return True

def silent():
    pass

def broken():
    return False

def replicas():
    return 3

def failing():
    raise ConnectionError("replica app-2 unreachable")

def hangs(seconds):
    time.sleep(seconds)

def greets(name, punctuation="!"):
    return 1 if name == "world" and punctuation == "!" else False

def sees(context):
    return context.variables["target.url"] == "http://app"

def confused():
    return "yes"
"""


@pytest.fixture
def probe_file(tmp_path: Path) -> ProbeContext:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "checks.py").write_text(textwrap.dedent(PROBES))
    (tmp_path / "experiments").mkdir()
    return ProbeContext(base_dir=tmp_path / "experiments", variables={"target.url": "http://app"})


def bind(context: ProbeContext, function: str, file: str = "../user/checks.py", **kw: Any) -> Any:
    params = PythonParams(file=file, function=function, kwargs=kw)
    return PythonProbe().bind(params, context)


def sample(check: ProbeCheck, timeout: float = 2.0) -> Outcome:
    try:
        return check(timeout)
    finally:
        check.close()


@pytest.mark.parametrize(
    ("function", "outcome"),
    [
        ("steady", Outcome(ok=True)),
        ("silent", Outcome(ok=True)),
        ("broken", Outcome(ok=False, error="returned False")),
        ("replicas", Outcome(ok=True, value=3.0)),
        ("failing", Outcome(ok=False, error="ConnectionError: replica app-2 unreachable")),
        ("sees", Outcome(ok=True)),
        (
            "confused",
            Outcome(ok=False, error="returned str; expected True, False, None or a number"),
        ),
    ],
)
def test_what_a_function_returns_decides(
    probe_file: ProbeContext, function: str, outcome: Outcome
) -> None:
    assert sample(bind(probe_file, function)) == outcome


def test_kwargs_are_passed(probe_file: ProbeContext) -> None:
    assert sample(bind(probe_file, "greets", name="world")) == Outcome(ok=True, value=1.0)
    assert not sample(bind(probe_file, "greets", name="world", punctuation="?")).ok


def test_a_hung_function_times_out_and_later_calls_still_run(probe_file: ProbeContext) -> None:
    check = bind(probe_file, "hangs", seconds=1.0)
    try:
        started = time.monotonic()
        assert check(0.2) == Outcome(ok=False, error="timeout after 200ms")
        assert time.monotonic() - started < 1.0
        # The first call still holds its worker; the next one gets another.
        assert check(0.2).error == "timeout after 200ms"
        assert check(3.0) == Outcome(ok=True)
    finally:
        check.close()


@pytest.mark.parametrize(
    ("file", "function", "kwargs", "message"),
    [
        ("../user/missing.py", "steady", {}, "file: no such file"),
        ("../user/checks.py", "stedy", {}, "has no function 'stedy' \\(functions there: broken"),
        ("../user/checks.py", "greets", {}, "greets\\(\\) cannot take them: missing a required"),
        ("../user/checks.py", "steady", {"x": 1}, "unexpected keyword argument 'x'"),
    ],
)
def test_bind_errors_say_what_is_wrong(
    probe_file: ProbeContext, file: str, function: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bind(probe_file, function, file=file, **kwargs)


def test_a_file_that_fails_to_import_is_a_bind_error(probe_file: ProbeContext) -> None:
    (probe_file.base_dir / "bad.py").write_text("import no_such_module_anywhere\n")
    with pytest.raises(ValueError, match="failed to import: ModuleNotFoundError"):
        bind(probe_file, "steady", file="bad.py")


def test_the_example_replica_health_probe(http_server: Server) -> None:
    context = ProbeContext(base_dir=REPO / "experiments", variables={})
    file = "../probes/example.py"
    healthy = bind(context, "replica_health", file=file, url=f"{http_server.url}/health")
    assert sample(healthy) == Outcome(ok=True, value=3.0)
    degraded = bind(
        context,
        "replica_health",
        file=file,
        url=f"{http_server.url}/health?healthy=1",
        min_healthy=2,
    )
    assert sample(degraded) == Outcome(
        ok=False, error="RuntimeError: 1 of 3 replicas healthy, at least 2 needed"
    )
    down = bind(context, "replica_health", file=file, url=f"{http_server.url}/fail")
    assert sample(down).error == "HTTPError: HTTP Error 500: Internal Server Error"


def test_the_example_user_journey_probe(http_server: Server) -> None:
    context = ProbeContext(base_dir=REPO / "experiments", variables={})
    file = "../probes/example.py"
    journey = bind(context, "user_journey", file=file, base_url=http_server.url, paths=["/ok"])
    outcome = sample(journey)
    assert outcome.ok and outcome.value is not None and outcome.value > 0
    broken = bind(
        context, "user_journey", file=file, base_url=http_server.url, paths=["/ok", "/fail"]
    )
    assert sample(broken) == Outcome(ok=False, error="RuntimeError: GET /fail: status 500")
