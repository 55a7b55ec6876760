"""Which external addresses (spec.externalIPs, LoadBalancer ingress IPs) a Service may have.

An external address is load-balanced by br-int for any client and routed into br-int by the
host of every node, so a Service naming someone else's address would take its traffic
(CVE-2020-8554, and worse: a node's IP would be routed into br-int on every other node). An
address is refused (left out of the Service's frontends and of the host routes, logged once
naming the Service and the field) when it is:
  - inside a cluster CIDR or a Node's pod CIDR (a pod's address),
  - any Service's ClusterIP (its own included),
  - any Node's address (status.addresses),
  - an address ovsctl keeps for itself (the node-port and hairpin addresses, fd00:ffff::/96),
  - link-local, loopback, multicast or unspecified,
  - (spec.externalIPs only) outside `external_ip_cidrs` when that allowlist is set.
Two Services claiming the same address, port and protocol: the one created first (oldest
metadata.creationTimestamp, then namespace/name) owns it on every node; the other's frontend
for that address:port is left out (logged once). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace

import netaddr

from flows.model import (
    HAIRPIN_IP,
    HAIRPIN_IP6,
    NODEPORT_IP,
    NODEPORT_IP6,
    NODEPORT_LOCAL_IP,
    NODEPORT_LOCAL_IP6,
)
from flows.service_model import Service

RESERVED_CIDRS = ("fd00:ffff::/96", "169.254.169.0/24")
RESERVED_IPS = (
    HAIRPIN_IP,
    HAIRPIN_IP6,
    NODEPORT_IP,
    NODEPORT_LOCAL_IP,
    NODEPORT_IP6,
    NODEPORT_LOCAL_IP6,
)
EXTERNAL_IPS = "spec.externalIPs"
LB_INGRESS = "status.loadBalancer.ingress"


@dataclass(frozen=True)
class Facts:
    """What the cluster holds that no Service may take: pod CIDRs (the cluster's and every
    Node's), every Service's ClusterIPs, every Node's addresses; and the operator's allowlist
    for externalIPs (empty: any address not refused otherwise)."""

    pod_cidrs: tuple[str, ...] = ()
    cluster_ips: frozenset[str] = frozenset()
    node_addrs: frozenset[str] = frozenset()
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What one Service loses: addresses refused ((field, address, why)) and frontends that
    another Service owns ((address, port, protocol, owner "namespace/name"))."""

    refused: tuple[tuple[str, str, str], ...] = ()
    lost: tuple[tuple[str, int, str, str], ...] = ()

    @property
    def lost_frontends(self) -> frozenset[tuple[str, int, str]]:
        return frozenset((a, p, proto) for a, p, proto, _ in self.lost)

    def messages(self, ref: str) -> list[str]:
        out = [
            f"Service {ref}: {field} {addr} refused ({why}): not programmed, not routed"
            for field, addr, why in self.refused
        ]
        out += [
            f"Service {ref}: {addr}:{port}/{proto} is already Service {owner}'s (created "
            "first): this Service's frontend for it is not programmed"
            for addr, port, proto, owner in self.lost
        ]
        return out


def _nets(cidrs) -> list[netaddr.IPNetwork]:
    out = []
    for c in cidrs:
        try:
            out.append(netaddr.IPNetwork(c))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            continue
    return out


def refusal(addr: str, field: str, facts: Facts) -> str | None:
    """Why `addr` may not be an external address of a Service (None: it may)."""
    ip = netaddr.IPAddress(addr)
    if ip.is_loopback():
        return "a loopback address"
    if ip.is_multicast():
        return "a multicast address"
    if int(ip) == 0:
        return "the unspecified address"
    if addr in RESERVED_IPS or any(ip in n for n in _nets(RESERVED_CIDRS)):
        return "an address ovsctl reserves (node ports, hairpin)"
    if ip.is_link_local() or ip in netaddr.IPNetwork("169.254.0.0/16"):
        return "a link-local address"
    if addr in facts.node_addrs:
        return "a Node's address"
    if addr in facts.cluster_ips:
        return "a Service's ClusterIP"
    if any(ip in n for n in _nets(facts.pod_cidrs) if n.version == ip.version):
        return "inside the pod CIDRs"
    if field == EXTERNAL_IPS and facts.allowed:
        if not any(ip in n for n in _nets(facts.allowed) if n.version == ip.version):
            return f"outside external_ip_cidrs ({', '.join(facts.allowed)})"
    return None


def _order(created: str, svc: Service) -> tuple:
    # oldest first; a Service without a timestamp after those with one
    return (0 if created else 1, created, svc.namespace, svc.name)


def screen(services: list[tuple[Service, str]], facts: Facts) -> dict[str, Verdict]:
    """Verdict of every Service (by "namespace/name") that loses something; `services` are
    (Service, metadata.creationTimestamp) pairs. The same on every node for the same state,
    whatever the order of `services`."""
    refused: dict[str, list] = {}
    claims: dict[tuple[str, int, str], list] = {}
    for svc, _created in sorted(services, key=lambda sc: _order(sc[1], sc[0])):
        lb = svc.lb_ingress if svc.type == "LoadBalancer" else ()
        kept = []
        for field, addrs in ((LB_INGRESS, lb), (EXTERNAL_IPS, svc.external_ips)):
            for addr in addrs:
                why = refusal(addr, field, facts)
                if why is not None:
                    refused.setdefault(svc.key, []).append((field, addr, why))
                else:
                    kept.append(addr)
        for addr in dict.fromkeys(kept):
            for sp in svc.ports:
                claims.setdefault((addr, sp.port, sp.protocol), []).append(svc.key)
    lost: dict[str, list] = {}
    for (addr, port, proto), keys in claims.items():
        owner = keys[0]
        for key in dict.fromkeys(keys[1:]):
            if key != owner:
                lost.setdefault(key, []).append((addr, port, proto, owner))
    return {
        key: Verdict(tuple(refused.get(key, ())), tuple(sorted(lost.get(key, ()))))
        for key in set(refused) | set(lost)
    }


def apply(svc: Service, verdict: Verdict | None) -> Service:
    """The Service without its refused addresses (so they get neither frontends nor host
    routes)."""
    if verdict is None or not verdict.refused:
        return svc
    gone = {(f, a) for f, a, _ in verdict.refused}
    return replace(
        svc,
        external_ips=tuple(a for a in svc.external_ips if (EXTERNAL_IPS, a) not in gone),
        lb_ingress=tuple(a for a in svc.lb_ingress if (LB_INGRESS, a) not in gone),
    )
