"""LoadBalancer ingress, externalIPs, internalTrafficPolicy and trafficDistribution run in
memory (issue 18): a dual-stack node's pipeline (node-a, zone-a) with a Service's flows,
packets from the gateway (clients outside the cluster, routed in by the host) and from pods
through tests/fakes/oftable.py, and over two nodes through the tunnel.

Every test here fails if its flow family is wrong: the gateway frontend of an externalTrafficPolicy
Cluster address must SNAT to the gateway (the endpoint sees the gateway's address), Local must
keep the client's (and never leave the node), source ranges must drop outsiders of either
family, internalTrafficPolicy Local must refuse when nothing is local, trafficDistribution
must keep to the zone (or node) and fall back when nothing is close."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import pytest

from flows import services
from flows.model import PodPort
from flows.services import Endpoint, Service, ServicePort
from tests.fakes.oftable import FakeNetwork, FakeOFTable, tcp, udp

# node-a (dual-stack, pods A, B, C) and node-b (FAR), as the IPv6 Services tests have them
from tests.unit.test_fake_pipeline_services_v6 import (  # noqa: I001
    BACK,
    CIDRS,
    FAR,
    GW,
    NODE,
    NODE2,
    OVERLAY,
    A,
    B,
    C,
    flows_of,
)  # fmt: skip

HERE = {"node_name": "node-a", "zone": "zone-a"}


NODE_OF = {"a": "node-a", "b": "node-a", "c": "node-a", "far": "node-b"}
VIP4, VIP6 = "10.96.0.10", "fd00:10:96::a"
LB4, LB6 = "172.30.0.200", "fd00:172:30::c8"
EXT4 = "192.168.60.5"
CLIENT4, CLIENT6 = "172.30.0.100", "fd00:172:30::64"
HTTP = (("http", 8080, "TCP"), ("dns", 5353, "UDP"))
PORTS = (ServicePort("http", 80, "TCP", 8080, 30080), ServicePort("dns", 53, "UDP", 5353, 30053))


def svc(**kw) -> Service:
    kw.setdefault("cluster_ips", (VIP4, VIP6))
    kw.setdefault("type", "LoadBalancer")
    kw.setdefault("lb_ingress", (LB4, LB6))
    return Service("default", "web", kw["cluster_ips"][0], PORTS, selector=None, **kw)


def eps(*pods_, **topo) -> list[Endpoint]:
    return [Endpoint(ip, HTTP, node_name=NODE_OF[p.name], **topo) for p in pods_ for ip in p.ips]


def fake(service: Service, endpoints, here=HERE, cidrs=CIDRS, **kw) -> FakeOFTable:
    """Node-a's pipeline with the Service's flows as the node `here` (in `cidrs`) has them."""
    flows = services.service_flows(service, endpoints, cidrs, **here)
    return FakeOFTable(flows_of(flows), tunnel_ports={OVERLAY.tun_ofport}, **kw)


_sport = itertools.count(42000)


def from_outside(dst: str, dport: int = 80, client: str | None = None, proto=tcp):
    """What the host routes into br-int: a client's packet to an external address, through
    the gateway port, to the gateway's MAC (the host's permanent neighbour entry)."""
    client = client or (CLIENT6 if ":" in dst else CLIENT4)
    return proto(NODE.gw_ofport, GW, GW, client, dst, next(_sport), dport)


def from_pod(src: PodPort, dst: str, dport: int = 80, proto=tcp):
    return proto(src.ofport, src.mac, GW, src.ips[1 if ":" in dst else 0], dst, next(_sport), dport)


def delivered(res) -> tuple[int, str, str]:
    """(output port, source, destination) of a packet delivered to one port."""
    (port,) = res.output_ports
    out = res.out(port)
    return port, out.ip_src, out.ip_dst


# -- LoadBalancer, externalTrafficPolicy Cluster ----------------------------------------------


@pytest.mark.parametrize("lb, gw_ip", [(LB4, NODE.gw_ips[0]), (LB6, NODE.gw_ips[1])])
def test_lb_cluster_from_the_gateway_reaches_every_endpoint_snated_to_the_gateway(lb, gw_ip):
    sw = fake(svc(), eps(B, C))
    seen = set()
    for _ in range(24):
        first = from_outside(lb)
        res = sw.run(first)
        port, src, dst = delivered(res)
        ep = B if port == B.ofport else C
        assert (src, dst, res.out(port).tp_dst) == (gw_ip, ep.ips[":" in lb], 8080), res
        seen.add(port)
        # the endpoint answers the gateway; the reply leaves by the gateway from LB:80
        reply = tcp(ep.ofport, ep.mac, GW, dst, gw_ip, 8080, res.out(port).tp_src, "SA")
        back = sw.run(reply)
        out = back.out(NODE.gw_ofport)
        assert (out.ip_src, out.tp_src, out.ip_dst, out.tp_dst) == (
            lb,
            80,
            first.ip_src,
            first.tp_src,
        ), back
    assert seen == {B.ofport, C.ofport}


def test_lb_cluster_remote_endpoint_through_two_nodes_and_back():
    flows = services.service_flows(svc(), eps(FAR), CIDRS, **HERE)
    flows2 = services.service_flows(svc(), eps(FAR), NODE2.pod_cidrs, "node-b", "zone-b")
    net = FakeNetwork()
    net.add_node(NODE.node_ip, FakeOFTable(flows_of(flows), tunnel_ports={1}), 1)
    net.add_node(
        NODE2.node_ip, FakeOFTable(flows_of(flows2, NODE2, (FAR,), (BACK,)), tunnel_ports={1}), 1
    )
    first = from_outside(LB4)
    (d,), _ = net.send(NODE.node_ip, first)
    assert (d.node, d.port, d.packet.ip_src, d.packet.ip_dst) == (
        NODE2.node_ip,
        FAR.ofport,
        NODE.gw_ip,  # SNATed: the reply comes back through node-a
        FAR.ip,
    )
    reply = tcp(FAR.ofport, FAR.mac, NODE2.gw_mac, FAR.ip, NODE.gw_ip, 8080, d.packet.tp_src, "SA")
    (d,), _ = net.send(NODE2.node_ip, reply)
    assert (d.node, d.port, d.packet.ip_src, d.packet.tp_src, d.packet.ip_dst) == (
        NODE.node_ip,
        NODE.gw_ofport,
        LB4,
        80,
        CLIENT4,
    )


def test_lb_from_a_pod_is_like_a_cluster_ip_no_snat():
    sw = fake(svc(), eps(B, FAR))
    seen = set()
    for _ in range(24):
        res = sw.run(from_pod(A, LB4))
        if res.output_ports == [OVERLAY.tun_ofport]:
            out = res.out(OVERLAY.tun_ofport)
            assert (out.ip_src, out.ip_dst) == (A.ip, FAR.ip)
            seen.add("far")
        else:
            assert delivered(res)[1:] == (A.ip, B.ip)
            seen.add("b")
    assert seen == {"b", "far"}


def test_lb_udp_from_the_gateway():
    sw = fake(svc(), eps(B))
    res = sw.run(from_outside(LB4, 53, proto=udp))
    out = res.out(B.ofport)
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (NODE.gw_ip, B.ip, 5353)


# -- externalTrafficPolicy Local ------------------------------------------------------------


@pytest.mark.parametrize("lb, client", [(LB4, CLIENT4), (LB6, CLIENT6)])
def test_lb_local_only_this_nodes_endpoints_and_the_client_ip_kept(lb, client):
    sw = fake(svc(external_local=True), eps(B, FAR))
    for _ in range(16):  # however the hash goes: never node-b's endpoint
        assert delivered(sw.run(from_outside(lb))) == (B.ofport, client, B.ips[":" in lb])


def test_lb_local_without_a_local_endpoint_drops_and_pods_still_reach_the_service():
    sw = fake(svc(external_local=True), eps(FAR))
    res = sw.run(from_outside(LB4))
    assert res.dropped and res.drop_table == "ServiceLB" and not res.packet_ins
    # an in-cluster client of the same address reaches the remote endpoint
    assert sw.run(from_pod(A, LB4)).output_ports == [OVERLAY.tun_ofport]


def test_lb_without_any_endpoint_is_refused_from_both_sides():
    sw = fake(svc(external_local=True), [])
    for pkt in (from_outside(LB4), from_pod(A, LB4)):
        res = sw.run(pkt)
        (pin,) = res.packet_ins
        assert pin.meter_id == services.REJECT_METER and pin.packet.ip_dst == LB4


def test_lb_local_with_node_name_only_endpoints():
    # an endpoint the EndpointSlice puts on this node counts as local even outside its CIDRs
    # (e.g. a hostNetwork endpoint at the node's address)
    ep = Endpoint("192.168.50.10", HTTP, node_name="node-a")
    flows = services.service_flows(svc(external_local=True), [ep], CIDRS, **HERE)
    dnat = {f.text() for f in flows if f.table == "EndpointDNAT"}
    assert any("reg0=0x1/0xf" in t and "nat(dst=192.168.50.10:8080)" in t for t in dnat)
    other = services.service_flows(svc(external_local=True), [ep], CIDRS, "node-x", "")
    gateway = [f.text() for f in other if f.table == "EndpointDNAT" and "reg0=0x1/0xf" in f.text()]
    # only the node's own source (its gateway address) reaches it: an in-cluster client
    assert gateway and all(f"nw_src={NODE.gw_ips[0]}," in t for t in gateway)


@pytest.mark.parametrize("lb, fam", [(LB4, 0), (LB6, 1)])
def test_lb_local_from_the_node_itself_reaches_remote_endpoints(lb, fam):
    """A host process (or hostNetwork pod) reaches an external address through the gateway
    with the gateway's address as its source: an in-cluster client, so externalTrafficPolicy
    Local without a local endpoint still reaches the remote one, source kept (issue 18 review,
    P2-12); a client from outside is still dropped."""
    sw = fake(svc(external_local=True), eps(FAR))
    res = sw.run(from_outside(lb, client=NODE.gw_ips[fam]))
    assert res.output_ports == [OVERLAY.tun_ofport]
    out = res.out(OVERLAY.tun_ofport)
    assert (out.ip_src, out.ip_dst) == (NODE.gw_ips[fam], FAR.ips[fam])
    assert sw.run(from_outside(lb)).output_ports == []


# -- loadBalancerSourceRanges -----------------------------------------------------------------


RANGES = ("172.30.0.0/28", "172.30.0.96/28", "fd00:172:30::/120")


@pytest.mark.parametrize(
    "lb, inside, outside",
    [(LB4, "172.30.0.100", "172.30.0.200"), (LB6, "fd00:172:30::64", "fd00:172:31::64")],
)
@pytest.mark.parametrize("local", [False, True])
def test_source_ranges_deliver_inside_and_drop_outside(lb, inside, outside, local):
    sw = fake(svc(source_ranges=RANGES, external_local=local), eps(B))
    assert sw.run(from_outside(lb, client=inside)).output_ports == [B.ofport]
    res = sw.run(from_outside(lb, client=outside))
    assert res.dropped and res.drop_table == "ServiceLB" and not res.packet_ins


def test_source_ranges_apply_to_pods_too_and_not_to_external_ips():
    s = svc(source_ranges=("172.30.0.0/24",), external_ips=(EXT4,))
    sw = fake(s, eps(B))
    assert sw.run(from_pod(A, LB4)).dropped  # 10.244.0.2 is outside 172.30.0.0/24
    assert sw.run(from_pod(A, EXT4)).output_ports == [B.ofport]
    assert sw.run(from_outside(EXT4, client="10.9.9.9")).output_ports == [B.ofport]
    # the cluster IP is not an external frontend: no range applies
    assert sw.run(from_pod(A, VIP4)).output_ports == [B.ofport]


def test_source_ranges_of_the_other_family_only_close_the_address():
    sw = fake(svc(source_ranges=("172.30.0.0/24",)), eps(B))
    assert sw.run(from_outside(LB4)).output_ports == [B.ofport]
    assert sw.run(from_outside(LB6)).dropped  # no IPv6 range: nobody may reach it


# -- externalIPs ---------------------------------------------------------------------------


def test_external_ips_of_a_cluster_ip_service():
    s = svc(type="ClusterIP", lb_ingress=(), external_ips=(EXT4,))
    sw = fake(s, eps(B))
    assert delivered(sw.run(from_outside(EXT4))) == (B.ofport, NODE.gw_ip, B.ip)
    assert delivered(sw.run(from_pod(A, EXT4))) == (B.ofport, A.ip, B.ip)
    local = fake(replace(s, external_local=True), eps(B))
    assert delivered(local.run(from_outside(EXT4))) == (B.ofport, CLIENT4, B.ip)


def test_lb_ingress_is_ignored_unless_the_service_is_a_load_balancer():
    s = svc(type="NodePort")
    assert not any(LB4 in f.text() for f in services.service_flows(s, eps(B), CIDRS, **HERE))
    assert services.external_addresses(s, CIDRS) == set()
    assert services.external_addresses(svc(external_ips=(EXT4,)), CIDRS) == {LB4, LB6, EXT4}
    # an IPv4-only node routes no IPv6 address
    assert services.external_addresses(svc(), ("10.244.0.0/24",)) == {LB4}


# -- internalTrafficPolicy Local -----------------------------------------------------------


def test_internal_traffic_policy_local_uses_only_local_endpoints():
    sw = fake(svc(internal_local=True), eps(B, FAR))
    for _ in range(16):
        assert delivered(sw.run(from_pod(A, VIP4))) == (B.ofport, A.ip, B.ip)
        assert delivered(sw.run(from_pod(A, VIP6))) == (B.ofport, A.ips[1], B.ips[1])


def test_internal_traffic_policy_local_without_a_local_endpoint_is_refused():
    sw = fake(svc(internal_local=True), eps(FAR))
    res = sw.run(from_pod(A, VIP4))
    (pin,) = res.packet_ins
    assert res.dropped and pin.meter_id == services.REJECT_METER
    # without the policy the same client reaches the remote endpoint
    assert fake(svc(), eps(FAR)).run(from_pod(A, VIP4)).output_ports == [OVERLAY.tun_ofport]


def test_internal_traffic_policy_local_wins_over_traffic_distribution():
    s = svc(internal_local=True, traffic_distribution="PreferClose")
    sw = fake(s, eps(FAR, zone="zone-a"))  # close, but not on this node
    assert sw.run(from_pod(A, VIP4)).packet_ins


# -- trafficDistribution ---------------------------------------------------------------------


def zoned() -> list[Endpoint]:
    """B in zone-a (this node), FAR in zone-b and C in zone-b (it runs here, but says zone-b:
    zones, not nodes, count for PreferClose)."""
    return [
        Endpoint(B.ip, HTTP, node_name="node-a", zone="zone-a"),
        Endpoint(C.ip, HTTP, node_name="node-a", zone="zone-b"),
        Endpoint(FAR.ip, HTTP, node_name="node-b", zone="zone-b"),
    ]


@pytest.mark.parametrize("td", ["PreferClose", "PreferSameZone"])
def test_prefer_close_keeps_to_this_nodes_zone(td):
    sw = fake(svc(traffic_distribution=td), zoned())
    for _ in range(16):
        assert sw.run(from_pod(A, VIP4)).output_ports == [B.ofport]
    # the other zone's node prefers its own zone: C and FAR
    there = fake(svc(traffic_distribution=td), zoned(), {"node_name": "node-b", "zone": "zone-b"})
    assert {tuple(there.run(from_pod(A, VIP4)).output_ports) for _ in range(24)} == {
        (C.ofport,),
        (OVERLAY.tun_ofport,),
    }


def test_prefer_close_falls_back_to_every_endpoint_when_none_is_close():
    sw = fake(svc(traffic_distribution="PreferClose"), zoned(), {"node_name": "x", "zone": "z"})
    seen = {tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(32)}
    assert seen == {(B.ofport,), (C.ofport,), (OVERLAY.tun_ofport,)}
    # nor does a node without a zone label prefer anything
    sw = fake(svc(traffic_distribution="PreferClose"), zoned(), {"node_name": "node-a", "zone": ""})
    assert len({tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(32)}) == 3


def test_prefer_close_follows_the_slices_zone_hints_over_the_zone():
    hinted = [replace(ep, for_zones=("zone-b",)) for ep in zoned()[:1]] + zoned()[1:]
    hinted[2] = replace(hinted[2], for_zones=("zone-a",))  # FAR is given to zone-a
    sw = fake(svc(traffic_distribution="PreferClose"), hinted)
    assert {tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(16)} == {
        (OVERLAY.tun_ofport,)
    }


def test_prefer_close_applies_to_pods_reaching_an_external_address_not_to_the_gateway():
    sw = fake(svc(traffic_distribution="PreferClose"), zoned())
    for _ in range(8):
        assert sw.run(from_pod(A, LB4)).output_ports == [B.ofport]
    outside = {tuple(sw.run(from_outside(LB4)).output_ports) for _ in range(32)}
    assert outside == {(B.ofport,), (C.ofport,), (OVERLAY.tun_ofport,)}


def test_prefer_same_node_then_zone_then_everything():
    s = svc(traffic_distribution="PreferSameNode")
    sw = fake(s, zoned())
    assert {tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(24)} == {
        (B.ofport,),
        (C.ofport,),
    }
    # node-c in zone-b has no endpoint of its own: its zone's (C, FAR)
    sw = fake(s, zoned(), {"node_name": "node-c", "zone": "zone-b"}, ("10.244.2.0/24",))
    assert {tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(24)} == {
        (C.ofport,),
        (OVERLAY.tun_ofport,),
    }
    # node hints win: FAR given to node-a
    hinted = [replace(ep, for_nodes=("node-b",)) for ep in zoned()[:2]]
    hinted.append(replace(zoned()[2], for_nodes=("node-a",)))
    sw = fake(s, hinted)
    assert {tuple(sw.run(from_pod(A, VIP4)).output_ports) for _ in range(16)} == {
        (OVERLAY.tun_ofport,)
    }


# -- session affinity: the timeout cap -------------------------------------------------------


def test_affinity_timeout_beyond_learns_field_is_capped():
    s = svc(affinity_timeout=86400)
    sw = fake(s, eps(B, C))
    sw.run(from_pod(A, VIP4))
    (learned,) = sw.learned()
    (lrn,) = [
        a
        for f in services.service_flows(s, eps(B, C), CIDRS, **HERE)
        for a in f.actions
        if type(a).__name__ == "Learn"
    ][:1]
    assert lrn.idle_timeout == services.MAX_LEARN_TIMEOUT == 65535
    sw.advance(65535)
    assert sw.learned() == {learned}  # alive until the cap
    sw.advance(1)
    assert not sw.learned()


def test_affinity_from_the_gateway_stays_with_the_gateways_endpoints():
    """An external client remembered with a remote endpoint (Cluster) keeps its learned flow
    when the Service turns Local (the in-cluster frontend still learns that endpoint's
    cookie), but from the gateway only this node's endpoints may serve it: the gateway's
    EndpointDNAT flows outrank every in-cluster one."""
    cluster = services.service_flows(svc(affinity_timeout=600), eps(B, FAR), CIDRS, **HERE)
    local = services.service_flows(
        svc(affinity_timeout=600, external_local=True), eps(B, FAR), CIDRS, **HERE
    )

    sw = FakeOFTable(flows_of(cluster), tunnel_ports={1})
    client = from_outside(LB4)
    first = sw.run(client, multipath=1)  # B is link 0, FAR link 1 (sorted by address)
    assert first.output_ports == [OVERLAY.tun_ofport]
    (learned,) = sw.learned()
    sw.delete(cluster - local)
    sw.add(local - cluster)
    assert sw.learned() == {learned}  # the in-cluster frontend still learns FAR's cookie
    again = sw.run(replace(client, tp_src=client.tp_src + 1), multipath=0)
    assert delivered(again) == (B.ofport, CLIENT4, B.ip)


# -- balance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("proto, dport", [(tcp, 80), (udp, 53)])
@pytest.mark.parametrize("vip", [VIP4, VIP6, LB4])
def test_new_connections_of_one_client_spread_over_three_endpoints(proto, dport, vip):
    """300 new connections (new source ports) of one client: each endpoint gets >= 15 %. For
    UDP this holds only because its ports are hashed (symmetric_l3l4+udp): with symmetric_l4,
    as the fake models OVS, every datagram of the client would pick the same endpoint."""
    sw = fake(svc(), eps(B, C, FAR))
    counts = Counter(tuple(sw.run(from_pod(A, vip, dport, proto)).output_ports) for _ in range(300))
    assert set(counts) == {(B.ofport,), (C.ofport,), (OVERLAY.tun_ofport,)}, counts
    assert all(n >= 45 for n in counts.values()), counts
