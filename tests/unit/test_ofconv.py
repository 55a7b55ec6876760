"""Unit tests for ovsctl.ofconv: Flow values to os-ken OpenFlow 1.4 messages, without a switch.

The messages are built against a stub datapath and serialised to bytes; os-ken parses them back,
and where `ovs-ofctl` is installed, OVS's own decoder must print the same match and actions as
Flow.text() (the golden strings of test_flows.py).
"""

import struct
import types

# os-ken needs app_manager imported before its controller/ofproto modules (circular import).
import os_ken.base.app_manager  # noqa: F401
import pytest
from os_ken.ofproto import (
    nicira_ext,
    ofproto_common,
    ofproto_parser,
    ofproto_v1_4,
    ofproto_v1_4_parser,
)

from flows import cookie, pipeline, regs, services
from flows.flow import (
    CT,
    Conjunction,
    DecTTL,
    FlowError,
    Goto,
    InPort,
    Learn,
    Move,
    Multipath,
    Output,
    OutputReg,
    Resubmit,
    SetField,
    ct_state,
)
from flows.flow import any_table_flow as flow  # the encoder takes any field in any table
from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
from ovsctl.openflow import encode as ofconv
from tests.ofparse import HAVE_OVS_OFCTL, assert_ovs_decodes_as_text

