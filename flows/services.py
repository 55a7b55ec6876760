"""Services (ClusterIP, NodePort, LoadBalancer, externalIPs) as flows: load-balancing in OVS,
no kube-proxy. The Service and Endpoint values and their parsing are in flows/service_model.py
(re-exported here).

For each Service port with endpoints, on every node, one *frontend* per address the port is
reached at (the ClusterIP, and for NodePort the node-port address the host DNATs to):

    ServiceLB     proto,nw_dst=FRONT,tp_dst=PORT -> multipath(hrw) into reg3, goto EndpointDNAT
    EndpointDNAT  proto,reg3=i,nw_dst=FRONT,tp_dst=PORT -> ct(commit,nat(dst=EP_i:TARGET_i)), on
                  to the policy tables, which see the endpoint's address (NetworkPolicy applies
                  after DNAT)

Replies are un-NATed by the Conntrack stage (`ct(nat)`), which also keeps an existing
connection on its endpoint however the endpoint list changes: only new connections move.

NodePort: the host DNATs nodeIP:nodePort to NODEPORT_IP:nodePort (externalTrafficPolicy
Cluster) or NODEPORT_LOCAL_IP:nodePort (Local) and routes it into br-int. Cluster frontends
mark the connection (ct_mark SNAT_MARK) so the pipeline SNATs it to the gateway IP (replies
from a remote endpoint come back through this node); Local frontends use this node's endpoints
only and keep the client's IP.

sessionAffinity ClientIP: ServiceLB first resubmits to SessionAffinity, where the switch has
learned (client IP, frontend, port) -> endpoint IP/port into reg4/reg5 with reg0[5] set;
EndpointDNAT prefers such a hit (higher priority) over the hashed index, and every new
connection through the index flows learns (idle timeout = the Service's timeoutSeconds, hits
by new connections keep it alive, as kube-proxy's "recent" match does). Learned flows carry a
cookie per (frontend, endpoint) and go with the last flow that learns them (delete_learned):
an endpoint that leaves takes its clients' affinity with it.

IPv6 and dual-stack: a Service has one ClusterIP per family (spec.clusterIPs, in the order of
spec.ipFamilies; clusterIP is the first). Each ClusterIP gets its own frontends, load-balanced
to the endpoints of its family only (EndpointSlices of addressType IPv4 / IPv6, or the pods'
address of that family); NodePort gets one frontend per family the Service has, at
NODEPORT_IP6 / NODEPORT_LOCAL_IP6 for IPv6 (the host DNATs nodeIPv6:nodePort there). Session
affinity for IPv6 remembers the endpoint's whole 128-bit address in xxreg2 (reg8..reg11,
reg8 the most significant word; the port in reg5 as for IPv4): an exact address survives
endpoint churn, which an index into the endpoint list would not. IPv4 flows are unchanged.

External addresses (status.loadBalancer.ingress[].ip of a type LoadBalancer Service, and
spec.externalIPs) are frontends matched directly (the host routes each into br-int through
the gateway). Each has two: for every client (priority 200, as a ClusterIP: pods) and, above
it, for clients that came in through the gateway (reg0 PKT_SOURCE FROM_GATEWAY, 210 in
ServiceLB; 220/230 in EndpointDNAT, above every in-cluster flow): externalTrafficPolicy Cluster
every usable endpoint with SNAT_MARK, Local this node's only (none here: drop). With
loadBalancerSourceRanges a LoadBalancer address's frontends match each (merged) range of its
family as nw_src / ipv6_src, and a flow below them (190) drops the rest of address:port.

Endpoint choice: a ClusterIP with internalTrafficPolicy Local uses this node's endpoints only
(none: refused); otherwise trafficDistribution prefers the close ones (`distributed`), as do
the in-cluster external frontends; node-port and gateway frontends ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows import cookie, owners, regs
from flows.family import V4, V6, Family, family, of_version
from flows.flow import (
    CT,
    Flow,
    Goto,
    Learn,
    MeteredController,
    Multipath,
    Resubmit,
    flow,
    nat_target,
)
from flows.model import SNAT_MARK, first_host, nodeport_ips
from flows.pipeline import CT_ZONE
from flows.service_model import (
    DEFAULT_AFFINITY_TIMEOUT,
    MAX_AFFINITY_TIMEOUT,
    MAX_LEARN_TIMEOUT,
    SERVICE_TYPES,
    TRAFFIC_DISTRIBUTIONS,
    Endpoint,
    Service,
    ServiceError,
    ServicePort,
    endpoint_nodes,
    endpoints_from_pods,
    endpoints_from_slices,
    parse_service,
    usable,
)

PRIO_SERVICE = 200
# Packets to a Service without endpoints go to the agent, which answers TCP RST / ICMP port
# unreachable: through an OpenFlow meter (the agent installs it), so a client flooding such a
# Service cannot flood the agent's OpenFlow connection (its barrier replies would queue behind
# the packet-ins and every flow update would stall).
REJECT_METER = 2
REJECT_RATE = 100  # packets/s
REJECT = MeteredController(REJECT_METER, 256)  # headers are enough for the answer
PRIO_AFFINITY = 210
# External frontends (LoadBalancer ingress, externalIPs) reached from the gateway (clients
# outside the cluster): ServiceLB above the in-cluster frontend of the same address; their
# EndpointDNAT flows above every in-cluster one, so a packet from the gateway never takes an
# in-cluster frontend's endpoint (its affinity flows included).
PRIO_EXTERNAL = 210
PRIO_EXTERNAL_DNAT = 220
PRIO_EXTERNAL_AFFINITY = 230
# externalTrafficPolicy Local: the node's own processes (and hostNetwork pods) reach an external
# address through the gateway with the gateway's address as their source; they are in-cluster
# clients (kube-proxy sends node-local traffic cluster-wide): their frontend, above the
# gateway's, matches that source (PRIO_EXTERNAL + PRIO_HOST_BUMP, and so on)
PRIO_HOST_BUMP = 5
# loadBalancerSourceRanges: the frontends match each range's sources; below them, the rest of
# the address:port is dropped
PRIO_SOURCE_DROP = 190
# symmetric_l4 hashes TCP and SCTP ports but not UDP's; symmetric_l3l4+udp adds UDP ports.
HASH_FIELDS = {"tcp": "symmetric_l4", "sctp": "symmetric_l4", "udp": "symmetric_l3l4+udp"}


@dataclass(frozen=True)
class Here:
    """This node as a Service's flows see it: its pod CIDRs, its name and its zone (the label
    topology.kubernetes.io/zone of its Node)."""

    nets: tuple = ()  # netaddr.IPNetwork per pod CIDR
    name: str = ""
    zone: str = ""

    def local(self, ep: Endpoint) -> bool:
        """The endpoint runs on this node: its address is in a pod CIDR of this node, or its
        EndpointSlice (its pod) names this node."""
        if self.name and ep.node_name == self.name:
            return True
        return any(ep.ip in n for n in self.nets)

    def near(self, ep: Endpoint) -> bool:
        """The endpoint is in this node's zone: its hints.forZones name it, or, without zone
        hints, its zone is this node's."""
        if not self.zone:
            return False
        return self.zone in ep.for_zones if ep.for_zones else ep.zone == self.zone

    def same_node(self, ep: Endpoint) -> bool:
        """hints.forNodes names this node, or, without node hints, it runs here."""
        return self.name in ep.for_nodes if ep.for_nodes else self.local(ep)


