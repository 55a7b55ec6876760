"""NetworkPolicy to flows: conjunctive matches, so flows grow with pods + rules, not pods x rules.

Each rule of each policy gets a slot from the agent: its own priority in the rule tables and a
block of conjunction ids. A rule is one conjunction per "port variant" with up to three
clauses, each a separate set of flows:

    1. the policy's own pods on this node   (ingress: nw_dst=POD   egress: nw_src=POD)
    2. the peers                            (ingress: nw_src=PEER  egress: nw_dst=PEER)
    3. the ports                            (tcp,tp_dst=80 / masked ranges for endPort)

and one flow `conj_id=ID,ip -> next stage` that lets the packet skip the default-drop table.
Named ports resolve per destination pod (ingress: the policy's pods; egress: the peer pods),
so a named port that means 8080 on one pod and 9090 on another becomes two conjunctions.
Pods selected by a policy get a drop flow in IngressDefault/EgressDefault at the policy's
priority (its packet counter says how much that policy dropped).

Audited policies (annotation ovsctl.io/audit: "true") differ in two ways only: their allow
flows (conj_id and single-clause) first send a copy of the packet to the agent
(`controller(max_len=128,meter_id=M)`: a packet-in carrying the rule's cookie, rate-limited by
the policy's own meter M = AUDIT_METER_BASE + the slot of its isolation owner, so a flood that
one policy logs cannot hide another policy's connections), and their isolation flows send the packet to the agent instead of a silent
drop, at AUDIT_DROP_PRIO (above every policy slot, so a pod any audited policy isolates has its
drops logged whichever policy's drop flow would otherwise match first). Only new connections
reach these tables, so it is one packet-in per connection attempt.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field

import netaddr

from flows import cookie, owners, regs
from flows.family import V4, V6, Family, of
from flows.flow import Conjunction, Flow, Goto, MeteredController, flow
from flows.model import hairpin_ip
from flows.netpol import Peer, Policy, Rule, port_masks

PRIO_BASE = 1000
MAX_SLOTS = 60000
CONJ_PER_RULE = 256
AUDIT_METER_BASE = 0x10000  # audited policy's meter: this + its isolation slot (the agent
# puts every meter its flows name on the switch before the flows; ids below are the agent's own)
AUDIT_MAX_LEN = 128  # bytes of each audited packet sent up: headers are enough
AUDIT_DROP_PRIO = 65000  # isolation drops of audited policies: above PRIO_BASE + MAX_SLOTS


def audit_meter(iso_slot: int) -> int:
    """The OpenFlow meter of an audited policy whose isolation owner has slot `iso_slot`."""
    return AUDIT_METER_BASE + iso_slot


def is_audit_meter(meter_id: int) -> bool:
    return AUDIT_METER_BASE <= meter_id < AUDIT_METER_BASE + MAX_SLOTS


def _audit(meter_id: int) -> MeteredController:
    return MeteredController(meter_id, AUDIT_MAX_LEN)


@dataclass(frozen=True, slots=True)  # one per pod of the cluster: no __dict__ each
class PodInfo:
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]
    ip: str  # the first address (IPv4 first on a dual-stack pod)
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, containerPort, protocol)
    local: bool = False
    ready: bool = True  # Service endpoints only (policy ignores readiness)
    terminating: bool = False
    ips: tuple[str, ...] = ()  # every address, IPv4 first; () = just `ip`

    def label_dict(self) -> dict:
        return dict(self.labels)

    @property
    def addrs(self) -> tuple[str, ...]:
        """Every address of the pod (a dual-stack pod has one per family), IPv4 first."""
        if self.ips:
            return self.ips
        return (self.ip,) if self.ip else ()

    def addr_of(self, fam: Family) -> str:
        """The pod's address in family `fam`, or ""."""
        return of(self.addrs, fam)

    def named_port(self, name: str, protocol: str) -> int | None:
        for pname, port, proto in self.ports:
            if pname == name and proto == protocol:
                return port
        return None


