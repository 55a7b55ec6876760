"""Whole pipelines run in memory (tests/fakes/oftable.py): the flows the agent installs on
br-int, built with the project's own functions, and packets sent through them, with no switch.

Local pod to pod (routed and switched), ARP answers, spoof guard, the overlay to another node
(one bridge, and two bridges joined by their tunnels), NetworkPolicy (hand cases, and random
policies against the reference evaluator in tests/netpol_reference.py, end to end on two nodes),
and Services (DNAT to the endpoint the multipath picks, the reply un-NATed, the packet-in of a
Service without endpoints, session affinity, hairpin).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from flows import netpol, pipeline, policy, regs, services
from flows.flow import CT, Conjunction, Flow, Goto, Output, SetField
from flows.model import HAIRPIN_IP, NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
from flows.policy import PodInfo, View
from flows.services import Endpoint, Service, ServicePort
from tests.fakes.oftable import (
    Ambiguous,
    Conflict,
    FakeNetwork,
    FakeOFTable,
    Unmodelled,
    arp_request,
    icmp,
    tcp,
    udp,
)
from tests.netpol_reference import evaluate, random_case

NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2, node_ip="192.168.50.10")
NODE2 = NodeNet.for_cidr("10.244.1.0/24", gw_ofport=2, node_ip="192.168.50.11")
OVERLAY = Overlay(tun_ofport=1, cluster_cidr="10.244.0.0/16")
REMOTE = RemoteNode("node-b", NODE2.pod_cidr, NODE2.node_ip)
BACK = RemoteNode("node-a", NODE.pod_cidr, NODE.node_ip)  # node-a as node-b sees it


def pod_port(name: str, ofport: int, ip: str, ns: str = "default") -> PodPort:
    return PodPort(f"{name:0>8}/eth0", ofport, ip, mac_from_ip(ip), ns, name)


A = pod_port("a", 3, "10.244.0.2")
B = pod_port("b", 4, "10.244.0.3")
C = pod_port("c", 5, "10.244.0.4")
FAR = pod_port("far", 3, "10.244.1.5")  # a pod of node-b
GW = NODE.gw_mac
VIP = "10.96.0.10"


def node_flows(
    node=NODE, pods=(A, B, C), remotes=(REMOTE,), extra=(), overlay=OVERLAY
) -> frozenset:
    out = pipeline.node_flows(node, overlay)
    for p in pods:
        out |= pipeline.pod_flows(node, p)
    for r in remotes:
        out |= pipeline.remote_node_flows(node, overlay, r)
    return out | frozenset(extra)


def fake(extra=(), **kw) -> FakeOFTable:
    return FakeOFTable(node_flows(extra=extra), tunnel_ports={OVERLAY.tun_ofport}, **kw)


_sport = itertools.count(40000)


def syn(src: PodPort, dst_ip: str, dport: int, eth_dst: str = GW, **kw):
    return tcp(src.ofport, src.mac, eth_dst, src.ip, dst_ip, next(_sport), dport, **kw)


# -- two local pods ---------------------------------------------------------------------------


def test_routed_syn_is_delivered_with_the_pods_mac_and_ttl_decremented():
    sw = fake()
    res = sw.run(syn(A, B.ip, 80))
    assert res.output_ports == [B.ofport], res
    out = res.out(B.ofport)
    assert (out.eth_dst, out.eth_src, out.ttl) == (B.mac, GW, 63)
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (A.ip, B.ip, 80)
    assert "L3Forwarding" in res.tables and res.tables[-1] == "Output"
    assert sw.is_output(syn(A, B.ip, 80), B.ofport, eth_dst=B.mac, ttl=63)


def test_switched_syn_keeps_its_ttl_and_the_reply_comes_back_established():
    sw = fake()
    first = syn(A, B.ip, 80, eth_dst=B.mac)
    res = sw.run(first)
    assert res.out(B.ofport).ttl == 64  # same subnet: switched, not routed
    (conn,) = sw.conntrack.in_zone(pipeline.CT_ZONE)
    assert conn.committed and not conn.seen_reply
    back = sw.run(first.reply(B.ofport, B.mac, A.mac))
    out = back.out(A.ofport)
    assert (out.ip_src, out.ip_dst, out.tp_src, out.tp_dst) == (B.ip, A.ip, 80, first.tp_src)
    state = [s.flow for s in back.steps if s.table == "ConntrackState"]
    assert dict(state[0].match)["ct_state"] == "+est+trk", back
    assert conn.seen_reply
    # the next packet of the connection is established too
    again = sw.run(first)
    assert again.output_ports == [B.ofport]
    assert dict(next(s.flow for s in again.steps if s.table == "ConntrackState").match)[
        "ct_state"
    ] == ("+est+trk")


@pytest.mark.parametrize(
    "change, why",
    [
        ({"ip_src": "10.244.0.99"}, "another IP"),
        ({"ip_src": B.ip}, "a neighbour's IP"),
        ({"eth_src": "0a:58:0a:f4:00:63"}, "another MAC"),
        ({"vlan_tci": 0x1000 | 7}, "an 802.1Q tag"),
    ],
)
def test_spoofed_packets_are_dropped_in_spoof_guard(change, why):
    pkt = replace(syn(A, B.ip, 80), **change)
    res = fake().run(pkt)
    assert res.dropped and res.drop_table == "SpoofGuard", f"{why}: {res}"


def test_arp_for_a_pod_and_for_the_gateway_is_answered_on_the_in_port():
    sw = fake()
    for target, mac in ((B.ip, B.mac), (NODE.gw_ip, GW)):
        res = sw.run(arp_request(A.ofport, A.mac, A.ip, target))
        out = res.out(A.ofport)
        assert (out.eth_src, out.eth_dst, out.arp_op) == (mac, A.mac, 2), res
        assert (out.arp_sha, out.arp_spa) == (mac, target)
        assert (out.arp_tha, out.arp_tpa) == (A.mac, A.ip)
        assert res.tables[-1] == "ARPResponder"


def test_spoofed_arp_and_unknown_targets():
    sw = fake()
    res = sw.run(arp_request(A.ofport, A.mac, B.ip, C.ip))  # A claims B's address
    assert res.drop_table == "SpoofGuard"
    res = sw.run(arp_request(A.ofport, A.mac, A.ip, "10.244.0.77"))  # nobody: no answer
    assert res.dropped and res.drop_table == "L2Forwarding"


def test_ttl_one_is_dropped_when_routed():
    res = fake().run(syn(A, B.ip, 80, ttl=1))
    assert res.dropped and any("invalid_ttl" in n for n in res.notes), res
    assert res.drop_table == "L3Forwarding"


def test_host_reaches_a_pod_and_icmp_works():
    sw = fake()
    ping = icmp(NODE.gw_ofport, GW, GW, NODE.gw_ip, B.ip)
    out = sw.run(ping).out(B.ofport)
    assert out.eth_dst == B.mac and out.icmp_type == 8
    back = sw.run(ping.reply(B.ofport, B.mac, GW))
    assert back.output_ports == [NODE.gw_ofport]


# -- another node ----------------------------------------------------------------------------


def test_a_remote_pod_goes_into_the_tunnel_to_its_node():
    res = fake().run(syn(A, FAR.ip, 80))
    out = res.out(OVERLAY.tun_ofport)
    assert out.tun_dst == REMOTE.node_ip
    assert (out.eth_dst, out.eth_src) == (REMOTE.gw_mac, GW)
    assert out.ip_dst == FAR.ip and out.ttl == 64  # the far side decrements


def test_from_the_tunnel_to_a_local_pod():
    sw = fake()
    pkt = tcp(OVERLAY.tun_ofport, REMOTE.gw_mac, GW, FAR.ip, B.ip, 5555, 80)
    pkt = replace(pkt, tun_src=REMOTE.node_ip, tun_dst=NODE.node_ip)
    out = sw.run(pkt).out(B.ofport)
    assert (out.eth_dst, out.eth_src, out.ttl) == (B.mac, GW, 63)
    assert out.tun_src == "" and out.tun_dst == ""  # tunnel metadata stays in the bridge
    # from an unknown outer source: the classifier drops it
    forged = replace(pkt, tun_src="192.168.50.99")
    assert sw.run(forged).drop_table == "Classifier"
    # tunnel to tunnel never
    hairpin = replace(pkt, ip_dst="10.244.1.9")
    assert sw.run(hairpin).drop_table == "L3Forwarding"


def test_nothing_reaches_a_nodes_vxlan_port_from_a_pod():
    pkt = udp(A.ofport, A.mac, GW, A.ip, REMOTE.node_ip, 5000, 4789)
    assert fake().run(pkt).drop_table == "L3Forwarding"


def two_nodes(extra1=(), extra2=(), pods2=(FAR,)) -> FakeNetwork:
    net = FakeNetwork()
    net.add_node(
        NODE.node_ip,
        FakeOFTable(node_flows(extra=extra1), tunnel_ports={OVERLAY.tun_ofport}),
        OVERLAY.tun_ofport,
    )
    net.add_node(
        NODE2.node_ip,
        FakeOFTable(node_flows(NODE2, pods2, (BACK,), extra2), tunnel_ports={OVERLAY.tun_ofport}),
        OVERLAY.tun_ofport,
    )
    return net


def test_two_nodes_end_to_end_and_back():
    net = two_nodes()
    first = syn(A, FAR.ip, 80)
    (d,) = net.send(NODE.node_ip, first)[0]
    assert (d.node, d.port) == (NODE2.node_ip, FAR.ofport)
    assert (d.packet.eth_dst, d.packet.eth_src, d.packet.ttl) == (FAR.mac, NODE2.gw_mac, 63)
    reply = first.reply(FAR.ofport, FAR.mac, NODE2.gw_mac)
    (d,), results = net.send(NODE2.node_ip, reply)
    assert (d.node, d.port, d.packet.ip_src) == (NODE.node_ip, A.ofport, FAR.ip)
    for r in results:  # a reply on both nodes
        assert any(
            s.flow is not None and dict(s.flow.match).get("ct_state") == "+est+trk" for s in r.steps
        ), r


# -- NetworkPolicy ---------------------------------------------------------------------------


def info(p: PodPort, labels: dict, local=True, ports=(("http", 80, "TCP"),)) -> PodInfo:
    return PodInfo(p.namespace, p.name, tuple(sorted(labels.items())), p.ip, ports, local)


class Slots:
    def __init__(self) -> None:
        self.slots: dict[str, int] = {}

    def __call__(self, owner: str) -> int:
        return self.slots.setdefault(owner, len(self.slots))


def policy_set(policies, view: View) -> frozenset:
    slots = Slots()
    out: set = set()
    for pol in policies:
        for fs in policy.policy_flows(pol, view, slots).values():
            out |= fs
    return frozenset(out)


def isolate_b() -> frozenset:
    view = View(
        {"default": {"kubernetes.io/metadata.name": "default"}},
        [info(A, {"app": "a"}), info(B, {"app": "b"}), info(C, {"app": "c"})],
    )
    pol = netpol.parse(
        {
            "metadata": {"name": "b-from-a", "namespace": "default"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                        "ports": [{"port": 80}],
                    }
                ],
            },
        }
    )
    return policy_set([pol], view)


def test_policy_allows_only_a_on_tcp_80():
    sw = fake(isolate_b())
    ok = syn(A, B.ip, 80)
    res = sw.run(ok)
    assert res.output_ports == [B.ofport], res
    rule = next(s.flow for s in res.steps if s.table == "IngressRule")
    assert "conj_id" in dict(rule.match)  # allowed by the conjunction, not a bypass
    res = sw.run(syn(A, B.ip, 81))
    assert res.dropped and res.drop_table == "IngressDefault", res
    res = sw.run(syn(C, B.ip, 80))
    assert res.dropped and res.drop_table == "IngressDefault", res
    # dropped connections are not committed; the allowed one is, and its reply passes
    assert len(sw.conntrack.in_zone(pipeline.CT_ZONE)) == 1
    back = sw.run(ok.reply(B.ofport, B.mac, GW))
    assert back.output_ports == [A.ofport], back
    rule = next(s.flow for s in back.steps if s.table == "AdminIngressRule")
    assert dict(rule.match) == {"reg0": "0x10/0x10"}  # established: policy skipped
    # B is isolated for ingress only: B may open connections to C
    assert sw.run(syn(B, C.ip, 81)).output_ports == [C.ofport]
    # the node may always reach B
    probe = tcp(NODE.gw_ofport, GW, GW, NODE.gw_ip, B.ip, 7000, 81)
    assert sw.run(probe).output_ports == [B.ofport]


def test_a_reply_without_its_connection_meets_the_policy():
    """An 'SYN-ACK' from C to B that no connection expects is new: B's isolation drops it."""
    sw = fake(isolate_b())
    stray = tcp(C.ofport, C.mac, B.mac, C.ip, B.ip, 80, 40001, flags="SA")
    assert sw.run(stray).drop_table == "IngressDefault"
    assert sw.run(stray, ct_invalid=True).drop_table == "ConntrackState"


