"""OVS's own multipath spreads new connections of one client (issue 18): the ServiceLB flows
flows/services.py makes for a ClusterIP and a LoadBalancer ingress address with three
endpoints, installed on a private ovs-vswitchd (userspace datapath), and 300 new TCP and 300
new UDP connections of one client (a new source port each) traced through them with
ofproto/trace: the endpoint index OVS's hash (symmetric_l4 for TCP, symmetric_l3l4+udp for
UDP) writes into reg3 takes each of the three values for at least 15 % of them. With
symmetric_l4 for UDP every one would take the same value (its ports are not hashed): the
test names that too. Real packets over real endpoints: the lab's e2e."""

from __future__ import annotations

import collections
import os
import re
import shutil
import tempfile

import pytest

from flows import services
from flows.flow import Multipath
from flows.services import Endpoint, Service, ServicePort
from ovsctl.lab.ovsproc import OVS

PORTS = (ServicePort("http", 80, "TCP", 8080), ServicePort("dns", 53, "UDP", 5353))
TARGETS = (("http", 8080, "TCP"), ("dns", 5353, "UDP"))
SVC = Service("default", "web", "10.96.0.10", PORTS, None, type="LoadBalancer",
              lb_ingress=("172.30.0.200",))  # fmt: skip
EPS = [Endpoint(ip, TARGETS) for ip in ("10.244.0.2", "10.244.1.3", "10.244.2.4")]


@pytest.fixture(scope="module")
def switch():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (OVS)")
    d = tempfile.mkdtemp(prefix="ovt-balance-", dir="/tmp")
    ovs = OVS(os.path.join(d, "ovs"))
    try:
        ovs.start()
        ovs.vsctl("add-br", "brbal", "--", "set", "bridge", "brbal", "datapath_type=netdev")
        yield ovs, d
    finally:
        ovs.stop()
        shutil.rmtree(d, ignore_errors=True)


def install(ovs: OVS, d: str, lb_flows) -> None:
    """The ServiceLB flows in table 0, their goto to EndpointDNAT an output (nothing else is
    needed to see reg3)."""
    lines = [
        f.text().replace("table=35", "table=0").replace("goto_table:36", "output:LOCAL")
        for f in lb_flows
    ]
    path = os.path.join(d, "flows.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    ovs.ofctl("-O", "OpenFlow15", "del-flows", "brbal")
    ovs.ofctl("-O", "OpenFlow15", "add-flows", "brbal", path)


def picks(ovs: OVS, proto: str, dst: str, dport: int, n: int = 300) -> collections.Counter:
    """reg3 after the ServiceLB flow, for n new connections of one client."""
    out = collections.Counter()
    for sport in range(41000, 41000 + n):
        text = ovs.appctl(
            "ofproto/trace", "brbal",
            f"{proto},in_port=LOCAL,nw_src=172.30.0.100,nw_dst={dst},"
            f"{proto}_src={sport},{proto}_dst={dport}",
        )  # fmt: skip
        m = re.search(r"Final flow: .*?\breg3=(0x[0-9a-f]+)", text)
        out[int(m.group(1), 16) if m else 0] += 1
    return out


@pytest.mark.parametrize("dst", ["10.96.0.10", "172.30.0.200"])
@pytest.mark.parametrize("proto, dport", [("tcp", 80), ("udp", 53)])
def test_new_connections_of_one_client_spread_over_three_endpoints(switch, dst, proto, dport):
    ovs, d = switch
    flows = services.service_flows(SVC, EPS, "10.244.0.0/24")
    install(ovs, d, [f for f in flows if f.table == "ServiceLB"])
    counts = picks(ovs, proto, dst, dport)
    assert set(counts) == {0, 1, 2}, counts
    assert all(c >= 45 for c in counts.values()), counts


def test_udp_hashed_without_its_ports_would_not_spread(switch):
    ovs, d = switch
    flows = services.service_flows(SVC, EPS, "10.244.0.0/24")
    lb = [f for f in flows if f.table == "ServiceLB" and "udp" in f.text()]
    bad = []
    for f in lb:  # the same flows with symmetric_l4, which leaves UDP ports out
        acts = tuple(
            Multipath(a.n_links, a.reg, a.bits, "symmetric_l4") if isinstance(a, Multipath) else a
            for a in f.actions
        )
        bad.append(type(f)(f.table, f.priority, f.match, acts, f.cookie))
    install(ovs, d, bad)
    assert len(picks(ovs, "udp", "10.96.0.10", 53, 40)) == 1