@dataclass
class View:
    """What policy computation needs from the cluster: namespace labels and pods with IPs.
    Pods are grouped by namespace and selector verdicts are remembered per label set (pods
    share few label sets), both built on first use: a View is made once per change and read
    by every policy recomputed for it."""

    namespaces: dict[str, dict] = field(default_factory=dict)
    pods: list[PodInfo] = field(default_factory=list)
    # node name -> (sorted label items, addresses): ClusterNetworkPolicy's `nodes` peers
    nodes: dict[str, tuple[tuple, tuple[str, ...]]] = field(default_factory=dict)
    _by_ns: dict[str, list[PodInfo]] | None = field(default=None, compare=False, repr=False)
    _verdicts: dict = field(default_factory=dict, compare=False, repr=False)
    _selected: dict = field(default_factory=dict, compare=False, repr=False)  # see selected()
    _ns_items: dict = field(default_factory=dict, compare=False, repr=False)  # ns_label_items
    _ns_selected: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def indexed(
        cls, namespaces: dict, by_ns: dict[str, list[PodInfo]], nodes: dict, ns_selected: dict
    ) -> View:
        """A View from pods already grouped by namespace (namespaces in order, each's pods by
        name: the agent keeps them so per changed pod); `pods` is then built on first use.
        `ns_selected` (see namespaces_selected) is the caller's, kept across Views."""
        view = cls(namespaces, [], nodes)
        view._by_ns, view._ns_selected = by_ns, ns_selected
        del view.pods  # -> __getattr__
        return view

    def __getattr__(self, name: str):
        # only reached for `pods` of an indexed View that nobody read yet
        if name != "pods" or "_by_ns" not in self.__dict__:
            raise AttributeError(name)
        self.pods = [p for pods in self._by_ns.values() for p in pods]
        return self.pods

    def ns_labels(self, ns: str) -> dict:
        return self.namespaces.get(ns, {"kubernetes.io/metadata.name": ns})

    def by_namespace(self) -> dict[str, list[PodInfo]]:
        """Pods per namespace, in the order of `pods`."""
        if self._by_ns is None:
            self._by_ns = {}
            for p in self.pods:
                self._by_ns.setdefault(p.namespace, []).append(p)
        return self._by_ns

    def selects(self, selector, labels: tuple) -> bool:
        """selector.matches(dict(labels)), remembered per (selector, label set)."""
        key = (selector, labels)
        hit = self._verdicts.get(key)
        if hit is None:
            hit = self._verdicts[key] = selector.matches(dict(labels))
        return hit

    def ns_selects(self, selector, ns: str) -> bool:
        return self.selects(selector, self.ns_label_items(ns))

    def namespaces_selected(self, selector) -> list[str]:
        """The namespaces with pods whose labels `selector` matches, in `by_namespace` order;
        remembered per selector (an indexed View shares this with the next Views while no
        namespace's labels and no namespace's having pods change)."""
        hit = self._ns_selected.get(selector)
        if hit is None:
            hit = self._ns_selected[selector] = [
                ns for ns in self.by_namespace() if self.ns_selects(selector, ns)
            ]
        return hit

    def ns_label_items(self, ns: str) -> tuple:
        hit = self._ns_items.get(ns)
        if hit is None:
            hit = self._ns_items[ns] = tuple(sorted(self.ns_labels(ns).items()))
        return hit


def selected(policy: Policy, view: View) -> list[PodInfo]:
    key = (policy.namespace, policy.pod_selector)
    hit = view._selected.get(key)
    if hit is None:
        hit = view._selected[key] = [
            p
            for p in view.by_namespace().get(policy.namespace, ())
            if policy.selects_pod(p.namespace, p.labels, view.selects)
        ]
    return hit


def peer_pods(peer: Peer, policy_ns: str, view: View) -> list[PodInfo]:
    """The pods a selector peer selects (netpol.Peer decides; namespaces are asked first so
    that only their pods are looked at)."""
    by_ns = view.by_namespace()
    if peer.ip_block is not None:
        return []
    if peer.namespace_selector is None:  # the policy's own namespace only: ask no other
        groups = [by_ns.get(policy_ns, [])]
    else:
        groups = [by_ns[ns] for ns in view.namespaces_selected(peer.namespace_selector)]
    return [p for pods in groups for p in pods if peer.selects_labels(p.labels, view.selects)]


def rule_owner(policy: Policy, direction: str, idx: int) -> str:
    return owners.PolicyRule(policy.namespace, policy.name, direction, idx).key


