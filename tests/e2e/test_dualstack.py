"""Dual-stack end to end (issue 16): one 3-node lab with the cluster CIDRs 10.244.0.0/16 and
fd00:10:244::/56, namespaces x, y, z with pods a, b, c each (test_netpol's cluster), real
packets on both families: pod to pod (TCP, UDP, a full-size transfer), source addresses, the
external host over IPv6 (masquerade), the NetworkPolicy scenarios on IPv6 against the same
matrices as on IPv4, a RequireDualStack Service (both ClusterIPs, its NodePort over IPv6), the
IPv6 attacks a pod can make (spoofed global and link-local sources, forged Neighbor and Router
Advertisements), and traces over IPv6."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import netaddr
import pytest
import yaml

from flows.model import link_local
from ovsctl.lab.lab import EXTERNAL_IP6, EXTERNAL_PORT
from tests.e2e.test_netpol import (
    NAMESPACES,
    PODS,
    SCENARIOS,
    cluster_yaml,
    diff,
    matrix,
    netpol,
    pod_doc,
)
from tests.helpers import in_ns, uid, wait_for
from tests.netpol_reference import evaluate

CIDRS = "10.244.0.0/16,fd00:10:244::/56"
SECKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seckit.py")

# From a pod: connect to HOST PORT, send N bytes; prints the server's line ("PEER SERVER")
# and the byte count the server read.
CLIENT = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=5)
c.settimeout(30)
f = c.makefile("rb")
line = f.readline().decode().split()
chunk = b"x" * 65536
left = n
while left > 0:
    c.sendall(chunk[: min(left, len(chunk))]); left -= min(left, len(chunk))
c.shutdown(socket.SHUT_WR)
print(json.dumps({"peer": line[0], "server": line[1], "count": int(f.readline())}))
""".replace("import socket, sys", "import json, socket, sys")

