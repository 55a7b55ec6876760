"""An independent reference evaluator of ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2)
together with NetworkPolicy (networking.k8s.io/v1, through tests/netpol_reference.py).

Pure Python on Kubernetes-shaped dicts, written from the upstream API documentation (the comments
of apis/v1alpha2/clusternetworkpolicy_types.go and the standard-channel CRD), deliberately sharing
nothing with `flows/` so that it can catch bugs there.

    evaluate(namespaces, pods, policies, cnps, nodes=(), family=None)
        -> {"srcns/srcpod->dstns/dstpod:PORT/PROTO": bool}     (the keys of netpol_reference)
    evaluate_egress(namespaces, pods, policies, cnps, nodes=(), targets=(), family=None)
        -> {"ns/pod->IP:PORT/PROTO": bool}                      (pod -> external or node IP)
    explain(namespaces, pods, policies, cnps, src, dst, port, proto, nodes=(), family=None)
        -> {"allowed": bool, "egress": Decision dict, "ingress": Decision dict or None}
    decisions(namespaces, pods, policies, cnps, nodes=(), family=None)
        -> {evaluate()'s key: explain()'s answer}

Semantics implemented, for each direction separately (egress at the source, ingress at the
destination; a connection needs both, and a connection to an IP that is no pod only egress):
- Admin tier: the ClusterNetworkPolicies of tier Admin whose subject selects the pod, ordered by
  priority ascending, then by name ascending (the API leaves equal priorities to the
  implementation; this is ovsctl's documented tie-break); their rules of the direction in the
  order written. The first rule that matches decides: Accept (allowed; nothing later in this
  direction is consulted), Deny (dropped), Pass (the rest of the Admin tier is skipped).
- NetworkPolicy tier: if any NetworkPolicy isolates the pod in this direction it decides (the
  union of its rules, as tests/netpol_reference.py evaluates it); else evaluation goes on.
- Baseline tier: as the Admin tier; a Pass skips the rest of the Baseline tier.
- Otherwise the default: allowed.
- Subject: exactly one of `namespaces` (a namespace selector: every pod of those namespaces) or
  `pods` (namespaceSelector AND podSelector; an absent selector selects all).
- Peers: ingress `namespaces`, `pods`; egress also `networks` (CIDRs of either family; they
  match pod IPs too, an address only by a CIDR of its own family) and `nodes` (a node selector:
  the IP addresses in the selected nodes' status.addresses). Namespace and pod peers never
  match an IP that is no pod; node peers never match a pod.
- A peer with none of the fields known for its direction set (e.g. only `domainNames`, which is
  not supported) makes its rule "fail closed" as the API documents it: an Accept rule matches no
  traffic at all; a Deny or Pass rule becomes a Deny of all traffic (whatever its other peers
  and protocols). A protocols entry with no known field is treated the same way.
- protocols: absent or empty means all traffic; else any entry: `tcp`/`udp`/`sctp` with an
  optional destinationPort {number} or {range: {start, end}} (inclusive), or
  `destinationNamedPort` (resolved against the destination pod's containerPorts by name; the
  protocol is that containerPort's; it matches nothing towards an IP that is no pod).
- Selectors: matchLabels AND matchExpressions; {} selects everything; namespaces always carry
  kubernetes.io/metadata.name.
- A pod may always reach its own node's addresses (spec.nodeName) unless an Admin tier rule
  decides otherwise (ovsctl's choice: NetworkPolicy and Baseline cannot block it, the Admin
  tier's nodes/networks rules can).
- Invalid ClusterNetworkPolicies (see `problems`) are ignored entirely, as an implementation
  installs nothing of them.

`random_case(seed, namespaces, pods, nodes=(), externals=())` generates (deterministically)
0-3 NetworkPolicies and 1-4 valid ClusterNetworkPolicies for randomized comparisons.
"""

from __future__ import annotations

import ipaddress
import random

from tests import netpol_reference as npr