def service_owner(svc: Service) -> str:
    return owners.Service(svc.namespace, svc.name).key


def _port_of(sp: ServicePort, ep: Endpoint) -> int | None:
    match = [p for p in ep.ports if p[0] == sp.name and p[2] == sp.protocol]
    return match[0][1] if match else None


def _backends(sp: ServicePort, endpoints: list[Endpoint]) -> list[tuple[str, int]]:
    """(IP, port) of the endpoints chosen for a frontend, each once, sorted."""
    return sorted({(ep.ip, _port_of(sp, ep)) for ep in endpoints})


def _nets(local_cidr) -> list:
    if not local_cidr:
        return []
    cidrs = (local_cidr,) if isinstance(local_cidr, str) else tuple(local_cidr)
    return [netaddr.IPNetwork(c) for c in cidrs if c]


def _node_families(svc: Service, nets: list) -> tuple[Family, ...]:
    """The families whose NodePort and external frontends a node has: the Service's, less
    those the node has no pod CIDR of (an IPv4-only node serves no IPv6 node port); all of them
    when the node's CIDRs are not given."""
    node = {of_version(n.version) for n in nets}
    return tuple(f for f in svc.families or (V4,) if not node or f in node)


def distributed(svc: Service, endpoints: list[Endpoint], here: Here) -> list[Endpoint]:
    """The endpoints an in-cluster client on this node may reach (trafficDistribution): the
    usable ones close to it — PreferClose / PreferSameZone: in its zone; PreferSameNode: on
    it, else in its zone (as kube-proxy falls back to zone hints) — or, when none is close,
    every usable endpoint."""
    every = usable(endpoints)
    td = svc.traffic_distribution
    if td not in TRAFFIC_DISTRIBUTIONS:
        return every
    if td == "PreferSameNode":
        mine = [ep for ep in every if here.same_node(ep)]
        if mine:
            return mine
    return [ep for ep in every if here.near(ep)] or every


