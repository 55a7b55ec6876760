"""What the NetworkPolicies *intend*: Kubernetes NetworkPolicy semantics evaluated straight from
the cluster state (the agent's `/cluster` view), for `ovsctl trace` and `ovsctl reachability`
to put next to what the switch actually does.

It shares the parsing and the label selectors with the agent (`flows/netpol.py`) but not the
flow generation (`flows/policy.py`): a bug in how rules become conjunctive flows shows up as a
difference between the traced and the intended verdict.

    intents = Intents(cluster_view)
    it = intents.evaluate(src, dst, 80, "TCP")     # src/dst: Pod values or plain IPs
    it.allowed, it.egress.isolated_by, it.ingress.allowed_by

Semantics: a pod is isolated for a direction when a policy of its namespace selects it and has
that direction in its policyTypes (defaulted as the API server does); an isolated direction
allows the union of the rules of that direction of every policy selecting the pod; a
connection needs egress allowed at the source and ingress allowed at the destination. Peers:
podSelector (the policy's namespace), namespaceSelector, both (AND), ipBlock (minus except; it
matches pod IPs too). Ports: numeric, endPort ranges, named ports resolved against the
destination pod, protocol-only entries; no ports means every port and protocol (also ICMP,
which a rule with ports never allows). Plain IPs (not pods) are never isolated. A pod and its
own node (the node IP, the node's gateway IP) may always talk, whatever the policies say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from flows import netpol

NS_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, containerPort, protocol)
    node: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_dict(self) -> dict:
        return dict(self.labels)

    @classmethod
    def from_view(cls, p: dict) -> Pod:
        """A pod of the agent's /cluster view."""
        return cls(
            p["namespace"],
            p["name"],
            p.get("ip") or "",
            tuple(sorted((p.get("labels") or {}).items())),
            tuple((str(n or ""), int(port), str(proto)) for n, port, proto in p.get("ports") or []),
            p.get("node") or "",
        )


@dataclass(frozen=True)
class Direction:
    """One direction's verdict: `pod` is the end whose policies apply ("" for a plain IP)."""

    direction: str  # "egress" or "ingress"
    pod: str
    isolated_by: tuple[str, ...] = ()  # policy keys ns/name
    allowed_by: tuple[tuple[str, int], ...] = ()  # (policy key, rule index)
    always: str = ""  # why no policy can block it (the pod's own node)

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)

    @property
    def allowed(self) -> bool:
        return bool(self.always) or not self.isolated_by or bool(self.allowed_by)

    def describe(self) -> str:
        if not self.pod:
            return "not a pod: no policy applies"
        if self.always:
            return f"{self.pod}: {self.always}"
        if not self.isolated:
            return f"{self.pod} is not isolated for {self.direction}"
        iso = ", ".join(self.isolated_by)
        if self.allowed_by:
            rules = ", ".join(f"{p} {self.direction} rule {i}" for p, i in self.allowed_by)
            return f"{self.pod} isolated for {self.direction} by {iso}; allowed by {rules}"
        return f"{self.pod} isolated for {self.direction} by {iso}; no rule allows it"

    def to_dict(self) -> dict:
        return {
            "pod": self.pod or None,
            "isolated_by": list(self.isolated_by),
            "allowed_by": [{"policy": p, "rule": i} for p, i in self.allowed_by],
            "allowed": self.allowed,
            "always": self.always or None,
        }


@dataclass(frozen=True)
class Intent:
    egress: Direction
    ingress: Direction

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "egress": self.egress.to_dict(),
            "ingress": self.ingress.to_dict(),
        }


