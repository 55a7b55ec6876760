"""The Flow value: immutable, hashable, with the text `ovs-ofctl dump-flows --no-stats` shows.

A flow is built with `flow()`, which puts match fields in the order OVS prints them and checks
the flow against its table and the protocol prerequisites of its fields, so a malformed flow
fails in a unit test and not on a switch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from flows import tables
from flows.canon import (  # noqa: F401 - nat_target/split_nat_target are part of this module's API
    VLAN_PRESENT,
    FlowError,
    _canonical_ipv4,
    _canonical_ipv6,
    _canonical_vlan_tci,
    _check_nat,
    _or,
    nat_target,
    split_nat_target,
)

# Protocol shorthands and what they imply (OVS prints the shorthand instead of dl_type/nw_proto).
PROTOCOLS = {
    "ip": ("ip",),
    "arp": ("arp",),
    "tcp": ("ip", "tcp"),
    "udp": ("ip", "udp"),
    "sctp": ("ip", "sctp"),
    "icmp": ("ip", "icmp"),
    "ipv6": ("ipv6",),
    "tcp6": ("ipv6", "tcp"),
    "udp6": ("ipv6", "udp"),
    "sctp6": ("ipv6", "sctp"),
    "icmp6": ("ipv6", "icmp6"),
}
IP_ANY = frozenset({"ip", "ipv6"})

# Match fields in the order ovs-ofctl prints them (checked against OVS 3.1 in the integration tests).
FIELD_ORDER = (
    [
        "conj_id",
        "ct_state",
        "ct_zone",
        "ct_mark",
        "ct_label",
        "ct_nw_src",
        "ct_nw_dst",
        "ct_ipv6_src",
        "ct_ipv6_dst",
        "ct_nw_proto",
        "ct_tp_src",
        "ct_tp_dst",
        "protocol",
    ]
    + [f"reg{i}" for i in range(16)]
    + [
        "tun_id",
        "tun_src",
        "tun_dst",
        "metadata",
        "in_port",
        "vlan_tci",
        "dl_src",
        "dl_dst",
        "dl_type",
        "nw_src",
        "nw_dst",
        "ipv6_src",
        "ipv6_dst",
        "arp_spa",
        "arp_tpa",
        "arp_op",
        "arp_sha",
        "arp_tha",
        "nw_proto",
        "nw_ttl",
        "icmp_type",
        "icmp_code",
        "nd_target",
        "nd_sll",
        "nd_tll",
        "tp_src",
        "tp_dst",
    ]
)
_RANK = {f: i for i, f in enumerate(FIELD_ORDER)}

# Fields that need a protocol in the match (any one of the tuple). ovs-ofctl prints nw_ttl
# (the hop limit), nw_proto, icmp_type and icmp_code for both families.
NEEDS = {
    "nw_src": ("ip",),
    "nw_dst": ("ip",),
    "ipv6_src": ("ipv6",),
    "ipv6_dst": ("ipv6",),
    "nw_ttl": ("ip", "ipv6"),
    "nw_proto": ("ip", "ipv6"),
    "ct_nw_src": ("ip",),
    "ct_nw_dst": ("ip",),
    "ct_ipv6_src": ("ipv6",),
    "ct_ipv6_dst": ("ipv6",),
    "arp_spa": ("arp",),
    "arp_tpa": ("arp",),
    "arp_op": ("arp",),
    "arp_sha": ("arp",),
    "arp_tha": ("arp",),
    "icmp_type": ("icmp", "icmp6"),
    "icmp_code": ("icmp", "icmp6"),
    "nd_target": ("icmp6",),
    "nd_sll": ("icmp6",),
    "nd_tll": ("icmp6",),
    "tp_src": ("tcp", "udp", "sctp"),
    "tp_dst": ("tcp", "udp", "sctp"),
}


# FlowError and the value canonicalisation live in flows/canon.py (re-exported here)


# IPv4 address fields: OVS prints a /32 as the bare address, a network by its first address
# ("10.1.2.3/24" comes back as 10.1.2.0/24) and leaves out a /0 match entirely; flow() writes
# them the same way, so a desired flow and the installed one compare equal.
IPV4_FIELDS = frozenset(
    {"nw_src", "nw_dst", "arp_spa", "arp_tpa", "ct_nw_src", "ct_nw_dst", "tun_src", "tun_dst"}
)
# IPv6 address fields, written as OVS prints them: compressed, a /128 bare, /0 left out.
IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "ct_ipv6_src", "ct_ipv6_dst", "nd_target"})


# integer match fields and their largest value
_INT_RANGE = {
    "tp_src": 0xFFFF,
    "tp_dst": 0xFFFF,
    "icmp_type": 0xFF,
    "icmp_code": 0xFF,
    "arp_op": 0xFFFF,
    "nw_ttl": 0xFF,
    "ct_zone": 0xFFFF,
    "conj_id": 0xFFFFFFFF,
    "in_port": 0xFFFFFFFF,
}


# ---- actions: small immutable values with their ovs-ofctl text -----------------------------


@dataclass(frozen=True)
class Output:
    port: int

    def text(self) -> str:
        return f"output:{self.port}"


@dataclass(frozen=True)
class InPort:
    def text(self) -> str:
        return "IN_PORT"


@dataclass(frozen=True)
class Goto:
    table: str

    def text(self) -> str:
        return f"goto_table:{tables.table(self.table).id}"


@dataclass(frozen=True)
class SetField:
    # eth_src, eth_dst, arp_op, arp_sha, arp_spa, tun_dst, reg0..reg15, ipv6_src, ipv6_dst,
    # icmpv6_type, icmpv6_code, nd_reserved (32 bits: R|S|O flags), nd_options_type, nd_tll, ...
    field: str
    value: str  # as ovs-ofctl prints it; registers: "0x2" or "0x2/0xf"

    def text(self) -> str:
        return f"set_field:{self.value}->{_OVS_NAME.get(self.field, self.field)}"


# set_field targets whose ovs-ofctl spelling differs from the OXM name.
_OVS_NAME = {"ipv4_src": "ip_src", "ipv4_dst": "ip_dst"}


# NXM names of the fields `move` uses, as ovs-ofctl prints them.
NXM = {
    "eth_src": "NXM_OF_ETH_SRC[]",
    "eth_dst": "NXM_OF_ETH_DST[]",
    "arp_sha": "NXM_NX_ARP_SHA[]",
    "arp_tha": "NXM_NX_ARP_THA[]",
    "arp_spa": "NXM_OF_ARP_SPA[]",
    "arp_tpa": "NXM_OF_ARP_TPA[]",
    "ipv4_src": "NXM_OF_IP_SRC[]",
    "ipv4_dst": "NXM_OF_IP_DST[]",
    "ipv6_src": "NXM_NX_IPV6_SRC[]",
    "ipv6_dst": "NXM_NX_IPV6_DST[]",
    "nd_target": "NXM_NX_ND_TARGET[]",
    "nd_sll": "NXM_NX_ND_SLL[]",
    "nd_tll": "NXM_NX_ND_TLL[]",
    **{f"reg{i}": f"NXM_NX_REG{i}[]" for i in range(16)},
}


@dataclass(frozen=True)
class Move:
    src: str
    dst: str

    def text(self) -> str:
        return f"move:{NXM[self.src]}->{NXM[self.dst]}"


@dataclass(frozen=True)
class DecTTL:
    def text(self) -> str:
        return "dec_ttl"


@dataclass(frozen=True)
class OutputReg:
    """Output to the port number held in a whole register."""

    reg: str  # "reg2"

    def text(self) -> str:
        return f"output:{NXM[self.reg]}"


@dataclass(frozen=True)
class MeteredController:
    """A copy of the packet to the agent (packet-in, carrying this flow's cookie), at most
    `max_len` bytes of it, rate-limited by the switch's OpenFlow meter `meter_id`
    (NXAST_CONTROLLER2); the packet itself goes on with the next action."""

    meter_id: int
    max_len: int = 0xFFFF

    def text(self) -> str:
        opts = [f"max_len={self.max_len}"] if self.max_len != 0xFFFF else []
        return f"controller({','.join(opts + [f'meter_id={self.meter_id}'])})"


@dataclass(frozen=True)
class Conjunction:
    id: int
    clause: int  # 1-based, as ovs-ofctl writes it
    n_clauses: int

    def text(self) -> str:
        return f"conjunction({self.id},{self.clause}/{self.n_clauses})"


@dataclass(frozen=True)
class CT:
    """Conntrack in a fixed zone: recirculate to `table`, or commit."""

    zone: int
    table: str | None = None
    commit: bool = False
    nat: str | None = None  # None: no NAT; "": apply the connection's NAT; "dst=IP:PORT"
    mark: int | None = None  # with commit: set the connection's ct_mark (all 32 bits)

    def text(self) -> str:
        parts = (["commit"] if self.commit else []) + (
            [f"table={tables.table(self.table).id}"] if self.table else []
        )
        parts += [f"zone={self.zone}"] if self.zone else []
        if self.nat is not None:
            parts.append(f"nat({self.nat})" if self.nat else "nat")
        if self.mark is not None:
            parts.append(f"exec(set_field:{self.mark:#x}->ct_mark)")
        return f"ct({','.join(parts)})"


def _bit_range(mask: int) -> str:
    """'0' for one bit, '0..3' for several contiguous bits (as ovs-ofctl prints subfields)."""
    lo = (mask & -mask).bit_length() - 1
    hi = mask.bit_length() - 1
    if mask >> lo != (1 << (hi - lo + 1)) - 1:
        raise FlowError(f"mask {mask:#x} is not contiguous")
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


@dataclass(frozen=True)
class Resubmit:
    """Run a side table's matching flow here and come back (its actions apply, then ours go on)."""

    table: str

    def text(self) -> str:
        return f"resubmit(,{tables.table(self.table).id})"


# learn() match fields by protocol: the packet's source, destination address and port
LEARN_L4_DST = {"tcp": "NXM_OF_TCP_DST[]", "udp": "NXM_OF_UDP_DST[]", "sctp": "OXM_OF_SCTP_DST[]"}
LEARN_IP_PROTO = {"tcp": 6, "udp": 17, "sctp": 132}


@dataclass(frozen=True)
class Learn:
    """Add a flow to `table` matching this packet's (protocol, source IP, destination IP,
    destination port) that loads constants into register fields: session affinity. The learned
    flows carry `cookie` and go when the last flow that learns with that cookie goes
    (delete_learned); they expire `idle_timeout` seconds after their last hit."""

    table: str
    protocol: str  # tcp, udp, sctp
    idle_timeout: int
    priority: int
    cookie: int
    loads: tuple[tuple[int, str, int], ...]  # (value, "regN", mask within the register)
    version: int = 4  # the IP family of the packets it learns from

    def text(self) -> str:
        v6 = self.version == 6
        parts = [
            f"table={tables.table(self.table).id}",
            f"idle_timeout={self.idle_timeout}",
            f"priority={self.priority}",
            "delete_learned",
            f"cookie={self.cookie:#x}",
            "eth_type=0x86dd" if v6 else "eth_type=0x800",
            f"nw_proto={LEARN_IP_PROTO[self.protocol]}",
            "NXM_NX_IPV6_SRC[]" if v6 else "NXM_OF_IP_SRC[]",
            "NXM_NX_IPV6_DST[]" if v6 else "NXM_OF_IP_DST[]",
            LEARN_L4_DST[self.protocol],
        ]
        for value, reg, mask in self.loads:
            bits = "" if mask == 0xFFFFFFFF else _bit_range(mask)
            shown = f"{value:#x}" if value else "0"  # as ovs-ofctl prints a zero load
            parts.append(f"load:{shown}->NXM_NX_{reg.upper()}[{bits}]")
        return f"learn({','.join(parts)})"


@dataclass(frozen=True)
class Multipath:
    """Pick one of n_links (0..n-1) by a symmetric hash of the 5-tuple, highest random weight
    (a link change moves only the flows of that link), into a register field."""

    n_links: int
    reg: str  # "reg3"
    bits: int = 16
    fields: str = "symmetric_l4"  # or "symmetric_l3l4+udp" (UDP ports too)

    def text(self) -> str:
        dst = f"NXM_NX_{self.reg.upper()}[0..{self.bits - 1}]"
        return f"multipath({self.fields},0,hrw,{self.n_links},0,{dst})"


Action = (
    Output
    | InPort
    | Goto
    | SetField
    | Move
    | DecTTL
    | OutputReg
    | Conjunction
    | CT
    | Multipath
    | Learn
    | Resubmit
    | MeteredController
)

# ct_state flags in the order ovs-ofctl prints them.
CT_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk")


def ct_state(**flags: bool) -> str:
    """ct_state match text: ct_state(new=True, trk=True) -> '+new+trk'."""
    unknown = set(flags) - set(CT_FLAGS)
    if unknown:
        raise FlowError(f"unknown ct_state flags {sorted(unknown)}")
    return "".join(("+" if flags[f] else "-") + f for f in CT_FLAGS if f in flags)


# ---- the flow ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    table: str
    priority: int
    match: tuple[tuple[str, str], ...]
    actions: tuple[Action, ...] = ()
    cookie: int = 0  # feature | owner; the controller adds the round
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_hash", hash((self.table, self.priority, self.match, self.actions, self.cookie))
        )

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # re-hash on unpickling: str hashes differ between processes
        return (Flow, (self.table, self.priority, self.match, self.actions, self.cookie))

    @property
    def key(self) -> tuple:
        """What identifies a flow on the switch: table, priority and match."""
        return (self.table, self.priority, self.match)

    @property
    def table_id(self) -> int:
        return tables.table(self.table).id

    def match_text(self) -> str:
        parts = [f"priority={self.priority}"]
        for f, v in self.match:
            parts.append(v if f == "protocol" else f"{f}={v}")
        return ",".join(parts)

    def actions_text(self) -> str:
        return ",".join(a.text() for a in self.actions) if self.actions else "drop"

    def text(self, cookie: int | None = None) -> str:
        """The line `ovs-ofctl dump-flows --no-stats` prints for this flow (without the
        leading space). `cookie` is the full cookie on the switch (round included)."""
        c = self.cookie if cookie is None else cookie
        head = []
        if c:
            head.append(f"cookie={c:#x}")
        if self.table_id:
            head.append(f"table={self.table_id}")
        prefix = ", ".join(head) + (", " if head else "")
        return f"{prefix}{self.match_text()} actions={self.actions_text()}"

    def named_text(self, cookie: int | None = None) -> str:
        """text() with table names for table ids (`table=SpoofGuard`, `goto_table:L2Forwarding`,
        `ct(table=ConntrackState,...)`, `resubmit(,SessionAffinity)`), the table always said:
        how the golden tests and the design read. `ids(named_text())` is text() again."""
        c = self.cookie if cookie is None else cookie
        head = [f"cookie={c:#x}"] if c else []
        head.append(f"table={self.table}")
        return f"{', '.join(head)}, {self.match_text()} actions={names(self.actions_text())}"

    def __str__(self) -> str:
        return f"[{self.table}] {self.match_text()} actions={self.actions_text()}"


