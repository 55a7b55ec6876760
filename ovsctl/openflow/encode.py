"""Flow values (flows/) to os-ken OpenFlow 1.4 messages. The only place that knows both.

Two ways out: os-ken message objects (`flow_add`, `flow_delete_strict`: tools and tests), and
the same messages as bytes (`flow_mod_wire`, `bundle_add_wire`) for installing many flows at
once. The bytes are assembled from a fixed header and the match and instructions that os-ken
serialized, each remembered per distinct match / action list: a node's flows share few of
them (13k flows, 2.3k matches, 760 action lists), and building os-ken objects for every flow
was most of the time a round took.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
from types import SimpleNamespace

from os_ken.ofproto import nicira_ext, ofproto_v1_4, ofproto_v1_4_parser

from flows import cookie as ck
from flows import tables
from flows.flow import (
    CT,
    PROTOCOLS,
    Conjunction,
    DecTTL,
    Flow,
    Goto,
    InPort,
    Learn,
    MeteredController,
    Move,
    Multipath,
    Output,
    OutputReg,
    Resubmit,
    SetField,
    split_nat_target,
)
from ovsctl.openflow import osken_compat

ETH_TYPE = {"ip": 0x0800, "arp": 0x0806, "ipv6": 0x86DD}
IP_PROTO = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}

# ovs-ofctl field name -> os-ken OXM field name (None: handled specially)
FIELDS = {
    "in_port": "in_port",
    "dl_src": "eth_src",
    "dl_dst": "eth_dst",
    "dl_type": "eth_type",
    "nw_src": "ipv4_src",
    "nw_dst": "ipv4_dst",
    "nw_proto": "ip_proto",
    "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa",
    "arp_op": "arp_op",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
    "icmp_type": "icmpv4_type",
    "icmp_code": "icmpv4_code",
    "ipv6_src": "ipv6_src",
    "ipv6_dst": "ipv6_dst",
    "nd_target": "ipv6_nd_target",
    "nd_sll": "ipv6_nd_sll",
    "nd_tll": "ipv6_nd_tll",
    "tun_id": "tunnel_id",
    "tun_src": "tun_ipv4_src",
    "tun_dst": "tun_ipv4_dst",
    "conj_id": "conj_id",
    "nw_ttl": "nw_ttl",
    "ct_zone": "ct_zone",
    "ct_mark": "ct_mark",
    "metadata": "metadata",
    **{f"reg{i}": f"reg{i}" for i in range(16)},
}
# set_field targets: ovs-ofctl name -> os-ken name
SET_FIELDS = {
    "eth_src": "eth_src",
    "eth_dst": "eth_dst",
    "arp_op": "arp_op",
    "arp_sha": "arp_sha",
    "arp_spa": "arp_spa",
    "arp_tha": "arp_tha",
    "arp_tpa": "arp_tpa",
    "tun_dst": "tun_ipv4_dst",
    "tun_id": "tunnel_id",
    "ipv4_src": "ipv4_src",
    "ipv4_dst": "ipv4_dst",
    "ipv6_src": "ipv6_src",
    "ipv6_dst": "ipv6_dst",
    "icmpv6_type": "icmpv6_type",
    "icmpv6_code": "icmpv6_code",
    "nd_tll": "ipv6_nd_tll",
    "nd_sll": "ipv6_nd_sll",
}
_INT_SET_FIELDS = frozenset({"arp_op", "tunnel_id", "icmpv6_type", "icmpv6_code"})
# OVS's ERICOXM fields (class 0x1000), unknown to os-ken: (field number, value bytes).
ERICOXM_CLASS = 0x1000
ERICOXM_FIELDS = {"nd_reserved": (1, 4), "nd_options_type": (2, 1)}
# move: ovs-ofctl field name -> os-ken field name where they differ
MOVE_NAME = {"nd_target": "ipv6_nd_target", "nd_sll": "ipv6_nd_sll", "nd_tll": "ipv6_nd_tll"}
MOVE_BITS = {
    "eth_src": 48,
    "eth_dst": 48,
    "arp_sha": 48,
    "arp_tha": 48,
    "arp_spa": 32,
    "arp_tpa": 32,
    "ipv4_src": 32,
    "ipv4_dst": 32,
    "ipv6_src": 128,
    "ipv6_dst": 128,
    "nd_target": 128,
    "nd_sll": 48,
    "nd_tll": 48,
    **{f"reg{i}": 32 for i in range(16)},
}


def _num(v: str) -> int:
    return int(v, 0)


def _value(field: str, v: str):
    """Value in the form os-ken wants: ints for numeric fields, (value, mask) when masked."""
    if field in ("dl_src", "dl_dst", "arp_sha", "arp_tha", "nd_sll", "nd_tll"):
        return tuple(v.split("/")) if "/" in v else v
    if field in ("ipv6_src", "ipv6_dst", "nd_target"):
        if "/" in v:
            addr, plen = v.split("/")
            mask = (((1 << 128) - 1) << (128 - int(plen))) & ((1 << 128) - 1)
            return (addr, socket.inet_ntop(socket.AF_INET6, mask.to_bytes(16, "big")))
        return v
    if field in ("nw_src", "nw_dst", "arp_spa", "arp_tpa", "tun_src", "tun_dst"):
        if "/" in v:
            addr, plen = v.split("/")
            bits = int(plen)
            mask = ".".join(
                str((((0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF) >> s) & 0xFF)
                for s in (24, 16, 8, 0)
            )
            return (addr, mask)
        return v
    if "/" in v:
        val, mask = v.split("/")
        return (_num(val), _num(mask))
    return _num(v)


VLAN_VID_BITS = 0x1FFF  # VID and the "a VLAN header is present" bit (OFPVID_PRESENT)


def _vlan_vid(text: str):
    """vlan_tci=V/M (flow() allows only "no VLAN header" forms) as the OXM vlan_vid: the VID
    and present bit; vlan_tci=0x0000/0x1fff is vlan_vid=OFPVID_NONE (exact 0)."""
    val, mask = _value("vlan_tci", text) if "/" in text else (_num(text), 0xFFFF)
    if mask & ~VLAN_VID_BITS:
        raise ValueError(f"vlan_tci={text}: PCP bits cannot be matched through vlan_vid")
    return val if mask == VLAN_VID_BITS else (val, mask)


CT_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20}


def _ct_state(text: str) -> tuple[int, int]:
    """'+new-est+trk' -> (value, mask)."""
    if not re.fullmatch(r"([+-](new|est|rel|rpl|inv|trk))+", text):
        raise ValueError(f"bad ct_state {text!r}")
    value = mask = 0
    for sign, name in re.findall(r"([+-])([a-z]+)", text):
        mask |= CT_BITS[name]
        if sign == "+":
            value |= CT_BITS[name]
    return value, mask


# OVS hash fields "symmetric_l3l4+udp": addresses, protocol and TCP/UDP/SCTP ports, both ways
# alike (symmetric_l4 leaves UDP ports out, which would send all of a client's UDP to one endpoint).
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3
MP_FIELDS = {
    "symmetric_l4": nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4,
    "symmetric_l3l4+udp": NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP,
}
NX_NAT_F_SRC = 1 << 0
NX_NAT_F_DST = 1 << 1


def _nat(parser, spec: str):
    """'' -> nat (apply the connection's existing NAT); 'dst=IP:PORT' -> DNAT to IP:PORT."""
    if not spec:
        return parser.NXActionNAT(flags=0)
    kind, _, target = spec.partition("=")
    if kind not in ("src", "dst"):
        raise ValueError(f"unsupported nat {spec!r}")
    ip, port = split_nat_target(target)
    v = "ipv6" if ":" in ip else "ipv4"
    kw = {f"range_{v}_min": ip, f"range_{v}_max": ip}
    if port:
        kw.update(range_proto_min=int(port), range_proto_max=int(port))
    return osken_compat.padded_nat(
        parser.NXActionNAT(flags=NX_NAT_F_DST if kind == "dst" else NX_NAT_F_SRC, **kw)
    )


def match_kwargs(f: Flow) -> dict:
    return _match_kwargs(f.match)


def _match_kwargs(match: tuple) -> dict:
    kw: dict = {}
    proto = None
    for field, v in match:
        if field == "protocol":
            implied = PROTOCOLS[v]
            proto = implied[-1]
            kw["eth_type"] = ETH_TYPE[implied[0]]
            if proto in IP_PROTO:
                kw["ip_proto"] = IP_PROTO[proto]
        elif field in ("tp_src", "tp_dst"):
            kw[f"{proto}_{field[3:]}"] = _value(field, v)
        elif field in ("icmp_type", "icmp_code") and proto == "icmp6":
            kw[f"icmpv6_{field[5:]}"] = _value(field, v)
        elif field == "ct_state":
            kw["ct_state"] = _ct_state(v)
        elif field == "vlan_tci":
            kw["vlan_vid"] = _vlan_vid(v)
        else:
            kw[FIELDS[field]] = _value(field, v)
    return kw


def actions(parser, ofp, f: Flow) -> list:
    """Instructions for a flow: apply-actions, then goto_table if any."""
    return _instructions(parser, ofp, f.actions)


def _instructions(parser, ofp, flow_actions: tuple) -> list:
    acts, inst = [], []
    for a in flow_actions:
        if isinstance(a, Output):
            acts.append(parser.OFPActionOutput(a.port, 0xFFFF))
        elif isinstance(a, InPort):
            acts.append(parser.OFPActionOutput(ofp.OFPP_IN_PORT, 0xFFFF))
        elif isinstance(a, SetField):
            if a.field.startswith("reg"):
                val, _, mask = a.value.partition("/")
                acts.append(
                    parser.NXActionRegLoad2(
                        dst=a.field, value=_num(val), mask=_num(mask) if mask else None
                    )
                )
            elif a.field in ERICOXM_FIELDS:
                acts.append(_ericoxm_set_field(parser, a.field, _num(a.value)))
            else:
                name = SET_FIELDS[a.field]
                val = _num(a.value) if name in _INT_SET_FIELDS else a.value
                acts.append(parser.OFPActionSetField(**{name: val}))
        elif isinstance(a, Move):
            if MOVE_BITS[a.src] != MOVE_BITS[a.dst]:
                raise ValueError(f"move {a.src} -> {a.dst}: fields of different widths")
            acts.append(
                parser.NXActionRegMove(
                    src_field=MOVE_NAME.get(a.src, a.src),
                    dst_field=MOVE_NAME.get(a.dst, a.dst),
                    n_bits=MOVE_BITS[a.src],
                )
            )
        elif isinstance(a, DecTTL):
            acts.append(parser.OFPActionDecNwTtl())
        elif isinstance(a, OutputReg):
            acts.append(parser.NXActionOutputReg(ofs_nbits=31, src=a.reg, max_len=0))  # [0..31]
        elif isinstance(a, Conjunction):
            # on the wire the clause is 0-based (ovs-ofctl writes k/n with k from 1)
            acts.append(
                parser.NXActionConjunction(clause=a.clause - 1, n_clauses=a.n_clauses, id_=a.id)
            )
        elif isinstance(a, CT):
            acts.append(
                parser.NXActionCT(
                    flags=1 if a.commit else 0,
                    zone_src="",
                    zone_ofs_nbits=a.zone,
                    recirc_table=tables.table(a.table).id if a.table else 0xFF,
                    alg=0,
                    actions=([] if a.nat is None else [_nat(parser, a.nat)])
                    + ([] if a.mark is None else [parser.OFPActionSetField(ct_mark=a.mark)]),
                )
            )
        elif isinstance(a, Learn):
            acts.append(_learn(parser, a))
        elif isinstance(a, Resubmit):
            acts.append(parser.NXActionResubmitTable(table_id=tables.table(a.table).id))
        elif isinstance(a, Multipath):
            acts.append(
                parser.NXActionMultipath(
                    fields=MP_FIELDS[a.fields],
                    basis=0,
                    algorithm=nicira_ext.NX_MP_ALG_HRW,
                    max_link=a.n_links - 1,
                    arg=0,
                    ofs_nbits=nicira_ext.ofs_nbits(0, a.bits - 1),
                    dst=a.reg,
                )
            )
        elif isinstance(a, MeteredController):
            osken_compat.controller2_meter_prop(parser)
            acts.append(parser.NXActionController2(max_len=a.max_len, meter_id=a.meter_id))
        elif isinstance(a, Goto):
            inst.append(parser.OFPInstructionGotoTable(tables.table(a.table).id))
        else:
            raise TypeError(f"no OpenFlow encoding for {a!r}")
    if acts:
        inst.insert(0, parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts))
    return inst