UDP_CLIENT = """
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(20):
    s.sendto(b"hello", (host, port))
    try:
        peer, server = s.recvfrom(2048)[0].decode().split()
        print(json.dumps({"peer": peer, "server": server}))
        break
    except TimeoutError:
        continue
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(3, cluster_yaml(), cluster_cidr=CIDRS, node_prefix="24,64")


@pytest.fixture(scope="module")
def st(lab):
    return lab.status()


def pod(st, key: str) -> dict:
    return next(p for p in st["pods"] if f"{p['namespace']}/{p['name']}" == key)


def v6(addrs) -> str:
    return next(a for a in addrs if ":" in a)


def talk(lab, src: str, host: str, port: int, nbytes: int = 0) -> dict:
    out = in_ns(lab.pod_netns(src), sys.executable, "-c", CLIENT, host, str(port), str(nbytes))
    return json.loads(out.stdout)


def udp(lab, src: str, host: str, port: int) -> dict:
    out = in_ns(lab.pod_netns(src), sys.executable, "-c", UDP_CLIENT, host, str(port))
    assert out.stdout.strip(), f"no UDP answer from {host}:{port} to {src}"
    return json.loads(out.stdout)


# ---- addresses ------------------------------------------------------------------------------


def test_nodes_and_pods_have_both_families(lab, st):
    assert [n["podCIDRs"] for n in st["nodes"]] == [
        [f"10.244.{k}.0/24", ("fd00:10:244::/64", "fd00:10:244:1::/64", "fd00:10:244:2::/64")[k]]
        for k in range(3)
    ]
    assert [n["ips"] for n in st["nodes"]] == [
        [f"172.30.0.{10 + k}", f"fd00:172:30::{10 + k:x}"] for k in range(3)
    ]
    assert st["external"]["ips"] == ["172.30.0.2", EXTERNAL_IP6]
    nodes = {n["name"]: n for n in st["nodes"]}
    assert len(st["pods"]) == 9
    for p in st["pods"]:
        assert p["ip"] == p["ips"][0] and len(p["ips"]) == 2, p
        for addr, cidr in zip(p["ips"], nodes[p["node"]]["podCIDRs"], strict=True):
            assert netaddr.IPAddress(addr) in netaddr.IPNetwork(cidr), p
        # the pod's interface holds both, and the Pod object in the state lists both
        shown = in_ns(lab.pod_netns(f"{p['namespace']}/{p['name']}"), "ip", "-j", "addr").stdout
        have = {a["local"] for link in json.loads(shown) for a in link.get("addr_info", [])}
        assert set(p["ips"]) <= have, (p, have)
        with open(os.path.join(lab.cluster_dir, f"Pod-{p['namespace']}.{p['name']}.yaml")) as fh:
            status = yaml.safe_load(fh)["status"]
        assert [e["ip"] for e in status["podIPs"]] == p["ips"] and status["podIP"] == p["ip"]
    # the Node objects and the agents' configs, as the provisioning script wrote them
    with open(os.path.join(lab.cluster_dir, "Node-node1.yaml")) as fh:
        node = yaml.safe_load(fh)
    assert node["spec"]["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert [a["address"] for a in node["status"]["addresses"]] == nodes["node1"]["ips"]
    with open(os.path.join(lab.node_dir("node1"), "agent.yaml")) as fh:
        conf = yaml.safe_load(fh)
    assert conf["cluster_cidrs"] == CIDRS.split(",")
    assert conf["pod_cidrs"] == nodes["node1"]["podCIDRs"]
    # the CLI prints the same JSON
    cli = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "status", "--name", lab.name, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout)["pods"] == st["pods"]


# ---- connectivity ---------------------------------------------------------------------------


def test_every_pod_reaches_every_pod_on_both_families(lab):
    want = matrix(lambda *_: True)  # 9 pods, 8 peers each, TCP 80, TCP 81, UDP 53
    got4, got6 = lab.probe(family=4), lab.probe(family=6)
    assert got4 == want, diff(got4, want)
    assert got6 == want, diff(got6, want)
    assert lab.probe() == got4  # IPv4 is the default on a dual-stack lab
    cli = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "probe", "--name", lab.name, "--json"]
        + ["--family", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout) == want


def test_ipv6_source_addresses_arrive_unchanged_across_nodes(lab, st):
    for src, dst in (("x/a", "y/b"), ("z/c", "x/a"), ("y/a", "y/b")):
        s, d = pod(st, src), pod(st, dst)
        tcp = talk(lab, src, v6(d["ips"]), 80)
        assert (tcp["peer"], tcp["server"]) == (v6(s["ips"]), v6(d["ips"])), (src, dst, tcp)
        answer = udp(lab, src, v6(d["ips"]), 53)
        assert (answer["peer"], answer["server"]) == (v6(s["ips"]), v6(d["ips"]))
        # and IPv4 beside it, as before
        assert talk(lab, src, d["ip"], 80)["peer"] == s["ip"]


def test_full_size_ipv6_tcp_across_nodes_does_not_stall(lab, st):
    src, dst = pod(st, "x/a"), pod(st, "z/b")
    assert src["node"] != dst["node"]
    n = 4 * 1024 * 1024
    res = talk(lab, "x/a", v6(dst["ips"]), 80, n)
    assert (res["peer"], res["count"]) == (v6(src["ips"]), n)
    ns = lab.pod_netns("x/a")
    assert "mtu 1450" in in_ns(ns, "ip", "link", "show", "eth0").stdout
    # a full-size IPv6 packet (1450 bytes: 40 IPv6 + 8 ICMPv6 + 1402) crosses the tunnel whole,
    # without fragmentation (-M do), and one byte more does not fit the pod's MTU
    ping = ("ping", "-6", "-n", "-c", "2", "-W", "2", "-M", "do")
    assert in_ns(ns, *ping, "-s", "1402", v6(dst["ips"]), check=False).returncode == 0
    big = in_ns(ns, *ping, "-s", "1403", v6(dst["ips"]), check=False)
    assert big.returncode != 0 and "too long" in (big.stdout + big.stderr).lower(), big


def test_pod_to_external_over_ipv6_is_masqueraded_to_the_nodes_ipv6_address(lab, st):
    nodes = {n["name"]: n for n in st["nodes"]}
    for p in st["pods"][:3]:
        res = talk(lab, f"{p['namespace']}/{p['name']}", EXTERNAL_IP6, EXTERNAL_PORT)
        assert res["peer"] == v6(nodes[p["node"]]["ips"]), (p, res)
        assert res["server"] == EXTERNAL_IP6


# ---- NetworkPolicy: the same matrices on IPv6 as on IPv4 ------------------------------------


def converge_both(lab, want: dict, timeout: float = 20.0) -> tuple[dict, dict]:
    """Probe both families until each matrix equals `want`; returns the last of each."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        lab.flush_conntrack()
        got4, got6 = lab.probe(timeout=1.0, family=4), lab.probe(timeout=1.0, family=6)
        if (got4 == want and got6 == want) or time.monotonic() > deadline:
            return got4, got6
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(lab, st):
    nss = [{"metadata": {"name": ns, "labels": {"ns": ns}}} for ns in NAMESPACES]
    docs = []
    for ns in NAMESPACES:
        for p in PODS:
            rec = pod(st, f"{ns}/{p}")
            doc = pod_doc(ns, p, {"pod": p}, rec["ip"])
            doc["status"]["podIPs"] = [{"ip": a} for a in rec["ips"]]
            docs.append(doc)
    return {"namespaces": nss, "pods": docs}


