"""ClusterNetworkPolicy to flows: the Admin and Baseline tiers around NetworkPolicy.

    egress:  ... HairpinSNAT -> AdminEgressRule -> EgressRule -> EgressDefault
                 -> BaselineEgressRule -> L3Forwarding
    ingress: ... L3Forwarding -> AdminIngressRule -> IngressRule -> IngressDefault
                 -> BaselineIngressRule -> L2Forwarding

Every rule of every policy is one conjunction (like a NetworkPolicy rule, flows/policy.py) at
its own flow priority, so flows grow with pods + rules, and the switch's priority order is the
API's evaluation order: within a tier, a policy of lower `priority` (ties: by name) gets higher
flow priorities, and within a policy its first rule the highest. Clauses:

    1. the subject's pods on this node   (egress: nw_src=POD  ingress: nw_dst=POD)
    2. the peers                         (egress: nw_dst=PEER ingress: nw_src=PEER; pods'
                                          addresses, networks' CIDRs, nodes' addresses)
    3. the protocols and ports           (tcp,tp_dst=80; ranges as masks)

and the rule's action on `conj_id`: Accept skips the remaining policy tables of its direction
(goto L3Forwarding / L2Forwarding), Deny drops, Pass in the Admin tier goes to NetworkPolicy
(EgressRule / IngressRule), in the Baseline tier to the default (allow). A packet no rule
matches falls through each tier's table-miss flow: a cluster without ClusterNetworkPolicy
costs one table lookup per tier and direction, for new connections only (established ones
skip policy at ConntrackState and in the Admin tables).

Named ports resolve per destination pod (ingress: the subject's pods; egress: the peer pods),
as NetworkPolicy's do; one named port that means different numbers on different pods becomes
one conjunction per number. A peer this node does not implement fails closed as the API says:
in an Accept rule it matches nothing, in Deny and Pass rules everything.
"""

from __future__ import annotations

from collections import defaultdict

from flows import cookie, owners, tables
from flows.cnp import TIERS, ClusterPolicy, CRule
from flows.flow import Flow, Goto
from flows.policy import (
    CONJ_PER_RULE,
    MAX_SLOTS,
    Conjunctions,
    PodInfo,
    View,
    _addrs_in,
    _audit,
    audit_meter,
)

PRIO_TOP = 64000  # below the pipeline's always-allowed flows (PRIO_ALWAYS - 1 and up)
PRIO_FLOOR = 1000
BAND = 60  # flow priorities per API priority (0..1000): its policies' rules, ties included
BLOCK = 26  # flow priorities per policy when ranked: one per rule (at most 25 each way), a gap
MAX_POLICIES = (PRIO_TOP - PRIO_FLOOR) // BLOCK  # per tier, when ranked

TABLES = tables.TIER_TABLES
ALLOW_TO = {"egress": "L3Forwarding", "ingress": "L2Forwarding"}
NP_TABLE = {"egress": "EgressRule", "ingress": "IngressRule"}


class TierError(ValueError):
    pass


def rule_owner(name: str, direction: str, idx: int) -> str:
    return owners.ClusterPolicyRule(name, direction, idx).key


def policy_owners(pol: ClusterPolicy) -> list[str]:
    return [
        rule_owner(pol.name, d, i) for d in ("ingress", "egress") for i in range(len(pol.rules(d)))
    ]


def base_priorities(policies) -> dict[str, int]:
    """Each policy's highest flow priority (its first rule's), in evaluation order within its
    tier. Banded by the API priority when the tier fits: priority p owns the BAND flow
    priorities below PRIO_TOP - p * BAND, and policies sharing p (ties, by name) take
    consecutive runs of it, one per rule; so adding, changing or removing a policy moves no
    other policy's flows unless they share its priority. A tier whose ties overflow a band is
    ranked instead (each policy a block of BLOCK in evaluation order); policies past what that
    holds are left out (the caller logs them)."""
    out: dict[str, int] = {}
    for tier in TIERS:
        pols = sorted((p for p in policies if p.tier == tier), key=ClusterPolicy.order_key)
        banded = _banded(pols)
        out.update(banded if banded is not None else _ranked(pols))
    return out