TIERS = ("Admin", "Baseline")
ACTIONS = ("Accept", "Deny", "Pass")
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
PEER_FIELDS = {
    "ingress": ("namespaces", "pods"),
    "egress": ("namespaces", "pods", "networks", "nodes"),
}
PROTOCOL_FIELDS = ("tcp", "udp", "sctp", "destinationNamedPort")
MAX_RULES = 25

selector_matches = npr.selector_matches


# -- validation -----------------------------------------------------------------------------


def _name(cnp: dict) -> str:
    return (cnp.get("metadata") or {}).get("name", "")


def _port_problems(where: str, port: object) -> list[str]:
    if not isinstance(port, dict) or len([k for k in ("number", "range") if k in port]) != 1:
        return [f"{where}: exactly one of number or range"]
    if "number" in port:
        n = port["number"]
        ok = isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65535
        return [] if ok else [f"{where}.number: {n!r} is not a port 1-65535"]
    r = port["range"] or {}
    s, e = r.get("start"), r.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535 for v in (s, e)):
        return [f"{where}.range: start and end must be ports 1-65535"]
    return [] if s < e else [f"{where}.range: start {s} must be less than end {e}"]


def _set_fields(obj: dict, fields: tuple[str, ...]) -> list[str]:
    """The fields of `obj` among `fields` that are set (a list field must be non-empty)."""
    out = []
    for f in fields:
        v = obj.get(f)
        if v is None or (isinstance(v, list) and not v) or (f == "destinationNamedPort" and not v):
            continue
        out.append(f)
    return out


def _rule_problems(where: str, direction: str, rule: dict) -> list[str]:
    out = []
    if rule.get("action") not in ACTIONS:
        out.append(f"{where}.action: {rule.get('action')!r} is not one of {', '.join(ACTIONS)}")
    peer_key = "from" if direction == "ingress" else "to"
    peers = rule.get(peer_key)
    if not isinstance(peers, list) or not peers:
        out.append(f"{where}.{peer_key}: must list at least one peer")
    for j, peer in enumerate(peers or []):
        pw = f"{where}.{peer_key}[{j}]"
        if not isinstance(peer, dict):
            out.append(f"{pw}: not an object")
            continue
        if len(_set_fields(peer, PEER_FIELDS[direction])) > 1:
            out.append(f"{pw}: more than one peer field set")
        for cidr in peer.get("networks") or [] if direction == "egress" else []:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                out.append(f"{pw}.networks: {cidr!r} is not a CIDR")
    for j, proto in enumerate(rule.get("protocols") or []):
        qw = f"{where}.protocols[{j}]"
        if not isinstance(proto, dict):
            out.append(f"{qw}: not an object")
            continue
        if len(_set_fields(proto, PROTOCOL_FIELDS)) > 1:
            out.append(f"{qw}: more than one protocol field set")
        for key in PROTOCOLS:
            if isinstance(proto.get(key), dict) and proto[key].get("destinationPort") is not None:
                out += _port_problems(f"{qw}.{key}.destinationPort", proto[key]["destinationPort"])
    return out


def problems(cnp: dict) -> list[str]:
    """Why the API server would refuse this ClusterNetworkPolicy (empty: it is valid), each as
    "ClusterNetworkPolicy NAME: spec.FIELD: reason"."""
    spec = cnp.get("spec")
    out: list[str] = []
    if not isinstance(spec, dict):
        return [f"ClusterNetworkPolicy {_name(cnp)}: spec: missing"]
    if spec.get("tier") not in TIERS:
        out.append(f"spec.tier: {spec.get('tier')!r} is not Admin or Baseline")
    prio = spec.get("priority")
    if not isinstance(prio, int) or isinstance(prio, bool) or not 0 <= prio <= 1000:
        out.append(f"spec.priority: {prio!r} is not an integer 0-1000")
    subject = spec.get("subject")
    if not isinstance(subject, dict) or len(_set_fields(subject, ("namespaces", "pods"))) != 1:
        out.append("spec.subject: exactly one of namespaces or pods must be set")
    for direction in ("ingress", "egress"):
        rules = spec.get(direction) or []
        if len(rules) > MAX_RULES:
            out.append(f"spec.{direction}: more than {MAX_RULES} rules")
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                out.append(f"spec.{direction}[{i}]: not an object")
                continue
            out += _rule_problems(f"spec.{direction}[{i}]", direction, rule)
    return [f"ClusterNetworkPolicy {_name(cnp)}: {p}" for p in out]