@functools.cache
def _ericoxm_set_field(parser, name: str, value: int):
    """set_field to an ERICOXM field (nd_reserved, nd_options_type), which os-ken cannot build
    (it writes an unknown field without its value): the OFPAT_SET_FIELD bytes are written here
    and parsed by os-ken, whose object then serializes them unchanged."""
    field, size = ERICOXM_FIELDS[name]
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"set_field {value:#x}->{name}: out of range")
    oxm = struct.pack("!HBB", ERICOXM_CLASS, field << 1, size) + value.to_bytes(size, "big")
    body = oxm + bytes(-(4 + len(oxm)) % 8)
    return parser.OFPActionSetField.parser(struct.pack("!HH", 25, 4 + len(body)) + body, 0)


def meter_mod(dp, meter_id: int, rate: int, burst: int, modify: bool = False):
    """A packets-per-second meter with one drop band (rate-limits audit packet-ins)."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPMeterMod(
        dp,
        command=ofp.OFPMC_MODIFY if modify else ofp.OFPMC_ADD,
        flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
        meter_id=meter_id,
        bands=[parser.OFPMeterBandDrop(rate=rate, burst_size=burst)],
    )


LEARN_DST = {"tcp": "tcp_dst_nxm", "udp": "udp_dst_nxm", "sctp": "sctp_dst"}
NX_LEARN_F_DELETE_LEARNED = 1 << 1


def _learn(parser, a: Learn):
    """learn(): match eth_type, nw_proto, source and destination IP and destination port of
    the packet; load the constants."""
    v6 = a.version == 6
    ip_src, ip_dst, bits = (
        ("ipv6_src", "ipv6_dst", 128) if v6 else ("ipv4_src_nxm", "ipv4_dst_nxm", 32)
    )
    specs = [
        parser.NXFlowSpecMatch(
            src=ETH_TYPE["ipv6" if v6 else "ip"], dst=("eth_type_nxm", 0), n_bits=16
        ),
        parser.NXFlowSpecMatch(src=IP_PROTO[a.protocol], dst=("ip_proto_nxm", 0), n_bits=8),
        parser.NXFlowSpecMatch(src=(ip_src, 0), dst=(ip_src, 0), n_bits=bits),
        parser.NXFlowSpecMatch(src=(ip_dst, 0), dst=(ip_dst, 0), n_bits=bits),
        parser.NXFlowSpecMatch(
            src=(LEARN_DST[a.protocol], 0), dst=(LEARN_DST[a.protocol], 0), n_bits=16
        ),
    ]
    for value, reg, mask in a.loads:
        lo = (mask & -mask).bit_length() - 1
        n_bits = mask.bit_length() - lo
        specs.append(parser.NXFlowSpecLoad(src=value, dst=(reg, lo), n_bits=n_bits))
    return parser.NXActionLearn(
        table_id=tables.table(a.table).id,
        specs=specs,
        idle_timeout=a.idle_timeout,
        hard_timeout=0,
        priority=a.priority,
        cookie=a.cookie,
        flags=NX_LEARN_F_DELETE_LEARNED,
        fin_idle_timeout=0,
        fin_hard_timeout=0,
    )


def flow_add(dp, f: Flow, rnd: int):
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        dp,
        cookie=ck.with_round(f.cookie, rnd),
        table_id=f.table_id,
        command=ofp.OFPFC_ADD,
        priority=f.priority,
        match=parser.OFPMatch(**match_kwargs(f)),
        instructions=actions(parser, ofp, f),
    )


def flow_delete_strict(dp, f: Flow, rnd: int):
    """Delete exactly this flow, and only while it still carries the cookie we gave it."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        dp,
        cookie=ck.with_round(f.cookie, rnd),
        cookie_mask=0xFFFFFFFFFFFFFFFF,
        table_id=f.table_id,
        command=ofp.OFPFC_DELETE_STRICT,
        priority=f.priority,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**match_kwargs(f)),
    )