def internal(svc: Service, endpoints: list[Endpoint], here: Here) -> list[Endpoint]:
    """The endpoints of a ClusterIP frontend: internalTrafficPolicy Local, this node's only
    (none: refused; it wins over trafficDistribution); Cluster, `distributed`."""
    if svc.internal_local:
        return usable([ep for ep in endpoints if here.local(ep)])
    return distributed(svc, endpoints, here)


def service_flows(
    svc: Service,
    endpoints: list[Endpoint],
    local_cidr: str | tuple[str, ...] | None = None,
    node_name: str = "",
    zone: str = "",
    excluded: frozenset = frozenset(),
) -> frozenset[Flow]:
    """The flows of one Service (all its ports and frontends) on a node whose pods are in
    `local_cidr` (one CIDR, or one per family: which endpoints are local, which families'
    node ports and external addresses the node serves), named `node_name` (EndpointSlice
    nodeName: local endpoints) in zone `zone` (trafficDistribution). Each ClusterIP and
    external address is load-balanced to the endpoints of its own family. `excluded`:
    external frontends (address, port, protocol) left out (another Service owns them)."""
    ck = cookie.make("service", service_owner(svc))
    nets = _nets(local_cidr)
    here = Here(tuple(nets), node_name, zone)
    fams = _node_families(svc, nets)
    out: set[Flow] = set()
    for sp in svc.ports:
        serving = [ep for ep in endpoints if _port_of(sp, ep) is not None]
        by_fam = {f: [ep for ep in serving if family(ep.ip) is f] for f in (V4, V6)}
        for cip in svc.cluster_ips:
            chosen = internal(svc, by_fam[family(cip)], here)
            out |= _frontend(svc, sp, cip, sp.port, _backends(sp, chosen), ck)
        for addr in svc.external_addrs:
            if family(addr) in fams and (addr, sp.port, sp.protocol) not in excluded:
                out |= _external(svc, sp, addr, by_fam[family(addr)], here, ck)
        if not (sp.node_port and svc.has_node_ports):
            continue
        for fam in fams:
            every = _backends(sp, usable(by_fam[fam]))
            cluster_ip, local_ip = nodeport_ips(fam)
            if svc.external_local:
                local = usable([ep for ep in by_fam[fam] if here.local(ep)])
                # Local with endpoints elsewhere only: drop, as kube-proxy does (a load
                # balancer's health check steers clients to nodes that have one).
                out |= _frontend(
                    svc,
                    sp,
                    local_ip,
                    sp.node_port,
                    _backends(sp, local),
                    ck,
                    none_drops=bool(every),
                )
            else:
                out |= _frontend(svc, sp, cluster_ip, sp.node_port, every, ck, SNAT_MARK)
    return frozenset(out)


def _external(
    svc: Service, sp: ServicePort, addr: str, eps: list[Endpoint], here: Here, ck: int
) -> set[Flow]:
    """An external address (LoadBalancer ingress IP, externalIP) of one port: from pods, like
    a ClusterIP (trafficDistribution, no SNAT); from the gateway (clients outside the cluster,
    routed in by the host), externalTrafficPolicy Cluster: every usable endpoint, SNATed to the
    gateway (SNAT_MARK); Local: this node's endpoints only, the client's IP kept, none here
    (but elsewhere): dropped. A LoadBalancer address with loadBalancerSourceRanges admits only
    their sources (each frontend flow per merged range of the address's family; the rest of
    the address:port dropped below them)."""
    fam = family(addr)
    srcs: tuple[str | None, ...] = (None,)
    out: set[Flow] = set()
    if svc.source_ranges and addr in svc.lb_ingress and svc.type == "LoadBalancer":
        ranges = svc.source_ranges_of(fam)
        srcs = tuple(str(n) for n in netaddr.cidr_merge(ranges))
        base = {"protocol": fam.proto(sp.protocol.lower()), fam.dst: addr, "tp_dst": sp.port}
        out.add(flow("ServiceLB", PRIO_SOURCE_DROP, base, (), ck))
    pods = _backends(sp, distributed(svc, eps, here))
    every = usable(eps)
    if svc.external_local:
        gw, mark = _backends(sp, usable([ep for ep in eps if here.local(ep)])), None
    else:
        gw, mark = _backends(sp, every), SNAT_MARK
    for src in srcs:
        out |= _frontend(svc, sp, addr, sp.port, pods, ck, src=src)
        out |= _frontend(
            svc, sp, addr, sp.port, gw, ck, mark, none_drops=bool(every), src=src, gateway=True
        )
    if svc.external_local and src_ok(srcs, here, fam):
        for host in (first_host(str(n)) for n in here.nets if of_version(n.version) is fam):
            out |= _frontend(svc, sp, addr, sp.port, pods, ck, gateway=True, host=host)
    return out


