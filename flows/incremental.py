"""Which policies a changed pod can affect: lets the agent recompute only those (pure).

A policy's flows depend on the pods it selects (its namespace), the pods its rule peers select
(its namespace, or namespaces a namespaceSelector picks), and for egress rules whose named ports
resolve against destinations — rules without peers, or with ipBlocks — on every pod. The test
is conservative: it may say yes for a pod that changes nothing, never no for one that does.
"""

from __future__ import annotations

from collections.abc import Callable

from flows.netpol import Policy, Rule


def _egress_wide(rule: Rule) -> bool:
    return not rule.never and (
        not rule.peers or any(peer.ip_block is not None for peer in rule.peers)
    )


def affects(pol: Policy, pod, ns_labels: Callable[[str], dict]) -> bool:
    """Can `pod` (a PodInfo, or None) change the flows of `pol`? Yes when the policy selects
    it on this node, when a rule peer selects it (anywhere), or when an egress rule resolves named ports against every
    pod (no peers, or ipBlocks)."""
    if pod is None:
        return False
    labels = pod.label_dict()
    # only this node's pods get flows of the policy's own (clause 1, isolation)
    if pod.local and pol.selects_pod(pod.namespace, labels):
        return True
    if "Egress" in pol.types and any(_egress_wide(r) for r in pol.egress):
        return True
    for rule in (*pol.ingress, *pol.egress):
        for peer in rule.peers:
            # CIDRs select no pod by labels: no pod in them changes an ingress rule's flows
            if peer.selects(pol.namespace, pod.namespace, labels, ns_labels(pod.namespace)):
                return True
    return False
