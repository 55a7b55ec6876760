"""What a user sees on the node: addresses held, OVS ports, host veths, flows; traffic between
sandboxes. Shared by the containerd and podman tests."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

from tests.helpers import in_ns, sh, wait_for

NETUTIL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netutil.py")


def ipam_ips(node) -> set[str]:
    d = os.path.join(node.state, "ipam")
    out: set[str] = set()
    for f in os.listdir(d) if os.path.isdir(d) else ():
        if f.endswith(".json"):
            with open(os.path.join(d, f)) as fh:
                out |= {a["ip"] for a in json.load(fh)["allocations"]}
    return out


def ovs_ports(node) -> set[str]:
    return set(node.ovs.vsctl("list-ports", "br-int").split())


def node_links(node) -> set[str]:
    out = in_ns(node.ns, "ip", "-o", "link", "show").stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def flow_texts(node) -> set[str]:
    """Installed flows without statistics, the agent's round stripped from cookies."""
    out = set()
    for line in node.ovs.ofctl("dump-flows", "br-int", "--no-stats").splitlines():
        line = line.strip()
        if line.startswith("cookie="):
            head, rest = line.split(", ", 1)
            c = int(head.split("=")[1], 16) & ((1 << 48) - 1)
            line = (f"cookie={c:#x}, " if c else "") + rest
        out.add(line)
    return out


def node_state(node) -> dict:
    return {
        "ipam": ipam_ips(node),
        "ports": ovs_ports(node),
        "links": node_links(node),
        "flows": flow_texts(node),
    }


def diff(before: dict, after: dict) -> dict:
    return {
        k: {"left": sorted(after[k] - before[k]), "gone": sorted(before[k] - after[k])}
        for k in before
        if before[k] != after[k]
    }


def assert_back_to(node, before: dict, timeout: float = 20, what: str = "") -> None:
    """Poll until the node holds exactly what it held before (no address, port, veth or flow
    left behind)."""
    last = {}

    def same():
        nonlocal last
        last = diff(before, node_state(node))
        return not last

    try:
        wait_for(same, timeout, interval=0.2, what=f"node back to its earlier state {what}")
    except AssertionError:
        raise AssertionError(
            f"left behind {what}: {json.dumps(last, indent=1)}\nagent log:\n{node.tail_log(40)}"
        ) from None


def flows_mentioning(node, ip: str) -> list[str]:
    return [f for f in flow_texts(node) if f"={ip}," in f or f"={ip} " in f or f.endswith(ip)]


def in_cidr(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def gateway(cidr: str) -> str:
    return str(next(ipaddress.ip_network(cidr).hosts()))


def in_netns(path: str, *cmd: str, check: bool = True, timeout: float = 30):
    return sh("nsenter", f"--net={path}", "--", *cmd, check=check, timeout=timeout)


def pings(netns_path: str, ip: str) -> bool:
    return in_netns(netns_path, "ping", "-n", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def assert_pings(netns_path: str, ip: str, timeout: float = 15) -> None:
    wait_for(lambda: pings(netns_path, ip), timeout, what=f"ping {ip} from {netns_path}")


def assert_tcp(server_netns: str, server_ip: str, client_netns: str, n: int = 200_000) -> None:
    """A TCP server in one sandbox, a client in the other: the bytes all arrive."""
    srv = subprocess.Popen(
        ["nsenter", f"--net={server_netns}", "--", sys.executable, NETUTIL, "serve", "5001"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout.readline().strip() == "listening"

        def sent():
            p = in_netns(
                client_netns,
                sys.executable,
                NETUTIL,
                "send",
                server_ip,
                "5001",
                str(n),
                check=False,
                timeout=60,
            )
            return p.returncode == 0 and p.stdout.split()[-1] == str(n) and p.stdout

        wait_for(sent, 30, interval=0.5, what=f"TCP {n} bytes to {server_ip}")
    finally:
        srv.kill()
        srv.wait(timeout=10)