OFP = ofproto_v1_4
PARSER = ofproto_v1_4_parser
NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2, node_ip="192.168.50.10")
OVERLAY = Overlay(tun_ofport=1, cluster_cidr="10.244.0.0/16")
REMOTE = RemoteNode("node-b", "10.244.1.0/24", "192.168.50.11")
PODS = [
    PodPort("3f2a9c1e/eth0", 3, "10.244.0.2", mac_from_ip("10.244.0.2")),
    PodPort("7b41d0aa/eth0", 4, "10.244.0.3", mac_from_ip("10.244.0.3")),
]
IP = {"protocol": "ip"}
POLICY = cookie.make("policy", "policy/default/web")
# Not (yet) made by the pipeline: a three-clause conjunction with its conj_id flow, a flow in
# two conjunctions at once, every ct_state flag both ways, ct(commit,table=) and output:reg
# from another register.
EXTRA_FLOWS = [
    flow("EgressRule", 300, {**IP, "nw_src": "10.244.0.2"}, (Conjunction(7, 1, 3),), POLICY),
    flow(
        "EgressRule",
        300,
        {**IP, "nw_dst": "10.244.0.0/16"},
        (Conjunction(7, 2, 3), Conjunction(8, 1, 2)),
        POLICY,
    ),
    flow("EgressRule", 300, {"protocol": "tcp", "tp_dst": 80}, (Conjunction(7, 3, 3),), POLICY),
    flow("EgressRule", 300, {"protocol": "udp"}, (Conjunction(8, 2, 2),), POLICY),
    flow("EgressRule", 310, {"conj_id": 7, **IP}, (Goto("L3Forwarding"),), POLICY),
    flow("EgressRule", 310, {"conj_id": 8, **IP}, (Goto("L3Forwarding"),), POLICY),
    flow("EgressRule", 320, {**IP, "nw_src": "10.244.0.9"}, (Conjunction(0xFFFFFFFF, 64, 64),)),
    flow(
        "IngressRule",
        300,
        {**IP, "ct_state": ct_state(new=True, est=False, rel=False, rpl=True, inv=False, trk=True)},
    ),
    flow("IngressRule", 301, {**IP, "ct_state": ct_state(new=False, est=True, rel=True, trk=True)}),
    flow("IngressRule", 302, {"protocol": "tcp", "ct_state": ct_state(trk=False)}),
    flow(
        "IngressRule",
        303,
        {**IP, "ct_state": ct_state(est=True, rpl=False)},  # with +inv, OVS refuses commit
        (CT(7, table="L2Forwarding", commit=True),),
    ),
    flow("Conntrack", 100, IP, (CT(1, table="Output"),)),
    flow("ConntrackCommit", 100, IP, (CT(5, commit=True), OutputReg("reg5"))),
    flow("Output", 300, {"in_port": 9}, (Output(1),)),
]
# Services with every frontend kind: ClusterIP, NodePort (Cluster: ct_mark; Local), session
# affinity (resubmit, learn) over TCP, UDP and SCTP.
SERVICE_FLOWS = frozenset().union(
    *(
        services.service_flows(
            services.parse_service(
                {
                    "metadata": {"namespace": "shop", "name": f"web-{proto.lower()}-{etp}"},
                    "spec": {
                        "type": "NodePort",
                        "clusterIP": "10.96.0.10",
                        "externalTrafficPolicy": etp,
                        "sessionAffinity": "ClientIP" if proto != "UDP" else "None",
                        "ports": [
                            {"port": 80, "protocol": proto, "targetPort": 8080, "nodePort": 30080}
                        ],
                    },
                }
            ),
            [
                services.Endpoint("10.244.0.5", (("", 8080, proto),)),
                services.Endpoint("10.244.1.5", (("", 8080, proto),)),
            ],
            "10.244.0.0/24",
        )
        for proto in ("TCP", "UDP", "SCTP")
        for etp in ("Cluster", "Local")
    )
)
# A dual-stack node (issue 16): its IPv6 pipeline flows (ND answers, ERICOXM set_fields, the
# IPv6 spoof guard, conntrack, hairpin NAT to an IPv6 address) and IPv6 forms of the rest.
NODE6 = NodeNet.for_cidrs(
    ("10.244.0.0/24", "fd00:10:244::/64"), gw_ofport=2, node_ips=("192.168.50.10", "fd00:50::10")
)
OVERLAY6 = Overlay(1, "10.244.0.0/16", ("10.244.0.0/16", "fd00:10:244::/56"))
REMOTE6 = RemoteNode(
    "node-b", "10.244.1.0/24", "192.168.50.11", ("10.244.1.0/24", "fd00:10:244:1::/64")
)
PODS6 = [
    PodPort(
        "3f2a9c1e/eth0",
        3,
        "10.244.0.2",
        mac_from_ip("10.244.0.2"),
        ips=("10.244.0.2", "fd00:10:244::2"),
    ),
]
IP6 = {"protocol": "ipv6"}
EXTRA_FLOWS6 = [
    flow("EgressRule", 300, {**IP6, "ipv6_src": "fd00:10:244::2"}, (Conjunction(9, 1, 2),), POLICY),
    flow("EgressRule", 300, {"protocol": "tcp6", "tp_dst": 80}, (Conjunction(9, 2, 2),), POLICY),
    flow("EgressRule", 300, {"protocol": "udp6", "ipv6_dst": "fd00:10:244::/56", "tp_src": 53}),
    flow("EgressRule", 301, {"protocol": "icmp6", "icmp_type": 2, "icmp_code": 0}),
    flow("EgressRule", 302, {"protocol": "icmp6", "nd_target": "fd00::/16", "icmp_type": 135}),
    flow("EgressRule", 303, {"protocol": "icmp6", "icmp_type": 135, "nd_sll": "0a:58:00:00:00:01"}),
    flow("EgressRule", 304, {"protocol": "icmp6", "icmp_type": 136, "nd_tll": "0a:58:00:00:00:01"}),
    flow(
        "EndpointDNAT",
        300,
        {"protocol": "tcp6", "ipv6_dst": "fd00:10:96::a", "tp_dst": 80},
        (CT(65000, table="HairpinSNAT", commit=True, nat="dst=[fd00:10:244::5]:8080"),),
    ),
    flow(
        "EndpointDNAT",
        301,
        {"protocol": "udp6", "ipv6_dst": "fd00:10:96::a", "tp_dst": 53},
        (
            Learn("SessionAffinity", "udp", 10800, 200, 0x5, ((5, "reg3", 0xFFFF),), version=6),
            CT(65000, table="HairpinSNAT", commit=True, nat="dst=fd00:10:244::5"),
        ),
    ),
    flow("EgressRule", 306, {**IP6}, (SetField("ipv6_dst", "fd00::1"), DecTTL(), Output(3))),
]
ALL_FLOWS = sorted(
    pipeline.node_flows(NODE, OVERLAY).union(
        *(pipeline.pod_flows(NODE, p) for p in PODS),
        pipeline.remote_node_flows(NODE, OVERLAY, REMOTE),
        EXTRA_FLOWS,
        SERVICE_FLOWS,
        pipeline.node_flows(NODE6, OVERLAY6),
        *(pipeline.pod_flows(NODE6, p) for p in PODS6),
        pipeline.remote_node_flows(NODE6, OVERLAY6, REMOTE6),
        EXTRA_FLOWS6,
    ),
    key=lambda f: (f.table_id, -f.priority, f.match),
)
ROUND = 7


