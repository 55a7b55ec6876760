"""Services: load-balancing flows per Service (ClusterIP, NodePort, LoadBalancer ingress,
externalIPs), recomputed only when the Service, its EndpointSlices, (derived endpoints) its
namespace's pods or the nodes' zones changed. What the host must do is returned, never done
here: the NodePort rules (`owners`' second value) and the external addresses to route into
br-int (`external_addrs`); the host side (agent/node.py) applies them."""

from __future__ import annotations

import dataclasses
import json

from flows import service_guard, services
from flows.policy import View
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.changes import Changes
from ovsctl.openflow import encode as ofconv


class ServiceReconciler:
    def __init__(
        self, cluster: dict, pod_cidr: str, skip: SkipLog, pod_cidrs=(), node_name: str = ""
    ):
        self.cluster = cluster
        self.pod_cidr = pod_cidr
        # this node's pod CIDRs, one per family (dual-stack): which endpoints are local
        # (externalTrafficPolicy and internalTrafficPolicy Local) and which families' node
        # ports and external addresses the node serves; () means (pod_cidr,)
        self.pod_cidrs: tuple[str, ...] = tuple(pod_cidrs)
        # this node's name: EndpointSlice endpoints whose nodeName it is are local; its Node's
        # zone label decides trafficDistribution
        self.node_name = node_name
        self.skip = skip
        self.cache: dict[tuple, tuple] = {}
        self.services: set[str] = set()  # Service owners with flows
        # what the last `owners` call found, for the host side and the views:
        # LoadBalancer ingress IPs and externalIPs of every Service (of the node's families),
        # which the host routes into br-int through the gateway
        self.external_addrs: frozenset[str] = frozenset()
        # "namespace/name" -> (Service, its endpoints) of every Service that parsed
        self.parsed: dict[str, tuple[services.Service, tuple[services.Endpoint, ...]]] = {}
        self._topology: tuple | None = None
        # ovsctl's LB pool (lbannounce.LBAnnouncer.assignments): called before each
        # computation; "namespace/name" -> addresses used as the ingress of a Service whose
        # status lacks them (a source that cannot be written: every agent computes the same)
        self.lb_assignments = None
        self._assigned: dict[str, tuple[str, ...]] = {}
        self.changes = Changes(cluster)
        # kept per changed object (see _take): (namespace, Service name) -> {EndpointSlice
        # key: body}; each slice's Service; the Services (in arrival order); node -> zone;
        # (namespace, pod) -> node; Services whose object or slices changed since owners()
        self._slices: dict[tuple, dict] = {}
        self._slice_of: dict[tuple, tuple] = {}
        self._services: dict[tuple, None] = {}
        self._zones: dict[str, str] = {}
        self._pod_nodes: dict[tuple[str, str], str] = {}
        self._dirty: set[tuple] = set()
        # the cluster CIDRs (config cluster_cidrs) and the operator's externalIPs allowlist
        # (config external_ip_cidrs; empty: any address service_guard does not refuse)
        self.cluster_cidrs: tuple[str, ...] = ()
        self.external_ip_cidrs: tuple[str, ...] = ()
        # service_guard's inputs and verdicts: the Nodes (addresses, pod CIDRs), each
        # Service parsed once per version, whether a Service or Node changed since
        self._nodes: dict[str, object] = {}
        self._parse_cache: dict[tuple, tuple] = {}
        self._verdicts: dict[str, service_guard.Verdict] = {}
        self._guard_dirty = True
        self._conf: tuple = ()

    def reset(self) -> None:
        """Forget every cache: the next computation starts from the whole cluster."""
        self.changes = Changes(self.cluster)
        self.cache, self.services, self._topology = {}, set(), None
        self._slices, self._services, self._zones, self._pod_nodes = {}, {}, {}, {}
        self._slice_of, self._dirty = {}, set()
        self._nodes, self._parse_cache, self._verdicts, self._guard_dirty = {}, {}, {}, True

    def topology(self) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        """(node name -> zone, (namespace, pod) -> node name) from the cluster objects."""
        self._take()
        return dict(self._zones), dict(self._pod_nodes)

    def _take(self) -> set:
        """Bring the indexes up to date with the changed keys: EndpointSlices by Service,
        the Services, zones, pods' nodes. Returns the Services whose inputs may have changed
        (their object or their EndpointSlices); they pile up until `owners` takes them."""
        for key in self.changes.take():
            kind, obj = key[0], self.cluster.get(key)
            if kind == "EndpointSlice":
                for owner in self._slice_of.pop(key, ()):
                    self._slices[owner].pop(key, None)
                    if not self._slices[owner]:
                        del self._slices[owner]
                    self._dirty.add(("Service", *owner))
                if obj is not None:
                    body = obj.obj()
                    svc = ((body.get("metadata") or {}).get("labels") or {}).get(
                        "kubernetes.io/service-name"
                    )
                    if svc:
                        self._slices.setdefault((key[1], svc), {})[key] = body
                        self._slice_of[key] = ((key[1], svc),)
                        self._dirty.add(("Service", key[1], svc))
            elif kind == "Service":
                self._guard_dirty = True
                if obj is None:
                    self._services.pop(key, None)
                else:
                    self._services.setdefault(key)
                self._dirty.add(key)
            elif kind == "Node":
                self._guard_dirty = True
                if obj is None:
                    self._zones.pop(key[2], None)
                    self._nodes.pop(key[2], None)
                else:
                    self._zones[key[2]] = obj.zone
                    self._nodes[key[2]] = obj
            elif kind == "Pod":
                if obj is not None and obj.node_name:
                    self._pod_nodes[(key[1], key[2])] = obj.node_name
                else:
                    self._pod_nodes.pop((key[1], key[2]), None)
        return self._dirty

    def owners(self, view: View, changed=(), everything: bool = True) -> tuple[dict, set]:
        """Flows of every Service (recomputed ones; Services that are gone map to an empty
        set), and the NodePort host rules every Service wants; `external_addrs` and `parsed`
        are updated too. Endpoints come from EndpointSlices, or from the selector when there
        are none (as the EndpointSlice controller would make them). A Service is recomputed
        when it or its EndpointSlices changed, when its LB pool addresses did, or (no
        EndpointSlices: endpoints from pods) when a pod of its namespace changed."""
        assigned = self._assigned
        if self.lb_assignments is not None:
            self._assigned = self.lb_assignments()
        dirty = set(self._take())
        self._dirty.clear()
        local = self.pod_cidrs or ((self.pod_cidr,) if self.pod_cidr else ())
        zones, pod_nodes = self._zones, self._pod_nodes
        if zones != self._topology:  # a zone label changed: trafficDistribution may move
            everything, self._topology = True, dict(zones)
        here = {"node_name": self.node_name, "zone": zones.get(self.node_name, "")}
        want: dict[str, frozenset] = {}
        changed_ns = {p.namespace for pair in changed for p in pair if p is not None}
        # recomputed whatever their inputs: every Service (everything), those whose
        # endpoints come from the pods of a namespace where a pod changed
        forced = set(self._services) if everything else set()
        for key in self._services:
            name = f"{key[1]}/{key[2]}"
            if assigned.get(name) != self._assigned.get(name):
                dirty.add(key)
            elif key[1] in changed_ns and (key[1], key[2]) not in self._slices:
                forced.add(key)
        dirty |= forced | (self.cache.keys() if everything else set())
        conf = (self.cluster_cidrs, self.external_ip_cidrs, local)
        if self._guard_dirty or everything or assigned != self._assigned or conf != self._conf:
            verdicts, self._guard_dirty, self._conf = self.screen(), False, conf
            for key in self._services:
                name = f"{key[1]}/{key[2]}"
                if verdicts.get(name) != self._verdicts.get(name):
                    dirty.add(key)
            self._verdicts = verdicts
        for key in dirty:
            obj = self.cluster.get(key) if key in self._services else None
            old = self.cache.pop(key, None)
            if obj is None:
                if old is not None:
                    want.update({o: frozenset() for o in old[1]})
                continue
            mine = self._slices.get((key[1], key[2]))
            mine = None if mine is None else list(mine.values())
            inputs = (obj, None if mine is None else json.dumps(mine, sort_keys=True))
            inputs = (*inputs, self._assigned.get(f"{key[1]}/{key[2]}"))
            inputs = (*inputs, self._verdicts.get(f"{key[1]}/{key[2]}"))
            if old is not None and old[0] == inputs and key not in forced:
                self.cache[key] = old
                continue
            topo = (local, here, zones, pod_nodes)
            hit = self.cache[key] = self._compute(key, inputs, mine, view, topo)
            want.update(hit[1])
            for o in old[1].keys() - hit[1].keys() if old is not None else ():
                want[o] = frozenset()
        node_ports: set[tuple[str, int, str]] = set()
        addrs: set[str] = set()
        parsed: dict[str, tuple] = {}
        for key in self._services:  # every Service's host rules (cheap: already computed)
            hit = self.cache[key]
            node_ports |= hit[2]
            addrs |= hit[3]
            if hit[4] is not None:
                parsed[f"{key[1]}/{key[2]}"] = hit[4]
        self.services = {o for hit in self.cache.values() for o, f in hit[1].items() if f}
        self.external_addrs, self.parsed = frozenset(addrs), parsed
        return want, node_ports

    def _compute(self, key, inputs, mine, view, topo) -> tuple:
        """(inputs, {owner: flows}, node-port entries, external addresses, (Service,
        endpoints) or None) of one Service; an unprogrammable one has no flows (its addresses
        lead nowhere) and is logged once."""
        local, here, zones, pod_nodes = topo
        try:
            svc = services.parse_service(inputs[0].obj())
            if inputs[2]:  # the LB pool's computed addresses (its status's kept)
                svc = dataclasses.replace(svc, lb_ingress=inputs[2])
            for note in svc.notes:
                self.skip(key, inputs, note)
            verdict = inputs[3]
            if verdict is not None:
                for why in verdict.messages(f"{key[1]}/{key[2]}"):
                    self.skip(key, inputs, why)
                svc = service_guard.apply(svc, verdict)
            skipped: list[str] = []
            if mine is not None:
                eps = services.endpoints_from_slices(mine, skipped)
            else:
                eps = services.endpoints_from_pods(svc, view.pods, pod_nodes, zones)
            for why in skipped:
                self.skip(key, inputs, f"Service {key[1]}/{key[2]}: {why}")
            lost = verdict.lost_frontends if verdict is not None else frozenset()
            sflows = services.service_flows(svc, eps, local, **here, excluded=lost)
            _unique(sflows, f"{key[1]}/{key[2]}")
            ofconv.check_encodable(sflows)
            return (
                inputs,
                {services.service_owner(svc): sflows},
                services.node_port_entries(svc, local),
                services.external_addresses(svc, local),
                (svc, tuple(eps)),
            )
        except Exception as e:  # noqa: BLE001 - one Service never stops the others
            self.skip(key, inputs, f"ignoring Service {key[1]}/{key[2]}: {e}")
            return (inputs, {}, set(), set(), None)

    def screen(self) -> dict[str, service_guard.Verdict]:
        """What each Service may not have of its external addresses (service_guard): from
        every Service (parsed once per version), every Node and the config."""
        pairs, cips, node_addrs = [], set(), set()
        pod_cidrs = set(self.cluster_cidrs) | set(self.pod_cidrs)
        parsed: dict[tuple, tuple] = {}
        for node in self._nodes.values():
            node_addrs |= {*node.addresses, *node.internal_ips}
            pod_cidrs |= set(node.pod_cidrs)
        for key in self._services:
            obj = self.cluster.get(key)
            if obj is None:
                continue
            hit = self._parse_cache.get(key)
            if hit is None or hit[0] != obj:
                try:
                    body = obj.obj()
                    svc = services.parse_service(body)
                    created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
                    hit = (obj, svc, created)
                except Exception:  # noqa: BLE001 - _compute logs it
                    hit = (obj, None, "")
            parsed[key] = hit
            if hit[1] is None:
                continue
            svc = hit[1]
            cips |= set(svc.cluster_ips)
            if self._assigned.get(svc.key):
                svc = dataclasses.replace(svc, lb_ingress=self._assigned[svc.key])
            pairs.append((svc, hit[2]))
        self._parse_cache = parsed
        facts = service_guard.Facts(
            tuple(sorted(pod_cidrs)),
            frozenset(cips),
            frozenset(node_addrs),
            tuple(self.external_ip_cidrs),
        )
        return service_guard.screen(pairs, facts)


def _unique(flows, ref: str) -> None:
    """Two different flows of one Service with the same table, priority and match would make
    the flow sync refuse the whole owner: refuse the Service here, naming it."""
    seen: dict[tuple, object] = {}
    for f in flows:
        if f.key in seen:
            raise services.ServiceError(
                f"Service {ref}: two different flows with the same match in table "
                f"{f.key[0]} priority {f.key[1]} (e.g. an externalIP that is also its "
                "ClusterIP): not programmed"
            )
        seen[f.key] = f
