"""The lab's ground: where it lives, its addresses, its error, and running commands and
processes in its namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid

import netaddr

from ovsctl.util import wait_until

ROOT = os.environ.get("OVSCTL_LAB_ROOT", "/run/ovsctl-lab")
UNDERLAY = netaddr.IPNetwork("172.30.0.0/24")
EXTERNAL_IP = "172.30.0.2"
# A lab with an IPv6 cluster CIDR (dual-stack or IPv6-only) also numbers its underlay from this
# ULA, beside the IPv4 one: node k is fd00:172:30::a+k (as 172.30.0.10+k), the external host
# fd00:172:30::2. The VXLAN tunnels between nodes stay on IPv4 in every lab.
UNDERLAY6 = netaddr.IPNetwork("fd00:172:30::/64")
EXTERNAL_IP6 = "fd00:172:30::2"
API_PORT = 6443  # the lab's Kubernetes API (`lab up --source api`), on the external host
SERVICE_CIDR = netaddr.IPNetwork("10.96.0.0/16")  # where the lab allocates missing ClusterIPs
EXTERNAL_PORT = 8080
HERE = os.path.dirname(os.path.abspath(__file__))
RESPONDER = os.path.join(HERE, "responder.py")
PROBER = os.path.join(HERE, "prober.py")
PROVISION = os.path.join(HERE, "provision.sh")  # shared with the Vagrant lab (vagrant/)


class LabError(RuntimeError):
    pass


DEFAULT_NODE_PREFIX = {4: 24, 6: 64}


def parse_cidrs(text: str, what: str = "--cluster-cidr") -> list[str]:
    """ "10.244.0.0/16,fd00:10:244::/56" -> the CIDRs, IPv4 first; at most one per family."""
    cidrs = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            net = netaddr.IPNetwork(part)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise LabError(f"{what} {text}: {part!r} is not a CIDR (like 10.244.0.0/16)") from None
        if "/" not in part:
            raise LabError(f"{what} {text}: {part!r} is not a CIDR (ADDRESS/PREFIX)")
        if net.ip != net.network:
            raise LabError(f"{what} {text}: {part} has host bits set (the network is {net.cidr})")
        cidrs.append(net)
    if len({n.version for n in cidrs}) != len(cidrs):
        raise LabError(f"{what} {text}: at most one CIDR per IP family (one IPv4, one IPv6)")
    return [str(n) for n in sorted(cidrs, key=lambda n: n.version)]


def parse_prefixes(value, cidrs: list[str]) -> list[int]:
    """The pod CIDR size per node for each cluster CIDR (`cidrs` as parse_cidrs orders them,
    IPv4 first): "24,64" (by position), one number
    (for the first CIDR; the others get their family's default) or None (24 for IPv4, 64 for
    IPv6). Each must leave room for the nodes' subnets inside its cluster CIDR."""
    nets = [netaddr.IPNetwork(c) for c in cidrs]
    if value is None or value == "":
        given = []
    elif isinstance(value, int):
        given = [value]
    elif isinstance(value, (list, tuple)):
        given = [int(v) for v in value]
    else:
        try:
            given = [int(v) for v in str(value).split(",")]
        except ValueError:
            raise LabError(f"--node-prefix {value}: not a number or a list like 24,64") from None
    if len(given) > len(nets):
        raise LabError(
            f"--node-prefix {value}: {len(given)} sizes for {len(nets)} cluster CIDR(s) "
            f"({','.join(cidrs)})"
        )
    out = []
    for i, net in enumerate(nets):
        p = given[i] if i < len(given) else DEFAULT_NODE_PREFIX[net.version]
        top = 30 if net.version == 4 else 126
        if not net.prefixlen <= p <= top:
            raise LabError(
                f"--node-prefix {value}: /{p} for {net} must be between /{net.prefixlen} and /{top}"
            )
        out.append(p)
    return out


def sh(*cmd: str, check: bool = True, timeout: float = 30, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(p.stderr or p.stdout).strip()}")
    return p


def in_ns(
    ns: str, *cmd: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int | None, marker: str) -> bool:
    """Is `pid` still the process we started (its command line mentions `marker`)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker.encode() in fh.read()
    except OSError:
        return False


def _stop_pid(pid: int | None, marker: str, sig=signal.SIGTERM, timeout: float = 5) -> None:
    if not _alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait(cond, timeout: float, what: str):
    return wait_until(cond, timeout, what, error=LabError)


def _zombie(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return None


def spawn(ns: str, cmd: list[str], log_path: str, env: dict | None = None) -> int:
    """Start a long-running process in `ns`, detached, output to log_path; returns its PID."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(HERE)), full_env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    with open(log_path, "a") as log:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=full_env,
        )
    return p.pid


def uplink(ul: str, ns: str, peer: str, addr: str | None, ifname: str = "eth0") -> None:
    """A veth from `ns` (ifname) to the underlay bridge; checksum offload off on both
    ends, since the userspace datapath does not complete partial checksums. `ul`: the
    underlay namespace."""
    tmp = f"v{uuid.uuid4().hex[:10]}"
    in_ns(ul, "ip", "link", "add", peer, "type", "veth", "peer", "name", tmp)
    in_ns(ul, "ip", "link", "set", tmp, "netns", ns)
    in_ns(ns, "ip", "link", "set", tmp, "name", ifname)
    in_ns(ul, "ip", "link", "set", peer, "master", "br0", "up")
    in_ns(ul, "ethtool", "-K", peer, "tx", "off", check=False)
    in_ns(ns, "ethtool", "-K", ifname, "tx", "off", check=False)
    if addr:
        in_ns(ns, "ip", "addr", "add", addr, "dev", ifname)
    in_ns(ns, "ip", "link", "set", ifname, "up")
