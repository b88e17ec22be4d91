"""Load overhead: requests/s through LoadGenerator against bare `locust --headless`.

Same locustfile (FastHttpUser, no wait), same users and duration, alternated for ROUNDS
rounds, against a fast asyncio keep-alive responder in its own process, so that Locust's CPU
is what limits both. Where there are two cores or more, the responder runs on one and the
load (Locust, and this process with LoadGenerator's reader) on another, so that the two do
not trade places from run to run. Throughput is the steady state of each run: the requests
of its full seconds (bare Locust's per-second counts, LoadGenerator's windows), leaving out
the first and the last second, when users are still starting or already stopping. Prints
each round, the median of each and their ratio (goal >= 0.95). About two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from chaos_runner.experiment import LoadSpec
from chaos_runner.load import LoadGenerator

LOCUSTFILE = textwrap.dedent("""
    from locust import FastHttpUser, constant, task

    class Hammer(FastHttpUser):
        wait_time = constant(0)

        @task
        def hit(self):
            self.client.get("/")
""")

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Responder(asyncio.Protocol):
    """Answers every request head on a keep-alive connection with a fixed 200 (GET only)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        heads = self.pending.count(b"\r\n\r\n")
        if heads:
            self.pending = self.pending[self.pending.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * heads)


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Bounded: the bench kills it, and it ends by itself if the bench does not.
    await asyncio.sleep(600)


def through_generator(locustfile: Path, host: str, users: int, duration: float) -> float:
    windows: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def on_window(window: dict[str, Any]) -> None:
        with lock:
            windows.append((float(window["t0"]), float(window["t1"]), int(window["requests"])))

    spec = LoadSpec(locustfile=locustfile.name, users=users, spawn_rate=users, window=0.5)
    load = LoadGenerator(
        spec, host=host, base_dir=locustfile.parent, max_duration=duration, on_window=on_window
    )
    load.start()
    try:
        deadline = time.monotonic() + duration + 30
        while load.alive and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        load.stop()
    if load.error:
        raise SystemExit(f"load failed: {load.error}")
    if not windows:
        raise SystemExit("load produced no windows")
    begin, end = windows[0][0] + 1.0, windows[-1][1] - 1.0
    steady = [(t0, t1, n) for t0, t1, n in windows if t0 >= begin and t1 <= end]
    if not steady:
        raise SystemExit(f"a {duration:g}s run is too short to have a steady state")
    return sum(n for _, _, n in steady) / (steady[-1][1] - steady[0][0])


def through_bare_locust(locustfile: Path, host: str, users: int, duration: float) -> float:
    done = subprocess.run(
        [
            *("locust", "--headless", "-f", str(locustfile), "-u", str(users), "-r", str(users)),
            *("-t", f"{duration:g}s", "--host", host, "--json", "--skip-log", "--only-summary"),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"locust failed ({done.returncode}): {done.stderr[-2000:]}")
    per_second: dict[int, int] = {}
    for entry in json.loads(done.stdout):
        for second, count in entry["num_reqs_per_sec"].items():
            per_second[int(second)] = per_second.get(int(second), 0) + int(count)
    steady = sorted(per_second)[1:-1]
    if not steady:
        raise SystemExit(f"a {duration:g}s run is too short to have a steady state")
    return sum(per_second[second] for second in steady) / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if args.serve:
        if len(cores) > 1:
            os.sched_setaffinity(0, {cores[-1]})
        asyncio.run(serve())
        return
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})  # Locust processes inherit it.

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        host = f"http://127.0.0.1:{int(server.stdout.readline())}"
        with tempfile.TemporaryDirectory() as scratch:
            locustfile = Path(scratch) / "hammer.py"
            locustfile.write_text(LOCUSTFILE)
            print(f"{args.users} users, {args.duration:g}s a run, {args.rounds} rounds, {host}")
            ours: list[float] = []
            bare: list[float] = []
            for round_ in range(1, args.rounds + 1):
                # Alternate which goes first, so that neither always runs on a warmer server.
                runs = [(bare, through_bare_locust), (ours, through_generator)]
                for figures, measure in runs if round_ % 2 else reversed(runs):
                    figures.append(measure(locustfile, host, args.users, args.duration))
                print(
                    f"round {round_}: locust {bare[-1]:6.0f} req/s, LoadGenerator {ours[-1]:6.0f}"
                )
        ratio = statistics.median(ours) / statistics.median(bare)
        print(
            f"median: locust {statistics.median(bare):.0f} req/s, LoadGenerator "
            f"{statistics.median(ours):.0f} req/s, ratio {ratio:.3f} (goal >= 0.95)"
        )
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