def delete_round(dp, rnd: int):
    """Delete every flow of one round, in all tables."""
    if not 0 <= rnd <= ck.MAX_ROUND:
        raise ValueError(f"round {rnd} out of range")
    return delete_cookie(dp, rnd << ck.ROUND_SHIFT, ck.ROUND_MASK)


def delete_round_feature(dp, rnd: int, feature: int):
    """Delete every flow of one round whose cookie carries this feature value, in all tables."""
    if not 0 <= rnd <= ck.MAX_ROUND or not 0 <= feature <= 0xFF:
        raise ValueError(f"round {rnd} or feature {feature} out of range")
    return delete_cookie(
        dp,
        (rnd << ck.ROUND_SHIFT) | (feature << ck.FEATURE_SHIFT),
        ck.ROUND_MASK | ck.FEATURE_MASK,
    )


def delete_cookie(dp, cookie: int, mask: int):
    """Delete every flow whose cookie matches `cookie` under `mask`, in all tables."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        dp,
        cookie=cookie,
        cookie_mask=mask,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


# ---- the same messages as bytes ---------------------------------------------------------------

_FLOW_MOD_HEAD = struct.Struct("!BBHIQQBBHHHIIIHH")  # ofp_header + ofp_flow_mod up to the match
_BUNDLE_ADD_HEAD = struct.Struct("!BBHII2xH")  # ofp_header + bundle_id, pad, flags


@functools.lru_cache(maxsize=1 << 16)
def _match_wire(parser, match: tuple) -> bytes:
    kw = _match_kwargs(match)
    fast = _oxm_match_wire(parser.ofproto, kw)
    if fast is not None:
        return fast
    buf = bytearray()
    parser.OFPMatch(**kw).serialize(buf, 0)
    return bytes(buf)


_IPV4_FIELDS = frozenset(
    {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa", "tun_ipv4_src", "tun_ipv4_dst"}
)
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "ipv6_nd_target"})
_MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"})


def _oxm_bytes(name: str, v, size: int) -> bytes:
    if name in _IPV4_FIELDS:
        return socket.inet_pton(socket.AF_INET, v)
    if name in _IPV6_FIELDS:
        return socket.inet_pton(socket.AF_INET6, v)
    if name in _MAC_FIELDS:
        b = bytes.fromhex(v.replace(":", ""))
        if len(b) != 6:
            raise ValueError(f"bad MAC {v!r}")
        return b
    return v.to_bytes(size, "big")


@functools.cache
def _oxm_layout(ofp, name: str, masked: bool) -> tuple:
    """How os-ken writes one OXM field: (its sort key, the TLV header, value size). Learned
    from os-ken itself, once per field."""
    sample = (
        "0.0.0.0"
        if name in _IPV4_FIELDS
        else "::"
        if name in _IPV6_FIELDS
        else "00:00:00:00:00:00"
        if name in _MAC_FIELDS
        else 0
    )
    num, value, mask = ofp.oxm_from_user(name, (sample, sample) if masked else sample)
    buf = bytearray()
    ofp.oxm_serialize(num, value, mask, buf, 0)
    (hdr,) = struct.unpack_from("!I", buf)
    head = 8 if hdr >> 16 == 0xFFFF else 4  # experimenter fields carry their id
    size = len(value)
    if len(buf) != head + size * (2 if masked else 1):
        raise ValueError(f"unexpected OXM layout for {name}")
    return (num[0] if isinstance(num, tuple) else num), bytes(buf[:head]), size


def _oxm_match_wire(ofp, kw: dict) -> bytes | None:
    """OFPMatch(**kw), serialized, without building os-ken objects: each field is its header
    (from _oxm_layout), value and mask (the value masked, as os-ken normalizes it), in os-ken's
    order (by field number). None when a field's value is not one we encode here."""
    tlvs = []
    try:
        for name, uv in kw.items():
            masked = isinstance(uv, tuple)
            key, head, size = _oxm_layout(ofp, name, masked)
            if masked:
                v, m = _oxm_bytes(name, uv[0], size), _oxm_bytes(name, uv[1], size)
                v = (int.from_bytes(v, "big") & int.from_bytes(m, "big")).to_bytes(size, "big")
                tlvs.append((key, head + v + m))
            else:
                tlvs.append((key, head + _oxm_bytes(name, uv, size)))
    except (ValueError, TypeError, OSError, OverflowError, AttributeError, KeyError):
        return None
    tlvs.sort(key=lambda t: t[0])
    body = b"".join(t[1] for t in tlvs)
    n = 4 + len(body)
    return struct.pack("!HH", ofp.OFPMT_OXM, n) + body + bytes(-n % 8)