def ordered(cnps, tier: str) -> list[dict]:
    """The valid ClusterNetworkPolicies of `tier` in evaluation order: priority, then name."""
    mine = [c for c in cnps if not problems(c) and c["spec"]["tier"] == tier]
    return sorted(mine, key=lambda c: (c["spec"]["priority"], _name(c)))


# -- the ends of a connection ---------------------------------------------------------------


class End:
    """One end of a connection: a pod (with the address of the connection's family) or a bare
    IP address (external, or a node's)."""

    def __init__(self, pod: dict | None = None, ip: str | None = None):
        self.pod, self.ip = pod, ip

    @property
    def ns(self) -> str | None:
        return npr._pod_ns(self.pod) if self.pod is not None else None


def node_addresses(node: dict) -> list[str]:
    """Every IP address in node.status.addresses (InternalIP, ExternalIP; Hostname ones that
    are no IP are left out)."""
    out = []
    for a in (node.get("status") or {}).get("addresses") or []:
        try:
            out.append(str(ipaddress.ip_address(a.get("address", ""))))
        except ValueError:
            continue
    return out


def _same_ip(a: str | None, b: str) -> bool:
    return a is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)


class World:
    """The cluster state a verdict depends on."""

    def __init__(self, namespaces, pods, policies, cnps, nodes=(), family: int | None = None):
        self.family = family
        self.nsl = npr._ns_labels(list(namespaces))
        self.pods = list(pods)
        self.policies = list(policies)
        self.nodes = list(nodes)
        self.tiers = {t: ordered(cnps, t) for t in TIERS}

    def ns_labels(self, ns: str) -> dict:
        return self.nsl.get(ns, {npr.NS_NAME_LABEL: ns})

    def subject_selects(self, cnp: dict, pod: dict) -> bool:
        subject = cnp["spec"]["subject"]
        labels = self.ns_labels(npr._pod_ns(pod))
        if subject.get("namespaces") is not None:
            return selector_matches(subject["namespaces"], labels)
        sel = subject["pods"]
        return selector_matches(sel.get("namespaceSelector"), labels) and selector_matches(
            sel.get("podSelector"), npr._pod_labels(pod)
        )

    # peers and protocols ----------------------------------------------------------------

    def peer_matches(self, peer: dict, other: End) -> bool:
        if peer.get("namespaces") is not None:
            return other.pod is not None and selector_matches(
                peer["namespaces"], self.ns_labels(other.ns)
            )
        if peer.get("pods") is not None:
            sel = peer["pods"]
            return (
                other.pod is not None
                and selector_matches(sel.get("namespaceSelector"), self.ns_labels(other.ns))
                and selector_matches(sel.get("podSelector"), npr._pod_labels(other.pod))
            )
        if peer.get("networks"):
            if other.ip is None:
                return False
            addr = ipaddress.ip_address(other.ip)
            return any(addr in ipaddress.ip_network(c, strict=False) for c in peer["networks"])
        if peer.get("nodes") is not None:
            if other.pod is not None or other.ip is None:
                return False
            return any(
                selector_matches(peer["nodes"], (n.get("metadata") or {}).get("labels") or {})
                and any(_same_ip(other.ip, a) for a in node_addresses(n))
                for n in self.nodes
            )
        raise AssertionError("unknown peers are handled by rule_action")

    @staticmethod
    def protocol_matches(entry: dict, dst_pod: dict | None, port: int, proto: str) -> bool:
        if entry.get("destinationNamedPort"):
            name = entry["destinationNamedPort"]
            return dst_pod is not None and any(
                n == name and p == port and pr == proto
                for n, p, pr in npr._container_ports(dst_pod)
            )
        for key, name in PROTOCOLS.items():
            if entry.get(key) is not None:
                if name != proto:
                    return False
                want = entry[key].get("destinationPort")
                if want is None:
                    return True
                if want.get("number") is not None:
                    return want["number"] == port
                return want["range"]["start"] <= port <= want["range"]["end"]
        raise AssertionError("unknown protocol entries are handled by rule_action")

    def rule_action(
        self, direction: str, rule: dict, other: End, dst_pod: dict | None, port: int, proto: str
    ) -> str | None:
        """The action this rule takes on the connection, None when it does not match."""
        action = rule["action"]
        peers = rule["from" if direction == "ingress" else "to"]
        protocols = rule.get("protocols") or []
        unknown = any(not _set_fields(p, PEER_FIELDS[direction]) for p in peers) or any(
            not _set_fields(e, PROTOCOL_FIELDS) for e in protocols
        )
        if unknown:  # fail closed
            return None if action == "Accept" else "Deny"
        if not any(self.peer_matches(p, other) for p in peers):
            return None
        if protocols and not any(self.protocol_matches(e, dst_pod, port, proto) for e in protocols):
            return None
        return action

    # NetworkPolicy ----------------------------------------------------------------------

    def np_verdict(
        self, direction: str, subject: dict, other: End, dst_pod: dict | None, port: int, proto: str
    ) -> bool | None:
        """The NetworkPolicy tier's verdict, None when no NetworkPolicy isolates `subject`."""
        kind = "Ingress" if direction == "ingress" else "Egress"
        selecting = [
            p for p in self.policies if kind in npr.policy_types(p) and npr._selects(p, subject)
        ]
        if not selecting:
            return None
        if other.pod is not None:
            return npr._direction_allows(
                kind, subject, other.pod, dst_pod, port, proto, selecting, self.nsl, self.family
            )
        # an IP that is no pod (egress only): only ipBlock peers or an empty `to` match it
        for pol in selecting:
            for rule in (pol.get("spec") or {}).get("egress") or []:
                peers = rule.get("to") or []
                if peers and not any(
                    p.get("ipBlock") is not None and npr._in_ipblock(p["ipBlock"], other.ip)
                    for p in peers
                ):
                    continue
                ports = rule.get("ports") or []
                if not ports or any(npr._port_matches(e, {}, port, proto) for e in ports):
                    return True
        return False

    # the tiers --------------------------------------------------------------------------

    def direction(
        self, direction: str, subject: dict, other: End, dst_pod: dict | None, port: int, proto: str
    ) -> dict:
        """The Decision of one direction: {"allowed", "tier" (Admin | NetworkPolicy |
        Baseline | default), "policy", "priority", "rule" (index), "rule_name", "action",
        "passed" (the Admin Pass rule that handed on, same shape, or None)}."""
        passed = None
        for tier in ("Admin", "NetworkPolicy", "Baseline"):
            if tier == "NetworkPolicy":
                np = self.np_verdict(direction, subject, other, dst_pod, port, proto)
                if np is not None:
                    return _decision(np, "NetworkPolicy", None, None, None, passed)
                continue
            hit = self.tier_decision(tier, direction, subject, other, dst_pod, port, proto)
            if hit is None:
                continue
            cnp, idx, action = hit
            if action == "Pass":
                if tier == "Admin":
                    passed = _decision(None, tier, cnp, idx, action, None, direction)
                continue
            return _decision(action == "Accept", tier, cnp, idx, action, passed, direction)
        return _decision(True, "default", None, None, None, passed)

    def tier_decision(self, tier, direction, subject, other, dst_pod, port, proto):
        """(cnp, rule index, action) of the first rule of the tier matching, or None."""
        for cnp in self.tiers[tier]:
            if not self.subject_selects(cnp, subject):
                continue
            for idx, rule in enumerate(cnp["spec"].get(direction) or []):
                action = self.rule_action(direction, rule, other, dst_pod, port, proto)
                if action is not None:
                    return cnp, idx, action
        return None