def isolation_owner(policy: Policy) -> str:
    return owners.PolicyIsolation(policy.namespace, policy.name).key


def _port_matches(
    protocol: str, start: int | None, end: int | None, fams: tuple[Family, ...] = (V4,)
) -> list[dict]:
    """The port clause of one port entry, once per family (tcp and tcp6 with the same ports)."""
    out = []
    for fam in fams:
        proto = fam.proto(protocol)
        if start is None:
            out.append({"protocol": proto})
        elif end is None or end == start:
            out.append({"protocol": proto, "tp_dst": start})
        else:
            out += [
                {"protocol": proto, "tp_dst": v if m == 0xFFFF else f"{v:#x}/{m:#x}"}
                for v, m in port_masks(start, end)
            ]
    return out


def _variants(
    rule: Rule, targets: list[PodInfo]
) -> list[tuple[list[PodInfo] | None, list[tuple] | None]]:
    """(pods the variant applies to, port entries (protocol, start, end)). `targets` are the
    pods whose ports a named port is resolved against; None for pods means "all of them" and
    for ports "any port". The entries become matches per family (_port_matches)."""
    if not rule.ports:
        return [(None, None)]
    numeric: list[tuple] = []
    named: dict[tuple[str, int], list[PodInfo]] = defaultdict(list)
    for port in rule.ports:
        if isinstance(port.port, str):
            for p in targets:
                num = port.resolve(p.ports)
                if num is not None:
                    named[(port.protocol, num)].append(p)
        else:
            numeric.append((port.protocol, port.port, port.end_port))
    out: list = []
    if numeric:
        out.append((None, numeric))
    for (proto, num), pods in sorted(named.items()):
        out.append((pods, [(proto, num, None)]))
    return out


