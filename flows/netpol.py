"""NetworkPolicy (networking.k8s.io/v1) as plain values: parsing, label selectors, port ranges.

Pure code: the agent feeds it the cluster's policies, namespaces and pods; `flows/policy.py`
turns the result into conjunctive flows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import netaddr

PROTOCOLS = ("TCP", "UDP", "SCTP")
AUDIT_ANNOTATION = "ovsctl.io/audit"  # "true": the policy's verdicts go to the audit log


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: dict) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class Selector:
    """A label selector; the empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return netaddr.IPNetwork(self.cidr).version

    def contains(self, ip: str) -> bool:
        """Is `ip` in the block and outside its exceptions? An address of the other family is
        never in it: an IPv4 block never matches an IPv6 address, nor the other way round."""
        if not ip:
            return False
        addr = netaddr.IPAddress(ip)
        net = netaddr.IPNetwork(self.cidr)
        return (
            addr.version == net.version
            and addr in net
            and not any(addr in netaddr.IPNetwork(e) for e in self.excepts)
        )

    def cidrs(self) -> list[str]:
        """The block minus its exceptions, as a list of CIDRs of the block's own family. A
        host prefix (/32, /128) is written as the bare address, as OVS prints it and as pod
        IPs are; IPv6 in its compressed form."""
        s = netaddr.IPSet([self.cidr]) - netaddr.IPSet(list(self.excepts))
        full = 32 if self.version == 4 else 128
        return [str(c.ip) if c.prefixlen == full else str(c) for c in s.iter_cidrs()]


def _matches(selector: Selector, labels) -> bool:
    return selector.matches(labels if isinstance(labels, Mapping) else dict(labels))