_TABLE_REF = re.compile(r"(?<![a-z_])(table=|goto_table:|resubmit\(,)(\d+)")
_TABLE_NAME_REF = re.compile(r"(?<![a-z_])(table=|goto_table:|resubmit\(,)([A-Z][A-Za-z0-9]*)")


def names(text: str) -> str:
    """Table ids in a flow's text replaced by table names."""
    return _TABLE_REF.sub(lambda m: m[1] + tables.name_of(int(m[2])), text)


def ids(text: str) -> str:
    """Table names in a flow's text replaced by ids, as ovs-ofctl prints it (table 0 unsaid)."""
    out = _TABLE_NAME_REF.sub(lambda m: m[1] + str(tables.table(m[2]).id), text)
    return out.replace(", table=0, ", ", ").removeprefix("table=0, ")


def _protocol_of(match: dict) -> set[str]:
    proto = match.get("protocol")
    if proto is None:
        return set()
    if proto not in PROTOCOLS:
        raise FlowError(f"unknown protocol {proto!r}")
    return set(PROTOCOLS[proto])


def _check_against_table(t: tables.Table, items: list, acts: tuple) -> None:
    """What the table declares its flows may match, set and go on to (flows/tables.py)."""
    extra = {f for f, _ in items} - t.match
    if extra:
        raise FlowError(f"{t.name}: does not match on {', '.join(sorted(extra))}")
    sets, targets = set(), set()
    for a in acts:
        if isinstance(a, SetField):
            sets.add(a.field)
        elif isinstance(a, Move):
            sets.add(a.dst)
        elif isinstance(a, Multipath):
            sets.add(a.reg)
        elif isinstance(a, Goto | Resubmit | Learn) or (isinstance(a, CT) and a.table):
            targets.add(a.table)
    if sets - t.sets:
        raise FlowError(f"{t.name}: does not set {', '.join(sorted(sets - t.sets))}")
    allowed = set(t.next)
    if not t.side and t is not tables.PIPELINE[-1]:
        allowed.add(tables.next_table(t.name).name)
    if targets - allowed:
        raise FlowError(f"{t.name}: does not go on to {', '.join(sorted(targets - allowed))}")


