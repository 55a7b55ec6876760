"""A dual-stack node (issue 16): real OVS (userspace datapath), real namespaces and veths, the
shim called as kubelet calls it. A pod gets one address per family (IPv4 first), its interface
holds both with the IPv6 default route through the gateway, the gateway holds both gateway
addresses, the host masquerades IPv6 pod traffic leaving the cluster with ip6tables, DEL frees
both; pods reach each other and the gateway over IPv6 (ping and TCP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import Node, in_ns, wait_for

CIDRS = ("10.244.0.0/24", "fd00:10:244::/64")
CLUSTER = ("10.244.0.0/16", "fd00:10:244::/56")
GW4, GW6 = "10.244.0.1", "fd00:10:244::1"

# a TCP server on [::] answering each connection with the peer's address and the byte count
SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    with c:
        c.settimeout(20)
        n = 0
        while (b := c.recv(65536)):
            n += len(b)
        c.sendall(f"{peer[0]} {n}\\n".encode())
"""


class DualNode(Node):
    """A node whose agent is configured dual-stack (pod_cidrs, cluster_cidrs)."""

    def agent_cmd(self) -> list[str]:
        cmd = super().agent_cmd()
        i = cmd.index("--pod-cidr")
        cmd[i : i + 2] = ["--pod-cidrs", ",".join(CIDRS), "--cluster-cidrs", ",".join(CLUSTER)]
        return cmd


@pytest.fixture(scope="module")
def dnode(request):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, OVS)")
    n = DualNode(pod_cidr=CIDRS[0])
    request.addfinalizer(n.stop)
    n.start()
    return n


@pytest.fixture(scope="module")
def dpods(dnode):
    return [dnode.add_pod(n) for n in ("da", "db")]


def ip6(p: dict) -> str:
    return p["result"]["ips"][1]["address"].split("/")[0]


def ipam_allocations(node) -> list[dict]:
    path = os.path.join(node.state, "ipam", "ipam-10.244.0.0_24+fd00:10:244::_64.json")
    with open(path) as fh:
        return json.load(fh)["allocations"]


def ping6(ns: str, ip: str, count: int = 1) -> bool:
    return (
        in_ns(ns, "ping", "-6", "-n", "-c", str(count), "-W", "1", ip, check=False).returncode == 0
    )