@dataclass
class Intents:
    """NetworkPolicy intent over one snapshot of the cluster (an agent's /cluster view)."""

    view: dict
    policies: list[netpol.Policy] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.ns_labels = {
            n["name"]: {NS_NAME_LABEL: n["name"], **(n.get("labels") or {})}
            for n in self.view.get("namespaces") or []
        }
        self.pods = [
            Pod.from_view(p)
            for p in self.view.get("pods") or []
            if p.get("ip") and not p.get("host_network")
        ]
        self.by_ip = {p.ip: p for p in self.pods}
        # a pod and its own node may always talk (kubelet probes): the node IP and the gateway
        self.node_ips: dict[str, set[str]] = {}
        for n in self.view.get("nodes") or []:
            ips = {n.get("ip") or ""}
            if n.get("pod_cidr"):
                ips.add(str(netaddr.IPAddress(netaddr.IPNetwork(n["pod_cidr"]).first + 1)))
            self.node_ips[n["name"]] = ips - {""}
        for obj in self.view.get("policies") or []:
            try:
                self.policies.append(netpol.parse(obj))
            except netpol.PolicyError as e:
                self.errors.append(str(e))  # the agent ignores it too

    def labels_of_ns(self, ns: str) -> dict:
        return self.ns_labels.get(ns, {NS_NAME_LABEL: ns})

    def pod(self, key: str) -> Pod | None:
        return next((p for p in self.pods if p.key == key), None)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, src: Pod | str, dst: Pod | str, port: int | None, proto: str) -> Intent:
        """May `src` open a connection to `dst` on port/proto ("TCP", "UDP", "SCTP", "ICMP")?
        A plain IP that is a pod's IP counts as that pod."""
        src = self._as_pod(src)
        dst = self._as_pod(dst)
        proto = proto.upper()
        return Intent(
            self._direction("egress", src, dst, dst, port, proto),
            self._direction("ingress", dst, src, dst, port, proto),
        )

    def _as_pod(self, end: Pod | str) -> Pod | str:
        if isinstance(end, Pod):
            return end
        return self.by_ip.get(end, end)

    def _direction(self, direction, own, peer, dst, port, proto) -> Direction:
        if not isinstance(own, Pod):
            return Direction(direction, "")
        always = ""
        if isinstance(peer, str) and peer in self.node_ips.get(own.node, ()):
            always = f"its own node ({peer}) is always allowed"
        kind = "Ingress" if direction == "ingress" else "Egress"
        iso, allowed = [], []
        for pol in self.policies:
            if pol.namespace != own.namespace or kind not in pol.types:
                continue
            if not pol.selects_pod(own.namespace, own.label_dict()):
                continue
            iso.append(pol.key)
            rules = pol.ingress if direction == "ingress" else pol.egress
            for idx, rule in enumerate(rules):
                if self._peer_ok(rule, pol.namespace, peer) and rule.allows_port(
                    proto, port, dst.ports if isinstance(dst, Pod) else ()
                ):
                    allowed.append((pol.key, idx))
        return Direction(direction, own.key, tuple(sorted(iso)), tuple(allowed), always)

    def _peer_ok(self, rule: netpol.Rule, policy_ns: str, peer: Pod | str) -> bool:
        """netpol.Rule decides (the same code the flows and the incremental check use)."""
        if isinstance(peer, Pod):
            return rule.allows_peer(
                policy_ns,
                peer.namespace,
                peer.label_dict(),
                self.labels_of_ns(peer.namespace),
                peer.ip,
            )
        return rule.allows_peer(policy_ns, None, {}, {}, peer)


def probe_key(src: Pod, dst: Pod, port: int, proto: str) -> str:
    """The key `ovsctl lab probe --json` uses."""
    return f"{src.key}->{dst.key}:{port}/{proto}"


def pairs(pods: list[Pod], namespace: str | None = None):
    """(src, dst, port, proto) for every pod to every other pod on every declared TCP/UDP port,
    in probe-key order; with `namespace`, only pairs with an end in it."""
    for src in sorted(pods, key=lambda p: p.key):
        for dst in sorted(pods, key=lambda p: p.key):
            if src.key == dst.key:
                continue
            if namespace and namespace not in (src.namespace, dst.namespace):
                continue
            for _name, port, proto in dst.ports:
                if proto in ("TCP", "UDP"):
                    yield src, dst, port, proto