def flow(table: str, priority: int, match: dict | None = None, actions=(), cookie: int = 0) -> Flow:
    """Build a checked Flow. `match` maps field names (ovs-ofctl spelling; 'protocol' for the
    ip/arp/tcp/udp/sctp/icmp shorthand) to values (str or int). Flows are values, so the same
    arguments give the same Flow: recently built ones are remembered (policy recomputation
    rebuilds mostly the flows it had)."""
    return _built(table, priority, _items(table, priority, match, cookie), tuple(actions), cookie)


@functools.lru_cache(maxsize=1 << 15)
def _built(table: str, priority: int, match_items: tuple, acts: tuple, cookie: int) -> Flow:
    """flow()'s Flow, checked and its table's declarations asked, remembered as a whole."""
    f = _checked(table, priority, match_items, acts, cookie)
    _declared(f)
    return f


def _items(table: str, priority: int, match: dict | None, cookie: int) -> tuple:
    items = tuple((match or {}).items())
    # remembered by value: 1, 1.0 and True are one key, so only int and str may come in
    if type(priority) is not int or type(cookie) is not int:
        raise FlowError(f"{table}: priority and cookie must be integers")
    for f, v in items:
        if type(v) is not int and type(v) is not str:
            raise FlowError(f"{table}: {f}={v!r}: match values are int or str")
    return items