def src_ok(srcs, here: Here, fam: Family) -> bool:
    """Whether the node's own (gateway) source may use the frontend: always without
    loadBalancerSourceRanges, else only when a range holds it."""
    if srcs == (None,):
        return True
    hosts = [first_host(str(n)) for n in here.nets if of_version(n.version) is fam]
    return any(h in netaddr.IPNetwork(r) for r in srcs if r for h in hosts)


def _affinity_loads(ep_ip: str) -> tuple[tuple[int, str, int], ...]:
    """What a learned SessionAffinity flow loads to remember the endpoint's address: reg4 for
    IPv4; xxreg2 (reg8..reg11, most significant word first) for IPv6."""
    if family(ep_ip) is V4:
        return (
            (int(netaddr.IPAddress(ep_ip)), f"reg{regs.AFFINITY_IP.reg}", regs.AFFINITY_IP.mask),
        )
    return tuple(
        (word, f"reg{field.reg}", field.mask)
        for word, field in zip(_words(ep_ip), regs.AFFINITY_IP6, strict=True)
    )


def _affinity_match(ep_ip: str) -> dict:
    if family(ep_ip) is V4:
        reg, val = regs.AFFINITY_IP.match(int(netaddr.IPAddress(ep_ip)))
        return {reg: val}
    return dict(
        field.match(word) for word, field in zip(_words(ep_ip), regs.AFFINITY_IP6, strict=True)
    )


def _words(ip6: str) -> tuple[int, int, int, int]:
    n = int(netaddr.IPAddress(ip6))
    return tuple((n >> shift) & 0xFFFFFFFF for shift in (96, 64, 32, 0))


def _frontend(
    svc: Service,
    sp: ServicePort,
    ip: str,
    port: int,
    backends: list[tuple[str, int]],
    ck: int,
    mark: int | None = None,
    none_drops: bool = False,
    src: str | None = None,
    gateway: bool = False,
    host: str | None = None,
) -> set[Flow]:
    """ServiceLB and EndpointDNAT flows of one frontend (address:port): for every client, or,
    `gateway`, for those that came in through the gateway (their flows above the others';
    `src`: only from that source CIDR, loadBalancerSourceRanges)."""
    fam = family(ip)
    proto = sp.protocol.lower()
    base = {"protocol": fam.proto(proto), fam.dst: ip, "tp_dst": port}
    prio_lb, prio_dnat, prio_aff = PRIO_SERVICE, PRIO_SERVICE, PRIO_AFFINITY
    if gateway:
        gw_reg, gw_val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
        base[gw_reg] = gw_val
        prio_lb, prio_dnat, prio_aff = PRIO_EXTERNAL, PRIO_EXTERNAL_DNAT, PRIO_EXTERNAL_AFFINITY
        if host is not None:  # the node's own source: its own frontend above the gateway's
            base[fam.src] = host
            prio_lb, prio_dnat, prio_aff = (
                p + PRIO_HOST_BUMP for p in (prio_lb, prio_dnat, prio_aff)
            )
    lb_match = base if src is None else {**base, fam.src: src}
    if not backends:
        # No endpoint: the agent answers as kube-proxy's REJECT does (TCP RST, ICMP port
        # unreachable; ICMPv6 port unreachable for IPv6), so clients fail at once instead of
        # hanging.
        return {flow("ServiceLB", prio_lb, lb_match, () if none_drops else (REJECT,), ck)}
    lb = (Multipath(len(backends), f"reg{regs.ENDPOINT.reg}", fields=HASH_FIELDS[proto]),)
    if svc.affinity_timeout:
        lb = (Resubmit("SessionAffinity"), *lb)
    out = {flow("ServiceLB", prio_lb, lb_match, (*lb, Goto("EndpointDNAT")), ck)}
    aff_reg, aff_val = regs.AFFINITY.match(1)
    for i, (ep_ip, ep_port) in enumerate(backends):
        dnat = CT(
            CT_ZONE,
            table="HairpinSNAT",
            commit=True,
            nat=f"dst={nat_target(ep_ip, ep_port)}",
            mark=mark,
        )
        reg, val = regs.ENDPOINT.match(i)
        if not svc.affinity_timeout:
            out.add(flow("EndpointDNAT", prio_dnat, {**base, reg: val}, (dnat,), ck))
            continue
        learn = Learn(
            table="SessionAffinity",
            protocol=proto,
            idle_timeout=affinity_idle_timeout(svc),
            priority=PRIO_SERVICE,
            cookie=cookie.make(
                "affinity",
                f"{service_owner(svc)} {nat_target(ip, port)}/{proto} {nat_target(ep_ip, ep_port)}",
            ),
            loads=(
                *_affinity_loads(ep_ip),
                (ep_port, f"reg{regs.AFFINITY_PORT.reg}", regs.AFFINITY_PORT.mask),
                (1, f"reg{regs.AFFINITY.reg}", regs.AFFINITY.mask),
            ),
            version=fam.version,
        )
        # the hashed pick (no affinity yet, or its endpoint is gone): remember it
        out.add(flow("EndpointDNAT", prio_dnat, {**base, reg: val}, (learn, dnat), ck))
        # the client's remembered endpoint (while it is still one)
        port_reg, port_val = regs.AFFINITY_PORT.match(ep_port)
        out.add(
            flow(
                "EndpointDNAT",
                prio_aff,
                {**_with(base, aff_reg, aff_val), **_affinity_match(ep_ip), port_reg: port_val},
                (dnat,),
                ck,
            )
        )
    return out


