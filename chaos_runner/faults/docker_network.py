"""Network faults on Docker containers: partition, packet loss, bandwidth, netem latency.

Each acts in the target's network namespace through a helper container (see
`targets.docker.sidecar`), so the target image needs no tools. Interfaces are found by the
container's IP, never by name. Every rule is tagged with its handle id and every qdisc has
a known handle, so a revert removes exactly what was added, from the handle alone. This
module never imports the Docker SDK.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaos_runner.errors import FaultError, PreflightError
from chaos_runner.experiment import Duration, FaultSpec
from chaos_runner.faults.docker import docker_target
from chaos_runner.plugins import FaultScope, Handle, Member, Target
from chaos_runner.targets.docker import sidecar

QDISC_HANDLE = "ca05:"
"""The root qdisc handle every shaping fault uses, so revert finds it on any interface."""

NET_CAPS = ("NET_ADMIN", "NET_RAW")

# Runs inside the helper (python3 is in the helper image; nothing is needed in the target).
# It is passed at each call rather than baked into the image, so an old helper image can
# never run an old version of it. Input: one JSON argument; exit status non-zero on failure,
# after undoing whatever part it had done.
_NETNS_TOOL = r"""
import json, shlex, subprocess, sys

spec = json.loads(sys.argv[1])

def run(argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip()

def interfaces(ips):
    code, out = run(["ip", "-o", "addr", "show"])
    if code:
        sys.exit("ip addr show failed: " + out)
    by_ip = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] in ("inet", "inet6"):
            by_ip[words[3].split("/")[0]] = words[1].split("@")[0]
    missing = [ip for ip in ips if ip not in by_ip]
    if missing or not ips:
        sys.exit("no interface carries %s (addresses here: %s)" % (", ".join(missing), by_ip))
    return sorted({by_ip[ip] for ip in ips})

def delete_rules(comment):
    for tool in ("iptables", "ip6tables"):
        code, out = run([tool, "-w", "-S"])
        if code:
            continue  # this family is unavailable here, so none of our rules are in it
        for line in out.splitlines():
            words = shlex.split(line)
            tagged = any(a == "--comment" and b == comment for a, b in zip(words, words[1:]))
            if words[:1] == ["-A"] and tagged:
                code, out = run([tool, "-w", "-D"] + words[1:])
                if code and "does a matching rule exist" not in out:
                    sys.exit("%s -D %s: %s" % (tool, " ".join(words[1:]), out))

def delete_qdiscs(handle):
    code, out = run(["tc", "qdisc", "show"])
    for line in out.splitlines():
        words = line.split()
        if len(words) > 4 and words[2] == handle and words[3] == "dev" and "root" in words:
            code, out = run(["tc", "qdisc", "del", "dev", words[4], "root"])
            if code and "Cannot find device" not in out:
                sys.exit("tc qdisc del dev %s root: %s" % (words[4], out))

op = spec["op"]
done = []
if op == "rules-add":
    ifaces = interfaces(spec["ips"]) if spec["need_interfaces"] else []
    for family, chain, *args in spec["rules"]:
        for iface in ifaces if "{if}" in args else [None]:
            argv = ["iptables" if family == 4 else "ip6tables", "-w", "-I", chain]
            argv += [iface if a == "{if}" else a for a in args]
            code, out = run(argv)
            if code:
                delete_rules(spec["comment"])
                sys.exit("%s: %s" % (" ".join(argv), out))
            done.append(" ".join(argv))
elif op == "rules-del":
    delete_rules(spec["comment"])
elif op == "qdisc-add":
    for iface in interfaces(spec["ips"]):
        argv = ["tc", "qdisc", "replace", "dev", iface, "root", "handle", spec["handle"]]
        code, out = run(argv + spec["qdisc"])
        if code:
            delete_qdiscs(spec["handle"])
            sys.exit("%s: %s" % (" ".join(argv + spec["qdisc"]), out))
        done.append(iface)
