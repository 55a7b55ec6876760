"""Services as values: the Service and Endpoint objects the flows are computed from, parsed from
Kubernetes Service and discovery.k8s.io/v1 EndpointSlice objects (or derived from pods, as the
EndpointSlice controller would make them). Everything the API server would refuse is a
ServiceError naming the Service and the field; what a node cannot program is left out and said
(`Service.notes`, the `skipped` list of endpoints_from_slices). flows/services.py makes the
flows."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows.family import V4, V6, Family, family

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as the API server defaults it
MAX_AFFINITY_TIMEOUT = 86400
# learn()'s idle_timeout is 16 bits in OpenFlow: longer affinity timeouts are capped (~18 h)
MAX_LEARN_TIMEOUT = 0xFFFF
TRAFFIC_POLICIES = ("Cluster", "Local")
# spec.trafficDistribution values ovsctl honours (PreferClose is PreferSameZone's old name)
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
INGRESS_IP_MODES = ("VIP", "Proxy")


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
    # spec.externalIPs and status.loadBalancer.ingress[].ip (canonical addresses)
    external_ips: tuple[str, ...] = ()
    lb_ingress: tuple[str, ...] = ()
    lb_class: str | None = None  # spec.loadBalancerClass
    source_ranges: tuple[str, ...] = ()  # spec.loadBalancerSourceRanges, canonical CIDRs
    internal_local: bool = False  # internalTrafficPolicy: Local
    traffic_distribution: str | None = None  # one of TRAFFIC_DISTRIBUTIONS, or None
    allocate_lb_node_ports: bool = True  # spec.allocateLoadBalancerNodePorts
    # what parsing left out or adjusted (each a log line naming the Service and the field)
    notes: tuple[str, ...] = ()

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

    @property
    def external_addrs(self) -> tuple[str, ...]:
        """The addresses it is reached at from outside besides node ports: its load balancer
        ingress IPs (type LoadBalancer only) and its externalIPs, each once, in that order."""
        lb = self.lb_ingress if self.type == "LoadBalancer" else ()
        return tuple(dict.fromkeys((*lb, *self.external_ips)))

    def source_ranges_of(self, fam: Family) -> tuple[str, ...]:
        return tuple(r for r in self.source_ranges if family(r) is fam)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ports: tuple[tuple[str, int, str], ...]  # (port name, port, protocol), as in EndpointSlices
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    # topology: the endpoint's node (EndpointSlice nodeName, a pod's spec.nodeName) and zone
    # (EndpointSlice zone, the node's topology.kubernetes.io/zone), and the slice's hints
    node_name: str = ""
    zone: str = ""
    for_zones: tuple[str, ...] = ()  # hints.forZones[].name
    for_nodes: tuple[str, ...] = ()  # hints.forNodes[].name


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
    notes: list[str] = []
    if affinity is not None and affinity > MAX_LEARN_TIMEOUT:
        notes.append(
            f"{ref}: spec.sessionAffinityConfig.clientIP.timeoutSeconds {affinity} is capped at "
            f"{MAX_LEARN_TIMEOUT} s (the switch's learned flows hold a 16-bit idle timeout)"
        )
    return Service(
        ns,
        name,
        ips[0] if ips else None,
        tuple(ports),
        selector,
        type=stype,
        external_local=_choice(spec, "externalTrafficPolicy", TRAFFIC_POLICIES, ref) == "Local",
        affinity_timeout=affinity,
        cluster_ips=ips,
        ip_family_policy=policy,
        **_externals(obj, spec, ips, ref, notes),
        internal_local=_choice(spec, "internalTrafficPolicy", TRAFFIC_POLICIES, ref) == "Local",
        traffic_distribution=_distribution(spec, ref, notes),
        notes=tuple(notes),
    )


def _choice(spec: dict, field: str, allowed: tuple[str, ...], ref: str) -> str | None:
    value = spec.get(field)
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ServiceError(
            f"{ref}: spec.{field} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return value


def _distribution(spec: dict, ref: str, notes: list[str]) -> str | None:
    """spec.trafficDistribution; a value ovsctl does not know is ignored (logged): the API
    server refuses unknown values, so it can only come from a newer API."""
    value = spec.get("trafficDistribution")
    if value in (None, ""):
        return None
    if value not in TRAFFIC_DISTRIBUTIONS:
        notes.append(
            f"{ref}: spec.trafficDistribution {value!r} is not known here "
            f"({', '.join(TRAFFIC_DISTRIBUTIONS)}): ignored, every endpoint is used"
        )
        return None
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ServiceError(f"{where} must be a list, got {value!r}")
    return value


def _externals(obj: dict, spec: dict, ips: tuple[str, ...], ref: str, notes: list[str]) -> dict:
    """externalIPs, load balancer ingress IPs, loadBalancerClass, loadBalancerSourceRanges,
    allocateLoadBalancerNodePorts, validated (errors name the field). An address not of one
    of the Service's families (its ClusterIPs') is left out and noted, as kube-proxy ignores
    it."""
    ext = tuple(
        dict.fromkeys(
            _address(a, f"{ref}: spec.externalIPs[{i}]")
            for i, a in enumerate(_list(spec.get("externalIPs"), f"{ref}: spec.externalIPs"))
        )
    )
    status = obj.get("status") or {}
    lb = (status.get("loadBalancer") if isinstance(status, dict) else None) or {}
    if not isinstance(lb, dict):
        raise ServiceError(f"{ref}: status.loadBalancer must be an object")
    ingress = []
    for i, entry in enumerate(_list(lb.get("ingress"), f"{ref}: status.loadBalancer.ingress")):
        where = f"{ref}: status.loadBalancer.ingress[{i}]"
        if not isinstance(entry, dict):
            raise ServiceError(f"{where} must be an object")
        mode = entry.get("ipMode")
        if mode not in (None, "", *INGRESS_IP_MODES):
            raise ServiceError(f"{where}.ipMode must be VIP or Proxy, got {mode!r}")
        if entry.get("ip") in (None, ""):
            if entry.get("hostname"):
                notes.append(
                    f"{where}: hostname {entry['hostname']!r} without ip is not programmed "
                    "(the load balancer forwards to node ports)"
                )
            continue
        ip = _address(entry["ip"], f"{where}.ip")
        if mode == "Proxy":
            notes.append(
                f"{where}: ip {ip} has ipMode Proxy: not programmed (the load balancer "
                "forwards to node ports)"
            )
            continue
        ingress.append(ip)
    cls = spec.get("loadBalancerClass")
    if cls is not None and (not isinstance(cls, str) or not cls):
        raise ServiceError(f"{ref}: spec.loadBalancerClass must be a non-empty string, got {cls!r}")
    ranges = []
    for i, r in enumerate(
        _list(spec.get("loadBalancerSourceRanges"), f"{ref}: spec.loadBalancerSourceRanges")
    ):
        try:
            if not isinstance(r, str) or "/" not in r:
                raise ValueError(r)
            ranges.append(str(netaddr.IPNetwork(r.strip()).cidr))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ServiceError(
                f"{ref}: spec.loadBalancerSourceRanges[{i}] {r!r} is not a CIDR"
            ) from None
    alloc = spec.get("allocateLoadBalancerNodePorts", True)
    if alloc is None:
        alloc = True
    if not isinstance(alloc, bool):
        raise ServiceError(
            f"{ref}: spec.allocateLoadBalancerNodePorts must be true or false, got {alloc!r}"
        )
    fams = {family(a) for a in ips}
    kept = {}
    for what, addrs in (("spec.externalIPs", ext), ("status.loadBalancer.ingress", ingress)):
        kept[what] = []
        for a in dict.fromkeys(addrs):
            if family(a) in fams:
                kept[what].append(a)
            else:
                notes.append(
                    f"{ref}: {what} {a} is not of the Service's IP families "
                    f"({', '.join(str(f) for f in sorted(fams, key=str)) or 'none: headless'}): "
                    "not programmed"
                )
    return {
        "external_ips": tuple(kept["spec.externalIPs"]),
        "lb_ingress": tuple(kept["status.loadBalancer.ingress"]),
        "lb_class": cls,
        "source_ranges": tuple(dict.fromkeys(ranges)),
        "allocate_lb_node_ports": alloc,
    }


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
            topo = _topology(ep, f"{where}.endpoints[{j}]", skipped)
            for addr in ep.get("addresses") or []:
                try:
                    ip = netaddr.IPAddress(addr, version=version)
                except (netaddr.AddrFormatError, ValueError, TypeError):
                    skipped.append(f"{where}.endpoints[{j}]: {addr!r} is not an {atype} address")
                    continue
                out.append(Endpoint(str(ip), tuple(ports), ready, serving, terminating, **topo))
    return out


def _topology(ep: dict, where: str, skipped: list[str]) -> dict:
    """An EndpointSlice endpoint's nodeName, zone and hints (forZones, forNodes). A field that
    is not what the API says is left out (said in `skipped`); the endpoint stays."""
    out: dict = {}
    for field, key in (("nodeName", "node_name"), ("zone", "zone")):
        value = ep.get(field)
        if value in (None, ""):
            continue
        if isinstance(value, str):
            out[key] = value
        else:
            skipped.append(f"{where}.{field} {value!r}: not a string, ignored")
    hints = ep.get("hints")
    if hints in (None, {}):
        return out
    if not isinstance(hints, dict):
        skipped.append(f"{where}.hints: not an object, ignored")
        return out
    for field, key in (("forZones", "for_zones"), ("forNodes", "for_nodes")):
        value = hints.get(field)
        if value in (None, []):
            continue
        names = (
            [h.get("name") if isinstance(h, dict) else None for h in value]
            if isinstance(value, list)
            else [None]
        )
        if any(not isinstance(n, str) or not n for n in names):
            skipped.append(f"{where}.hints.{field}: every entry needs a name, ignored")
            continue
        out[key] = tuple(dict.fromkeys(names))
    return out


def endpoints_from_pods(svc: Service, pods, node_of=None, zones=None) -> list[Endpoint]:
    """The EndpointSlices the control plane would make from the selector (one per family of
    the Service's ClusterIPs): pods with an address of that family whose labels match, ready
    as their Ready condition says, terminating once deleted; each Service port's targetPort
    resolved against the pod (a named port the pod lacks is left out). Each endpoint knows its
    node (`node_of`: (namespace, name) -> the pod's spec.nodeName, or the pod's own
    `node_name`) and that node's zone (`zones`: node name -> zone)."""
    node_of = node_of or {}
    zones = zones or {}
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
        node = node_of.get((p.namespace, p.name)) or getattr(p, "node_name", "") or ""
        topo = {"node_name": node, "zone": zones.get(node, "")}
        for ip in dict.fromkeys(addrs):
            out.append(
                Endpoint(ip, tuple(ports), ready and not terminating, ready, terminating, **topo)
            )
    return out


def endpoint_nodes(endpoints) -> set[str]:
    """The nodes that have a ready endpoint (EndpointSlice nodeName, a pod's spec.nodeName):
    those that may hold an externalTrafficPolicy Local Service's announced address. An
    endpoint whose node is not known counts for none."""
    return {ep.node_name for ep in endpoints if ep.ready and ep.node_name}


def usable(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; when none is ready, the serving terminating ones (as kube-proxy does,
    so connections drain instead of failing during a rollout)."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]