# The random world: namespaces x, y, z with pods a, b, c; pods alternate between two nodes.
NS_LABEL = "kubernetes.io/metadata.name"
WEB = (("http", 80, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))
NODES = (NODE, NODE2)
REMOTES = (REMOTE, BACK)


def world(nodes=NODES):
    """Nine pods x/a..z/c alternating over the two nodes, an address of each of the node's pod
    CIDRs (dual-stack nodes give dual-stack pods); y/b declares 8080 where the others have 80."""
    out = []
    for i, (ns, name) in enumerate(itertools.product("xyz", "abc")):
        node = nodes[i % 2]
        ips = tuple(
            c.rsplit(".", 1)[0] + f".{10 + i}" if ":" not in c else c.split("/")[0] + f"{10 + i:x}"
            for c in node.pod_cidrs
        )
        ports = (("http", 8080, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))
        port = PodPort(f"{i:08x}/eth0", 10 + i, ips[0], mac_from_ip(ips[0]), ns, name, ips)
        out.append((i % 2, port, ports if (ns, name) == ("y", "b") else WEB))
    return out


def _dicts(pods):
    nss = [{"metadata": {"name": n, "labels": {"ns": n}}} for n in "xyz"]
    pod_dicts = [
        {
            "metadata": {"namespace": p.namespace, "name": p.name, "labels": {"pod": p.name}},
            "spec": {
                "containers": [
                    {
                        "ports": [
                            {"name": n, "containerPort": c, "protocol": pr} for n, c, pr in ports
                        ]
                    }
                ]
            },
            "status": {"podIP": p.ip, "podIPs": [{"ip": a} for a in p.ips]},
        }
        for _, p, ports in pods
    ]
    return nss, pod_dicts


