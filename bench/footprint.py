"""Footprint: journal bytes per minute and runner RSS after 1 and after N minutes.

Runs the CLI in a subprocess on the embedded local target with 4 probes at 10 Hz and Locust
load (load windows of 0.5 s), for MINUTES minutes of baseline (default 10; `--minutes 2` for a
quick look). Goal: at most 2 MB of journal per minute; RSS growth from minute 1 to the end at
most 1.2x.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    minutes = parser.parse_args().minutes
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        probes = "\n".join(
            f"""  - {{name: p{i}, kind: http, interval: 100ms, timeout: 500ms,
           params: {{url: "${{target.url}}/health"}}}}"""
            for i in range(4)
        )
        experiment = workdir / "footprint.yaml"
        experiment.write_text(
            textwrap.dedent(f"""
            metadata: {{name: footprint}}
            target: {{kind: local, params: {{replicas: 2}}}}
            load: {{users: 5, rate_per_user: 20, window: 500ms}}
            phases: {{baseline: {minutes * 60 + 5}s, hold: 1s}}
            probes:
            """)
            + probes
            + "\n"
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaos_runner",
                "run",
                str(experiment),
                "--quiet",
                "--reports-dir",
                str(workdir / "reports"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(5)
            journal = next((workdir / "reports").glob("*/journal.jsonl"))
            time.sleep(60)
            rss_1 = rss_kib(proc.pid)
            size_1 = journal.stat().st_size
            t_1 = time.monotonic()
            time.sleep(max(0.0, minutes * 60 - 60))
            rss_n = rss_kib(proc.pid)
            size_n = journal.stat().st_size
            per_minute = (size_n - size_1) / ((time.monotonic() - t_1) / 60)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"journal: {per_minute / 1e6:.3f} MB/min (goal <= 2 MB/min)")
    print(
        f"runner RSS: {rss_1 / 1024:.1f} MiB after 1 min, {rss_n / 1024:.1f} MiB after "
        f"{minutes:g} min, growth {rss_n / rss_1:.2f}x (goal <= 1.20x)"
    )


if __name__ == "__main__":
    main()
