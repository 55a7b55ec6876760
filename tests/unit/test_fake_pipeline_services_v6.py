"""IPv6 and dual-stack Services run in memory (issue 16): a dual-stack node's pipeline with the
Service flows, IPv6 packets to the IPv6 ClusterIP through tests/fakes/oftable.py beside IPv4
packets to the IPv4 one: DNAT to an endpoint of the ClusterIP's family, replies un-DNATed,
spreading, session affinity remembered in xxreg2, hairpin, NodePort (Cluster: SNAT to the
gateway's IPv6 address; Local: the client's address kept), the packet-in of a Service without
endpoints, and the same over two nodes through the tunnel."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from flows import pipeline, services
from flows.model import (
    HAIRPIN_IP6,
    NODEPORT_IP6,
    NODEPORT_LOCAL_IP6,
    NodeNet,
    Overlay,
    PodPort,
    RemoteNode,
    mac_from_ip,
)
from flows.services import Endpoint, Service, ServicePort
from tests.fakes.oftable import FakeNetwork, FakeOFTable, tcp, udp

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
GW6 = NODE.gw_ips[1]
CIDRS = NODE.pod_cidrs


def pod(name: str, ofport: int, ip4: str, ip6: str) -> PodPort:
    return PodPort(f"{name:0>8}/eth0", ofport, ip4, mac_from_ip(ip4), "default", name, (ip4, ip6))


A = pod("a", 3, "10.244.0.2", "fd00:10:244::2")
B = pod("b", 4, "10.244.0.3", "fd00:10:244::3")
C = pod("c", 5, "10.244.0.4", "fd00:10:244::4")
FAR = pod("far", 3, "10.244.1.5", "fd00:10:244:1::5")
VIP4, VIP6 = "10.96.0.10", "fd00:10:96::a"
HTTP = (("http", 8080, "TCP"), ("dns", 5353, "UDP"))
PORTS = (ServicePort("http", 80, "TCP", 8080, 30080), ServicePort("dns", 53, "UDP", 5353, 30053))


def svc(**kw) -> Service:
    kw.setdefault("cluster_ips", (VIP4, VIP6))
    return Service("default", "web", kw["cluster_ips"][0], PORTS, selector=None, **kw)


def eps(*pods_) -> list[Endpoint]:
    return [Endpoint(ip, HTTP) for p in pods_ for ip in p.ips]


def flows_of(extra=(), node=NODE, pods=(A, B, C), remotes=(REMOTE,)) -> frozenset:
    out = pipeline.node_flows(node, OVERLAY)
    for p in pods:
        out |= pipeline.pod_flows(node, p)
    for r in remotes:
        out |= pipeline.remote_node_flows(node, OVERLAY, r)
    return out | frozenset(extra)


def fake(extra=(), **kw) -> FakeOFTable:
    return FakeOFTable(flows_of(extra), tunnel_ports={OVERLAY.tun_ofport}, **kw)


_sport = itertools.count(41000)


def syn(src: PodPort, dst: str, dport: int = 80, fam: int = 1, **kw):
    return tcp(src.ofport, src.mac, GW, src.ips[fam], dst, next(_sport), dport, **kw)


@pytest.mark.parametrize("link, ep", [(0, B), (1, C)])
def test_the_ipv6_cluster_ip_is_dnated_to_an_ipv6_endpoint_and_the_reply_comes_from_it(link, ep):
    sw = fake(services.service_flows(svc(), eps(B, C), CIDRS), multipath=link)
    first = syn(A, VIP6)
    res = sw.run(first)
    out = res.out(ep.ofport)
    assert out.is_ipv6
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (A.ips[1], ep.ips[1], 8080), res
    assert (out.eth_dst, out.ttl) == (ep.mac, 63)
    back = sw.run(replace(first.reply(ep.ofport, ep.mac, GW), ip_src=ep.ips[1], tp_src=8080))
    out = back.out(A.ofport)
    assert (out.ip_src, out.tp_src, out.ip_dst, out.tp_dst) == (VIP6, 80, A.ips[1], first.tp_src)
    # the connection keeps its endpoint whatever the hash says next
    assert sw.run(first, multipath=1 - link).out(ep.ofport).ip_dst == ep.ips[1]


def test_both_cluster_ips_of_one_service_reach_endpoints_of_their_own_family():
    sw = fake(services.service_flows(svc(), eps(B), CIDRS))
    v4 = sw.run(syn(A, VIP4, fam=0)).out(B.ofport)
    v6 = sw.run(syn(A, VIP6)).out(B.ofport)
    assert (v4.ip_dst, v4.is_ipv6) == (B.ip, False)
    assert (v6.ip_dst, v6.is_ipv6) == (B.ips[1], True)


def test_ipv6_udp_to_the_cluster_ip():
    sw = fake(services.service_flows(svc(), eps(B), CIDRS))
    first = udp(A.ofport, A.mac, GW, A.ips[1], VIP6, 5000, 53)
    out = sw.run(first).out(B.ofport)
    assert (out.ip_dst, out.tp_dst) == (B.ips[1], 5353)


def test_new_ipv6_connections_spread_over_the_endpoints():
    sw = fake(services.service_flows(svc(), eps(B, C), CIDRS))
    picks = {tuple(sw.run(syn(A, VIP6)).output_ports) for _ in range(16)}
    assert picks == {(B.ofport,), (C.ofport,)}


def test_an_ipv6_service_without_endpoints_sends_a_packet_in_for_reject():
    flows = services.service_flows(svc(), eps(B)[:1], CIDRS)  # IPv4 endpoint only
    sw = fake(flows)
    res = sw.run(syn(A, VIP6))
    assert res.dropped and res.drop_table == "ServiceLB"
    (pin,) = res.packet_ins
    assert pin.meter_id == services.REJECT_METER
    assert (pin.packet.ip_dst, pin.packet.is_ipv6) == (VIP6, True)
    assert sw.run(syn(A, VIP4, fam=0)).out(B.ofport).ip_dst == B.ip  # IPv4 unaffected


def test_ipv6_session_affinity_keeps_the_clients_endpoint_until_it_expires():
    s = svc(affinity_timeout=60)
    sw = fake(services.service_flows(s, eps(B, C), CIDRS), multipath=1)
    assert sw.run(syn(A, VIP6)).out(C.ofport)
    (learned,) = sw.learned()
    assert learned.table == "SessionAffinity"
    assert dict(learned.match)["ipv6_src"] == A.ips[1]
    # a new connection whose hash says B still goes to C while the flow lives
    assert sw.run(syn(A, VIP6), multipath=0).output_ports == [C.ofport]
    sw.advance(61)
    assert not sw.learned()
    assert sw.run(syn(A, VIP6), multipath=0).output_ports == [B.ofport]
    sw.delete(services.service_flows(s, eps(B, C), CIDRS))
    assert not sw.learned()


def test_ipv6_affinity_tells_apart_endpoints_that_share_their_interface_id():
    # fd00:10:244::5 here and fd00:10:244:1::5 on the other node: only the whole address
    # (xxreg2) tells them apart
    near = pod("near", 6, "10.244.0.5", "fd00:10:244::5")
    s = svc(affinity_timeout=60)
    endpoints = [Endpoint(near.ips[1], HTTP), Endpoint(FAR.ips[1], HTTP)]
    flows = services.service_flows(s, endpoints, CIDRS)
    sw = FakeOFTable(flows_of(flows, pods=(A, near)), tunnel_ports={1}, multipath=0)
    first = sw.run(syn(A, VIP6))
    (to,) = first.output_ports
    for _ in range(4):
        assert sw.run(syn(A, VIP6), multipath=1).output_ports == [to]
    sw2 = FakeOFTable(flows_of(flows, pods=(A, near)), tunnel_ports={1}, multipath=1)
    other = sw2.run(syn(A, VIP6)).output_ports
    assert other != [to]
    for _ in range(4):
        assert sw2.run(syn(A, VIP6), multipath=0).output_ports == other


def test_a_pod_reaching_itself_through_the_ipv6_cluster_ip_is_hairpinned():
    sw = fake(services.service_flows(svc(), eps(A), CIDRS))
    out = sw.run(syn(A, VIP6)).out(A.ofport)
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (HAIRPIN_IP6, A.ips[1], 8080)


def test_ipv6_node_port_cluster_snats_to_the_gateway_and_local_keeps_the_client():
    client = "fd00:172:30::100"  # the external host, DNATed by the host to NODEPORT_IP6
    sw = fake(services.service_flows(svc(type="NodePort"), eps(B), CIDRS))
    pkt = tcp(NODE.gw_ofport, GW, GW, client, NODEPORT_IP6, 45000, 30080)
    out = sw.run(pkt).out(B.ofport)
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (GW6, B.ips[1], 8080)
    local = fake(
        services.service_flows(svc(type="NodePort", external_local=True), eps(B, FAR), CIDRS)
    )
    for sport in range(45001, 45009):  # only the local endpoint, however the hash goes
        pkt = tcp(NODE.gw_ofport, GW, GW, client, NODEPORT_LOCAL_IP6, sport, 30080)
        out = local.run(pkt).out(B.ofport)
        assert (out.ip_src, out.ip_dst) == (client, B.ips[1])


def test_an_ipv6_remote_endpoint_through_two_nodes_and_back():
    flows = services.service_flows(svc(), [Endpoint(FAR.ips[1], HTTP)], CIDRS)
    net = FakeNetwork()
    net.add_node(NODE.node_ip, FakeOFTable(flows_of(flows), tunnel_ports={1}), OVERLAY.tun_ofport)
    net.add_node(
        NODE2.node_ip,
        FakeOFTable(flows_of(flows, NODE2, (FAR,), (BACK,)), tunnel_ports={1}),
        OVERLAY.tun_ofport,
    )
    first = syn(A, VIP6)
    (d,), _ = net.send(NODE.node_ip, first)
    assert (d.node, d.port, d.packet.ip_dst, d.packet.tp_dst) == (
        NODE2.node_ip,
        FAR.ofport,
        FAR.ips[1],
        8080,
    )
    reply = tcp(FAR.ofport, FAR.mac, NODE2.gw_mac, FAR.ips[1], A.ips[1], 8080, first.tp_src, "SA")
    (d,), _ = net.send(NODE2.node_ip, reply)
    assert (d.node, d.port, d.packet.ip_src, d.packet.tp_src) == (
        NODE.node_ip,
        A.ofport,
        VIP6,
        80,
    )
