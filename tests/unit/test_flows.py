"""Unit tests for flows/: the pipeline as pure data.

The golden strings below, with table names for table ids (`flows.flow.ids()` turns them back),
are exactly what `ovs-ofctl -O OpenFlow15 dump-flows --no-stats br-int` prints on OVS 3.1 after `add-flows` of these flows (leading space stripped), checked on a private
ovs-vswitchd (netdev bridge, fail_mode=secure) for the node (with and without a node IP), both
pods, the overlay and a remote node, and for the ct / conjunction / output:reg / ct_state texts
pinned further down. Keep them literal: they are the contract between the pipeline code and the
switch, and the place a reviewer reads what the pipeline does.
"""

import dataclasses
from collections import Counter

import pytest

from flows import cookie, pipeline, regs, tables
from flows.flow import (
    CT,
    CT_FLAGS,
    Conjunction,
    DecTTL,
    Flow,
    FlowError,
    Goto,
    InPort,
    Move,
    Output,
    OutputReg,
    Resubmit,
    SetField,
    any_table_flow,
    ct_state,
    flow,
    ids,
)
from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip

NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2)
NODE_WITH_IP = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2, node_ip="192.168.50.10")
OVERLAY = Overlay(tun_ofport=1, cluster_cidr="10.244.0.0/16")
REMOTE = RemoteNode("node-b", "10.244.1.0/24", "192.168.50.11")
POD_A = PodPort("3f2a9c1e/eth0", 3, "10.244.0.2", "0a:58:0a:f4:00:02", "default", "web-0")
POD_B = PodPort("7b41d0aa/eth0", 4, "10.244.0.3", "0a:58:0a:f4:00:03", "kube-system", "dns-0")

# fmt: off
GOLDEN_NODE = {
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=200,in_port=2 actions=set_field:0x1/0xf->reg0,goto_table:ARPResponder",
    # the hairpin source is made only inside br-int (HairpinSNAT): from the host it is forged
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=230,ip,in_port=2,nw_src=169.254.169.252 actions=drop",
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=0 actions=drop",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=0 actions=drop",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=200,arp,arp_tpa=10.244.0.1,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:01->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:58:0a:f4:00:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.244.0.1->arp_spa,IN_PORT",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=0 actions=goto_table:HairpinUnSNAT",
    "cookie=0x1e5bcd38d0b, table=HairpinUnSNAT, priority=200,ip,nw_dst=169.254.169.252 actions=ct(table=Conntrack,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=HairpinUnSNAT, priority=200,ip,nw_dst=10.244.0.1 actions=ct(table=Conntrack,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=HairpinUnSNAT, priority=0 actions=goto_table:Conntrack",
    "cookie=0x1e5bcd38d0b, table=Conntrack, priority=200,ip actions=ct(table=ConntrackState,zone=65000,nat)",
    "cookie=0x1e5bcd38d0b, table=Conntrack, priority=0 actions=goto_table:ConntrackState",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=210,ct_state=+inv+trk,ip actions=drop",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=206,ct_state=+est-rpl+trk,ct_mark=0x1/0x1,ip actions=set_field:0x10/0x10->reg0,ct(table=L3Forwarding,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=200,ct_state=+est+trk,ip actions=set_field:0x10/0x10->reg0,goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=199,ct_state=+rel+trk,ip actions=set_field:0x10/0x10->reg0,goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=0 actions=goto_table:ServiceLB",
    "cookie=0x1e5bcd38d0b, table=SessionAffinity, priority=0 actions=drop",
    "cookie=0x1e5bcd38d0b, table=ServiceLB, priority=0 actions=goto_table:EndpointDNAT",
    "cookie=0x1e5bcd38d0b, table=EndpointDNAT, priority=0 actions=goto_table:HairpinSNAT",
    "cookie=0x1e5bcd38d0b, table=HairpinSNAT, priority=200,ct_state=+new+trk,ct_mark=0x1/0x1,ip actions=ct(commit,table=AdminEgressRule,zone=65001,nat(src=10.244.0.1))",
    "cookie=0x1e5bcd38d0b, table=HairpinSNAT, priority=0 actions=goto_table:AdminEgressRule",
    "cookie=0x1e5bcd38d0b, table=EgressRule, priority=65000,ip,nw_dst=10.244.0.1 actions=goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=EgressRule, priority=0 actions=goto_table:EgressDefault",
    "cookie=0x1e5bcd38d0b, table=EgressDefault, priority=0 actions=goto_table:BaselineEgressRule",
    "cookie=0x1e5bcd38d0b, table=BaselineEgressRule, priority=0 actions=goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=AdminEgressRule, priority=0 actions=goto_table:EgressRule",
    "cookie=0x1e5bcd38d0b, table=L3Forwarding, priority=0 actions=goto_table:AdminIngressRule",
    "cookie=0x1e5bcd38d0b, table=AdminIngressRule, priority=65000,reg0=0x10/0x10 actions=goto_table:L2Forwarding",
    "cookie=0x1e5bcd38d0b, table=AdminIngressRule, priority=64999,ip,reg0=0x1/0xf,nw_src=10.244.0.1 actions=goto_table:L2Forwarding",
    "cookie=0x1e5bcd38d0b, table=IngressRule, priority=0 actions=goto_table:IngressDefault",
    "cookie=0x1e5bcd38d0b, table=IngressDefault, priority=0 actions=goto_table:BaselineIngressRule",
    "cookie=0x1e5bcd38d0b, table=BaselineIngressRule, priority=0 actions=goto_table:L2Forwarding",
    "cookie=0x1e5bcd38d0b, table=AdminIngressRule, priority=0 actions=goto_table:IngressRule",
    "cookie=0x1e5bcd38d0b, table=L2Forwarding, priority=200,dl_dst=0a:58:0a:f4:00:01 actions=set_field:0x2->reg2,goto_table:ConntrackCommit",
    "cookie=0x1e5bcd38d0b, table=L2Forwarding, priority=0 actions=drop",
    "cookie=0x1e5bcd38d0b, table=ConntrackCommit, priority=200,ct_state=+new+trk,ip actions=ct(commit,zone=65000),goto_table:Output",
    "cookie=0x1e5bcd38d0b, table=ConntrackCommit, priority=0 actions=goto_table:Output",
    "cookie=0x1e5bcd38d0b, table=Output, priority=200 actions=output:NXM_NX_REG2[]",
    "cookie=0x1e5bcd38d0b, table=Output, priority=0 actions=drop",
}

# What a node IP adds: pods may always reach their own node.
GOLDEN_NODE_IP = {
    "cookie=0x1e5bcd38d0b, table=EgressRule, priority=65000,ip,nw_dst=192.168.50.10 actions=goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=AdminIngressRule, priority=64999,ip,reg0=0x1/0xf,nw_src=192.168.50.10 actions=goto_table:L2Forwarding",
    # nothing in br-int reaches the node's own VXLAN port
    "cookie=0x1e5bcd38d0b, table=L3Forwarding, priority=220,udp,nw_dst=192.168.50.10,tp_dst=4789 actions=drop",
}

GOLDEN_POD_A = {
    "cookie=0x28d0bc6746f, table=Classifier, priority=200,in_port=3 actions=set_field:0x2/0xf->reg0,goto_table:SpoofGuard",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=200,arp,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,arp_spa=10.244.0.2,arp_sha=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=200,ip,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,nw_src=10.244.0.2 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=ARPResponder, priority=200,arp,arp_tpa=10.244.0.2,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:02->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:58:0a:f4:00:02->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.244.0.2->arp_spa,IN_PORT",
    "cookie=0x28d0bc6746f, table=L3Forwarding, priority=200,ip,dl_dst=0a:58:0a:f4:00:01,nw_dst=10.244.0.2 actions=set_field:0a:58:0a:f4:00:01->eth_src,set_field:0a:58:0a:f4:00:02->eth_dst,dec_ttl,goto_table:AdminIngressRule",
    "cookie=0x28d0bc6746f, table=L2Forwarding, priority=200,dl_dst=0a:58:0a:f4:00:02 actions=set_field:0x3->reg2,goto_table:ConntrackCommit",
    "cookie=0x28d0bc6746f, table=ConntrackState, priority=205,ct_state=+est+trk,ip,nw_src=10.244.0.2,nw_dst=10.244.0.2 actions=set_field:0x10/0x10->reg0,ct(table=L3Forwarding,zone=65001,nat)",
    "cookie=0x28d0bc6746f, table=HairpinSNAT, priority=200,ip,nw_src=10.244.0.2,nw_dst=10.244.0.2 actions=set_field:0x40/0x40->reg0,ct(commit,table=AdminEgressRule,zone=65001,nat(src=169.254.169.252))",
    "cookie=0x28d0bc6746f, table=Output, priority=210,reg2=0x3,in_port=3 actions=IN_PORT",
}

