"""The host side of NodePort for both families, with real packets in network namespaces (no
OVS needed: the gateway is one end of a veth whose other end stands for br-int).

A client connects to the node's IPv4 and IPv6 addresses on a node port; the node's NodePort
rules (setup_node_ports / sync_node_ports, run inside the node's namespace) must DNAT the
connection to NODEPORT_IP / NODEPORT_IP6, port kept, and route it out of the gateway with the
gateway's own MAC as destination (the permanent neighbour entry), the client's address kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from flows.model import NODEPORT_IP, NODEPORT_IP6, NODEPORT_LOCAL_IP, NODEPORT_LOCAL_IP6
from tests.helpers import REPO, in_ns, netns_add, netns_del, sh, uid

NODE4, CLIENT4 = "10.99.0.1", "10.99.0.2"
NODE6, CLIENT6 = "fd00:99::1", "fd00:99::2"
PORT = 30080


def _py(ns: str, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return sh(
        "ip",
        "netns",
        "exec",
        ns,
        "env",
        f"PYTHONPATH={REPO}",
        sys.executable,
        "-c",
        textwrap.dedent(code),
        timeout=timeout,
    )


# In the sink (br-int's place): every frame arriving for a node port, as JSON lines.
CAPTURE = """
import json, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        f = s.recv(2048)
    except TimeoutError:
        continue
    dst_mac = f[0:6].hex(":")
    etype = struct.unpack("!H", f[12:14])[0]
    if etype == 0x0800 and f[23] == 6:
        ihl = (f[14] & 0xF) * 4
        src, dst = socket.inet_ntop(2, f[26:30]), socket.inet_ntop(2, f[30:34])
        dport = struct.unpack("!H", f[14 + ihl + 2 : 14 + ihl + 4])[0]
    elif etype == 0x86DD and f[20] == 6:
        src, dst = socket.inet_ntop(10, f[22:38]), socket.inet_ntop(10, f[38:54])
        dport = struct.unpack("!H", f[56:58])[0]
    else:
        continue
    print(json.dumps({"mac": dst_mac, "src": src, "dst": dst, "dport": dport}), flush=True)
