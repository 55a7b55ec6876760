"""The br-int pipeline: one ordered list of named tables.

Table ids are spaced by ten so that later stages (conntrack, services, policy) slot in
without renumbering. Every tool prints the names; nothing outside this module hard-codes ids.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    id: int
    miss: str  # "drop" or "next": what the priority-0 flow does
    doc: str
    side: bool = False  # only visited by resubmit (learned flows); the pipeline skips it


PIPELINE: tuple[Table, ...] = (
    Table("Classifier", 0, "drop", "marks where a packet came from: pod, gateway or tunnel port"),
    Table("SpoofGuard", 10, "drop", "a pod port may only send from its own IP and MAC (ARP too)"),
    Table("ARPResponder", 20, "next", "answers ARP requests for local pod IPs and the gateway"),
    Table(
        "HairpinUnSNAT", 25, "next", "replies to the hairpin address: undo its SNAT (zone 65001)"
    ),
    Table("Conntrack", 30, "next", "IPv4 goes through conntrack (zone 65000), then ConntrackState"),
    Table("ConntrackState", 31, "next", "invalid: drop; established/related: skip policy"),
    Table(
        "SessionAffinity",
        33,
        "drop",
        "learned (resubmit from ServiceLB): a client's endpoint for sessionAffinity ClientIP",
        side=True,
    ),
    Table("ServiceLB", 35, "next", "new connections to a Service port: pick an endpoint (reg3)"),
    Table("EndpointDNAT", 36, "next", "commit the connection with DNAT to the picked endpoint"),
    Table(
        "HairpinSNAT", 37, "next", "a pod that reached itself through a Service: SNAT (zone 65001)"
    ),
    Table(
        "EgressRule", 40, "next", "NetworkPolicy egress rules of local source pods (conjunctions)"
    ),
    Table("EgressDefault", 45, "next", "drop for egress-isolated pods no rule allowed"),
    Table("L3Forwarding", 50, "next", "routes to local pods (MAC rewrite, TTL) and to other nodes"),
    Table("IngressRule", 60, "next", "NetworkPolicy ingress rules of local destination pods"),
    Table("IngressDefault", 65, "next", "drop for ingress-isolated pods no rule allowed"),
    Table("L2Forwarding", 70, "drop", "picks the output port by destination MAC (into reg2)"),
    Table("ConntrackCommit", 80, "next", "commits new connections that got this far"),
    Table("Output", 90, "drop", "outputs to the port in reg2"),
)

BY_NAME: dict[str, Table] = {t.name: t for t in PIPELINE}
BY_ID: dict[int, Table] = {t.id: t for t in PIPELINE}


class UnknownTable(KeyError):
    pass


def table(name: str) -> Table:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownTable(f"unknown table {name!r}; tables: {', '.join(BY_NAME)}") from None


def next_table(name: str) -> Table:
    """The table after `name` in pipeline order (side tables skipped)."""
    idx = PIPELINE.index(table(name))
    for t in PIPELINE[idx + 1 :]:
        if not t.side:
            return t
    raise UnknownTable(f"table {name!r} is the last one")


def name_of(table_id: int) -> str:
    t = BY_ID.get(table_id)
    return t.name if t else str(table_id)