GOLDEN_POD_B = {
    "cookie=0x222ee7483c2, table=Classifier, priority=200,in_port=4 actions=set_field:0x2/0xf->reg0,goto_table:SpoofGuard",
    "cookie=0x222ee7483c2, table=SpoofGuard, priority=200,arp,in_port=4,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:03,arp_spa=10.244.0.3,arp_sha=0a:58:0a:f4:00:03 actions=goto_table:ARPResponder",
    "cookie=0x222ee7483c2, table=SpoofGuard, priority=200,ip,in_port=4,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:03,nw_src=10.244.0.3 actions=goto_table:ARPResponder",
    "cookie=0x222ee7483c2, table=ARPResponder, priority=200,arp,arp_tpa=10.244.0.3,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:03->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:58:0a:f4:00:03->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.244.0.3->arp_spa,IN_PORT",
    "cookie=0x222ee7483c2, table=L3Forwarding, priority=200,ip,dl_dst=0a:58:0a:f4:00:01,nw_dst=10.244.0.3 actions=set_field:0a:58:0a:f4:00:01->eth_src,set_field:0a:58:0a:f4:00:03->eth_dst,dec_ttl,goto_table:AdminIngressRule",
    "cookie=0x222ee7483c2, table=L2Forwarding, priority=200,dl_dst=0a:58:0a:f4:00:03 actions=set_field:0x4->reg2,goto_table:ConntrackCommit",
    "cookie=0x222ee7483c2, table=ConntrackState, priority=205,ct_state=+est+trk,ip,nw_src=10.244.0.3,nw_dst=10.244.0.3 actions=set_field:0x10/0x10->reg0,ct(table=L3Forwarding,zone=65001,nat)",
    "cookie=0x222ee7483c2, table=HairpinSNAT, priority=200,ip,nw_src=10.244.0.3,nw_dst=10.244.0.3 actions=set_field:0x40/0x40->reg0,ct(commit,table=AdminEgressRule,zone=65001,nat(src=169.254.169.252))",
    "cookie=0x222ee7483c2, table=Output, priority=210,reg2=0x4,in_port=4 actions=IN_PORT",
}

# No catch-all for the tunnel port: each remote node's own Classifier flow admits it.
GOLDEN_OVERLAY = {
    # ... and from another node too
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=230,ip,in_port=1,nw_src=169.254.169.252 actions=drop",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=100,arp,reg0=0x1/0xf,arp_tpa=10.244.0.0/16,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:ff:ff:ff:fe->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:58:ff:ff:ff:fe->arp_sha,move:NXM_OF_ARP_TPA[]->NXM_NX_REG1[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],move:NXM_NX_REG1[]->NXM_OF_ARP_SPA[],IN_PORT",
}

GOLDEN_REMOTE = {
    # the tunnel accepts only this node's IP as the outer source, and only untagged IPv4
    "cookie=0x315efd58aca, table=Classifier, priority=200,ip,tun_src=192.168.50.11,in_port=1,vlan_tci=0x0000/0x1fff actions=set_field:0x3/0xf->reg0,goto_table:HairpinUnSNAT",
    # nothing in br-int reaches its VXLAN port
    "cookie=0x315efd58aca, table=L3Forwarding, priority=220,udp,nw_dst=192.168.50.11,tp_dst=4789 actions=drop",
    "cookie=0x315efd58aca, table=L3Forwarding, priority=210,ip,reg0=0x3/0xf,nw_dst=10.244.1.0/24 actions=drop",
    "cookie=0x315efd58aca, table=L3Forwarding, priority=150,ip,nw_dst=10.244.1.0/24 actions=set_field:0a:58:0a:f4:00:01->eth_src,set_field:0a:58:0a:f4:01:01->eth_dst,set_field:192.168.50.11->tun_dst,goto_table:AdminIngressRule",
    "cookie=0x315efd58aca, table=L2Forwarding, priority=200,dl_dst=0a:58:0a:f4:01:01 actions=set_field:0x1->reg2,goto_table:ConntrackCommit",
}
# fmt: on


def texts(flows) -> set[str]:
    """The flows as the goldens read: table names for ids. Each is also checked against the
    ovs-ofctl text (ids() of the golden line is exactly what the switch prints)."""
    out = [f.named_text() for f in flows]
    assert len(out) == len(set(out)), "two flows render to the same text"
    assert {ids(t) for t in out} == {f.text() for f in flows}
    return set(out)


# ---- golden ---------------------------------------------------------------------------------


def test_node_flows_golden():
    assert texts(pipeline.node_flows(NODE)) == GOLDEN_NODE


def test_node_ip_adds_one_always_allowed_egress_flow():
    assert texts(pipeline.node_flows(NODE_WITH_IP)) == GOLDEN_NODE | GOLDEN_NODE_IP


def test_overlay_flows_golden():
    assert texts(pipeline.overlay_flows(NODE, OVERLAY)) == GOLDEN_OVERLAY
    assert texts(pipeline.node_flows(NODE, OVERLAY)) == GOLDEN_NODE | GOLDEN_OVERLAY


def test_remote_node_flows_golden():
    assert texts(pipeline.remote_node_flows(NODE, OVERLAY, REMOTE)) == GOLDEN_REMOTE
    # The remote's L2 flow outputs into the tunnel port; its flows carry the node's cookie.
    want = cookie.make("node", pipeline.node_owner(REMOTE))
    assert {f.cookie for f in pipeline.remote_node_flows(NODE, OVERLAY, REMOTE)} == {want}


@pytest.mark.parametrize("pod, golden", [(POD_A, GOLDEN_POD_A), (POD_B, GOLDEN_POD_B)])
def test_pod_flows_golden(pod, golden):
    assert texts(pipeline.pod_flows(NODE, pod)) == golden


def test_node_and_pods_never_claim_the_same_switch_key():
    # Distinct (table, priority, match) keys: installing them all leaves no flow overwritten.
    every = pipeline.node_flows(NODE) | pipeline.pod_flows(NODE, POD_A)
    every |= pipeline.pod_flows(NODE, POD_B)
    dup = [k for k, n in Counter(f.key for f in every).items() if n > 1]
    assert dup == []
    assert len(every) == len(GOLDEN_NODE) + len(GOLDEN_POD_A) + len(GOLDEN_POD_B)


def test_a_full_node_never_claims_the_same_switch_key_twice():
    # ... nor with the node IP, the overlay and a remote node on top.
    every = pipeline.node_flows(NODE_WITH_IP, OVERLAY) | pipeline.pod_flows(NODE_WITH_IP, POD_A)
    every |= pipeline.pod_flows(NODE_WITH_IP, POD_B)
    every |= pipeline.remote_node_flows(NODE_WITH_IP, OVERLAY, REMOTE)
    dup = [k for k, n in Counter(f.key for f in every).items() if n > 1]
    assert dup == []
    golden = (
        GOLDEN_NODE,
        GOLDEN_NODE_IP,
        GOLDEN_OVERLAY,
        GOLDEN_POD_A,
        GOLDEN_POD_B,
        GOLDEN_REMOTE,
    )
    assert texts(every) == set().union(*golden)


def test_text_with_full_cookie_and_table_zero_omitted():
    f = flow("Classifier", 0, {}, (), cookie.make("pipeline", "pipeline"))
    assert f.text() == "cookie=0x1e5bcd38d0b, priority=0 actions=drop"
    assert f.text(cookie=cookie.with_round(f.cookie, 7)) == (
        "cookie=0x701e5bcd38d0b, priority=0 actions=drop"
    )
    # No cookie at all: ovs-ofctl prints neither cookie nor table 0.
    assert flow("Classifier", 0).text() == "priority=0 actions=drop"
    assert flow("SpoofGuard", 0).text() == "table=10, priority=0 actions=drop"


# ---- the Flow value -------------------------------------------------------------------------


def _l2(port=3, ck=0):
    return any_table_flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:02"}, (Output(port),), ck)


def test_flow_remembers_what_it_built_and_still_checks():
    # flow(), as the pipeline calls it: the same arguments, the same value, built once
    assert pipeline.l2_flow("0a:58:0a:f4:00:02", 3, 0) is pipeline.l2_flow(
        "0a:58:0a:f4:00:02", 3, 0
    )
    assert _l2() == _l2()  # any_table_flow (tests only) builds afresh: equal values
    # an int and its text are different arguments but the same flow
    assert any_table_flow("L2Forwarding", 200, {"reg1": 5}) == any_table_flow(
        "L2Forwarding", 200, {"reg1": "0x5"}
    )
    for _ in range(2):  # a bad flow is refused every time, not remembered as good
        with pytest.raises(FlowError):
            any_table_flow("L2Forwarding", 200, {"tp_dst": 80})
    # values that are equal as keys but not as text are refused, not mixed up
    for bad in (
        lambda: any_table_flow("IngressRule", 1.0, {"protocol": "tcp", "tp_dst": 80}),
        lambda: any_table_flow("IngressRule", 1, {"protocol": "tcp", "tp_dst": 80.0}),
        lambda: any_table_flow("IngressRule", 1, {"protocol": "tcp", "tp_dst": True}),
        lambda: any_table_flow("IngressRule", True, {"protocol": "tcp"}),
    ):
        with pytest.raises(FlowError):
            bad()


def test_equal_flows_are_equal_and_hash_alike():
    a = _l2()
    b = Flow(a.table, a.priority, a.match, a.actions, a.cookie)  # built apart from flow()
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"


@pytest.mark.parametrize(
    "other",
    [
        _l2(port=4),  # different actions
        _l2(ck=cookie.make("pod", "pod/x")),  # different cookie
        flow("L2Forwarding", 201, {"dl_dst": "0a:58:0a:f4:00:02"}, (Output(3),)),
        flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:09"}, (Output(3),)),
    ],
)
def test_flows_differing_anywhere_are_unequal(other):
    assert other != _l2()
    assert len({other, _l2()}) == 2


