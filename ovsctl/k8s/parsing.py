"""Parsing one Kubernetes-shaped dict into a model object (:func:`parse`), validating what the API
server would and raising :class:`~ovsctl.k8s.kinds.ModelError` naming the object, the field
path and the problem."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from flows.family import V4, V6, of, ordered
from ovsctl.k8s.kinds import (
    ACCEPTED_KINDS,
    DEFAULT_NAMESPACE,
    KINDS,
    POD_PHASES,
    PROTOCOLS,
    STATIC_IP_ANNOTATION,
    ModelError,
)
from ovsctl.k8s.labels import (
    Labels,
    _canonical_cidr,
    _canonical_ip,
    _dns_problem,
    _is_ipv4,
    _label_key_problem,
    _label_value_problem,
    _port_name_problem,
    _show,
)
from ovsctl.k8s.objects import ContainerPort, Generic, Namespace, Node, Object, Pod

# metadata fields that change without the object changing; dropped from Generic bodies
_VOLATILE_METADATA = ("resourceVersion", "managedFields", "selfLink")


# --------------------------------------------------------------------------- parsing


class _Ctx:
    """Error reporting for one object: knows its reference (``Pod default/web``)."""

    def __init__(self, ref: str):
        self.ref = ref

    def fail(self, path: str, reason: str) -> ModelError:
        return ModelError(reason, ref=self.ref, path=path)

    def mapping(self, value: object, path: str, *, required: bool = False) -> Mapping:
        if value is None:
            if required:
                raise self.fail(path, "required")
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, got {_show(value)}")
        return value

    def sequence(self, value: object, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(path, f"must be a list, got {_show(value)}")
        return list(value)

    def string(self, value: object, path: str, *, required: bool = False) -> str | None:
        if value is None or (required and value == ""):
            if required:
                raise self.fail(path, "required")
            return None
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {_show(value)}")
        return value

    def ip(self, value: object, path: str) -> str:
        try:
            return _canonical_ip(value)
        except ValueError as e:
            raise self.fail(path, str(e)) from None

    def cidr(self, value: object, path: str) -> str:
        try:
            return _canonical_cidr(value)
        except ValueError as e:
            raise self.fail(path, str(e)) from None

    def labels(self, value: object, path: str) -> dict[str, str]:
        m = self.mapping(value, path)
        out: dict[str, str] = {}
        for k, v in m.items():
            kp = f"{path}[{k!r}]" if isinstance(k, str) else path
            if not isinstance(k, str):
                raise self.fail(kp, f"label keys must be strings, got {_show(k)}")
            if not isinstance(v, str):
                raise self.fail(
                    kp, f"label values must be strings, got {_show(v)} (quote it in YAML)"
                )
            problem = _label_key_problem(k) or _label_value_problem(v)
            if problem:
                raise self.fail(kp, problem)
            out[k] = v
        return out


def _ref(kind: str, namespaced: bool, namespace: object, name: object) -> str:
    n = name if isinstance(name, str) and name else "<unnamed>"
    if not namespaced:
        return f"{kind} {n}"
    ns = namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE
    return f"{kind} {ns}/{n}"


def parse(obj: Mapping[str, Any]) -> Object:
    """Parse one Kubernetes-shaped dict into a model object; ModelError if it is not valid."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"must be a mapping, got {_show(obj)}", ref="object")
    kind = obj.get("kind")
    raw_meta = obj.get("metadata")
    raw_name = raw_meta.get("name") if isinstance(raw_meta, Mapping) else None
    raw_ns = raw_meta.get("namespace") if isinstance(raw_meta, Mapping) else None
    if kind is None or kind == "":
        ref = f"object {raw_name}" if isinstance(raw_name, str) and raw_name else "object"
        raise ModelError("required", ref=ref, path="kind")
    if not isinstance(kind, str) or kind not in KINDS:
        ref = f"{kind} {raw_name}" if isinstance(raw_name, str) and raw_name else str(kind)
        raise ModelError(
            f"unsupported kind {kind!r} (accepted: {', '.join(ACCEPTED_KINDS)})",
            ref=ref,
            path="kind",
        )
    info = KINDS[kind]
    ctx = _Ctx(_ref(kind, info.namespaced, raw_ns, raw_name))

    api_version = obj.get("apiVersion")
    if api_version is None or api_version == "":
        raise ctx.fail("apiVersion", f"required (expected {info.api_version!r})")
    if api_version != info.api_version:
        raise ctx.fail(
            "apiVersion", f"must be {info.api_version!r} for kind {kind}, got {_show(api_version)}"
        )

    meta = ctx.mapping(raw_meta, "metadata", required=True)
    name = ctx.string(meta.get("name"), "metadata.name", required=True)
    if name is None:  # pragma: no cover - string(required=True) raised
        raise ctx.fail("metadata.name", "required")
    problem = _dns_problem(name, info.name_rule)
    if problem:
        raise ctx.fail("metadata.name", f"{problem}, got {name!r}")
    namespace = ""
    if info.namespaced:
        ns = ctx.string(meta.get("namespace"), "metadata.namespace")
        namespace = ns or DEFAULT_NAMESPACE
        problem = _dns_problem(namespace, "label")
        if problem:
            raise ctx.fail("metadata.namespace", f"{problem}, got {namespace!r}")
    elif info.no_namespace and meta.get("namespace") not in (None, ""):
        raise ctx.fail(
            "metadata.namespace",
            f"must not be set: {kind} is cluster-scoped, got {_show(meta.get('namespace'))}",
        )
    labels = ctx.labels(meta.get("labels"), "metadata.labels")

    if kind == "Node":
        return _parse_node(ctx, obj, name, labels)
    if kind == "Namespace":
        return Namespace(name=name, labels=Labels(labels))
    if kind == "Pod":
        return _parse_pod(ctx, obj, meta, namespace, name, labels)
    return _parse_generic(ctx, obj, kind, namespace, name)


