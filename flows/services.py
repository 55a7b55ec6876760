"""Services (ClusterIP) as flows: load-balancing in OVS, no kube-proxy.

For each Service port with endpoints, on the client's node:

    ServiceLB     proto,nw_dst=VIP,tp_dst=PORT -> multipath(hrw) into reg3, goto EndpointDNAT
    EndpointDNAT  proto,reg3=i,nw_dst=VIP,tp_dst=PORT -> ct(commit,nat(dst=EP_i:TARGET_i)), on to
                  the policy tables, which see the endpoint's address (NetworkPolicy applies
                  after DNAT)

Replies are un-NATed by the Conntrack stage (`ct(nat)`), which also keeps an existing
connection on its endpoint however the endpoint list changes: only new connections move.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows import cookie, regs
from flows.flow import CT, Flow, Goto, Multipath, SetField, ToController, flow
from flows.pipeline import CT_ZONE

PRIO_SERVICE = 200
# symmetric_l4 hashes TCP and SCTP ports but not UDP's; symmetric_l3l4+udp adds UDP ports.
HASH_FIELDS = {"tcp": "symmetric_l4", "sctp": "symmetric_l4", "udp": "symmetric_l3l4+udp"}


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str  # TCP, UDP, SCTP
    target_port: int | str  # a number or a container port name


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None  # None for headless / not yet allocated
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...] | None  # None: endpoints come from EndpointSlices

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ports: tuple[tuple[str, int, str], ...]  # (port name, port, protocol), as in EndpointSlices
    ready: bool = True


class ServiceError(ValueError):
    pass


def parse_service(obj: dict) -> Service:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ns, name = meta.get("namespace") or "default", meta.get("name", "")
    ip = spec.get("clusterIP")
    if ip in ("", "None"):
        ip = None
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        try:
            port = int(p["port"])
        except (KeyError, TypeError, ValueError):
            raise ServiceError(f"Service {ns}/{name}: spec.ports[{i}].port is required") from None
        proto = p.get("protocol") or "TCP"
        if proto not in ("TCP", "UDP", "SCTP"):
            raise ServiceError(f"Service {ns}/{name}: spec.ports[{i}].protocol {proto!r}")
        target = p.get("targetPort", port)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        ports.append(ServicePort(str(p.get("name") or ""), port, proto, target))
    sel = spec.get("selector")
    selector = (
        tuple(sorted((str(k), str(v)) for k, v in sel.items()))
        if isinstance(sel, dict) and sel
        else None
    )
    return Service(ns, name, ip, tuple(ports), selector)


def endpoints_from_slices(slices: list[dict]) -> list[Endpoint]:
    """Ready endpoints of a Service from its discovery.k8s.io/v1 EndpointSlices."""
    out = []
    for sl in slices:
        ports = tuple(
            (str(p.get("name") or ""), int(p.get("port", 0)), p.get("protocol") or "TCP")
            for p in sl.get("ports") or []
        )
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready", True) is not False and cond.get("terminating") is not True
            for addr in ep.get("addresses") or []:
                out.append(Endpoint(addr, ports, ready))
    return out


def endpoints_from_pods(svc: Service, pods) -> list[Endpoint]:
    """What the EndpointSlice controller would make from the selector: running pods with an IP
    whose labels match, each Service port's targetPort resolved against the pod."""
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
        out.append(Endpoint(p.ip, tuple(ports)))
    return out


def service_owner(svc: Service) -> str:
    return f"service/{svc.key}"


def service_flows(svc: Service, endpoints: list[Endpoint]) -> frozenset[Flow]:
    """The flows of one Service (all its ports) on a node."""
    if not svc.cluster_ip:
        return frozenset()
    ck = cookie.make("service", service_owner(svc))
    out = set()
    for sp in svc.ports:
        backends = []
        for ep in endpoints:
            if not ep.ready:
                continue
            match = [p for p in ep.ports if p[0] == sp.name and p[2] == sp.protocol]
            if match:
                backends.append((ep.ip, match[0][1]))
        backends = sorted(set(backends))
        proto = sp.protocol.lower()
        base = {"protocol": proto, "nw_dst": svc.cluster_ip, "tp_dst": sp.port}
        if not backends:
            # No endpoint: the agent answers as kube-proxy's REJECT does (TCP RST, ICMP
            # port unreachable), so clients fail at once instead of hanging.
            out.add(flow("ServiceLB", PRIO_SERVICE, base, (ToController(),), ck))
            continue
        reg, _ = regs.ENDPOINT.match(0)
        out.add(
            flow(
                "ServiceLB",
                PRIO_SERVICE,
                base,
                (
                    Multipath(len(backends), f"reg{regs.ENDPOINT.reg}", fields=HASH_FIELDS[proto]),
                    Goto("EndpointDNAT"),
                ),
                ck,
            )
        )
        for i, (ip, port) in enumerate(backends):
            _, val = regs.ENDPOINT.match(i)
            out.add(
                flow(
                    "EndpointDNAT",
                    PRIO_SERVICE,
                    {**base, reg: val},
                    (CT(CT_ZONE, table="HairpinSNAT", commit=True, nat=f"dst={ip}:{port}"),),
                    ck,
                )
            )
    return frozenset(out)


__all__ = ["Endpoint", "Service", "ServicePort", "SetField", "service_flows"]