def fake_net(pods, policies, nodes=NODES, remotes=REMOTES, overlay=OVERLAY) -> FakeNetwork:
    """The nodes' fake switches with the pipeline, their pods and the policies' flows."""
    parsed = [netpol.parse(p) for p in policies]
    ns_labels = {n: {"ns": n, NS_LABEL: n} for n in "xyz"}
    net = FakeNetwork()
    for k, node in enumerate(nodes):
        view = View(
            ns_labels,
            [
                PodInfo(p.namespace, p.name, (("pod", p.name),), p.ip, ports, n == k, ips=p.ips)
                for n, p, ports in pods
            ],
        )
        mine = [p for n, p, _ in pods if n == k]
        flows = node_flows(node, mine, (remotes[k],), policy_set(parsed, view), overlay)
        net.add_node(node.node_ip, FakeOFTable(flows, tunnel_ports={1}), 1)
    return net


def fake_matrix(pods, policies) -> dict[str, bool]:
    """The connection matrix two fake nodes give (see probe_matrix)."""
    return probe_matrix(fake_net(pods, policies), pods)


def probe_matrix(net: FakeNetwork, pods, nodes=NODES, fam: int = 0) -> dict[str, bool]:
    """`pods` ((node index, PodPort, ports) each) probed through `net`, the nodes' fake
    switches: a SYN (or UDP datagram) to each declared port of every other pod, from and to
    their address number `fam` (0: the first family), delivered or not, keyed
    "ns/src->ns/dst:port/PROTO"; every delivered one also has its reply delivered."""
    got = {}
    for (sn, src, _), (dn, dst, ports) in itertools.permutations(pods, 2):
        for port, proto in sorted({(c, pr) for _, c, pr in ports}):
            eth_dst = dst.mac if sn == dn else nodes[sn].gw_mac
            make = tcp if proto == "TCP" else udp
            pkt = make(src.ofport, src.mac, eth_dst, src.ips[fam], dst.ips[fam], next(_sport), port)
            deliveries, _ = net.send(nodes[sn].node_ip, pkt)
            ok = [(d.node, d.port) for d in deliveries] == [(nodes[dn].node_ip, dst.ofport)]
            assert ok or not deliveries, deliveries
            if ok:
                reply_dst = src.mac if sn == dn else nodes[dn].gw_mac
                back, _ = net.send(
                    nodes[dn].node_ip, pkt.reply(dst.ofport, dst.mac, reply_dst, tcp_flags="SA")
                )
                assert [(d.node, d.port) for d in back] == [(nodes[sn].node_ip, src.ofport)], (
                    f"reply of {src.name}->{dst.name}:{port} lost"
                )
            got[f"{src.namespace}/{src.name}->{dst.namespace}/{dst.name}:{port}/{proto}"] = ok
    return got


