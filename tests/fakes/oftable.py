"""An in-memory OpenFlow table set that runs packets through whole pipelines (issue 15).

The idea is faucet's `clib/fakeoftable.py`: install the flows the agent would install on br-int
and ask "is this packet output on port N?" or "what happens to this packet?", in a unit test,
with no switch. Here the flows are `flows.flow.Flow` values, so a test builds a node's pipeline
with the project's own functions (`pipeline.node_flows(...) | pipeline.pod_flows(...) | ...`)
and runs packets through it:

    fake = FakeOFTable(flows, tunnel_ports={1})
    res = fake.run(tcp(in_port=3, ...))
    res.output_ports, res.drop_table, res.steps, res.packet_ins

What is modelled, as Open vSwitch does it (ovs-fields(7), ovs-actions(7), the classifier):

* Lookup: per table the highest-priority flow whose every match field matches. Match fields
  in the canonical text `flow()` writes: in_port, dl_src/dl_dst (optionally masked), dl_type,
  the protocol shorthands ip/arp/tcp/udp/sctp/icmp, nw_src/nw_dst (CIDR), arp_spa/arp_tpa
  (CIDR), arp_sha/arp_tha, arp_op, nw_proto, nw_ttl, tp_src/tp_dst (value or value/mask),
  icmp_type/icmp_code, reg0..reg15 (value/mask), metadata, ct_state flags, ct_mark (masked),
  ct_zone, ct_nw_src/ct_nw_dst/ct_nw_proto/ct_tp_src/ct_tp_dst (the connection's original
  tuple), tun_src/tun_dst/tun_id, conj_id, vlan_tci. A field the packet does not have (nw_src
  of an ARP packet) never matches. Any other field raises `Unmodelled` when the flow is added.
* Conjunctive matches, as the classifier does them: flows whose actions are all
  `conjunction(id,k/n)` are "soft"; only soft matches at a priority above the best ordinary
  ("hard") match count; the highest-priority conjunction with a matching flow in every clause
  1..n fires, and the table is looked up again with conj_id=id among the ordinary flows (that
  is how the `conj_id=id` flow's actions run). A conjunction whose second lookup finds nothing
  is skipped (the next one, or the hard match, wins).
* Two ordinary flows that match at the same top priority with different actions raise
  `Ambiguous` (OVS picks one arbitrarily); two flows with one (table, priority, match) but
  different actions or cookies raise `Conflict` when installed (OVS keeps whichever came last).
* Actions: output:N, IN_PORT, output:reg (OVS skips an output to the packet's own in_port
  unless it is IN_PORT: so does the fake), goto_table (forward only), set_field (MACs, IPv4,
  ARP fields, L4 ports, tun_*, registers with value/mask, nw_ttl, metadata; a field the packet
  lacks raises: OVS would have refused the flow), move (equal widths), dec_ttl (TTL <= 1: no
  decrement, the rest of the actions including goto_table are skipped, the packet is dropped,
  `invalid_ttl` is noted), resubmit to a side table (its flow's actions run, then ours go on;
  its table miss is no action), controller(meter_id=...) (a packet-in is recorded with the
  flow's cookie; the packet goes on), multipath (highest random weight over a deterministic
  hash of the symmetric 5-tuple; a test can fix the link), learn (the learned flow is added to
  its table with its cookie, priority and idle timeout; `advance()` ages them; deleting the
  last flow that learns with a cookie deletes that cookie's learned flows: delete_learned),
  conjunction (only as a soft match).
* ct(): a small conntrack per zone. A lookup of an unseen 5-tuple gives +new+trk (nothing is
  remembered unless committed); a committed connection gives +new+trk to its original
  direction until a reply was seen and +est+trk after; a reply gives +est+rpl+trk. +inv only
  when the test asks (`run(..., ct_invalid=True)`); +rel never. ct(commit) stores the
  connection (with nat(dst=IP[:PORT]) / nat(src=IP[:PORT]) and ct_mark); `nat` without
  arguments applies a stored translation (destination/source for the original direction, the
  reverse for replies). Like the kernel, the packet remembers its last conntrack entry: a ct()
  in the same zone reuses it (so a commit after the lookup commits that connection), a ct() in
  another zone looks up again with the current headers. ct(table=T) recirculates a copy of
  the packet (registers kept, ct_* fields and NAT applied) to T after the current pass; the
  rest of the actions run on the uncommitted packet. ct() without table commits/NATs but the
  rest of the pass still sees the old ct_* fields.
* A packet output to a tunnel port (`tunnel_ports`) carries its tun_dst; without tun_dst it is
  dropped (a flow-based tunnel has nowhere to send it). `FakeNetwork` joins several nodes'
  tables by their tunnels.

* IPv6 (issue 16) like IPv4: a packet whose addresses are IPv6 (`tcp(..., "fd00::2",
  "fd00::3", ...)`, `udp`, `sctp`, `icmp` / `icmp6`, and `neighbor_solicitation` /
  `neighbor_advert` for ND) has eth_type 0x86dd; flows match it with ipv6 / tcp6 / udp6 /
  sctp6 / icmp6, ipv6_src / ipv6_dst (CIDR), icmp_type / icmp_code (the ICMPv6 ones), nw_ttl
  (the hop limit), nd_target (CIDR), nd_sll / nd_tll (a solicitation's source, an
  advertisement's target link-layer option; 00:00:00:00:00:00 when it has none), and
  ct_ipv6_src / ct_ipv6_dst after ct(). set_field and move work on ipv6_src / ipv6_dst,
  icmpv6_type / icmpv6_code, nd_target, nd_sll / nd_tll, nd_reserved (the R|S|O flags) and
  nd_options_type (the type of the packet's one link-layer option: a solicitation's source
  option set to 2 goes out as the advertisement's target option, carrying nd_tll); nd_* can
  only be set on an NS or NA (OVS's prerequisites). dec_ttl decrements the hop limit.
  Conntrack zones and nat(src=/dst=[ADDR]:PORT) work for IPv6 connections as for IPv4.

Not modelled (raise `Unmodelled` where a flow could ask for them): groups, meters' rates
(packet-ins are all recorded), queues, push/pop VLAN, IPv6 extension headers, ND options other
than one link-layer address, TCP state tracking (any packet of
an unseen connection is +new, no window checks, no timeouts), related connections (+rel),
NAT port ranges and NAT port clashes (a clash raises), conntrack helpers, ct_label, packet
bytes (max_len is recorded, not applied), flow statistics.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field, replace

from flows import tables
from flows.flow import (
    CT,
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
from flows.flow import Conjunction as ConjunctionAction


class FakeOFError(AssertionError):
    """The fake refuses: something a test must not silently pass over."""


class Unmodelled(FakeOFError):
    """A match field or action the fake does not model."""


class Ambiguous(FakeOFError):
    """Two flows with different actions match at the same priority: OVS picks either."""


class Conflict(FakeOFError):
    """Two different flows with one (table, priority, match): OVS keeps the last added."""


# ---- packets -------------------------------------------------------------------------------

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
PROTO = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmp6": 58}
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
ND_NS, ND_NA = 135, 136


@dataclass(frozen=True)
class Packet:
    """The headers the pipeline can see. Empty strings are absent fields: an ARP packet has no
    ip_src, an IP packet no arp_spa. tcp_flags is informational (the fake tracks no TCP
    state)."""

    in_port: int
    eth_src: str
    eth_dst: str
    eth_type: int = ETH_IP
    vlan_tci: int = 0
    ip_src: str = ""
    ip_dst: str = ""
    ip_proto: int = 0
    ttl: int = 64
    tp_src: int = 0
    tp_dst: int = 0
    tcp_flags: str = ""
    icmp_type: int = 0
    icmp_code: int = 0
    arp_op: int = 0
    arp_spa: str = ""
    arp_tpa: str = ""
    arp_sha: str = ""
    arp_tha: str = ""
    tun_src: str = ""
    tun_dst: str = ""
    tun_id: int = 0
    # IPv6 Neighbor Discovery (NS and NA only): the target, the one link-layer option
    # (nd_sll in an NS, nd_tll in an NA; "" for none), the flags word (R|S|O in an NA)
    nd_target: str = ""
    nd_sll: str = ""
    nd_tll: str = ""
    nd_reserved: int = 0

    @property
    def is_ipv6(self) -> bool:
        return self.eth_type == ETH_IPV6

    def reply(self, in_port: int, eth_src: str, eth_dst: str, tcp_flags: str = "SA") -> Packet:
        """The other direction of this packet's connection, sent by the far end on `in_port`."""
        kw = {}
        if self.ip_proto == PROTO["icmp"]:
            kw = {"icmp_type": 0 if self.icmp_type == 8 else self.icmp_type}
        elif self.ip_proto == PROTO["icmp6"] and self.icmp_type == ICMP6_ECHO_REQUEST:
            kw = {"icmp_type": ICMP6_ECHO_REPLY}
        return replace(
            self,
            in_port=in_port,
            eth_src=eth_src,
            eth_dst=eth_dst,
            ip_src=self.ip_dst,
            ip_dst=self.ip_src,
            tp_src=self.tp_dst,
            tp_dst=self.tp_src,
            ttl=64,
            tcp_flags=tcp_flags if self.ip_proto == PROTO["tcp"] else "",
            tun_src="",
            tun_dst="",
            tun_id=0,
            **kw,
        )


