"""Bad input gets a clear error naming the file, the field and the fix; nothing is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos_runner import api
from chaos_runner.cli import main
from chaos_runner.errors import ExperimentError

GOOD = """
metadata: {name: sample}
target: {kind: local, params: {replicas: 2}}
probes:
  - {name: health, kind: http, interval: 100ms, params: {url: "${target.url}/health"}}
faults:
  - {name: k, kind: kill, offset: 1s, duration: 2s}
slos:
  - {name: avail, kind: availability, source: "probe:health", objective: 99}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, name: str = "exp.yaml") -> str:
    with pytest.raises(ExperimentError) as info:
        api.validate(write(tmp_path, text, name))
    message = str(info.value)
    assert str(tmp_path / name) in message, "the error names the file"
    return message


def test_a_good_experiment_loads_with_durations_in_seconds(tmp_path: Path) -> None:
    loaded = api.validate(write(tmp_path, GOOD))
    assert loaded.experiment.probes[0].interval == pytest.approx(0.1)
    assert loaded.experiment.faults[0].duration == 2.0
    assert loaded.experiment.fault_names() == ["k"]
    assert len(loaded.sha256) == 64


def test_a_typo_names_the_field_and_suggests_the_right_one(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("offset: 1s", "ofset: 1s"))
    assert "faults[0].ofset" in message
    assert "did you mean 'offset'" in message


def test_a_typo_at_the_top_level_is_an_error(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD + "\nphase: {baseline: 1s}\n")
    assert "phase" in message and "did you mean 'phases'" in message


def test_a_typo_inside_plugin_params_is_an_error(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("params: {url:", "params: {ulr:"))
    assert "probes[0].params.ulr" in message


def test_a_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("replicas: 2", "replicas: many"))
    assert "target.params.replicas" in message
    assert "'many'" in message


def test_a_negative_duration_is_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("duration: 2s", "duration: -2"))
    assert "faults[0].duration" in message and "negative" in message


def test_a_malformed_duration_shows_the_accepted_forms(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("interval: 100ms", "interval: 100 msec"))
    assert "probes[0].interval" in message and "'500ms'" in message


def test_an_unknown_fault_kind_lists_the_known_ones(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace("kind: kill", "kind: kil"))
    assert "faults[0].kind" in message
    assert "did you mean 'kill'" in message
    assert "pause" in message


def test_a_missing_locustfile_is_named(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD + "\nload: {locustfile: nowhere.py}\n")
    assert "load.locustfile" in message and "nowhere.py" in message


def test_an_unreadable_file_is_reported_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: use a directory instead
        path = tmp_path / "a-directory.yaml"
        path.mkdir()
    with pytest.raises(ExperimentError, match="cannot read the file"):
        api.validate(path)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert "must be a mapping" in problems(tmp_path, "- just\n- a list\n")
    assert "must be a mapping" in problems(tmp_path, "")


def test_yaml_with_python_tags_is_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, "metadata: !!python/object/apply:os.system ['true']\n")
    assert "tags that build objects are not allowed" in message


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    message = problems(tmp_path, "\n".join(lines) + "\n")
    assert "aliases" in message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    message = problems(tmp_path, '{"metadata": {"name": "x"},\n "probes": [}', "exp.json")
    assert "line 2" in message


def test_references_to_unknown_probes_and_faults_are_errors(tmp_path: Path) -> None:
    message = problems(tmp_path, GOOD.replace('"probe:health"', '"probe:helth"'))
    assert "no probe named 'helth'" in message


def test_two_amounts_in_a_selector_are_refused(tmp_path: Path) -> None:
    message = problems(
        tmp_path, GOOD.replace("offset: 1s", "offset: 1s, selector: {count: 1, percent: 50}")
    )
    assert "only one of count, percent and all" in message


def test_cli_validate_exits_2_and_prints_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("offset: 1s", "ofset: 1s"))
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "faults[0].ofset" in out.out


def test_cli_run_of_an_invalid_file_exits_2_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("kind: kill", "kind: kil"))
    reports = tmp_path / "reports"
    assert main(["run", str(path), "--reports-dir", str(reports)]) == 2
    assert not reports.exists(), "no run directory: nothing was started"
    assert "faults[0].kind" in capsys.readouterr().err


def test_every_shipped_experiment_validates() -> None:
    root = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        api.validate(path)