def _addrs_in(cidrs: list[str], pods: list[PodInfo]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per pod (namespace, name) with an address inside any of the CIDRs: those addresses.
    Integer ranges per family (this runs per rule and pod): an IPv4 block never covers an
    IPv6 address, whatever its integer value."""
    ranges = _ranges(cidrs)
    out = {}
    for p in pods:
        hit = tuple(a for a in p.addrs if _inside(a, ranges))
        if hit:
            out[(p.namespace, p.name)] = hit
    return out


def _ranges(cidrs) -> dict[int, list[tuple[int, int]]]:
    """The CIDRs as integer ranges, per IP version."""
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for n in map(netaddr.IPNetwork, cidrs):
        ranges[n.version].append((n.first, n.last))
    return ranges


def _inside(addr: str, ranges: dict[int, list[tuple[int, int]]]) -> bool:
    v, ip = _ip_int(addr)
    return any(lo <= ip <= hi for lo, hi in ranges[v])


@functools.lru_cache(maxsize=1 << 16)
def _ip_int(addr: str) -> tuple[int, int]:
    """(version, integer value) of a pod address: the same pods meet every rule's CIDRs."""
    a = netaddr.IPAddress(addr)
    return a.version, int(a)


# Addresses and CIDRs here are already validated (pods' IPs, parsed ipBlocks): their family is
# whether they hold a colon, a test much cheaper than family() on the hot path of every rule.


def _fams(addrs) -> tuple[Family, ...]:
    """The families among `addrs`, IPv4 first."""
    v6 = [":" in a for a in addrs]
    return tuple(f for f, present in ((V4, not all(v6)), (V6, any(v6))) if present and v6)


def _of_fams(addrs: list[str], fams: tuple[Family, ...]) -> list[str]:
    """The addresses of `addrs` in one of `fams`."""
    if len(fams) == 2:
        return addrs
    v6 = fams == (V6,)
    return [a for a in addrs if (":" in a) == v6]


def _among(addrs: list[str], peer_ips: list[str]) -> list[str]:
    """Those of `addrs` that are one of `peer_ips` (addresses and CIDRs) or inside a CIDR."""
    peers = set(peer_ips)
    ranges = _ranges(c for c in peers if "/" in c)
    return [a for a in addrs if a in peers or _inside(a, ranges)]


# a rule's hairpin conjunction: its conj_id plus this (conj_ids of rules stay below 2**24)
HAIRPIN_CONJ = 1 << 30


def _peer_match(addr: str, end: str) -> dict:
    """A peer address or CIDR as a clause match; a source CIDR that holds the hairpin address
    does not match hairpin packets (reg0[6]): they are judged as the pod itself, by the rule's
    hairpin conjunction (an ipBlock 0.0.0.0/0 except the pod CIDRs admits no pod's hairpin)."""
    m = _addr_match(addr, end)
    if end == "src" and "/" in addr and _holds_hairpin(addr):
        reg, val = regs.HAIRPIN.match(0)
        m[reg] = val
    return m


@functools.lru_cache(maxsize=4096)
def _holds_hairpin(cidr: str) -> bool:
    """Remembered: the same peer CIDRs meet every recomputation of their rules."""
    return _inside(hairpin_ip(V6 if ":" in cidr else V4), _ranges([cidr]))


def _addr_match(addr: str, end: str) -> dict:
    """{"protocol": "ip", "nw_src": addr} (end "src"/"dst") in the address's own family."""
    fam = V6 if ":" in addr else V4
    return {"protocol": fam.eth, fam.src if end == "src" else fam.dst: addr}


def rule_flows(
    policy: Policy,
    direction: str,
    idx: int,
    rule: Rule,
    view: View,
    slot: int,
    meter: int | None = None,
) -> frozenset[Flow]:
    """The flows of one rule (direction 'ingress' or 'egress') on this node; `meter`: the
    policy's audit meter (policy_flows passes it; default: one of the rule's own slot).

    Dual-stack: each clause holds the matches of every family (nw_dst=A and ipv6_dst=A6 for a
    pod's two addresses; tcp,tp_dst=80 and tcp6,tp_dst=80), and one conjunction serves both
    families: a packet can only match the flows of its own family in each clause, so flows
    still grow with pods + rules. A `conj_id` flow is written per family the rule's own pods
    have (`ip` alone for an IPv4-only node: exactly the IPv4 flows). An ipBlock contributes
    its CIDRs to its own family only."""
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"policy slot {slot} out of range")
    own = [p for p in selected(policy, view) if p.local and p.ip]
    if not own:
        return frozenset()
    if rule.never:
        return frozenset()
    table = "IngressRule" if direction == "ingress" else "EgressRule"
    allow_to = "L2Forwarding" if direction == "ingress" else "L3Forwarding"
    own_end, peer_end = ("dst", "src") if direction == "ingress" else ("src", "dst")
    prio = PRIO_BASE + slot
    ck = cookie.make("policy", rule_owner(policy, direction, idx))
    audit = _audit(audit_meter(slot) if meter is None else meter)
    allow = (audit, Goto(allow_to)) if policy.audit else (Goto(allow_to),)

    # peers: None = anyone; otherwise pods (every address) and CIDRs (their own family)
    peer_pod_list: list[PodInfo] | None = None
    cidrs: list[str] = []
    if rule.peers:
        peer_pod_list = []
        for peer in rule.peers:
            if peer.ip_block is not None:
                cidrs += peer.ip_block.cidrs()
            else:
                peer_pod_list += [p for p in peer_pods(peer, policy.namespace, view) if p.ip]

    # named ports resolve against the destination: ingress -> own pods, egress -> peer pods;
    # for egress, which addresses of each such peer the rule admits (all of them for a pod a
    # selector picks, those inside a CIDR for a pod an ipBlock covers)
    peer_addrs: dict[tuple[str, str], set[str]] = {}
    if direction == "ingress":
        resolve_against = own
    else:
        if not rule.peers:
            resolve_against = [p for p in view.pods if p.ip]
            for p in resolve_against:
                peer_addrs[(p.namespace, p.name)] = set(p.addrs)
        else:  # selector peers, and pods whose IPs an ipBlock covers
            covered = _addrs_in(cidrs, view.pods) if cidrs else {}
            by_key = {(p.namespace, p.name): p for p in peer_pod_list}
            for p in peer_pod_list:
                peer_addrs.setdefault((p.namespace, p.name), set()).update(p.addrs)
            for p in view.pods:
                key = (p.namespace, p.name)
                if key in covered:
                    by_key.setdefault(key, p)
                    peer_addrs.setdefault(key, set()).update(covered[key])
            resolve_against = list(by_key.values())
    conj = Conjunctions(table, prio, allow, ck)
    for k, (variant_pods, ports) in enumerate(_variants(rule, resolve_against)):
        if k >= CONJ_PER_RULE:
            break
        if direction == "ingress":
            own_pods = own if variant_pods is None else [p for p in own if p in variant_pods]
            peer_ips = (
                None if not rule.peers else [a for p in peer_pod_list for a in p.addrs] + cidrs
            )
        else:
            own_pods = own
            if variant_pods is not None:  # a named port: only the peers it resolved on
                peer_ips = [
                    a for p in variant_pods for a in sorted(peer_addrs[(p.namespace, p.name)])
                ]
            else:
                peer_ips = (
                    None if not rule.peers else [a for p in peer_pod_list for a in p.addrs] + cidrs
                )
        own_addrs = [a for p in own_pods for a in p.addrs]
        conj.add((slot + 1) * CONJ_PER_RULE + k, own_addrs, own_end, peer_ips, ports)
    return conj.flows()