def _decision(allowed, tier, cnp, idx, action, passed, direction=None) -> dict:
    rule = cnp["spec"][direction][idx] if cnp is not None else {}
    return {
        "allowed": allowed,
        "tier": tier,
        "policy": _name(cnp) if cnp is not None else None,
        "priority": cnp["spec"]["priority"] if cnp is not None else None,
        "rule": idx,
        "rule_name": rule.get("name") or None,
        "action": action,
        "passed": passed,
    }


# -- the public questions -------------------------------------------------------------------


def _pod_key(pod: dict) -> tuple[str, str]:
    return npr._pod_ns(pod), npr._pod_name(pod)


def _pod_end(pod: dict, family: int | None) -> End:
    return End(pod=pod, ip=npr._pod_ip(pod, family))


def _connection(world: World, src: dict, dst, port: int, proto: str) -> dict:
    """explain()'s answer; `dst` is a pod dict or an IP address string."""
    if isinstance(dst, str):
        if any(_same_ip(dst, a) for a in _own_node_ips(world, src)):
            # ovsctl's choice: past NetworkPolicy and Baseline, but the Admin tier's rules
            # (nodes / networks peers) still apply to it
            admin = world.tier_decision("Admin", "egress", src, End(ip=dst), None, port, proto)
            if admin is None or admin[2] == "Pass":
                passed = None
                if admin is not None:
                    passed = _decision(None, "Admin", admin[0], admin[1], "Pass", None, "egress")
                egress = _decision(True, "own-node", None, None, None, passed)
            else:
                cnp, idx, action = admin
                egress = _decision(action == "Accept", "Admin", cnp, idx, action, None, "egress")
            return {"allowed": egress["allowed"], "egress": egress, "ingress": None}
        egress = world.direction("egress", src, End(ip=dst), None, port, proto)
        return {"allowed": egress["allowed"], "egress": egress, "ingress": None}
    egress = world.direction("egress", src, _pod_end(dst, world.family), dst, port, proto)
    ingress = world.direction("ingress", dst, _pod_end(src, world.family), dst, port, proto)
    return {
        "allowed": egress["allowed"] and ingress["allowed"],
        "egress": egress,
        "ingress": ingress,
    }