def any_table_flow(
    table: str, priority: int, match: dict | None = None, actions=(), cookie: int = 0
) -> Flow:
    """flow() without its table's declarations: every field and action flow() knows, in any
    table. For tests of the encoder only; pipeline code uses flow()."""
    items = _items(table, priority, match, cookie)
    return _checked(table, priority, items, tuple(actions), cookie)


def _declared(f: Flow) -> None:
    _declared_shape(f.table, tuple(k for k, _ in f.match), f.actions)


@functools.lru_cache(maxsize=1 << 15)
def _declared_shape(table: str, fields: tuple, actions: tuple) -> None:
    """The table's declarations read only the match's field names and the actions: flows of
    one shape (a rule's peer addresses, each pod's flows of one kind) are checked once."""
    _check_against_table(tables.table(table), [(f, None) for f in fields], actions)


def _checked(table: str, priority: int, match_items: tuple, acts: tuple, cookie: int) -> Flow:
    t = tables.table(table)
    if not 0 <= priority <= 0xFFFF:
        raise FlowError(f"priority {priority} out of range")
    match = dict(match_items)
    protos = _protocol_of(match)
    items = []
    for f, v in match.items():
        if f not in _RANK:
            raise FlowError(f"{table}: unsupported match field {f!r}")
        if f in IPV4_FIELDS and isinstance(v, str):
            v = _canonical_ipv4(f, v)
            if v is None:
                continue
        elif f in IPV6_FIELDS and isinstance(v, str):
            v = _canonical_ipv6(f, v)
            if v is None:
                continue
        elif f == "vlan_tci":
            v = _canonical_vlan_tci(v)
        need = NEEDS.get(f)
        if need and not protos & set(need):
            raise FlowError(f"{table}: {f} needs {_or(need)} in the match")
        if isinstance(v, int) and f in _INT_RANGE and not 0 <= v <= _INT_RANGE[f]:
            raise FlowError(f"{table}: {f}={v} out of range 0..{_INT_RANGE[f]}")
        if isinstance(v, int) and f not in (
            "in_port",
            "conj_id",
            "arp_op",
            "nw_ttl",
            "icmp_type",
            "icmp_code",
            "tp_src",
            "tp_dst",
            "ct_zone",
        ):
            v = f"{v:#x}"
        items.append((f, str(v).lower() if f != "ct_state" else str(v)))
    items.sort(key=lambda kv: _RANK[kv[0]])
    n_conj = 0
    for a in acts:
        if isinstance(a, Goto):
            target = tables.table(a.table)
            if target.id <= t.id:
                raise FlowError(f"{table}: goto_table must go forward, not to {a.table}")
        elif not isinstance(a, Action):
            raise FlowError(f"{table}: unsupported action {a!r}")
        if isinstance(a, DecTTL | CT) and not protos & IP_ANY:
            raise FlowError(f"{table}: {a.text()} needs ip or ipv6 in the match")
        if isinstance(a, CT) and a.table is not None and tables.table(a.table).id <= t.id:
            raise FlowError(f"{table}: ct(table=) must go forward, not to {a.table}")
        if isinstance(a, Conjunction):
            if not 1 <= a.clause <= a.n_clauses or not 2 <= a.n_clauses <= 64:
                raise FlowError(f"{table}: bad conjunction clause {a.clause}/{a.n_clauses}")
            if not 0 <= a.id <= 0xFFFFFFFF:
                raise FlowError(f"{table}: conjunction id {a.id} out of range")
            n_conj += 1
    if n_conj and n_conj != len(acts):
        raise FlowError(f"{table}: conjunction actions cannot mix with other actions")
    if "ct_state" in match:
        if not protos & IP_ANY:
            raise FlowError(f"{table}: ct_state needs ip or ipv6 in the match")
        flags = re.findall(r"[+-](new|est|rel|rpl|inv|trk)", match["ct_state"])
        if not re.fullmatch(
            r"([+-](new|est|rel|rpl|inv|trk))+", match["ct_state"]
        ) or flags != sorted(flags, key=CT_FLAGS.index):
            raise FlowError(
                f"{table}: ct_state {match['ct_state']!r}: use ct_state() (flags in OVS order)"
            )
    for a in acts:
        if isinstance(a, CT) and a.commit and "+inv" in match.get("ct_state", ""):
            raise FlowError(f"{table}: ct(commit) cannot apply to +inv packets")
        if isinstance(a, CT) and a.mark is not None and not a.commit:
            raise FlowError(f"{table}: ct_mark can only be set by ct(commit)")
        if isinstance(a, Resubmit) and not tables.table(a.table).side:
            raise FlowError(f"{table}: resubmit only to side tables, not {a.table}")
        if isinstance(a, Learn) and a.protocol not in LEARN_L4_DST:
            raise FlowError(f"{table}: learn needs tcp, udp or sctp, not {a.protocol!r}")
        if isinstance(a, CT) and not 0 <= a.zone <= 0xFFFF:
            raise FlowError(f"{table}: ct zone {a.zone} out of range")
        if isinstance(a, CT) and a.nat:
            _check_nat(table, a.nat)
        if isinstance(a, MeteredController) and not (
            1 <= a.meter_id <= 0xFFFF0000 and 1 <= a.max_len <= 0xFFFF
        ):
            raise FlowError(f"{table}: bad {a.text()} (meter 1..0xffff0000, max_len 1..65535)")
    gotos = [a for a in acts if isinstance(a, Goto)]
    if gotos and acts[-1] is not gotos[0] or len(gotos) > 1:
        raise FlowError(f"{table}: goto_table must be the last action, once")
    return Flow(table, priority, tuple(items), acts, cookie)
