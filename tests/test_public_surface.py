"""What users and editors rely on: the public names, the CLI's plain commands and the
JSON Schemas shipped in docs/ (which must match what the code generates)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import chaos_runner

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaos_runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_public_names_are_sorted_and_all_importable() -> None:
    assert chaos_runner.__all__ == sorted(chaos_runner.__all__)
    for name in chaos_runner.__all__:
        assert getattr(chaos_runner, name) is not None
    with pytest.raises(AttributeError):
        _ = chaos_runner.nothing_of_the_kind  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "shipped"),
    [((), "docs/experiment.schema.json"), (("--result",), "docs/result.schema.json")],
)
def test_the_shipped_schemas_are_what_the_code_generates(
    args: tuple[str, ...], shipped: str
) -> None:
    done = cli("schema", *args)
    assert done.returncode == 0, done.stderr
    generated = json.loads(done.stdout)
    assert generated == json.loads((ROOT / shipped).read_text()), (
        f"{shipped} is stale: regenerate it with `chaos-runner schema {' '.join(args)}`"
    )


def test_the_experiment_schema_knows_every_fault_kind_and_forbids_unknown_keys() -> None:
    schema = json.loads(cli("schema").stdout)
    text = json.dumps(schema)
    for kind in ("kill", "pause", "latency", "partition", "bandwidth", "cpu"):
        assert f'"{kind}"' in text
    assert schema["additionalProperties"] is False


def test_plugins_lists_targets_faults_probes_and_reporters() -> None:
    done = cli("plugins")
    assert done.returncode == 0, done.stderr
    for name in ("local", "docker", "kill", "crash", "http", "python", "junit", "markdown"):
        assert name in done.stdout


def test_version() -> None:
    done = cli("--version")
    assert done.stdout.strip() == f"chaos-runner {chaos_runner.__version__}"
