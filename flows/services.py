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
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows import cookie, owners, regs
from flows.flow import CT, Flow, Goto, Learn, MeteredController, Multipath, Resubmit, flow
from flows.model import NODEPORT_IP, NODEPORT_LOCAL_IP, SNAT_MARK
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


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None  # None for headless / not yet allocated
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...] | None  # None: endpoints come from EndpointSlices
    type: str = "ClusterIP"
    external_local: bool = False  # externalTrafficPolicy: Local
    affinity_timeout: int | None = None  # sessionAffinity ClientIP: seconds; None: no affinity

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def has_node_ports(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer")


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


def _cluster_ip(ip, ips, ref: str) -> str:
    """The Service's IPv4 ClusterIP: clusterIP, or the first IPv4 of clusterIPs (IPv6-first
    dual-stack). IPv6 is not programmed yet: a Service with only IPv6 addresses is an error
    (the agent skips it, logged once)."""
    cands = [ip] + (list(ips) if isinstance(ips, list) else [])
    for c in cands:
        try:
            addr = netaddr.IPAddress(c)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ServiceError(f"{ref}: spec.clusterIP {c!r} is not an IP address") from None
        if addr.version == 4:
            return str(addr)
    raise ServiceError(f"{ref}: spec.clusterIP {ip}: IPv6 is not programmed yet")


def parse_service(obj: dict) -> Service:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ns, name = meta.get("namespace") or "default", meta.get("name", "")
    ref = f"Service {ns}/{name}"
    stype = spec.get("type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        raise ServiceError(f"{ref}: spec.type must be one of {', '.join(SERVICE_TYPES)}")
    ip = spec.get("clusterIP")
    if ip in ("", "None") or stype == "ExternalName":
        ip = None
    if ip is not None:
        ip = _cluster_ip(ip, spec.get("clusterIPs"), ref)
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
        ip,
        tuple(ports),
        selector,
        type=stype,
        external_local=spec.get("externalTrafficPolicy") == "Local",
        affinity_timeout=affinity,
    )


def endpoints_from_slices(slices: list[dict], skipped: list[str] | None = None) -> list[Endpoint]:
    """The endpoints of a Service from its discovery.k8s.io/v1 EndpointSlices, with their
    conditions (an unset ready means ready, an unset serving means the value of ready).
    What cannot be programmed is left out and said in `skipped`: slices whose addressType is
    not IPv4 (IPv6 and FQDN), ports without a number (a null port means "all ports", which
    a ClusterIP cannot forward), addresses that are not IPv4."""
    skipped = [] if skipped is None else skipped
    out = []
    for k, sl in enumerate(slices):
        name = ((sl.get("metadata") or {}).get("name")) or f"#{k}"
        where = f"EndpointSlice {name}"
        atype = sl.get("addressType", "IPv4")
        if atype != "IPv4":
            skipped.append(f"{where}: addressType {atype!r} is not programmed (IPv4 only)")
            continue
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
                    ip = netaddr.IPAddress(addr, version=4)
                except (netaddr.AddrFormatError, ValueError, TypeError):
                    skipped.append(f"{where}.endpoints[{j}]: {addr!r} is not an IPv4 address")
                    continue
                out.append(Endpoint(str(ip), tuple(ports), ready, serving, terminating))
    return out


def endpoints_from_pods(svc: Service, pods) -> list[Endpoint]:
    """The EndpointSlice the control plane would make from the selector: pods with an IP whose
    labels match, ready as their Ready condition says, terminating once deleted; each Service
    port's targetPort resolved against the pod (a named port the pod lacks is left out)."""
    if svc.selector is None:
        return []
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
        out.append(Endpoint(p.ip, tuple(ports), ready and not terminating, ready, terminating))
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


def service_flows(
    svc: Service, endpoints: list[Endpoint], local_cidr: str | None = None
) -> frozenset[Flow]:
    """The flows of one Service (all its ports and frontends) on a node whose pods are in
    `local_cidr` (needed for externalTrafficPolicy Local)."""
    ck = cookie.make("service", service_owner(svc))
    net = netaddr.IPNetwork(local_cidr) if local_cidr else None
    out: set[Flow] = set()
    for sp in svc.ports:
        serving = [ep for ep in endpoints if _port_of(sp, ep) is not None]
        backends = _backends(sp, serving)
        if svc.cluster_ip:
            out |= _frontend(svc, sp, svc.cluster_ip, sp.port, backends, ck)
        if sp.node_port and svc.has_node_ports:
            if svc.external_local:
                local = [ep for ep in serving if net is not None and ep.ip in net]
                # Local with endpoints elsewhere only: drop, as kube-proxy does (a load
                # balancer's health check steers clients to nodes that have one).
                out |= _frontend(
                    svc,
                    sp,
                    NODEPORT_LOCAL_IP,
                    sp.node_port,
                    _backends(sp, local),
                    ck,
                    none_drops=bool(backends),
                )
            else:
                out |= _frontend(svc, sp, NODEPORT_IP, sp.node_port, backends, ck, SNAT_MARK)
    return frozenset(out)


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
    proto = sp.protocol.lower()
    base = {"protocol": proto, "nw_dst": ip, "tp_dst": port}
    if not backends:
        # No endpoint: the agent answers as kube-proxy's REJECT does (TCP RST, ICMP port
        # unreachable), so clients fail at once instead of hanging.
        return {flow("ServiceLB", PRIO_SERVICE, base, () if none_drops else (REJECT,), ck)}
    lb = (Multipath(len(backends), f"reg{regs.ENDPOINT.reg}", fields=HASH_FIELDS[proto]),)
    if svc.affinity_timeout:
        lb = (Resubmit("SessionAffinity"), *lb)
    out = {flow("ServiceLB", PRIO_SERVICE, base, (*lb, Goto("EndpointDNAT")), ck)}
    aff_reg, aff_val = regs.AFFINITY.match(1)
    for i, (ep_ip, ep_port) in enumerate(backends):
        dnat = CT(
            CT_ZONE, table="HairpinSNAT", commit=True, nat=f"dst={ep_ip}:{ep_port}", mark=mark
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
                "affinity", f"{service_owner(svc)} {ip}:{port}/{proto} {ep_ip}:{ep_port}"
            ),
            loads=(
                (
                    int(netaddr.IPAddress(ep_ip)),
                    f"reg{regs.AFFINITY_IP.reg}",
                    regs.AFFINITY_IP.mask,
                ),
                (ep_port, f"reg{regs.AFFINITY_PORT.reg}", regs.AFFINITY_PORT.mask),
                (1, f"reg{regs.AFFINITY.reg}", regs.AFFINITY.mask),
            ),
        )
        # the hashed pick (no affinity yet, or its endpoint is gone): remember it
        out.add(flow("EndpointDNAT", PRIO_SERVICE, {**base, reg: val}, (learn, dnat), ck))
        # the client's remembered endpoint (while it is still one)
        ip_reg, ip_val = regs.AFFINITY_IP.match(int(netaddr.IPAddress(ep_ip)))
        port_reg, port_val = regs.AFFINITY_PORT.match(ep_port)
        out.add(
            flow(
                "EndpointDNAT",
                PRIO_AFFINITY,
                {**base, aff_reg: aff_val, ip_reg: ip_val, port_reg: port_val},
                (dnat,),
                ck,
            )
        )
    return out


def node_port_entries(svc: Service) -> set[tuple[str, int, str]]:
    """(protocol, nodePort, address the host DNATs it to) for the host's NodePort rules."""
    if not svc.has_node_ports:
        return set()
    target = NODEPORT_LOCAL_IP if svc.external_local else NODEPORT_IP
    return {(sp.protocol.lower(), sp.node_port, target) for sp in svc.ports if sp.node_port}


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