def test_add_gives_both_addresses_ipv4_first(dnode, dpods):
    for p in dpods:
        res = p["result"]
        v4, v6 = p["ip"], ip6(p)
        assert v4.startswith("10.244.0.") and v6.startswith("fd00:10:244::")
        assert res["ips"] == [
            {"address": f"{v4}/24", "gateway": GW4, "interface": 1},
            {"address": f"{v6}/64", "gateway": GW6, "interface": 1},
        ]
        assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": GW4}, {"dst": "::/0", "gw": GW6}]
        # what the pod sees: both addresses, no DAD pending, the IPv6 default route, the MTU
        addrs = in_ns(p["ns"], "ip", "-o", "addr", "show", "eth0").stdout
        assert f"{v4}/24" in addrs and f"{v6}/64" in addrs, addrs
        assert "tentative" not in addrs, addrs  # the link-local too: usable at once
        assert "nodad" in in_ns(p["ns"], "ip", "-6", "-o", "addr", "show", "scope", "global").stdout
        assert "scope link" in in_ns(p["ns"], "ip", "-6", "-o", "addr", "show", "eth0").stdout
        assert f"default via {GW6} dev eth0" in in_ns(p["ns"], "ip", "-6", "route").stdout
        assert in_ns(p["ns"], "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad").stdout == "0\n"
        assert "mtu 1450" in in_ns(p["ns"], "ip", "link", "show", "eth0").stdout
        # CHECK passes with the result as prevResult
        ok = dnode.cni(
            "CHECK", p["cid"], p["netns"], pod=f"default/{p['name']}",
            conf=dnode.netconf("1.0.0", prevResult=res),
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout
    held = {tuple(a["ips"]) for a in ipam_allocations(dnode)}
    assert {(p["ip"], ip6(p)) for p in dpods} <= held


def test_the_host_side_of_a_dual_stack_node(dnode):
    gw = in_ns(dnode.ns, "ip", "-o", "addr", "show", "ovsctl-gw0").stdout
    assert f"{GW4}/24" in gw and f"{GW6}/64" in gw and "tentative" not in gw, gw
    assert "nodad" in in_ns(dnode.ns, "ip", "-6", "-o", "addr", "show", "ovsctl-gw0").stdout
    fwd = in_ns(dnode.ns, "cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout
    assert fwd == "1\n"
    route = in_ns(dnode.ns, "ip", "-6", "route", "show", CLUSTER[1]).stdout
    assert "dev ovsctl-gw0" in route and "mtu 1450" in route, route
    nat = in_ns(dnode.ns, "ip6tables", "-w", "5", "-t", "nat", "-S", "OVSCTL-POSTROUTING").stdout
    assert f"-A OVSCTL-POSTROUTING -s {CIDRS[1]} ! -d {CLUSTER[1]}" in nat, nat
    assert "-j MASQUERADE" in nat
    filt = in_ns(dnode.ns, "ip6tables", "-w", "5", "-S", "OVSCTL-FORWARD").stdout
    assert f"-A OVSCTL-FORWARD -s {CIDRS[1]} -j ACCEPT" in filt, filt
    assert f"-A OVSCTL-FORWARD -d {CIDRS[1]} -j ACCEPT" in filt, filt
    # the IPv4 side is as on any node
    nat4 = in_ns(dnode.ns, "iptables", "-w", "5", "-t", "nat", "-S", "OVSCTL-POSTROUTING").stdout
    assert f"-s {CIDRS[0]} ! -d {CLUSTER[0]}" in nat4, nat4


def test_the_status_lists_every_address_and_pod_cidr(dnode, dpods):
    from ovsctl.tools import agentclient

    st = agentclient.get("/status", dnode.api_sock)
    assert st["pod_cidrs"] == list(CIDRS) and st["ipam"]["cidr"] == CIDRS[0]
    assert [c["cidr"] for c in st["ipam"]["cidrs"]] == list(CIDRS)
    mine = {p["name"]: p for p in st["pods"]}
    for p in dpods:
        assert mine[p["name"]]["ip"] == p["ip"]
        assert mine[p["name"]]["ips"] == [p["ip"], ip6(p)]


def test_pods_reach_each_other_and_the_gateway_over_ipv6(dnode, dpods):
    a, b = dpods
    assert wait_for(lambda: ping6(a["ns"], ip6(b)), 10, what="ping6 a -> b")
    assert ping6(b["ns"], ip6(a))
    assert ping6(a["ns"], GW6), "pod -> gateway over IPv6"
    assert ping6(dnode.ns, ip6(a)), "node -> pod over IPv6"
    # the pod resolved its gateway by neighbour discovery: the gateway's MAC, reachable
    neigh = in_ns(a["ns"], "ip", "-6", "neigh", "show", GW6, "dev", "eth0").stdout
    assert "lladdr 0a:58:0a:f4:00:01" in neigh, neigh
    # TCP over IPv6, a few MB, the source address arrives unchanged
    srv = subprocess.Popen(
        ["ip", "netns", "exec", b["ns"], sys.executable, "-c", SERVER, "5006"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout.readline().strip() == "listening"
        n = 4 * 1024 * 1024
        send = (
            "import socket,sys\n"
            "c=socket.create_connection((sys.argv[1],5006),timeout=5)\n"
            "c.settimeout(20); c.sendall(b'x'*int(sys.argv[2])); c.shutdown(socket.SHUT_WR)\n"
            "print(c.recv(1024).decode().strip())\n"
        )
        out = in_ns(a["ns"], sys.executable, "-c", send, ip6(b), str(n), timeout=60)
        assert out.stdout.split() == [ip6(a), str(n)]
    finally:
        srv.kill()
        srv.wait()


def test_del_frees_both_addresses(dnode):
    p = dnode.add_pod("dgone")
    host_if = p["result"]["interfaces"][0]["name"]
    assert (p["ip"], ip6(p)) in {tuple(a["ips"]) for a in ipam_allocations(dnode)}
    ports = dnode.ovs.vsctl("list-ports", "br-int").split()
    assert host_if in ports
    ext = dnode.ovs.vsctl("get", "Interface", host_if, "external_ids")
    assert f'ips="{p["ip"]},{ip6(p)}"' in ext, ext
    r = dnode.cni("DEL", p["cid"], p["netns"], pod="default/dgone")
    assert r.returncode == 0, r.stdout
    left = {ip for a in ipam_allocations(dnode) for ip in a["ips"]}
    assert p["ip"] not in left and ip6(p) not in left
    assert host_if not in dnode.ovs.vsctl("list-ports", "br-int").split()


def test_an_ipv4_only_node_touches_no_ip6tables(node):
    """The single-stack node of the other integration tests: no ovsctl chain in ip6tables."""
    for table in ("nat", "filter"):
        out = in_ns(node.ns, "ip6tables", "-w", "5", "-t", table, "-S").stdout
        assert "OVSCTL" not in out, out
    gw = in_ns(node.ns, "ip", "-6", "-o", "addr", "show", "ovsctl-gw0").stdout
    assert "scope global" not in gw


def test_restart_after_losing_the_ipam_state_keeps_both_addresses(dnode, dpods):
    """kill -9, the IPAM file gone: the restarted agent re-reserves both addresses of every
    live pod from OVSDB, hands them to no one else, and IPv6 keeps working."""
    a, b = dpods
    dnode.kill_agent(signal.SIGKILL)
    assert ping6(a["ns"], ip6(b)), "the switch forwards IPv6 without the agent"
    path = os.path.join(dnode.state, "ipam", "ipam-10.244.0.0_24+fd00:10:244::_64.json")
    os.unlink(path)
    dnode.start_agent()
    held = {tuple(x["ips"]) for x in ipam_allocations(dnode)}
    assert {(p["ip"], ip6(p)) for p in dpods} <= held
    fresh = dnode.add_pod("dafter")
    assert fresh["ip"] not in {p["ip"] for p in dpods}
    assert ip6(fresh) not in {ip6(p) for p in dpods}
    assert ping6(fresh["ns"], ip6(a)) and ping6(a["ns"], ip6(fresh))
    r = dnode.cni("CHECK", a["cid"], a["netns"], pod=f"default/{a['name']}")
    assert r.returncode == 0, r.stdout