elif op == "qdisc-del":
    delete_qdiscs(spec["handle"])
print(json.dumps(done))
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$")
_RATE_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}


def _bits_per_second(rate: str) -> float:
    match = re.match(r"^(\d+(?:\.\d+)?)([a-z]+)$", rate)
    assert match is not None  # the Params validator accepted only this shape
    number, unit = float(match.group(1)), match.group(2)
    if unit.endswith("bps"):  # tc: bytes per second
        return number * 8 * _RATE_BITS[unit[:-3] + "bit"]
    return number * _RATE_BITS[unit]


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _run_tool(target: Target, handle: Handle, spec: dict[str, Any]) -> str:
    """Run the netns tool in the target's network namespace; its output, or FaultError.

    A revert (spec op ending in -del) on a stopped or removed container succeeds: the
    namespace, and every rule and qdisc in it, went with the container.
    """
    client = sidecar.client_of(target)
    container = str(handle.data["container"])
    argv = ["python3", "-c", _NETNS_TOOL, json.dumps(spec)]
    labels = {sidecar.HANDLE_LABEL: handle.id}
    try:
        code, output = sidecar.run_in_namespaces(
            client, container, argv, net=True, caps=NET_CAPS, labels=labels
        )
    except sidecar.NotRunning as exc:
        if str(spec["op"]).endswith("-del"):
            return ""
        raise FaultError(f"{handle.kind} on {handle.member}: {exc}") from exc
    if code != 0:
        raise FaultError(f"{handle.kind} on {handle.member}: {output.strip()}")
    return output


def _addresses(target: Target, handle: Handle) -> list[str]:
    """The target's IPs, which is how its interfaces are found; FaultError if it has none."""
    try:
        ips = sidecar.container_ips(sidecar.client_of(target), str(handle.data["container"]))
    except sidecar.NotRunning as exc:
        raise FaultError(f"{handle.kind} on {handle.member}: {exc}") from exc
    if not ips:
        raise FaultError(
            f"{handle.kind} on {handle.member}: the container has no IP address on a Docker "
            "network (network mode none, host or another container's): nothing to act on"
        )
    return ips


def _preflight(target: Target, argv: list[str], what: str) -> None:
    """Try argv in a throwaway network namespace; PreflightError if the kernel refuses."""
    client = sidecar.client_of(target)
    code, output = sidecar.run_isolated(client, argv, caps=NET_CAPS)
    if code != 0:
        raise PreflightError(f"{what} does not work on this Docker host: {output.strip()}")


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PartitionParams(_Params):
    """Parameters of 'partition' (and, with `percent`, of 'loss')."""

    peers: tuple[str, ...] = ()
    """IPs, CIDRs, container names/ids, or `service:NAME` (every container of that Compose
    service in the target's project) to cut off; empty: all traffic on the container's
    interfaces (loopback excepted)."""
    direction: Literal["in", "out", "both"] = "both"
    """Which packets: received by the container (in), sent by it (out), or both."""

    @field_validator("peers")
    @classmethod
    def _peers_look_right(cls, peers: tuple[str, ...]) -> tuple[str, ...]:
        for peer in peers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                if not _NAME.match(peer.removeprefix(SERVICE_PEER)):
                    raise ValueError(
                        f"{peer!r} is neither an IP, a CIDR nor a container name"
                    ) from None
        return peers


class LossParams(PartitionParams):
    """Parameters of 'loss'."""

    percent: float = Field(gt=0, le=100)
    """Share of packets dropped, in each direction the fault applies to."""


class BandwidthParams(_Params):
    """Parameters of 'bandwidth' (tc-tbf)."""

    rate: str
    """Rate in tc's units: '1mbit', '500kbit', '100kbps' (bytes per second)."""
    burst: str | None = None
    """Bucket size in tc's units ('32kbit', '16kb'); default: 10 ms at the rate, at
    least 16 KiB."""
    latency: Duration = 0.1
    """Longest time a packet may wait in the bucket before it is dropped."""

    @field_validator("rate")
    @classmethod
    def _rate_is_tc(cls, rate: str) -> str:
        if not _RATE.match(rate.lower()):
            raise ValueError(f"{rate!r} is not a tc rate such as '1mbit' or '100kbps'")
        return rate.lower()