def test_key_ignores_actions_and_cookie():
    a, b = _l2(port=3), _l2(port=4, ck=cookie.make("pod", "pod/x"))
    assert a != b
    assert a.key == b.key == ("L2Forwarding", 200, (("dl_dst", "0a:58:0a:f4:00:02"),))


def test_flow_is_immutable():
    f = _l2()
    for attr, value in [("priority", 1), ("cookie", 5), ("actions", ()), ("match", ())]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(f, attr, value)
    assert isinstance(f.match, tuple)
    assert isinstance(f.actions, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.actions[0].port = 9


def test_replace_recomputes_the_cached_hash():
    f = dataclasses.replace(_l2(), actions=(Output(4),))
    assert f == _l2(port=4)
    assert hash(f) == hash(_l2(port=4))


def test_actions_given_as_list_become_a_tuple():
    f = flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:02"}, [Output(3)])
    assert f == _l2()


# ---- canonical field order ------------------------------------------------------------------


def test_scrambled_match_is_printed_in_ovs_order():
    scrambled = {
        "tp_dst": 443,
        "nw_ttl": 64,
        "dl_dst": "0A:58:0A:F4:00:01",
        "reg1": "0x10/0xf0",
        "tun_id": 7,
        "nw_dst": "10.96.0.0/12",
        "protocol": "tcp",
        "metadata": "0x1",
        "in_port": 5,
        "dl_src": "0a:58:0a:f4:00:09",
        "nw_src": "10.244.0.9",
        "tp_src": 1000,
        "ct_zone": 2,
    }
    f = any_table_flow("L3Forwarding", 100, scrambled, (Output(1),))
    # Verified with `ovs-ofctl -O OpenFlow15 parse-flow` on OVS 3.1.
    assert f.text() == (
        "table=50, priority=100,ct_zone=2,tcp,reg1=0x10/0xf0,tun_id=0x7,metadata=0x1,in_port=5,"
        "dl_src=0a:58:0a:f4:00:09,dl_dst=0a:58:0a:f4:00:01,nw_src=10.244.0.9,nw_dst=10.96.0.0/12,"
        "nw_ttl=64,tp_src=1000,tp_dst=443 actions=output:1"
    )
    again = any_table_flow(
        "L3Forwarding", 100, dict(reversed(list(scrambled.items()))), (Output(1),)
    )
    assert again == f
    assert hash(again) == hash(f)


def test_scrambled_arp_and_icmp_matches():
    arp = any_table_flow(
        "SpoofGuard",
        100,
        {
            "arp_tha": "00:00:00:00:00:00",
            "arp_op": 2,
            "arp_sha": "0a:58:0a:f4:00:09",
            "arp_tpa": "10.244.0.1",
            "arp_spa": "10.244.0.9",
            "protocol": "arp",
            "in_port": 5,
        },
    )
    assert arp.match_text() == (
        "priority=100,arp,in_port=5,arp_spa=10.244.0.9,arp_tpa=10.244.0.1,arp_op=2,"
        "arp_sha=0a:58:0a:f4:00:09,arp_tha=00:00:00:00:00:00"
    )
    icmp = any_table_flow(
        "SpoofGuard",
        100,
        {"icmp_code": 0, "icmp_type": 8, "protocol": "icmp", "nw_src": "10.244.0.9"},
    )
    assert icmp.match_text() == "priority=100,icmp,nw_src=10.244.0.9,icmp_type=8,icmp_code=0"


# ---- any_table_flow() rejects malformed flows ---------------------------------------------------------

_GOTO_L2 = Goto("L2Forwarding")
_IP = {"protocol": "ip"}


@pytest.mark.parametrize(
    "args, error, words",
    [
        (("NoSuchTable", 0), tables.UnknownTable, "NoSuchTable"),
        (("L3Forwarding", 0, {"nw_foo": "1"}), FlowError, "nw_foo"),
        (("L3Forwarding", 0, {"protocol": "ipv9"}), FlowError, "ipv9"),
        (("L3Forwarding", 0, {"nw_src": "10.0.0.1"}), FlowError, "needs ip"),
        (("L3Forwarding", 0, {"protocol": "arp", "nw_dst": "10.0.0.1"}), FlowError, "needs ip"),
        (("SpoofGuard", 0, {"arp_spa": "10.0.0.1"}), FlowError, "needs arp"),
        (("SpoofGuard", 0, {"protocol": "ip", "arp_spa": "10.0.0.1"}), FlowError, "needs arp"),
        (("SpoofGuard", 0, {"protocol": "ip", "arp_op": 1}), FlowError, "needs arp"),
        (("L3Forwarding", 0, {"tp_dst": 80}), FlowError, "tcp, udp or sctp"),
        (("L3Forwarding", 0, {"protocol": "ip", "tp_dst": 80}), FlowError, "tcp, udp or sctp"),
        (("L3Forwarding", 0, {"protocol": "icmp", "tp_src": 80}), FlowError, "tcp, udp or sctp"),
        (("L3Forwarding", 0, {"protocol": "ip", "icmp_type": 8}), FlowError, "needs icmp"),
        (("L3Forwarding", 0, {}, (Goto("Classifier"),)), FlowError, "forward"),
        (("L3Forwarding", 0, {}, (Goto("ARPResponder"),)), FlowError, "forward"),
        (("L3Forwarding", 0, {}, (Goto("L3Forwarding"),)), FlowError, "forward"),
        (("L3Forwarding", 0, {}, (Goto("NoSuchTable"),)), tables.UnknownTable, "NoSuchTable"),
        (("L3Forwarding", 0, {}, (Goto("L2Forwarding"), Output(1))), FlowError, "last"),
        (
            ("Classifier", 0, {}, (Goto("SpoofGuard"), Goto("L2Forwarding"))),
            FlowError,
            "last",
        ),
        (("Classifier", 0, {}, (_GOTO_L2, _GOTO_L2)), FlowError, "once"),  # one object twice
        (("L3Forwarding", 0, {}, (DecTTL(),)), FlowError, "dec_ttl"),
        (("L3Forwarding", 0, {"protocol": "arp"}, (DecTTL(),)), FlowError, "dec_ttl"),
        (("L3Forwarding", 0, {}, ("output:1",)), FlowError, "unsupported action"),
        # conjunction: only with other conjunctions, 1 <= clause <= n_clauses, n_clauses >= 2
        (("EgressRule", 1, _IP, (Conjunction(1, 1, 2), Output(1))), FlowError, "cannot mix"),
        (("EgressRule", 1, _IP, (Output(1), Conjunction(1, 1, 2))), FlowError, "cannot mix"),
        (("EgressRule", 1, _IP, (Conjunction(1, 1, 2), _GOTO_L2)), FlowError, "cannot mix"),
        (("EgressRule", 1, _IP, (CT(1), Conjunction(1, 2, 2))), FlowError, "cannot mix"),
        (("EgressRule", 1, _IP, (Conjunction(1, 0, 2),)), FlowError, "clause 0/2"),
        (("EgressRule", 1, _IP, (Conjunction(1, 3, 2),)), FlowError, "clause 3/2"),
        (("EgressRule", 1, _IP, (Conjunction(1, -1, 2),)), FlowError, "clause -1/2"),
        (("EgressRule", 1, _IP, (Conjunction(1, 1, 1),)), FlowError, "clause 1/1"),
        (("EgressRule", 1, _IP, (Conjunction(1, 1, 0),)), FlowError, "clause 1/0"),
        # ct needs ip, and recirculates forward only
        (("Conntrack", 1, {}, (CT(1),)), FlowError, "needs ip"),
        (("Conntrack", 1, {"protocol": "arp"}, (CT(1, "L3Forwarding"),)), FlowError, "needs ip"),
        (("ConntrackCommit", 1, {}, (CT(1, commit=True),)), FlowError, "needs ip"),
        (("Conntrack", 1, _IP, (CT(1, table="Classifier"),)), FlowError, "forward"),
        (("Conntrack", 1, _IP, (CT(1, table="Conntrack"),)), FlowError, "forward"),
        (("ConntrackCommit", 1, _IP, (CT(1, table="L2Forwarding"),)), FlowError, "forward"),
        (("Conntrack", 1, _IP, (CT(1, table="NoSuchTable"),)), tables.UnknownTable, "NoSuch"),
        # ct_state needs ip (OVS itself does not ask for it; the pipeline only tracks IPv4)
        (("ConntrackState", 1, {"ct_state": "+trk"}), FlowError, "ct_state needs ip"),
        (("ConntrackState", 1, {"protocol": "arp", "ct_state": "+trk"}), FlowError, "needs ip"),
        (("L3Forwarding", -1), FlowError, "priority"),
        (("L3Forwarding", 0x10000), FlowError, "priority"),
    ],
)
def test_flow_rejects(args, error, words):
    with pytest.raises(error, match=words):
        flow(*args)


@pytest.mark.parametrize(
    "args, words",
    [
        # ovs-ofctl: "conjunction must have at most 64 clauses"
        (("EgressRule", 1, _IP, (Conjunction(1, 1, 65),)), "clause"),
        # conjunction ids are 32 bits on the wire
        (("EgressRule", 1, _IP, (Conjunction(1 << 32, 1, 2),)), "conjunction"),
        # ct zones are 16 bits
        (("Conntrack", 1, _IP, (CT(1 << 16),)), "zone"),
        # ct_state() with no flags gives "", and `ct_state=` matches everything in OVS, which then
        # prints no ct_state at all: a flow whose text never matches the switch's dump
        (("ConntrackState", 1, {**_IP, "ct_state": ct_state()}), "ct_state"),
        # OVS refuses ct(commit) in a flow that matches +inv (OFPBAC_MATCH_INCONSISTENT)
        (
            (
                "IngressRule",
                1,
                {**_IP, "ct_state": ct_state(inv=True, trk=True)},
                (CT(1, commit=True),),
            ),
            "inv",
        ),
    ],
)
def test_flow_rejects_what_ovs_refuses(args, words):
    with pytest.raises(FlowError, match=words):
        any_table_flow(*args)


@pytest.mark.parametrize(
    "args",
    [
        ("L3Forwarding", 0),
        ("L3Forwarding", 0xFFFF),
        ("L3Forwarding", 1, {"protocol": "tcp", "tp_dst": 80}),
        ("L3Forwarding", 1, {"protocol": "udp", "tp_src": 53}),
        ("L3Forwarding", 1, {"protocol": "sctp", "tp_dst": "0x1000/0xf000"}),
        ("L3Forwarding", 1, {"protocol": "tcp", "nw_src": "10.0.0.0/8"}),
        ("L3Forwarding", 1, {"protocol": "ip"}, (DecTTL(), Goto("L2Forwarding"))),
        ("Classifier", 1, {}, (SetField("reg0", "0x1/0xf"), Goto("L2Forwarding"))),
        ("ARPResponder", 1, {"protocol": "arp"}, (Move("eth_src", "eth_dst"), InPort())),
        ("EgressRule", 1, _IP, (Conjunction(1, 1, 2),)),
        ("EgressRule", 1, _IP, (Conjunction(1, 2, 2), Conjunction(2, 64, 64))),
        ("EgressRule", 1, {"conj_id": 1, **_IP}, (_GOTO_L2,)),
        ("Conntrack", 1, _IP, (CT(1, table="ConntrackState"),)),
        ("Conntrack", 1, {"protocol": "tcp"}, (CT(1, table="Output", commit=True),)),
        ("ConntrackCommit", 1, {"protocol": "udp"}, (CT(1, commit=True), Goto("Output"))),
        ("ConntrackState", 1, {**_IP, "ct_state": "+trk"}),
        ("ConntrackState", 1, {"protocol": "icmp", "ct_state": ct_state(new=True, trk=True)}),
        ("Output", 1, {}, (OutputReg("reg2"),)),
    ],
)
def test_flow_accepts_the_valid_neighbours(args):
    # The accepted twins of the rejected cases above, so the checks are not simply "reject all".
    assert isinstance(any_table_flow(*args), Flow)


# ---- conntrack, conjunction, output:reg --------------------------------------------------
# Each text below is what `ovs-ofctl -O OpenFlow15 dump-flows` prints on OVS 3.1 for it.


@pytest.mark.parametrize(
    "action, text",
    [
        (OutputReg("reg2"), "output:NXM_NX_REG2[]"),
        (OutputReg("reg5"), "output:NXM_NX_REG5[]"),
        (Conjunction(7, 1, 3), "conjunction(7,1/3)"),
        (Conjunction(7, 3, 3), "conjunction(7,3/3)"),
        (Conjunction(0xFFFFFFFF, 2, 64), "conjunction(4294967295,2/64)"),
        (CT(65000, table="ConntrackState"), "ct(table=31,zone=65000)"),
        (CT(65000, commit=True), "ct(commit,zone=65000)"),
        (CT(5), "ct(zone=5)"),
        # OVS prints commit before table, whatever order they were written in.
        (CT(7, table="L2Forwarding", commit=True), "ct(commit,table=70,zone=7)"),
        (CT(1, table="Output"), "ct(table=90,zone=1)"),
    ],
)
def test_new_action_texts(action, text):
    assert action.text() == text


@pytest.mark.parametrize(
    "action, text",
    [(CT(0, table="Output"), "ct(table=90)"), (CT(0, commit=True), "ct(commit)")],
)
def test_ct_in_zone_zero_prints_no_zone(action, text):
    assert action.text() == text


def test_conjunctive_flows_text():
    clauses = [
        flow("EgressRule", 300, {**_IP, "nw_src": "10.244.0.2"}, (Conjunction(7, 1, 3),)),
        flow(
            "EgressRule",
            300,
            {**_IP, "nw_dst": "10.244.0.0/16"},
            (Conjunction(7, 2, 3), Conjunction(8, 1, 2)),
        ),
        flow("EgressRule", 300, {"protocol": "tcp", "tp_dst": 80}, (Conjunction(7, 3, 3),)),
        flow("EgressRule", 300, {"conj_id": 7, **_IP}, (Goto("L3Forwarding"),)),
    ]
    assert [f.text() for f in clauses] == [
        "table=40, priority=300,ip,nw_src=10.244.0.2 actions=conjunction(7,1/3)",
        "table=40, priority=300,ip,nw_dst=10.244.0.0/16 actions=conjunction(7,2/3),"
        "conjunction(8,1/2)",
        "table=40, priority=300,tcp,tp_dst=80 actions=conjunction(7,3/3)",
        "table=40, priority=300,conj_id=7,ip actions=goto_table:50",
    ]


def test_ct_flows_text():
    assert any_table_flow(
        "ConntrackCommit", 100, _IP, (CT(1, commit=True), OutputReg("reg5"))
    ).text() == ("table=80, priority=100,ip actions=ct(commit,zone=1),output:NXM_NX_REG5[]")
    state = ct_state(new=True, est=False, rel=False, rpl=True, inv=False, trk=True)
    assert any_table_flow("IngressRule", 300, {"ct_state": state, **_IP}).text() == (
        "table=60, priority=300,ct_state=+new-est-rel+rpl-inv+trk,ip actions=drop"
    )
    # ct_state keeps its case (+trk), unlike the other fields, which are lower-cased.
    assert any_table_flow(
        "IngressRule", 1, {"protocol": "tcp", "ct_state": "-trk"}
    ).match_text() == ("priority=1,ct_state=-trk,tcp")


@pytest.mark.parametrize(
    "flags, text",
    [
        ({"trk": True}, "+trk"),
        ({"trk": False}, "-trk"),
        ({"new": True, "trk": True}, "+new+trk"),
        ({"trk": True, "new": True}, "+new+trk"),  # keyword order does not matter
        ({"trk": True, "new": False}, "-new+trk"),
        ({"trk": True, "inv": True}, "+inv+trk"),
        ({"rpl": True, "est": True, "trk": True}, "+est+rpl+trk"),
        (dict.fromkeys(reversed(CT_FLAGS), True), "+new+est+rel+rpl+inv+trk"),
        (dict.fromkeys(CT_FLAGS, False), "-new-est-rel-rpl-inv-trk"),
    ],
)
def test_ct_state_helper_prints_flags_in_ovs_order(flags, text):
    assert ct_state(**flags) == text


def test_ct_state_flag_order_is_the_ovs_bit_order():
    # CS_NEW 0x01, CS_ESTABLISHED 0x02, CS_RELATED 0x04, CS_REPLY_DIR 0x08, CS_INVALID 0x10,
    # CS_TRACKED 0x20: ovs-ofctl prints the flags from the lowest bit up.
    assert CT_FLAGS == ("new", "est", "rel", "rpl", "inv", "trk")


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"tracked": True}, "tracked"),
        ({"trk": True, "established": True}, "established"),
        ({"snat": True}, "snat"),  # OVS has it; the pipeline does not use NAT
        ({"TRK": True}, "TRK"),
    ],
)
def test_ct_state_helper_rejects_unknown_flags(flags, words):
    with pytest.raises(FlowError, match=words):
        ct_state(**flags)


