"""ovsctl's own LoadBalancer addresses (`spec.loadBalancerClass: ovsctl.io/lb`), as pure
functions every agent computes alike from the same cluster state:

- the pool (`lb_pool` in the agent config: ranges "A-B" and CIDRs, both families);
- the allocation of pool addresses to Services (each Service of the class keeps the pool
  addresses already in its status, the oldest claimant of an address winning; then, in
  namespace/name order, each gets the lowest free address of each family it still lacks);
- the writer of the allocation (the lowest-named Ready node's agent);
- the holder of each address (rendezvous hash of (address, node name) over the eligible nodes:
  Ready ones of the address's family, and with externalTrafficPolicy Local only those with a
  ready local endpoint), the one node that answers ARP / Neighbor Solicitation for it.

No I/O here: lbannounce.py applies the answers on the host and writes the status."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import netaddr

# the pool's syntax is part of the agent's config (validated when the config is read)
from ovsctl.config import PoolError, Range, parse_pool  # noqa: F401 - re-exported

LB_CLASS = "ovsctl.io/lb"
FAMILY_VERSIONS = {"IPv4": 4, "IPv6": 6}


def in_pool(pool, addr: str) -> bool:
    try:
        ip = netaddr.IPAddress(addr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False
    return any(ip in r for r in pool)


@dataclass(frozen=True)
class LBService:
    """What the allocation needs of a Service (from its raw object: no full parse, so one
    Service that does not parse never stops the others' allocation)."""

    key: str  # namespace/name
    type: str
    lb_class: str | None
    ingress: tuple[str, ...]  # status.loadBalancer.ingress[].ip, canonical
    versions: tuple[int, ...]  # its IP families (4, 6), primary first
    external_ips: tuple[str, ...] = ()
    created: str = ""  # metadata.creationTimestamp (RFC 3339: sorts as it reads)

    @property
    def ours(self) -> bool:
        return self.type == "LoadBalancer" and self.lb_class == LB_CLASS


def _canonical(values) -> tuple[str, ...]:
    out = []
    for v in values if isinstance(values, list) else ():
        try:
            out.append(str(netaddr.IPAddress(v)))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            continue  # the Service's own parse names it; the allocation skips it
    return tuple(out)


def lb_service(body: dict) -> LBService:
    """An LBService from a Service object (a dict as the API gives it); malformed fields are
    read as absent."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    status = body.get("status") if isinstance(body.get("status"), dict) else {}
    lb = status.get("loadBalancer") if isinstance(status.get("loadBalancer"), dict) else {}
    ing = lb.get("ingress") if isinstance(lb.get("ingress"), list) else []
    ingress = _canonical([e.get("ip") for e in ing if isinstance(e, dict) and e.get("ip")])
    fams = spec.get("ipFamilies") if isinstance(spec.get("ipFamilies"), list) else []
    versions = tuple(dict.fromkeys(FAMILY_VERSIONS[f] for f in fams if f in FAMILY_VERSIONS))
    if not versions:
        ips = spec.get("clusterIPs") if isinstance(spec.get("clusterIPs"), list) else []
        ips = _canonical(ips or [spec.get("clusterIP")])
        versions = tuple(dict.fromkeys(netaddr.IPAddress(a).version for a in ips)) or (4,)
    cls = spec.get("loadBalancerClass")
    return LBService(
        key=f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}",
        type=str(spec.get("type") or "ClusterIP"),
        lb_class=cls if isinstance(cls, str) else None,
        ingress=ingress,
        versions=versions,
        external_ips=_canonical(spec.get("externalIPs")),
        created=str(meta.get("creationTimestamp") or ""),
    )


def _claim_order(s: LBService):
    # the oldest first (no timestamp: last), then namespace/name
    return (s.created or "~", s.key)


def allocate(svcs, pool, notes: list | None = None) -> dict[str, tuple[str, ...]]:
    """The addresses of every Service of the class `ovsctl.io/lb` (type LoadBalancer), by
    "namespace/name". First each keeps the addresses of its status that are inside the pool
    (an address outside it is not ours to give: dropped), oldest Service first
    (creationTimestamp, then namespace/name), so of two Services claiming one address the
    first claimant keeps it and the other gets a new one; pool addresses in the status of
    Services of other classes stay used too. Then, in namespace/name order, each family of a
    Service without an address gets the lowest free pool address. spec.externalIPs reserve
    nothing (one Service listing the whole pool would starve every other). Every agent
    computes the same answer. A family the pool lacks, or a pool that ran out, leaves that
    family without an address. `notes` (if given) collects ("namespace/name", message) for
    what the allocation dropped or could not give (the caller logs them)."""
    note = notes.append if notes is not None else (lambda _: None)
    used: set[int] = set()
    kept: dict[str, list[str]] = {}
    for s in sorted((s for s in svcs if s.ours), key=_claim_order):
        kept[s.key] = []
        for a in s.ingress:
            if not in_pool(pool, a):
                note((s.key, f"status.loadBalancer.ingress {a} is outside lb_pool: dropped"))
            elif int(netaddr.IPAddress(a)) in used:
                note((s.key, f"status.loadBalancer.ingress {a} is held by an older Service: "
                             "reallocated"))  # fmt: skip
            else:
                used.add(int(netaddr.IPAddress(a)))
                kept[s.key].append(a)
    for s in svcs:
        inside = [a for a in s.external_ips if in_pool(pool, a)]
        if inside:
            note((s.key, f"spec.externalIPs {', '.join(inside)} inside lb_pool reserve nothing"))
        if not s.ours:
            used.update(int(netaddr.IPAddress(a)) for a in s.ingress if in_pool(pool, a))
    out: dict[str, tuple[str, ...]] = {}
    for s in sorted((s for s in svcs if s.ours), key=lambda s: s.key):
        addrs = kept[s.key]
        have = {netaddr.IPAddress(a).version for a in addrs}
        for v in s.versions:
            if v in have:
                continue
            free = _lowest_free(pool, v, used)
            if free is not None:
                used.add(int(free))
                addrs.append(str(free))
            elif any(r.version == v for r in pool):
                note((s.key, f"lb_pool has no free IPv{v} address left"))
        out[s.key] = tuple(addrs)
    return out


def _lowest_free(pool, version: int, used: set[int]) -> netaddr.IPAddress | None:
    for r in pool:
        if r.version != version:
            continue
        n = r.first
        while n <= r.last:
            if n not in used:
                return netaddr.IPAddress(n, version)
            n += 1
    return None


def status_patches(svcs, pool, notes: list | None = None) -> dict[str, tuple[str, ...]]:
    """What the writer must put in status.loadBalancer.ingress, by "namespace/name": the
    allocation of each Service of the class whose status differs from it, and, for a Service
    whose type is no longer LoadBalancer but whose status still holds pool addresses, its
    status without them (they go back to the pool). A Service of type LoadBalancer of
    another class is never written (its loadBalancerClass cannot change while it is of that
    type; its status is its own allocator's, even with addresses inside our pool)."""
    by_key = {s.key: s for s in svcs}
    alloc = allocate(svcs, pool, notes)
    out = {k: a for k, a in alloc.items() if a != by_key[k].ingress}
    for s in svcs:
        if s.type != "LoadBalancer" and any(in_pool(pool, a) for a in s.ingress):
            out[s.key] = tuple(a for a in s.ingress if not in_pool(pool, a))
    return out


def writer(ready_nodes) -> str | None:
    """The node whose agent writes the allocation: the lowest-named Ready node."""
    return min(ready_nodes, default=None)


def score(addr: str, node: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{addr}|{node}".encode(), digest_size=8).digest())


def holder(addr: str, eligible) -> str | None:
    """Rendezvous (highest random weight) hashing: the eligible node with the highest
    blake2b(address|node) wins (ties: the lower name). A node leaving moves only the addresses
    it held; a node joining takes only those it now scores highest on."""
    return max(sorted(eligible), key=lambda n: score(addr, n), default=None)


def holders(announced, ready_nodes: dict[str, set[int]]) -> dict[str, str | None]:
    """{address: holder or None} of the announced addresses. `announced`: (address,
    endpoint nodes or None) pairs, None meaning every node is eligible (externalTrafficPolicy
    Cluster), else the nodes with a ready local endpoint (Local). `ready_nodes`: each Ready
    node's address families (4, 6): only a node of the address's family may hold it."""
    out: dict[str, str | None] = {}
    for addr, ep_nodes in announced:
        v = netaddr.IPAddress(addr).version
        eligible = {n for n, vs in ready_nodes.items() if v in vs}
        if ep_nodes is not None:
            eligible &= set(ep_nodes)
        out[addr] = holder(addr, eligible)
    return out