def _first_v4(values: list[str]) -> str | None:
    for v in values:
        if _is_ipv4(v):
            return v
    return values[0] if values else None


def _per_family(values: list[str]) -> tuple[str, ...]:
    """The first address (or CIDR) of each family, IPv4 first: a dual-stack object's list."""
    return ordered(of(values, fam) for fam in (V4, V6) if of(values, fam))


def _parse_node(ctx: _Ctx, obj: Mapping, name: str, labels: dict[str, str]) -> Node:
    spec = ctx.mapping(obj.get("spec"), "spec")
    status = ctx.mapping(obj.get("status"), "status")

    cidrs: list[str] = []
    if spec.get("podCIDR") not in (None, ""):
        cidrs.append(ctx.cidr(spec["podCIDR"], "spec.podCIDR"))
    more = [
        ctx.cidr(c, f"spec.podCIDRs[{i}]")
        for i, c in enumerate(ctx.sequence(spec.get("podCIDRs"), "spec.podCIDRs"))
    ]
    # spec.podCIDR wins; otherwise the first IPv4 of spec.podCIDRs (the first entry if none is)
    pod_cidr = cidrs[0] if cidrs else _first_v4(more)

    internal: list[str] = []
    addresses: list[str] = []  # every IP of status.addresses (ClusterNetworkPolicy nodes peers)
    for i, a in enumerate(ctx.sequence(status.get("addresses"), "status.addresses")):
        path = f"status.addresses[{i}]"
        a = ctx.mapping(a, path)
        atype = ctx.string(a.get("type"), f"{path}.type", required=True)
        address = ctx.string(a.get("address"), f"{path}.address", required=True)
        if atype in ("InternalIP", "ExternalIP"):
            ip = ctx.ip(address, f"{path}.address")
            addresses.append(ip)
            if atype == "InternalIP":
                internal.append(ip)
    ready = True  # no Ready condition (a hand-written Node): ready
    for i, c in enumerate(ctx.sequence(status.get("conditions"), "status.conditions")):
        path = f"status.conditions[{i}]"
        c = ctx.mapping(c, path)
        if ctx.string(c.get("type"), f"{path}.type", required=True) != "Ready":
            continue
        value = ctx.string(c.get("status"), f"{path}.status", required=True)
        if value not in ("True", "False", "Unknown"):
            raise ctx.fail(f"{path}.status", f"must be True, False or Unknown, got {value!r}")
        ready = value == "True"
    return Node(
        name=name,
        pod_cidr=pod_cidr,
        internal_ip=_first_v4(internal),
        labels=labels,
        pod_cidrs=_per_family(more or cidrs),
        internal_ips=_per_family(internal),
        ready=ready,
        addresses=tuple(dict.fromkeys(addresses)),
    )


# Pods share few label sets and container port lists: each pod keeps the one instance of its
# value (an agent holds every pod of the cluster; at 50,000 pods this is tens of MiB). Bounded:
# the table starts over once it holds _SHARED_MAX values.
_SHARED: dict = {}
_SHARED_MAX = 1 << 16


def _shared(value):
    hit = _SHARED.get(value)
    if hit is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        hit = _SHARED[value] = value
    return hit


