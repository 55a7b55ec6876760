"""The typed, immutable model objects: :class:`Node`, :class:`Namespace`, :class:`Pod`
(with :class:`ContainerPort`) and :class:`Generic`; ``Object`` is their union."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ovsctl.k8s.kinds import NAMESPACE_NAME_LABEL, PROTOCOLS, ZONE_LABEL, ModelError
from ovsctl.k8s.labels import Labels, _canonical_cidr, _canonical_ip, _norm, _show

# --------------------------------------------------------------------------- model objects


class _LabelledMixin:
    __slots__ = ()  # the model classes are slotted: no __dict__ per object
    labels: Labels

    def labels_dict(self) -> dict[str, str]:
        return self.labels.to_dict()


@dataclass(frozen=True, slots=True)
class Node(_LabelledMixin):
    """A cluster node. ``pod_cidr`` and ``internal_ip`` are None until the node has them.
    A dual-stack node has one pod CIDR and one InternalIP per family in ``pod_cidrs`` and
    ``internal_ips`` (IPv4 first); ``pod_cidr`` is the first pod CIDR and ``internal_ip`` the
    first IPv4 InternalIP (the tunnel endpoint)."""

    kind: ClassVar[str] = "Node"
    name: str
    pod_cidr: str | None = None
    internal_ip: str | None = None
    labels: Labels = field(default_factory=Labels)
    pod_cidrs: tuple[str, ...] = ()
    internal_ips: tuple[str, ...] = ()
    # status.conditions Ready is "True" (a node without that condition counts as ready)
    ready: bool = True
    # every IP address of status.addresses (InternalIP and ExternalIP, either family);
    # () = internal_ips
    addresses: tuple[str, ...] = ()

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
        cidrs = tuple(_norm(_canonical_cidr, c, ref, "pod_cidrs") for c in self.pod_cidrs)
        if not cidrs and self.pod_cidr is not None:
            cidrs = (self.pod_cidr,)
        object.__setattr__(self, "pod_cidrs", cidrs)
        ips = tuple(_norm(_canonical_ip, a, ref, "internal_ips") for a in self.internal_ips)
        if not ips and self.internal_ip is not None:
            ips = (self.internal_ip,)
        object.__setattr__(self, "internal_ips", ips)
        addrs = tuple(_norm(_canonical_ip, a, ref, "addresses") for a in self.addresses)
        object.__setattr__(self, "addresses", addrs or ips)

    @property
    def namespace(self) -> str:
        return ""

    @property
    def zone(self) -> str:
        """Its label topology.kubernetes.io/zone ("" without one)."""
        return self.labels.to_dict().get(ZONE_LABEL, "")

    @property
    def key(self) -> tuple[str, str, str]:
        return ("Node", "", self.name)

    @property
    def ref(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
    # every address of a dual-stack pod (status.podIPs), one per family, IPv4 first; `ip` is
    # status.podIP (the primary). Default: (ip,)
    ips: tuple[str, ...] = ()

    def __post_init__(self):
        if type(self.labels) is not Labels:  # parsing shares one Labels per label set: kept
            object.__setattr__(self, "labels", Labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))
        ref = f"Pod {self.namespace}/{self.name}"
        if self.ip is not None:
            ip = _norm(_canonical_ip, self.ip, ref, "ip")
            object.__setattr__(self, "ip", ip)
        ips = tuple(_norm(_canonical_ip, a, ref, "ips") for a in self.ips)
        if not ips and self.ip is not None:
            ips = (self.ip,)
        # status.podIPs repeats status.podIP: one string for both
        ips = tuple(self.ip if a == self.ip else a for a in ips)
        object.__setattr__(self, "ips", ips)

    @property
    def key(self) -> tuple[str, str, str]:
        return ("Pod", self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Generic:
    """An accepted kind that is not modeled yet (NetworkPolicy, ClusterNetworkPolicy, Service,
    EndpointSlice).

    ``body`` is the canonical JSON of the object (sorted keys, metadata.namespace filled in for
    a namespaced kind and absent for a cluster-scoped one,
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