def _eth(ip_src: str) -> int:
    """The ethertype of a packet from this address: IPv6 when it is one."""
    return ETH_IPV6 if ":" in ip_src else ETH_IP


def tcp(in_port, eth_src, eth_dst, ip_src, ip_dst, tp_src, tp_dst, flags="S", ttl=64, **kw):
    return Packet(
        in_port, eth_src, eth_dst, _eth(ip_src), ip_src=ip_src, ip_dst=ip_dst, ip_proto=PROTO["tcp"],
        tp_src=tp_src, tp_dst=tp_dst, tcp_flags=flags, ttl=ttl, **kw,
    )  # fmt: skip


def udp(in_port, eth_src, eth_dst, ip_src, ip_dst, tp_src, tp_dst, ttl=64, **kw):
    return Packet(
        in_port, eth_src, eth_dst, _eth(ip_src), ip_src=ip_src, ip_dst=ip_dst, ip_proto=PROTO["udp"],
        tp_src=tp_src, tp_dst=tp_dst, ttl=ttl, **kw,
    )  # fmt: skip


def sctp(in_port, eth_src, eth_dst, ip_src, ip_dst, tp_src, tp_dst, ttl=64, **kw):
    return Packet(
        in_port, eth_src, eth_dst, _eth(ip_src), ip_src=ip_src, ip_dst=ip_dst, ip_proto=PROTO["sctp"],
        tp_src=tp_src, tp_dst=tp_dst, ttl=ttl, **kw,
    )  # fmt: skip


def icmp(in_port, eth_src, eth_dst, ip_src, ip_dst, icmp_type=None, icmp_code=0, ttl=64, **kw):
    """An ICMP echo request (or `icmp_type`); ICMPv6 (echo request 128) between IPv6 addresses."""
    if ":" in ip_src:
        return icmp6(in_port, eth_src, eth_dst, ip_src, ip_dst, icmp_type, icmp_code, ttl, **kw)
    return Packet(
        in_port, eth_src, eth_dst, ETH_IP, ip_src=ip_src, ip_dst=ip_dst, ip_proto=PROTO["icmp"],
        icmp_type=8 if icmp_type is None else icmp_type, icmp_code=icmp_code, ttl=ttl, **kw,
    )  # fmt: skip


def icmp6(in_port, eth_src, eth_dst, ip_src, ip_dst, icmp_type=None, icmp_code=0, ttl=64, **kw):
    """An ICMPv6 message: echo request (128) unless `icmp_type` says otherwise (134: a Router
    Advertisement, 137: a Redirect, 133: a Router Solicitation, 143: an MLDv2 report...)."""
    return Packet(
        in_port, eth_src, eth_dst, ETH_IPV6, ip_src=ip_src, ip_dst=ip_dst,
        ip_proto=PROTO["icmp6"], icmp_type=ICMP6_ECHO_REQUEST if icmp_type is None else icmp_type,
        icmp_code=icmp_code, ttl=ttl, **kw,
    )  # fmt: skip


def solicited_node(ip: str) -> str:
    """The solicited-node multicast address of an IPv6 address (ff02::1:ffXX:XXXX)."""
    low = int(ipaddress.IPv6Address(ip)) & 0xFFFFFF
    return str(ipaddress.IPv6Address((0xFF02 << 112) | (1 << 32) | (0xFF << 24) | low))


