"""Load overhead: requests/s through LoadGenerator against bare `locust --headless`.

Same locustfile (FastHttpUser, no wait), same users and duration, alternated for ROUNDS
rounds, against a fast asyncio keep-alive responder in its own process, so that Locust's CPU
is what limits both. Prints each figure and the ratio (goal >= 0.95). Under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    requests = 0
    lock = threading.Lock()

    def on_window(window: dict[str, Any]) -> None:
        nonlocal requests
        with lock:
            requests += int(window["requests"])

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
    return requests / duration


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
    stats = json.loads(done.stdout)
    return sum(int(entry["num_requests"]) for entry in stats) / duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return

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