"""


@pytest.fixture
def nets():
    tag = uid()
    node, client, sink = f"np6n-{tag}", f"np6c-{tag}", f"np6s-{tag}"
    gw = f"gw{tag}"
    try:
        for ns in (node, client, sink):
            netns_add(ns)
        sh("ip", "link", "add", "up0", "netns", node, "type", "veth", "peer", "c0", "netns", client)
        sh("ip", "link", "add", gw, "netns", node, "type", "veth", "peer", "br0", "netns", sink)
        for ns, dev, addrs in (
            (node, "up0", (f"{NODE4}/24", f"{NODE6}/64")),
            (client, "c0", (f"{CLIENT4}/24", f"{CLIENT6}/64")),
        ):
            for a in addrs:
                in_ns(ns, "ip", "addr", "add", a, "dev", dev, *(("nodad",) if ":" in a else ()))
            in_ns(ns, "ip", "link", "set", dev, "up")
        in_ns(node, "ip", "link", "set", gw, "up")
        in_ns(sink, "ip", "link", "set", "br0", "up")
        in_ns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        mac = in_ns(node, "cat", f"/sys/class/net/{gw}/address").stdout.strip()
        yield {"node": node, "client": client, "sink": sink, "gw": gw, "mac": mac}
    finally:
        for ns in (node, client, sink):
            netns_del(ns)


def _setup(nets, addresses):
    _py(
        nets["node"],
        f"""
        from ovsctl.agent.host import hostnet
        hostnet.setup_node_ports({nets["gw"]!r}, {nets["mac"]!r}, {tuple(addresses)!r})
        """,
    )


def _sync(nets, entries, ipv6):
    _py(
        nets["node"],
        f"""
        from ovsctl.agent.host import hostnet
        hostnet.sync_node_ports({set(entries)!r}, ipv6={ipv6!r})
        """,
    )


def _connect(nets, host: str) -> None:
    """A TCP connect from the client (nothing answers it: its SYNs are what the sink sees)."""
    _py(
        nets["client"],
        f"""
        import socket
        s = socket.socket(socket.AF_INET6 if ":" in {host!r} else socket.AF_INET)
        s.settimeout(1.5)
        try:
            s.connect(({host!r}, {PORT}))
        except OSError:
            pass
        """,
    )


def test_node_ports_of_both_families_are_dnated_into_the_gateway(nets):
    _setup(nets, (NODEPORT_IP, NODEPORT_LOCAL_IP, NODEPORT_IP6, NODEPORT_LOCAL_IP6))
    _sync(nets, {("tcp", PORT, NODEPORT_IP), ("tcp", PORT, NODEPORT_IP6)}, ipv6=True)
    # the host plumbing: one /128 route and a permanent neighbour with the gateway's MAC
    route = in_ns(nets["node"], "ip", "-6", "route", "show", f"{NODEPORT_IP6}/128").stdout
    assert f"dev {nets['gw']}" in route
    neigh = in_ns(nets["node"], "ip", "-6", "neigh", "show", NODEPORT_IP6).stdout
    assert nets["mac"] in neigh and "PERMANENT" in neigh
    rules6 = in_ns(nets["node"], "ip6tables-save", "-t", "nat").stdout
    assert f"--dport {PORT}" in rules6 and f"--to-destination {NODEPORT_IP6}" in rules6
    assert NODEPORT_IP + " " not in rules6 and NODEPORT_IP6 not in (
        in_ns(nets["node"], "iptables-save", "-t", "nat").stdout
    )

    cap = subprocess.Popen(
        ["ip", "netns", "exec", nets["sink"], sys.executable, "-c", CAPTURE, "br0", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cap.stdout.readline().strip() == "ready"
        _connect(nets, NODE4)
        _connect(nets, NODE6)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    seen = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    got = {(s["src"], s["dst"], s["dport"], s["mac"]) for s in seen}
    assert (CLIENT4, NODEPORT_IP, PORT, nets["mac"]) in got, seen
    assert (CLIENT6, NODEPORT_IP6, PORT, nets["mac"]) in got, seen

    # the rules go with their Services: an empty set clears both chains
    _sync(nets, set(), ipv6=True)
    assert f"--dport {PORT}" not in in_ns(nets["node"], "ip6tables-save", "-t", "nat").stdout
    assert f"--dport {PORT}" not in in_ns(nets["node"], "iptables-save", "-t", "nat").stdout


def test_an_ipv4_only_node_runs_no_ip6tables(nets):
    _setup(nets, (NODEPORT_IP, NODEPORT_LOCAL_IP))
    _sync(nets, {("tcp", PORT, NODEPORT_IP)}, ipv6=False)
    assert f"--dport {PORT}" in in_ns(nets["node"], "iptables-save", "-t", "nat").stdout
    # nothing of ours in any ip6tables table, and no IPv6 route to the node-port addresses
    assert "OVSCTL" not in in_ns(nets["node"], "ip6tables-save").stdout
    assert not in_ns(nets["node"], "ip", "-6", "route", "show", f"{NODEPORT_IP6}/128").stdout


def test_ipv6_node_ports_move_with_the_services(nets):
    _setup(nets, (NODEPORT_IP, NODEPORT_LOCAL_IP, NODEPORT_IP6, NODEPORT_LOCAL_IP6))
    _sync(nets, {("udp", 30053, NODEPORT_LOCAL_IP6), ("tcp", PORT, NODEPORT_IP6)}, ipv6=True)

    def rules():
        return in_ns(nets["node"], "ip6tables-save", "-t", "nat").stdout

    assert "--dport 30053" in rules()
    assert f"--to-destination {NODEPORT_LOCAL_IP6}" in rules()
    _sync(nets, {("tcp", PORT, NODEPORT_IP6)}, ipv6=True)
    assert "--dport 30053" not in rules() and f"--dport {PORT}" in rules()