def _own_node_ips(world: World, pod: dict) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [
        a
        for n in world.nodes
        if name and (n.get("metadata") or {}).get("name") == name
        for a in node_addresses(n)
    ]


def explain(
    namespaces, pods, policies, cnps, src: dict, dst, port: int, proto: str, nodes=(), family=None
) -> dict:
    """Why the connection from pod `src` to `dst` (a pod dict, or an IP address string for an
    external or node address) on port/proto is allowed or not:
    {"allowed": bool, "egress": Decision, "ingress": Decision or None (an IP destination)}.
    A Decision is {"allowed", "tier" ("Admin" | "NetworkPolicy" | "Baseline" | "default" |
    "own-node"), "policy", "priority", "rule" (index in the direction's list), "rule_name",
    "action" ("Accept" | "Deny" | None when not a CNP rule), "passed" (the Admin Pass rule that
    handed the decision on, same shape, or None)}."""
    world = World(namespaces, pods, policies, cnps, nodes, family)
    return _connection(world, src, dst, port, proto)


def decisions(namespaces, pods, policies, cnps, nodes=(), family: int | None = None) -> dict:
    """evaluate()'s connections, each mapped to explain()'s answer (which tier, policy and rule
    decided each direction)."""
    world = World(namespaces, pods, policies, cnps, nodes, family)
    out = {}
    for src in world.pods:
        for dst in world.pods:
            if src is dst or _pod_key(src) == _pod_key(dst):
                continue
            if family is not None and not (npr._pod_ip(src, family) and npr._pod_ip(dst, family)):
                continue
            for _, port, proto in sorted(
                set(npr._container_ports(dst)), key=lambda t: (t[1], t[2])
            ):
                out[npr.conn_key(src, dst, port, proto)] = _connection(world, src, dst, port, proto)
    return out


def evaluate(
    namespaces, pods, policies, cnps, nodes=(), family: int | None = None
) -> dict[str, bool]:
    """Every (source pod, other destination pod, declared port of the destination) connection,
    keyed "srcns/srcpod->dstns/dstpod:PORT/PROTO" (exactly netpol_reference.evaluate's keys),
    mapped to whether NetworkPolicy and ClusterNetworkPolicy together allow it. `family` as in
    netpol_reference.evaluate (None: status.podIP; 4 or 6: the pods' addresses of that family,
    pods without one left out)."""
    found = decisions(namespaces, pods, policies, cnps, nodes, family)
    return {k: v["allowed"] for k, v in found.items()}