def run_both(lab, world, tmp_path, policies, want):
    ref = evaluate(world["namespaces"], world["pods"], policies)
    assert ref == want, "the matrix and the reference evaluator disagree: " + diff(ref, want)
    f = tmp_path / "policies.yaml"
    f.write_text(yaml.safe_dump_all(policies))
    if policies:
        lab.apply([str(f)], log=lambda *_: None)
    try:
        got4, got6 = converge_both(lab, want)
        assert got6 == want, "IPv6: " + diff(got6, want)
        assert got4 == want, "IPv4: " + diff(got4, want)
    finally:
        if policies:
            lab.delete([str(f)], log=lambda *_: None)


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_policy_scenario_on_both_families(lab, world, tmp_path, name):
    policies, rule = SCENARIOS[name]
    run_both(lab, world, tmp_path, policies, matrix(rule))


def test_ipv6_ip_block_with_except(lab, world, st, tmp_path):
    """Into x only from the IPv6 cluster CIDR except node1's IPv6 pods: IPv6 from node1 is
    blocked, every other IPv6 source allowed; IPv4 (no IPv4 block) is blocked altogether."""
    node_of = {f"{p['namespace']}/{p['name']}": p["node"] for p in st["pods"]}
    v6cidr = next(n["podCIDRs"][1] for n in st["nodes"] if n["name"] == "node1")
    pol = netpol(
        "v6block",
        "x",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/56", "except": [v6cidr]}}]}],
        },
    )
    f = tmp_path / "v6block.yaml"
    f.write_text(yaml.safe_dump(pol))
    lab.apply([str(f)], log=lambda *_: None)
    try:
        want6 = matrix(
            lambda sn, sp, dn, dp, port, proto: dn != "x" or node_of[f"{sn}/{sp}"] != "node1"
        )
        want4 = matrix(lambda sn, sp, dn, dp, port, proto: dn != "x")
        import time

        deadline = time.monotonic() + 20
        while True:
            lab.flush_conntrack()
            got4, got6 = lab.probe(timeout=1.0, family=4), lab.probe(timeout=1.0, family=6)
            if (got4, got6) == (want4, want6) or time.monotonic() > deadline:
                break
        assert got6 == want6, "IPv6: " + diff(got6, want6)
        assert got4 == want4, "IPv4: " + diff(got4, want4)
        # traced through the live pipelines (no packet sent), per family, as probed
        assert lab.reachability(family=6) == want6
        assert lab.reachability(family=4) == want4
        cli = subprocess.run(
            [sys.executable, "-m", "ovsctl.cli", "lab", "reachability", "--name", lab.name]
            + ["--family", "6", "--json"],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == want6
    finally:
        lab.delete([str(f)], log=lambda *_: None)


# ---- Services -------------------------------------------------------------------------------


def test_require_dual_stack_service_on_both_cluster_ips_and_its_node_port_over_ipv6(
    lab, st, tmp_path
):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web2", "namespace": "y"},
        "spec": {
            "type": "NodePort",
            "ipFamilyPolicy": "RequireDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
            "selector": {"pod": "a"},
            "ports": [
                {"name": "web", "port": 8080, "targetPort": 80, "nodePort": 30680},
                {"name": "dns", "port": 5353, "targetPort": 53, "protocol": "UDP"},
            ],
        },
    }
    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump(svc))
    lab.apply([str(f)], log=lambda *_: None)
    try:
        got = next(s for s in lab.services() if s["name"] == "web2")
        assert len(got["clusterIPs"]) == 2, got
        vip4, vip6 = got["clusterIPs"]
        assert netaddr.IPAddress(vip4) in netaddr.IPNetwork("10.96.0.0/16")
        assert netaddr.IPAddress(vip6) in netaddr.IPNetwork("fd00:10:96::/112")
        endpoint = pod(st, "y/a")
        for fam, vip, mine in ((4, vip4, endpoint["ip"]), (6, vip6, v6(endpoint["ips"]))):

            def svc_probe(fam=fam):
                res = lab.probe(timeout=1.0, services=True, family=fam)
                return {k: v for k, v in res.items() if "->svc:" in k}

            wait_for(
                lambda svc_probe=svc_probe: all(svc_probe().values()),
                20,
                interval=0.2,
                what=f"every pod reaching the Service on its IPv{fam} ClusterIP",
            )
            res = svc_probe()
            assert len(res) == 9 * 2 and all(res.values()), res
            # the endpoint sees the client's own address (no SNAT inside the cluster)
            client = pod(st, "x/b")
            seen = talk(lab, "x/b", vip, 8080)
            want_peer = client["ip"] if fam == 4 else v6(client["ips"])
            assert (seen["peer"], seen["server"]) == (want_peer, mine), (fam, seen)
        # the NodePort from the external host, on every node's IPv6 (and IPv4) address
        targets = [
            {"key": f"{n['name']}/{a}", "ip": a, "port": 30680, "proto": "TCP"}
            for n in st["nodes"]
            for a in n["ips"]
        ]
        wait_for(
            lambda: all(lab.probe_from_external(targets, timeout=1.0).values()),
            20,
            interval=0.2,
            what="the node port answering the external host on every node, both families",
        )
    finally:
        lab.delete([str(f)], log=lambda *_: None)


