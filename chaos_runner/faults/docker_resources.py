"""Resource faults on Docker containers: CPU and memory stress, disk fill, process kill.

Everything runs in a helper container (see `targets.docker.sidecar`), so the target image
needs no tools. Stressors sit, where the cgroup driver allows it, in a child of the target's
cgroup, so they weigh on its limits and show in its stats; the handle says where they ran.
This module never imports the Docker SDK.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, field_validator

from chaos_runner.errors import FaultError
from chaos_runner.experiment import FaultSpec
from chaos_runner.plugins import FaultScope, Handle, Member, Target
from chaos_runner.targets.docker import sidecar

LIFETIME_GRACE = 60.0
"""A stressor ends by itself this long after its fault's duration, should the runner die
before reverting it and nobody revert it from the journal."""

# The scripts below run inside the helper (python3 is in the helper image). They are passed
# at each call rather than baked into the image so an old image never runs an old version.
_CPU = r"""
import ctypes, os, sys, time
workers, load, lifetime = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + lifetime if lifetime > 0 else float("inf")
try:
    ctypes.CDLL(None).prctl(15, b"chaos-cpu", 0, 0, 0)  # PR_SET_NAME, for ps in the target
except Exception:
    pass
def burn():
    busy = 0.1 * load / 100
    while time.monotonic() < end:
        start = time.monotonic()
        while time.monotonic() - start < busy:
            pass
        time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
for _ in range(workers - 1):
    if os.fork() == 0:
        burn()
        os._exit(0)
burn()
"""

_MEMORY = r"""
import ctypes, sys, time
size, lifetime = int(sys.argv[1]), float(sys.argv[2])
end = time.monotonic() + lifetime if lifetime > 0 else float("inf")
try:
    ctypes.CDLL(None).prctl(15, b"chaos-memory", 0, 0, 0)
except Exception:
    pass
block = bytearray(size)
block[::4096] = b"\x01" * len(range(0, size, 4096))  # touch every page so it is resident
print("holding", size, "bytes", flush=True)
while time.monotonic() < end:
    time.sleep(min(1.0, end - time.monotonic()))
"""

# chroot into the target's root (through its PID 1, which shares the helper's PID
# namespace) so the path and any symlink in it resolve as the target sees them, volumes
# included.
_DISK_FILL = r"""
import errno, json, os, sys
path, size = sys.argv[1], int(sys.argv[2])
os.chroot("/proc/1/root")
os.chdir("/")
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
except FileExistsError:
    sys.exit(path + " already exists; a file chaos-runner did not create is never touched")
except OSError as exc:
    sys.exit("cannot create %s: %s" % (path, exc.strerror))
try:
    os.posix_fallocate(fd, 0, size)
except OSError as exc:
    if exc.errno != errno.ENOSPC:
        sys.exit("cannot allocate %d bytes in %s: %s" % (size, path, exc.strerror))
    chunk = bytes(1 << 20)  # not room for all of it: fill what there is, which is the fault
    try:
        while os.fstat(fd).st_size < size:
            os.write(fd, chunk[: size - os.fstat(fd).st_size])
    except OSError as full:
        if full.errno != errno.ENOSPC:
            raise
os.fsync(fd)
print(json.dumps({"path": path, "size": os.fstat(fd).st_size}))
"""

_DISK_CLEAN = r"""
import os, sys
os.chroot("/proc/1/root")
try:
    os.unlink(sys.argv[1])
except FileNotFoundError:
    pass
"""

_KILL = r"""
import json, os, re, signal, sys
pattern, full, signum = re.compile(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
killed, init = [], False
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == os.getpid():
        continue
    try:
        with open("/proc/%s/comm" % entry) as f:
            name = f.read().strip()
        text = name
        if full:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue  # exited meanwhile
    if not pattern.search(text):
        continue
    if entry == "1":
        init = True  # the kernel drops most signals sent to a namespace's init from inside it
        continue
    try:
        os.kill(int(entry), signum)
        killed.append({"pid": int(entry), "name": name})
    except ProcessLookupError:
        pass
print(json.dumps({"killed": killed, "init_matched": init}))
"""


def _docker_size(value: object) -> object:
    """Docker's '256m' / '1g' (powers of 1024) -> pydantic's '256MiB'; others pass on."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt])\s*", value.lower())
        if match:
            return f"{match.group(1)}{match.group(2).upper()}iB"
    return value


