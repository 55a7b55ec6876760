"""IPv6 and dual-stack pipelines run in memory (issue 16): the flows a dual-stack node installs,
IPv6 packets through them with tests/fakes/oftable.py, beside IPv4 packets through the same
flows.

Pod to pod on both families (routed with the hop limit decremented, switched), the overlay,
the spoof guard (source address, link-local, forged ND, RA, Redirect, DHCPv6 replies), the
Neighbor Solicitations OVS answers (pods, the gateway as a router, remote pods for the host),
DAD probes left unanswered, conntrack and the hairpin NAT on IPv6.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from flows import pipeline
from flows.flow import CT
from flows.model import (
    HAIRPIN_IP6,
    VIRTUAL_ROUTER_MAC,
    NodeNet,
    Overlay,
    PodPort,
    RemoteNode,
    link_local,
    mac_from_ip,
)
from tests.fakes.oftable import (
    ETH_IPV6,
    FakeNetwork,
    FakeOFTable,
    icmp,
    icmp6,
    neighbor_advert,
    neighbor_solicitation,
    tcp,
    udp,
)

NODE = NodeNet.for_cidrs(
    ("10.244.0.0/24", "fd00:10:244::/64"), gw_ofport=2, node_ips=("192.168.50.10",)
)
NODE2 = NodeNet.for_cidrs(
    ("10.244.1.0/24", "fd00:10:244:1::/64"), gw_ofport=2, node_ips=("192.168.50.11",)
)
OVERLAY = Overlay(1, "10.244.0.0/16", ("10.244.0.0/16", "fd00:10:244::/56"))
REMOTE = RemoteNode("node-b", NODE2.pod_cidr, NODE2.node_ip, NODE2.pod_cidrs)
BACK = RemoteNode("node-a", NODE.pod_cidr, NODE.node_ip, NODE.pod_cidrs)
GW = NODE.gw_mac
GW6 = NODE.gw_ip_of(NODE.families[1])


def pod(name: str, ofport: int, ip4: str, ip6: str) -> PodPort:
    return PodPort(f"{name:0>8}/eth0", ofport, ip4, mac_from_ip(ip4), "default", name, (ip4, ip6))


A = pod("a", 3, "10.244.0.2", "fd00:10:244::2")
B = pod("b", 4, "10.244.0.3", "fd00:10:244::3")
FAR = pod("far", 3, "10.244.1.5", "fd00:10:244:1::5")


def flows_of(node=NODE, pods=(A, B), remotes=(REMOTE,)) -> frozenset:
    out = pipeline.node_flows(node, OVERLAY)
    for p in pods:
        out |= pipeline.pod_flows(node, p)
    for r in remotes:
        out |= pipeline.remote_node_flows(node, OVERLAY, r)
    return out


def fake() -> FakeOFTable:
    return FakeOFTable(flows_of(), tunnel_ports={OVERLAY.tun_ofport})


_sport = itertools.count(40000)


def syn6(src: PodPort, dst_ip: str, dport: int = 80, eth_dst: str = GW, **kw):
    return tcp(src.ofport, src.mac, eth_dst, src.ips[1], dst_ip, next(_sport), dport, **kw)


# -- pod to pod, both families ----------------------------------------------------------------


@pytest.mark.parametrize("fam", [0, 1], ids=["IPv4", "IPv6"])
def test_routed_pod_to_pod_on_both_families_and_the_reply_is_established(fam):
    sw = fake()
    first = tcp(A.ofport, A.mac, GW, A.ips[fam], B.ips[fam], next(_sport), 80)
    res = sw.run(first)
    out = res.out(B.ofport)
    assert (out.eth_src, out.eth_dst, out.ttl) == (GW, B.mac, 63), res
    assert (out.ip_src, out.ip_dst) == (A.ips[fam], B.ips[fam])
    assert out.is_ipv6 == (fam == 1)
    back = sw.run(first.reply(B.ofport, B.mac, GW))
    assert back.out(A.ofport).ip_dst == A.ips[fam]
    state = next(s.flow for s in back.steps if s.table == "ConntrackState")
    assert dict(state.match)["ct_state"] == "+est+trk", back


def test_hop_limit_decremented_and_one_dropped():
    sw = fake()
    assert sw.run(syn6(A, B.ips[1], ttl=64)).out(B.ofport).ttl == 63
    res = sw.run(syn6(A, B.ips[1], ttl=1))
    assert res.dropped and res.drop_table == "L3Forwarding"
    assert any("invalid_ttl" in n for n in res.notes), res


def test_switched_ipv6_keeps_its_hop_limit():
    out = fake().run(syn6(A, B.ips[1], eth_dst=B.mac)).out(B.ofport)
    assert out.ttl == 64 and out.eth_src == A.mac


def test_ping6_from_the_pods_link_local_to_the_gateway_mac_is_delivered_to_the_host():
    # MLD, RS and ND use the link-local source; the host sees them through the gateway port
    ll = link_local(A.mac)
    res = fake().run(icmp6(A.ofport, A.mac, GW, ll, GW6))
    assert res.output_ports == [NODE.gw_ofport], res


def test_router_solicitation_from_the_link_local_passes_the_guard():
    res = fake().run(icmp6(A.ofport, A.mac, "33:33:00:00:00:02", link_local(A.mac), "ff02::2", 133))
    assert "ARPResponder" in res.tables and res.drop_table != "SpoofGuard", res


def test_the_host_reaches_a_pod_over_ipv6_and_the_echo_reply_comes_back():
    sw = fake()
    ping = icmp(NODE.gw_ofport, GW, GW, GW6, B.ips[1])
    out = sw.run(ping).out(B.ofport)
    assert out.eth_dst == B.mac and out.icmp_type == 128 and out.ttl == 63
    back = sw.run(ping.reply(B.ofport, B.mac, GW))
    assert back.out(NODE.gw_ofport).icmp_type == 129


# -- the spoof guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, why",
    [
        ({"ip_src": "fd00:10:244::99"}, "another global address"),
        ({"ip_src": B.ips[1]}, "a neighbour's global address"),
        ({"ip_src": link_local(B.mac)}, "a neighbour's link-local"),
        ({"ip_src": "fe80::1"}, "another link-local"),
        ({"eth_src": "0a:58:0a:f4:00:63"}, "another MAC"),
        ({"vlan_tci": 0x1000 | 7}, "an 802.1Q tag"),
    ],
)
def test_spoofed_ipv6_is_dropped_in_spoof_guard(change, why):
    res = fake().run(replace(syn6(A, B.ips[1]), **change))
    assert res.dropped and res.drop_table == "SpoofGuard", f"{why}: {res}"


def test_a_pod_may_send_from_its_link_local_address():
    res = fake().run(replace(syn6(A, B.ips[1], eth_dst=B.mac), ip_src=link_local(A.mac)))
    assert res.drop_table != "SpoofGuard", res


@pytest.mark.parametrize(
    "pkt, why",
    [
        (
            icmp6(3, A.mac, "33:33:00:00:00:01", link_local(A.mac), "ff02::1", 134),
            "Router Advertisement",
        ),
        (icmp6(3, A.mac, B.mac, link_local(A.mac), B.ips[1], 137), "Redirect"),
        (
            udp(3, A.mac, B.mac, link_local(A.mac), link_local(B.mac), 547, 546),
            "DHCPv6 server reply",
        ),
        (
            neighbor_advert(3, A.mac, A.ips[1], A.ips[1], tll=B.mac),
            "NA with another MAC",
        ),
        (
            neighbor_advert(3, A.mac, A.ips[1], B.ips[1]),
            "NA for a neighbour's address, from the pod's own",
        ),
        (
            neighbor_solicitation(3, A.mac, A.ips[1], B.ips[1], sll=B.mac),
            "NS with another MAC",
        ),
        (
            neighbor_advert(3, A.mac, B.ips[1], B.ips[1]),
            "NA from a neighbour's address",
        ),
        (
            neighbor_solicitation(3, A.mac, "::", A.ips[1], sll=""),
            "DAD probe (nobody answers it: DAD succeeds)",
        ),
    ],
)
def test_router_and_forged_neighbour_messages_from_a_pod_are_dropped(pkt, why):
    res = fake().run(pkt)
    assert res.dropped and res.drop_table == "SpoofGuard", f"{why}: {res}"
    rule = res.steps[-1].flow
    assert rule.priority > 0 or why.startswith("NA from"), f"{why}: dropped by the miss"


def test_a_pods_own_advertisement_passes_the_guard():
    for pkt in (
        neighbor_advert(3, A.mac, A.ips[1], A.ips[1]),
        neighbor_advert(3, A.mac, link_local(A.mac), A.ips[1], tll=""),
    ):
        res = fake().run(pkt)
        assert "ARPResponder" in res.tables, res


# -- Neighbor Discovery answered in OVS ---------------------------------------------------------


@pytest.mark.parametrize(
    "src_ip", [A.ips[1], link_local(A.mac)], ids=["from-global", "from-link-local"]
)
@pytest.mark.parametrize(
    "target, mac, flags",
    [(B.ips[1], B.mac, 0x60000000), (GW6, GW, 0xE0000000)],
    ids=["pod", "gateway"],
)
def test_neighbor_solicitation_is_answered_on_the_in_port(src_ip, target, mac, flags):
    ns = neighbor_solicitation(A.ofport, A.mac, src_ip, target)
    res = fake().run(ns)
    out = res.out(A.ofport)
    assert out.eth_type == ETH_IPV6 and out.icmp_type == 136 and out.icmp_code == 0
    assert (out.eth_src, out.eth_dst) == (mac, A.mac)
    assert (out.ip_src, out.ip_dst) == (target, src_ip)
    assert (out.nd_target, out.nd_tll, out.nd_sll) == (target, mac, "")
    assert out.nd_reserved == flags  # R for the gateway; S and O
    assert [s.table for s in res.steps][-2:] == ["ARPResponder", "NDReply"], res


def test_a_unicast_solicitation_is_answered_too():
    ns = neighbor_solicitation(A.ofport, A.mac, A.ips[1], GW6, eth_dst=GW, ip_dst=GW6)
    assert fake().run(ns).out(A.ofport).nd_tll == GW


def test_the_hosts_solicitations_for_pods_and_for_remote_pods():
    sw = fake()
    local = sw.run(neighbor_solicitation(NODE.gw_ofport, GW, GW6, B.ips[1])).out(NODE.gw_ofport)
    assert (local.eth_src, local.nd_tll, local.ip_src) == (B.mac, B.mac, B.ips[1])
    far = sw.run(neighbor_solicitation(NODE.gw_ofport, GW, GW6, FAR.ips[1])).out(NODE.gw_ofport)
    assert (far.eth_src, far.nd_tll) == (VIRTUAL_ROUTER_MAC, VIRTUAL_ROUTER_MAC)
    assert (far.ip_src, far.ip_dst, far.nd_target) == (FAR.ips[1], GW6, FAR.ips[1])
    assert far.nd_reserved == 0xE0000000
    # a pod asking for a remote pod is not answered (its route goes to the gateway)
    res = sw.run(neighbor_solicitation(A.ofport, A.mac, A.ips[1], FAR.ips[1]))
    assert res.dropped


def test_dad_probes_are_never_answered():
    # the host checking its gateway address before using it must not hear it is taken
    dad = neighbor_solicitation(NODE.gw_ofport, GW, "::", GW6, sll="")
    res = fake().run(dad)
    assert res.dropped and res.drop_table == "ARPResponder", res
    dad_pod = neighbor_solicitation(NODE.gw_ofport, GW, "::", B.ips[1], sll="")
    assert fake().run(dad_pod).dropped


def test_an_unknown_target_is_not_answered():
    res = fake().run(neighbor_solicitation(A.ofport, A.mac, A.ips[1], "fd00:10:244::77"))
    assert res.dropped and res.drop_table == "L2Forwarding"


# -- overlay ------------------------------------------------------------------------------------


def test_ipv6_to_a_remote_pod_goes_into_the_tunnel_and_arrives():
    net = FakeNetwork()
    net.add_node(NODE.node_ip, fake(), OVERLAY.tun_ofport)
    far_sw = FakeOFTable(flows_of(NODE2, (FAR,), (BACK,)), tunnel_ports={OVERLAY.tun_ofport})
    net.add_node(NODE2.node_ip, far_sw, OVERLAY.tun_ofport)
    first = syn6(A, FAR.ips[1])
    (got,), results = net.send(NODE.node_ip, first)
    assert results[0].out(OVERLAY.tun_ofport).tun_dst == NODE2.node_ip
    assert (got.node, got.port) == (NODE2.node_ip, FAR.ofport)
    assert (got.packet.ip_src, got.packet.ip_dst, got.packet.ttl) == (A.ips[1], FAR.ips[1], 63)
    (back,), _ = net.send(NODE2.node_ip, first.reply(FAR.ofport, FAR.mac, NODE2.gw_mac))
    assert (back.node, back.port, back.packet.ip_dst) == (NODE.node_ip, A.ofport, A.ips[1])


def test_ipv6_from_the_tunnel_only_from_known_nodes_and_never_back_into_it():
    sw = fake()
    pkt = tcp(OVERLAY.tun_ofport, REMOTE.gw_mac, GW, FAR.ips[1], B.ips[1], 5555, 80)
    pkt = replace(pkt, tun_src=REMOTE.node_ip, tun_dst=NODE.node_ip)
    assert sw.run(pkt).out(B.ofport).ttl == 63
    assert sw.run(replace(pkt, tun_src="192.168.50.99")).drop_table == "Classifier"
    assert sw.run(replace(pkt, ip_dst="fd00:10:244:1::9")).drop_table == "L3Forwarding"


# -- conntrack and NAT --------------------------------------------------------------------------


def test_ipv6_and_ipv4_connections_are_tracked_apart():
    sw = fake()
    sw.run(syn6(A, B.ips[1], eth_dst=B.mac))
    sw.run(tcp(A.ofport, A.mac, B.mac, A.ip, B.ip, 1234, 80))
    conns = sw.conntrack.in_zone(pipeline.CT_ZONE)
    assert len(conns) == 2 and all(c.committed for c in conns)


def test_hairpin_on_ipv6_snats_to_the_ipv6_hairpin_address():
    flows = {f for f in pipeline.pod_flows(NODE, A) if f.table == "HairpinSNAT"}
    nats = sorted(a.nat for f in flows for a in f.actions if isinstance(a, CT))
    assert nats == ["src=169.254.169.252", f"src={HAIRPIN_IP6}"]
    sw = fake()
    out = sw.run(syn6(A, A.ips[1])).out(A.ofport)
    assert (out.ip_src, out.ip_dst) == (HAIRPIN_IP6, A.ips[1])
    assert out.is_ipv6


def test_an_ipv4_only_node_drops_a_pods_ipv6_in_spoof_guard():
    node4 = NodeNet.for_cidr("10.244.0.0/24", 2, "192.168.50.10")
    a4 = PodPort(A.key, A.ofport, A.ip, A.mac)
    sw = FakeOFTable(pipeline.node_flows(node4) | pipeline.pod_flows(node4, a4))
    res = sw.run(tcp(3, A.mac, GW, A.ips[1], B.ips[1], 1, 80))
    assert res.drop_table == "SpoofGuard" and res.steps[-1].flow.priority == 0
    assert not [f for f in sw.flows() if f.table == "NDReply"]
