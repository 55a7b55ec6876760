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
    return not rule.peers or any(peer.ip_block is not None for peer in rule.peers)


def affects(pol: Policy, pod, ns_labels: Callable[[str], dict]) -> bool:
    """Can `pod` (a PodInfo, or None) change the flows of `pol`?"""
    if pod is None:
        return False
    if pod.namespace == pol.namespace:
        return True
    if "Egress" in pol.types and any(_egress_wide(r) for r in pol.egress):
        return True
    labels = None
    for rule in (*pol.ingress, *pol.egress):
        for peer in rule.peers:
            if peer.namespace_selector is not None:
                if labels is None:
                    labels = ns_labels(pod.namespace)
                if peer.namespace_selector.matches(labels):
                    return True
    return False
