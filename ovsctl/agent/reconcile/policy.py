"""NetworkPolicy, ClusterNetworkPolicy (and, through services.py, Service) owners, computed
incrementally: a policy is recomputed only when it changed, when the namespaces changed, or
when a pod changed that it may depend on (flows/incremental.py, flows/tiers.affects); a
ClusterNetworkPolicy also when its flow priorities moved (another policy of its tier came
before it) or, with `nodes` peers, when the Nodes changed."""

from __future__ import annotations

import logging
import threading
import time

from flows import cnp, incremental, netpol, policy, tiers
from flows.policy import View
from ovsctl.agent import LOGGER
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.changes import Changes
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.agent.reconcile.viewindex import ViewIndex
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow.controller import SyncError

log = logging.getLogger(LOGGER)
NS_NAME = "kubernetes.io/metadata.name"  # the labels of a namespace with no object (View)


class PolicyReconciler:
    def __init__(self, cluster: dict, store, svc: ServiceReconciler, skip: SkipLog,
                 on_node_ports=None):  # fmt: skip
        self.cluster = cluster
        self.store = store  # pods.PodStore: the local attachments
        self.svc = svc
        self.skip = skip
        self.on_node_ports = on_node_ports  # the host applies the NodePort rules Services want
        # the host routes/announces the external addresses: (external_addrs, parsed Services)
        self.on_external = None
        self.node_ports: set = set()  # what the last computation wants (not written here)
        self.lock = threading.RLock()
        self.slots: dict[str, int] = {}
        self._free_slots: list[int] = []
        self.changes = Changes(cluster)
        self.index = ViewIndex(cluster, store)
        self.np_index = incremental.Index()  # which NetworkPolicies a pod may affect
        self.cache: dict[tuple, tuple] = {}  # NetworkPolicy key -> (object, parsed, owners)
        # ClusterNetworkPolicy key -> (object, parsed or None, base priority, owners)
        self.cnp_cache: dict[tuple, tuple] = {}
        self._cnp_keys: dict[tuple, None] = {}  # the ClusterNetworkPolicies, in arrival order
        self._live: set[str] = set()  # every policy owner there is
        self._fresh: list[str] = []  # owners given a slot in this computation
        self.sync = None
        self.controller = None
        self.settle = lambda: None

    def reset(self) -> None:
        """Forget every cache: the next computation starts from the whole cluster."""
        self.changes = Changes(self.cluster)
        self.index = ViewIndex(self.cluster, self.store)
        self.np_index = incremental.Index()
        self.cache, self.cnp_cache, self._cnp_keys = {}, {}, {}
        self._live = set()
        self.svc.reset()

    def view(self) -> View:
        """The View of the cluster as it is now (the changes that made it are kept for the
        next `owners`)."""
        return self.index.update(self.changes.take())

    def owners(self) -> dict:
        """Desired flows of the policy owners (rules and isolation) and Services that were
        recomputed; owners that are gone map to an empty set; unchanged owners are left out
        (the flow sync already holds them). Slots (priority + conjunction ids) stay with an owner
        while it lives. The cost follows what changed: the View is updated per changed object,
        and only the policies a changed pod may affect (incremental.Index, then
        incremental.affects) are asked. A Service is recomputed only when it, its
        EndpointSlices or (derived endpoints) its namespace's pods changed."""
        view = self.view()
        delta = self.index.take()
        changed, everything = delta.changed, delta.namespaces
        want: dict[str, frozenset] = {}  # owners recomputed or gone (unchanged ones left out)
        todo = {k for k in delta.keys if k[0] == "NetworkPolicy"}
        if everything and not delta.ns_before:
            todo |= self.cache.keys()
        else:
            for ns, before in delta.ns_before.items():  # only namespace selectors read labels
                after = view.namespaces.get(ns)
                todo |= self.np_index.namespace_moved(
                    before or {NS_NAME: ns}, after or {NS_NAME: ns}
                )
            for pod in {p for pair in changed for p in pair if p is not None}:
                for key in self.np_index.candidates(pod, view.ns_labels) - todo:
                    if not pod.local and self._idle(key):
                        continue  # selects no pod of this node: a peer gives it no flows
                    if incremental.affects(self.cache[key][1], pod, view.ns_labels):
                        todo.add(key)
        for key in todo:
            self._network_policy(key, view, want)
        self._cluster_policies(view, delta, want)
        for owner in self._fresh:  # given a slot, then left out (a rule that failed)
            if owner not in self._live and owner in self.slots:
                self._release(owner, want)
        self._fresh = []
        svc_owners, self.node_ports = self.svc.owners(view, changed, everything)
        want.update(svc_owners)
        return want

    def _idle(self, key: tuple) -> bool:
        """A NetworkPolicy that selects no pod of this node has no flows here (its rules and
        isolation are all about this node's pods), whatever its peers are: until one of this
        node's pods (a local one, which is asked about as usual) or the policy changes. At
        50,000 pods most policies a new pod is a peer of are such (the scale bench)."""
        hit = self.cache.get(key)
        return hit is not None and hit[1] is not None and not any(hit[2].values())

    def _network_policy(self, key: tuple, view: View, want: dict) -> None:
        """Recompute one NetworkPolicy (changed, gone, or a pod it may select changed)."""
        obj = self.cluster.get(key)
        hit = self.cache.get(key)
        old = hit[2] if hit is not None else {}
        if obj is None:
            self.cache.pop(key, None)
            self.np_index.remove(key)
            self._replace(old, {}, want)
            return
        if hit is not None and hit[0] == obj:
            pol = hit[1]
            if pol is None:
                return  # unreadable, and still the same object
        else:
            try:
                pol = netpol.parse(obj.obj())
            except netpol.PolicyError as e:
                self.skip(key, obj, f"ignoring {e}")
                self.cache[key] = (obj, None, {})
                self.np_index.remove(key)
                self._replace(old, {}, want)
                return
            for why in pol.skipped:
                self.skip(key, obj, why)
        owners = self._programmable(key, obj, pol, view)
        self.cache[key] = (obj, pol, owners)
        self.np_index.add(key, pol)
        self._replace(old, owners, want)

    def _replace(self, old: dict, new: dict, want: dict) -> None:
        """A policy's owners were `old` and are now `new`: the new ones go into `want`, the
        ones gone get an empty set and give their slot back."""
        for owner in old.keys() - new.keys():
            self._live.discard(owner)
            self._release(owner, want)
        self._live.update(new)
        want.update(new)

    def _release(self, owner: str, want: dict) -> None:
        want[owner] = frozenset()
        if owner in self.slots:
            self._free_slots.append(self.slots.pop(owner))

    def _programmable(self, key: tuple, obj, pol, view: View) -> dict:
        """A policy's owners and flows, each checked to encode. A rule whose flows cannot be
        computed or encoded is left out (logged once); the isolation drops always go in, so a
        policy the node cannot fully program closes more, never less."""
        try:
            computed = policy.policy_flows(pol, view, self.slot)
        except Exception as e:  # noqa: BLE001 - fall back to isolation only
            self.skip(key, obj, f"NetworkPolicy {pol.key}: rules not programmed: {e}")
            iso = policy.isolation_owner(pol)
            computed = {iso: policy.isolation_flows(pol, view, self.slot(iso))}
        return self._encodable(key, obj, computed)

    def _cluster_policies(self, view: View, delta, want: dict) -> None:
        """The ClusterNetworkPolicy owners recomputed (or gone) into `want`. An invalid policy
        installs nothing (logged once, naming the field); the others go on. Every policy is
        looked at per computation (their flow priorities depend on each other): there are
        few of them."""
        for key in delta.keys:
            if key[0] == "ClusterNetworkPolicy":
                if key in self.cluster:
                    self._cnp_keys.setdefault(key)
                else:
                    self._cnp_keys.pop(key, None)
        parsed = {}
        for key in self._cnp_keys:
            obj = self.cluster.get(key)
            if obj is None:  # gone since its key was taken: the next change says so
                continue
            hit = self.cnp_cache.get(key)
            if hit is not None and hit[0] == obj:
                parsed[key] = (obj, hit[1])
                continue
            try:
                parsed[key] = (obj, cnp.parse(obj.obj()))
                for rule in (*parsed[key][1].ingress, *parsed[key][1].egress):
                    if rule.closed:
                        self.skip(key, obj, f"ClusterNetworkPolicy {key[2]}: {rule.closed}")
            except cnp.CNPError as e:
                self.skip(key, obj, f"ignoring {e}; nothing of it is installed")
                parsed[key] = (obj, None)
        bases = tiers.base_priorities([p for _, p in parsed.values() if p is not None])
        everything, nodes_changed = delta.namespaces, delta.nodes
        pods = {p for pair in delta.changed for p in pair if p is not None}
        cache: dict[tuple, tuple] = {}
        for key, (obj, pol) in parsed.items():
            base = bases.get(pol.name) if pol is not None else None
            hit = self.cnp_cache.get(key)
            old = hit[3] if hit is not None else {}
            if pol is not None and base is None:
                self.skip(key, obj, f"ClusterNetworkPolicy {pol.name}: not installed: more "
                          f"than {tiers.MAX_POLICIES} policies in the {pol.tier} tier")  # fmt: skip
            if base is None:
                cache[key] = (obj, pol, None, {})
                self._replace(old, {}, want)
                continue
            if (
                hit is not None
                and hit[0] == obj
                and hit[2] == base
                and not everything
                and not (nodes_changed and _has_node_peers(pol))
                and not any(tiers.affects(pol, p, view) for p in pods)
            ):
                cache[key] = hit
                continue
            owners = self._programmable_cnp(key, obj, pol, view, base)
            cache[key] = (obj, pol, base, owners)
            self._replace(old, owners, want)
        for key in self.cnp_cache.keys() - cache.keys():  # gone
            self._replace(self.cnp_cache[key][3], {}, want)
        self.cnp_cache = cache

    def _programmable_cnp(self, key, obj, pol, view: View, base: int) -> dict:
        """A ClusterNetworkPolicy's rule owners, each checked to encode; a rule that cannot be
        is left out (logged once, naming the owner)."""
        try:
            computed = tiers.policy_flows(pol, view, self.slot, base)
        except Exception as e:  # noqa: BLE001 - this policy only
            self.skip(key, obj, f"ClusterNetworkPolicy {pol.name}: not programmed: {e}")
            return {}
        return self._encodable(key, obj, computed)

    def _encodable(self, key, obj, computed: dict) -> dict:
        """Each owner's flows, or none for an owner whose flows the switch could not take
        (logged once; the others go on)."""
        owners: dict[str, frozenset] = {}
        for owner, flows in computed.items():
            try:
                ofconv.check_encodable(flows)
            except Exception as e:  # noqa: BLE001 - this owner only
                self.skip(key, obj, f"{owner}: not programmed: {type(e).__name__}: {e}")
                flows = frozenset()
            owners[owner] = flows
        return owners

    def slot(self, owner: str) -> int:
        if owner not in self.slots:
            self._fresh.append(owner)
            if self._free_slots:
                self.slots[owner] = self._free_slots.pop()
            else:
                self.slots[owner] = len(self.slots)
        return self.slots[owner]

    def stage_with(self, extra: dict) -> set:
        """Stage the policy/Service owners a change needs together with `extra` (a pod's own
        flows): one set of keys, so they go to the switch in ONE bundle."""
        with self.lock:
            owners = self.owners()
            owners.update(extra)
            keys = self._stage(owners)
            self._host(self.node_ports)  # under the lock: the host sees the sets in order
        return keys

    def _stage(self, owners: dict, set_owner=None) -> set:
        """Stage owner by owner: one the flow sync refuses (two different flows with the same
        match: ValueError) keeps its old flows and is logged once; the others still go."""
        keys: set = set()
        for owner, flows in owners.items():
            try:
                if set_owner is None:
                    keys |= self.controller.stage({owner: flows})
                else:
                    set_owner(owner, flows)
            except ValueError as e:
                self.skip(("owner", owner), frozenset(flows), f"{owner}: not programmed: {e}")
        return keys

    def _host(self, node_ports: set) -> None:
        """Hand the NodePort rules to the host side, after (never inside) the computation:
        node.NodeHost writes them when they changed."""
        if self.on_node_ports is not None:
            self.on_node_ports(node_ports)
        if self.on_external is not None:
            self.on_external(self.svc.external_addrs, self.svc.parsed)

    def apply(self, push: bool) -> None:
        t0 = time.monotonic()
        with self.lock:
            owners = self.owners()
            if push:
                keys = self._stage(owners)
            else:
                self._stage(owners, self.sync.set_owner)
            self._host(self.node_ports)  # under the lock: the host sees the sets in order
        if not push:
            return
        computed = time.monotonic() - t0
        try:
            n = self.controller.push(keys, wait=False)
            if n:
                log.info(
                    "policy/services: %d owners recomputed in %.1f ms, %d flow changes sent "
                    "in %.1f ms",
                    len(owners),
                    computed * 1000,
                    n,
                    (time.monotonic() - t0 - computed) * 1000,
                )
        except SyncError as e:
            log.warning("policy flows not pushed now (%s); the next round has them", e)
        self.settle()


def _has_node_peers(pol) -> bool:
    return any(p.kind == "nodes" for r in pol.egress for p in r.peers)
