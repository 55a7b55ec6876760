"""The IPv6 pipeline on a real switch (issue 16): a private OVS (userspace datapath) in its own
network namespace, a dual-stack gateway port and two dual-stack pods in their own namespaces,
and the flows of flows/pipeline.py installed by the agent's own Controller (our encoder, one
bundle), with no agent: the pipeline is driven directly.

Shown with real packets: the installed flows are exactly what ovs-ofctl prints for them; a pod
resolves its IPv6 gateway (a router) and another pod through the Neighbor Advertisements OVS
makes; pods ping and talk TCP over IPv6 (and IPv4) on one node, and by link-local; the host
reaches a pod over IPv6; a spoofed IPv6 source and a forged Neighbor Advertisement never reach
the other pod.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from flows import pipeline, services
from flows.model import NodeNet, PodPort, link_local, mac_from_ip
from flows.owners import Pipeline
from ovsctl.lab.ovsproc import OVS
from ovsctl.tools.trace import Appctl, NodeView, Tracer, ctl_path
from tests.helpers import REPO, in_ns, netns_add, netns_del, sh, uid, wait_for

CIDRS = ("10.244.0.0/24", "fd00:10:244::/64")
NODE = NodeNet.for_cidrs(CIDRS, gw_ofport=2)
GW4, GW6 = NODE.gw_ips
PODS = {
    "a": PodPort("0000000a/eth0", 3, "10.244.0.2", mac_from_ip("10.244.0.2"), "t", "a",
                 ("10.244.0.2", "fd00:10:244::2")),
    "b": PodPort("0000000b/eth0", 4, "10.244.0.3", mac_from_ip("10.244.0.3"), "t", "b",
                 ("10.244.0.3", "fd00:10:244::3")),
}  # fmt: skip
DPID = 0x0000AA0000000001
VIP4, VIP6 = "10.96.0.10", "fd00:10:96::a"
SERVICE = services.parse_service(
    {
        "metadata": {"namespace": "t", "name": "web"},
        "spec": {
            "clusterIP": VIP4,
            "clusterIPs": [VIP4, VIP6],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "RequireDualStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }
)
ENDPOINTS = [services.Endpoint(ip, (("http", 8080, "TCP"),)) for ip in PODS["b"].ips]


def _flows() -> dict:
    owners = {Pipeline().key: pipeline.node_flows(NODE)}
    for p in PODS.values():
        owners[pipeline.pod_owner(p)] = pipeline.pod_flows(NODE, p)
    owners[services.service_owner(SERVICE)] = services.service_flows(SERVICE, ENDPOINTS, CIDRS)
    return owners


def _cluster_view() -> dict:
    """What the agent's /cluster would say of this node (the trace's names)."""
    pods = [
        {
            "namespace": p.namespace, "name": p.name, "node": "n1", "ip": p.ip,
            "ips": list(p.ips), "phase": "Running", "labels": {"app": p.name},
            "ports": [["http", 8080, "TCP"]], "ready": True, "host_network": False,
            "local": {"ofport": p.ofport, "mac": p.mac, "key": p.key},
        }
        for p in PODS.values()
    ]  # fmt: skip
    return {
        "node": "n1",
        "node_ip": "",
        "gateway": {"ip": GW4, "mac": NODE.gw_mac, "ofport": NODE.gw_ofport},
        "tunnel_ofport": None,
        "cluster_cidr": "",
        "nodes": [
            {"name": "n1", "ip": "", "pod_cidr": CIDRS[0], "ips": [], "pod_cidrs": list(CIDRS)}
        ],  # fmt: skip
        "namespaces": [{"name": "t", "labels": {}}],
        "pods": pods,
        "services": [
            {
                "namespace": "t",
                "name": "web",
                "cluster_ip": VIP4,
                "cluster_ips": [VIP4, VIP6],
                "type": "ClusterIP",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "node_port": None}],
            }
        ],  # fmt: skip
        "policies": [],
    }


INSTALL = """
import os, sys
from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync
from tests.helpers import wait_for
from tests.integration.test_ipv6_pipeline import DPID, _flows
ctl = Controller(FlowSync(), sys.argv[2], target=sys.argv[1], datapath_id=DPID)
ctl.start()
wait_for(ctl.ready.is_set, 20, what="controller connected and synced")
n = ctl.apply(_flows())
print(n, flush=True)
os._exit(0)  # the flows stay on the switch (fail_mode=secure); os-ken's threads need no join
"""


def _install(mgmt: str, state_dir: str) -> None:
    """The flows, installed by the agent's own Controller (our encoder, one bundle and a
    barrier) in a process of its own that exits once the switch has them."""
    p = sh("env", f"PYTHONPATH={REPO}", sys.executable, "-c", INSTALL, mgmt, state_dir, timeout=60)
    assert int(p.stdout.strip()) > 0, p.stdout


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, OVS)")
    tag = uid()
    ns = f"v6n{tag}"
    pod_ns = {k: f"v6{k}{tag}" for k in PODS}
    rundir = tempfile.mkdtemp(prefix=f"v6p{tag}-", dir="/tmp")
    ovs = OVS(os.path.join(rundir, "ovs"), netns=ns)
    try:
        netns_add(ns)
        ovs.start()
        ovs.vsctl(
            "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
            "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14,OpenFlow15",
            f"other_config:datapath-id={DPID:016x}",
            "--", "add-port", "br-int", "gw0", "--", "set", "interface", "gw0",
            "type=internal", f"ofport_request={NODE.gw_ofport}", f"mac=\"{NODE.gw_mac}\"",
        )  # fmt: skip
        wait_for(
            lambda: in_ns(ns, "ip", "link", "show", "gw0", check=False).returncode == 0,
            10,
            what="gw0 in the node namespace",
        )
        in_ns(ns, "ip", "link", "set", "gw0", "address", NODE.gw_mac)
        in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.gw0.accept_dad=0")
        in_ns(ns, "ip", "link", "set", "gw0", "up")
        in_ns(ns, "ip", "addr", "add", f"{GW4}/24", "dev", "gw0")
        in_ns(ns, "ip", "addr", "add", f"{GW6}/64", "dev", "gw0", "nodad")
        for k, p in PODS.items():
            pns = pod_ns[k]
            netns_add(pns)
            host_if = f"v6{k}{tag}"
            sh("ip", "link", "add", host_if, "netns", ns, "type", "veth", "peer", "eth0",
               "netns", pns)  # fmt: skip
            in_ns(ns, "ip", "link", "set", host_if, "up")
            ovs.vsctl("add-port", "br-int", host_if, "--", "set", "interface", host_if,
                      f"ofport_request={p.ofport}")  # fmt: skip
            in_ns(pns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
            in_ns(pns, "ip", "link", "set", "eth0", "address", p.mac)
            in_ns(pns, "ip", "link", "set", "eth0", "up")
            in_ns(pns, "ip", "addr", "add", f"{p.ips[0]}/24", "dev", "eth0")
            in_ns(pns, "ip", "addr", "add", f"{p.ips[1]}/64", "dev", "eth0", "nodad")
            in_ns(pns, "ip", "route", "add", "default", "via", GW4)
            in_ns(pns, "ip", "-6", "route", "add", "default", "via", GW6)
            # the userspace datapath does not fill in checksums the veth left to offload
            in_ns(pns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        _install(os.path.join(ovs.rundir, "br-int.mgmt"), rundir)
        yield {"ns": ns, "pods": pod_ns, "ovs": ovs, "rundir": ovs.rundir}
    finally:
        ovs.stop()
        for pns in pod_ns.values():
            netns_del(pns)
        netns_del(ns)
        shutil.rmtree(rundir, ignore_errors=True)


def _ping(ns: str, dst: str, *opts: str, count: int = 2) -> bool:
    p = in_ns(ns, "ping", "-c", str(count), "-W", "2", *opts, dst, check=False, timeout=30)
    return p.returncode == 0


def _neigh(ns: str, ip: str) -> str:
    return in_ns(ns, "ip", "-6", "neigh", "show", ip, "dev", "eth0").stdout


def _counted(node, table: int, needle: str, at_least: int) -> int:
    """Poll the flow's packet count until it reaches `at_least` (the userspace datapath adds
    its cached flows' hits to the OpenFlow counters a little later)."""
    return wait_for(
        lambda: (n := _n_packets(node, table, needle)) >= at_least and n,
        10,
        what=f"{at_least} packets on table {table} {needle}",
    )


