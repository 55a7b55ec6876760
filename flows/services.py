"""Services (ClusterIP, NodePort) as flows: load-balancing in OVS, no kube-proxy.

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
from flows.model import SNAT_MARK, nodeport_ips
from flows.pipeline import CT_ZONE

PRIO_SERVICE = 200
# Packets to a Service without endpoints go to the agent, which answers TCP RST / ICMP port
# unreachable: through an OpenFlow meter (the agent installs it), so a client flooding such a
# Service cannot flood the agent's OpenFlow connection (its barrier replies would queue behind
# the packet-ins and every flow update would stall).
REJECT_METER = 2
REJECT_RATE = 100  # packets/s
REJECT = MeteredController(REJECT_METER, 256)  # headers are enough for the answer
PRIO_AFFINITY = 210
# symmetric_l4 hashes TCP and SCTP ports but not UDP's; symmetric_l3l4+udp adds UDP ports.
HASH_FIELDS = {"tcp": "symmetric_l4", "sctp": "symmetric_l4", "udp": "symmetric_l3l4+udp"}
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as the API server defaults it
MAX_AFFINITY_TIMEOUT = 86400
# learn()'s idle_timeout is 16 bits in OpenFlow: longer affinity timeouts are clamped to ~18 h
MAX_LEARN_TIMEOUT = 0xFFFF


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str  # TCP, UDP, SCTP
    target_port: int | str  # a number or a container port name
    node_port: int | None = None


IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
FAMILY_NAMES = {"IPv4": V4, "IPv6": V6}


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None  # None for headless / not yet allocated; clusterIPs[0]
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...] | None  # None: endpoints come from EndpointSlices
    type: str = "ClusterIP"
    external_local: bool = False  # externalTrafficPolicy: Local
    affinity_timeout: int | None = None  # sessionAffinity ClientIP: seconds; None: no affinity
    # every ClusterIP (spec.clusterIPs: one per family, the primary first). Default: (cluster_ip,)
    cluster_ips: tuple[str, ...] = ()
    ip_family_policy: str = "SingleStack"

    def __post_init__(self):
        if not self.cluster_ips and self.cluster_ip:
            object.__setattr__(self, "cluster_ips", (self.cluster_ip,))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def has_node_ports(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer")

    @property
    def families(self) -> tuple[Family, ...]:
        """The families of its ClusterIPs, the primary first."""
        return tuple(family(ip) for ip in self.cluster_ips)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ports: tuple[tuple[str, int, str], ...]  # (port name, port, protocol), as in EndpointSlices
    ready: bool = True
    serving: bool = True
    terminating: bool = False


class ServiceError(ValueError):
    pass


def _int(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ServiceError(f"{what} must be an integer, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ServiceError(f"{what} must be an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise ServiceError(f"{what} must be in {lo}..{hi}, got {n}")
    return n


def _address(value, where: str) -> str:
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ServiceError(f"{where} {value!r} is not an IP address") from None


def _families(spec: dict, ref: str) -> tuple[Family, ...]:
    """spec.ipFamilies: one or two distinct families, "IPv4" / "IPv6", in order; () if unset."""
    fams = spec.get("ipFamilies")
    if fams in (None, []):
        return ()
    if not isinstance(fams, list) or len(fams) > 2:
        raise ServiceError(f"{ref}: spec.ipFamilies must be a list of one or two families")
    out = []
    for i, f in enumerate(fams):
        if f not in FAMILY_NAMES:
            raise ServiceError(f"{ref}: spec.ipFamilies[{i}] must be IPv4 or IPv6, got {f!r}")
        out.append(FAMILY_NAMES[f])
    if len(out) == 2 and out[0] is out[1]:
        raise ServiceError(f"{ref}: spec.ipFamilies lists {fams[0]} twice")
    return tuple(out)


def _cluster_ips(spec: dict, ref: str) -> tuple[tuple[str, ...], str]:
    """(ClusterIPs, ipFamilyPolicy) as the API server validates them: clusterIPs[0] is
    clusterIP; at most one address per family; each address of the family ipFamilies lists at
    its position; SingleStack has one address, RequireDualStack two."""
    policy = spec.get("ipFamilyPolicy")
    if policy in (None, ""):
        policy = None
    elif policy not in IP_FAMILY_POLICIES:
        raise ServiceError(
            f"{ref}: spec.ipFamilyPolicy must be one of {', '.join(IP_FAMILY_POLICIES)}, "
            f"got {policy!r}"
        )
    fams = _families(spec, ref)
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if ips is not None and not isinstance(ips, list):
        raise ServiceError(f"{ref}: spec.clusterIPs must be a list of addresses")
    ips = [a for a in ips or [] if a not in ("", None)]
    if ip in ("", None):
        ip = ips[0] if ips else None
    if ip in (None, "None"):
        if ips and ips != ["None"]:
            raise ServiceError(f"{ref}: spec.clusterIPs {ips} with clusterIP None (headless)")
        if len(fams) == 2 and policy == "SingleStack":
            raise ServiceError(f"{ref}: spec.ipFamilies has two families with SingleStack")
        return (), policy or ("SingleStack" if len(fams) < 2 else "RequireDualStack")
    primary = _address(ip, f"{ref}: spec.clusterIP")
    if not ips:
        ips = [ip]
    addrs = tuple(_address(a, f"{ref}: spec.clusterIPs[{i}]") for i, a in enumerate(ips))
    if addrs[0] != primary:
        raise ServiceError(f"{ref}: spec.clusterIPs[0] {ips[0]} is not spec.clusterIP {ip}")
    if len(addrs) > 2:
        raise ServiceError(f"{ref}: spec.clusterIPs has {len(addrs)} addresses (at most 2)")
    if len(addrs) == 2 and family(addrs[0]) is family(addrs[1]):
        raise ServiceError(f"{ref}: spec.clusterIPs {list(addrs)} are both {family(addrs[0])}")
    for i, a in enumerate(addrs):
        if i < len(fams) and family(a) is not fams[i]:
            raise ServiceError(
                f"{ref}: spec.clusterIPs[{i}] {a} is not of spec.ipFamilies[{i}] {fams[i]}"
            )
    if len(fams) > len(addrs) and policy in (None, "SingleStack", "RequireDualStack"):
        raise ServiceError(
            f"{ref}: spec.ipFamilies has {len(fams)} families but spec.clusterIPs "
            f"{len(addrs)} address"
        )
    if policy is None:
        policy = "SingleStack" if len(addrs) == 1 else "RequireDualStack"
    if policy == "SingleStack" and (len(addrs) > 1 or len(fams) > 1):
        raise ServiceError(f"{ref}: spec.ipFamilyPolicy SingleStack with two families")
    if policy == "RequireDualStack" and len(addrs) < 2:
        raise ServiceError(
            f"{ref}: spec.ipFamilyPolicy RequireDualStack needs two spec.clusterIPs, "
            f"has {list(addrs)}"
        )
    return addrs, policy


def parse_service(obj: dict) -> Service:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ns, name = meta.get("namespace") or "default", meta.get("name", "")
    ref = f"Service {ns}/{name}"
    stype = spec.get("type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        raise ServiceError(f"{ref}: spec.type must be one of {', '.join(SERVICE_TYPES)}")
    if stype == "ExternalName":
        ips, policy = (), "SingleStack"
    else:
        ips, policy = _cluster_ips(spec, ref)
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        if not isinstance(p, dict) or p.get("port") is None:
            raise ServiceError(f"{ref}: spec.ports[{i}].port is required")
        port = _int(p["port"], f"{ref}: spec.ports[{i}].port", 1, 65535)
        proto = p.get("protocol") or "TCP"
        if proto not in ("TCP", "UDP", "SCTP"):
            raise ServiceError(f"{ref}: spec.ports[{i}].protocol {proto!r}")
        target = p.get("targetPort")
        if target in (None, "", 0):
            target = port  # as the API server defaults it
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, int):
            target = _int(target, f"{ref}: spec.ports[{i}].targetPort", 1, 65535)
        node_port = None
        if p.get("nodePort") not in (None, 0) and stype in ("NodePort", "LoadBalancer"):
            node_port = _int(p["nodePort"], f"{ref}: spec.ports[{i}].nodePort", 1, 65535)
        ports.append(ServicePort(str(p.get("name") or ""), port, proto, target, node_port))
    sel = spec.get("selector")
    selector = (
        tuple(sorted((str(k), str(v)) for k, v in sel.items()))
        if isinstance(sel, dict) and sel
        else None
    )
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = _int(
            cfg.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT),
            f"{ref}: spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            1,
            MAX_AFFINITY_TIMEOUT,
        )
    elif spec.get("sessionAffinity") not in (None, "", "None"):
        raise ServiceError(f"{ref}: spec.sessionAffinity must be None or ClientIP")
    return Service(
        ns,
        name,
        ips[0] if ips else None,
        tuple(ports),
        selector,
        type=stype,
        external_local=spec.get("externalTrafficPolicy") == "Local",
        affinity_timeout=affinity,
        cluster_ips=ips,
        ip_family_policy=policy,
    )


def endpoints_from_slices(slices: list[dict], skipped: list[str] | None = None) -> list[Endpoint]:
    """The endpoints of a Service from its discovery.k8s.io/v1 EndpointSlices, with their
    conditions (an unset ready means ready, an unset serving means the value of ready).
    Slices of addressType IPv4 and IPv6 are read (each address must be of the slice's family).
    What cannot be programmed is left out and said in `skipped`: slices of addressType FQDN
    (or anything else), ports without a number (a null port means "all ports", which a
    ClusterIP cannot forward), addresses not of the slice's family."""
    skipped = [] if skipped is None else skipped
    out = []
    for k, sl in enumerate(slices):
        name = ((sl.get("metadata") or {}).get("name")) or f"#{k}"
        where = f"EndpointSlice {name}"
        atype = sl.get("addressType", "IPv4")
        if atype not in FAMILY_NAMES:
            skipped.append(f"{where}: addressType {atype!r} is not programmed (IPv4, IPv6 only)")
            continue
        version = FAMILY_NAMES[atype].version
        ports = []
        for i, p in enumerate(sl.get("ports") or []):
            if not isinstance(p, dict):
                skipped.append(f"{where}.ports[{i}]: not an object")
                continue
            port, proto = p.get("port"), p.get("protocol") or "TCP"
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                skipped.append(f"{where}.ports[{i}].port {port!r}: not a port number")
                continue
            if proto not in ("TCP", "UDP", "SCTP"):
                skipped.append(f"{where}.ports[{i}].protocol {proto!r}: not TCP, UDP or SCTP")
                continue
            ports.append((str(p.get("name") or ""), port, proto))
        for j, ep in enumerate(sl.get("endpoints") or []):
            if not isinstance(ep, dict):
                continue
            cond = ep.get("conditions") or {}
            terminating = cond.get("terminating") is True
            ready = cond.get("ready") is not False and not terminating
            serving = cond.get("serving", cond.get("ready")) is not False
            for addr in ep.get("addresses") or []:
                try:
                    ip = netaddr.IPAddress(addr, version=version)
                except (netaddr.AddrFormatError, ValueError, TypeError):
                    skipped.append(f"{where}.endpoints[{j}]: {addr!r} is not an {atype} address")
                    continue
                out.append(Endpoint(str(ip), tuple(ports), ready, serving, terminating))
    return out


def endpoints_from_pods(svc: Service, pods) -> list[Endpoint]:
    """The EndpointSlices the control plane would make from the selector (one per family of
    the Service's ClusterIPs): pods with an address of that family whose labels match, ready
    as their Ready condition says, terminating once deleted; each Service port's targetPort
    resolved against the pod (a named port the pod lacks is left out)."""
    if svc.selector is None:
        return []
    fams = svc.families
    out = []
    for p in pods:
        if p.namespace != svc.namespace or not p.ip:
            continue
        labels = p.label_dict()
        if any(labels.get(k) != v for k, v in svc.selector):
            continue
        ports = []
        for sp in svc.ports:
            target = sp.target_port
            if isinstance(target, str):
                target = p.named_port(target, sp.protocol)
                if target is None:
                    continue
            ports.append((sp.name, target, sp.protocol))
        ready = getattr(p, "ready", True)
        terminating = getattr(p, "terminating", False)
        ips = tuple(getattr(p, "ips", ()) or (p.ip,))
        addrs = [a for f in fams for a in ips if family(a) is f][: len(fams)] if fams else [p.ip]
        for ip in dict.fromkeys(addrs):
            out.append(Endpoint(ip, tuple(ports), ready and not terminating, ready, terminating))
    return out


def usable(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; when none is ready, the serving terminating ones (as kube-proxy does,
    so connections drain instead of failing during a rollout)."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def service_owner(svc: Service) -> str:
    return owners.Service(svc.namespace, svc.name).key


def _port_of(sp: ServicePort, ep: Endpoint) -> int | None:
    match = [p for p in ep.ports if p[0] == sp.name and p[2] == sp.protocol]
    return match[0][1] if match else None


def _backends(sp: ServicePort, endpoints: list[Endpoint]) -> list[tuple[str, int]]:
    """(IP, port) of the usable endpoints among those serving this Service port (the fallback
    to terminating endpoints is decided per port, and per node for Local)."""
    return sorted({(ep.ip, _port_of(sp, ep)) for ep in usable(endpoints)})


def _nets(local_cidr) -> list:
    if not local_cidr:
        return []
    cidrs = (local_cidr,) if isinstance(local_cidr, str) else tuple(local_cidr)
    return [netaddr.IPNetwork(c) for c in cidrs if c]


def _node_port_families(svc: Service, nets: list) -> tuple[Family, ...]:
    """The families whose NodePort frontends a node has: the Service's, less those the node
    has no pod CIDR of (an IPv4-only node serves no IPv6 node port); all of them when the node's
    CIDRs are not given."""
    node = {of_version(n.version) for n in nets}
    return tuple(f for f in svc.families or (V4,) if not node or f in node)


def service_flows(
    svc: Service, endpoints: list[Endpoint], local_cidr: str | tuple[str, ...] | None = None
) -> frozenset[Flow]:
    """The flows of one Service (all its ports and frontends) on a node whose pods are in
    `local_cidr` (one CIDR, or one per family; needed for externalTrafficPolicy Local, and
    to know which families' node ports the node serves). Each ClusterIP is load-balanced to
    the endpoints of its own family."""
    ck = cookie.make("service", service_owner(svc))
    nets = _nets(local_cidr)
    out: set[Flow] = set()
    for sp in svc.ports:
        serving = [ep for ep in endpoints if _port_of(sp, ep) is not None]
        by_fam = {f: [ep for ep in serving if family(ep.ip) is f] for f in (V4, V6)}
        for cip in svc.cluster_ips:
            backends = _backends(sp, by_fam[family(cip)])
            out |= _frontend(svc, sp, cip, sp.port, backends, ck)
        if not (sp.node_port and svc.has_node_ports):
            continue
        for fam in _node_port_families(svc, nets):
            backends = _backends(sp, by_fam[fam])
            cluster_ip, local_ip = nodeport_ips(fam)
            if svc.external_local:
                local = [ep for ep in by_fam[fam] if any(ep.ip in n for n in nets)]
                # Local with endpoints elsewhere only: drop, as kube-proxy does (a load
                # balancer's health check steers clients to nodes that have one).
                out |= _frontend(
                    svc,
                    sp,
                    local_ip,
                    sp.node_port,
                    _backends(sp, local),
                    ck,
                    none_drops=bool(backends),
                )
            else:
                out |= _frontend(svc, sp, cluster_ip, sp.node_port, backends, ck, SNAT_MARK)
    return frozenset(out)


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
) -> set[Flow]:
    fam = family(ip)
    proto = sp.protocol.lower()
    base = {"protocol": fam.proto(proto), fam.dst: ip, "tp_dst": port}
    if not backends:
        # No endpoint: the agent answers as kube-proxy's REJECT does (TCP RST, ICMP port
        # unreachable; ICMPv6 port unreachable for IPv6), so clients fail at once instead of
        # hanging.
        return {flow("ServiceLB", PRIO_SERVICE, base, () if none_drops else (REJECT,), ck)}
    lb = (Multipath(len(backends), f"reg{regs.ENDPOINT.reg}", fields=HASH_FIELDS[proto]),)
    if svc.affinity_timeout:
        lb = (Resubmit("SessionAffinity"), *lb)
    out = {flow("ServiceLB", PRIO_SERVICE, base, (*lb, Goto("EndpointDNAT")), ck)}
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
            out.add(flow("EndpointDNAT", PRIO_SERVICE, {**base, reg: val}, (dnat,), ck))
            continue
        learn = Learn(
            table="SessionAffinity",
            protocol=proto,
            idle_timeout=min(svc.affinity_timeout, MAX_LEARN_TIMEOUT),
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
        out.add(flow("EndpointDNAT", PRIO_SERVICE, {**base, reg: val}, (learn, dnat), ck))
        # the client's remembered endpoint (while it is still one)
        port_reg, port_val = regs.AFFINITY_PORT.match(ep_port)
        out.add(
            flow(
                "EndpointDNAT",
                PRIO_AFFINITY,
                {**base, aff_reg: aff_val, **_affinity_match(ep_ip), port_reg: port_val},
                (dnat,),
                ck,
            )
        )
    return out


def node_port_entries(
    svc: Service, local_cidr: str | tuple[str, ...] | None = None
) -> set[tuple[str, int, str]]:
    """(protocol, nodePort, address the host DNATs it to) for the host's NodePort rules: one
    per port and family of the Service (NODEPORT_IP6 / NODEPORT_LOCAL_IP6 for IPv6), less the
    families the node (its pod CIDRs `local_cidr`, when given) has no address of."""
    if not svc.has_node_ports:
        return set()
    out = set()
    for fam in _node_port_families(svc, _nets(local_cidr)):
        cluster_ip, local_ip = nodeport_ips(fam)
        target = local_ip if svc.external_local else cluster_ip
        out |= {(sp.protocol.lower(), sp.node_port, target) for sp in svc.ports if sp.node_port}
    return out


__all__ = [
    "Endpoint",
    "Service",
    "ServiceError",
    "ServicePort",
    "endpoints_from_pods",
    "endpoints_from_slices",
    "node_port_entries",
    "parse_service",
    "service_flows",
    "usable",
]
