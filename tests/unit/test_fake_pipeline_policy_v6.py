"""NetworkPolicy on dual-stack pods, run in memory (issue 16): a dual-stack node's pipeline and
the policy flows of flows/policy.py with IPv4 and IPv6 packets through tests/fakes/oftable.py.

Selectors allow and deny both families alike; an ipBlock only its own; the ICMPv6 that
neighbour and path-MTU discovery need crosses an isolation that drops everything else; and on
two fake nodes the random policies of the reference give the reference's matrix on each family.
"""

from __future__ import annotations

import itertools

import pytest

from flows import netpol, pipeline, policy
from flows.model import NodeNet, Overlay, PodPort, RemoteNode, link_local, mac_from_ip
from flows.policy import PodInfo, View
from tests.fakes.oftable import FakeOFTable, icmp6, neighbor_advert, tcp, udp
from tests.netpol_reference import evaluate, random_case
from tests.unit.test_fake_pipeline import _dicts, fake_net, probe_matrix, world

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
NS_LABEL = "kubernetes.io/metadata.name"
_sport = itertools.count(41000)


def pod(name: str, ofport: int, ip4: str, ip6: str, ns: str = "default") -> PodPort:
    return PodPort(f"{name:0>8}/eth0", ofport, ip4, mac_from_ip(ip4), ns, name, (ip4, ip6))


A = pod("a", 3, "10.244.0.2", "fd00:10:244::2")
B = pod("b", 4, "10.244.0.3", "fd00:10:244::3")
C = pod("c", 5, "10.244.0.4", "fd00:10:244::4")


def info(p: PodPort, labels: dict, local=True, ports=(("http", 80, "TCP"),)) -> PodInfo:
    return PodInfo(
        p.namespace, p.name, tuple(sorted(labels.items())), p.ip, ports, local, ips=p.ips
    )


class Slots:
    def __init__(self) -> None:
        self.slots: dict[str, int] = {}

    def __call__(self, owner: str) -> int:
        return self.slots.setdefault(owner, len(self.slots))


def policy_set(policies, view: View) -> frozenset:
    slots, out = Slots(), set()
    for pol in policies:
        for fs in policy.policy_flows(pol, view, slots).values():
            out |= fs
    return frozenset(out)


def node_flows(node=NODE, pods=(A, B, C), remotes=(REMOTE,), extra=()) -> frozenset:
    out = pipeline.node_flows(node, OVERLAY)
    for p in pods:
        out |= pipeline.pod_flows(node, p)
    for r in remotes:
        out |= pipeline.remote_node_flows(node, OVERLAY, r)
    return out | frozenset(extra)


def guard_b(peer: dict, ports=({"port": 80},), types=None) -> frozenset:
    """b isolated for ingress (and egress with types), allowed from `peer` on `ports`."""
    view = View(
        {"default": {NS_LABEL: "default"}},
        [info(A, {"app": "a"}), info(B, {"app": "b"}), info(C, {"app": "c"})],
    )
    spec = {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [peer], "ports": list(ports)}],
    }
    if types:
        spec["policyTypes"] = types
    pol = netpol.parse({"metadata": {"name": "guard-b", "namespace": "default"}, "spec": spec})
    return policy_set([pol], view)


def fake(extra) -> FakeOFTable:
    return FakeOFTable(node_flows(extra=extra), tunnel_ports={OVERLAY.tun_ofport})


def syn(src: PodPort, dst: PodPort, fam: int, dport: int = 80):
    return tcp(src.ofport, src.mac, GW, src.ips[fam], dst.ips[fam], next(_sport), dport)


@pytest.mark.parametrize("fam", [0, 1], ids=["IPv4", "IPv6"])
def test_a_selector_rule_allows_and_isolates_both_families(fam):
    sw = fake(guard_b({"podSelector": {"matchLabels": {"app": "a"}}}))
    ok = syn(A, B, fam)
    res = sw.run(ok)
    assert res.output_ports == [B.ofport], res
    rule = next(s.flow for s in res.steps if s.table == "IngressRule")
    assert "conj_id" in dict(rule.match) and dict(rule.match)["protocol"] == ("ip", "ipv6")[fam]
    for bad in (syn(A, B, fam, 81), syn(C, B, fam)):
        res = sw.run(bad)
        assert res.dropped and res.drop_table == "IngressDefault", res
    back = sw.run(ok.reply(B.ofport, B.mac, GW))
    assert back.output_ports == [A.ofport], back
    # ingress isolation only: b still opens connections
    assert sw.run(syn(B, C, fam, 81)).output_ports == [C.ofport]


def test_an_ipv6_block_admits_ipv6_only_and_an_ipv4_block_ipv4_only():
    six = fake(
        guard_b({"ipBlock": {"cidr": "fd00:10:244::/120", "except": ["fd00:10:244::4/128"]}})
    )
    assert six.run(syn(A, B, 1)).output_ports == [B.ofport]
    assert six.run(syn(A, B, 0)).drop_table == "IngressDefault"
    assert six.run(syn(C, B, 1)).drop_table == "IngressDefault"  # the except
    four = fake(guard_b({"ipBlock": {"cidr": "10.244.0.0/24"}}))
    assert four.run(syn(A, B, 0)).output_ports == [B.ofport]
    assert four.run(syn(A, B, 1)).drop_table == "IngressDefault"