class LatencyParams(_Params):
    """Parameters of 'latency' (tc-netem)."""

    delay: Duration = Field(gt=0)
    """Added to every packet the container sends."""
    jitter: Duration = 0.0
    """Random variation around `delay`."""


class _FilterFault:
    """iptables DROP rules in the target's namespace, tagged `chaos-runner:<handle id>`."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = PartitionParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = True

    def extra_match(self, params: Any) -> list[str]:
        """iptables match arguments that narrow which packets are dropped."""
        return []

    def check(self, params: Any, target: Target) -> None:
        sidecar.ensure_helper_image(sidecar.client_of(target))
        rule = ["iptables", "-w", "-A", "INPUT", *self.extra_match(params)]
        rule += ["-m", "comment", "--comment", "chaos-runner:preflight", "-j", "DROP"]
        _preflight(target, rule, f"the iptables rule needed by {self.kind!r}")

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        handles = []
        for member in members:
            handle_id = f"{name}-{secrets.token_hex(4)}"
            data = {
                "container": member.id,
                "comment": f"chaos-runner:{handle_id}",
                "peers": list(params.peers),
                "direction": params.direction,
            }
            handles.append(Handle(handle_id, name, self.kind, member.id, data))
        return handles

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        ips = _addresses(target, handle)
        peers = _resolve_peers(target, params.peers)
        # ip6tables only where the container has IPv6: a host without it may lack ip6tables.
        families = sorted({ipaddress.ip_address(ip).version for ip in ips})
        tail = [*self.extra_match(params), "-m", "comment", "--comment", handle.data["comment"]]
        tail += ["-j", "DROP"]
        rules: list[list[Any]] = []
        for chain, via, toward in (("INPUT", "-i", "-s"), ("OUTPUT", "-o", "-d")):
            if params.direction not in ("both", "in" if chain == "INPUT" else "out"):
                continue
            if peers:
                rules += [[p.version, chain, toward, str(p), *tail] for p in peers]
            else:
                rules += [[family, chain, via, "{if}", *tail] for family in families]
        spec = {
            "op": "rules-add",
            "ips": ips,
            "need_interfaces": not peers,
            "rules": rules,
            "comment": handle.data["comment"],
        }
        _run_tool(target, handle, spec)

    def revert(self, handle: Handle, target: Target) -> None:
        _run_tool(target, handle, {"op": "rules-del", "comment": handle.data["comment"]})


SERVICE_PEER = "service:"
"""A peer written `service:redis` means every container of that Compose service."""


def _resolve_peers(
    target: Target, peers: tuple[str, ...]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of the peers, resolved now (containers get new addresses on restart)."""
    client = sidecar.client_of(target)
    resolved: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for peer in peers:
        try:
            resolved.append(ipaddress.ip_network(peer, strict=False))
            continue
        except ValueError:
            pass
        refs = [peer]
        if peer.startswith(SERVICE_PEER):
            service = peer.removeprefix(SERVICE_PEER)
            refs = [state.id for state in docker_target(target).service_states(service)]
            if not refs:
                raise FaultError(f"peer {peer!r}: the Compose service has no container")
        for ref in refs:
            try:
                ips = sidecar.container_ips(client, ref)
            except sidecar.NotRunning as exc:
                raise FaultError(f"peer {peer!r}: {exc}") from exc
            if not ips and ref == peer:
                raise FaultError(f"peer container {peer!r} has no IP address on any network")
            resolved += [ipaddress.ip_network(ip) for ip in ips]
    return resolved