def multicast_mac(ip6: str) -> str:
    """The Ethernet address of an IPv6 multicast group: 33:33 and its last four bytes."""
    low = int(ipaddress.IPv6Address(ip6)) & 0xFFFFFFFF
    return "33:33:" + ":".join(f"{(low >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def neighbor_solicitation(
    in_port, eth_src, ip_src, target, sll=None, eth_dst=None, ip_dst=None, **kw
):
    """'Who has target, tell ip_src' (to target's solicited-node group unless ip_dst is given,
    hop limit 255), with a source link-layer option of `sll` (default eth_src; "" for none, as
    in a DAD probe from ::)."""
    dst = ip_dst or solicited_node(target)
    return Packet(
        in_port, eth_src, eth_dst or multicast_mac(dst), ETH_IPV6, ip_src=ip_src, ip_dst=dst,
        ip_proto=PROTO["icmp6"], icmp_type=ND_NS, ttl=255, nd_target=target,
        nd_sll=eth_src if sll is None else sll, **kw,
    )  # fmt: skip


def neighbor_advert(in_port, eth_src, ip_src, target, tll=None, eth_dst="33:33:00:00:00:01",
                    ip_dst="ff02::1", flags=0x20000000, **kw):  # fmt: skip
    """'target is at tll' (default eth_src; "" for none), unsolicited to all nodes unless told;
    flags: the nd_reserved word (R 0x80000000, S 0x40000000, O 0x20000000)."""
    return Packet(
        in_port, eth_src, eth_dst, ETH_IPV6, ip_src=ip_src, ip_dst=ip_dst,
        ip_proto=PROTO["icmp6"], icmp_type=ND_NA, ttl=255, nd_target=target,
        nd_tll=eth_src if tll is None else tll, nd_reserved=flags, **kw,
    )  # fmt: skip


def arp_request(in_port, eth_src, ip_src, target_ip, **kw):
    """A broadcast 'who has target_ip, tell ip_src'."""
    return Packet(
        in_port, eth_src, "ff:ff:ff:ff:ff:ff", ETH_ARP, arp_op=1, arp_spa=ip_src,
        arp_tpa=target_ip, arp_sha=eth_src, arp_tha="00:00:00:00:00:00", **kw,
    )  # fmt: skip


# ---- field values --------------------------------------------------------------------------

_MAC = frozenset({"dl_src", "dl_dst", "arp_sha", "arp_tha", "nd_sll", "nd_tll"})
_IPV4 = frozenset(
    {"nw_src", "nw_dst", "arp_spa", "arp_tpa", "tun_src", "tun_dst", "ct_nw_src", "ct_nw_dst"}
)
_IPV6 = frozenset({"ipv6_src", "ipv6_dst", "nd_target", "ct_ipv6_src", "ct_ipv6_dst"})
_WIDTH = {
    **{f: 48 for f in _MAC},
    **{f: 32 for f in _IPV4},
    **{f: 128 for f in _IPV6},
    "nd_reserved": 32,
    "nd_options_type": 8,
    **{f"reg{i}": 32 for i in range(16)},
    "in_port": 32,
    "dl_type": 16,
    "vlan_tci": 16,
    "nw_proto": 8,
    "nw_ttl": 8,
    "tp_src": 16,
    "tp_dst": 16,
    "icmp_type": 8,
    "icmp_code": 8,
    "arp_op": 16,
    "tun_id": 64,
    "metadata": 64,
    "ct_state": 32,
    "ct_mark": 32,
    "ct_zone": 16,
    "conj_id": 32,
    "ct_nw_proto": 8,
    "ct_tp_src": 16,
    "ct_tp_dst": 16,
}
CT_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20}
_PROTO_MATCH = {
    "ip": ((("dl_type", ETH_IP),)),
    "arp": ((("dl_type", ETH_ARP),)),
    "ipv6": ((("dl_type", ETH_IPV6),)),
    **{p: (("dl_type", ETH_IP), ("nw_proto", n)) for p, n in PROTO.items() if p != "icmp6"},
    **{
        p if p == "icmp6" else f"{p}6": (("dl_type", ETH_IPV6), ("nw_proto", n))
        for p, n in PROTO.items()
        if p != "icmp"
    },
}


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def int_mac(v: int) -> str:
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def int_ip(v: int) -> str:
    return str(ipaddress.IPv4Address(v))


def ip6_int(ip: str) -> int:
    return int(ipaddress.IPv6Address(ip))


def int_ip6(v: int) -> str:
    return str(ipaddress.IPv6Address(v))


def _full(f: str) -> int:
    return (1 << _WIDTH[f]) - 1


def _value(f: str, text: str) -> tuple[int, int]:
    """A match or set_field value of field f as (value, mask)."""
    if f not in _WIDTH:
        raise Unmodelled(f"field {f!r} is not modelled by the fake")
    if f in _IPV4:
        net = ipaddress.IPv4Network(text, strict=False)
        return int(net.network_address), int(net.netmask)
    if f in _IPV6:
        net6 = ipaddress.IPv6Network(text, strict=False)
        return int(net6.network_address), int(net6.netmask)
    val, _, mask = text.partition("/")
    if f in _MAC:
        return mac_int(val), mac_int(mask) if mask else _full(f)
    return int(val, 0), int(mask, 0) if mask else _full(f)


def _compile_match(fl: Flow) -> tuple[tuple[str, int, int], ...]:
    preds: list[tuple[str, int, int]] = []
    for f, v in fl.match:
        if f == "protocol":
            if v not in _PROTO_MATCH:
                raise Unmodelled(f"{fl}: protocol {v!r}")
            preds += [(pf, pv, _full(pf)) for pf, pv in _PROTO_MATCH[v]]
        elif f == "ct_state":
            val = mask = 0
            for tok in _ct_tokens(v):
                bit = CT_BITS[tok[1:]]
                mask |= bit
                val |= bit if tok[0] == "+" else 0
            preds.append(("ct_state", val, mask))
        else:
            try:
                val, mask = _value(f, v)
            except Unmodelled:
                raise Unmodelled(f"{fl}: match field {f!r} is not modelled by the fake") from None
            preds.append((f, val & mask, mask))
    return tuple(preds)