def _n_packets(node, table: int, needle: str) -> int:
    out = node["ovs"].ofctl("dump-flows", "br-int", f"table={table}")
    for line in out.splitlines():
        if needle in line:
            return int(re.search(r"n_packets=(\d+)", line)[1])
    raise AssertionError(f"no flow with {needle!r} in table {table}:\n{out}")


def test_installed_flows_are_exactly_the_pipeline_as_ovs_prints_it(node):
    want = {f.text() for flows in _flows().values() for f in flows}
    got = set()
    for line in node["ovs"].ofctl("dump-flows", "br-int", "--no-stats").splitlines():
        line = re.sub(r"cookie=0x[0-9a-f]+, ", "", line.strip())
        got.add(line)
    strip = {re.sub(r"cookie=0x[0-9a-f]+, ", "", t) for t in want}
    assert got == strip, (sorted(got - strip), sorted(strip - got))
    assert any("nd_reserved" in t for t in strip) and any("ipv6_src=fe80::" in t for t in strip)


def test_a_pod_resolves_its_gateway_as_a_router_and_pings_it(node):
    a = node["pods"]["a"]
    assert _ping(a, GW6)
    neigh = _neigh(a, GW6)
    assert NODE.gw_mac in neigh and "router" in neigh, neigh


def test_pods_resolve_each_other_through_ovs_and_ping_on_both_families(node):
    a, pb = node["pods"]["a"], PODS["b"]
    assert _ping(a, pb.ips[1])
    assert pb.mac in _neigh(a, pb.ips[1])
    assert "router" not in _neigh(a, pb.ips[1])
    assert _ping(a, pb.ips[0])