# 13, 18 and 23 found the egress named-port-to-ipBlock bug in flows/policy.py (fixed)
@pytest.mark.parametrize("seed", [0, 3, 7, 11, 13, 18, 19, 23, 42, 47, 56])
def test_fake_pipeline_matches_the_reference_on_random_policies(seed):
    pods = world()
    nss, pod_dicts = _dicts(pods)
    policies = random_case(seed, nss, pod_dicts)
    want = evaluate(nss, pod_dicts, policies)
    got = fake_matrix(pods, policies)
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"seed {seed}: {policies}\n" + ", ".join(
        f"{k}: {'delivered' if got[k] else 'dropped'}" for k in wrong[:10]
    )


def test_no_policy_everything_is_delivered():
    pods = world()
    got = fake_matrix(pods, [])
    assert got and all(got.values())


# -- Services --------------------------------------------------------------------------------

WEB_SVC = Service("default", "web", VIP, (ServicePort("http", 80, "TCP", 8080),), selector=None)
EPS = [Endpoint(B.ip, (("http", 8080, "TCP"),)), Endpoint(C.ip, (("http", 8080, "TCP"),))]


@pytest.mark.parametrize("link, ep", [(0, B), (1, C)])
def test_cluster_ip_is_dnated_to_the_endpoint_multipath_picks(link, ep):
    sw = fake(services.service_flows(WEB_SVC, EPS), multipath=link)
    first = syn(A, VIP, 80)
    res = sw.run(first)
    out = res.out(ep.ofport)
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (A.ip, ep.ip, 8080), res
    assert (out.eth_dst, out.ttl) == (ep.mac, 63)
    # the endpoint answers its own subnet's pod directly; conntrack gives it the VIP back
    back = sw.run(replace(first.reply(ep.ofport, ep.mac, A.mac), ip_src=ep.ip, tp_src=8080))
    out = back.out(A.ofport)
    assert (out.ip_src, out.tp_src, out.ip_dst, out.tp_dst) == (VIP, 80, A.ip, first.tp_src)
    # later packets of the connection keep their endpoint whatever the hash says
    again = sw.run(first, multipath=1 - link)
    assert again.out(ep.ofport).ip_dst == ep.ip