def test_new_actions_are_immutable_values():
    assert CT(1, table="Output") == CT(1, "Output") and hash(CT(1)) == hash(CT(1))
    assert CT(1, commit=True) != CT(1)
    assert Conjunction(1, 1, 2) != Conjunction(1, 2, 2)
    assert OutputReg("reg2") == OutputReg("reg2")
    for a, attr in [(CT(1), "zone"), (Conjunction(1, 1, 2), "clause"), (OutputReg("r"), "reg")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(a, attr, 2)


# ---- the table list -------------------------------------------------------------------------


def test_table_ids_strictly_increase_and_names_are_unique():
    ids = [t.id for t in tables.PIPELINE]
    names = [t.name for t in tables.PIPELINE]
    assert ids == sorted(set(ids))
    assert all(0 <= i < 255 for i in ids)  # 255 is OFPTT_ALL
    assert len(names) == len(set(names))
    assert tables.PIPELINE[0].id == 0  # OVS starts every packet in table 0
    assert tables.BY_NAME == {t.name: t for t in tables.PIPELINE}
    assert tables.BY_ID == {t.id: t for t in tables.PIPELINE}


def test_every_table_has_one_miss_flow_that_drops_or_goes_to_the_next_table():
    misses = [f for f in pipeline.table_miss_flows()]
    assert sorted(f.table for f in misses) == sorted(t.name for t in tables.PIPELINE)
    for f in misses:
        t = tables.table(f.table)
        assert f.priority == 0
        assert f.match == ()
        assert t.miss in ("drop", "next")
        if t.miss == "drop":
            assert f.actions == ()
        else:
            assert f.actions == (Goto(tables.next_table(t.name).name),)
            idx = tables.PIPELINE.index(t)
            main_path = [u for u in tables.PIPELINE[idx + 1 :] if not u.side]
            assert tables.table(f.actions[0].table) == main_path[0]


def test_side_tables_are_skipped_by_the_pipeline_and_only_resubmitted_to():
    assert tables.next_table("ConntrackState").name == "ServiceLB"
    assert tables.table("SessionAffinity").side and tables.table("SessionAffinity").miss == "drop"
    with pytest.raises(FlowError, match="side tables"):
        flow("ServiceLB", 1, {}, (Resubmit("EndpointDNAT"),))
    f = flow("ServiceLB", 1, {}, (Resubmit("SessionAffinity"), Goto("EndpointDNAT")))
    assert f.actions_text() == "resubmit(,33),goto_table:36"


def test_last_table_drops_and_has_no_next():
    last = tables.PIPELINE[-1]
    assert last.miss == "drop"
    with pytest.raises(tables.UnknownTable):
        tables.next_table(last.name)


def test_table_lookup_helpers():
    assert tables.next_table("Classifier").name == "SpoofGuard"
    assert tables.name_of(70) == "L2Forwarding"
    assert tables.next_table("ARPResponder").name == "HairpinUnSNAT"
    assert tables.next_table("ConntrackState").name == "ServiceLB"
    assert tables.next_table("EndpointDNAT").name == "HairpinSNAT"
    assert tables.next_table("L2Forwarding").name == "ConntrackCommit"
    assert tables.name_of(90) == "Output"
    assert tables.name_of(254) == "254"
    with pytest.raises(tables.UnknownTable, match="Classifier"):  # lists the known tables
        tables.table("nope")


# ---- registers ------------------------------------------------------------------------------


def test_pkt_source_layout():
    f = regs.PKT_SOURCE
    assert (f.reg, f.start, f.end) == (0, 0, 3)
    assert f.mask == 0xF
    assert f.value(regs.FROM_POD) == 2
    assert f.match(regs.FROM_GATEWAY) == ("reg0", "0x1/0xf")
    assert f.match(regs.FROM_POD) == ("reg0", "0x2/0xf")
    assert f.match(regs.FROM_TUNNEL) == ("reg0", "0x3/0xf")
    kinds = {regs.FROM_GATEWAY, regs.FROM_POD, regs.FROM_TUNNEL}
    assert len(kinds) == 3 and 0 not in kinds  # 0 is "not classified"


def test_established_and_out_port_layout():
    assert (regs.ESTABLISHED.reg, regs.ESTABLISHED.start, regs.ESTABLISHED.end) == (0, 4, 4)
    assert regs.ESTABLISHED.match(1) == ("reg0", "0x10/0x10")
    with pytest.raises(ValueError):
        regs.ESTABLISHED.value(2)  # one bit
    assert (regs.OUT_PORT.reg, regs.OUT_PORT.start, regs.OUT_PORT.end) == (2, 0, 31)
    assert regs.OUT_PORT.match(3) == ("reg2", "0x3")  # whole register: output:NXM_NX_REG2[]
    assert regs.OUT_PORT.nxm == "reg2"


def test_register_fields_never_overlap():
    fields = list(regs.ALL.values())
    assert {regs.PKT_SOURCE, regs.ESTABLISHED, regs.OUT_PORT, regs.SCRATCH} <= set(fields)
    for i, a in enumerate(fields):
        for b in fields[i + 1 :]:
            assert a.reg != b.reg or a.mask & b.mask == 0, (a, b)


def test_regfield_shifted_and_full_width():
    mid = regs.RegField(1, 4, 7, "test")
    assert mid.mask == 0xF0
    assert mid.value(3) == 0x30
    assert mid.match(3) == ("reg1", "0x30/0xf0")
    full = regs.RegField(2, 0, 31, "test")
    assert full.mask == 0xFFFFFFFF
    assert full.match(0xDEADBEEF) == ("reg2", "0xdeadbeef")  # no mask when all bits are set


@pytest.mark.parametrize("v", [16, -1, 1 << 32])
def test_regfield_overflow_is_an_error(v):
    with pytest.raises(ValueError, match=r"reg0\[0\.\.3\]"):
        regs.PKT_SOURCE.value(v)
    with pytest.raises(ValueError):
        regs.PKT_SOURCE.match(v)


def test_regfield_match_is_a_valid_flow_match():
    reg, val = regs.PKT_SOURCE.match(regs.FROM_POD)
    f = flow("L3Forwarding", 10, {reg: val})
    assert f.match_text() == "priority=10,reg0=0x2/0xf"


# ---- cookies --------------------------------------------------------------------------------


@pytest.mark.parametrize("feature", sorted(cookie.FEATURES))
@pytest.mark.parametrize("rnd", [1, 2, 0x1234, cookie.MAX_ROUND])
def test_cookie_round_trip(feature, rnd):
    c = cookie.with_round(cookie.make(feature, "pod/3f2a9c1e/eth0"), rnd)
    assert c < 1 << 64
    assert cookie.decode(c) == {
        "round": rnd,
        "feature": feature,
        "owner": cookie.owner_id("pod/3f2a9c1e/eth0"),
    }


def test_with_round_replaces_the_round_and_keeps_the_rest():
    base = cookie.make("pod", "pod/a")
    r1 = cookie.with_round(base, 1)
    r2 = cookie.with_round(r1, 2)
    assert r2 == cookie.with_round(base, 2)  # replaced, not OR-ed (1|2 would be 3)
    assert r2 & ~cookie.ROUND_MASK == base
    assert r2 >> cookie.ROUND_SHIFT == 2


def test_cookie_layout_bits_do_not_overlap():
    assert cookie.ROUND_MASK & cookie.FEATURE_MASK == 0
    assert cookie.FEATURE_MASK & cookie.OWNER_MASK == 0
    assert cookie.ROUND_MASK | cookie.FEATURE_MASK | cookie.OWNER_MASK == (1 << 64) - 1
    assert all(0 < v <= 0xFF for v in cookie.FEATURES.values())
    assert len(set(cookie.FEATURES.values())) == len(cookie.FEATURES)


def test_make_without_owner_and_unknown_feature():
    assert cookie.make("pipeline") == 1 << cookie.FEATURE_SHIFT
    assert cookie.decode(cookie.make("pipeline"))["owner"] == 0
    assert cookie.decode(0x7F << cookie.FEATURE_SHIFT)["feature"] == "unknown(127)"
    with pytest.raises(KeyError):
        cookie.make("nosuchfeature", "x")


def test_owner_id_is_stable_and_spread():
    # Pinned values: the id must be the same after a restart and on every node
    # (Python's own hash() is salted per process and would not be).
    # They are the owner bits of the golden cookies above (feature 1 = pipeline, 2 = pod).
    assert cookie.owner_id("pipeline") == 0xE5BCD38D0B
    assert cookie.owner_id("pod/3f2a9c1e/eth0") == 0x8D0BC6746F
    ids = {cookie.owner_id(f"pod/{i:08x}/eth0") for i in range(1000)}
    assert len(ids) == 1000
    assert all(0 < i <= cookie.OWNER_MASK for i in ids)


def test_owner_id_is_never_zero(monkeypatch):
    class ZeroDigest:
        def __init__(self, data, digest_size):
            self.size = digest_size

        def digest(self):
            return bytes(self.size)

    monkeypatch.setattr(cookie.hashlib, "blake2b", ZeroDigest)
    assert cookie.owner_id("unlucky") == 1


@pytest.mark.parametrize("rnd", [0, -1, cookie.MAX_ROUND + 1])
def test_round_out_of_range(rnd):
    with pytest.raises(ValueError, match="round"):
        cookie.with_round(cookie.make("pod", "pod/a"), rnd)


# ---- model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip, mac",
    [
        ("10.244.0.2", "0a:58:0a:f4:00:02"),
        ("192.168.255.1", "0a:58:c0:a8:ff:01"),
        ("0.0.0.0", "0a:58:00:00:00:00"),
    ],
)
def test_mac_from_ip(ip, mac):
    assert mac_from_ip(ip) == mac


