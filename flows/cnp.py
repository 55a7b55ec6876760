"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) as plain values: parsing,
validation and the tiers' evaluation order.

Pure code, like `flows/netpol.py` (whose label selectors and CIDR parsing it shares):
`flows/tiers.py` turns the policies into conjunctive flows, `flows/intent.py` evaluates them
for the tools.

Semantics (the API's own documentation): every ClusterNetworkPolicy is in the Admin or the
Baseline tier and has a priority 0..1000 (lower first). For one direction of a connection
(egress at the source pod, ingress at the destination pod): the Admin tier's policies whose
subject selects the pod, by priority, each one's rules in order; the first rule that matches
decides: Accept (allowed; nothing later is consulted), Deny (dropped), Pass (the rest of the
tier is skipped). Then NetworkPolicy, if one selects the pod for that direction. Then the
Baseline tier the same way (a Pass there skips to the default). Then the default: allowed.

Two policies of one tier with the same priority are ordered by name (the API leaves the
choice to the implementation; ovsctl makes it deterministic and documents it).
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows.netpol import AUDIT_ANNOTATION, PolicyError, Selector, _cidr, _selector

TIERS = ("Admin", "Baseline")
ACTIONS = ("Accept", "Deny", "Pass")
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
MAX_PRIORITY = 1000
MAX_RULES = 25  # per direction (the CRD's maxItems)
KIND = "ClusterNetworkPolicy"
API_VERSION = "policy.networking.k8s.io/v1alpha2"


class CNPError(PolicyError):
    pass


@dataclass(frozen=True)
class Subject:
    """The pods a policy applies to: every pod of the namespaces `namespaces` selects, or
    (`pods` set) those of them `pods` selects."""

    namespaces: Selector
    pods: Selector | None = None

    def selects(self, ns_labels, pod_labels, matches) -> bool:
        return matches(self.namespaces, ns_labels) and (
            self.pods is None or matches(self.pods, pod_labels)
        )


@dataclass(frozen=True)
class CPeer:
    """One `from`/`to` entry: kind "namespaces" (namespace selector), "pods" (namespace and pod
    selector), "networks" (CIDRs), "nodes" (node selector), "any" (the peer of a rule that
    failed closed into "Deny all"), or "closed": a peer of a kind this node does not know (e.g.
    domainNames), which never reaches a CRule (parse() fails its rule closed)."""

    kind: str
    namespaces: Selector | None = None
    pods: Selector | None = None
    networks: tuple[str, ...] = ()
    nodes: Selector | None = None
    unknown: str = ""  # the field of a "closed" peer

    def selects_pod(self, ns_labels, pod_labels, matches) -> bool:
        if self.kind == "namespaces":
            return matches(self.namespaces, ns_labels)
        if self.kind == "pods":
            return matches(self.namespaces, ns_labels) and matches(self.pods, pod_labels)
        return False

    def contains(self, ip: str) -> bool:
        """Is `ip` in one of the networks (its own family only)?"""
        if self.kind != "networks" or not ip:
            return False
        addr = netaddr.IPAddress(ip)
        return any(
            addr.version == (n := netaddr.IPNetwork(c)).version and addr in n for c in self.networks
        )


@dataclass(frozen=True)
class CProto:
    """One `protocols` entry: a protocol with every port (port None), one port, a range
    [port, end], or (named) a destination's named container port of any protocol."""

    protocol: str | None = None  # TCP/UDP/SCTP; None for a named port
    port: int | None = None
    end: int | None = None
    named: str = ""

    def resolve(self, container_ports) -> list[tuple[str, int]]:
        """(protocol, port) pairs of a named port on a destination with these container ports
        ((name, port, protocol) triples)."""
        return [(proto, num) for name, num, proto in container_ports if name == self.named]

    def matches(self, protocol: str, port: int | None, container_ports=()) -> bool:
        if self.named:
            return port is not None and (protocol, port) in self.resolve(container_ports)
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if port is None:
            return False
        return self.port <= port <= (self.end if self.end is not None else self.port)


@dataclass(frozen=True)
class CRule:
    """One rule. A rule naming a peer or protocol this node does not know fails closed, as
    the API says: an Accept rule matches nothing (`peers` empty), a Deny or Pass rule becomes
    "Deny all" (action Deny, one "any" peer, no protocols); `closed` says why."""

    name: str
    action: str  # Accept, Deny, Pass
    peers: tuple[CPeer, ...]
    protocols: tuple[CProto, ...] = ()  # empty: all traffic
    closed: str = ""

    def matches_port(self, protocol: str, port: int | None, container_ports=()) -> bool:
        return not self.protocols or any(
            p.matches(protocol, port, container_ports) for p in self.protocols
        )

    def matches_peer(self, ns_labels, pod_labels, ip: str, node_labels, matches) -> bool:
        """Does a peer match: a pod (ns_labels not None), an address, or a node's address
        (node_labels not None: the address is that node's)?"""
        for peer in self.peers:
            if peer.kind == "any":
                return True
            if peer.kind in ("namespaces", "pods"):
                if ns_labels is not None and peer.selects_pod(ns_labels, pod_labels, matches):
                    return True
            elif peer.kind == "networks":
                if peer.contains(ip):
                    return True
            elif node_labels is not None and matches(peer.nodes, node_labels):
                return True
        return False


@dataclass(frozen=True)
class ClusterPolicy:
    name: str
    tier: str
    priority: int
    subject: Subject
    ingress: tuple[CRule, ...] = ()
    egress: tuple[CRule, ...] = ()
    audit: bool = False

    @property
    def key(self) -> str:
        return self.name

    def rules(self, direction: str) -> tuple[CRule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def order_key(self) -> tuple:
        return (TIERS.index(self.tier), self.priority, self.name)


def order(policies) -> list[ClusterPolicy]:
    """Evaluation order: the Admin tier first, then by priority, ties by name."""
    return sorted(policies, key=ClusterPolicy.order_key)


def _matches(selector: Selector, labels) -> bool:
    return selector.matches(labels if isinstance(labels, dict) else dict(labels))


@dataclass(frozen=True)
class Decision:
    """The rule that decided one direction (or, for a Pass, handed it on)."""

    tier: str
    policy: str
    priority: int
    direction: str
    rule: int
    rule_name: str
    action: str

    def to_dict(self) -> dict:
        return {
            "tier": self.tier,
            "policy": self.policy,
            "priority": self.priority,
            "rule": self.rule,
            "rule_name": self.rule_name,
            "action": self.action,
        }

    def describe(self) -> str:
        named = f" {self.rule_name!r}" if self.rule_name else ""
        return (
            f"ClusterNetworkPolicy {self.policy} ({self.tier} tier, priority {self.priority}) "
            f"{self.direction} rule {self.rule}{named}: {self.action}"
        )


def first_match(
    policies,
    tier: str,
    direction: str,
    own_ns_labels,
    own_labels,
    peer: dict,
    protocol: str,
    port: int | None,
    dst_ports=(),
    matches=_matches,
) -> Decision | None:
    """The first rule of the tier (policies already in `order`) that matches one direction's
    connection from/to the pod with `own_*` labels. `peer`: {"ns_labels", "labels"} for a pod,
    {"ip"} for an address, plus "node_labels" when the address is a node's (and "ip" for a
    pod, its address of the connection's family). `dst_ports`: the destination pod's container
    ports, against which named ports resolve."""
    for pol in policies:
        if pol.tier != tier or not pol.subject.selects(own_ns_labels, own_labels, matches):
            continue
        for idx, rule in enumerate(pol.rules(direction)):
            if rule.matches_peer(
                peer.get("ns_labels"),
                peer.get("labels") or {},
                peer.get("ip") or "",
                peer.get("node_labels"),
                matches,
            ) and rule.matches_port(protocol, port, dst_ports):
                return Decision(
                    tier, pol.name, pol.priority, direction, idx, rule.name, rule.action
                )
    return None


# -- parsing -----------------------------------------------------------------------------------


def _only_one(obj, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(obj, dict):
        raise CNPError(f"{where}: must be an object")
    keys = [k for k in obj if obj[k] is not None]
    if len(keys) != 1:
        raise CNPError(
            f"{where}: exactly one of {', '.join(allowed)} must be set"
            + (f" (got {', '.join(sorted(keys))})" if keys else "")
        )
    return keys[0]


def _namespaced_pod(obj, where: str) -> tuple[Selector, Selector]:
    if not isinstance(obj, dict):
        raise CNPError(f"{where}: must be an object")
    if obj.get("podSelector") is None:
        raise CNPError(f"{where}.podSelector: required (use {{}} for every pod)")
    return (
        _selector(obj.get("namespaceSelector") or {}, f"{where}.namespaceSelector"),
        _selector(obj["podSelector"], f"{where}.podSelector"),
    )


def _subject(obj, where: str) -> Subject:
    kind = _only_one(obj, where, ("namespaces", "pods"))
    if kind == "namespaces":
        return Subject(_selector(obj["namespaces"], f"{where}.namespaces"))
    if kind == "pods":
        ns, pods = _namespaced_pod(obj["pods"], f"{where}.pods")
        return Subject(ns, pods)
    raise CNPError(f"{where}.{kind}: unknown field (namespaces or pods)")


def _peer(obj, where: str, egress: bool) -> CPeer:
    known = ("namespaces", "pods", "networks", "nodes") if egress else ("namespaces", "pods")
    if isinstance(obj, dict) and not [k for k in obj if obj[k] is not None]:
        return CPeer("closed", unknown="(no field set)")
    kind = _only_one(obj, where, known)
    if kind == "namespaces":
        return CPeer("namespaces", namespaces=_selector(obj[kind], f"{where}.namespaces"))
    if kind == "pods":
        ns, pods = _namespaced_pod(obj[kind], f"{where}.pods")
        return CPeer("pods", namespaces=ns, pods=pods)
    if kind == "networks" and egress:
        nets = obj[kind]
        if not isinstance(nets, list) or not nets:
            raise CNPError(f"{where}.networks: must be a non-empty list of CIDRs")
        if len(nets) > MAX_RULES:
            raise CNPError(f"{where}.networks: at most {MAX_RULES} CIDRs")
        return CPeer(
            "networks",
            networks=tuple(str(_cidr(c, f"{where}.networks[{i}]")) for i, c in enumerate(nets)),
        )
    if kind == "nodes" and egress:
        return CPeer("nodes", nodes=_selector(obj[kind], f"{where}.nodes"))
    # a peer this node does not implement (domainNames, or a field of a newer API version)
    return CPeer("closed", unknown=kind)


def _port_value(obj, where: str) -> tuple[int, int | None]:
    if not isinstance(obj, dict):
        raise CNPError(f"{where}: must be an object (number or range)")
    kind = _only_one(obj, where, ("number", "range"))
    if kind == "number":
        n = obj["number"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 65535:
            raise CNPError(f"{where}.number: must be an integer in 1..65535, got {n!r}")
        return n, None
    if kind == "range":
        r = obj["range"]
        if not isinstance(r, dict):
            raise CNPError(f"{where}.range: must be an object with start and end")
        vals = []
        for f in ("start", "end"):
            v = r.get(f)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
                raise CNPError(f"{where}.range.{f}: must be an integer in 1..65535, got {v!r}")
            vals.append(v)
        if not vals[0] < vals[1]:
            raise CNPError(f"{where}.range: start {vals[0]} must be less than end {vals[1]}")
        return vals[0], vals[1]
    raise CNPError(f"{where}.{kind}: unknown field (number or range)")


def _protocol(obj, where: str) -> CProto | None:
    """One protocols entry; None for an entry of a kind this node does not know (its rule
    fails closed)."""
    kind = _only_one(obj, where, ("tcp", "udp", "sctp", "destinationNamedPort"))
    if kind == "destinationNamedPort":
        name = obj[kind]
        if not isinstance(name, str) or not name:
            raise CNPError(f"{where}.destinationNamedPort: must be a port name")
        return CProto(named=name)
    if kind not in PROTOCOLS:
        return None
    body = obj[kind]
    if not isinstance(body, dict) or not body:
        raise CNPError(f"{where}.{kind}: must be an object with destinationPort")
    dp = body.get("destinationPort")
    if dp is None:
        return CProto(PROTOCOLS[kind])
    port, end = _port_value(dp, f"{where}.{kind}.destinationPort")
    return CProto(PROTOCOLS[kind], port, end)


def _rules(items, where: str, egress: bool) -> tuple[CRule, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise CNPError(f"{where}: must be a list of rules")
    if len(items) > MAX_RULES:
        raise CNPError(f"{where}: at most {MAX_RULES} rules, got {len(items)}")
    out = []
    peers_key = "to" if egress else "from"
    for i, r in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(r, dict):
            raise CNPError(f"{w}: must be an object")
        action = r.get("action")
        if action not in ACTIONS:
            raise CNPError(f"{w}.action: {action!r} is not Accept, Deny or Pass")
        name = r.get("name") or ""
        if not isinstance(name, str) or len(name) > 100:
            raise CNPError(f"{w}.name: must be a string of at most 100 characters")
        raw_peers = r.get(peers_key)
        if not isinstance(raw_peers, list) or not raw_peers:
            raise CNPError(f"{w}.{peers_key}: required, a non-empty list of peers")
        if len(raw_peers) > MAX_RULES:
            raise CNPError(f"{w}.{peers_key}: at most {MAX_RULES} peers")
        peers = tuple(_peer(p, f"{w}.{peers_key}[{j}]", egress) for j, p in enumerate(raw_peers))
        raw_protos = r.get("protocols")
        if raw_protos is not None and (not isinstance(raw_protos, list) or not raw_protos):
            raise CNPError(f"{w}.protocols: must be a non-empty list when set")
        protos = [_protocol(p, f"{w}.protocols[{j}]") for j, p in enumerate(raw_protos or [])]
        # destinationNamedPort with networks or nodes peers: refused by the experimental
        # channel's validation only; a named port then matches the pods among them alone
        unknown = [
            f"{peers_key}[{j}].{p.unknown}" for j, p in enumerate(peers) if p.kind == "closed"
        ]
        unknown += [f"protocols[{j}]" for j, p in enumerate(protos) if p is None]
        if not unknown:
            out.append(CRule(name, action, peers, tuple(protos)))
        elif action == "Accept":  # fails closed: matches nothing
            out.append(CRule(name, action, (), (), closed=f"{w}: {', '.join(unknown)} unknown"))
        else:  # fails closed: Deny all
            why = f"{w}: {', '.join(unknown)} unknown; this {action} rule denies all traffic"
            out.append(CRule(name, "Deny", (CPeer("any"),), (), closed=why))
    return tuple(out)


def parse(obj: dict) -> ClusterPolicy:
    """A ClusterNetworkPolicy dict to a ClusterPolicy. CNPError (naming the object and the
    field) for anything the API's validation would refuse; nothing of such an object is
    installed."""
    try:
        return _parse(obj)
    except CNPError:
        raise
    except PolicyError as e:  # the selectors and CIDRs netpol reads
        raise CNPError(str(e)) from None


def _parse(obj: dict) -> ClusterPolicy:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    where = f"{KIND} {name}: spec"
    if not name:
        raise CNPError(f"{KIND}: metadata.name: required")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise CNPError(f"{where}: missing")
    tier = spec.get("tier")
    if tier not in TIERS:
        raise CNPError(f"{where}.tier: {tier!r} is not Admin or Baseline")
    prio = spec.get("priority")
    if isinstance(prio, bool) or not isinstance(prio, int) or not 0 <= prio <= MAX_PRIORITY:
        raise CNPError(f"{where}.priority: must be an integer in 0..{MAX_PRIORITY}, got {prio!r}")
    if spec.get("subject") is None:
        raise CNPError(f"{where}.subject: required (namespaces or pods)")
    return ClusterPolicy(
        name,
        tier,
        prio,
        _subject(spec["subject"], f"{where}.subject"),
        _rules(spec.get("ingress"), f"{where}.ingress", egress=False),
        _rules(spec.get("egress"), f"{where}.egress", egress=True),
        audit=str((meta.get("annotations") or {}).get(AUDIT_ANNOTATION, "")).lower() == "true",
    )