class Conjunctions:
    """One rule's flows at one priority, built variant by variant (NetworkPolicy rules here,
    ClusterNetworkPolicy rules in flows/tiers.py): each variant is a conjunction of up to three
    clauses (the own pods' addresses, the peers' addresses and CIDRs, the port matches) with
    its `conj_id` flow per family doing `action`; a variant of the own pods alone is a set of
    single-clause flows doing it directly. Only the families both ends have can meet."""

    def __init__(self, table: str, prio: int, action: tuple, ck: int) -> None:
        self.table, self.prio, self.action, self.ck = table, prio, action, ck
        self.clause_actions: dict[tuple, list] = defaultdict(list)  # match -> conjunctions
        self.direct: set[tuple] = set()  # single-clause matches
        self.conj: list[Flow] = []

    def add(self, conj_id: int, own_addrs, own_end: str, peer_ips, ports) -> None:
        """`own_end` "src"/"dst"; `peer_ips` None for any peer; `ports` [(protocol, lo, hi)] or
        None for any port and protocol."""
        peer_end = "dst" if own_end == "src" else "src"
        fams = _fams(own_addrs)
        if peer_ips is not None:
            peer_ips = _of_fams(peer_ips, fams)
            fams = _fams(peer_ips) if len(fams) == 2 else fams if peer_ips else ()
            own_addrs = _of_fams(own_addrs, fams)
        if not own_addrs or (peer_ips is not None and not peer_ips):
            return
        clauses: list[list[dict]] = [[_addr_match(a, own_end) for a in own_addrs]]
        if peer_ips is not None:
            clauses.append([_peer_match(a, peer_end) for a in sorted(set(peer_ips))])
        port_clause = None
        if ports is not None:
            port_clause = [m for proto, lo, hi in ports for m in _port_matches(proto, lo, hi, fams)]
            clauses.append(port_clause)
        if len(clauses) == 1:
            self.direct |= {tuple(sorted(m.items())) for m in clauses[0]}
            return
        self._conjunction(conj_id, clauses, fams)
        mine = _among(own_addrs, peer_ips) if own_end == "dst" and peer_ips is not None else []
        if mine:
            # The own pods that are their own peers, reaching themselves through a Service,
            # arrive from the hairpin address (pipeline.hairpin_flows): a conjunction of their
            # addresses (the same clause flows as above), that source and the same ports.
            hp = [{"protocol": f.eth, f.src: hairpin_ip(f)} for f in _fams(mine)]
            own_mine = [_addr_match(a, "dst") for a in mine]
            rest = [port_clause] if port_clause is not None else []
            self._conjunction(conj_id + HAIRPIN_CONJ, [own_mine, hp, *rest], _fams(mine))

    def _conjunction(self, conj_id: int, clauses: list[list[dict]], fams) -> None:
        n = len(clauses)
        for ci, clause in enumerate(clauses, start=1):
            for m in clause:
                self.clause_actions[tuple(sorted(m.items()))].append(Conjunction(conj_id, ci, n))
        for fam in fams:
            match = {"protocol": fam.eth, "conj_id": conj_id}
            self.conj.append(flow(self.table, self.prio, match, self.action, self.ck))

    def flows(self) -> frozenset[Flow]:
        t, prio, ck = self.table, self.prio, self.ck
        out = set(self.conj)
        out |= {flow(t, prio, dict(m), self.action, ck) for m in self.direct}
        for m, acts in self.clause_actions.items():
            if m in self.direct:
                continue  # the pod already matches everything at this priority
            out.add(
                flow(t, prio, dict(m), tuple(sorted(set(acts), key=lambda a: (a.id, a.clause))), ck)
            )
        return frozenset(out)


