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
from flows.family import ordered
from flows.policy import PodInfo, View
from ovsctl.agent import LOGGER
from ovsctl.agent.reconcile import SkipLog, finished
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow.controller import SyncError

log = logging.getLogger(LOGGER)


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
        self._view_pods: dict = {}
        self._pod_infos: dict[tuple, tuple] = {}
        self._view_ns: dict | None = None
        self.cache: dict[tuple, tuple] = {}
        # ClusterNetworkPolicy key -> (object, parsed or None, base priority, owners)
        self.cnp_cache: dict[tuple, tuple] = {}
        self._view_nodes: dict | None = None
        self.sync = None
        self.controller = None
        self.settle = lambda: None

    def view(self) -> View:
        namespaces, pods, nodes = {}, {}, {}
        infos = {}  # PodInfo per cluster Pod object, kept while the object is the same
        for key, obj in list(self.cluster.items()):
            if key[0] == "Namespace":
                namespaces[obj.name] = obj.labels_dict()
            elif key[0] == "Node":
                nodes[obj.name] = (tuple(sorted(obj.labels_dict().items())), obj.addresses)
            elif key[0] == "Pod" and not obj.host_network and obj.ip and not finished(obj):
                hit = self._pod_infos.get(key)
                if hit is not None and hit[0] is obj:
                    info = hit[1]
                else:
                    info = PodInfo(
                        obj.namespace,
                        obj.name,
                        tuple(sorted(obj.labels_dict().items())),
                        obj.ip,
                        tuple((cp.name, cp.port, cp.protocol) for cp in obj.ports),
                        ready=obj.ready,
                        terminating=obj.terminating,
                        ips=ordered(obj.ips),  # both addresses of a dual-stack pod
                    )
                infos[key] = (obj, info)
                pods[(obj.namespace, obj.name)] = info
        self._pod_infos = infos
        # a pod with several interfaces is one peer: its primary one (the default route's)
        # comes last and wins
        atts = list(self.store.pods.values())
        for att in sorted(atts, key=lambda a: (a.default_route, a.ifname == "eth0")):
            if att.ofport <= 0:
                continue
            obj = self.cluster.get(("Pod", att.namespace, att.name))
            if obj is not None and finished(obj):
                continue  # its sandbox goes soon; its IP is nobody's peer meanwhile
            labels = tuple(sorted(obj.labels_dict().items())) if obj is not None else ()
            ports = (
                tuple((cp.name, cp.port, cp.protocol) for cp in obj.ports)
                if obj is not None
                else ()
            )
            pods[(att.namespace, att.name)] = PodInfo(
                att.namespace,
                att.name,
                labels,
                att.ip,
                ports,
                local=True,
                ready=obj.ready if obj is not None else True,
                terminating=obj.terminating if obj is not None else False,
                # every address IPAM gave the interface (IPv4 first): policies select both
                ips=ordered(att.ips),
            )
        return View(namespaces, sorted(pods.values(), key=lambda p: (p.namespace, p.name)), nodes)

    def owners(self) -> dict:
        """Desired flows of the policy owners (rules and isolation) and Services that were
        recomputed; owners that are gone map to an empty set; unchanged owners are left out
        (the flow sync already holds them). Slots (priority + conjunction ids) stay with an owner
        while it lives. A Service is recomputed only when it, its EndpointSlices or (derived
        endpoints) its namespace's pods changed."""
        view = self.view()
        pods_now = {(p.namespace, p.name): p for p in view.pods}
        prev = self._view_pods
        changed = [
            (prev.get(k), pods_now.get(k))
            for k in set(prev) | set(pods_now)
            if prev.get(k) is not pods_now.get(k) and prev.get(k) != pods_now.get(k)
        ]
        everything = view.namespaces != self._view_ns
        want: dict[str, frozenset] = {}  # owners recomputed or gone (unchanged ones left out)
        live: dict[str, frozenset] = {}  # every policy owner there is
        cache: dict[tuple, tuple] = {}
        for key, obj in list(self.cluster.items()):
            if key[0] != "NetworkPolicy":
                continue
            hit = self.cache.get(key)
            if hit is not None and hit[0] == obj and not everything:
                pol = hit[1]
                if pol is None or not any(
                    incremental.affects(pol, p, view.ns_labels) for pair in changed for p in pair
                ):
                    cache[key] = hit
                    live.update(hit[2])  # unchanged: already in the flow sync as they are
                    continue
            try:
                pol = netpol.parse(obj.obj())
            except netpol.PolicyError as e:
                self.skip(key, obj, f"ignoring {e}")
                cache[key] = (obj, None, {})
                continue
            for why in pol.skipped:
                self.skip(key, obj, why)
            owners = self._programmable(key, obj, pol, view)
            cache[key] = (obj, pol, owners)
            want.update(owners)
            live.update(owners)
        self.cache = cache
        self._cluster_policies(view, changed, everything, want, live)
        for owner in set(self.slots) - set(live):
            want[owner] = frozenset()
            self._free_slots.append(self.slots.pop(owner))
        svc_owners, self.node_ports = self.svc.owners(view, changed, everything)
        want.update(svc_owners)
        self._view_pods, self._view_ns = pods_now, view.namespaces
        return want

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

    def _cluster_policies(self, view: View, changed, everything: bool, want, live) -> None:
        """The ClusterNetworkPolicy owners into `want` (recomputed) and `live` (all). An
        invalid policy installs nothing (logged once, naming the field); the others go on."""
        parsed = {}
        for key, obj in list(self.cluster.items()):
            if key[0] != "ClusterNetworkPolicy":
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
        nodes_changed = view.nodes != self._view_nodes
        self._view_nodes = view.nodes
        cache: dict[tuple, tuple] = {}
        for key, (obj, pol) in parsed.items():
            base = bases.get(pol.name) if pol is not None else None
            if pol is not None and base is None:
                self.skip(key, obj, f"ClusterNetworkPolicy {pol.name}: not installed: more "
                          f"than {tiers.MAX_POLICIES} policies in the {pol.tier} tier")  # fmt: skip
            if base is None:
                cache[key] = (obj, pol, None, {})
                continue
            hit = self.cnp_cache.get(key)
            if (
                hit is not None
                and hit[0] == obj
                and hit[2] == base
                and not everything
                and not (nodes_changed and _has_node_peers(pol))
                and not any(tiers.affects(pol, p, view) for pair in changed for p in pair)
            ):
                cache[key] = hit
                live.update(hit[3])
                continue
            owners = self._programmable_cnp(key, obj, pol, view, base)
            cache[key] = (obj, pol, base, owners)
            want.update(owners)
            live.update(owners)
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