# ---- traces ---------------------------------------------------------------------------------


def test_trace_pod_to_pod_and_to_a_service_over_ipv6(lab, st, tmp_path):
    dst = pod(st, "y/b")
    t = lab.trace("x/a", v6(dst["ips"]), "tcp", 80)
    assert t.verdict == "delivered", t.to_dict()
    cli = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "trace", "--name", lab.name, "--json"]
        + ["x/a", v6(dst["ips"]), "--dport", "80"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["verdict"] == "delivered"
    # pod names on both ends: --family picks the IPv6 addresses (IPv4 by default)
    t6 = lab.trace("x/a", "y/b", "tcp", 80, family=6)
    assert (t6.verdict, t6.src.ip, t6.dst.ip) == (
        "delivered",
        v6(pod(st, "x/a")["ips"]),
        v6(dst["ips"]),
    )
    assert lab.trace("x/a", "y/b", "tcp", 80).dst.ip == dst["ips"][0]
    cli = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "trace", "--name", lab.name, "--json"]
        + ["x/a", "y/b", "--dport", "80", "--family", "6"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["verdict"] == "delivered"
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tr6", "namespace": "z"},
        "spec": {
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv6"],
            "selector": {"pod": "c"},
            "ports": [{"port": 8080, "targetPort": 80}],
        },
    }
    f = tmp_path / "tr6.yaml"
    f.write_text(yaml.safe_dump(svc))
    lab.apply([str(f)], log=lambda *_: None)
    try:
        vip = next(s for s in lab.services() if s["name"] == "tr6")["clusterIP"]
        assert ":" in vip, vip

        def traced():
            return lab.trace("x/a", vip, "tcp", 8080)

        # until the Service's flows are in, the packet goes to the gateway (delivered to the
        # node, no Service on the way): wait for the traced DNAT to the endpoint
        wait_for(
            lambda: (lambda t: t.verdict == "delivered" and t.service)(traced()),
            20,
            interval=0.2,
            what="trace to tr6 through the Service",
        )
        t = traced()
        assert t.service["endpoint_pod"] == "z/c", t.to_dict()
        assert t.verdict == "delivered" and t.service["endpoint"].startswith("[fd00:10:244:")
    finally:
        lab.delete([str(f)], log=lambda *_: None)


# ---- attacks: what a pod may not send -------------------------------------------------------


class Listener:
    """seckit.py listen in a namespace (sniffing an interface for markers)."""

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

    def saw(self, token: str) -> bool:
        return any(f"OVSCTLSEC-{token}" in ln for ln in list(self.lines))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def mac_of(netns: str, ifname: str) -> str:
    return json.loads(in_ns(netns, "ip", "-j", "link", "show", ifname).stdout)[0]["address"]


def seckit(netns: str, *args) -> None:
    in_ns(netns, sys.executable, SECKIT, *map(str, args))