def egress_key(src: dict, ip: str, port: int, proto: str) -> str:
    return f"{npr._pod_ns(src)}/{npr._pod_name(src)}->{ipaddress.ip_address(ip)}:{port}/{proto}"


def node_targets(nodes, ports=((80, "TCP"),)) -> list[tuple[str, int, str]]:
    """(ip, port, proto) of every address of every node, for every (port, proto) given."""
    return [(ip, p, pr) for n in nodes for ip in node_addresses(n) for p, pr in ports]


def evaluate_egress(
    namespaces, pods, policies, cnps, nodes=(), targets=(), family: int | None = None
) -> dict[str, bool]:
    """Every pod to every (ip, port, proto) of `targets` (addresses that are no pod: external
    ones or nodes'), keyed "ns/pod->IP:PORT/PROTO" (the IP in Python's canonical form), mapped to
    whether policy allows it. Only the egress direction applies (no pod receives it); a pod
    reaches its own node's addresses unless the Admin tier decides otherwise. Pods without an address of the
    target's family are left out. `family` only chooses pod addresses for NetworkPolicy ipBlocks
    of pod peers and is irrelevant here but for symmetry with evaluate()."""
    world = World(namespaces, pods, policies, cnps, nodes, family)
    out = {}
    for src in world.pods:
        for ip, port, proto in targets:
            if npr._pod_ip(src, ipaddress.ip_address(ip).version) is None:
                continue
            out[egress_key(src, ip, port, proto)] = _connection(world, src, ip, port, proto)[
                "allowed"
            ]
    return out


# -- random cases ---------------------------------------------------------------------------


def _ip_order(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)


