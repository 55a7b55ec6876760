"""Unit tests for ovsctl.ofconv: Flow values to os-ken OpenFlow 1.4 messages, without a switch.

The messages are built against a stub datapath and serialised to bytes; os-ken parses them back,
and where `ovs-ofctl` is installed, OVS's own decoder must print the same match and actions as
Flow.text() (the golden strings of test_flows.py).
"""

import re
import shutil
import struct
import subprocess
import types

# os-ken needs app_manager imported before its controller/ofproto modules (circular import).
import os_ken.base.app_manager  # noqa: F401
import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_4, ofproto_v1_4_parser

from flows import cookie, pipeline, regs
from flows.flow import DecTTL, Goto, Output, SetField, flow
from flows.model import NodeNet, PodPort, mac_from_ip
from ovsctl import ofconv

OFP = ofproto_v1_4
PARSER = ofproto_v1_4_parser
NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2)
PODS = [
    PodPort("3f2a9c1e/eth0", 3, "10.244.0.2", mac_from_ip("10.244.0.2")),
    PodPort("7b41d0aa/eth0", 4, "10.244.0.3", mac_from_ip("10.244.0.3")),
]
ALL_FLOWS = sorted(
    pipeline.node_flows(NODE).union(*(pipeline.pod_flows(NODE, p) for p in PODS)),
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
            {"protocol": "ip", "nw_dst": "10.0.0.7/32"},
            {"eth_type": 0x0800, "ipv4_dst": ("10.0.0.7", "255.255.255.255")},
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


def test_ct_state_is_not_silently_dropped():
    f = flow("L3Forwarding", 1, {"ct_state": "+trk"})
    with pytest.raises(NotImplementedError):
        ofconv.match_kwargs(f)


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

ADD_LINE = (
    r"OFPT_FLOW_MOD \(OF1\.4\) \(xid=0x[0-9a-f]+\): ADD (?:table:(?P<table>\d+) )?"
    r"(?P<match>\S+) cookie:(?P<cookie>0x[0-9a-f]+)(?: out_port:\S+)? actions=(?P<actions>\S+)"
)


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
def test_ovs_decodes_the_messages_as_the_golden_text(dp):
    data = b"".join(wire(ofconv.flow_add(dp, f, ROUND)) for f in ALL_FLOWS)
    out = subprocess.run(
        ["ovs-ofctl", "ofp-parse", "-"], input=data, capture_output=True, check=True, timeout=10
    ).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == len(ALL_FLOWS)
    for f, line in zip(ALL_FLOWS, lines, strict=True):
        m = re.fullmatch(ADD_LINE, line)
        assert m, line
        assert int(m["table"] or 0) == f.table_id
        assert m["match"] == f.match_text()
        assert m["actions"] == f.actions_text()
        assert int(m["cookie"], 16) == cookie.with_round(f.cookie, ROUND)


# ---- regressions found by review --------------------------------------------------


def test_masked_mac_match_encodes(dp):
    f = flow("L2Forwarding", 10, {"dl_dst": "01:00:00:00:00:00/01:00:00:00:00:00"}, (Output(1),))
    assert ofconv.match_kwargs(f) == {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}
    wire(ofconv.flow_add(dp, f, ROUND))