class Partition(_FilterFault):
    """Drop every packet to and/or from the container (or only those of given peers)."""

    kind: ClassVar[str] = "partition"
    Params: ClassVar[type[BaseModel]] = PartitionParams


class PacketLoss(_FilterFault):
    """Drop a random share of the packets to and/or from the container."""

    kind: ClassVar[str] = "loss"
    Params: ClassVar[type[BaseModel]] = LossParams

    def extra_match(self, params: Any) -> list[str]:
        probability = f"{params.percent / 100:.6f}"
        return ["-m", "statistic", "--mode", "random", "--probability", probability]


class _QdiscFault:
    """A root qdisc on each interface carrying the container's IPs (what it sends)."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[frozenset[str]] = frozenset({"docker"})
    scope: ClassVar[FaultScope] = "members"
    reversible: ClassVar[bool] = True

    def qdisc(self, params: Any) -> list[str]:
        raise NotImplementedError

    def check(self, params: Any, target: Target) -> None:
        client = sidecar.client_of(target)
        sidecar.ensure_helper_image(client)
        qdisc = self.qdisc(params)
        argv = ["tc", "qdisc", "add", "dev", "lo", "root", *qdisc]
        code, output = sidecar.run_isolated(client, argv, caps=NET_CAPS)
        if code != 0:
            raise PreflightError(self.refusal(qdisc[0], output.strip()))

    def refusal(self, qdisc: str, tc_said: str) -> str:
        return f"the {qdisc} qdisc that {self.kind!r} needs does not work here: {tc_said}"

    def plan(
        self, fault: FaultSpec, name: str, params: Any, members: list[Member], target: Target
    ) -> list[Handle]:
        handles = []
        for member in members:
            data = {"container": member.id, "tc_handle": QDISC_HANDLE, "qdisc": self.qdisc(params)}
            handles.append(
                Handle(f"{name}-{secrets.token_hex(4)}", name, self.kind, member.id, data)
            )
        return handles

    def inject(self, handle: Handle, params: Any, target: Target) -> None:
        spec = {
            "op": "qdisc-add",
            "ips": _addresses(target, handle),
            "handle": handle.data["tc_handle"],
            "qdisc": handle.data["qdisc"],
        }
        _run_tool(target, handle, spec)

    def revert(self, handle: Handle, target: Target) -> None:
        _run_tool(target, handle, {"op": "qdisc-del", "handle": handle.data["tc_handle"]})


class Bandwidth(_QdiscFault):
    """Limit the rate at which the container sends (a token bucket filter, tc-tbf)."""

    kind: ClassVar[str] = "bandwidth"
    Params: ClassVar[type[BaseModel]] = BandwidthParams

    def qdisc(self, params: Any) -> list[str]:
        # tbf needs a bucket of at least one timer tick's worth of traffic at the rate.
        burst = params.burst or f"{max(16 * 1024, int(_bits_per_second(params.rate) / 800))}b"
        latency = _milliseconds(params.latency)
        return ["tbf", "rate", params.rate, "burst", burst, "latency", latency]


class NetemLatency(_QdiscFault):
    """Delay what the container sends (tc-netem), where the host kernel has netem."""

    kind: ClassVar[str] = "latency"
    Params: ClassVar[type[BaseModel]] = LatencyParams

    def qdisc(self, params: Any) -> list[str]:
        args = ["netem", "delay", _milliseconds(params.delay)]
        return [*args, _milliseconds(params.jitter)] if params.jitter else args

    def refusal(self, qdisc: str, tc_said: str) -> str:
        if "unknown" not in tc_said.lower():
            return super().refusal(qdisc, tc_said)
        return (
            "fault kind 'latency' on Docker needs the netem queueing discipline, which the "
            "Docker host's kernel does not have (kernel module sch_netem, CONFIG_NET_SCH_NETEM;"
            f" tc said: {tc_said}). Add latency at the proxy level instead: kind 'latency' on "
            "a local target (the runner's TCP fault proxy), or a toxiproxy-style proxy in "
            "front of the container."
        )
