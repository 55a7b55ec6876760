"""Issue 14: no pod can bypass NetworkPolicy through the overlay. A 2-node lab; the attacks are
made with tests/e2e/seckit.py inside the pods' network namespaces.

Layout: node0 holds `trusted`, `attacker`, `peer` and `guarded`; node1 holds `victim`. A
NetworkPolicy isolates `victim` and `guarded` (role=victim) for ingress, admitting only
`trusted`. Every "nothing arrived" is asserted after a genuine packet sent *after* the attack
has arrived at the same listener, so the time waited is justified by an observed event; the
drop flows' counters say which flow stopped the attack.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import netaddr
import pytest
import yaml

from flows import tables
from flows.model import mac_from_ip
from tests.helpers import in_ns, wait_for

SECKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seckit.py")
PORT4, PORT6 = 7000, 7001
NS = "sec"
PLACEMENT = {"trusted": "node0", "attacker": "node0", "peer": "node0", "guarded": "node0"}
PLACEMENT["victim"] = "node1"
ROLES = {"trusted": "trusted", "attacker": "attacker", "peer": "peer"}
ROLES.update(victim="victim", guarded="victim")
V6 = {"victim": "fd00:14::2", "guarded": "fd00:14::12", "attacker": "fd00:14::13"}


def cluster_yaml() -> str:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "only-trusted", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": {"role": "victim"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "trusted"}}}]}],
            },
        }
    )
    for name, node in PLACEMENT.items():
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": {"role": ROLES[name]}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            }
        )
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, cluster_yaml())


@pytest.fixture(scope="module")
def net(lab):
    """Addresses of everything the attacks need: pods (ip, mac, netns, node), nodes (ip,
    gateway MAC, netns), the external host's netns."""
    st, meta = lab.status(), lab.meta()
    nodes = {}
    for n in st["nodes"]:
        gw = str(netaddr.IPAddress(netaddr.IPNetwork(n["podCIDR"]).first + 1))
        nodes[n["name"]] = {"ip": n["ip"], "gw_mac": mac_from_ip(gw)}
        nodes[n["name"]]["netns"] = meta["nodes"][n["name"]]["netns"]
    pods = {}
    for p in st["pods"]:
        ns = lab.pod_netns(f"{NS}/{p['name']}")
        link = json.loads(in_ns(ns, "ip", "-j", "link", "show", "eth0").stdout)[0]
        pods[p["name"]] = {"ip": p["ip"], "mac": link["address"], "netns": ns, "node": p["node"]}
    assert {k: v["node"] for k, v in pods.items()} == PLACEMENT
    # IPv6 addresses (no DAD: pods' multicast never passes SpoofGuard) and, for the sender,
    # static neighbours: whatever IPv6 a pod sends, it is sent as a real pod would send it.
    for name, addr in V6.items():
        in_ns(pods[name]["netns"], "ip", "-6", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad")
    for name in ("victim", "guarded"):
        in_ns(
            pods["attacker"]["netns"],
            *("ip", "-6", "neigh", "replace", V6[name], "lladdr", pods[name]["mac"]),
            *("dev", "eth0", "nud", "permanent"),
        )
    return {"pods": pods, "nodes": nodes, "ext": lab.ns("ext")}


class Listener:
    """seckit.py listen in a namespace; collects its lines."""

    def __init__(self, netns: str, *args):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-u", SECKIT, "listen", *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: "ready" in self.lines, 15, what=f"listener in {netns}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def saw(self, token: str) -> list[str]:
        """Lines that carry a marker starting with OVSCTLSEC-<token>."""
        return [ln for ln in list(self.lines) if f"OVSCTLSEC-{token}" in ln]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def listen():
    made = []

    def start(netns: str, *args) -> Listener:
        made.append(Listener(netns, *args))
        return made[-1]

    yield start
    for li in made:
        li.close()


def kit(netns: str, *args) -> None:
    in_ns(netns, sys.executable, SECKIT, *map(str, args))


def n_packets(lab, node: str, table: str, *needles: str) -> int:
    """Packets counted by the flows of `table` on `node` whose text has every needle."""
    out = lab.ovs(node).ofctl("dump-flows", "br-int", f"table={tables.table(table).id}")
    hits = [ln for ln in out.splitlines() if all(n in ln for n in needles)]
    assert hits, f"no flow in {table} on {node} with {needles}:\n{out}"
    return sum(int(re.search(r"n_packets=(\d+)", ln).group(1)) for ln in hits)


def to_vxlan(node_ip: str) -> tuple[str, str]:
    """Needles of the L3Forwarding flow that drops UDP to node_ip's VXLAN port."""
    return f"nw_dst={node_ip},tp_dst=4789 ", "drop"


def rose(lab, node: str, table: str, *needles: str):
    """A check that the packet counter of those flows went up since now (OVS adds packets the
    datapath handled to the OpenFlow counters every so often, hence polled, never read once)."""
    before = n_packets(lab, node, table, *needles)
    return lambda: n_packets(lab, node, table, *needles) > before


def attack_until(listener: Listener, attack, control, observed, what: str, timeout=30) -> int:
    """Round after round, the attack and then a genuine packet, until a genuine packet has
    arrived and every drop the attack should meet was counted; then one last genuine packet,
    sent after every attack, is waited for. After that, an attack packet that was going to
    arrive would have. Returns how many rounds were sent."""
    n = 0

    def one_round():
        nonlocal n
        n += 1
        attack(n)
        control(n)
        return listener.saw("genuine") and all(check() for check in observed)

    wait_for(one_round, timeout, interval=0.2, what=what)
    wait_for(
        lambda: control("last") or listener.saw("genuine-last"),
        15,
        interval=0.2,
        what=f"{what} (the last one)",
    )
    return n


MISS = " priority=0 actions=drop"


def test_a_pod_cannot_forge_a_trusted_source_through_the_tunnel(lab, net, listen):
    """(a) The attacker crafts VXLAN to a node's tunnel port, its inner packet claiming the
    trusted pod's IP, to the isolated victim. Before issue 14 the victim received it."""
    pods, nodes = net["pods"], net["nodes"]
    victim, trusted, attacker = pods["victim"], pods["trusted"], pods["attacker"]
    inner = (nodes["node1"]["gw_mac"], nodes["node0"]["gw_mac"], trusted["ip"], victim["ip"], PORT4)
    li = listen(victim["netns"], "--udp4", PORT4, "--sniff", "eth0")
    # stopped where issue 14 says: the pod's packets by the VXLAN-port drops on its own node
    # (to either node's IP), the outsider's by node1's Classifier (no node has its address)
    observed = [
        rose(lab, "node0", "L3Forwarding", *to_vxlan(nodes[n]["ip"])) for n in ("node0", "node1")
    ]
    observed.append(rose(lab, "node1", "Classifier", MISS))

    def attack(i):
        for target in ("node1", "node0"):  # the victim's node, and the attacker's own
            kit(attacker["netns"], "vxlan4", nodes[target]["ip"], *inner, f"OVSCTLSEC-pod-{i}")
        # from the underlay, but not from a node: the tunnel does not take it
        kit(net["ext"], "vxlan4", nodes["node1"]["ip"], *inner, f"OVSCTLSEC-ext-{i}")

    def control(i):
        kit(trusted["netns"], "send-udp4", victim["ip"], PORT4, f"OVSCTLSEC-genuine-{i}")

    attack_until(li, attack, control, observed, "the trusted pod's packet, the attacks' drops")
    assert any(ln.split()[:2] == ["udp4", trusted["ip"]] for ln in li.saw("genuine"))
    assert li.saw("pod") == [] and li.saw("ext") == [], li.lines
    # The crafted packet itself is well made: sent from a node's address (the overlay's trust
    # boundary: a node may say anything) it is delivered, forged source and all.
    wait_for(
        lambda: (
            kit(nodes["node0"]["netns"], "vxlan4", nodes["node1"]["ip"], *inner, "OVSCTLSEC-node")
            or [ln for ln in li.saw("node") if ln.startswith("udp4 ")]
        ),
        30,
        interval=0.2,
        what="the crafted packet sent from node0's own address",
    )
    assert [ln for ln in li.saw("node") if ln.startswith("udp4 ")][0].split()[:2] == [
        "udp4",
        trusted["ip"],
    ]


def test_ipv6_through_the_tunnel_reaches_no_pod(lab, net, listen):
    """(b) An inner IPv6 frame, addressed to the isolated victim's MAC and its IPv6 address,
    from the attacker pod and even from a node's own address: the overlay carries IPv4 only."""
    pods, nodes = net["pods"], net["nodes"]
    victim, trusted, attacker = pods["victim"], pods["trusted"], pods["attacker"]
    inner = (victim["mac"], nodes["node0"]["gw_mac"], "fd00:14::66", V6["victim"], PORT6)
    li = listen(victim["netns"], "--udp4", PORT4, "--udp6", PORT6, "--sniff", "eth0")
    # the pod's by the VXLAN-port drop on node0; the node's reach node1 and meet the
    # Classifier's drop (only IPv4 from the tunnel)
    observed = [rose(lab, "node0", "L3Forwarding", *to_vxlan(nodes["node1"]["ip"]))]
    observed.append(rose(lab, "node1", "Classifier", MISS))

    def attack(i):
        kit(attacker["netns"], "vxlan6", nodes["node1"]["ip"], *inner, f"OVSCTLSEC-v6pod-{i}")
        kit(nodes["node0"]["netns"], "vxlan6", nodes["node1"]["ip"], *inner, f"OVSCTLSEC-v6n-{i}")

    def control(i):
        kit(trusted["netns"], "send-udp4", victim["ip"], PORT4, f"OVSCTLSEC-genuine-{i}")

    attack_until(li, attack, control, observed, "the trusted pod's packet, the attacks' drops")
    assert li.saw("v6") == [], li.lines  # neither at the socket nor on the wire


def test_ipv6_from_a_pod_reaches_no_pod(lab, net, listen):
    """IPv6 sent by a pod's own stack (to a pod on its node and on the other node, neighbours
    known) never reaches an isolated pod: SpoofGuard admits only IPv4 and ARP."""
    pods = net["pods"]
    guarded, victim, trusted, attacker = (
        pods[k] for k in ("guarded", "victim", "trusted", "attacker")
    )
    near = listen(guarded["netns"], "--udp4", PORT4, "--udp6", PORT6, "--sniff", "eth0")
    far = listen(victim["netns"], "--udp6", PORT6, "--sniff", "eth0")
    observed = [rose(lab, "node0", "SpoofGuard", MISS)]

    def attack(i):
        for name in ("guarded", "victim"):
            kit(attacker["netns"], "send-udp6", V6[name], PORT6, f"OVSCTLSEC-v6direct-{i}")

    def control(i):
        kit(trusted["netns"], "send-udp4", guarded["ip"], PORT4, f"OVSCTLSEC-genuine-{i}")

    attack_until(near, attack, control, observed, "the trusted pod's packet, SpoofGuard's drop")
    assert near.saw("v6direct") == [] and far.saw("v6direct") == [], near.lines + far.lines


def test_pods_cannot_reach_any_nodes_vxlan_port(lab, net, listen):
    """(c) UDP to 4789 of the pod's own node IP and of another node's IP is dropped in br-int
    (the drop flows count it), while the same pod reaches both node IPs on another port."""
    pods, nodes = net["pods"], net["nodes"]
    attacker = pods["attacker"]
    lis = {n: listen(nodes[n]["netns"], "--udp4", 4790) for n in ("node0", "node1")}
    # every node has the drops for every node IP
    for node in nodes:
        for target in nodes:
            n_packets(lab, node, "L3Forwarding", *to_vxlan(nodes[target]["ip"]))
    observed = [rose(lab, "node0", "L3Forwarding", *to_vxlan(nodes[n]["ip"])) for n in nodes]
    n = 0

    def one_round():
        nonlocal n
        n += 1
        for target in nodes:
            kit(attacker["netns"], "send-udp4", nodes[target]["ip"], 4789, f"OVSCTLSEC-tun-{n}")
        for target in nodes:
            kit(attacker["netns"], "send-udp4", nodes[target]["ip"], 4790, f"OVSCTLSEC-genuine-{n}")
        return all(li.saw("genuine") for li in lis.values()) and all(c() for c in observed)

    wait_for(one_round, 30, interval=0.2, what="the pod's packets to port 4790, the 4789 drops")


def test_vlan_tagged_frames_from_a_pod_are_not_delivered(lab, net, listen):
    """(d) The same Ethernet/IPv4/UDP frame, from the attacker's own MAC and IP, written with
    an AF_PACKET socket: untagged it is delivered, 802.1Q-tagged (VLAN 100, or a priority tag
    with VLAN 0) it meets SpoofGuard's drop."""
    pods, nodes = net["pods"], net["nodes"]
    peer, attacker = pods["peer"], pods["attacker"]
    frame = ("eth0", nodes["node0"]["gw_mac"], attacker["mac"], attacker["ip"], peer["ip"], PORT4)
    li = listen(peer["netns"], "--udp4", PORT4, "--sniff", "eth0")
    observed = [rose(lab, "node0", "SpoofGuard", MISS)]

    def attack(i):
        for vid in (100, 0):
            kit(attacker["netns"], "frame", *frame, f"OVSCTLSEC-vlan{vid}-{i}", "--vid", vid)

    def control(i):
        kit(attacker["netns"], "frame", *frame, f"OVSCTLSEC-genuine-{i}")

    attack_until(li, attack, control, observed, "the untagged frame, SpoofGuard's drop")
    assert any(ln.split()[:2] == ["udp4", attacker["ip"]] for ln in li.saw("genuine"))
    assert li.saw("vlan") == [], li.lines
