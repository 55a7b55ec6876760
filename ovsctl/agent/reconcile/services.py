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
        # the cluster CIDRs (config cluster_cidrs) and the operator's externalIPs allowlist
        # (config external_ip_cidrs; empty: any address service_guard does not refuse)
        self.cluster_cidrs: tuple[str, ...] = ()
        self.external_ip_cidrs: tuple[str, ...] = ()
        self._parse_cache: dict[tuple, tuple] = {}

    def topology(self) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        """(node name -> zone, (namespace, pod) -> node name) from the cluster objects."""
        zones, pod_nodes = {}, {}
        for key, obj in list(self.cluster.items()):
            if key[0] == "Node":
                zones[key[2]] = obj.zone
            elif key[0] == "Pod" and obj.node_name:
                pod_nodes[(key[1], key[2])] = obj.node_name
        return zones, pod_nodes

    def owners(self, view: View, changed=(), everything: bool = True) -> tuple[dict, set]:
        """Flows of every Service (recomputed ones; Services that are gone map to an empty
        set), and the NodePort host rules every Service wants; `external_addrs` and `parsed`
        are updated too. Endpoints come from EndpointSlices, or from the selector when there
        are none (as the EndpointSlice controller would make them)."""
        if self.lb_assignments is not None:
            self._assigned = self.lb_assignments()
        slices: dict[tuple[str, str], list[dict]] = {}
        for key, obj in list(self.cluster.items()):
            if key[0] == "EndpointSlice":
                body = obj.obj()
                svc = ((body.get("metadata") or {}).get("labels") or {}).get(
                    "kubernetes.io/service-name"
                )
                if svc:
                    slices.setdefault((key[1], svc), []).append(body)
        local = self.pod_cidrs or ((self.pod_cidr,) if self.pod_cidr else ())
        zones, pod_nodes = self.topology()
        if zones != self._topology:  # a zone label changed: trafficDistribution may move
            everything, self._topology = True, zones
        here = {"node_name": self.node_name, "zone": zones.get(self.node_name, "")}
        want: dict[str, frozenset] = {}
        node_ports: set[tuple[str, int, str]] = set()
        addrs: set[str] = set()
        parsed: dict[str, tuple] = {}
        changed_ns = {p.namespace for pair in changed for p in pair if p is not None}
        live: dict[str, frozenset] = {}
        cache: dict[tuple, tuple] = {}
        verdicts = self.screen()
        for key, obj in list(self.cluster.items()):
            if key[0] != "Service":
                continue
            mine = slices.get((key[1], key[2]))
            inputs = (obj, None if mine is None else json.dumps(mine, sort_keys=True))
            inputs = (*inputs, self._assigned.get(f"{key[1]}/{key[2]}"))
            inputs = (*inputs, verdicts.get(f"{key[1]}/{key[2]}"))
            hit = self.cache.get(key)
            if (
                hit is not None
                and hit[0] == inputs
                and not everything
                and (mine is not None or key[1] not in changed_ns)
            ):
                cache[key] = hit
            else:
                topo = (local, here, zones, pod_nodes)
                hit = cache[key] = self._compute(key, inputs, mine, view, topo)
                want.update(hit[1])
            live.update(hit[1])
            node_ports |= hit[2]
            addrs |= hit[3]
            if hit[4] is not None:
                parsed[f"{key[1]}/{key[2]}"] = hit[4]
        self.cache = cache
        for owner in self.services - set(live):
            want[owner] = frozenset()
        self.services = {o for o, f in live.items() if f}
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
        for key, obj in list(self.cluster.items()):
            if key[0] == "Node":
                node_addrs |= {*obj.addresses, *obj.internal_ips}
                pod_cidrs |= set(obj.pod_cidrs)
                continue
            if key[0] != "Service":
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
