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
own node (the node IP, the node's gateway IP) may always talk, whatever the NetworkPolicies
say (the Admin tier may still deny the pod's egress to it).

Tiers (ClusterNetworkPolicy, flows/cnp.py): before NetworkPolicy, the Admin tier's first
matching rule decides (Accept, Deny) or hands over (Pass); after it, for a pod no NetworkPolicy
isolates in that direction, the Baseline tier's; then the default. `Direction.tier` says which
decided ("Admin", "NetworkPolicy", "Baseline", "default"), `decided_by` the rule and `passed`
an Admin Pass on the way. The pod's own node is let through before every tier.

Families: a dual-stack pod has an address of each family, and a connection is between two
addresses of one family; `evaluate(..., family=6)` asks about the IPv6 one. Selectors select
a pod whatever the family, so the IPv4 and IPv6 verdicts of two pods always agree for them;
an ipBlock matches only addresses of its own family, so there they may differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from flows import cnp, netpol
from flows.family import V4, V6, Family, family, of, ordered

NS_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, containerPort, protocol)
    node: str = ""
    ips: tuple[str, ...] = ()  # every address (a dual-stack pod: IPv4 first); () = (ip,)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def addrs(self) -> tuple[str, ...]:
        if self.ips:
            return self.ips
        return (self.ip,) if self.ip else ()

    def ip_of(self, fam: Family | int) -> str:
        """The pod's address in family `fam` (4, 6 or a Family), or ""."""
        return of(self.addrs, _fam(fam))

    def label_dict(self) -> dict:
        return dict(self.labels)

    @classmethod
    def from_view(cls, p: dict) -> Pod:
        """A pod of the agent's /cluster view."""
        ip = p.get("ip") or ""
        ips = ordered(a for a in p.get("ips") or [] if a) if p.get("ips") else ()
        return cls(
            p["namespace"],
            p["name"],
            ip or (ips[0] if ips else ""),
            tuple(sorted((p.get("labels") or {}).items())),
            tuple((str(n or ""), int(port), str(proto)) for n, port, proto in p.get("ports") or []),
            p.get("node") or "",
            ips if len(ips) > 1 else (),
        )


@dataclass(frozen=True)
class Direction:
    """One direction's verdict: `pod` is the end whose policies apply ("" for a plain IP)."""

    direction: str  # "egress" or "ingress"
    pod: str
    isolated_by: tuple[str, ...] = ()  # policy keys ns/name
    allowed_by: tuple[tuple[str, int], ...] = ()  # (policy key, rule index)
    always: str = ""  # why no policy can block it (the pod's own node)
    # the ClusterNetworkPolicy rule that decided (Accept/Deny, Admin or Baseline tier; a
    # Baseline Pass too: the default then allows), and an Admin Pass that handed it on
    decided_by: cnp.Decision | None = None
    passed: cnp.Decision | None = None

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)

    @property
    def allowed(self) -> bool:
        if self.always:
            return True
        if self.decided_by is not None:
            return self.decided_by.action != "Deny"
        return not self.isolated_by or bool(self.allowed_by)

    @property
    def tier(self) -> str:
        """Which tier decided: "Admin", "NetworkPolicy", "Baseline" or "default"."""
        if self.decided_by is not None and self.decided_by.tier == "Admin":
            return "Admin"
        if self.isolated_by and not self.always:
            return "NetworkPolicy"
        if self.decided_by is not None and self.decided_by.action != "Pass":
            return "Baseline"
        return "default"  # no tier decided (a Baseline Pass skips to the default too)

    def describe(self) -> str:
        if not self.pod:
            return "not a pod: no policy applies"
        if self.always:
            return f"{self.pod}: {self.always}"
        if self.decided_by is not None and self.tier != "NetworkPolicy":
            verdict = "denied" if self.decided_by.action == "Deny" else "allowed"
            how = (
                " (Pass: no later policy of the tier, default allow)"
                if (self.decided_by.action == "Pass")
                else ""
            )
            text = f"{self.pod} {self.direction} {verdict} by {self.decided_by.describe()}{how}"
            if self.passed is not None:
                text = f"{self.passed.describe()} passed it on; {text}"
            return text
        text = self._describe_np()
        if self.passed is not None:
            text = f"{self.passed.describe()} passed it on; {text}"
        return text

    def _describe_np(self) -> str:
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
            "tier": self.tier if self.pod else None,
            "decided_by": self.decided_by.to_dict() if self.decided_by else None,
            "passed": self.passed.to_dict() if self.passed else None,
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
    cluster_policies: list[cnp.ClusterPolicy] = field(default_factory=list)

    def __post_init__(self):
        self.ns_labels = {
            n["name"]: {NS_NAME_LABEL: n["name"], **(n.get("labels") or {})}
            for n in self.view.get("namespaces") or []
        }
        self.pods = [
            Pod.from_view(p)
            for p in self.view.get("pods") or []
            if (p.get("ip") or p.get("ips")) and not p.get("host_network")
        ]
        self.by_ip = {a: p for p in self.pods for a in p.addrs}
        # a pod and its own node may always talk (kubelet probes): the node's addresses and
        # its gateway's (the first address of each pod CIDR)
        self.node_ips: dict[str, set[str]] = {}
        for n in self.view.get("nodes") or []:
            ips = {n.get("ip") or "", *(n.get("ips") or ())}
            for cidr in {n.get("pod_cidr") or "", *(n.get("pod_cidrs") or ())} - {""}:
                ips.add(str(netaddr.IPAddress(netaddr.IPNetwork(cidr).first + 1)))
            self.node_ips[n["name"]] = ips - {""}
        for obj in self.view.get("policies") or []:
            try:
                self.policies.append(netpol.parse(obj))
            except netpol.PolicyError as e:
                self.errors.append(str(e))  # the agent ignores it too
        cnps = []
        for obj in self.view.get("cluster_network_policies") or []:
            try:
                cnps.append(cnp.parse(obj))
            except cnp.CNPError as e:
                self.errors.append(str(e))
        self.cluster_policies = cnp.order(cnps)
        # node addresses -> node labels (ClusterNetworkPolicy `nodes` peers)
        self.node_labels: dict[str, dict] = {}
        for n in self.view.get("nodes") or []:
            every = {n.get("ip") or "", *(n.get("ips") or ()), *(n.get("addresses") or ())}
            for a in every - {""}:
                self.node_labels[a] = dict(n.get("labels") or {})

    def labels_of_ns(self, ns: str) -> dict:
        return self.ns_labels.get(ns, {NS_NAME_LABEL: ns})

    def pod(self, key: str) -> Pod | None:
        return next((p for p in self.pods if p.key == key), None)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(
        self,
        src: Pod | str,
        dst: Pod | str,
        port: int | None,
        proto: str,
        family: Family | int | None = None,
    ) -> Intent:
        """May `src` open a connection to `dst` on port/proto ("TCP", "UDP", "SCTP", "ICMP",
        "ICMP6")? A plain IP that is a pod's address counts as that pod. `family` (4, 6): the
        connection's family, that of the pods' addresses an ipBlock is checked against;
        default: the family of a plain-IP end, else of the source pod's first address."""
        fam = self._family(src, dst, family)
        src = self._as_pod(src)
        dst = self._as_pod(dst)
        proto = proto.upper()
        if proto == "ICMP6":
            proto = "ICMP"  # NetworkPolicy ports never name it: only a portless rule allows it
        return Intent(
            self._direction("egress", src, dst, dst, port, proto, fam),
            self._direction("ingress", dst, src, dst, port, proto, fam),
        )

    @staticmethod
    def _family(src, dst, fam) -> Family:
        if fam is not None:
            return _fam(fam)
        for end in (src, dst):
            if isinstance(end, str) and end:
                return family(end)
        for end in (src, dst):
            if isinstance(end, Pod) and end.addrs:
                return family(end.addrs[0])
        return V4

    def _as_pod(self, end: Pod | str) -> Pod | str:
        if isinstance(end, Pod):
            return end
        return self.by_ip.get(end, end)

    def _direction(self, direction, own, peer, dst, port, proto, fam=V4) -> Direction:
        if not isinstance(own, Pod):
            return Direction(direction, "")
        always = ""
        if isinstance(peer, str) and peer in self.node_ips.get(own.node, ()):
            always = f"its own node ({peer}) is always allowed"
        # the pod's own node is let through before every tier to the pod (kubelet probes), and
        # from the pod after the Admin tier (whose `nodes`/`networks` rules may deny it)
        admin = (
            None
            if always and direction == "ingress"
            else self._tier("Admin", direction, own, peer, dst, port, proto, fam)
        )
        if admin is not None and admin.action != "Pass":
            return Direction(direction, own.key, decided_by=admin)
        passed = admin
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
                if self._peer_ok(rule, pol.namespace, peer, fam) and rule.allows_port(
                    proto, port, dst.ports if isinstance(dst, Pod) else ()
                ):
                    allowed.append((pol.key, idx))
        base = None
        if not iso and not always:
            base = self._tier("Baseline", direction, own, peer, dst, port, proto, fam)
        return Direction(
            direction, own.key, tuple(sorted(iso)), tuple(allowed), always, base, passed
        )

    def _tier(self, tier, direction, own, peer, dst, port, proto, fam) -> cnp.Decision | None:
        """The first ClusterNetworkPolicy rule of `tier` that matches this direction."""
        if not self.cluster_policies:
            return None
        if isinstance(peer, Pod):
            desc = {
                "ns_labels": self.labels_of_ns(peer.namespace),
                "labels": peer.label_dict(),
                "ip": peer.ip_of(fam),
            }
        else:
            desc = {"ip": peer, "node_labels": self.node_labels.get(peer)}
        return cnp.first_match(
            self.cluster_policies,
            tier,
            direction,
            self.labels_of_ns(own.namespace),
            own.label_dict(),
            desc,
            proto,
            port,
            dst.ports if isinstance(dst, Pod) else (),
        )

    def _peer_ok(self, rule: netpol.Rule, policy_ns: str, peer: Pod | str, fam=V4) -> bool:
        """netpol.Rule decides (the same code the flows and the incremental check use); an
        ipBlock is checked against the peer pod's address of the connection's family."""
        if isinstance(peer, Pod):
            return rule.allows_peer(
                policy_ns,
                peer.namespace,
                peer.label_dict(),
                self.labels_of_ns(peer.namespace),
                peer.ip_of(fam),
            )
        return rule.allows_peer(policy_ns, None, {}, {}, peer)


def probe_key(src: Pod, dst: Pod, port: int, proto: str) -> str:
    """The key `ovsctl lab probe --json` uses."""
    return f"{src.key}->{dst.key}:{port}/{proto}"


def _fam(fam: Family | int) -> Family:
    if isinstance(fam, Family):
        return fam
    if fam in (4, 6):
        return V4 if fam == 4 else V6
    raise ValueError(f"family {fam!r} is not 4 or 6")


def pairs(pods: list[Pod], namespace: str | None = None, family: Family | int | None = None):
    """(src, dst, port, proto) for every pod to every other pod on every declared TCP/UDP port,
    in probe-key order; with `namespace`, only pairs with an end in it; with `family` (4, 6),
    only pods with an address of that family (the keys are the same for either family)."""
    if family is not None:
        pods = [p for p in pods if p.ip_of(family)]
    for src in sorted(pods, key=lambda p: p.key):
        for dst in sorted(pods, key=lambda p: p.key):
            if src.key == dst.key:
                continue
            if namespace and namespace not in (src.namespace, dst.namespace):
                continue
            for _name, port, proto in dst.ports:
                if proto in ("TCP", "UDP"):
                    yield src, dst, port, proto
