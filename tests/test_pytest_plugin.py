"""The pytest plugin: experiment files collected as test items, in a pytest of their own."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

EXPERIMENT = """
metadata: {{name: {name}}}
target: {{kind: local, params: {{replicas: 1, restart_delay: 200ms}}}}
probes:
  - {{name: health, kind: http, interval: 50ms, timeout: 200ms,
     params: {{url: "${{target.url}}/health"}}}}
faults:
  - {{name: freeze, kind: pause, offset: 200ms, duration: 1s}}
phases: {{baseline: 500ms, hold: 300ms, recovery_deadline: 10s}}
slos:
  - {{name: during-freeze, kind: availability, source: "probe:health",
     phase: "fault:freeze", objective: {objective}}}
"""


def test_experiment_files_become_items_that_pass_or_fail_by_their_slos(
    pytester: pytest.Pytester,
) -> None:
    # The only replica is frozen for 1 s: most samples during the fault fail.
    pytester.makefile(
        ".yaml",
        chaos_tolerant=textwrap.dedent(EXPERIMENT.format(name="tolerant", objective=1)),
        chaos_strict=textwrap.dedent(EXPERIMENT.format(name="strict", objective=99)),
        not_an_experiment="a: 1",
    )
    result = pytester.runpytest_subprocess("-v")  # the plugin loads by its entry point
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*chaos_strict.yaml::chaos_strict FAILED*",
            "*chaos_tolerant.yaml::chaos_tolerant PASSED*",
            "*experiment strict: failed (exit code 1)*",
            "*SLO during-freeze: FAILED*",
        ]
    )
    assert list((pytester.path / "reports").iterdir())