def test_hashed_pick_is_deterministic_and_spreads():
    sw = fake(services.service_flows(WEB_SVC, EPS))
    picks = set()
    for _ in range(16):
        res = sw.run(syn(A, VIP, 80))
        (port,) = res.output_ports
        picks.add(port)
    assert picks == {B.ofport, C.ofport}


def test_service_without_endpoints_sends_a_packet_in():
    sw = fake(services.service_flows(WEB_SVC, []))
    res = sw.run(syn(A, VIP, 80))
    assert res.dropped and res.drop_table == "ServiceLB"
    (pin,) = res.packet_ins
    assert pin.meter_id == services.REJECT_METER and pin.packet.ip_dst == VIP
    assert pin.cookie == next(iter(services.service_flows(WEB_SVC, []))).cookie


def test_remote_endpoint_through_two_nodes_and_back():
    svc_flows = services.service_flows(WEB_SVC, [Endpoint(FAR.ip, (("http", 8080, "TCP"),))])
    net = two_nodes(extra1=svc_flows, extra2=svc_flows)
    first = syn(A, VIP, 80)
    (d,), _ = net.send(NODE.node_ip, first)
    assert (d.node, d.port, d.packet.ip_dst, d.packet.tp_dst) == (NODE2.node_ip, 3, FAR.ip, 8080)
    reply = tcp(FAR.ofport, FAR.mac, NODE2.gw_mac, FAR.ip, A.ip, 8080, first.tp_src, "SA")
    (d,), _ = net.send(NODE2.node_ip, reply)
    assert (d.node, d.port, d.packet.ip_src, d.packet.tp_src) == (NODE.node_ip, A.ofport, VIP, 80)