def test_udp6_and_end_port_ranges():
    sw = fake(guard_b({"podSelector": {}}, ports=({"protocol": "UDP", "port": 50, "endPort": 60},)))
    for port, ok in ((50, True), (53, True), (60, True), (61, False), (49, False)):
        pkt = udp(A.ofport, A.mac, GW, A.ips[1], B.ips[1], next(_sport), port)
        res = sw.run(pkt)
        assert (res.output_ports == [B.ofport]) == ok, (port, res)
    assert sw.run(syn(A, B, 1, 53)).drop_table == "IngressDefault"  # tcp6 53 not in it


DENY_B = {"podSelector": {"matchLabels": {"app": "nobody"}}}


@pytest.mark.parametrize(
    "icmp_type, why",
    [
        (1, "destination unreachable"),
        (2, "packet too big"),
        (3, "time exceeded"),
        (4, "parameter problem"),
    ],
)
def test_the_icmp6_errors_cross_a_deny_all(icmp_type, why):
    """b isolated both ways with nothing allowed: ICMPv6 errors still reach b and leave it, at
    the always-allowed priority; an echo request does not. (A fresh switch per packet: the
    fake's conntrack keys ICMPv6 by type-less addresses, so one message would make the next
    look established.)"""
    deny = guard_b(DENY_B, types=["Ingress", "Egress"])
    into = fake(deny).run(icmp6(A.ofport, A.mac, GW, A.ips[1], B.ips[1], icmp_type))
    assert into.output_ports == [B.ofport], f"{why}: {into}"
    rule = next(s.flow for s in into.steps if s.table == "AdminIngressRule")
    assert rule.priority == pipeline.PRIO_ALWAYS, rule
    assert int(dict(rule.match)["icmp_type"]) == icmp_type, rule
    out = fake(deny).run(icmp6(B.ofport, B.mac, GW, B.ips[1], A.ips[1], icmp_type))
    assert out.output_ports == [A.ofport], f"{why}: {out}"
    rule = next(s.flow for s in out.steps if s.table == "AdminEgressRule")
    assert rule.priority == pipeline.PRIO_ALWAYS, rule


def test_an_echo_request_meets_the_isolation_both_ways():
    deny = guard_b(DENY_B, types=["Ingress", "Egress"])
    echo = fake(deny).run(icmp6(A.ofport, A.mac, GW, A.ips[1], B.ips[1]))
    assert echo.dropped and echo.drop_table == "IngressDefault", echo
    echo_out = fake(deny).run(icmp6(B.ofport, B.mac, GW, B.ips[1], A.ips[1]))
    assert echo_out.dropped and echo_out.drop_table == "EgressDefault", echo_out


def test_a_neighbor_advertisement_from_an_isolated_pod_is_delivered():
    """b's own (unsolicited, unicast) Neighbor Advertisement to a crosses b's egress
    isolation and a's ingress isolation. (Solicitations for local pods never reach the policy
    tables: OVS answers them in ARPResponder.)"""
    deny_both = guard_b(DENY_B, types=["Ingress", "Egress"])
    view = View({"default": {NS_LABEL: "default"}}, [info(A, {"app": "a"}), info(B, {"app": "b"})])
    iso_a = netpol.parse(
        {"metadata": {"name": "deny-a", "namespace": "default"},
         "spec": {"podSelector": {"matchLabels": {"app": "a"}}}}
    )  # fmt: skip
    flows = deny_both | policy_set([iso_a], view)
    na = neighbor_advert(B.ofport, B.mac, B.ips[1], B.ips[1], eth_dst=GW, ip_dst=A.ips[1])
    res = fake(flows).run(na)
    assert res.output_ports == [A.ofport], res
    prios = {s.table: s.flow.priority for s in res.steps if s.table.endswith("Rule")}
    assert prios == {
        "AdminEgressRule": pipeline.PRIO_ALWAYS,
        "AdminIngressRule": pipeline.PRIO_ALWAYS,
    }


def test_a_router_solicitation_from_an_isolated_pod_crosses_the_policy_tables():
    """What happens to it after the policy tables is the pipeline's business (multicast to
    ff02::2 has no port in L2Forwarding); the policies never stop it."""
    deny = guard_b(DENY_B, types=["Ingress", "Egress"])
    rs = icmp6(B.ofport, B.mac, "33:33:00:00:00:02", link_local(B.mac), "ff02::2", 133)
    res = fake(deny).run(rs)
    prios = {s.table: s.flow.priority for s in res.steps if s.table.endswith("Rule")}
    assert prios == {
        "AdminEgressRule": pipeline.PRIO_ALWAYS,
        "AdminIngressRule": pipeline.PRIO_ALWAYS,
    }
    assert res.drop_table not in ("EgressDefault", "IngressDefault"), res


# -- two fake nodes against the reference, per family --------------------------------------------

NODES = (NODE, NODE2)
REMOTES = (REMOTE, BACK)


@pytest.mark.parametrize("seed", [0, 3, 7, 11, 13, 18, 19, 23, 42, 47, 56])
def test_two_dual_stack_nodes_match_the_reference_on_both_families(seed):
    pods = world(NODES)
    nss, pod_dicts = _dicts(pods)
    policies = random_case(seed, nss, pod_dicts)  # IPv4 and IPv6 ipBlocks
    net = fake_net(pods, policies, NODES, REMOTES, OVERLAY)
    for fam, version in ((0, 4), (1, 6)):
        want = evaluate(nss, pod_dicts, policies, family=version)
        got = probe_matrix(net, pods, NODES, fam)
        wrong = sorted(k for k in want if got[k] != want[k])
        assert not wrong, f"seed {seed} IPv{version}: {policies}\n" + ", ".join(
            f"{k}: {'delivered' if got[k] else 'dropped'}" for k in wrong[:10]
        )
