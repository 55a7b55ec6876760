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


PIPELINE: tuple[Table, ...] = (
    Table("Classifier", 0, "drop", "marks where a packet came from: pod, gateway or tunnel port"),
    Table("SpoofGuard", 10, "drop", "a pod port may only send from its own IP and MAC (ARP too)"),
    Table("ARPResponder", 20, "next", "answers ARP requests for local pod IPs and the gateway"),
    Table("L3Forwarding", 50, "next", "routes to local pods (MAC rewrite, TTL) and to other nodes"),
    Table("L2Forwarding", 70, "drop", "outputs by destination MAC to a pod port or the gateway"),
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
    """The table after `name` in pipeline order."""
    idx = PIPELINE.index(table(name))
    if idx + 1 >= len(PIPELINE):
        raise UnknownTable(f"table {name!r} is the last one")
    return PIPELINE[idx + 1]


def name_of(table_id: int) -> str:
    t = BY_ID.get(table_id)
    return t.name if t else str(table_id)