class _CnpGen(npr._Gen):
    """The vocabulary of random ClusterNetworkPolicies: namespaces, pods, nodes, externals."""

    def __init__(self, rng, namespaces, pods, nodes, externals, unknown_peers):
        super().__init__(rng, list(namespaces), list(pods))
        self.nodes = sorted(nodes, key=lambda n: (n.get("metadata") or {}).get("name", ""))
        self.unknown_peers = unknown_peers
        ext = [(str(ipaddress.ip_address(ip)), p, pr) for ip, p, pr in externals]
        self.ext_ips = sorted({ip for ip, _, _ in ext}, key=_ip_order)
        self.ports = sorted(set(self.ports) | {(p, pr) for _, p, pr in ext})
        self.node_ips = sorted({a for n in self.nodes for a in node_addresses(n)})

    def subject(self) -> dict:
        if self.rng.random() < 0.45:
            return {"namespaces": self.ns_selector()}
        pods: dict = {"podSelector": self.pod_selector()}
        if self.rng.random() < 0.8:  # absent: every namespace
            pods = {"namespaceSelector": self.ns_selector(), **pods}
        return {"pods": pods}

    def networks(self) -> list[str]:
        rng = self.rng
        pool = self.ips + self.ext_ips + self.node_ips
        out = set()
        for _ in range(rng.choice([1, 1, 2])):
            kind = rng.choice(["host", "host", "24", "16", "any4", "any6"])
            if kind == "any4" or not pool:
                out.add("0.0.0.0/0")
                continue
            if kind == "any6":
                out.add("::/0")
                continue
            ip = ipaddress.ip_address(rng.choice(pool))
            d = 0 if ip.version == 4 else 96
            length = {"host": 32, "24": 24, "16": 16}[kind] + d
            out.add(str(ipaddress.ip_network(f"{ip}/{length}", strict=False)))
        return sorted(out)

    def node_selector(self) -> dict:
        return self.selector([(n.get("metadata") or {}).get("labels") or {} for n in self.nodes])

    def cnp_peer(self, direction: str) -> dict:
        rng = self.rng
        kinds = ["namespaces", "pods", "pods"]
        if direction == "egress":
            kinds += ["networks", "networks"] + (["nodes"] if self.nodes else [])
        if self.unknown_peers and rng.random() < 0.1:
            return {"domainNames": ["example.com"]}
        kind = rng.choice(kinds)
        if kind == "namespaces":
            return {"namespaces": self.ns_selector()}
        if kind == "pods":
            pods: dict = {"podSelector": self.pod_selector()}
            if rng.random() < 0.8:
                pods = {"namespaceSelector": self.ns_selector(), **pods}
            return {"pods": pods}
        if kind == "networks":
            return {"networks": self.networks()}
        return {"nodes": self.node_selector()}

    def protocol(self) -> dict:
        rng = self.rng
        kinds = ["number", "number", "range"] + (["named", "named"] if self.named else [])
        kind = rng.choice(kinds)
        if kind == "named":
            return {"destinationNamedPort": rng.choice(self.named)[0]}
        port, proto = rng.choice(self.ports) if self.ports else (80, "TCP")
        if rng.random() < 0.15:  # the right number, another protocol
            proto = rng.choice([p for p in ("TCP", "UDP", "SCTP") if p != proto])
        key = proto.lower()
        if kind == "number":
            if rng.random() < 0.1:
                port = port + 1 if port < 65535 else port - 1  # a port nobody declares
            return {key: {"destinationPort": {"number": port}}}
        start = max(1, port - rng.choice([0, 1, 5, 100]))
        end = min(65535, port + rng.choice([1, 2, 1000]))
        if rng.random() < 0.15:  # beside the port
            start, end = (port + 1, port + 10) if port < 65500 else (port - 10, port - 1)
        if start >= end:
            start, end = end - 1, end
        return {key: {"destinationPort": {"range": {"start": start, "end": end}}}}

    def cnp_rule(self, direction: str, i: int) -> dict:
        rng = self.rng
        rule: dict = {"action": rng.choice(["Accept", "Accept", "Deny", "Deny", "Pass"])}
        if rng.random() < 0.7:
            rule = {"name": f"{direction}-{i}", **rule}
        peer_key = "from" if direction == "ingress" else "to"
        rule[peer_key] = [self.cnp_peer(direction) for _ in range(rng.choice([1, 1, 2]))]
        if rng.random() < 0.6:
            rule["protocols"] = [self.protocol() for _ in range(rng.choice([1, 1, 2]))]
        return rule

    def cnp(self, name: str) -> dict:
        rng = self.rng
        spec: dict = {
            "tier": rng.choice(TIERS),
            "priority": rng.choice([0, 5, 10, 10, 10, 20, 1000]),  # ties happen often
            "subject": self.subject(),
        }
        shape = rng.choice(["ingress", "egress", "both", "both"])
        for direction in ("ingress", "egress"):
            if shape in (direction, "both"):
                spec[direction] = [self.cnp_rule(direction, j) for j in range(rng.randint(1, 3))]
        return {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }


def random_case(
    seed: int, namespaces, pods, nodes=(), externals=(), unknown_peers: bool = False
) -> tuple[list[dict], list[dict]]:
    """(NetworkPolicies, ClusterNetworkPolicies): 0-3 valid NetworkPolicy dicts (drawn as
    netpol_reference.random_case draws them) and 1-4 valid ClusterNetworkPolicy dicts of both
    tiers over these namespaces, pods, nodes and `externals` ((ip, port, proto) the caller will
    probe), the same for the same seed and inputs (whatever their order). Priorities are drawn
    from a few values so that ties (broken by name) are common; names are drawn so that their
    order differs from creation order. `unknown_peers`: sometimes a peer of only `domainNames`
    (unsupported: its rule fails closed)."""
    rng = random.Random(seed)
    gen = _CnpGen(rng, namespaces, pods, nodes, externals, unknown_peers)
    nps = [gen.policy(seed, i) for i in range(rng.randint(0, 3))]
    count = rng.randint(1, 4)
    letters = rng.sample("abcdefgh", count)
    cnps = [gen.cnp(f"{letters[i]}-cnp-{seed}") for i in range(count)]
    return nps, cnps