@pytest.fixture
def dp():
    return types.SimpleNamespace(ofproto=OFP, ofproto_parser=PARSER, id=0x1)


def wire(msg) -> bytes:
    msg.serialize()
    data = bytes(msg.buf)
    version, msg_type, length, _xid = struct.unpack_from("!BBHI", data)
    assert (version, msg_type) == (OFP.OFP_VERSION, OFP.OFPT_FLOW_MOD)
    assert length == len(data)
    return data


def parse_back(dp, data: bytes):
    version, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    return ofproto_parser.msg(dp, version, msg_type, length, xid, data)


# ---- match --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "match, kwargs",
    [
        ({"in_port": 3}, {"in_port": 3}),
        ({"dl_dst": "0a:58:0a:f4:00:02"}, {"eth_dst": "0a:58:0a:f4:00:02"}),
        ({"protocol": "ip"}, {"eth_type": 0x0800}),
        ({"protocol": "arp", "arp_op": 1}, {"eth_type": 0x0806, "arp_op": 1}),
        (
            {"protocol": "ip", "nw_src": "10.244.1.0/24"},
            {"eth_type": 0x0800, "ipv4_src": ("10.244.1.0", "255.255.255.0")},
        ),
        (
            {"protocol": "ip", "nw_dst": "10.96.0.0/12"},
            {"eth_type": 0x0800, "ipv4_dst": ("10.96.0.0", "255.240.0.0")},
        ),
        (
            # a /32 is the bare address, as OVS prints it (flow() writes it so)
            {"protocol": "ip", "nw_dst": "10.0.0.7/32"},
            {"eth_type": 0x0800, "ipv4_dst": "10.0.0.7"},
        ),
        ({"protocol": "ip", "nw_dst": "10.0.0.7"}, {"eth_type": 0x0800, "ipv4_dst": "10.0.0.7"}),
        (dict([regs.PKT_SOURCE.match(regs.FROM_POD)]), {"reg0": (2, 0xF)}),
        ({"reg5": 0x1234}, {"reg5": 0x1234}),
        (
            {"protocol": "tcp", "tp_dst": 80},
            {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": 80},
        ),
        (
            {"protocol": "udp", "tp_src": 53},
            {"eth_type": 0x0800, "ip_proto": 17, "udp_src": 53},
        ),
        (
            {"protocol": "sctp", "tp_dst": "0x1000/0xf000"},
            {"eth_type": 0x0800, "ip_proto": 132, "sctp_dst": (0x1000, 0xF000)},
        ),
        (
            {"protocol": "icmp", "icmp_type": 8, "icmp_code": 0},
            {"eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0},
        ),
        # ct_state: bits new 0x01, est 0x02, rel 0x04, rpl 0x08, inv 0x10, trk 0x20
        ({"protocol": "ip", "ct_state": "+trk"}, {"eth_type": 0x0800, "ct_state": (0x20, 0x20)}),
        ({"protocol": "ip", "ct_state": "-trk"}, {"eth_type": 0x0800, "ct_state": (0, 0x20)}),
        (
            {"protocol": "ip", "ct_state": "+new+trk"},
            {"eth_type": 0x0800, "ct_state": (0x21, 0x21)},
        ),
        (
            {"protocol": "ip", "ct_state": "-new+trk"},
            {"eth_type": 0x0800, "ct_state": (0x20, 0x21)},
        ),
        (
            {"protocol": "ip", "ct_state": "+inv+trk"},
            {"eth_type": 0x0800, "ct_state": (0x30, 0x30)},
        ),
        (
            {"protocol": "tcp", "ct_state": "+new-est-rel+rpl-inv+trk", "tp_dst": 80},
            {"eth_type": 0x0800, "ip_proto": 6, "ct_state": (0x29, 0x3F), "tcp_dst": 80},
        ),
        ({"conj_id": 7, "protocol": "ip"}, {"conj_id": 7, "eth_type": 0x0800}),
        # no 802.1Q header: OXM vlan_vid=OFPVID_NONE, which OVS shows as vlan_tci=0x0000/0x1fff
        ({"in_port": 3, "vlan_tci": "0x0000/0x1fff"}, {"in_port": 3, "vlan_vid": 0}),
        ({"vlan_tci": "0x0000/0x1000"}, {"vlan_vid": (0, 0x1000)}),
        (
            {"protocol": "ip", "tun_src": "192.168.50.11", "in_port": 1},
            {"eth_type": 0x0800, "tun_ipv4_src": "192.168.50.11", "in_port": 1},
        ),
        (
            {"tun_id": 5, "tun_dst": "192.168.1.2", "tun_src": "10.0.0.0/8"},
            {
                "tunnel_id": 5,
                "tun_ipv4_dst": "192.168.1.2",
                "tun_ipv4_src": ("10.0.0.0", "255.0.0.0"),
            },
        ),
    ],
)
def test_match_kwargs(dp, match, kwargs):
    f = flow("L3Forwarding", 100, match, (Output(1),))
    assert ofconv.match_kwargs(f) == kwargs
    # ... and os-ken encodes them and decodes the same values back.
    back = parse_back(dp, wire(ofconv.flow_add(dp, f, ROUND)))
    assert dict(back.match.items()) == kwargs


def test_tp_fields_follow_the_protocol():
    # tp_dst is printed after nw_dst but must become tcp_dst, not a leftover from another field.
    f = flow("L3Forwarding", 1, {"tp_dst": 443, "nw_dst": "10.0.0.1", "protocol": "tcp"})
    assert ofconv.match_kwargs(f) == {
        "eth_type": 0x0800,
        "ip_proto": 6,
        "ipv4_dst": "10.0.0.1",
        "tcp_dst": 443,
    }


@pytest.mark.parametrize("text", ["+trk+snat", "trk", "+trk,new", "+trk+new", ""])
def test_ct_state_text_that_is_not_canonical_flags_is_refused(text):
    with pytest.raises(FlowError, match="ct_state"):
        flow("L3Forwarding", 1, {"protocol": "ip", "ct_state": text})
    if text != "+trk+new":  # flags out of OVS order still encode fine; only flow() insists
        with pytest.raises(ValueError):
            ofconv._ct_state(text)


# ---- actions / instructions ---------------------------------------------------------------


def test_arp_responder_actions(dp):
    f = pipeline.arp_responder("10.244.0.2", "0a:58:0a:f4:00:02", 0)
    inst = ofconv.actions(PARSER, OFP, f)
    assert len(inst) == 1
    assert isinstance(inst[0], PARSER.OFPInstructionActions)
    assert inst[0].type == OFP.OFPIT_APPLY_ACTIONS
    acts = inst[0].actions
    assert [type(a).__name__ for a in acts] == [
        "NXActionRegMove",
        "OFPActionSetField",
        "OFPActionSetField",
        "NXActionRegMove",
        "OFPActionSetField",
        "NXActionRegMove",
        "OFPActionSetField",
        "OFPActionOutput",
    ]
    assert (acts[0].src_field, acts[0].dst_field, acts[0].n_bits) == ("eth_src", "eth_dst", 48)
    assert (acts[5].src_field, acts[5].dst_field, acts[5].n_bits) == ("arp_spa", "arp_tpa", 32)
    assert (acts[1].key, acts[1].value) == ("eth_src", "0a:58:0a:f4:00:02")
    assert (acts[2].key, acts[2].value) == ("arp_op", 2)  # an int, not the text "2"
    assert (acts[6].key, acts[6].value) == ("arp_spa", "10.244.0.2")
    assert acts[7].port == OFP.OFPP_IN_PORT


def test_reg_load_goto_and_drop(dp):
    classifier = flow(
        "Classifier", 200, {"in_port": 3}, (SetField("reg0", "0x2/0xf"), Goto("SpoofGuard"))
    )
    apply_, goto = ofconv.actions(PARSER, OFP, classifier)
    (load,) = apply_.actions
    assert isinstance(load, PARSER.NXActionRegLoad2)
    assert (load.dst, load.value, load.mask) == ("reg0", 2, 0xF)
    assert isinstance(goto, PARSER.OFPInstructionGotoTable)
    assert goto.table_id == 10

    full = flow("Classifier", 1, {}, (SetField("reg1", "0x5"),))
    (only,) = ofconv.actions(PARSER, OFP, full)[0].actions
    assert (only.dst, only.value, only.mask) == ("reg1", 5, None)

    assert ofconv.actions(PARSER, OFP, flow("Classifier", 0)) == []  # drop: no instructions
    (just_goto,) = ofconv.actions(PARSER, OFP, flow("ARPResponder", 0, {}, (Goto("L3Forwarding"),)))
    assert isinstance(just_goto, PARSER.OFPInstructionGotoTable)
    assert just_goto.table_id == 50


def test_routed_delivery_actions(dp):
    f = flow(
        "L3Forwarding",
        200,
        {"protocol": "ip", "nw_dst": "10.244.0.2"},
        (SetField("eth_dst", "0a:58:0a:f4:00:02"), DecTTL(), Output(3), Goto("L2Forwarding")),
    )
    apply_, goto = ofconv.actions(PARSER, OFP, f)
    assert [type(a).__name__ for a in apply_.actions] == [
        "OFPActionSetField",
        "OFPActionDecNwTtl",
        "OFPActionOutput",
    ]
    assert apply_.actions[2].port == 3
    assert goto.table_id == 70


def test_conjunction_clause_is_zero_based_on_the_wire(dp):
    f = flow("EgressRule", 300, {"protocol": "ip"}, (Conjunction(7, 1, 3), Conjunction(8, 2, 2)))
    (apply_,) = ofconv.actions(PARSER, OFP, f)
    assert [type(a).__name__ for a in apply_.actions] == ["NXActionConjunction"] * 2
    assert [(a.id, a.clause, a.n_clauses) for a in apply_.actions] == [(7, 0, 3), (8, 1, 2)]
    back = parse_back(dp, wire(ofconv.flow_add(dp, f, ROUND)))
    (inst,) = back.instructions
    assert [(a.id, a.clause, a.n_clauses) for a in inst.actions] == [(7, 0, 3), (8, 1, 2)]
    # The bytes of struct nx_action_conjunction: type, len, vendor, subtype, clause, n_clauses,
    # id; the first clause is 0 on the wire.
    data = wire(ofconv.flow_add(dp, f, ROUND))
    nx = (0xFFFF, 16, ofproto_common.NX_EXPERIMENTER_ID, nicira_ext.NXAST_CONJUNCTION)
    assert struct.pack("!HHIHBBI", *nx, 0, 3, 7) + struct.pack("!HHIHBBI", *nx, 1, 2, 8) in data


@pytest.mark.parametrize(
    "action, flags, recirc",
    [
        (CT(65000, table="ConntrackState"), 0, 31),
        (CT(65000, commit=True), 1, 0xFF),  # NX_CT_F_COMMIT, NX_CT_RECIRC_NONE
        (CT(7, table="Output", commit=True), 1, 90),
    ],
)
def test_ct_actions(dp, action, flags, recirc):
    f = flow("Conntrack", 1, {"protocol": "ip"}, (action,))
    (apply_,) = ofconv.actions(PARSER, OFP, f)
    (ct,) = apply_.actions
    assert isinstance(ct, PARSER.NXActionCT)
    want = (flags, action.zone, recirc, 0, [])
    assert (ct.flags, ct.zone_ofs_nbits, ct.recirc_table, ct.alg, ct.actions) == want
    assert not ct.zone_src  # an immediate zone, not one read from a field
    back = parse_back(dp, wire(ofconv.flow_add(dp, f, ROUND)))
    (bct,) = back.instructions[0].actions
    assert (bct.flags, bct.zone_ofs_nbits, bct.recirc_table, bct.alg, bct.actions) == want
    assert bct.zone_src == ""


def test_ct_commit_then_goto(dp):
    f = next(f for f in ALL_FLOWS if f.table == "ConntrackCommit" and f.priority == 200)
    apply_, goto = ofconv.actions(PARSER, OFP, f)
    (ct,) = apply_.actions
    assert (ct.flags, ct.recirc_table) == (1, 0xFF)
    assert isinstance(goto, PARSER.OFPInstructionGotoTable)
    assert goto.table_id == 90


def test_output_reg(dp):
    f = next(f for f in ALL_FLOWS if f.table == "Output" and f.priority == 200)
    assert f.actions == (OutputReg("reg2"),)
    (apply_,) = ofconv.actions(PARSER, OFP, f)
    (out,) = apply_.actions
    assert isinstance(out, PARSER.NXActionOutputReg)
    assert (out.src, out.ofs_nbits) == ("reg2", nicira_ext.ofs_nbits(0, 31))
    back = parse_back(dp, wire(ofconv.flow_add(dp, f, ROUND)))
    (bout,) = back.instructions[0].actions
    assert (bout.src, bout.ofs_nbits) == ("reg2", nicira_ext.ofs_nbits(0, 31))


def test_l2_flow_loads_the_out_port(dp):
    f = next(f for f in ALL_FLOWS if f.table == "L2Forwarding" and f.priority and f.cookie)
    apply_, goto = ofconv.actions(PARSER, OFP, f)
    (load,) = apply_.actions
    assert isinstance(load, PARSER.NXActionRegLoad2)
    assert load.dst == "reg2" and load.mask is None
    assert goto.table_id == 80


def test_unknown_action_is_refused():
    f = flow("Classifier", 1)
    bad = type(f)(f.table, f.priority, f.match, (object(),), f.cookie)  # bypasses flow()'s check
    with pytest.raises(TypeError):
        ofconv.actions(PARSER, OFP, bad)


# ---- whole messages -----------------------------------------------------------------------


@pytest.mark.parametrize("f", ALL_FLOWS, ids=str)
def test_every_pipeline_flow_serialises_and_parses_back(dp, f):
    add = ofconv.flow_add(dp, f, ROUND)
    back = parse_back(dp, wire(add))
    assert back.command == OFP.OFPFC_ADD
    assert back.table_id == f.table_id
    assert back.priority == f.priority
    assert back.cookie == cookie.with_round(f.cookie, ROUND)
    assert dict(back.match.items()) == ofconv.match_kwargs(f)
    n_apply = sum(1 for a in f.actions if not isinstance(a, Goto))
    n_goto = len(f.actions) - n_apply
    kinds = [type(i).__name__ for i in back.instructions]
    assert kinds == ["OFPInstructionActions"] * bool(n_apply) + ["OFPInstructionGotoTable"] * n_goto
    if n_apply:
        assert len(back.instructions[0].actions) == n_apply
    # Every field of every action and instruction comes back as it was built (lengths included,
    # filled in by serialising): conjunction clauses, ct flags/zone/table, output:reg ofs_nbits.
    assert str(back.instructions) == str(add.instructions)

    dele = ofconv.flow_delete_strict(dp, f, ROUND)
    back = parse_back(dp, wire(dele))
    assert back.command == OFP.OFPFC_DELETE_STRICT
    assert dict(back.match.items()) == ofconv.match_kwargs(f)


@pytest.mark.parametrize("rnd", [1, ROUND, 0x8000, cookie.MAX_ROUND])
def test_cookie_carries_the_round_in_its_top_16_bits(dp, rnd):
    for f in ALL_FLOWS:
        msg = ofconv.flow_add(dp, f, rnd)
        assert msg.cookie >> 48 == rnd
        assert msg.cookie & ~cookie.ROUND_MASK == f.cookie
        assert msg.cookie < 1 << 64


def test_round_zero_is_refused(dp):
    with pytest.raises(ValueError):
        ofconv.flow_add(dp, ALL_FLOWS[0], 0)


def test_delete_strict_uses_the_full_cookie_mask(dp):
    f = next(f for f in ALL_FLOWS if f.table == "L2Forwarding" and f.priority)
    msg = ofconv.flow_delete_strict(dp, f, ROUND)
    assert msg.command == OFP.OFPFC_DELETE_STRICT
    assert msg.cookie == cookie.with_round(f.cookie, ROUND)
    assert msg.cookie_mask == (1 << 64) - 1
    assert (msg.table_id, msg.priority) == (f.table_id, f.priority)
    assert (msg.out_port, msg.out_group) == (OFP.OFPP_ANY, OFP.OFPG_ANY)
    back = parse_back(dp, wire(msg))
    assert (back.cookie, back.cookie_mask) == (msg.cookie, (1 << 64) - 1)
    # The same key under another owner (an ofport reused by a new pod) is not matched.
    other = cookie.with_round(cookie.make("pod", "pod/someone-else"), ROUND)
    assert other & msg.cookie_mask != msg.cookie


def test_delete_round_uses_the_round_mask(dp):
    msg = ofconv.delete_round(dp, 3)
    assert msg.command == OFP.OFPFC_DELETE
    assert msg.table_id == OFP.OFPTT_ALL
    assert msg.cookie == 3 << 48
    assert msg.cookie_mask == cookie.ROUND_MASK == 0xFFFF << 48
    assert (msg.out_port, msg.out_group) == (OFP.OFPP_ANY, OFP.OFPG_ANY)
    assert dict(msg.match.items()) == {}
    back = parse_back(dp, wire(msg))
    assert (back.cookie, back.cookie_mask, back.table_id) == (3 << 48, 0xFFFF << 48, 0xFF)
    # It selects every flow of round 3 whatever its feature and owner, and none of round 4.
    for f in ALL_FLOWS:
        assert cookie.with_round(f.cookie, 3) & msg.cookie_mask == msg.cookie
        assert cookie.with_round(f.cookie, 4) & msg.cookie_mask != msg.cookie


# ---- cross-check with OVS's own decoder ---------------------------------------------------


@pytest.mark.skipif(not HAVE_OVS_OFCTL, reason="ovs-ofctl not installed")
def test_ovs_decodes_the_messages_as_the_golden_text():
    # The check covers every kind of action and the ct_state match, so that OVS vouches for
    # the 0-based conjunction clause, the NXAST_CT encoding and output:reg.
    kinds = {type(a) for f in ALL_FLOWS for a in f.actions}
    assert {Conjunction, CT, OutputReg, DecTTL, Goto, Output, SetField, Move, InPort} <= kinds
    assert {Learn, Resubmit, Multipath} <= kinds
    assert any(isinstance(a, CT) and a.mark for f in ALL_FLOWS for a in f.actions)
    assert any(dict(f.match).get("ct_state") for f in ALL_FLOWS)
    assert any(isinstance(a, CT) and a.commit and a.table for f in ALL_FLOWS for a in f.actions)
    assert_ovs_decodes_as_text(ALL_FLOWS, ROUND)


# ---- regressions found by review --------------------------------------------------


def test_masked_mac_match_encodes(dp):
    f = flow("L2Forwarding", 10, {"dl_dst": "01:00:00:00:00:00/01:00:00:00:00:00"}, (Output(1),))
    assert ofconv.match_kwargs(f) == {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}
    wire(ofconv.flow_add(dp, f, ROUND))


# ---- the same messages as bytes (the path rounds and updates take) ------------------------


@pytest.mark.parametrize("f", ALL_FLOWS, ids=str)
def test_wire_bytes_are_os_kens_bytes(dp, f):
    xid = 0x1234567
    add = ofconv.flow_add(dp, f, ROUND)
    add.set_xid(xid)
    assert ofconv.flow_mod_wire(dp, f, ROUND, xid) == wire(add)
    dele = ofconv.flow_delete_strict(dp, f, ROUND)
    dele.set_xid(xid)
    assert ofconv.flow_mod_wire(dp, f, ROUND, xid, delete=True) == wire(dele)
    # and again, from what was remembered
    assert ofconv.flow_mod_wire(dp, f, ROUND + 1, xid) == wire(
        _with_xid(ofconv.flow_add(dp, f, ROUND + 1), xid)
    )


def _with_xid(msg, xid):
    msg.set_xid(xid)
    return msg


def test_bundle_add_bytes_are_os_kens_bytes(dp):
    f = ALL_FLOWS[3]
    fm = _with_xid(ofconv.flow_add(dp, f, ROUND), 77)
    flags = OFP.OFPBF_ATOMIC | OFP.OFPBF_ORDERED
    add = PARSER.OFPBundleAddMsg(dp, 0xABCDEF01, flags, fm, [])
    add.set_xid(77)
    add.serialize()
    inner = ofconv.flow_mod_wire(dp, f, ROUND, 77)
    assert ofconv.bundle_add_wire(dp, 0xABCDEF01, flags, inner) == bytes(add.buf)


@pytest.mark.parametrize("f", ALL_FLOWS, ids=str)
def test_matches_are_encoded_without_os_ken_objects(f):
    """Every match the pipeline makes takes the fast path, and it writes what os-ken writes."""
    kw = ofconv.match_kwargs(f)
    fast = ofconv._oxm_match_wire(OFP, kw)
    assert fast is not None
    buf = bytearray()
    PARSER.OFPMatch(**kw).serialize(buf, 0)
    assert fast == bytes(buf)


@pytest.mark.parametrize(
    "kw",
    [
        {"eth_type": 0x0800, "ipv4_src": ("10.1.2.3", "255.255.0.0")},  # value gets masked
        {"eth_type": 0x0806, "arp_sha": ("0a:58:0a:f4:00:02", "ff:ff:ff:00:00:00")},
        {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": (0x1F80, 0xFFF0)},
        {"reg3": (5, 0xFFFF), "metadata": 1 << 40, "tunnel_id": 77, "ct_mark": (1, 1)},
        {"eth_type": 0x0800, "ct_state": (0x21, 0x3F), "ct_zone": 65000, "conj_id": 9},
    ],
)
def test_fast_match_encoding_equals_os_ken_for_masks_and_wide_fields(kw):
    buf = bytearray()
    PARSER.OFPMatch(**kw).serialize(buf, 0)
    assert ofconv._oxm_match_wire(OFP, kw) == bytes(buf)


def test_a_value_the_fast_path_cannot_encode_falls_back_to_os_ken():
    assert ofconv._oxm_match_wire(OFP, {"eth_type": 0x0800, "ipv4_src": "not-an-ip"}) is None
