"""The accepted kinds (the one table of them), the model's constants and its error type."""

from __future__ import annotations

from typing import NamedTuple

STATIC_IP_ANNOTATION = "ovsctl.io/ip-address"  # a pod's static IP (as Kube-OVN offers)
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ZONE_LABEL = "topology.kubernetes.io/zone"  # a Node's zone (trafficDistribution)
DEFAULT_NAMESPACE = "default"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")

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
    # a cluster-scoped kind whose metadata.namespace must be absent (rather than ignored, as
    # for Nodes and Namespaces): a namespace there is a misunderstanding of the object's scope
    no_namespace: bool = False


# The one list of accepted kinds, in dependency order: a batch of events applies additions and
# modifications in this order (namespaces and nodes first, policies before the pods they select,
# pods last) and deletions in the reverse order.
KINDS: dict[str, KindInfo] = {
    "Namespace": KindInfo("v1", False, "label"),
    "Node": KindInfo("v1", False, "subdomain"),
    "NetworkPolicy": KindInfo("networking.k8s.io/v1", True, "subdomain"),
    "ClusterNetworkPolicy": KindInfo("policy.networking.k8s.io/v1alpha2", False, "subdomain", True),
    "Service": KindInfo("v1", True, "1035"),
    "EndpointSlice": KindInfo("discovery.k8s.io/v1", True, "subdomain"),
    "Pod": KindInfo("v1", True, "subdomain"),
}
ACCEPTED_KINDS: tuple[str, ...] = tuple(KINDS)
KIND_RANK: dict[str, int] = {k: i for i, k in enumerate(ACCEPTED_KINDS)}