def test_ipv6_attacks_from_a_pod_are_dropped(lab, st):
    """x/a (the attacker) sends, with an AF_PACKET socket: UDP from another pod's IPv6
    address, UDP from a link-local address not its own, a Neighbor Advertisement claiming the
    gateway's and a neighbour pod's IPv6 addresses, and a Router Advertisement. Listeners sniff
    the neighbour pod's eth0 and the node's gateway port. After the attacks, genuine packets
    (from the attacker's own global and link-local addresses) arrive at both listeners: only
    then is "the forged ones did not" asserted."""
    attacker = pod(st, "x/a")
    node = attacker["node"]
    neighbour = next(
        p for p in st["pods"] if p["node"] == node and p is not attacker
    )  # a pod on the same node
    nb_key = f"{neighbour['namespace']}/{neighbour['name']}"
    meta = lab.meta()["nodes"][node]
    node_ns, gw_if = meta["netns"], "ovsctl-gw0"
    gw_mac = mac_of(node_ns, gw_if)
    gw6 = str(netaddr.IPNetwork(meta["podCIDRs"][1]).network + 1)
    gw_ll = link_local(gw_mac)
    ans = lab.pod_netns("x/a")
    my_mac, nb_mac = mac_of(ans, "eth0"), mac_of(lab.pod_netns(nb_key), "eth0")
    my6, nb6 = v6(attacker["ips"]), v6(neighbour["ips"])
    assert my6 != nb6 and gw_ll != link_local(my_mac)
    other = next(p for p in st["pods"] if p["node"] != node)  # someone elsewhere to impersonate
    tag = uid(6)
    at_nb = Listener(lab.pod_netns(nb_key), "--sniff", "eth0")
    at_gw = Listener(node_ns, "--sniff", gw_if)
    try:
        # spoofed global source, to the neighbour (same node) and through the gateway
        seckit(
            ans,
            "frame6",
            "eth0",
            nb_mac,
            my_mac,
            v6(other["ips"]),
            nb6,
            7001,
            f"OVSCTLSEC-{tag}-spoof",
        )
        seckit(
            ans,
            "frame6",
            "eth0",
            gw_mac,
            my_mac,
            v6(other["ips"]),
            EXTERNAL_IP6,
            7001,
            f"OVSCTLSEC-{tag}-spoofgw",
        )
        # spoofed link-local source (the neighbour's), to the gateway's link-local address
        seckit(
            ans,
            "frame6",
            "eth0",
            gw_mac,
            my_mac,
            link_local(nb_mac),
            gw_ll,
            7001,
            f"OVSCTLSEC-{tag}-ll",
        )
        # forged Neighbor Advertisements: "the gateway / the neighbour is at my MAC"
        for target in (gw6, nb6):
            seckit(
                ans,
                "na",
                "eth0",
                "33:33:00:00:00:01",
                my_mac,
                link_local(my_mac),
                "ff02::1",
                target,
                f"OVSCTLSEC-{tag}-na",
            )
            seckit(ans, "na", "eth0", nb_mac, my_mac, my6, nb6, target, f"OVSCTLSEC-{tag}-na")
            seckit(ans, "na", "eth0", gw_mac, my_mac, my6, gw6, target, f"OVSCTLSEC-{tag}-na")
        # a Router Advertisement, to all nodes and to the neighbour
        for dmac, dst in (("33:33:00:00:00:01", "ff02::1"), (nb_mac, link_local(nb_mac))):
            seckit(
                ans,
                "ra",
                "eth0",
                dmac,
                my_mac,
                link_local(my_mac),
                dst,
                "fd00:bad::",
                f"OVSCTLSEC-{tag}-ra",
            )
        # genuine: from my own global address to the neighbour, and to the node through the
        # gateway; from my own link-local address to the gateway's
        seckit(ans, "frame6", "eth0", nb_mac, my_mac, my6, nb6, 7001, f"OVSCTLSEC-{tag}-ok")
        node6 = v6(next(n["ips"] for n in st["nodes"] if n["name"] == node))
        seckit(ans, "frame6", "eth0", gw_mac, my_mac, my6, node6, 7001, f"OVSCTLSEC-{tag}-okgw")
        seckit(
            ans,
            "frame6",
            "eth0",
            gw_mac,
            my_mac,
            link_local(my_mac),
            gw_ll,
            7001,
            f"OVSCTLSEC-{tag}-okll",
        )
        wait_for(lambda: at_nb.saw(f"{tag}-ok"), 10, what="the genuine packet at the neighbour")
        wait_for(lambda: at_gw.saw(f"{tag}-okgw"), 10, what="the genuine packet at the gateway")
        wait_for(lambda: at_gw.saw(f"{tag}-okll"), 10, what="the genuine link-local packet")
        forged = [
            ln
            for ln in at_nb.lines + at_gw.lines
            if f"OVSCTLSEC-{tag}-" in ln and not ln.split(f"OVSCTLSEC-{tag}-")[1].startswith("ok")
        ]
        assert forged == [], forged
        # the neighbour still has the gateway at the gateway's MAC (no forged NA took hold)
        neigh = in_ns(lab.pod_netns(nb_key), "ip", "-6", "neigh", "show", gw6).stdout
        assert my_mac not in neigh, neigh
        # and no route from the forged RA
        routes = in_ns(lab.pod_netns(nb_key), "ip", "-6", "route").stdout
        assert "fd00:bad" not in routes, routes
    finally:
        at_nb.close()
        at_gw.close()
