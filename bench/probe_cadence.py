"""Probe cadence under load: achieved sample rate and start-time jitter at 20 Hz.

Two http probes (one opening a new connection per sample, one reusing it) and one tcp probe,
each every 50 ms, against a local HTTP server process, for DURATION seconds, while a real
Locust process (`locust --headless`, bounded by -t) hammers another local server as fast as
it can. Prints, per probe, the achieved rate (goal >= 19.5 Hz) and the p50/p99/max lateness
of sample starts against their schedule origin + k * interval (goal p99 <= 10 ms).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from chaos_runner.clock import SystemClock
from chaos_runner.engine.sampler import Sampler
from chaos_runner.experiment import ProbeSpec
from chaos_runner.journal import Journal, read_journal
from chaos_runner.plugins import ProbeCheck, ProbeContext
from chaos_runner.probes.http import HttpParams, HttpProbe
from chaos_runner.probes.tcp import TcpParams, TcpProbe

INTERVAL = 0.05
TIMEOUT = 1.0

SERVER = textwrap.dedent("""
    # A minimal keep-alive HTTP responder on asyncio: fast enough that Locust, not the
    # server, is what runs out of CPU.
    import asyncio

    RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"

    async def serve(reader, writer):
        try:
            while await reader.readuntil(b"\\r\\n\\r\\n"):
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())
""")

LOCUSTFILE = textwrap.dedent("""
    from locust import FastHttpUser, constant, task

    class Hammer(FastHttpUser):
        wait_time = constant(0)

        @task
        def index(self):
            self.client.get("/")
""")


def start_server(processes: list[subprocess.Popen[str]], cpus: set[int] | None) -> int:
    """Start a server process (kept in `processes`, for cleanup) and return its port."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpus)
    )
    processes.append(process)
    assert process.stdout is not None
    return int(process.stdout.readline())


def pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that confines a child process to `cpus` (None: no confinement)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument(
        "--spread",
        action="store_true",
        help="let the load (Locust and its server) use every core instead of one: "
        "nothing is left idle for the runner",
    )
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally below: no server is left.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    duration, users = args.duration, args.users
    # By default Locust and the server it loads share core 0: Locust saturates one core
    # and the runner (with the probes' server) has the rest, as on a machine sized for it.
    load_cpus = None if args.spread else {0}
    processes: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            probe_port = start_server(processes, None)
            load_port = start_server(processes, load_cpus)
            (workdir / "locustfile.py").write_text(LOCUSTFILE)
            log = (workdir / "locust.log").open("w")
            locust = subprocess.Popen(
                [
                    *(sys.executable, "-m", "locust", "-f", str(workdir / "locustfile.py")),
                    *("--headless", "-u", str(users), "-r", str(users), "--only-summary"),
                    *("-t", f"{duration + 10:.0f}s", "--host", f"http://127.0.0.1:{load_port}"),
                ],
                cwd=workdir,
                preexec_fn=pin(load_cpus),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append(locust)
            time.sleep(4.0)  # Locust has spawned its users and is at full speed
            url = f"http://127.0.0.1:{probe_port}/health"
            context = ProbeContext(base_dir=workdir, variables={})
            checks: list[tuple[ProbeSpec, ProbeCheck]] = [
                (spec("http-new"), HttpProbe().bind(HttpParams(url=url), context)),
                (
                    spec("http-reuse"),
                    HttpProbe().bind(HttpParams(url=url, new_connection=False), context),
                ),
                (
                    spec("tcp"),
                    TcpProbe().bind(TcpParams(host="127.0.0.1", port=probe_port), context),
                ),
            ]
            with Journal(workdir / "journal.jsonl") as journal:
                sampler = Sampler(checks, journal=journal, clock=SystemClock())
                locust_cpu = cpu_seconds(locust.pid)
                server_cpu = cpu_seconds(processes[1].pid)
                own_cpu = time.process_time()
                sampler.start()
                time.sleep(duration)
                sampler.stop()
                elapsed = time.monotonic() - sampler.origin
                locust_cpu = cpu_seconds(locust.pid) - locust_cpu
                server_cpu = cpu_seconds(processes[1].pid) - server_cpu
                own_cpu = time.process_time() - own_cpu
                skipped = {name: last.skipped for name, last in sampler.latest().items()}
            records = [r for r in read_journal(workdir / "journal.jsonl") if r["type"] == "sample"]
            report(records, sampler.origin, elapsed, skipped)
            print(
                f"CPU over the window (share of one core): Locust {locust_cpu / elapsed:.0%}, "
                f"its server {server_cpu / elapsed:.0%}, this process (sampler and probes) "
                f"{own_cpu / elapsed:.0%}; load pinned to "
                + ("no core" if load_cpus is None else f"core(s) {sorted(load_cpus)}")
            )
            locust.terminate()
            locust.wait(timeout=30)
            log.close()
            output = (workdir / "locust.log").read_text()
            totals = [line for line in output.splitlines() if "Aggregated" in line]
            if totals:
                print("Locust:", " ".join(totals[0].split()))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()


def spec(name: str) -> ProbeSpec:
    return ProbeSpec(name=name, kind="bench", interval=INTERVAL, timeout=TIMEOUT)


def report(
    records: list[dict[str, object]], origin: float, elapsed: float, skipped: dict[str, int]
) -> None:
    print(f"{len(skipped)} probes every {INTERVAL * 1000:.0f} ms for {elapsed:.1f} s")
    print(
        f"{'probe':<12}{'rate Hz':>9}{'failed':>8}{'skipped':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for name in skipped:
        starts = [float(r["t"]) for r in records if r["probe"] == name]  # type: ignore[arg-type]
        failed = sum(1 for r in records if r["probe"] == name and not r["ok"])
        # Samples are never early, so each belongs to the last deadline at or before it.
        late = [
            (t - (origin + math.floor((t - origin) / INTERVAL + 1e-9) * INTERVAL)) * 1000
            for t in starts
        ]
        rate = len(starts) / elapsed
        print(
            f"{name:<12}{rate:>9.2f}{failed:>8}{skipped[name]:>9}"
            f"{statistics.median(late):>9.2f}{percentile(late, 99):>9.2f}{max(late):>9.2f}"
        )
    print("goals: rate >= 19.5 Hz, p99 lateness <= 10 ms")


if __name__ == "__main__":
    main()