@functools.lru_cache(maxsize=1 << 14)
def _instructions_wire(parser, ofp, flow_actions: tuple) -> bytes:
    buf = bytearray()
    for inst in _instructions(parser, ofp, flow_actions):
        inst.serialize(buf, len(buf))
    return bytes(buf)


def flow_mod_wire(dp, f: Flow, rnd: int, xid: int, delete: bool = False) -> bytes:
    """flow_add(dp, f, rnd) (or flow_delete_strict) with `xid`, serialized."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    match = _match_wire(parser, f.match)
    if delete:
        body, command, cookie_mask = b"", ofp.OFPFC_DELETE_STRICT, 0xFFFFFFFFFFFFFFFF
        out_port, out_group = ofp.OFPP_ANY, ofp.OFPG_ANY
    else:
        body, command, cookie_mask = _instructions_wire(parser, ofp, f.actions), ofp.OFPFC_ADD, 0
        out_port = out_group = 0
    head = _FLOW_MOD_HEAD.pack(
        ofp.OFP_VERSION,
        ofp.OFPT_FLOW_MOD,
        _FLOW_MOD_HEAD.size + len(match) + len(body),
        xid,
        ck.with_round(f.cookie, rnd),
        cookie_mask,
        f.table_id,
        command,
        0,  # idle_timeout
        0,  # hard_timeout
        f.priority,
        ofp.OFP_NO_BUFFER,
        out_port,
        out_group,
        0,  # flags
        0,  # importance
    )
    return head + match + body


def bundle_add_wire(dp, bundle_id: int, flags: int, inner: bytes) -> bytes:
    """OFPBundleAddMsg carrying the serialized message `inner`, with the inner xid (as OVS
    wants: OpenFlow 1.4 7.3.9.2)."""
    ofp = dp.ofproto
    (xid,) = struct.unpack_from("!I", inner, 4)
    return (
        _BUNDLE_ADD_HEAD.pack(
            ofp.OFP_VERSION,
            ofp.OFPT_BUNDLE_ADD_MESSAGE,
            _BUNDLE_ADD_HEAD.size + len(inner),
            xid,
            bundle_id,
            flags,
        )
        + inner
    )


_OFFLINE_DP = SimpleNamespace(ofproto=ofproto_v1_4, ofproto_parser=ofproto_v1_4_parser)


def check_encodable(flows) -> None:
    """Encode each flow as it would go to a switch, without one: raises what os-ken raises for
    a value it cannot put on the wire. The agent runs this on flows computed from cluster
    objects, so one object it cannot program is skipped (and logged) before it can fail a
    bundle that carries every other owner's changes too. A recomputed owner mostly holds the
    flows it had (flow() remembers them): each is checked once."""
    for f in flows:
        _encodable(f)


@functools.lru_cache(maxsize=1 << 16)
def _encodable(f: Flow) -> None:
    flow_mod_wire(_OFFLINE_DP, f, 1, 0)