def test_node_net_for_cidr_normalises():
    n = NodeNet.for_cidr("10.244.3.77/24", 9)
    assert n == NodeNet("10.244.3.0/24", "10.244.3.1", "0a:58:0a:f4:03:01", 9)
    assert NODE.gw_ip == "10.244.0.1"
    assert NODE.gw_mac == mac_from_ip(NODE.gw_ip)


# ---- properties of the pod flows ------------------------------------------------------------


def test_pod_flows_are_idempotent():
    one, two = pipeline.pod_flows(NODE, POD_A), pipeline.pod_flows(NODE, POD_A)
    assert isinstance(one, frozenset)
    assert one == two
    assert hash(one) == hash(two)
    assert pipeline.node_flows(NODE) == pipeline.node_flows(NODE)


@pytest.mark.parametrize("pod", [POD_A, POD_B])
def test_every_pod_flow_carries_the_pods_cookie(pod):
    want = cookie.make("pod", pipeline.pod_owner(pod))
    flows = pipeline.pod_flows(NODE, pod)
    assert flows
    for f in flows:
        assert f.cookie == want, f
        assert cookie.decode(f.cookie) == {
            "round": 0,  # the controller adds the round
            "feature": "pod",
            "owner": cookie.owner_id(pipeline.pod_owner(pod)),
        }
    for f in pipeline.node_flows(NODE):
        assert cookie.decode(f.cookie)["feature"] == "pipeline"