def _width(pol: ClusterPolicy) -> int:
    return max(len(pol.ingress), len(pol.egress), 1)


def _banded(pols: list[ClusterPolicy]) -> dict[str, int] | None:
    out: dict[str, int] = {}
    prev: ClusterPolicy | None = None
    for pol in pols:
        floor = PRIO_TOP - (pol.priority + 1) * BAND  # the next priority's band starts here
        if prev is not None and prev.priority == pol.priority:
            base = out[prev.name] - _width(prev)
        else:
            base = PRIO_TOP - pol.priority * BAND
        if base - _width(pol) < floor:
            return None
        out[pol.name] = base
        prev = pol
    return out


def _ranked(pols: list[ClusterPolicy]) -> dict[str, int]:
    return {pol.name: PRIO_TOP - rank * BLOCK for rank, pol in enumerate(pols[:MAX_POLICIES])}


def target(pol: ClusterPolicy, direction: str, action: str) -> str | None:
    """Where a matching packet goes: a table, or None (dropped)."""
    if action == "Deny":
        return None
    if action == "Pass" and pol.tier == "Admin":
        return NP_TABLE[direction]
    return ALLOW_TO[direction]


def _pods_of(view: View, namespaces, pods) -> list[PodInfo]:
    """The pods with an address in the namespaces `namespaces` selects (the View's per-selector
    index) whose labels `pods` selects (None: all of them)."""
    by_ns = view.by_namespace()
    return [
        p
        for ns in view.namespaces_selected(namespaces)
        for p in by_ns[ns]
        if p.ip and (pods is None or view.selects(pods, p.labels))
    ]


def subject_pods(pol: ClusterPolicy, view: View) -> list[PodInfo]:
    """This node's pods (with an address) the policy applies to."""
    key = ("cnp-subject", pol.subject)
    hit = view._selected.get(key)
    if hit is None:
        subject = pol.subject
        hit = view._selected[key] = [
            p for p in _pods_of(view, subject.namespaces, subject.pods) if p.local
        ]
    return hit


def _peer_pods(rule: CRule, view: View) -> list[PodInfo]:
    out = {}
    for peer in rule.peers:
        if peer.kind in ("namespaces", "pods"):
            for p in _pods_of(view, peer.namespaces, peer.pods):
                out.setdefault((p.namespace, p.name), p)
    return list(out.values())


def _peer_addrs(rule: CRule, view: View) -> list[str] | None:
    """The peers' addresses and CIDRs; None: any peer (a rule failed closed into Deny all)."""
    if any(p.kind == "any" for p in rule.peers):
        return None
    out = [a for p in _peer_pods(rule, view) for a in p.addrs]
    for peer in rule.peers:
        if peer.kind == "networks":
            out += [_host(c) for c in peer.networks]
        elif peer.kind == "nodes":
            for labels, ips in view.nodes.values():
                if view.selects(peer.nodes, labels):
                    out += list(ips)
    return sorted(set(out))


def _host(cidr: str) -> str:
    """A host prefix as OVS prints it (the bare address)."""
    if cidr.endswith("/32") and ":" not in cidr or cidr.endswith("/128"):
        return cidr.rsplit("/", 1)[0]
    return cidr


def _variants(rule: CRule, targets: list[PodInfo]):
    """(pods a variant applies to or None = all, port entries (protocol, lo, hi) or None =
    any): numeric entries together, then one per (protocol, number) a named port resolves
    to on `targets`."""
    if not rule.protocols:
        return [(None, None)]
    numeric = [(p.protocol, p.port, p.end) for p in rule.protocols if not p.named]
    named: dict[tuple[str, int], dict[tuple[str, str], PodInfo]] = defaultdict(dict)
    for proto in rule.protocols:
        if proto.named:
            for p in targets:
                for pair in proto.resolve(p.ports):
                    named[pair].setdefault((p.namespace, p.name), p)
    out: list = [(None, numeric)] if numeric else []
    out += [(list(pods.values()), [(pr, num, None)]) for (pr, num), pods in sorted(named.items())]
    return out