def test_session_affinity_learns_the_clients_endpoint():
    svc = Service(
        "default",
        "web",
        VIP,
        (ServicePort("http", 80, "TCP", 8080),),
        selector=None,
        affinity_timeout=60,
    )
    sw = fake(services.service_flows(svc, EPS), multipath=1)
    assert sw.run(syn(A, VIP, 80)).out(C.ofport)
    (learned,) = sw.learned()
    assert learned.table == "SessionAffinity"
    # a new connection whose hash says B still goes to C while the flow lives
    assert sw.run(syn(A, VIP, 80), multipath=0).output_ports == [C.ofport]
    sw.advance(61)
    assert not sw.learned()
    assert sw.run(syn(A, VIP, 80), multipath=0).output_ports == [B.ofport]
    # the learned flow goes with the last flow that learns its cookie (delete_learned)
    assert sw.learned()
    sw.delete(services.service_flows(svc, EPS))
    assert not sw.learned()


def test_hairpin_a_pod_reaching_itself_through_its_service():
    sw = fake(services.service_flows(WEB_SVC, [Endpoint(A.ip, (("http", 8080, "TCP"),))]))
    first = syn(A, VIP, 80)
    res = sw.run(first)
    out = res.out(A.ofport)  # IN_PORT: back out of the port it came by
    assert (out.ip_src, out.ip_dst, out.tp_dst) == (HAIRPIN_IP, A.ip, 8080), res
    reply = tcp(A.ofport, A.mac, GW, A.ip, HAIRPIN_IP, 8080, out.tp_src, "SA")
    back = sw.run(reply)
    out = back.out(A.ofport)
    assert (out.ip_src, out.tp_src, out.ip_dst, out.tp_dst) == (VIP, 80, A.ip, first.tp_src)


# -- the fake itself: loud about what it does not know -----------------------------------------


def raw(table: str, priority: int, match: dict, actions=()) -> Flow:
    """A Flow made without flow()'s checks against the pipeline's table declarations: these
    tests are about the fake's semantics, not about where a flow may go."""
    return Flow(table, priority, tuple(sorted((f, str(v)) for f, v in match.items())), actions)


def test_unknown_fields_actions_and_conflicts_raise():
    with pytest.raises(Unmodelled):
        FakeOFTable([raw("Classifier", 5, {"ct_label": "0x1"}, ())])
    for acts in (
        (SetField("ct_mark", "0x1"),),
        (CT(5, nat=""), Goto("SpoofGuard")),  # NAT the rest of the pass would not see
        (CT(5, table="SpoofGuard"), Output(3)),
    ):
        with pytest.raises(Unmodelled):
            FakeOFTable([raw("Classifier", 5, {"protocol": "ip"}, acts)])
    with pytest.raises(Conflict):
        FakeOFTable(
            [
                raw("Classifier", 5, {"in_port": 1}, (Output(2),)),
                raw("Classifier", 5, {"in_port": 1}, (Output(3),)),
            ]
        )
    sw = FakeOFTable(
        [
            raw("Classifier", 5, {"in_port": 1}, (Output(2),)),
            raw("Classifier", 5, {"protocol": "ip"}, (Output(3),)),
        ]
    )
    with pytest.raises(Ambiguous):
        sw.run(replace(syn(A, B.ip, 80), in_port=1))


def test_conjunction_semantics():
    """Soft matches only count above the best hard match; the highest complete conjunction
    fires; an incomplete one does not."""
    ip = {"protocol": "ip"}
    fl = [
        raw("IngressRule", 100, {**ip, "nw_src": A.ip}, (Conjunction(7, 1, 2),)),
        raw("IngressRule", 100, {"protocol": "tcp", "tp_dst": 80}, (Conjunction(7, 2, 2),)),
        raw("IngressRule", 100, {**ip, "conj_id": 7}, (Output(9),)),
        raw("IngressRule", 50, {**ip, "nw_src": A.ip}, (Output(8),)),
        raw("IngressRule", 200, {**ip, "nw_src": A.ip}, (Conjunction(8, 1, 2),)),
        raw("IngressRule", 200, {"protocol": "udp"}, (Conjunction(8, 2, 2),)),
        raw("IngressRule", 200, {**ip, "conj_id": 8}, (Output(10),)),
    ]
    sw = FakeOFTable(fl)
    pkt = tcp(1, A.mac, B.mac, A.ip, B.ip, 1000, 80)
    assert sw.lookup("IngressRule", pkt).actions == (Output(9),)
    assert sw.lookup("IngressRule", replace(pkt, tp_dst=81)).actions == (Output(8),)
    dns = udp(1, A.mac, B.mac, A.ip, B.ip, 1000, 53)
    assert sw.lookup("IngressRule", dns).actions == (Output(10),)
    assert sw.lookup("IngressRule", replace(dns, ip_src=B.ip)) is None
    # a hard match above the conjunctions wins
    sw.add([raw("IngressRule", 300, ip, (Output(11),))])
    assert sw.lookup("IngressRule", dns).actions == (Output(11),)