@dataclass(frozen=True)
class Peer:
    """One `from`/`to` entry. The one place that says which pods a peer selects: policy flows,
    the incremental dependency check and the intent that `reachability` shows all ask here.
    `matches(selector, labels)` may be a memoized selector.matches (labels: a mapping or a
    sorted tuple of pairs)."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None

    def selects_namespace(self, policy_ns: str, ns: str, ns_labels, matches=_matches) -> bool:
        """Could a pod in namespace `ns` be selected? (ipBlock peers select no pod by labels.)"""
        if self.ip_block is not None:
            return False
        if self.namespace_selector is None:
            return ns == policy_ns
        return matches(self.namespace_selector, ns_labels)

    def selects_labels(self, pod_labels, matches=_matches) -> bool:
        """Does the pod part select a pod with these labels (its namespace selected)?"""
        return self.pod_selector is None or matches(self.pod_selector, pod_labels)

    def selects(self, policy_ns: str, pod_ns: str, pod_labels, ns_labels, matches=_matches) -> bool:
        """Does this peer of a policy in `policy_ns` select the pod (in `pod_ns`, with
        `pod_labels`; `ns_labels` are its namespace's labels)?"""
        return self.selects_namespace(policy_ns, pod_ns, ns_labels, matches) and (
            self.selects_labels(pod_labels, matches)
        )


@dataclass(frozen=True)
class Port:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None

    def resolve(self, container_ports) -> int | None:
        """A named port's number on a destination with these (name, port, protocol) container
        ports (None when it has none of that name and protocol); a number as it is."""
        if not isinstance(self.port, str):
            return self.port
        for name, num, proto in container_ports:
            if name == self.port and proto == self.protocol:
                return num
        return None

    def matches(self, protocol: str, port: int | None, container_ports=()) -> bool:
        """Does a connection to `port`/`protocol` on a destination with these container ports
        match? (port None: "any port" is asked, which only a portless entry matches.)"""
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if port is None:
            return False
        if isinstance(self.port, str):
            return self.resolve(container_ports) == port
        return self.port == port or (
            self.end_port is not None and self.port <= port <= self.end_port
        )


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer
    ports: tuple[Port, ...] = ()  # empty: every port and protocol
    # a rule the agent could not read: it allows nothing (never "every peer"), so a policy
    # with a bad rule still isolates its pods and its other rules still apply
    never: bool = False

    def allows_peer(
        self, policy_ns: str, pod_ns: str | None, pod_labels, ns_labels, ip: str, matches=_matches
    ) -> bool:
        """Does the rule admit this peer: a pod (pod_ns set) or a plain IP (pod_ns None)?"""
        if self.never:
            return False
        if not self.peers:
            return True
        for peer in self.peers:
            if peer.ip_block is not None:
                if peer.ip_block.contains(ip):
                    return True
            elif pod_ns is not None and peer.selects(
                policy_ns, pod_ns, pod_labels, ns_labels, matches
            ):
                return True
        return False

    def allows_port(self, protocol: str, port: int | None, container_ports=()) -> bool:
        return not self.never and (
            not self.ports or any(p.matches(protocol, port, container_ports) for p in self.ports)
        )


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    types: frozenset[str] = frozenset({"Ingress"})
    audit: bool = False  # annotation ovsctl.io/audit: "true": log allowed and dropped connections
    # what the node cannot program and leaves out (the field and why), for one log line each
    skipped: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects_pod(self, pod_ns: str, pod_labels, matches=_matches) -> bool:
        """Is the pod one this policy applies to?"""
        return pod_ns == self.namespace and matches(self.pod_selector, pod_labels)


# -- parsing -----------------------------------------------------------------------------------


def _selector(obj, where: str) -> Selector:
    if obj is None:
        return Selector()
    if not isinstance(obj, dict):
        raise PolicyError(f"{where}: must be a label selector")
    ml = obj.get("matchLabels") or {}
    if not isinstance(ml, dict):
        raise PolicyError(f"{where}.matchLabels: must be a map")
    exprs = []
    for i, e in enumerate(obj.get("matchExpressions") or []):
        op = e.get("operator") if isinstance(e, dict) else None
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise PolicyError(
                f"{where}.matchExpressions[{i}].operator: {op!r} is not In/NotIn/Exists/DoesNotExist"
            )
        values = tuple(str(v) for v in (e.get("values") or []))
        if op in ("In", "NotIn") and not values:
            raise PolicyError(f"{where}.matchExpressions[{i}].values: required for {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise PolicyError(f"{where}.matchExpressions[{i}].values: must be empty for {op}")
        exprs.append(Requirement(str(e.get("key", "")), op, tuple(sorted(values))))
    return Selector(tuple(sorted((str(k), str(v)) for k, v in ml.items())), tuple(exprs))


def _cidr(value, where: str) -> netaddr.IPNetwork:
    """An IPv4 or IPv6 CIDR ("10.0.0.0/8", "fd00::/64"; host bits are cleared as the API
    server's validation allows them); PolicyError naming `where` for anything else."""
    if not isinstance(value, str) or "/" not in value:
        raise PolicyError(f"{where}: {value!r} is not a CIDR (address/prefix length)")
    try:
        return netaddr.IPNetwork(value.strip()).cidr
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise PolicyError(f"{where}: {value!r} is not a CIDR") from None


def _peer(obj, where: str) -> Peer:
    if not isinstance(obj, dict):
        raise PolicyError(f"{where}: must be an object")
    if "ipBlock" in obj:
        if "podSelector" in obj or "namespaceSelector" in obj:
            raise PolicyError(f"{where}: ipBlock cannot be combined with selectors")
        ib = obj["ipBlock"] or {}
        if not isinstance(ib, dict):
            raise PolicyError(f"{where}.ipBlock: must be an object")
        if "cidr" not in ib:
            raise PolicyError(f"{where}.ipBlock.cidr: required (an IPv4 or IPv6 CIDR)")
        cidr = _cidr(ib["cidr"], f"{where}.ipBlock.cidr")
        raw = ib.get("except") or []
        if not isinstance(raw, list):
            raise PolicyError(f"{where}.ipBlock.except: must be a list of CIDRs")
        excepts = []
        for i, e in enumerate(raw):
            en = _cidr(e, f"{where}.ipBlock.except[{i}]")
            if en.version != cidr.version:
                raise PolicyError(
                    f"{where}.ipBlock.except[{i}]: {en.cidr} is not inside {cidr.cidr} "
                    f"(IPv{en.version} in an IPv{cidr.version} block)"
                )
            if en not in cidr or en.cidr == cidr.cidr:
                raise PolicyError(
                    f"{where}.ipBlock.except[{i}]: {en.cidr} is not inside {cidr.cidr}"
                )
            excepts.append(str(en.cidr))
        excepts = tuple(excepts)
        return Peer(ip_block=IPBlock(str(cidr.cidr), excepts))
    # a null selector is the same as an absent one (the API drops it)
    ps = (
        _selector(obj["podSelector"], f"{where}.podSelector")
        if obj.get("podSelector") is not None
        else None
    )
    ns = (
        _selector(obj["namespaceSelector"], f"{where}.namespaceSelector")
        if obj.get("namespaceSelector") is not None
        else None
    )
    if ps is None and ns is None:
        raise PolicyError(f"{where}: needs podSelector, namespaceSelector or ipBlock")
    return Peer(pod_selector=ps, namespace_selector=ns)


def _port(obj, where: str) -> Port:
    if not isinstance(obj, dict):
        raise PolicyError(f"{where}: must be an object")
    proto = obj.get("protocol") or "TCP"
    if proto not in PROTOCOLS:
        raise PolicyError(f"{where}.protocol: {proto!r} is not TCP, UDP or SCTP")
    port = obj.get("port")
    end = obj.get("endPort")
    if isinstance(port, bool) or (port is not None and not isinstance(port, int | str)):
        raise PolicyError(f"{where}.port: must be a number or a name")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise PolicyError(f"{where}.port: {port} out of range 1..65535")
    if end is not None:
        if not isinstance(port, int) or isinstance(end, bool) or not isinstance(end, int):
            raise PolicyError(f"{where}.endPort: needs a numeric port")
        if not port <= end <= 65535:
            raise PolicyError(f"{where}.endPort: {end} must be in {port}..65535")
    return Port(proto, port, end)


def _rules(items, where: str, skipped: list[str]) -> tuple[Rule, ...]:
    """The rules; one that cannot be read becomes a rule that allows nothing (and says why in
    `skipped`), keeping the others' indexes."""
    if items is not None and not isinstance(items, list):
        raise PolicyError(f"{where}: must be a list of rules")
    out = []
    for i, r in enumerate(items or []):
        try:
            if not isinstance(r, dict):
                raise PolicyError(f"{where}[{i}]: must be an object")
            key = "from" if where.endswith("ingress") else "to"
            if r.get(key) is not None and not isinstance(r.get(key), list):
                raise PolicyError(f"{where}[{i}].{key}: must be a list")
            if r.get("ports") is not None and not isinstance(r.get("ports"), list):
                raise PolicyError(f"{where}[{i}].ports: must be a list")
            peers = tuple(
                _peer(p, f"{where}[{i}].{key}[{j}]") for j, p in enumerate(r.get(key) or [])
            )
            ports = tuple(
                _port(p, f"{where}[{i}].ports[{j}]") for j, p in enumerate(r.get("ports") or [])
            )
            out.append(Rule(peers, ports))
        except PolicyError as e:
            skipped.append(f"{e}; this rule allows nothing")
            out.append(Rule(never=True))
    return tuple(out)


def parse(obj: dict) -> Policy:
    """A networking.k8s.io/v1 NetworkPolicy dict to a Policy (policyTypes defaulted as the API
    does: Ingress always, Egress when there are egress rules)."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace") or "default", meta.get("name", "")
    where = f"NetworkPolicy {ns}/{name}: spec"
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise PolicyError(f"{where}: missing")
    if "podSelector" not in spec:
        raise PolicyError(f"{where}.podSelector: required (use {{}} for every pod)")
    bad: list[str] = []
    ingress = _rules(spec.get("ingress"), f"{where}.ingress", bad)
    egress = _rules(spec.get("egress"), f"{where}.egress", bad)
    types = spec.get("policyTypes")
    if not types:  # absent, null and [] are all defaulted by the API server
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    if not isinstance(types, list) or any(t not in ("Ingress", "Egress") for t in types):
        raise PolicyError(f"{where}.policyTypes: must be a list of Ingress/Egress")
    skipped = tuple(bad)
    return Policy(
        ns,
        name,
        _selector(spec["podSelector"], f"{where}.podSelector"),
        ingress,
        egress,
        frozenset(types),
        audit=str((meta.get("annotations") or {}).get(AUDIT_ANNOTATION, "")).lower() == "true",
        skipped=skipped,
    )


# -- ports ---------------------------------------------------------------------------------------


def port_masks(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end] as (value, mask) pairs for a 16-bit field (fewest prefixes)."""
    out = []
    while start <= end:
        size = start & -start if start else 1 << 16
        while size > end - start + 1:
            size >>= 1
        out.append((start, 0xFFFF & ~(size - 1)))
        start += size
    return out
