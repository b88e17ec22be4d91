"""Crashing a container: killing its main process behind the engine's back.

`docker kill` is a manual stop to the engine, so the restart policy never applies after it;
`docker exec ... kill -9 1` does nothing, as the kernel drops every signal a namespace's init
has no handler for when it comes from inside that namespace (SIGKILL included). The signal
must come from an ancestor PID namespace: this process, when it shares the engine host's
("host"), or a helper container in the host's PID namespace ("helper", which also works
against a remote engine). Either way the process is first checked to be in the container's
cgroup, so a recycled pid is never hit. This module signals; it decides nothing.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from typing import Any

from chaos_runner.errors import FaultError
from chaos_runner.targets.docker import sidecar

GONE = 3
"""The helper's exit status when the process is no longer the container's."""

# Runs in the helper: $1 container id, $2 pid, $3 signal name. `exec` keeps kill's status.
_HELPER_SCRIPT = f'grep -q "$1" "/proc/$2/cgroup" || exit {GONE}; exec kill -s "$3" "$2"'


def signal_from_host(container_id: str, name: str, pid: int, signum: signal.Signals) -> bool:
    """Signal the container's main process from this process; False when it is not ours to
    see (another PID namespace) or to signal (not allowed), so the helper must do it."""
    try:
        # A pidfd pins the process: if the pid is recycled after this, the signal below
        # fails instead of reaching a stranger.
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8")
        except OSError:
            return False
        if container_id not in cgroups:
            return False  # another process has that pid here: this is not the engine's host
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except PermissionError:
            return False
        except ProcessLookupError as exc:
            raise FaultError(f"container {name}'s process {pid} died before the signal") from exc
        return True
    finally:
        os.close(pidfd)


def signal_from_helper(
    client: Any, container_id: str, name: str, pid: int, signum: signal.Signals, *, timeout: float
) -> None:
    """Signal the process from a short-lived helper in the host's PID namespace. SDK errors
    are left to the caller, which names the container in them."""
    image = sidecar.ensure_helper_image(client)
    argv = ["sh", "-c", _HELPER_SCRIPT, "crash", container_id, str(pid), signum.name[3:]]
    helper = client.containers.create(
        image,
        argv,
        pid_mode="host",
        labels={sidecar.HELPER_LABEL: "1", sidecar.TARGET_LABEL: container_id},
        name=f"chaos-runner-helper-{secrets.token_hex(4)}",
    )
    try:
        helper.start()
        status = helper.wait(timeout=timeout)
        output = helper.logs().decode(errors="replace").strip()
    finally:
        sidecar.remove_helper(client, helper.id)
    code = int(status.get("StatusCode", -1))
    if code == GONE:
        raise FaultError(
            f"container {name}'s process {pid} was gone before the signal (the container "
            "stopped or restarted meanwhile)"
        )
    if code != 0:
        raise FaultError(
            f"the helper could not signal container {name}'s process {pid} (exit {code}): {output}"
        )