def test_ct_without_table_keeps_the_passes_ct_fields():
    """ct(commit) alone commits; the rest of the pass still sees the packet as it was."""
    fl = [
        raw("Classifier", 10, {"protocol": "ip"}, (CT(5, commit=True), Goto("SpoofGuard"))),
        raw("SpoofGuard", 10, {"protocol": "ip", "ct_state": "-trk"}, (Output(7),)),
    ]
    sw = FakeOFTable(fl)
    assert sw.run(syn(A, B.ip, 80)).output_ports == [7]
    assert len(sw.conntrack.in_zone(5)) == 1


def _self_service(ingress_from: list) -> FakeOFTable:
    """A node whose Service WEB_SVC has pod A as its only endpoint, A under an ingress policy
    with these peers."""
    view = View(
        {"default": {"kubernetes.io/metadata.name": "default"}},
        [info(A, {"app": "a"}, ports=(("http", 8080, "TCP"),)), info(B, {"app": "b"})],
    )
    pol = netpol.parse(
        {
            "metadata": {"name": "a-in", "namespace": "default"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": ingress_from}],
            },
        }
    )
    svc = services.service_flows(WEB_SVC, [Endpoint(A.ip, (("http", 8080, "TCP"),))])
    return fake(policy_set([pol], view) | svc)


def _hairpin_through_service(ingress_from: list) -> list[int]:
    """Ports pod A's SYN to its own Service is delivered to."""
    return _self_service(ingress_from).run(syn(A, VIP, 80)).output_ports


def test_hairpin_is_judged_as_the_pod_not_as_an_address_in_a_peer_cidr():
    # a CIDR that holds the pod's address admits its hairpin ...
    assert _hairpin_through_service([{"ipBlock": {"cidr": "10.244.0.0/16"}}]) == [A.ofport]
    # ... one that excepts it does not, though the CIDR holds the hairpin address itself
    everywhere_but_pods = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}
    assert _hairpin_through_service([everywhere_but_pods]) == []
    assert _hairpin_through_service([{"ipBlock": {"cidr": "169.254.0.0/16"}}]) == []
    # a selector that picks another pod only does not admit it either
    assert _hairpin_through_service([{"podSelector": {"matchLabels": {"app": "b"}}}]) == []


def test_register_masks_and_output_to_the_in_port_is_skipped():
    reg, val = regs.OUT_PORT.match(A.ofport)
    fl = [
        raw(
            "Classifier", 10, {}, (SetField(reg, val), SetField("reg0", "0x2/0xf"), Goto("Output"))
        ),
        raw("Output", 10, {"reg0": "0x2/0xf"}, (Output(A.ofport), Output(6))),
    ]
    res = FakeOFTable(fl).run(syn(A, B.ip, 80))
    assert res.output_ports == [6] and any("in_port" in n for n in res.notes)
    assert res.outputs[0].regs[2] == A.ofport


def test_hairpin_passes_an_ingress_policy_that_admits_the_pod_itself():
    sw = _self_service([{"podSelector": {"matchLabels": {"app": "a"}}}])
    res = sw.run(syn(A, VIP, 80))
    assert res.output_ports == [A.ofport], res
    # The same source forged by the host (through the gateway) or another node (through the
    # tunnel) is dropped where it enters, not admitted as a itself.
    for in_port, extra in ((NODE.gw_ofport, {}), (OVERLAY.tun_ofport, {"tun_src": REMOTE.node_ip})):
        forged = tcp(in_port, GW, A.mac, HAIRPIN_IP, A.ip, next(_sport), 8080, **extra)
        res = sw.run(forged)
        assert res.output_ports == [] and res.drop_table == "Classifier", (in_port, res)
    # ... while an ordinary client from the host still reaches a only as its policy says: not
    other = tcp(NODE.gw_ofport, GW, A.mac, "192.168.50.99", A.ip, next(_sport), 8080)
    assert sw.run(other).output_ports == []