Size = Annotated[ByteSize, BeforeValidator(_docker_size), Field(gt=0)]
"""Bytes, written as a number or as '256m', '1g' (Docker's units) or '100MB', '1GiB'."""


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def _new_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def _failed(handle: Handle, exc: Exception) -> FaultError:
    return FaultError(f"{handle.kind} on {handle.member}: {exc}")


class _Stressor:
    """A long-running stressor in a helper named after the handle; revert removes it.

    What makes a stressor weigh on the target is its cgroup, not its PID namespace, so the
    helper keeps a PID namespace of its own: in the target's, workers killed by the revert
    would be orphaned to the target's PID 1 and, as most servers never reap, stay zombies.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = True

    def argv(self, params: Any, lifetime: float) -> list[str]:
        raise NotImplementedError

    def check(self, params: Any, target: Target) -> None:
        sidecar.ensure_helper_image(sidecar.client_of(target))

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        client = sidecar.client_of(target)
        lifetime = fault.duration + LIFETIME_GRACE if fault.duration > 0 else 0.0
        handles = []
        for member in members:
            handle_id = _new_id(name)
            placement = sidecar.cgroup_placement(client, member.id)
            data = {
                "container": member.id,
                "helper": f"chaos-runner-helper-{handle_id}",
                "lifetime": lifetime,
                "cgroup_parent": placement.parent,
                "counts_against_target": placement.shared,
                "where": f"helper container, cgroup {placement.description}",
            }
            handles.append(Handle(handle_id, name, self.kind, member.id, data))
        return handles

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        client = sidecar.client_of(target)
        data = handle.data
        cgroup = sidecar.CgroupPlacement(
            str(data["cgroup_parent"]), bool(data["counts_against_target"]), str(data["where"])
        )
        try:
            sidecar.start_in_namespaces(
                client,
                str(data["container"]),
                self.argv(params, float(data["lifetime"])),
                cgroup=cgroup,
                labels={sidecar.HANDLE_LABEL: handle.id},
                name=str(data["helper"]),
            )
        except sidecar.NotRunning as exc:
            raise _failed(handle, exc) from exc

    def revert(self, handle: Handle, target: Target) -> None:
        sidecar.remove_helper(sidecar.client_of(target), str(handle.data["helper"]))


class CpuParams(_Params):
    workers: int = Field(default=1, ge=1, le=256)
    """Number of busy processes; each can take one CPU."""
    load: float = Field(default=100.0, gt=0, le=100)
    """Percent of one CPU each worker takes (busy for that share of every 100 ms)."""


class CpuStress(_Stressor):
    """Busy-loop workers in the target's cgroup (where the cgroup driver allows it)."""

    kind: ClassVar[str] = "cpu"
    Params: ClassVar[type[BaseModel]] = CpuParams

    def argv(self, params: Any, lifetime: float) -> list[str]:
        return ["python3", "-c", _CPU, str(params.workers), f"{params.load:g}", f"{lifetime:g}"]


class MemoryParams(_Params):
    size: Size
    """How much memory to hold: '256m', '1g', '100MB'."""


class MemoryPressure(_Stressor):
    """Hold resident memory in the target's cgroup (where possible): past its limit, the
    kernel's OOM killer picks a victim among the target's processes and the stressor."""

    kind: ClassVar[str] = "memory"
    Params: ClassVar[type[BaseModel]] = MemoryParams

    def argv(self, params: Any, lifetime: float) -> list[str]:
        return ["python3", "-c", _MEMORY, str(int(params.size)), f"{lifetime:g}"]


class DiskParams(_Params):
    size: Size
    """How much to write: '1g', '500m', '100MB'. Less if the disk fills first."""
    directory: str = "/tmp"
    """Absolute path of a directory inside the container: the filesystem to fill."""

    @field_validator("directory")
    @classmethod
    def _absolute(cls, directory: str) -> str:
        if not directory.startswith("/"):
            raise ValueError(f"{directory!r} is not an absolute path inside the container")
        return directory.rstrip("/") or "/"


