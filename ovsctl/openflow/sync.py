"""Desired flows per owner, and the difference against what is on the switch.

Owners (a pod attachment, the node pipeline, later policies and services) each set their
whole flow set; the union is keyed by (table, priority, match). When two owners want the same
key, the most recent one wins and the other is kept underneath: removing the winner brings the
other back instead of deleting the flow (this is what keeps an ofport reused by a new pod safe
from an old pod's removal). No I/O here: the OpenFlow app turns plans into messages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flows.flow import Flow


@dataclass
class Plan:
    """What to send: flows to add (or replace) and flows to delete (strictly, by cookie)."""

    add: list[Flow] = field(default_factory=list)
    delete: list[Flow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.delete)


class FlowSync:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owners: dict[str, frozenset[Flow]] = {}
        self._claims: dict[tuple, list[tuple[str, Flow]]] = {}  # key -> [(owner, flow)], last wins
        self.installed: dict[tuple, Flow] = {}  # key -> flow as installed (round added on send)
        self.version = 0  # counts changes to the desired flows

    # -- desired state ------------------------------------------------------------------------

    def desired(self) -> dict[tuple, Flow]:
        with self.lock:
            return {k: claims[-1][1] for k, claims in self._claims.items()}

    def set_owner(self, owner: str, flows: frozenset[Flow] | set[Flow]) -> set[tuple]:
        """Replace an owner's flows; returns the keys whose desired flow may have changed."""
        flows = frozenset(flows)
        with self.lock:
            old = self.owners.get(owner, frozenset())
            if old == flows:
                return set()
            if len({f.key for f in flows}) != len(flows):
                raise ValueError(f"owner {owner} wants two different flows with the same match")
            touched = set()
            for f in old - flows:
                claims = self._claims.get(f.key, [])
                claims[:] = [(o, g) for (o, g) in claims if o != owner]
                if not claims:
                    self._claims.pop(f.key, None)
                touched.add(f.key)
            for f in flows - old:
                claims = self._claims.setdefault(f.key, [])
                if claims:  # mostly a key of this owner alone: nothing to filter
                    claims[:] = [(o, g) for (o, g) in claims if o != owner]
                claims.append((owner, f))
                touched.add(f.key)
            if flows:
                self.owners[owner] = flows
            else:
                self.owners.pop(owner, None)
            self.version += 1
            return touched

    def remove_owner(self, owner: str) -> set[tuple]:
        return self.set_owner(owner, frozenset())

    def owner_flows(self, owner: str) -> frozenset[Flow]:
        with self.lock:
            return self.owners.get(owner, frozenset())

    # -- diff against the switch --------------------------------------------------------------

    def plan(self, keys: set[tuple] | None = None) -> Plan:
        """The messages that bring the switch from `installed` to desired, for `keys` (all
        keys when None)."""
        with self.lock:
            if keys is None:
                keys = set(self._claims) | set(self.installed)
            p = Plan()
            for k in keys:
                want = self._claims[k][-1][1] if k in self._claims else None
                have = self.installed.get(k)
                if want is not None and want != have:
                    p.add.append(want)
                elif want is None and have is not None:
                    p.delete.append(have)
            order = _order_key
            p.add.sort(key=order)
            p.delete.sort(key=order)
            return p

    def applied(self, plan: Plan) -> None:
        """Record that a plan is on the switch."""
        with self.lock:
            for f in plan.delete:
                if self.installed.get(f.key) == f:
                    del self.installed[f.key]
            for f in plan.add:
                self.installed[f.key] = f

    def full_plan(self) -> Plan:
        """Everything desired, for a switch whose contents are unknown (a new round)."""
        with self.lock:
            return Plan(add=sorted(self.desired().values(), key=_order_key))

    def reset_installed(self, flows: dict[tuple, Flow]) -> None:
        with self.lock:
            self.installed = dict(flows)


def _order_key(f: Flow):
    return (f.table_id, -f.priority, f.match)