def rule_flows(
    pol: ClusterPolicy,
    direction: str,
    idx: int,
    view: View,
    slot: int,
    prio: int,
    meter: int,
) -> frozenset[Flow]:
    """The flows of one rule on this node (none when the subject has no pod here)."""
    if not 0 <= slot < MAX_SLOTS:
        raise TierError(f"policy slot {slot} out of range")
    rule = pol.rules(direction)[idx]
    own = subject_pods(pol, view)
    if not own:
        return frozenset()
    table = TABLES[(pol.tier, direction)]
    own_end = "dst" if direction == "ingress" else "src"
    ck = cookie.make("cnp", rule_owner(pol.name, direction, idx))
    to = target(pol, direction, rule.action)
    act: tuple = () if to is None else (Goto(to),)
    if pol.audit:
        act = (_audit(meter), *act)
    peers = _peer_addrs(rule, view)
    # named ports resolve on the destination: ingress, the subject's pods; egress, the peer
    # pods (selected, or inside a network: then only their addresses the network covers)
    peer_addrs: dict[tuple[str, str], set[str]] = {}
    if direction == "ingress":
        targets = own
    elif peers is None:
        targets = [p for p in view.pods if p.ip]
    else:
        targets = _peer_pods(rule, view)
        for p in targets:
            peer_addrs[(p.namespace, p.name)] = set(p.addrs)
        cidrs = [c for peer in rule.peers if peer.kind == "networks" for c in peer.networks]
        if cidrs and any(p.named for p in rule.protocols):
            index = {(p.namespace, p.name): p for p in view.pods}
            for key, addrs in _addrs_in(cidrs, view.pods).items():
                if key not in peer_addrs:
                    targets.append(index[key])
                peer_addrs.setdefault(key, set()).update(addrs)
    by_pod = {(p.namespace, p.name): p for p in targets}
    conj = Conjunctions(table, prio, act, ck)
    for k, (vpods, ports) in enumerate(_variants(rule, targets)):
        if k >= CONJ_PER_RULE:
            break
        own_pods, peer_ips = own, peers
        if vpods is not None:
            keys = {(p.namespace, p.name) for p in vpods}
            if direction == "ingress":
                own_pods = [p for p in own if (p.namespace, p.name) in keys]
            else:
                peer_ips = sorted(
                    {a for key in keys for a in peer_addrs.get(key) or by_pod[key].addrs}
                )
        own_addrs = [a for p in own_pods for a in p.addrs]
        conj.add((slot + 1) * CONJ_PER_RULE + k, own_addrs, own_end, peer_ips, ports)
    return conj.flows()


def policy_flows(pol: ClusterPolicy, view: View, slot_of, base_prio: int) -> dict:
    """Every rule owner of a policy with its flows; `base_prio` from base_priorities()."""
    keys = policy_owners(pol)
    out: dict[str, frozenset[Flow]] = {}
    meter = audit_meter(slot_of(keys[0])) if keys else 0
    for direction in ("ingress", "egress"):
        for idx in range(len(pol.rules(direction))):
            owner = rule_owner(pol.name, direction, idx)
            out[owner] = rule_flows(
                pol, direction, idx, view, slot_of(owner), base_prio - idx, meter
            )
    return out


def affects(pol: ClusterPolicy, pod: PodInfo | None, view: View) -> bool:
    """May a change of this pod (its old or its new version) change the policy's flows on
    this node? When it is a subject here (a local pod the subject selects), a pod a peer
    selects, or (egress rules with named ports, which resolve on the destination) a pod
    inside a network or any pod for a rule that matches every peer."""
    if pod is None:
        return False
    ns_items = view.ns_label_items(pod.namespace)
    if pod.local and pol.subject.selects(ns_items, pod.labels, view.selects):
        return True
    for direction in ("ingress", "egress"):
        for rule in pol.rules(direction):
            named = direction == "egress" and any(p.named for p in rule.protocols)
            for peer in rule.peers:
                if peer.kind in ("namespaces", "pods"):
                    if peer.selects_pod(ns_items, pod.labels, view.selects):
                        return True
                elif named and (
                    peer.kind == "any"
                    or (peer.kind == "networks" and any(peer.contains(a) for a in pod.addrs))
                ):
                    return True
    return False
