"""Who owns a flow: typed owner keys, formatted and parsed in this one place.

Every flow belongs to exactly one owner; the agent keeps the desired flows per owner, the
cookie carries a 40-bit hash of the owner's key (flows/cookie.py), and the tools map cookies
back to keys through the agent and keys back to these values with `parse`. The text forms:

    pipeline                              table-miss flows, the gateway, conntrack
    pod/<container id>/<ifname>           one pod attachment (never its ofport: OVS reuses them)
    node/<name>                           another node's tunnel flows
    policy/<ns>/<name>/<direction>/<i>    one NetworkPolicy rule (direction ingress or egress)
    policy/<ns>/<name>/isolation          a NetworkPolicy's default drops
    service/<ns>/<name>                   one Service's load-balancing flows
    cnp/<name>/<direction>/<i>            one ClusterNetworkPolicy rule

No part may contain "/" (container IDs, interface names and Kubernetes names cannot), so a key
parses back into exactly the value that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows import cookie


class OwnerError(ValueError):
    pass


@dataclass(frozen=True)
class Pipeline:
    feature = "pipeline"

    @property
    def key(self) -> str:
        return "pipeline"

    def label(self) -> str:
        return "pipeline"


@dataclass(frozen=True)
class Pod:
    container_id: str
    ifname: str
    feature = "pod"

    @property
    def key(self) -> str:
        return f"pod/{self.container_id}/{self.ifname}"

    def label(self) -> str:
        return f"pod {self.container_id[:12]}/{self.ifname}"


@dataclass(frozen=True)
class Node:
    name: str
    feature = "node"

    @property
    def key(self) -> str:
        return f"node/{self.name}"

    def label(self) -> str:
        return f"node {self.name}"


@dataclass(frozen=True)
class PolicyRule:
    namespace: str
    name: str
    direction: str  # ingress | egress
    index: int
    feature = "policy"

    @property
    def key(self) -> str:
        return f"policy/{self.namespace}/{self.name}/{self.direction}/{self.index}"

    @property
    def policy(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label(self) -> str:
        return f"policy {self.policy} {self.direction} rule {self.index}"


@dataclass(frozen=True)
class PolicyIsolation:
    namespace: str
    name: str
    feature = "policy"

    @property
    def key(self) -> str:
        return f"policy/{self.namespace}/{self.name}/isolation"

    @property
    def policy(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label(self) -> str:
        return f"policy {self.policy} isolation"


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    feature = "service"

    @property
    def key(self) -> str:
        return f"service/{self.namespace}/{self.name}"

    def label(self) -> str:
        return f"service {self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClusterPolicyRule:
    name: str
    direction: str  # ingress | egress
    index: int
    feature = "cnp"

    @property
    def key(self) -> str:
        return f"cnp/{self.name}/{self.direction}/{self.index}"

    @property
    def policy(self) -> str:
        return self.name

    def label(self) -> str:
        return f"cnp {self.name} {self.direction} rule {self.index}"


Owner = Pipeline | Pod | Node | PolicyRule | PolicyIsolation | Service | ClusterPolicyRule


def cookie_of(owner: Owner) -> int:
    """The cookie bits (feature | owner id, no round) of an owner's flows."""
    return cookie.make(owner.feature, owner.key)


def parse(key: str) -> Owner:
    """The owner a key names; OwnerError when it is no owner key."""
    parts = key.split("/") if isinstance(key, str) else []
    kind, n = (parts[0], len(parts)) if parts else ("", 0)
    if kind == "pipeline" and n == 1:
        return Pipeline()
    if kind == "pod" and n == 3 and all(parts[1:]):
        return Pod(parts[1], parts[2])
    if kind == "node" and n == 2 and parts[1]:
        return Node(parts[1])
    if kind == "service" and n == 3 and all(parts[1:]):
        return Service(parts[1], parts[2])
    if kind == "cnp" and n == 4 and parts[1] and parts[2] in ("ingress", "egress"):
        if parts[3].isdigit():
            return ClusterPolicyRule(parts[1], parts[2], int(parts[3]))
    if kind == "policy" and n == 4 and parts[3] == "isolation" and all(parts[1:3]):
        return PolicyIsolation(parts[1], parts[2])
    if (
        kind == "policy"
        and n == 5
        and all(parts[1:3])
        and parts[3] in ("ingress", "egress")
        and parts[4].isdigit()
    ):
        return PolicyRule(parts[1], parts[2], parts[3], int(parts[4]))
    raise OwnerError(f"{key!r} is not an owner key")


def try_parse(key: str | None) -> Owner | None:
    if not key:
        return None
    try:
        return parse(key)
    except OwnerError:
        return None


def policy_keys(namespace: str, name: str, max_rules: int) -> list[str]:
    """Every key a policy's flows can carry (isolation, rules 0..max_rules-1 each way): enough
    to find a policy's flows by cookie without the agent."""
    return [PolicyIsolation(namespace, name).key] + [
        PolicyRule(namespace, name, d, i).key
        for d in ("ingress", "egress")
        for i in range(max_rules)
    ]


def cluster_policy_keys(name: str, max_rules: int = 25) -> list[str]:  # cnp.MAX_RULES
    """Every key a ClusterNetworkPolicy's flows can carry (rules 0..max_rules-1 each way)."""
    return [
        ClusterPolicyRule(name, d, i).key for d in ("ingress", "egress") for i in range(max_rules)
    ]