def _with(match: dict, reg: str, value: str) -> dict:
    """`match` with one more value/mask on a register: bits of a register it already matches
    (reg0's packet source and affinity bits) are combined into one value/mask."""
    if reg not in match:
        return {**match, reg: value}
    v1, m1 = (int(x, 16) for x in match[reg].split("/"))
    v2, m2 = (int(x, 16) for x in value.split("/"))
    if m1 & m2:
        raise ValueError(f"{reg}: masks {m1:#x} and {m2:#x} overlap")
    return {**match, reg: f"{v1 | v2:#x}/{m1 | m2:#x}"}


def affinity_idle_timeout(svc: Service) -> int:
    """The learned flows' idle timeout: timeoutSeconds, capped at MAX_LEARN_TIMEOUT (65535 s,
    learn's 16-bit field; the API allows up to 86400)."""
    return min(svc.affinity_timeout or 0, MAX_LEARN_TIMEOUT)


def node_port_entries(
    svc: Service, local_cidr: str | tuple[str, ...] | None = None
) -> set[tuple[str, int, str]]:
    """(protocol, nodePort, address the host DNATs it to) for the host's NodePort rules: one
    per port and family of the Service (NODEPORT_IP6 / NODEPORT_LOCAL_IP6 for IPv6), less the
    families the node (its pod CIDRs `local_cidr`, when given) has no address of."""
    if not svc.has_node_ports:
        return set()
    out = set()
    for fam in _node_families(svc, _nets(local_cidr)):
        cluster_ip, local_ip = nodeport_ips(fam)
        target = local_ip if svc.external_local else cluster_ip
        out |= {(sp.protocol.lower(), sp.node_port, target) for sp in svc.ports if sp.node_port}
    return out


def external_addresses(svc: Service, local_cidr: str | tuple[str, ...] | None = None) -> set[str]:
    """The external addresses (LoadBalancer ingress IPs, externalIPs) the host routes into
    br-int through the gateway for this Service: those of a family the node (its pod CIDRs
    `local_cidr`, when given) serves, whether or not the Service has ports or endpoints (then
    br-int answers or drops, rather than the host forwarding them somewhere else)."""
    fams = _node_families(svc, _nets(local_cidr))
    return {a for a in svc.external_addrs if family(a) in fams}


__all__ = [
    "DEFAULT_AFFINITY_TIMEOUT",
    "MAX_AFFINITY_TIMEOUT",
    "MAX_LEARN_TIMEOUT",
    "SERVICE_TYPES",
    "Endpoint",
    "Here",
    "Service",
    "ServiceError",
    "ServicePort",
    "affinity_idle_timeout",
    "distributed",
    "endpoint_nodes",
    "endpoints_from_pods",
    "endpoints_from_slices",
    "external_addresses",
    "internal",
    "node_port_entries",
    "parse_service",
    "service_flows",
    "usable",
]
