"""Rendering a model object back to a minimal Kubernetes-shaped dict (:func:`to_dict`), such
that ``parse(to_dict(x)) == x``."""

from __future__ import annotations

from typing import Any

from ovsctl.k8s.kinds import STATIC_IP_ANNOTATION
from ovsctl.k8s.labels import Labels
from ovsctl.k8s.objects import Generic, Namespace, Node, Object, Pod

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
            d["spec"] = {"podCIDR": obj.pod_cidr, "podCIDRs": list(obj.pod_cidrs or [obj.pod_cidr])}
        if obj.addresses:  # InternalIPs (one per family, IPv4 first), then the others
            others = [a for a in obj.addresses if a not in obj.internal_ips]
            d["status"] = {
                "addresses": [{"type": "InternalIP", "address": a} for a in obj.internal_ips]
                + [{"type": "ExternalIP", "address": a} for a in others]
            }
        if not obj.ready:  # without a Ready condition a Node counts as ready
            d.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "False"}]
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
            status["podIPs"] = [{"ip": a} for a in obj.ips or (obj.ip,)]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
    raise TypeError(f"not a model object: {obj!r}")


def _meta(name: str, namespace: str | None, labels: Labels) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels.to_dict()
    return meta
