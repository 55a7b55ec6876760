"""Services: ClusterIP/NodePort load-balancing flows per Service, recomputed only when the
Service, its EndpointSlices or (derived endpoints) its namespace's pods changed. The NodePort
host rules are returned, never written here: the host side (agent/node.py) applies them."""

from __future__ import annotations

import json

from flows import services
from flows.policy import View
from ovsctl.agent.reconcile import SkipLog
from ovsctl.openflow import encode as ofconv


class ServiceReconciler:
    def __init__(self, cluster: dict, pod_cidr: str, skip: SkipLog, pod_cidrs=()):
        self.cluster = cluster
        self.pod_cidr = pod_cidr
        # this node's pod CIDRs, one per family (dual-stack): which endpoints are local
        # (externalTrafficPolicy Local) and which families' node ports the node serves;
        # () means (pod_cidr,)
        self.pod_cidrs: tuple[str, ...] = tuple(pod_cidrs)
        self.skip = skip
        self.cache: dict[tuple, tuple] = {}
        self.services: set[str] = set()  # Service owners with flows

    def owners(self, view: View, changed=(), everything: bool = True) -> tuple[dict, set]:
        """Flows of every Service (recomputed ones; Services that are gone map to an empty
        set), and the NodePort host rules every Service wants. Endpoints come from
        EndpointSlices, or from the selector when there are none (as the EndpointSlice
        controller would make them)."""
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
        want: dict[str, frozenset] = {}
        node_ports: set[tuple[str, int, str]] = set()
        changed_ns = {p.namespace for pair in changed for p in pair if p is not None}
        live: dict[str, frozenset] = {}
        cache: dict[tuple, tuple] = {}
        for key, obj in list(self.cluster.items()):
            if key[0] != "Service":
                continue
            mine = slices.get((key[1], key[2]))
            inputs = (obj, None if mine is None else json.dumps(mine, sort_keys=True))
            hit = self.cache.get(key)
            if (
                hit is not None
                and hit[0] == inputs
                and not everything
                and (mine is not None or key[1] not in changed_ns)
            ):
                cache[key] = hit
                live.update(hit[1])
                node_ports |= hit[2]
                continue
            try:
                svc = services.parse_service(obj.obj())
                skipped: list[str] = []
                if mine is not None:
                    eps = services.endpoints_from_slices(mine, skipped)
                else:
                    eps = services.endpoints_from_pods(svc, view.pods)
                for why in skipped:
                    self.skip(key, inputs, f"Service {key[1]}/{key[2]}: {why}")
                owner = services.service_owner(svc)
                sflows = services.service_flows(svc, eps, local)
                ofconv.check_encodable(sflows)
                flows = {owner: sflows}
                ports = services.node_port_entries(svc, local)
            except Exception as e:  # noqa: BLE001 - one Service never stops the others
                # unprogrammable: no flows (its address leads nowhere), logged once
                self.skip(key, inputs, f"ignoring Service {key[1]}/{key[2]}: {e}")
                cache[key] = (inputs, {}, set())
                continue
            cache[key] = (inputs, flows, ports)
            want.update(flows)
            live.update(flows)
            node_ports |= ports
        self.cache = cache
        for owner in self.services - set(live):
            want[owner] = frozenset()
        self.services = {o for o, f in live.items() if f}
        return want, node_ports
