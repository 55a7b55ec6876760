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


class Index:
    """Which policies a changed pod can affect, without asking every policy: each policy is
    filed under its own namespace (the pods it selects and its same-namespace peers), under
    each namespace selector of its peers, or as "wide" (an egress rule that resolves against
    every pod). `candidates` is a superset of the policies `affects` says yes for; the caller
    asks `affects` of those only."""

    def __init__(self) -> None:
        self._where: dict = {}  # policy key -> (namespace, namespace selectors, wide)
        self._by_ns: dict[str, set] = {}
        self._by_sel: dict = {}  # namespace selector -> policy keys
        self._wide: set = set()

    def __len__(self) -> int:
        return len(self._where)

    def add(self, key, pol: Policy | None) -> None:
        """File `key` (replacing what it was); None: a policy that depends on no pod."""
        self.remove(key)
        if pol is None:
            return
        sels = {
            peer.namespace_selector
            for rule in (*pol.ingress, *pol.egress)
            for peer in rule.peers
            if peer.namespace_selector is not None and peer.ip_block is None
        }
        wide = "Egress" in pol.types and any(_egress_wide(r) for r in pol.egress)
        self._where[key] = (pol.namespace, sels, wide)
        self._by_ns.setdefault(pol.namespace, set()).add(key)
        for sel in sels:
            self._by_sel.setdefault(sel, set()).add(key)
        if wide:
            self._wide.add(key)

    def remove(self, key) -> None:
        where = self._where.pop(key, None)
        if where is None:
            return
        ns, sels, _ = where
        self._by_ns[ns].discard(key)
        if not self._by_ns[ns]:
            del self._by_ns[ns]
        for sel in sels:
            self._by_sel[sel].discard(key)
            if not self._by_sel[sel]:
                del self._by_sel[sel]
        self._wide.discard(key)

    def namespace_moved(self, before: dict, after: dict) -> set:
        """The policies whose flows a namespace's labels going from `before` to `after` may
        change: those with a namespace selector that says otherwise for the two (the only
        part of a NetworkPolicy that reads namespace labels)."""
        out: set = set()
        for sel, keys in self._by_sel.items():
            if sel.matches(before) != sel.matches(after):
                out |= keys
        return out

    def candidates(self, pod, ns_labels: Callable[[str], dict]) -> set:
        """The policies `pod` (a PodInfo, or None) may affect."""
        if pod is None:
            return set()
        out = set(self._wide)
        out |= self._by_ns.get(pod.namespace, set())
        labels = ns_labels(pod.namespace)
        for sel, keys in self._by_sel.items():
            if sel.matches(labels):
                out |= keys
        return out