class DiskFill:
    """Write a file of the given size in the container's filesystem; revert deletes it.

    The file is allocated, not sparse, so it takes the space. It is named after the handle
    and created only if absent, so a revert (even of a failed injection) can never delete a
    file chaos-runner did not create.
    """

    kind: ClassVar[str] = "disk"
    Params: ClassVar[type[BaseModel]] = DiskParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = True

    def check(self, params: Any, target: Target) -> None:
        sidecar.ensure_helper_image(sidecar.client_of(target))

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        handles = []
        for member in members:
            handle_id = _new_id(name)
            path = f"{params.directory.rstrip('/')}/chaos-runner-{handle_id}.fill"
            data = {"container": member.id, "path": path, "size": int(params.size)}
            handles.append(Handle(handle_id, name, self.kind, member.id, data))
        return handles

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        argv = ["python3", "-c", _DISK_FILL, str(handle.data["path"]), str(handle.data["size"])]
        try:
            code, output = _run(target, handle, argv)
        except sidecar.NotRunning as exc:
            raise _failed(handle, exc) from exc
        if code != 0:
            raise _failed(handle, FaultError(output.strip()))

    def revert(self, handle: Handle, target: Target) -> None:
        path = str(handle.data["path"])
        try:
            code, output = _run(target, handle, ["python3", "-c", _DISK_CLEAN, path])
        except sidecar.NotRunning as exc:
            if exc.gone:
                return  # the file went with the container
            raise FaultError(
                f"disk on {handle.member}: {exc}; {path} is still in its writable layer: "
                "revert again once it runs, or remove the file"
            ) from exc
        if code != 0:
            raise _failed(handle, FaultError(output.strip()))


class KillProcessParams(_Params):
    pattern: str
    """Regular expression searched in the process name (as `pkill` does)."""
    full: bool = False
    """Search the whole command line instead of the name (as `pkill -f` does)."""
    signal: str = "SIGKILL"
    """Signal name or number: SIGKILL, TERM, 9..."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return pattern

    @field_validator("signal", mode="before")
    @classmethod
    def _known_signal(cls, value: object) -> str:
        text = str(value).upper()
        try:
            found = signal.Signals(int(text)) if text.isdigit() else None
            found = found or signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        except (KeyError, ValueError):
            raise ValueError(f"{value!r} is not a signal name or number") from None
        return found.name


class KillProcess:
    """Send a signal to the container's processes whose name (or command line) matches.

    Not reversible: whatever supervises the process must bring it back. The container's
    main process (PID 1) is left alone, since the kernel ignores most signals sent to a PID
    namespace's init from inside it; use the 'kill' fault for the whole container.
    """

    kind: ClassVar[str] = "kill-process"
    Params: ClassVar[type[BaseModel]] = KillProcessParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = False

    def check(self, params: Any, target: Target) -> None:
        sidecar.ensure_helper_image(sidecar.client_of(target))

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        data = {"pattern": params.pattern, "full": params.full, "signal": params.signal}
        return [
            Handle(_new_id(name), name, self.kind, m.id, {"container": m.id, **data})
            for m in members
        ]

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        data = handle.data
        signum = int(signal.Signals[str(data["signal"])])
        argv = ["python3", "-c", _KILL, str(data["pattern"]), "1" if data["full"] else "0"]
        try:
            code, output = _run(target, handle, [*argv, str(signum)])
        except sidecar.NotRunning as exc:
            raise _failed(handle, exc) from exc
        if code != 0:
            raise _failed(handle, FaultError(output.strip()))
        found = json.loads(output.strip().splitlines()[-1])
        if not found["killed"]:
            only_init = " but its main process (PID 1): use the 'kill' fault for that"
            raise _failed(
                handle,
                FaultError(
                    f"no process matches {data['pattern']!r}"
                    + (only_init if found["init_matched"] else "")
                ),
            )

    def revert(self, handle: Handle, target: Target) -> None:
        """Nothing to undo: the process is gone and its supervisor must restart it."""


def _run(target: Target, handle: Handle, argv: list[str]) -> tuple[int, str]:
    """Run argv to its end in a helper sharing the target's PID namespace."""
    return sidecar.run_in_namespaces(
        sidecar.client_of(target),
        str(handle.data["container"]),
        argv,
        net=False,
        pid=True,
        caps=("SYS_PTRACE",),
        labels={sidecar.HANDLE_LABEL: handle.id},
    )
