"""Recovery accuracy: measured recovery time vs a downtime known exactly.

A local target runs bench/known_downtime_service.py, which answers 503 for exactly 2.000 s
after SIGUSR1 (and writes down when). A kill-like fault sends SIGUSR1; its recovery time is
measured from injection, so the truth is the service's own down window. Probe at 50 ms.
Goal: |measured - truth| <= one probe interval (50 ms) on every one of 10 runs.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from chaos_runner import api
from chaos_runner.journal import read_journal

RUNS = 10
INTERVAL = 0.05
DOWN = 2.0


def one_run(workdir: Path, index: int) -> tuple[float, float]:
    truth_file = workdir / f"truth-{index}.txt"
    service = Path(__file__).with_name("known_downtime_service.py")
    experiment = workdir / f"accuracy-{index}.yaml"
    experiment.write_text(
        textwrap.dedent(f"""
        metadata: {{name: recovery-accuracy}}
        target:
          kind: local
          params:
            replicas: 1
            command: [{sys.executable!r}, {str(service)!r}, "{{port}}"]
            env: {{DOWN_SECONDS: "{DOWN}", TRUTH_FILE: {str(truth_file)!r}}}
        probes:
          - name: health
            kind: http
            interval: {INTERVAL}s
            timeout: 1s
            params: {{url: "${{target.url}}/health"}}
        faults:
          - {{name: down, kind: kill, offset: 500ms, duration: 3s, params: {{signal: SIGUSR1}}}}
        phases: {{baseline: 500ms, hold: 500ms, recovery_deadline: 10s}}
    """)
    )
    result = api.run(experiment, reports_dir=workdir / "reports", reporters=("json",))
    fault = result.faults[0]
    assert fault.recovery_time is not None, result.reason
    records = read_journal(Path(result.journal or ""))
    inject_t = next(r["t"] for r in records if r["type"] == "inject" and r["ok"])
    _down_start, down_end = map(float, truth_file.read_text().split())
    truth = down_end - inject_t
    return fault.recovery_time, truth


def main() -> None:
    errors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            measured, truth = one_run(Path(tmp), i)
            errors.append(measured - truth)
            print(
                f"run {i + 1:2d}: measured {measured:.3f}s  truth {truth:.3f}s  "
                f"error {measured - truth:+.3f}s"
            )
    worst = max(abs(e) for e in errors)
    print(
        f"mean error {statistics.mean(errors):+.3f}s, worst |error| {worst:.3f}s, "
        f"probe interval {INTERVAL:.3f}s, worst/interval {worst / INTERVAL:.2f} (goal <= 1.00)"
    )


if __name__ == "__main__":
    main()