def test_pod_owner_follows_the_key_not_the_ofport():
    # ofport reuse: OVS may give a new pod an old pod's ofport, so ownership must not follow it.
    moved = dataclasses.replace(POD_A, ofport=99)
    other = dataclasses.replace(POD_B, ofport=POD_A.ofport)
    assert pipeline.pod_owner(moved) == pipeline.pod_owner(POD_A)
    assert pipeline.pod_owner(other) != pipeline.pod_owner(POD_A)
    ck = {f.cookie for f in pipeline.pod_flows(NODE, other)}
    assert ck == {cookie.make("pod", pipeline.pod_owner(POD_B))}


def out_ports(f: Flow) -> set[int]:
    """The ports a flow sends to: output:N, or the port it loads into OUT_PORT for Output."""
    reg = f"reg{regs.OUT_PORT.reg}"
    ports = {a.port for a in f.actions if isinstance(a, Output)}
    ports |= {int(a.value, 16) for a in f.actions if isinstance(a, SetField) and a.field == reg}
    return ports


@pytest.mark.parametrize("pod, other", [(POD_A, POD_B), (POD_B, POD_A)])
def test_pod_flows_never_touch_another_pods_port_or_addresses(pod, other):
    for f in pipeline.pod_flows(NODE, pod):
        m = dict(f.match)
        assert m.get("in_port", str(pod.ofport)) == str(pod.ofport), f
        assert other.ofport not in out_ports(f), f
        assert other.ip not in f.text(), f
        assert other.mac not in f.text(), f


def test_pod_flows_match_their_own_port_and_output_only_to_it():
    flows = pipeline.pod_flows(NODE, POD_A)
    in_ports = {dict(f.match).get("in_port") for f in flows} - {None}
    outputs = set().union(*(out_ports(f) for f in flows))
    assert in_ports == {str(POD_A.ofport)}
    assert outputs == {POD_A.ofport}
    # Pods never output directly: the port goes into reg2 and every packet leaves by the one
    # Output flow, after ConntrackCommit.
    assert not any(isinstance(a, Output) for f in flows for a in f.actions)
    (l2,) = [f for f in flows if f.table == "L2Forwarding"]
    assert l2.actions == (SetField(*regs.OUT_PORT.match(POD_A.ofport)), Goto("ConntrackCommit"))


def test_every_l2_flow_goes_through_conntrack_commit_and_only_output_outputs():
    every = pipeline.node_flows(NODE_WITH_IP, OVERLAY) | pipeline.pod_flows(NODE, POD_A)
    every |= pipeline.remote_node_flows(NODE, OVERLAY, REMOTE)
    for f in every:
        if f.table == "L2Forwarding" and f.priority:
            assert f.actions[-1] == Goto("ConntrackCommit"), f
            assert len(out_ports(f)) == 1, f
        kinds = {type(a) for a in f.actions}
        assert not kinds & {Output, OutputReg} or f.table == "Output", f
    outputs = [f for f in every if any(isinstance(a, OutputReg) for a in f.actions)]
    assert [f.text() for f in outputs] == [
        "cookie=0x1e5bcd38d0b, table=90, priority=200 actions=output:NXM_NX_REG2[]"
    ]
    # The tunnel port is reached the same way, for the remote node's gateway MAC.
    (l2,) = [
        f for f in pipeline.remote_node_flows(NODE, OVERLAY, REMOTE) if f.table == "L2Forwarding"
    ]
    assert out_ports(l2) == {OVERLAY.tun_ofport}


# ---- scaling --------------------------------------------------------------------------------


def _all_flows(n):
    out = set(pipeline.node_flows(NODE))
    for i in range(n):
        ip = f"10.244.0.{i + 2}"
        out |= pipeline.pod_flows(NODE, PodPort(f"{i:08x}/eth0", 3 + i, ip, mac_from_ip(ip)))
    return out


def test_flow_count_grows_linearly_with_pods():
    base = len(pipeline.node_flows(NODE))
    per_pod = len(pipeline.pod_flows(NODE, POD_A))
    counts = {n: len(_all_flows(n)) for n in (0, 1, 10, 100)}
    assert counts == {n: base + per_pod * n for n in counts}
    # 10x the pods costs at most ~10x the flows, never pods x pods.
    assert counts[100] <= 10 * counts[10]


# ---- regressions found by review --------------------------------------------------


def test_conj_id_is_printed_in_decimal():
    # `ovs-ofctl parse-flow 'conj_id=3,actions=drop'` prints conj_id=3 on OVS 3.1.
    assert (
        any_table_flow("L3Forwarding", 10, {"conj_id": 3}).match_text() == "priority=10,conj_id=3"
    )


@pytest.mark.parametrize("field, ovs", [("ipv4_src", "ip_src"), ("ipv4_dst", "ip_dst")])
def test_set_field_ipv4_target_is_named_as_ovs_prints_it(field, ovs):
    assert SetField(field, "10.0.0.1").text() == f"set_field:10.0.0.1->{ovs}"


def test_a_flow_survives_pickling_into_another_process_with_its_hash_right():
    import pickle
    import subprocess
    import sys

    f = flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:02"}, (Output(3),))
    code = (
        "import pickle,sys; from flows.flow import flow, Output;"
        "g = pickle.loads(sys.stdin.buffer.read());"
        "h = flow('L2Forwarding', 200, {'dl_dst': '0a:58:0a:f4:00:02'}, (Output(3),));"
        "print(len({g, h}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(f),
        capture_output=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": "."},
        check=True,
    )
    assert out.stdout.strip() == b"1"


@pytest.mark.parametrize(
    "given, shown",
    [
        ("10.244.1.2/32", "10.244.1.2"),
        ("10.244.1.2", "10.244.1.2"),
        ("10.244.1.2/24", "10.244.1.0/24"),
        ("10.244.0.0/255.255.0.0", "10.244.0.0/16"),
    ],
)
def test_ipv4_match_values_are_written_as_ovs_prints_them(given, shown):
    """`ovsctl flows --diff` compares desired and installed text: a /32 ipBlock must not look
    different from the installed nw_dst=10.244.1.2 forever."""
    for field in ("nw_dst", "nw_src"):
        f = flow("IngressRule", 100, {"protocol": "ip", field: given})
        assert dict(f.match)[field] == shown
        assert f"{field}={shown}" in f.text()


def test_a_slash_zero_match_is_no_match_at_all():
    f = flow("EgressRule", 100, {"protocol": "ip", "nw_dst": "0.0.0.0/0"})
    assert f == flow("EgressRule", 100, {"protocol": "ip"})


def test_a_malformed_address_is_refused():
    with pytest.raises(FlowError, match="nw_dst"):
        flow("EgressRule", 100, {"protocol": "ip", "nw_dst": "10.0.0.300"})


# ---- the overlay trust boundary (issue 14) --------------------------------------------------

REMOTE_C = RemoteNode("node-c", "10.244.2.0/24", "192.168.50.12")


def _full_node(remotes=(REMOTE, REMOTE_C)) -> frozenset:
    every = pipeline.node_flows(NODE_WITH_IP, OVERLAY)
    every |= pipeline.pod_flows(NODE_WITH_IP, POD_A) | pipeline.pod_flows(NODE_WITH_IP, POD_B)
    for r in remotes:
        every |= pipeline.remote_node_flows(NODE_WITH_IP, OVERLAY, r)
    return every


def test_the_tunnel_is_accepted_only_from_known_node_ips_and_only_untagged_ipv4():
    every = _full_node()
    from_tunnel = [
        f
        for f in every
        if f.table == "Classifier"
        and dict(f.match).get("in_port") == str(OVERLAY.tun_ofport)
        and f.actions  # not the forged hairpin source's drop
    ]
    by_src = {dict(f.match)["tun_src"]: f for f in from_tunnel}
    assert set(by_src) == {REMOTE.node_ip, REMOTE_C.node_ip}  # no catch-all, nothing else
    for f in from_tunnel:
        assert dict(f.match) == {
            "protocol": "ip",
            "tun_src": dict(f.match)["tun_src"],
            "in_port": "1",
            "vlan_tci": "0x0000/0x1fff",
        }
    # each belongs to its node: the node leaving takes its admission with it
    assert by_src[REMOTE_C.node_ip].cookie == cookie.make("node", pipeline.node_owner(REMOTE_C))
    # anything else from the tunnel meets the Classifier's drop
    (miss,) = [f for f in every if f.table == "Classifier" and f.priority == 0]
    assert miss.actions == ()
    # with no other node known, the tunnel accepts nothing at all
    alone = pipeline.node_flows(NODE_WITH_IP, OVERLAY)
    assert not [
        f for f in alone if dict(f.match).get("in_port") == str(OVERLAY.tun_ofport) and f.actions
    ]