def test_pods_ping_each_others_link_local(node):
    a, pb = node["pods"]["a"], PODS["b"]
    assert _ping(a, f"{link_local(pb.mac)}%eth0")


def test_the_host_reaches_a_pod_over_ipv6(node):
    assert _ping(node["ns"], PODS["b"].ips[1])


SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, peer = s.accept()
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(f"{peer[0]} {n}\\n".encode())
c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"x" * int(sys.argv[3]))
c.shutdown(socket.SHUT_WR)
print(c.makefile().readline().strip())
"""


def test_tcp_over_ipv6_between_pods_arrives_whole_with_the_source_kept(node):
    pa, pb = PODS["a"], PODS["b"]
    srv = subprocess.Popen(
        ["ip", "netns", "exec", node["pods"]["b"], sys.executable, "-c", textwrap.dedent(SERVER),
         pb.ips[1], "8080"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert srv.stdout.readline().strip() == "listening"
        n = 4 * 1024 * 1024
        out = in_ns(node["pods"]["a"], sys.executable, "-c", textwrap.dedent(CLIENT), pb.ips[1],
                    "8080", str(n), timeout=60).stdout.strip()  # fmt: skip
        assert out == f"{pa.ips[1]} {n}"
    finally:
        srv.kill()
        srv.wait()


# In pod B: every IPv6 frame from a given source, one line each, until killed.
CAPTURE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
s.bind(("eth0", 0))
want = socket.inet_pton(socket.AF_INET6, sys.argv[1])
print("ready", flush=True)
while True:
    f = s.recv(2048)
    if f[22:38] == want:
        print(f[20], flush=True)
"""