def _ct_tokens(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        j = i + 1
        while j < len(text) and text[j] not in "+-":
            j += 1
        out.append(text[i:j])
        i = j
    for tok in out:
        if tok[0] not in "+-" or tok[1:] not in CT_BITS:
            raise Unmodelled(f"ct_state {text!r}")
    return out


def _matches(preds, st: dict) -> bool:
    for f, v, m in preds:
        have = st.get(f)
        if have is None or have & m != v:
            return False
    return True


# set_field / move targets: their OXM / NXM spelling -> the fake's field name
_SET_NAME = {
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst",
    "ip_src": "nw_src",
    "ip_dst": "nw_dst",
    "nw_src": "nw_src",
    "nw_dst": "nw_dst",
    "nw_ttl": "nw_ttl",
    "ipv6_src": "ipv6_src",
    "ipv6_dst": "ipv6_dst",
    "icmpv6_type": "icmp_type",
    "icmpv6_code": "icmp_code",
    "nd_target": "nd_target",
    "nd_sll": "nd_sll",
    "nd_tll": "nd_tll",
    "nd_reserved": "nd_reserved",
    "nd_options_type": "nd_options_type",
    "tcp_src": "tp_src",
    "tcp_dst": "tp_dst",
    "udp_src": "tp_src",
    "udp_dst": "tp_dst",
    "sctp_src": "tp_src",
    "sctp_dst": "tp_dst",
    "arp_op": "arp_op",
    "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
    "tun_src": "tun_src",
    "tun_dst": "tun_dst",
    "tun_id": "tun_id",
    "metadata": "metadata",
    **{f"reg{i}": f"reg{i}" for i in range(16)},
}
_L4_PROTO = {"tcp": 6, "udp": 17, "sctp": 132}


# ---- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One table visit: the flow that ran (None: no flow matched, the packet is dropped)."""

    table: str
    flow: Flow | None
    depth: int = 0  # resubmit nesting
    recirc: int = 0  # 0: the packet as it came in; n: its n-th recirculation (ct(table=))
    note: str = ""

    def __str__(self) -> str:
        pad = "  " * self.depth + (f"[recirc {self.recirc}] " if self.recirc else "")
        what = "no match: drop" if self.flow is None else str(self.flow)
        return f"{pad}{self.table}: {what}" + (f"  ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Out:
    port: int
    packet: Packet
    regs: tuple[int, ...] = ()


@dataclass(frozen=True)
class PacketIn:
    table: str
    cookie: int
    meter_id: int
    max_len: int
    packet: Packet


@dataclass(repr=False)
class Result:
    """What became of one packet: every table visit, every output, every packet-in."""

    packet: Packet
    steps: list[Step] = field(default_factory=list)
    outputs: list[Out] = field(default_factory=list)
    packet_ins: list[PacketIn] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def output_ports(self) -> list[int]:
        return [o.port for o in self.outputs]

    @property
    def dropped(self) -> bool:
        return not self.outputs

    @property
    def drop_table(self) -> str | None:
        """The table whose flow ended the packet's last pass without an output."""
        if self.outputs or not self.steps:
            return None
        return self.steps[-1].table

    @property
    def tables(self) -> list[str]:
        return [s.table for s in self.steps]

    def out(self, port: int | None = None) -> Packet:
        """The one packet output (on `port`); fails loudly otherwise."""
        outs = [o for o in self.outputs if port is None or o.port == port]
        if len(outs) != 1:
            raise FakeOFError(f"expected one output on {port}, got {self.output_ports}\n{self}")
        return outs[0].packet

    def __str__(self) -> str:
        lines = [f"packet {self.packet}"] + [f"  {s}" for s in self.steps]
        lines += [f"  -> output:{o.port} {o.packet}" for o in self.outputs]
        lines += [f"  -> packet-in cookie={p.cookie:#x} from {p.table}" for p in self.packet_ins]
        lines += [f"  note: {n}" for n in self.notes]
        if self.dropped:
            lines.append(f"  -> dropped in {self.drop_table}")
        return "\n".join(lines)

    __repr__ = __str__  # assertion messages show the trace


# ---- conntrack -----------------------------------------------------------------------------


@dataclass
class Conn:
    """One connection in one zone. `nat`: ("dst" | "src", ip, port or None)."""

    zone: int
    orig: tuple
    reply: tuple
    nat: tuple | None = None
    mark: int = 0
    committed: bool = False
    seen_reply: bool = False


def _reverse(t: tuple) -> tuple:
    proto, src, dst, sport, dport = t
    return (proto, dst, src, dport, sport)


class Conntrack:
    """Connections per zone, found by their original or reply 5-tuple."""

    def __init__(self) -> None:
        self._index: dict[tuple, tuple[Conn, bool]] = {}  # (zone, tuple) -> (conn, is_reply)
        self.conns: list[Conn] = []

    def lookup(self, zone: int, t: tuple) -> tuple[Conn, bool] | None:
        return self._index.get((zone, t))

    def commit(self, conn: Conn) -> None:
        for key, rpl in (((conn.zone, conn.orig), False), ((conn.zone, conn.reply), True)):
            if key in self._index and self._index[key][0] is not conn:
                raise Unmodelled(
                    f"conntrack clash in zone {conn.zone} on {key[1]} (NAT port clash)"
                )
            self._index[key] = (conn, rpl)
        conn.committed = True
        self.conns.append(conn)

    def in_zone(self, zone: int) -> list[Conn]:
        return [c for c in self.conns if c.zone == zone]

    def clear(self) -> None:
        self._index.clear()
        self.conns.clear()


def _addr_fields(st: dict) -> tuple[str, str]:
    """The source and destination address fields of an IP packet: IPv4's or IPv6's."""
    if st.get("dl_type") == ETH_IP:
        return "nw_src", "nw_dst"
    if st.get("dl_type") == ETH_IPV6:
        return "ipv6_src", "ipv6_dst"
    raise FakeOFError("ct() on a packet that is not IP")


def _five_tuple(st: dict) -> tuple:
    src, dst = _addr_fields(st)
    proto = st["nw_proto"]
    if proto in (6, 17, 132):
        ports = (st["tp_src"], st["tp_dst"])
    else:
        ports = (0, 0)  # ICMP and the rest: by addresses only (no echo ids)
    return (proto, st[src], st[dst], *ports)


# ---- the table set -------------------------------------------------------------------------

MAX_RESUBMIT_DEPTH = 64
MAX_RECIRCULATIONS = 32
_RESERVED_PORTS = 0xFFFFFF00


@dataclass
class _Entry:
    flow: Flow
    preds: tuple
    soft: tuple[ConjunctionAction, ...] | None  # conjunction actions: a soft (clause) flow
    learned_at: float | None = None  # learned flows: last hit (for idle_timeout)
    idle_timeout: int = 0


class _Pass:
    """One packet's trip: its results and the recirculations still to run."""

    def __init__(self, result: Result, multipath, ct_invalid: bool) -> None:
        self.result = result
        self.pending: list[tuple[dict, str, int]] = []
        self.multipath = multipath
        self.ct_invalid = ct_invalid
        self.recirc = 0


class FakeOFTable:
    """One bridge's flow tables. `flows`: what is installed; `tunnel_ports`: ofports of
    flow-based tunnels (their outputs carry tun_dst); `multipath`: a default choice of link for
    every multipath action (an int, or a callable(packet fields, Multipath) -> int | None;
    None: hash)."""

    def __init__(self, flows=(), tunnel_ports=(), multipath=None) -> None:
        self.tunnel_ports = frozenset(tunnel_ports)
        self.multipath = multipath
        self.conntrack = Conntrack()
        self.now = 0.0
        self._tables: dict[str, list[_Entry]] = defaultdict(list)
        self._keys: dict[tuple, _Entry] = {}
        self.add(flows)

    # -- flow mods --

    def add(self, flows) -> None:
        """Install flows (an add of an identical flow is a no-op; a different flow with the
        same table, priority and match raises Conflict)."""
        for fl in flows:
            self._add(fl)

    def _add(self, fl: Flow, learned: _Entry | None = None) -> None:
        if not isinstance(fl, Flow):
            raise FakeOFError(f"not a Flow: {fl!r}")
        old = self._keys.get(fl.key)
        if old is not None:
            if old.flow == fl:
                return
            if learned is None:
                raise Conflict(f"two flows with one key:\n  {old.flow}\n  {fl}")
            self._tables[fl.table].remove(old)
        tables.table(fl.table)
        soft = None
        for i, a in enumerate(fl.actions):
            if not isinstance(a, _ACTIONS):
                raise Unmodelled(f"{fl}: action {a!r} is not modelled by the fake")
            if isinstance(a, SetField) and a.field not in _SET_NAME:
                raise Unmodelled(f"{fl}: set_field to {a.field!r} is not modelled by the fake")
            if isinstance(a, Move) and not {a.src, a.dst} <= _SET_NAME.keys():
                raise Unmodelled(f"{fl}: move {a.src} -> {a.dst} is not modelled by the fake")
            if isinstance(a, CT) and a.table is not None and i != len(fl.actions) - 1:
                raise Unmodelled(f"{fl}: actions after ct(table=) are not modelled by the fake")
            if isinstance(a, CT) and a.table is None and a.nat is not None:
                raise Unmodelled(f"{fl}: ct(nat) without table= is not modelled by the fake")
        if fl.actions and all(isinstance(a, ConjunctionAction) for a in fl.actions):
            soft = tuple(fl.actions)
        entry = learned or _Entry(fl, _compile_match(fl), soft)
        entry.flow, entry.preds, entry.soft = fl, _compile_match(fl), soft
        self._keys[fl.key] = entry
        rows = self._tables[fl.table]
        rows.append(entry)
        rows.sort(key=lambda e: -e.flow.priority)

    def delete(self, flows) -> None:
        """Remove flows (by key); learned flows go with the last flow that learns their cookie."""
        for fl in flows:
            entry = self._keys.pop(fl.key, None)
            if entry is not None:
                self._tables[fl.table].remove(entry)
        live = {
            a.cookie
            for rows in self._tables.values()
            for e in rows
            for a in e.flow.actions
            if isinstance(a, Learn)
        }
        for key, entry in list(self._keys.items()):
            if entry.learned_at is not None and entry.flow.cookie not in live:
                del self._keys[key]
                self._tables[entry.flow.table].remove(entry)

    def flows(self) -> set[Flow]:
        return {e.flow for e in self._keys.values()}

    def learned(self) -> set[Flow]:
        return {e.flow for e in self._keys.values() if e.learned_at is not None}

    def advance(self, seconds: float) -> None:
        """Let time pass: learned flows idle longer than their idle_timeout go."""
        self.now += seconds
        for key, e in list(self._keys.items()):
            if e.learned_at is not None and self.now - e.learned_at > e.idle_timeout:
                del self._keys[key]
                self._tables[e.flow.table].remove(e)

    # -- questions --

    def run(self, pkt: Packet, *, multipath=None, ct_invalid: bool = False) -> Result:
        """Send `pkt` into the bridge (on pkt.in_port) and return what became of it. The
        conntrack and learned flows it leaves stay for the next packet."""
        res = Result(pkt)
        p = _Pass(res, self.multipath if multipath is None else multipath, ct_invalid)
        self._pipeline(p, _fields(pkt), tables.PIPELINE[0].name, 0)
        while p.pending:
            st, table, depth = p.pending.pop(0)
            p.recirc += 1
            if p.recirc > MAX_RECIRCULATIONS:
                raise FakeOFError(f"more than {MAX_RECIRCULATIONS} recirculations\n{res}")
            self._pipeline(p, st, table, depth)
        return res

    def is_output(self, pkt: Packet, port: int, **want) -> bool:
        """Is pkt output on `port` (with these Packet fields, e.g. eth_dst=..., ttl=63)?"""
        res = self.run(pkt)
        return any(
            o.port == port and all(getattr(o.packet, k) == v for k, v in want.items())
            for o in res.outputs
        )

    def trace(self, pkt: Packet, **kw) -> str:
        return str(self.run(pkt, **kw))

    # -- the datapath --

    def lookup(self, table: str, pkt: Packet | dict) -> Flow | None:
        """The flow `table` runs for this packet (a Packet as it enters, registers 0; or a
        dict of field values by match name), None for no match. Changes nothing."""
        st = _fields(pkt) if isinstance(pkt, Packet) else {"conj_id": 0, **pkt}
        entry = self._lookup(table, st, refresh=False)
        return entry.flow if entry else None

    def _lookup(
        self, table: str, st: dict, allow_soft: bool = True, refresh: bool = True
    ) -> _Entry | None:
        hard: _Entry | None = None
        soft: list[_Entry] = []
        for e in self._tables.get(table, ()):
            if hard is not None and e.flow.priority < hard.flow.priority:
                break
            if e.soft is not None and not allow_soft:
                continue
            if not _matches(e.preds, st):
                continue
            if e.soft is not None:
                soft.append(e)
            elif hard is None:
                hard = e
            elif e.flow.actions != hard.flow.actions:
                raise Ambiguous(
                    f"{table}: two flows match at priority {e.flow.priority}:\n"
                    f"  {hard.flow}\n  {e.flow}\nfor {_show(st)}"
                )
        # soft matches above the hard one (the loop stopped below it); a conjunction fires at
        # the highest priority where all its clauses matched
        by_prio: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        n_of: dict[int, int] = {}
        for e in soft:
            if hard is not None and e.flow.priority <= hard.flow.priority:
                continue
            for a in e.soft:
                by_prio[e.flow.priority][a.id].add(a.clause)
                if n_of.setdefault(a.id, a.n_clauses) != a.n_clauses:
                    raise FakeOFError(f"conjunction {a.id} with two clause counts")
        for prio in sorted(by_prio, reverse=True):
            for cid in sorted(by_prio[prio]):
                if len(by_prio[prio][cid]) != n_of[cid]:
                    continue
                saved = st["conj_id"]
                st["conj_id"] = cid
                try:
                    hit = self._lookup(table, st, allow_soft=False, refresh=refresh)
                finally:
                    st["conj_id"] = saved
                if hit is not None:
                    return hit
        if refresh and hard is not None and hard.learned_at is not None:
            hard.learned_at = self.now  # a hit keeps a learned flow alive
        return hard

    def _pipeline(self, p: _Pass, st: dict, table: str | None, depth: int) -> bool:
        """Run tables from `table` on until no goto; False when the packet must stop."""
        while table is not None:
            entry = self._lookup(table, st)
            p.result.steps.append(Step(table, entry.flow if entry else None, depth, p.recirc))
            if entry is None:
                return True
            table, go_on = self._actions(p, st, entry.flow, depth)
            if not go_on:
                return False
        return True

    def _actions(self, p: _Pass, st: dict, fl: Flow, depth: int) -> tuple[str | None, bool]:
        for a in fl.actions:
            if isinstance(a, Goto):
                if tables.table(a.table).id <= tables.table(fl.table).id:
                    raise FakeOFError(f"{fl}: goto_table backwards")
                return a.table, True
            if isinstance(a, Output):
                self._output(p, st, a.port, fl)
            elif isinstance(a, InPort):
                self._output(p, st, st["in_port"], fl, in_port_ok=True)
            elif isinstance(a, OutputReg):
                self._output(p, st, st[a.reg], fl)
            elif isinstance(a, SetField):
                self._set_field(st, a, fl)
            elif isinstance(a, Move):
                self._move(st, a, fl)
            elif isinstance(a, DecTTL):
                if st.get("nw_ttl") is None:
                    raise FakeOFError(f"{fl}: dec_ttl on a packet without an IP TTL")
                if st["nw_ttl"] <= 1:
                    p.result.notes.append(f"invalid_ttl in {fl.table}: dropped")
                    return None, False
                st["nw_ttl"] -= 1
            elif isinstance(a, Resubmit):
                if depth + 1 > MAX_RESUBMIT_DEPTH:
                    raise FakeOFError(f"resubmit deeper than {MAX_RESUBMIT_DEPTH}")
                if not self._pipeline(p, st, a.table, depth + 1):
                    return None, False
            elif isinstance(a, MeteredController):
                p.result.packet_ins.append(
                    PacketIn(fl.table, fl.cookie, a.meter_id, a.max_len, _packet(st))
                )
            elif isinstance(a, Multipath):
                self._multipath(p, st, a, fl)
            elif isinstance(a, Learn):
                self._learn(st, a, fl)
            elif isinstance(a, CT):
                self._ct(p, st, a, fl, depth)
            elif isinstance(a, ConjunctionAction):
                raise FakeOFError(f"{fl}: a conjunction action mixed with others")
            else:
                raise Unmodelled(f"{fl}: action {a!r}")
        return None, True

    def _output(self, p: _Pass, st: dict, port: int, fl: Flow, in_port_ok: bool = False):
        if port >= _RESERVED_PORTS:
            raise Unmodelled(f"{fl}: output to reserved port {port:#x}")
        if port == st["in_port"] and not in_port_ok:
            p.result.notes.append(
                f"{fl.table}: output:{port} is the in_port: skipped (use IN_PORT)"
            )
            return
        if port in self.tunnel_ports and not st.get("tun_dst"):
            p.result.notes.append(f"{fl.table}: tunnel output:{port} without tun_dst: dropped")
            return
        out = _packet(st)
        if port not in self.tunnel_ports:  # the tunnel metadata stays in the bridge
            out = replace(out, tun_src="", tun_dst="", tun_id=0)
        p.result.outputs.append(Out(port, out, tuple(st[f"reg{i}"] for i in range(16))))

    def _set_field(self, st: dict, a: SetField, fl: Flow) -> None:
        f = _SET_NAME.get(a.field)
        if f is None:
            raise Unmodelled(f"{fl}: set_field to {a.field!r} is not modelled")
        proto = a.field.split("_")[0]
        if proto in _L4_PROTO and st.get("nw_proto") != _L4_PROTO[proto]:
            raise FakeOFError(f"{fl}: set_field {a.field} on a packet that is not {proto}")
        if f not in st:
            raise FakeOFError(f"{fl}: set_field {a.field} on a packet without that field")
        val, mask = _value(f, a.value)
        if (f in _IPV4 or f in _IPV6) and "/" in a.value:
            raise FakeOFError(f"{fl}: set_field with a masked address {a.value}")
        st[f] = (st[f] & ~mask) | (val & mask)

    def _move(self, st: dict, a: Move, fl: Flow) -> None:
        src, dst = _SET_NAME.get(a.src), _SET_NAME.get(a.dst)
        if src is None or dst is None:
            raise Unmodelled(f"{fl}: move {a.src} -> {a.dst}")
        if _WIDTH[src] != _WIDTH[dst]:
            raise FakeOFError(f"{fl}: move between fields of different widths")
        if src not in st or dst not in st:
            raise FakeOFError(f"{fl}: move with a field the packet does not have")
        st[dst] = st[src]

    def _multipath(self, p: _Pass, st: dict, a: Multipath, fl: Flow) -> None:
        choice = p.multipath
        if callable(choice):
            choice = choice(dict(st), a)
        if choice is None:
            choice = hrw_link(st, a)
        if not 0 <= choice < a.n_links:
            raise FakeOFError(f"{fl}: multipath link {choice} of {a.n_links}")
        mask = (1 << a.bits) - 1
        st[a.reg] = (st[a.reg] & ~mask) | choice

    def _learn(self, st: dict, a: Learn, fl: Flow) -> None:
        if st.get("nw_proto") != _L4_PROTO[a.protocol]:
            raise FakeOFError(f"{fl}: learn({a.protocol}) on another protocol")
        if st.get("dl_type") != (ETH_IPV6 if a.version == 6 else ETH_IP):
            raise FakeOFError(f"{fl}: learn of IPv{a.version} on another family")
        v6 = a.version == 6
        src, dst = ("ipv6_src", "ipv6_dst") if v6 else ("nw_src", "nw_dst")
        show = int_ip6 if v6 else int_ip
        acts = []
        for value, reg, mask in a.loads:
            lo = (mask & -mask).bit_length() - 1
            acts.append(SetField(reg, f"{(value << lo) & mask:#x}/{mask:#x}"))
        # made by the switch, not by flow(): the match in the order ovs-ofctl prints it
        learned = Flow(
            a.table,
            a.priority,
            (
                ("protocol", f"{a.protocol}6" if v6 else a.protocol),
                (src, show(st[src])),
                (dst, show(st[dst])),
                ("tp_dst", str(st["tp_dst"])),
            ),
            tuple(acts),
            a.cookie,
        )
        entry = _Entry(learned, (), None, learned_at=self.now, idle_timeout=a.idle_timeout)
        self._add(learned, learned=entry)

    def _ct(self, p: _Pass, st: dict, a: CT, fl: Flow, depth: int) -> None:
        work = dict(st) if a.table is not None else st
        t = _five_tuple(work)
        cached = work.get("_ct")
        if cached is not None and cached[0] == a.zone:
            _, conn, rpl = cached
        else:
            hit = self.conntrack.lookup(a.zone, t)
            if hit is None:
                conn, rpl = Conn(a.zone, t, _reverse(t)), False
            else:
                conn, rpl = hit
        if p.ct_invalid:
            state = CT_BITS["inv"] | CT_BITS["trk"]
        elif conn.committed and rpl:
            state = CT_BITS["est"] | CT_BITS["rpl"] | CT_BITS["trk"]
            conn.seen_reply = True
        elif conn.committed and conn.seen_reply:
            state = CT_BITS["est"] | CT_BITS["trk"]
        else:
            state = CT_BITS["new"] | CT_BITS["trk"]
        if a.commit and not p.ct_invalid:
            if not conn.committed:
                if a.nat:
                    kind, _, target = a.nat.partition("=")
                    ip, port = split_nat_target(target)
                    addr = ipaddress.ip_address(ip)
                    if (addr.version == 6) != (work["dl_type"] == ETH_IPV6):
                        raise FakeOFError(f"{fl}: nat({a.nat}) of another family's packet")
                    conn.nat = (kind, int(addr), int(port) if port else None)
                    conn.reply = _reverse(_translate(conn.orig, conn.nat))
                self.conntrack.commit(conn)
            if a.mark is not None:
                conn.mark = a.mark
        if a.nat is not None and not p.ct_invalid and conn.committed and conn.nat:
            _apply_nat(work, conn, rpl)
        work["_ct"] = (a.zone, conn, rpl)
        if a.table is None:
            return  # the rest of this pass keeps the ct_* fields it had
        ct_src, ct_dst = (
            ("ct_ipv6_src", "ct_ipv6_dst")
            if work["dl_type"] == ETH_IPV6
            else ("ct_nw_src", "ct_nw_dst")
        )
        work.update(
            {
                "ct_state": state,
                "ct_zone": a.zone,
                "ct_mark": conn.mark,
                "ct_nw_proto": conn.orig[0],
                ct_src: conn.orig[1],
                ct_dst: conn.orig[2],
                "ct_tp_src": conn.orig[3],
                "ct_tp_dst": conn.orig[4],
            }
        )
        p.pending.append((work, a.table, depth))


_ACTIONS = (
    Output,
    InPort,
    Goto,
    SetField,
    Move,
    DecTTL,
    OutputReg,
    ConjunctionAction,
    CT,
    Multipath,
    Learn,
    Resubmit,
    MeteredController,
)


def _translate(t: tuple, nat: tuple) -> tuple:
    proto, src, dst, sport, dport = t
    kind, ip, port = nat
    if kind == "dst":
        return (proto, src, ip, sport, dport if port is None else port)
    return (proto, ip, dst, sport if port is None else port, dport)


def _apply_nat(st: dict, conn: Conn, rpl: bool) -> None:
    """Rewrite the headers as the connection's NAT says: forward for the original direction,
    back for replies."""
    kind, ip, port = conn.nat
    src, dst = _addr_fields(st)
    l4 = st["nw_proto"] in (6, 17, 132)
    if not rpl:
        if kind == "dst":
            st[dst] = ip
            if port is not None and l4:
                st["tp_dst"] = port
        else:
            st[src] = ip
            if port is not None and l4:
                st["tp_src"] = port
    elif kind == "dst":  # a reply comes from the translated destination: back to the original
        st[src] = conn.orig[2]
        if l4:
            st["tp_src"] = conn.orig[4]
    else:  # a reply to the translated source: back to the original source
        st[dst] = conn.orig[1]
        if l4:
            st["tp_dst"] = conn.orig[3]


def hrw_link(st: dict, a: Multipath) -> int:
    """Highest random weight over a symmetric hash: both directions of a connection pick the
    same link, and the pick depends only on the addresses, protocol and (per `fields`) ports."""
    if st.get("dl_type") == ETH_IPV6:
        ips = sorted((st.get("ipv6_src", 0), st.get("ipv6_dst", 0)))
    else:
        ips = sorted((st.get("nw_src", 0), st.get("nw_dst", 0)))
    proto = st.get("nw_proto", 0)
    use_ports = proto in (6, 132) or (proto == 17 and "udp" in a.fields)
    ports = sorted((st.get("tp_src", 0), st.get("tp_dst", 0))) if use_ports else [0, 0]
    basis = f"{ips[0]}-{ips[1]}-{proto}-{ports[0]}-{ports[1]}".encode()

    def weight(i: int) -> bytes:
        return hashlib.blake2b(basis + b"/%d" % i, digest_size=8).digest()

    return max(range(a.n_links), key=lambda i: (weight(i), -i))


# ---- packet <-> fields ---------------------------------------------------------------------


def _fields(pkt: Packet) -> dict:
    st: dict = {
        "in_port": pkt.in_port,
        "dl_src": mac_int(pkt.eth_src),
        "dl_dst": mac_int(pkt.eth_dst),
        "dl_type": pkt.eth_type,
        "vlan_tci": pkt.vlan_tci,
        "tun_src": ip_int(pkt.tun_src) if pkt.tun_src else 0,
        "tun_dst": ip_int(pkt.tun_dst) if pkt.tun_dst else 0,
        "tun_id": pkt.tun_id,
        "metadata": 0,
        "ct_state": 0,
        "ct_zone": 0,
        "ct_mark": 0,
        "conj_id": 0,
        **{f"reg{i}": 0 for i in range(16)},
    }
    if pkt.eth_type == ETH_IP:
        if not (pkt.ip_src and pkt.ip_dst):
            raise FakeOFError(f"an IPv4 packet needs ip_src and ip_dst: {pkt}")
        st.update(
            nw_src=ip_int(pkt.ip_src),
            nw_dst=ip_int(pkt.ip_dst),
            nw_proto=pkt.ip_proto,
            nw_ttl=pkt.ttl,
        )
        if pkt.ip_proto in (6, 17, 132):
            st.update(tp_src=pkt.tp_src, tp_dst=pkt.tp_dst)
        elif pkt.ip_proto == 1:
            st.update(icmp_type=pkt.icmp_type, icmp_code=pkt.icmp_code)
    elif pkt.eth_type == ETH_IPV6:
        if not (pkt.ip_src and pkt.ip_dst):
            raise FakeOFError(f"an IPv6 packet needs ip_src and ip_dst: {pkt}")
        st.update(
            ipv6_src=ip6_int(pkt.ip_src),
            ipv6_dst=ip6_int(pkt.ip_dst),
            nw_proto=pkt.ip_proto,
            nw_ttl=pkt.ttl,
        )
        if pkt.ip_proto in (6, 17, 132):
            st.update(tp_src=pkt.tp_src, tp_dst=pkt.tp_dst)
        elif pkt.ip_proto == PROTO["icmp6"]:
            st.update(icmp_type=pkt.icmp_type, icmp_code=pkt.icmp_code)
            if pkt.icmp_type in (ND_NS, ND_NA):
                if not pkt.nd_target:
                    raise FakeOFError(
                        f"a Neighbor Solicitation/Advertisement needs nd_target: {pkt}"
                    )
                ns = pkt.icmp_type == ND_NS
                opt = pkt.nd_sll if ns else pkt.nd_tll
                st.update(
                    nd_target=ip6_int(pkt.nd_target),
                    nd_sll=mac_int(pkt.nd_sll) if ns and pkt.nd_sll else 0,
                    nd_tll=mac_int(pkt.nd_tll) if not ns and pkt.nd_tll else 0,
                    nd_reserved=pkt.nd_reserved,
                    nd_options_type=(1 if ns else 2) if opt else 0,
                )
    elif pkt.eth_type == ETH_ARP:
        st.update(
            arp_op=pkt.arp_op,
            arp_spa=ip_int(pkt.arp_spa),
            arp_tpa=ip_int(pkt.arp_tpa),
            arp_sha=mac_int(pkt.arp_sha),
            arp_tha=mac_int(pkt.arp_tha or "00:00:00:00:00:00"),
        )
    else:
        raise Unmodelled(f"eth_type {pkt.eth_type:#x}")
    st["_flags"] = pkt.tcp_flags
    return st


def _packet(st: dict) -> Packet:
    kw: dict = {
        "in_port": st["in_port"],
        "eth_src": int_mac(st["dl_src"]),
        "eth_dst": int_mac(st["dl_dst"]),
        "eth_type": st["dl_type"],
        "vlan_tci": st["vlan_tci"],
        "tun_src": int_ip(st["tun_src"]) if st["tun_src"] else "",
        "tun_dst": int_ip(st["tun_dst"]) if st["tun_dst"] else "",
        "tun_id": st["tun_id"],
    }
    if st["dl_type"] == ETH_IP:
        kw.update(
            ip_src=int_ip(st["nw_src"]),
            ip_dst=int_ip(st["nw_dst"]),
            ip_proto=st["nw_proto"],
            ttl=st["nw_ttl"],
            tp_src=st.get("tp_src", 0),
            tp_dst=st.get("tp_dst", 0),
            icmp_type=st.get("icmp_type", 0),
            icmp_code=st.get("icmp_code", 0),
            tcp_flags=st.get("_flags", ""),
        )
    elif st["dl_type"] == ETH_IPV6:
        kw.update(
            ip_src=int_ip6(st["ipv6_src"]),
            ip_dst=int_ip6(st["ipv6_dst"]),
            ip_proto=st["nw_proto"],
            ttl=st["nw_ttl"],
            tp_src=st.get("tp_src", 0),
            tp_dst=st.get("tp_dst", 0),
            icmp_type=st.get("icmp_type", 0),
            icmp_code=st.get("icmp_code", 0),
            tcp_flags=st.get("_flags", ""),
        )
        if "nd_target" in st:
            # the one link-layer option: its type says which it is; a solicitation's source
            # option retyped to 2 carries nd_tll once set (else still the source's address)
            opt = st["nd_options_type"]
            mac = st["nd_tll"] or st["nd_sll"] if opt == 2 else st["nd_sll"]
            kw.update(
                nd_target=int_ip6(st["nd_target"]),
                nd_sll=int_mac(mac) if opt == 1 else "",
                nd_tll=int_mac(mac) if opt == 2 else "",
                nd_reserved=st["nd_reserved"],
            )
    else:
        kw.update(
            arp_op=st["arp_op"],
            arp_spa=int_ip(st["arp_spa"]),
            arp_tpa=int_ip(st["arp_tpa"]),
            arp_sha=int_mac(st["arp_sha"]),
            arp_tha=int_mac(st["arp_tha"]),
        )
    return Packet(**kw)


def _show(st: dict) -> str:
    try:
        return str(_packet(st))
    except (KeyError, ValueError):
        return repr(st)


# ---- several nodes joined by their tunnels ---------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    node: str  # the node's IP
    port: int
    packet: Packet


class FakeNetwork:
    """Nodes (by node IP) whose tunnel outputs arrive at the node with that IP, on its tunnel
    port, with tun_src/tun_dst set (the VXLAN underlay is perfect: no MTU, no loss)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[FakeOFTable, int]] = {}

    def add_node(self, node_ip: str, fake: FakeOFTable, tun_ofport: int) -> None:
        self.nodes[node_ip] = (fake, tun_ofport)

    def send(self, node_ip: str, pkt: Packet, max_hops: int = 4, **kw):
        """Run pkt on `node_ip` and follow it through tunnels. Returns (deliveries on
        non-tunnel ports, every Result in order)."""
        todo = [(node_ip, pkt)]
        deliveries, results = [], []
        while todo:
            node, p = todo.pop(0)
            if len(results) >= max_hops:
                raise FakeOFError(f"more than {max_hops} hops: a tunnel loop?")
            fake, tun = self.nodes[node]
            res = fake.run(p, **kw)
            results.append(res)
            for o in res.outputs:
                if o.port != tun:
                    deliveries.append(Delivery(node, o.port, o.packet))
                    continue
                dst = o.packet.tun_dst
                if dst not in self.nodes:
                    raise FakeOFError(f"tunnel to {dst}: no such node")
                _, far_tun = self.nodes[dst]
                todo.append((dst, replace(o.packet, in_port=far_tun, tun_src=node)))
        return deliveries, results