def test_no_packet_in_br_int_reaches_any_nodes_vxlan_port():
    every = _full_node()
    drops = [f for f in every if f.table == "L3Forwarding" and f.priority == pipeline.PRIO_NO_ENCAP]
    ips = {NODE_WITH_IP.node_ip, REMOTE.node_ip, REMOTE_C.node_ip}
    assert {dict(f.match)["nw_dst"] for f in drops} == ips
    for f in drops:
        # whatever the source (pod, or the gateway after a NodePort's DNAT), after DNAT, and
        # above every other L3Forwarding flow
        assert dict(f.match) == {
            "protocol": "udp",
            "nw_dst": dict(f.match)["nw_dst"],
            "tp_dst": "4789",
        }
        assert f.actions == ()
    others = [f.priority for f in every if f.table == "L3Forwarding" and f not in drops]
    assert max(others) < pipeline.PRIO_NO_ENCAP
    # the remote node's drop goes with the node, the local one is the pipeline's
    owners = {dict(f.match)["nw_dst"]: f.cookie for f in drops}
    assert owners[REMOTE.node_ip] == cookie.make("node", pipeline.node_owner(REMOTE))
    assert owners[NODE_WITH_IP.node_ip] == cookie.make("pipeline", pipeline.pipeline_owner())
    # a node without an IP (no overlay) has none
    assert not [f for f in pipeline.node_flows(NODE) if f.priority == pipeline.PRIO_NO_ENCAP]


def test_every_forward_flow_that_matches_in_traffic_from_a_pod_is_untagged_ipv4_or_arp():
    """SpoofGuard admits only untagged IPv4 and ARP with the pod's own addresses: IPv6, any
    other ethertype and 802.1Q-tagged frames (OVS parses through the tag, so `ip` alone
    would match a tagged frame) meet its drop, whatever the destination."""
    guard = [f for f in _full_node() if f.table == "SpoofGuard"]
    admitting = [f for f in guard if f.actions]
    assert len(admitting) == 4  # ip + arp for each pod
    for f in admitting:
        m = dict(f.match)
        assert m["protocol"] in ("ip", "arp")
        assert m["vlan_tci"] == "0x0000/0x1fff"
        assert m["in_port"] in ("3", "4") and m["dl_src"]
        assert m.get("nw_src") or m.get("arp_spa")
    assert [f.actions for f in guard if not f.actions] == [()]  # and the miss drops


@pytest.mark.parametrize(
    "given, shown",
    [
        ("0x0000/0x1fff", "0x0000/0x1fff"),
        ("0/0x1FFF", "0x0000/0x1fff"),
        ("0x0/0x1000", "0x0000/0x1000"),
    ],
)
def test_vlan_tci_is_written_as_ovs_prints_it_after_in_port(given, shown):
    f = flow("SpoofGuard", 1, {"dl_src": "0a:58:0a:f4:00:02", "vlan_tci": given, "in_port": 3})
    assert f.match_text() == f"priority=1,in_port=3,vlan_tci={shown},dl_src=0a:58:0a:f4:00:02"


@pytest.mark.parametrize("v", ["0x1005/0x1fff", "0x0000/0x0fff", "0x0005/0x1000", "vlan", 0x1005])
def test_vlan_tci_other_than_untagged_is_refused(v):
    # OVS would print these as dl_vlan=/dl_vlan_pcp= or not at all: refused, not mistranslated
    with pytest.raises(FlowError, match="vlan_tci"):
        flow("SpoofGuard", 1, {"vlan_tci": v})


# ---- tables declare what their flows may do ---------------------------------------------------


def test_a_flow_outside_its_tables_declarations_is_refused():
    with pytest.raises(FlowError, match="L2Forwarding: does not match on in_port"):
        flow("L2Forwarding", 200, {"in_port": 3})
    with pytest.raises(FlowError, match="Classifier: does not set reg2"):
        flow("Classifier", 200, {"in_port": 3}, (SetField("reg2", "0x3"),))
    with pytest.raises(FlowError, match="Classifier: does not go on to L2Forwarding"):
        flow("Classifier", 200, {"in_port": 3}, (Goto("L2Forwarding"),))
    # the table-miss's next table is always allowed
    assert flow("Classifier", 0, {}, (Goto("SpoofGuard"),))


def test_every_declaration_is_used_by_the_pipeline():
    """The declarations are what the tools draw: nothing declared that no flow does."""
    from tests.fakes import oftable  # noqa: F401 - the fake's own pipelines build the same flows

    flows = set(pipeline.node_flows(NODE_WITH_IP, OVERLAY))
    flows |= pipeline.pod_flows(NODE, POD_A) | pipeline.remote_node_flows(NODE, OVERLAY, REMOTE)
    flows |= pipeline.node_flows(NODE6, OVERLAY6) | pipeline.pod_flows(NODE6, POD_A6)
    used: dict[str, set] = {t.name: set() for t in tables.PIPELINE}
    for f in flows:
        used[f.table] |= {k for k, _ in f.match}
    # the pipeline's own tables (policy and Service tables are filled by their modules)
    names = ("Classifier", "SpoofGuard", "ARPResponder", "NDReply", "L2Forwarding", "Output")
    for name in names:
        assert used[name] == set(tables.table(name).match), name


# ---- dual stack (issue 16) ---------------------------------------------------------------------
# A dual-stack node, pod and remote node make every IPv4 flow above (the same text) and these
# IPv6 ones besides. Checked against OVS's decoder in test_ofconv (ovs-ofctl ofp-parse).

NODE6 = NodeNet.for_cidrs(
    ("10.244.0.0/24", "fd00:10:244::/64"), gw_ofport=2, node_ips=("192.168.50.10",)
)
OVERLAY6 = Overlay(1, "10.244.0.0/16", ("10.244.0.0/16", "fd00:10:244::/56"))
REMOTE6 = RemoteNode(
    "node-b", "10.244.1.0/24", "192.168.50.11", ("10.244.1.0/24", "fd00:10:244:1::/64")
)
POD_A6 = dataclasses.replace(POD_A, ips=("10.244.0.2", "fd00:10:244::2"))