def test_a_spoofed_ipv6_source_never_reaches_the_other_pod(node):
    a, pb = node["pods"]["a"], PODS["b"]
    spoofed = "fd00:10:244::99"
    assert _ping(a, pb.ips[1])  # the path works, B's address is resolved
    in_ns(a, "ip", "-6", "neigh", "replace", pb.ips[1], "lladdr", pb.mac, "dev", "eth0",
          "nud", "permanent")  # fmt: skip
    in_ns(a, "ip", "addr", "add", f"{spoofed}/128", "dev", "eth0", "nodad")
    cap = subprocess.Popen(
        ["ip", "netns", "exec", node["pods"]["b"], sys.executable, "-c", textwrap.dedent(CAPTURE),
         spoofed],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    before_drop = _n_packets(node, 10, "priority=0")
    try:
        assert cap.stdout.readline().strip() == "ready"
        assert not _ping(a, pb.ips[1], "-I", spoofed, count=3)
        # and the capture does see a frame with that source when the switch lets one through:
        # the host (not a pod) may use any source
    finally:
        in_ns(a, "ip", "addr", "del", f"{spoofed}/128", "dev", "eth0", check=False)
        in_ns(a, "ip", "-6", "neigh", "del", pb.ips[1], "dev", "eth0", check=False)
        cap.kill()
    seen = cap.communicate()[0].split()
    assert seen == [], f"B received {len(seen)} frames from the spoofed source"
    _counted(node, 10, "priority=0", before_drop + 3)


FORGED_NA = """
import socket, struct, sys
src_mac, dst_mac, src_ip, target, tll = sys.argv[1:6]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
ip6 = lambda a: socket.inet_pton(socket.AF_INET6, a)
dst_ip = "ff02::1"
body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip6(target) + bytes([2, 1]) + mac(tll)
pseudo = ip6(src_ip) + ip6(dst_ip) + struct.pack("!I3xB", len(body), 58)
s = sum(struct.unpack("!%dH" % ((len(pseudo) + len(body)) // 2), pseudo + body))
while s >> 16:
    s = (s & 0xFFFF) + (s >> 16)
body = body[:2] + struct.pack("!H", ~s & 0xFFFF) + body[4:]
ip = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + ip6(src_ip) + ip6(dst_ip)
frame = mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x86DD) + ip + body
r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
r.bind(("eth0", 0))
for _ in range(3):
    r.send(frame)
"""


def test_a_forged_neighbor_advertisement_is_dropped_and_a_real_one_passes(node):
    a, pa, pb = node["pods"]["a"], PODS["a"], PODS["b"]
    drop = "priority=205,icmp6,icmp_type=136"
    own = f"ipv6_src={pa.ips[1]},icmp_type=136,nd_target={pa.ips[1]},nd_tll={pa.mac}"
    before_drop, before_own = _n_packets(node, 10, drop), _n_packets(node, 10, own)
    # A claims B's address is at A's MAC
    in_ns(a, sys.executable, "-c", textwrap.dedent(FORGED_NA), pa.mac, "33:33:00:00:00:01",
          pa.ips[1], pb.ips[1], pa.mac)  # fmt: skip
    assert _counted(node, 10, drop, before_drop + 3) == before_drop + 3
    # its own advertisement is admitted
    in_ns(a, sys.executable, "-c", textwrap.dedent(FORGED_NA), pa.mac, "33:33:00:00:00:01",
          pa.ips[1], pa.ips[1], pa.mac)  # fmt: skip
    assert _counted(node, 10, own, before_own + 3) == before_own + 3
    assert _n_packets(node, 10, drop) == before_drop + 3


@pytest.fixture
def tracer(node):
    t = Tracer(
        {"n1": NodeView(_cluster_view(), {"owners": {}, "desired": []})},
        {"n1": Appctl(ctl_path(node["rundir"]))},
    )
    yield t
    t.close()


@pytest.mark.parametrize("family", [4, 6])
def test_trace_pod_to_pod_on_each_family(tracer, family):
    t = tracer.trace("t/a", "t/b", "tcp", 8080, family=family)
    pa, pb = PODS["a"], PODS["b"]
    want = (pa.ips[0], pb.ips[0]) if family == 4 else (pa.ips[1], pb.ips[1])
    assert (t.src.ip, t.dst.ip) == want
    assert t.verdict == "delivered" and t.delivered_pod == "t/b", t.to_dict()
    assert ("tcp6," if family == 6 else "tcp,") in t.hops[0].packet.flow()


def test_trace_takes_the_family_of_an_address_and_icmp6(tracer):
    t = tracer.trace("t/a", PODS["b"].ips[1], "icmp")
    assert t.src.ip == PODS["a"].ips[1] and t.verdict == "delivered", t.to_dict()
    assert "icmp6," in t.hops[0].packet.flow() and "icmpv6_type=128" in t.hops[0].packet.flow()


@pytest.mark.parametrize("family, vip", [(4, VIP4), (6, VIP6)])
def test_trace_pod_to_service_on_each_family(tracer, family, vip):
    t = tracer.trace("t/a", "svc:t/web", "tcp", family=family)
    assert t.dst.ip == vip and t.dport == 80
    assert t.verdict == "delivered" and t.delivered_pod == "t/b", t.to_dict()
    ep = PODS["b"].ips[0 if family == 4 else 1]
    assert t.service["endpoint"] == (f"{ep}:8080" if family == 4 else f"[{ep}]:8080")
    assert t.service["endpoint_pod"] == "t/b"


def test_trace_of_a_spoofed_ipv6_source_drops_in_spoof_guard(tracer):
    pa = PODS["a"]
    t = tracer.trace("t/a", "t/b", "tcp", 8080, family=6)
    pkt = t.hops[0].packet
    pkt.nw_src = "fd00:10:244::99"
    h = tracer.hop("n1", pkt, "pod t/a", "trk,new")
    assert h.outcome["kind"] == "drop" and h.outcome["table"] == "SpoofGuard", h.raw
    assert pkt.in_port == pa.ofport
