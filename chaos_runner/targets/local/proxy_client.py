"""The runner's side of the fault proxy: starts its process and speaks its control channel.

Requests are JSON lines on the proxy's stdin, answered one line each on its stdout (see
`proxy` for the protocol). Closing its stdin ends the proxy, and every fault with it; this
module never leaves a proxy running after `stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from chaos_runner.errors import TargetError

Spawn = Callable[..., "subprocess.Popen[bytes]"]
"""spawn(argv, **popen_kwargs) -> Popen: how the proxy process is started (the supervisor's
`spawn`, so that the proxy dies with the runner)."""

ANSWER_TIMEOUT = 5.0


class ProxyClient:
    """A running fault proxy. Thread-safe: one request at a time."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log
        self.port = 0
        self._lock = threading.Lock()
        self._buffer = b""

    @classmethod
    def launch(
        cls, *, port: int, backends: Sequence[int], log: Path, spawn: Spawn | None = None
    ) -> ProxyClient:
        """Start a proxy on 127.0.0.1:`port` (0: any) and wait until it listens."""
        argv = [sys.executable, "-m", "chaos_runner.targets.local.proxy", "--port", str(port)]
        for backend in backends:
            argv += ["--backend", str(backend)]
        with open(log, "ab") as stderr:
            popen: dict[str, Any] = {
                "stdin": subprocess.PIPE,
                "stdout": subprocess.PIPE,
                "stderr": stderr,
            }
            process = (spawn or subprocess.Popen)(argv, **popen)
        proxy = cls(process, log)
        try:
            ready = proxy._read_answer(timeout=15.0)
        except TargetError:
            proxy.stop()
            raise
        proxy.port = int(ready["port"])
        return proxy

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def set_fault(self, fault_id: str, kind: str, **params: float | bool) -> None:
        """Make a fault active (replacing one with the same id): latency (latency, jitter,
        share), reset (share, reset_existing), refuse (reset_existing), blackhole (share).
        Durations are seconds."""
        self.request({"op": "set", "id": fault_id, "kind": kind, **params})

    def clear_fault(self, fault_id: str) -> bool:
        """End a fault; False when no fault had that id (already cleared)."""
        return bool(self.request({"op": "clear", "id": fault_id}).get("cleared"))

    def set_backends(self, ports: Sequence[int]) -> None:
        self.request({"op": "backends", "ports": list(ports)})

    def status(self) -> dict[str, Any]:
        """Port, listening, backends, connections (open), accepted (total), faults (id->kind)."""
        return self.request({"op": "status"})

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            stdin = self.process.stdin
            if stdin is None or not self.alive:
                raise TargetError(f"the fault proxy is not running{self._exit_note()}")
            try:
                stdin.write(json.dumps(message).encode() + b"\n")
                stdin.flush()
            except OSError as exc:
                raise TargetError(f"the fault proxy is gone: {exc}{self._exit_note()}") from exc
            answer = self._read_answer(ANSWER_TIMEOUT)
        if not answer.get("ok"):
            raise TargetError(
                f"the fault proxy refused {message.get('op')!r}: {answer.get('error')}"
            )
        return answer

    def stop(self, timeout: float = 3.0) -> None:
        """Close its stdin (it then drops every connection and exits); kill it if it lingers.
        Idempotent."""
        stdin: IO[bytes] | None = self.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _read_answer(self, timeout: float) -> dict[str, Any]:
        """One line from the proxy's stdout, read unbuffered so select() tells the truth."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TargetError(f"the fault proxy did not answer within {timeout:g}s")
            readable, _, _ = select.select([stdout], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(1.0)
                raise TargetError(f"the fault proxy exited{self._exit_note()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _exit_note(self) -> str:
        code = self.process.poll()
        if code is None:
            return ""
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        output = ("; its output ended with:\n  " + "\n  ".join(tail)) if tail else ""
        return f" (exit code {code}){output}"