# fmt: off
GOLDEN_NODE6 = {
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=230,ipv6,in_port=1,ipv6_src=fd00:ffff::a9fe:a9fc actions=drop",
    "cookie=0x1e5bcd38d0b, table=Classifier, priority=230,ipv6,in_port=2,ipv6_src=fd00:ffff::a9fe:a9fc actions=drop",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=100,icmp6,reg0=0x1/0xf,icmp_type=135,nd_target=fd00:10:244::/56 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:ff:ff:ff:fe->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],move:NXM_NX_ND_TARGET[]->NXM_NX_IPV6_SRC[],set_field:136->icmpv6_type,set_field:0->icmpv6_code,set_field:3758096384->nd_reserved,set_field:2->nd_options_type,resubmit(,NDReply)",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=200,icmp6,icmp_type=135,nd_target=fd00:10:244::1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:01->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00:10:244::1->ipv6_src,set_field:136->icmpv6_type,set_field:0->icmpv6_code,set_field:3758096384->nd_reserved,set_field:2->nd_options_type,resubmit(,NDReply)",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=200,icmp6,icmp_type=135,nd_target=fe80::858:aff:fef4:1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:01->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fe80::858:aff:fef4:1->ipv6_src,set_field:136->icmpv6_type,set_field:0->icmpv6_code,set_field:3758096384->nd_reserved,set_field:2->nd_options_type,resubmit(,NDReply)",
    "cookie=0x1e5bcd38d0b, table=ARPResponder, priority=210,icmp6,ipv6_src=::,icmp_type=135 actions=drop",
    "cookie=0x1e5bcd38d0b, table=Conntrack, priority=200,ipv6 actions=ct(table=ConntrackState,zone=65000,nat)",
    "cookie=0x1e5bcd38d0b, table=ConntrackCommit, priority=200,ct_state=+new+trk,ipv6 actions=ct(commit,zone=65000),goto_table:Output",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=199,ct_state=+rel+trk,ipv6 actions=set_field:0x10/0x10->reg0,goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=200,ct_state=+est+trk,ipv6 actions=set_field:0x10/0x10->reg0,goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=206,ct_state=+est-rpl+trk,ct_mark=0x1/0x1,ipv6 actions=set_field:0x10/0x10->reg0,ct(table=L3Forwarding,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=ConntrackState, priority=210,ct_state=+inv+trk,ipv6 actions=drop",
    "cookie=0x1e5bcd38d0b, table=EgressRule, priority=65000,ipv6,ipv6_dst=fd00:10:244::1 actions=goto_table:L3Forwarding",
    "cookie=0x1e5bcd38d0b, table=HairpinSNAT, priority=200,ct_state=+new+trk,ct_mark=0x1/0x1,ipv6 actions=ct(commit,table=AdminEgressRule,zone=65001,nat(src=fd00:10:244::1))",
    "cookie=0x1e5bcd38d0b, table=HairpinUnSNAT, priority=200,ipv6,ipv6_dst=fd00:10:244::1 actions=ct(table=Conntrack,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=HairpinUnSNAT, priority=200,ipv6,ipv6_dst=fd00:ffff::a9fe:a9fc actions=ct(table=Conntrack,zone=65001,nat)",
    "cookie=0x1e5bcd38d0b, table=AdminIngressRule, priority=64999,ipv6,reg0=0x1/0xf,ipv6_src=fd00:10:244::1 actions=goto_table:L2Forwarding",
    "cookie=0x1e5bcd38d0b, table=NDReply, priority=0 actions=drop",
    "cookie=0x1e5bcd38d0b, table=NDReply, priority=200,icmp6,icmp_type=136 actions=move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=205,icmp6,icmp_type=135 actions=drop",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=205,icmp6,icmp_type=136 actions=drop",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=220,icmp6,icmp_type=134 actions=drop",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=220,icmp6,icmp_type=137 actions=drop",
    "cookie=0x1e5bcd38d0b, table=SpoofGuard, priority=220,udp6,tp_src=547 actions=drop",
}
GOLDEN_REMOTE6 = {
    "cookie=0x315efd58aca, table=Classifier, priority=200,ipv6,tun_src=192.168.50.11,in_port=1,vlan_tci=0x0000/0x1fff actions=set_field:0x3/0xf->reg0,goto_table:HairpinUnSNAT",
    "cookie=0x315efd58aca, table=L3Forwarding, priority=150,ipv6,ipv6_dst=fd00:10:244:1::/64 actions=set_field:0a:58:0a:f4:00:01->eth_src,set_field:0a:58:0a:f4:01:01->eth_dst,set_field:192.168.50.11->tun_dst,goto_table:AdminIngressRule",
    "cookie=0x315efd58aca, table=L3Forwarding, priority=210,ipv6,reg0=0x3/0xf,ipv6_dst=fd00:10:244:1::/64 actions=drop",
}
GOLDEN_POD_A6 = {
    "cookie=0x28d0bc6746f, table=ARPResponder, priority=200,icmp6,icmp_type=135,nd_target=fd00:10:244::2 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:02->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00:10:244::2->ipv6_src,set_field:136->icmpv6_type,set_field:0->icmpv6_code,set_field:1610612736->nd_reserved,set_field:2->nd_options_type,resubmit(,NDReply)",
    "cookie=0x28d0bc6746f, table=ARPResponder, priority=200,icmp6,icmp_type=135,nd_target=fe80::858:aff:fef4:2 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:0a:f4:00:02->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fe80::858:aff:fef4:2->ipv6_src,set_field:136->icmpv6_type,set_field:0->icmpv6_code,set_field:1610612736->nd_reserved,set_field:2->nd_options_type,resubmit(,NDReply)",
    "cookie=0x28d0bc6746f, table=ConntrackState, priority=205,ct_state=+est+trk,ipv6,ipv6_src=fd00:10:244::2,ipv6_dst=fd00:10:244::2 actions=set_field:0x10/0x10->reg0,ct(table=L3Forwarding,zone=65001,nat)",
    "cookie=0x28d0bc6746f, table=HairpinSNAT, priority=200,ipv6,ipv6_src=fd00:10:244::2,ipv6_dst=fd00:10:244::2 actions=set_field:0x40/0x40->reg0,ct(commit,table=AdminEgressRule,zone=65001,nat(src=fd00:ffff::a9fe:a9fc))",
    "cookie=0x28d0bc6746f, table=L3Forwarding, priority=200,ipv6,dl_dst=0a:58:0a:f4:00:01,ipv6_dst=fd00:10:244::2 actions=set_field:0a:58:0a:f4:00:01->eth_src,set_field:0a:58:0a:f4:00:02->eth_dst,dec_ttl,goto_table:AdminIngressRule",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=200,ipv6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=200,ipv6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=135,nd_sll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=136,nd_target=fd00:10:244::2,nd_tll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=136,nd_target=fd00:10:244::2,nd_tll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=136,nd_target=fe80::858:aff:fef4:2,nd_tll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fd00:10:244::2,icmp_type=136,nd_target=fe80::858:aff:fef4:2,nd_tll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=135,nd_sll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=136,nd_target=fd00:10:244::2,nd_tll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=136,nd_target=fd00:10:244::2,nd_tll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=136,nd_target=fe80::858:aff:fef4:2,nd_tll=00:00:00:00:00:00 actions=goto_table:ARPResponder",
    "cookie=0x28d0bc6746f, table=SpoofGuard, priority=210,icmp6,in_port=3,vlan_tci=0x0000/0x1fff,dl_src=0a:58:0a:f4:00:02,ipv6_src=fe80::858:aff:fef4:2,icmp_type=136,nd_target=fe80::858:aff:fef4:2,nd_tll=0a:58:0a:f4:00:02 actions=goto_table:ARPResponder",
}
# fmt: on


def test_dual_stack_node_flows_golden():
    from flows.policy import icmp6_always_flows  # the policy tables' share (test_policy_flows_v6)

    v4 = texts(pipeline.node_flows(NODE_WITH_IP, OVERLAY))
    ck = cookie.make("pipeline", pipeline.pipeline_owner())
    policy_share = icmp6_always_flows(pipeline.PRIO_ALWAYS, ck)
    assert policy_share <= pipeline.node_flows(NODE6, OVERLAY6)
    assert texts(pipeline.node_flows(NODE6, OVERLAY6) - policy_share) == v4 | GOLDEN_NODE6


def test_dual_stack_remote_node_flows_golden():
    v4 = texts(pipeline.remote_node_flows(NODE_WITH_IP, OVERLAY, REMOTE))
    assert texts(pipeline.remote_node_flows(NODE6, OVERLAY6, REMOTE6)) == v4 | GOLDEN_REMOTE6


def test_dual_stack_pod_flows_golden():
    v4 = texts(pipeline.pod_flows(NODE_WITH_IP, POD_A))
    assert texts(pipeline.pod_flows(NODE6, POD_A6)) == v4 | GOLDEN_POD_A6


def test_an_ipv6_only_node_has_no_ipv4_flows_and_no_arp():
    node = NodeNet.for_cidrs(("fd00:10:244::/64",), 2, ("192.168.50.10",))
    pod = PodPort("3f2a9c1e/eth0", 3, "fd00:10:244::2", mac_from_ip("fd00:10:244::2"))
    every = pipeline.node_flows(node, Overlay(1, "fd00:10:244::/56")) | pipeline.pod_flows(
        node, pod
    )
    every |= pipeline.remote_node_flows(
        node, Overlay(1, "fd00:10:244::/56"), RemoteNode("b", "fd00:10:244:1::/64", "192.168.50.11")
    )
    protos = {dict(f.match).get("protocol") for f in every} - {None}
    # the VXLAN guard stays on the IPv4 underlay; nothing else is IPv4
    assert protos == {"ipv6", "icmp6", "udp6", "udp"}
    assert [f for f in every if dict(f.match).get("protocol") == "udp"] == [
        f for f in every if f.table == "L3Forwarding" and f.priority == pipeline.PRIO_NO_ENCAP
    ]
    assert texts(every)  # every flow renders and round-trips to ovs-ofctl's text


def test_spoof_guard_ipv6_drops_are_above_every_pods_admission():
    every = pipeline.node_flows(NODE6, OVERLAY6) | pipeline.pod_flows(NODE6, POD_A6)
    guard = [f for f in every if f.table == "SpoofGuard"]
    drops = {f for f in guard if not f.actions and f.priority}
    router = {f for f in drops if dict(f.match).get("icmp_type") in ("134", "137")}
    dhcp = {f for f in drops if dict(f.match).get("tp_src") == "547"}
    nd = drops - router - dhcp
    assert len(router) == 2 and len(dhcp) == 1 and len(nd) == 2
    admits = [f for f in guard if f.actions]
    assert min(f.priority for f in router | dhcp) > max(f.priority for f in admits)
    nd_admits = [f for f in admits if dict(f.match).get("protocol") == "icmp6"]
    assert len(nd_admits) == 12 and min(f.priority for f in nd_admits) > max(f.priority for f in nd)
    for f in admits:
        m = dict(f.match)
        assert m["in_port"] == "3" and m["dl_src"] == POD_A.mac
        assert m["vlan_tci"] == "0x0000/0x1fff"
        assert m.get("nd_sll", POD_A.mac) in (POD_A.mac, "00:00:00:00:00:00")
        assert m.get("nd_tll", POD_A.mac) in (POD_A.mac, "00:00:00:00:00:00")


def test_nd_reply_is_a_side_table_only_ipv6_nodes_have():
    t = tables.table("NDReply")
    assert t.side and t.ipv6_only and t.miss == "drop"
    assert "NDReply" in tables.table("ARPResponder").next
    assert tables.next_table("ARPResponder").name == "HairpinUnSNAT"
    v4 = {f.table for f in pipeline.node_flows(NODE_WITH_IP, OVERLAY)}
    assert "NDReply" not in v4
    assert "NDReply" in {f.table for f in pipeline.node_flows(NODE6, OVERLAY6)}
    with pytest.raises(FlowError, match="NDReply: does not set nd_sll"):
        flow("NDReply", 1, {"protocol": "icmp6"}, (SetField("nd_sll", "00:00:00:00:00:01"),))


def test_a_remote_nodes_ipv6_cidr_is_not_routed_by_an_ipv4_only_node():
    flows = pipeline.remote_node_flows(NODE_WITH_IP, OVERLAY, REMOTE6)
    assert texts(flows) == texts(pipeline.remote_node_flows(NODE_WITH_IP, OVERLAY, REMOTE))