def _parse_pod(
    ctx: _Ctx, obj: Mapping, meta: Mapping, namespace: str, name: str, labels: dict[str, str]
) -> Pod:
    uid = ctx.string(meta.get("uid"), "metadata.uid") or ""
    spec = ctx.mapping(obj.get("spec"), "spec")
    status = ctx.mapping(obj.get("status"), "status")

    node_name = ctx.string(spec.get("nodeName"), "spec.nodeName") or ""
    if node_name:
        problem = _dns_problem(node_name, "subdomain")
        if problem:
            raise ctx.fail("spec.nodeName", f"{problem}, got {node_name!r}")
    host_network = spec.get("hostNetwork", False)
    if host_network is None:
        host_network = False
    if not isinstance(host_network, bool):
        raise ctx.fail("spec.hostNetwork", f"must be a boolean, got {_show(host_network)}")

    ports: list[ContainerPort] = []
    for ci, c in enumerate(ctx.sequence(spec.get("containers"), "spec.containers")):
        cpath = f"spec.containers[{ci}]"
        c = ctx.mapping(c, cpath)
        seen_names: dict[str, int] = {}
        for pi, p in enumerate(ctx.sequence(c.get("ports"), f"{cpath}.ports")):
            ppath = f"{cpath}.ports[{pi}]"
            p = ctx.mapping(p, ppath)
            port = p.get("containerPort")
            if port is None:
                raise ctx.fail(f"{ppath}.containerPort", "required")
            if isinstance(port, bool) or not isinstance(port, int):
                raise ctx.fail(f"{ppath}.containerPort", f"must be an integer, got {_show(port)}")
            if not 1 <= port <= 65535:
                raise ctx.fail(f"{ppath}.containerPort", f"must be in 1..65535, got {port}")
            protocol = p.get("protocol")
            if protocol is None or protocol == "":
                protocol = "TCP"
            if protocol not in PROTOCOLS:
                raise ctx.fail(
                    f"{ppath}.protocol",
                    f"must be one of {', '.join(PROTOCOLS)}, got {_show(protocol)}",
                )
            pname = ctx.string(p.get("name"), f"{ppath}.name") or ""
            if pname:
                problem = _port_name_problem(pname)
                if problem:
                    raise ctx.fail(f"{ppath}.name", f"{problem}, got {pname!r}")
                if pname in seen_names:
                    raise ctx.fail(
                        f"{ppath}.name",
                        f"duplicate port name {pname!r} (also {cpath}.ports[{seen_names[pname]}])",
                    )
                seen_names[pname] = pi
            ports.append(ContainerPort(name=pname, port=port, protocol=protocol))

    ips: list[str] = []
    if status.get("podIP") not in (None, ""):
        ips.append(ctx.ip(status["podIP"], "status.podIP"))
    more = []
    for i, entry in enumerate(ctx.sequence(status.get("podIPs"), "status.podIPs")):
        entry = ctx.mapping(entry, f"status.podIPs[{i}]")
        more.append(ctx.ip(entry.get("ip"), f"status.podIPs[{i}].ip"))
    # status.podIP wins; otherwise the first IPv4 of status.podIPs (the first entry if none is)
    ip = ips[0] if ips else _first_v4(more)

    phase = status.get("phase")
    ready = None
    for i, cond in enumerate(ctx.sequence(status.get("conditions"), "status.conditions")):
        cond = ctx.mapping(cond, f"status.conditions[{i}]")
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
    if ready is None:
        ready = phase == "Running" if phase else True
    if phase is None or phase == "":
        phase = "Pending"
    if phase not in POD_PHASES:
        raise ctx.fail(
            "status.phase", f"must be one of {', '.join(POD_PHASES)}, got {_show(phase)}"
        )
    terminating = meta.get("deletionTimestamp") not in (None, "")
    annotations = meta.get("annotations")
    static_ip = ""
    if isinstance(annotations, Mapping):
        note = annotations.get(STATIC_IP_ANNOTATION)
        static_ip = note.strip() if isinstance(note, str) else ""

    return Pod(
        namespace=sys.intern(namespace),
        name=name,
        uid=uid,
        labels=_shared(Labels(labels)),
        node_name=sys.intern(node_name),
        ip=ip,
        ips=_per_family(more or ips),
        ports=_shared(tuple(ports)),
        host_network=host_network,
        phase=phase,
        ready=ready,
        terminating=terminating,
        static_ip=static_ip,
    )


def _parse_generic(ctx: _Ctx, obj: Mapping, kind: str, namespace: str, name: str) -> Generic:
    for section in ("spec", "status"):
        ctx.mapping(obj.get(section), section)
    body = dict(obj)
    meta = {k: v for k, v in body["metadata"].items() if k not in _VOLATILE_METADATA}
    if namespace:
        meta["namespace"] = namespace
    else:  # a cluster-scoped kind: no namespace at all (as the API server stores it)
        meta.pop("namespace", None)
    body["metadata"] = meta
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ctx.fail("", f"not representable as JSON: {e}") from None
    return Generic(kind=kind, namespace=namespace, name=name, body=text)