def isolation_flows(policy: Policy, view: View, slot: int) -> frozenset[Flow]:
    """Default deny for this node's pods the policy selects, per direction it isolates, per
    family: one drop for each address of the pod (nw_dst=A, ipv6_dst=A6)."""
    ck = cookie.make("policy", isolation_owner(policy))
    prio = AUDIT_DROP_PRIO if policy.audit else PRIO_BASE + slot
    # audited: to the agent (logged) through the policy's own meter, not forwarded
    drop = (_audit(audit_meter(slot)),) if policy.audit else ()
    out = set()
    for p in selected(policy, view):
        if not (p.local and p.ip):
            continue
        for addr in p.addrs:
            if "Ingress" in policy.types:
                out.add(flow("IngressDefault", prio, _addr_match(addr, "dst"), drop, ck))
            if "Egress" in policy.types:
                out.add(flow("EgressDefault", prio, _addr_match(addr, "src"), drop, ck))
    return frozenset(out)


# The ICMPv6 that no NetworkPolicy may block (RFC 4890's "must not be dropped" list, the part
# a pod on this network uses). Without Neighbor Solicitations and Advertisements a pod cannot
# resolve its neighbours' MACs, so a default-deny policy would cut off even the traffic its
# rules allow; Router Solicitations are harmless (pods never get an advertisement back: the
# pipeline drops Router Advertisements from pods and the gateway sends none); and the error
# messages carry path-MTU discovery (Packet Too Big: IPv6 routers never fragment, so a
# blocked one stalls every full-size TCP connection), unreachable, time exceeded and
# parameter problem. Kubernetes NetworkPolicy speaks of TCP, UDP and SCTP only; an IPv4 pod
# gets ARP (not IP, never in these tables) and ICMP errors as conntrack-related packets for
# the same reasons. These go at the always-allowed priority of the policy tables
# (pipeline.PRIO_ALWAYS), above every policy's rules and drops.
ICMP6_ALWAYS: dict[int, str] = {
    1: "destination unreachable",
    2: "packet too big",
    3: "time exceeded",
    4: "parameter problem",
    133: "router solicitation",
    135: "neighbor solicitation",
    136: "neighbor advertisement",
}


def icmp6_always_flows(prio: int, ck: int) -> frozenset[Flow]:
    """The ICMPv6 of ICMP6_ALWAYS let through the first policy table of each direction (the
    Admin tier's, before every ClusterNetworkPolicy and NetworkPolicy) at `prio` (the
    pipeline's PRIO_ALWAYS, with the pipeline's cookie: the node has them whatever the
    policies)."""
    return frozenset(
        flow(table, prio, {"protocol": "icmp6", "icmp_type": t}, (Goto(to),), ck)
        for table, to in (("AdminEgressRule", "L3Forwarding"), ("AdminIngressRule", "L2Forwarding"))
        for t in ICMP6_ALWAYS
    )


def policy_flows(policy: Policy, view: View, slot_of) -> dict[str, frozenset[Flow]]:
    """Every owner of a policy with its flows: one per rule, one for its isolation drops.
    `slot_of(owner)` gives each owner a distinct, stable slot."""
    out = {}
    iso = isolation_owner(policy)
    iso_slot = slot_of(iso)
    out[iso] = isolation_flows(policy, view, iso_slot)
    for direction, rules, kind in (
        ("ingress", policy.ingress, "Ingress"),
        ("egress", policy.egress, "Egress"),
    ):
        if kind not in policy.types:
            continue
        for idx, rule in enumerate(rules):
            owner = rule_owner(policy, direction, idx)
            out[owner] = rule_flows(
                policy, direction, idx, rule, view, slot_of(owner), audit_meter(iso_slot)
            )
    return out
