"""The br-int pipeline: one ordered list of named tables.

Table ids are spaced by ten so that later stages (conntrack, services, policy) slot in
without renumbering. Every tool prints the names; nothing outside this module hard-codes ids.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """One table of the pipeline and what its flows may do (faucet's ValveTable idea): the
    match fields they may use, the fields their actions may set, and the tables they may go
    on to (goto, conntrack recirculation, resubmit, learn). flow() checks every flow against
    its table, so a flow in the wrong place fails in a unit test, and the tools can draw the
    pipeline from the declarations."""

    name: str
    id: int
    miss: str  # "drop" or "next": what the priority-0 flow does
    doc: str
    side: bool = False  # only visited by resubmit (learned flows); the pipeline skips it
    match: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    next: frozenset[str] = frozenset()  # besides the table-miss's next table
    ipv6_only: bool = False  # used (and its miss flow installed) only on nodes with IPv6


def _t(name, id, miss, doc, side=False, match=(), sets=(), next=(), ipv6_only=False) -> Table:  # noqa: A002
    return Table(
        name, id, miss, doc, side, frozenset(match), frozenset(sets), frozenset(next), ipv6_only
    )


_IP = ("protocol", "nw_src", "nw_dst", "ipv6_src", "ipv6_dst")
_L4 = ("tp_dst",)
_IP6 = ("ipv6_src", "ipv6_dst")  # the policy tables (flows/policy.py) match IPv6 addresses

PIPELINE: tuple[Table, ...] = (
    _t(
        "Classifier",
        0,
        "drop",
        "marks where a packet came from: pod, gateway or tunnel (known nodes only); drops the"
        " hairpin source from the gateway or the tunnel",
        match=("in_port", "protocol", "tun_src", "vlan_tci", "nw_src", "ipv6_src"),
        sets=("reg0",),
        next=("SpoofGuard", "ARPResponder", "HairpinUnSNAT"),
    ),
    _t(
        "SpoofGuard",
        10,
        "drop",
        "a pod port may only send untagged IPv4, ARP and IPv6 from its own IPs and MAC (IPv6: its"
        " global address or MAC-derived link-local; NS/NA only with its own MAC in nd_sll/nd_tll,"
        " others dropped at 205; Router Advertisements icmp6 134, Redirects icmp6 137 and DHCPv6"
        " server replies udp6 tp_src=547 dropped at 220)",
        match=(
            "in_port",
            "dl_src",
            "vlan_tci",
            "protocol",
            "nw_src",
            "arp_spa",
            "arp_sha",
            "ipv6_src",
            "icmp_type",
            "nd_target",
            "nd_sll",
            "nd_tll",
            "tp_src",
        ),
        next=("ARPResponder",),
    ),
    _t(
        "ARPResponder",
        20,
        "next",
        "answers ARP requests and IPv6 Neighbor Solicitations (not DAD probes) for local pod IPs"
        " and the gateway (R flag), and the host's for remote pods (virtual router MAC)",
        match=("protocol", "reg0", "arp_tpa", "arp_op", "ipv6_src", "icmp_type", "nd_target"),
        sets=(
            "eth_src",
            "eth_dst",
            "arp_op",
            "arp_sha",
            "arp_tha",
            "arp_spa",
            "arp_tpa",
            "reg1",
            "ipv6_src",
            "ipv6_dst",
            "icmpv6_type",
            "icmpv6_code",
            "nd_reserved",
            "nd_options_type",
        ),
        next=("NDReply",),
    ),
    _t(
        "NDReply",
        21,
        "drop",
        "(resubmit from ARPResponder) the Neighbor Advertisement's target link-layer address"
        " is its Ethernet source; out of the port the solicitation came in by",
        side=True,
        match=("protocol", "icmp_type"),
        sets=("nd_tll",),
        ipv6_only=True,
    ),
    _t(
        "HairpinUnSNAT",
        25,
        "next",
        "replies to the hairpin address: undo its SNAT (zone 65001)",
        match=_IP,
        next=("Conntrack",),
    ),
    _t(
        "Conntrack",
        30,
        "next",
        "IPv4 and IPv6 go through conntrack (zone 65000), then ConntrackState",
        match=("protocol",),
        next=("ConntrackState",),
    ),
    _t(
        "ConntrackState",
        31,
        "next",
        "invalid: drop; established/related: skip policy",
        match=(*_IP, "ct_state", "ct_mark"),
        sets=("reg0",),
        next=("L3Forwarding",),
    ),
    _t(
        "SessionAffinity",
        33,
        "drop",
        "learned (resubmit from ServiceLB): a client's endpoint for sessionAffinity ClientIP",
        side=True,
        # what the switch's learned flows match and load (EndpointDNAT's learn() writes them)
        match=("protocol", "nw_src", "nw_dst", "ipv6_src", "ipv6_dst", "tp_dst"),
        sets=("reg0", "reg4", "reg5", "reg8", "reg9", "reg10", "reg11"),
    ),
    _t(
        "ServiceLB",
        35,
        "next",
        "new connections to a Service port: pick an endpoint (reg3); external addresses from"
        " the gateway (reg0) apart, loadBalancerSourceRanges by source",
        match=(*_IP, *_L4, "ipv6_dst", "reg0"),
        sets=("reg3",),
        next=("SessionAffinity", "EndpointDNAT"),
    ),
    _t(
        "EndpointDNAT",
        36,
        "next",
        "commit the connection with DNAT to the picked endpoint",
        match=(
            *_IP,
            *_L4,
            "ipv6_dst",
            "reg0",
            "reg3",
            "reg4",
            "reg5",
            "reg8",
            "reg9",
            "reg10",
            "reg11",
        ),
        next=("HairpinSNAT", "SessionAffinity"),
    ),
    _t(
        "HairpinSNAT",
        37,
        "next",
        "a pod that reached itself through a Service: SNAT (zone 65001), marked in reg0[6]",
        match=(*_IP, "ct_state", "ct_mark"),
        sets=("reg0",),
        next=("AdminEgressRule",),
    ),
    _t(
        "AdminEgressRule",
        38,
        "next",
        "ClusterNetworkPolicy Admin tier, egress of local source pods: Accept skips to"
        " L3Forwarding, Deny drops, Pass hands over to NetworkPolicy (conjunctions, by priority)",
        match=(*_IP, *_IP6, *_L4, "conj_id", "icmp_type", "reg0"),
        next=("EgressRule", "L3Forwarding"),
    ),
    _t(
        "EgressRule",
        40,
        "next",
        "NetworkPolicy egress rules of local source pods (conjunctions)",
        match=(*_IP, *_IP6, *_L4, "conj_id", "icmp_type"),
        next=("L3Forwarding",),
    ),
    _t(
        "EgressDefault",
        45,
        "next",
        "drop for egress-isolated pods no rule allowed",
        match=(*_IP, *_IP6),
    ),
    _t(
        "BaselineEgressRule",
        47,
        "next",
        "ClusterNetworkPolicy Baseline tier, egress of pods no NetworkPolicy isolates: Accept"
        " and Pass go on, Deny drops",
        match=(*_IP, *_IP6, *_L4, "conj_id"),
        next=("L3Forwarding",),
    ),
    _t(
        "L3Forwarding",
        50,
        "next",
        "routes to local pods (MAC rewrite, TTL) and to other nodes; no pod reaches UDP 4789",
        match=(*_IP, *_L4, "dl_dst", "reg0"),
        sets=("eth_src", "eth_dst", "tun_dst"),
    ),
    _t(
        "AdminIngressRule",
        58,
        "next",
        "ClusterNetworkPolicy Admin tier, ingress of local destination pods: Accept skips to"
        " L2Forwarding, Deny drops, Pass hands over to NetworkPolicy",
        match=(*_IP, *_IP6, *_L4, "conj_id", "icmp_type", "reg0"),
        next=("IngressRule", "L2Forwarding"),
    ),
    _t(
        "IngressRule",
        60,
        "next",
        "NetworkPolicy ingress rules of local destination pods",
        match=(*_IP, *_IP6, *_L4, "conj_id", "icmp_type", "reg0"),
        next=("L2Forwarding",),
    ),
    _t(
        "IngressDefault",
        65,
        "next",
        "drop for ingress-isolated pods no rule allowed",
        match=(*_IP, *_IP6),
    ),
    _t(
        "BaselineIngressRule",
        67,
        "next",
        "ClusterNetworkPolicy Baseline tier, ingress of pods no NetworkPolicy isolates",
        match=(*_IP, *_IP6, *_L4, "conj_id", "reg0"),
        next=("L2Forwarding",),
    ),
    _t(
        "L2Forwarding",
        70,
        "drop",
        "picks the output port by destination MAC (into reg2)",
        match=("dl_dst",),
        sets=("reg2",),
        next=("ConntrackCommit",),
    ),
    _t(
        "ConntrackCommit",
        80,
        "next",
        "commits new connections that got this far",
        match=("protocol", "ct_state"),
        next=("Output",),
    ),
    _t("Output", 90, "drop", "outputs to the port in reg2", match=("in_port", "reg2")),
)

BY_NAME: dict[str, Table] = {t.name: t for t in PIPELINE}
BY_ID: dict[int, Table] = {t.id: t for t in PIPELINE}

# ClusterNetworkPolicy's tier tables, by (tier, direction): the one place their names are paired
TIER_TABLES: dict[tuple[str, str], str] = {
    ("Admin", "egress"): "AdminEgressRule",
    ("Admin", "ingress"): "AdminIngressRule",
    ("Baseline", "egress"): "BaselineEgressRule",
    ("Baseline", "ingress"): "BaselineIngressRule",
}


class UnknownTable(KeyError):
    pass


def table(name: str) -> Table:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownTable(f"unknown table {name!r}; tables: {', '.join(BY_NAME)}") from None


def next_table(name: str) -> Table:
    """The table after `name` in pipeline order (side tables skipped)."""
    try:
        return _NEXT[name]
    except KeyError:
        table(name)  # an unknown name says so
        raise UnknownTable(f"table {name!r} is the last one") from None


# every flow built asks this: a lookup, not a walk comparing Tables field by field
_NEXT: dict[str, Table] = {
    t.name: nxt
    for i, t in enumerate(PIPELINE)
    for nxt in [next((u for u in PIPELINE[i + 1 :] if not u.side), None)]
    if nxt is not None
}


def name_of(table_id: int, unknown: str = "{}") -> str:
    """The table's name; `unknown` formatted with the id for a table the pipeline lacks."""
    t = BY_ID.get(table_id)
    return t.name if t else unknown.format(table_id)
