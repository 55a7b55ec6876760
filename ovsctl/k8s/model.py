"""Typed, immutable cluster objects parsed from Kubernetes-shaped dicts.

Every model object is a frozen dataclass: hashable, compared by value, with a ``key`` of
``(kind, namespace, name)`` (namespace ``""`` for cluster-scoped kinds). Both cluster-state
sources (the YAML directory and the Kubernetes API watcher) produce these objects, so nothing
above a source knows where the state came from (DESIGN.md, principle 7).

- :func:`parse` turns one Kubernetes-shaped dict into a model object, validating what the API
  server would and raising :class:`ModelError` naming the object, the field path and the problem.
- :func:`load_documents` reads a file or a directory of YAML/JSON manifests into plain dicts;
  :func:`load_objects` also parses them. Errors name the file and the document.
- :func:`to_dict` renders a model object back to a minimal Kubernetes-shaped dict such that
  ``parse(to_dict(x)) == x``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import netaddr
import yaml

STATIC_IP_ANNOTATION = "ovsctl.io/ip-address"  # a pod's static IP (as Kube-OVN offers)

__all__ = [
    "ACCEPTED_KINDS",
    "KINDS",
    "MANIFEST_SUFFIXES",
    "ContainerPort",
    "Generic",
    "KindInfo",
    "Labels",
    "ModelError",
    "Namespace",
    "Node",
    "Object",
    "Pod",
    "load_documents",
    "load_objects",
    "manifest_files",
    "objects_from_text",
    "parse",
    "to_dict",
]

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_NAMESPACE = "default"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


# --------------------------------------------------------------------------- errors


class ModelError(ValueError):
    """An object (or a manifest file) that is not valid.

    The message reads ``[FILE: [DOCUMENT: ]]REF: PATH: REASON``, e.g.
    ``pods.yaml: document 2: Pod default/web: spec.containers[0].ports[1].containerPort: must be
    an integer in 1..65535, got 70000``. The parts are also available as attributes.
    """

    def __init__(
        self,
        reason: str,
        *,
        ref: str | None = None,
        path: str | None = None,
        file: str | None = None,
        document: str | None = None,
    ):
        self.reason = reason
        self.ref = ref
        self.path = path
        self.file = file
        self.document = document
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.file, self.document, self.ref, self.path) if p]
        return ": ".join([*parts, self.reason])

    def located(self, file: str | None, document: str | None = None) -> ModelError:
        """A copy of this error that also names the file and document it came from."""
        return ModelError(
            self.reason,
            ref=self.ref,
            path=self.path,
            file=file if file is not None else self.file,
            document=document if document is not None else self.document,
        )


# --------------------------------------------------------------------------- kinds


class KindInfo(NamedTuple):
    api_version: str
    namespaced: bool
    name_rule: str  # "label" (DNS-1123 label), "subdomain" (DNS-1123 subdomain), "1035"


# The one list of accepted kinds, in dependency order: a batch of events applies additions and
# modifications in this order (namespaces and nodes first, policies before the pods they select,
# pods last) and deletions in the reverse order.
KINDS: dict[str, KindInfo] = {
    "Namespace": KindInfo("v1", False, "label"),
    "Node": KindInfo("v1", False, "subdomain"),
    "NetworkPolicy": KindInfo("networking.k8s.io/v1", True, "subdomain"),
    "Service": KindInfo("v1", True, "1035"),
    "EndpointSlice": KindInfo("discovery.k8s.io/v1", True, "subdomain"),
    "Pod": KindInfo("v1", True, "subdomain"),
}
ACCEPTED_KINDS: tuple[str, ...] = tuple(KINDS)
KIND_RANK: dict[str, int] = {k: i for i, k in enumerate(ACCEPTED_KINDS)}


# --------------------------------------------------------------------------- syntax checks

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _dns_problem(value: str, rule: str) -> str | None:
    """Why value is not a valid name under rule, or None."""
    if rule == "label":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1123_LABEL.fullmatch(value):
            return (
                "must be a DNS-1123 label (lower case alphanumeric characters or '-', "
                "starting and ending with an alphanumeric character)"
            )
    elif rule == "subdomain":
        if len(value) > 253:
            return "must be no more than 253 characters"
        if not _DNS1123_SUBDOMAIN.fullmatch(value):
            return (
                "must be a DNS-1123 subdomain (lower case alphanumeric characters, '-' or '.', "
                "starting and ending with an alphanumeric character)"
            )
    elif rule == "1035":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1035_LABEL.fullmatch(value):
            return (
                "must be a DNS-1035 label (lower case alphanumeric characters or '-', "
                "starting with a letter and ending with an alphanumeric character)"
            )
    else:  # pragma: no cover - programming error
        raise AssertionError(rule)
    return None


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "label key prefix must not be empty"
        p = _dns_problem(prefix, "subdomain")
        if p:
            return f"label key prefix {p}"
    if not name:
        return "label key name must not be empty"
    if len(name) > 63:
        return "label key name must be no more than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            "label key name must consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def _label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "label value must be no more than 63 characters"
    if value and not _QUALIFIED_NAME.fullmatch(value):
        return (
            "label value must be empty or consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def _port_name_problem(name: str) -> str | None:
    if len(name) > 15:
        return "must be no more than 15 characters (IANA_SVC_NAME)"
    if not _IANA_SVC_NAME.fullmatch(name):
        return (
            "must contain only lower case alphanumeric characters or '-', "
            "starting and ending with an alphanumeric character (IANA_SVC_NAME)"
        )
    if "--" in name:
        return "must not contain consecutive hyphens (IANA_SVC_NAME)"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (IANA_SVC_NAME)"
    return None


def _canonical_ip(value: object) -> str:
    """Canonical text of an IPv4/IPv6 address; ValueError if value is not one."""
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address string, got {_show(value)}")
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not a valid IP address: {value!r}") from None


def _canonical_cidr(value: object) -> str:
    """Canonical network text (host bits cleared) of an ADDRESS/PREFIX string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a CIDR string, got {_show(value)}")
    addr, slash, prefix = value.partition("/")
    if not slash or not prefix.isdigit() or not prefix.isascii():
        raise ValueError(f"not a valid CIDR (ADDRESS/PREFIXLEN): {value!r}")
    try:
        ip = netaddr.IPAddress(addr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not a valid CIDR (bad address): {value!r}") from None
    bits = 32 if ip.version == 4 else 128
    if int(prefix) > bits:
        raise ValueError(f"not a valid CIDR (prefix length > {bits}): {value!r}")
    return str(netaddr.IPNetwork(f"{ip}/{int(prefix)}").cidr)


def _norm(fn, value: object, ref: str, path: str) -> str:
    """fn(value), turning its ValueError into a ModelError naming ref and path."""
    try:
        return fn(value)
    except ValueError as e:
        raise ModelError(str(e), ref=ref, path=path) from None


def _is_ipv4(text: str) -> bool:
    return ":" not in text


def _show(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {value}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------- labels


class Labels(Mapping[str, str]):
    """An immutable, hashable str -> str mapping, stored as a sorted tuple of pairs.

    Compares equal to any mapping with the same items. Build it from a mapping or from an
    iterable of (key, value) pairs.
    """

    __slots__ = ("_pairs", "_dict")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        if isinstance(items, Labels):
            pairs, d = items._pairs, items._dict
        else:
            d = dict(items)
            for k, v in d.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError(f"labels must map str to str, got {k!r}: {v!r}")
            pairs = tuple(sorted(d.items()))
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_dict", d)

    def __setattr__(self, name, value):
        raise AttributeError("Labels is immutable")

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({dict(self._pairs)!r})"

    def __reduce__(self):
        return (Labels, (self._pairs,))

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The sorted (key, value) pairs."""
        return self._pairs

    def to_dict(self) -> dict[str, str]:
        return dict(self._pairs)


# --------------------------------------------------------------------------- model objects


class _LabelledMixin:
    labels: Labels

    def labels_dict(self) -> dict[str, str]:
        return self.labels.to_dict()


@dataclass(frozen=True)
class Node(_LabelledMixin):
    """A cluster node. ``pod_cidr`` and ``internal_ip`` are None until the node has them."""

    kind: ClassVar[str] = "Node"
    name: str
    pod_cidr: str | None = None
    internal_ip: str | None = None
    labels: Labels = field(default_factory=Labels)

    def __post_init__(self):
        object.__setattr__(self, "labels", Labels(self.labels))
        ref = f"Node {self.name}"
        if self.pod_cidr is not None:
            object.__setattr__(
                self, "pod_cidr", _norm(_canonical_cidr, self.pod_cidr, ref, "pod_cidr")
            )
        if self.internal_ip is not None:
            ip = _norm(_canonical_ip, self.internal_ip, ref, "internal_ip")
            object.__setattr__(self, "internal_ip", ip)

    @property
    def namespace(self) -> str:
        return ""

    @property
    def key(self) -> tuple[str, str, str]:
        return ("Node", "", self.name)

    @property
    def ref(self) -> str:
        return self.name


@dataclass(frozen=True)
class Namespace(_LabelledMixin):
    """A namespace. Its labels always include ``kubernetes.io/metadata.name=<name>``."""

    kind: ClassVar[str] = "Namespace"
    name: str
    labels: Labels = field(default_factory=Labels)

    def __post_init__(self):
        labels = dict(Labels(self.labels))
        labels[NAMESPACE_NAME_LABEL] = self.name  # as the API server does, always
        object.__setattr__(self, "labels", Labels(labels))

    @property
    def namespace(self) -> str:
        return ""

    @property
    def key(self) -> tuple[str, str, str]:
        return ("Namespace", "", self.name)

    @property
    def ref(self) -> str:
        return self.name


@dataclass(frozen=True)
class ContainerPort:
    """A declared container port. ``name`` is "" when the port is unnamed."""

    name: str
    port: int
    protocol: str = "TCP"

    def __post_init__(self):
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ModelError(f"must be an integer, got {_show(self.port)}", path="port")
        if not 1 <= self.port <= 65535:
            raise ModelError(f"must be in 1..65535, got {self.port}", path="port")
        if self.protocol not in PROTOCOLS:
            raise ModelError(
                f"must be one of {', '.join(PROTOCOLS)}, got {_show(self.protocol)}",
                path="protocol",
            )


@dataclass(frozen=True)
class Pod(_LabelledMixin):
    """A pod. ``node_name`` is "" while unscheduled; ``ip`` is None until it has one;
    ``ports`` are the ports of all its containers, in order; ``uid`` is "" when unknown.

    ``ready`` is its Ready condition; a pod written without conditions (hand-made YAML) counts
    as ready when its phase is Running, or when it has no phase either (a pod without an IP
    is never an endpoint anyway).
    ``terminating`` is set once it has a deletionTimestamp. Both decide whether it is a
    Service endpoint (as the EndpointSlice controller decides)."""

    kind: ClassVar[str] = "Pod"
    namespace: str
    name: str
    uid: str = ""
    labels: Labels = field(default_factory=Labels)
    node_name: str = ""
    ip: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False
    phase: str = "Pending"
    ready: bool = True
    terminating: bool = False
    # annotation ovsctl.io/ip-address as written: the static IP its CNI ADD asks for (checked
    # there, so that a bad value fails that pod's ADD with a clear error and nothing else)
    static_ip: str = ""

    def __post_init__(self):
        object.__setattr__(self, "labels", Labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))
        if self.ip is not None:
            ip = _norm(_canonical_ip, self.ip, f"Pod {self.namespace}/{self.name}", "ip")
            object.__setattr__(self, "ip", ip)

    @property
    def key(self) -> tuple[str, str, str]:
        return ("Pod", self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Generic:
    """An accepted kind that is not modeled yet (NetworkPolicy, Service, EndpointSlice).

    ``body`` is the canonical JSON of the object (sorted keys, metadata.namespace filled in,
    bookkeeping fields such as resourceVersion and managedFields dropped), so the object stays
    hashable and compares by value. :meth:`obj` returns it as a dict.
    """

    kind: str
    namespace: str
    name: str
    body: str

    def obj(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


Object = Node | Namespace | Pod | Generic

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
    for i, a in enumerate(ctx.sequence(status.get("addresses"), "status.addresses")):
        path = f"status.addresses[{i}]"
        a = ctx.mapping(a, path)
        atype = ctx.string(a.get("type"), f"{path}.type", required=True)
        address = ctx.string(a.get("address"), f"{path}.address", required=True)
        if atype in ("InternalIP", "ExternalIP"):
            ip = ctx.ip(address, f"{path}.address")
            if atype == "InternalIP":
                internal.append(ip)
    return Node(name=name, pod_cidr=pod_cidr, internal_ip=_first_v4(internal), labels=labels)


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
        namespace=namespace,
        name=name,
        uid=uid,
        labels=labels,
        node_name=node_name,
        ip=ip,
        ports=tuple(ports),
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
    meta["namespace"] = namespace
    body["metadata"] = meta
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ctx.fail("", f"not representable as JSON: {e}") from None
    return Generic(kind=kind, namespace=namespace, name=name, body=text)


# --------------------------------------------------------------------------- rendering


def to_dict(obj: Object) -> dict[str, Any]:
    """A minimal Kubernetes-shaped dict for a model object; ``parse(to_dict(x)) == x``."""
    if isinstance(obj, Generic):
        return obj.obj()
    if isinstance(obj, Node):
        d: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": _meta(obj.name, None, obj.labels),
        }
        if obj.pod_cidr is not None:
            d["spec"] = {"podCIDR": obj.pod_cidr, "podCIDRs": [obj.pod_cidr]}
        if obj.internal_ip is not None:
            d["status"] = {"addresses": [{"type": "InternalIP", "address": obj.internal_ip}]}
        return d
    if isinstance(obj, Namespace):
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": _meta(obj.name, None, obj.labels),
        }
    if isinstance(obj, Pod):
        meta = _meta(obj.name, obj.namespace, obj.labels)
        if obj.uid:
            meta["uid"] = obj.uid
        if obj.terminating:
            meta["deletionTimestamp"] = "1970-01-01T00:00:00Z"
        if obj.static_ip:
            meta["annotations"] = {STATIC_IP_ANNOTATION: obj.static_ip}
        spec: dict[str, Any] = {}
        if obj.node_name:
            spec["nodeName"] = obj.node_name
        if obj.host_network:
            spec["hostNetwork"] = True
        container: dict[str, Any] = {"name": "main"}
        if obj.ports:
            container["ports"] = [
                {
                    **({"name": p.name} if p.name else {}),
                    "containerPort": p.port,
                    "protocol": p.protocol,
                }
                for p in obj.ports
            ]
        spec["containers"] = [container]
        status: dict[str, Any] = {
            "phase": obj.phase,
            "conditions": [{"type": "Ready", "status": "True" if obj.ready else "False"}],
        }
        if obj.ip is not None:
            status["podIP"] = obj.ip
            status["podIPs"] = [{"ip": obj.ip}]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
    raise TypeError(f"not a model object: {obj!r}")


def _meta(name: str, namespace: str | None, labels: Labels) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels.to_dict()
    return meta


# --------------------------------------------------------------------------- loading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when available
    """Safe loader that keeps timestamps as strings (as Kubernetes does)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def manifest_files(directory: str) -> list[str]:
    """The manifest files of a directory: *.yaml, *.yml, *.json, sorted by name, not recursive.
    Hidden files (a leading '.', e.g. editors' and atomic writers' temporaries) are skipped."""
    out = []
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(".") or not e.name.endswith(MANIFEST_SUFFIXES):
                continue
            try:
                if e.is_file():
                    out.append(e.name)
            except OSError:
                continue
    return [os.path.join(directory, n) for n in sorted(out)]


def _flatten(doc: object, where: str) -> Iterator[tuple[str, dict]]:
    """Yield (location, object) for a document, flattening `kind: List` / `kind: XList`."""
    if not isinstance(doc, Mapping):
        raise ModelError(
            f"must be a mapping (a Kubernetes object), got {_show(doc)}", document=where
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            raise ModelError(f"must be a list, got {_show(items)}", document=where, path="items")
        item_kind = kind[: -len("List")]  # "" for a plain List
        api_version = doc.get("apiVersion")
        for i, item in enumerate(items):
            iwhere = f"{where} items[{i}]"
            if item_kind and isinstance(item, Mapping) and "kind" not in item:
                # API list responses (PodList, ...) leave kind/apiVersion off their items
                item = {"kind": item_kind, **item}
                if api_version and "apiVersion" not in item:
                    item["apiVersion"] = api_version
            yield from _flatten(item, iwhere)
        return
    yield where, dict(doc)


def _documents(text: str, filename: str) -> list[tuple[str, dict]]:
    """(location, dict) for every non-empty object in a manifest's text."""
    out: list[tuple[str, dict]] = []
    if filename.endswith(".json"):
        if not text.strip():
            return out
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ModelError(f"invalid JSON: {e}", file=filename) from None
        try:
            out.extend(_flatten(doc, "document 1"))
        except ModelError as e:
            raise e.located(filename) from None
        return out
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        msg = str(e).replace('in "<unicode string>", ', "")
        raise ModelError(f"invalid YAML: {msg}", file=filename) from None
    for i, doc in enumerate(docs):
        if doc is None:
            continue  # empty document
        try:
            out.extend(_flatten(doc, f"document {i + 1}"))
        except ModelError as e:
            raise e.located(filename) from None
    return out


def _read(filename: str) -> str:
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read: {e.strerror or e}", file=filename) from None
    return _decode(data, filename)


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ModelError(f"not UTF-8: {e}", file=filename) from None


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        try:
            return manifest_files(path)
        except OSError as e:
            raise ModelError(f"cannot list directory: {e.strerror or e}", file=path) from None
    return [path]


def load_documents(path: str) -> list[dict]:
    """Kubernetes objects (plain dicts) from a file or a directory of manifests.

    A directory contributes its *.yaml, *.yml and *.json files (sorted, not recursive, hidden
    files skipped). YAML files may hold several documents; `kind: List` and `kind: XList` are
    flattened; empty documents are skipped. Errors (ModelError) name the file and document.
    """
    out: list[dict] = []
    for filename in _files(path):
        out.extend(d for _, d in _documents(_read(filename), filename))
    return out


def objects_from_text(text: str | bytes, filename: str) -> list[Object]:
    """Parse a manifest's content (named filename, whose suffix picks JSON or YAML)."""
    if isinstance(text, bytes):
        text = _decode(text, filename)
    out: list[Object] = []
    for where, doc in _documents(text, filename):
        try:
            out.append(parse(doc))
        except ModelError as e:
            raise e.located(filename, where) from None
    return out


def load_objects(path: str) -> list[Object]:
    """Parsed model objects from a file or a directory (see :func:`load_documents`)."""
    out: list[Object] = []
    for filename in _files(path):
        out.extend(objects_from_text(_read(filename), filename))
    return out
