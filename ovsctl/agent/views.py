"""The agent's views, /status /flows /cluster: the one JSON schema the tools read."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict

from flows import cookie, services, tables
from ovsctl.agent.reconcile import finished
from ovsctl.agent.reconcile.lbpool import LB_CLASS


class Views:
    """Read-only JSON of the agent's state. No agent lock is taken: CNI never waits for a
    view (each view copies what it reads first)."""

    def __init__(self, agent):
        self.a = agent

    def cluster_view(self) -> dict:
        """The cluster as this agent sees it (for trace and reachability): nodes, pods with
        labels, IPs and ports, Services with their frontends, and NetworkPolicies and
        ClusterNetworkPolicies as given (``cluster_network_policies``: sorted by name)."""
        nodes, pods, svcs, pols, nss, cnps = [], [], [], [], [], []
        # copies first (no agent lock is taken: CNI never waits for a view)
        cluster, attachments = list(self.a.cluster.items()), list(self.a.pods.values())
        parsed, holders = self._lb_state()
        for key, obj in sorted(cluster, key=lambda kv: kv[0]):
            kind = key[0]
            if kind == "Node":
                nodes.append(
                    {
                        "name": obj.name,
                        "ip": obj.internal_ip,
                        "pod_cidr": obj.pod_cidr,
                        # dual-stack: one of each per family, IPv4 first (reachability, trace)
                        "ips": list(obj.internal_ips),
                        "pod_cidrs": list(obj.pod_cidrs),
                        "labels": obj.labels_dict(),  # ClusterNetworkPolicy `nodes` peers
                        "addresses": list(obj.addresses),  # every IP of status.addresses
                    }
                )
            elif kind == "Namespace":
                nss.append({"name": obj.name, "labels": obj.labels_dict()})
            elif kind == "Pod":
                pods.append(
                    {
                        "namespace": obj.namespace,
                        "name": obj.name,
                        "node": obj.node_name,
                        # a Succeeded/Failed pod holds no address: its IP may be another's
                        "ip": None if finished(obj) else obj.ip,
                        "ips": [] if finished(obj) else list(obj.ips),  # every family's
                        "phase": obj.phase,
                        "labels": obj.labels_dict(),
                        "ports": [[p.name, p.port, p.protocol] for p in obj.ports],
                        "ready": obj.ready,
                        "host_network": obj.host_network,
                    }
                )
            elif kind == "Service":
                svc = self._service(key, obj, parsed)
                if svc is None:
                    continue
                svcs.append(
                    {
                        "namespace": svc.namespace,
                        "name": svc.name,
                        "cluster_ip": svc.cluster_ip,
                        "cluster_ips": list(svc.cluster_ips),  # one per family, primary first
                        "type": svc.type,
                        **self._addresses(svc, holders),
                        "ports": [
                            {
                                "name": sp.name,
                                "port": sp.port,
                                "protocol": sp.protocol,
                                "node_port": sp.node_port,
                            }
                            for sp in svc.ports
                        ],
                    }
                )
            elif kind == "NetworkPolicy":
                pols.append(obj.obj())
            elif kind == "ClusterNetworkPolicy":  # cluster-scoped: sorted by name
                cnps.append(obj.obj())
        local = {
            (a.namespace, a.name): {
                "ofport": a.ofport,
                "mac": a.mac,
                "key": a.key,
                "ips": list(a.ips),
            }
            for a in attachments
        }
        for p in pods:
            p["local"] = local.get((p["namespace"], p["name"]))
        node = self.a.node
        return {
            "node": self.a.cfg.node_name,
            "node_ip": self.a.node_ip,
            "node_ips": list(self.a.node_ips),
            "gateway": (
                {
                    "ip": node.gw_ip,
                    "mac": node.gw_mac,
                    "ofport": node.gw_ofport,
                    "ips": list(node.gw_ips),
                }
                if node
                else None
            ),
            "tunnel_ofport": self.a.overlay.tun_ofport if self.a.overlay else None,
            "cluster_cidr": self.a.cfg.cluster_cidr,
            "cluster_cidrs": list(self.a.cfg.cluster_cidrs or [self.a.cfg.cluster_cidr]),
            "pod_cidrs": list(self.a.pod_cidrs),
            "nodes": nodes,
            "namespaces": nss,
            "pods": pods,
            "services": svcs,
            "policies": pols,
            "cluster_network_policies": cnps,
        }

    def _lb_state(self) -> tuple[dict, dict]:
        """(the Services as last computed, {announced address: holder}), copied."""
        lb, svcs = getattr(self.a, "lb", None), getattr(self.a, "services", None)
        parsed = dict(svcs.parsed) if svcs is not None else {}
        return parsed, dict(lb.holders) if lb is not None else {}

    @staticmethod
    def _service(key, obj, parsed):
        """The Service as the flows see it (with the LB pool's computed addresses when the
        source cannot be written), else as parsed; None when it does not parse."""
        hit = parsed.get(f"{key[1]}/{key[2]}")
        if hit is not None:
            return hit[0]
        try:
            return services.parse_service(obj.obj())
        except services.ServiceError:
            return None

    @staticmethod
    def _addresses(svc, holders: dict) -> dict:
        """A Service's external addresses, and the holder of each announced one (its
        loadBalancerClass is ovsctl.io/lb; null: no eligible node)."""
        ours = svc.type == "LoadBalancer" and svc.lb_class == LB_CLASS
        return {
            "external_ips": list(svc.external_ips),
            "lb_ingress": list(svc.lb_ingress),
            "lb_class": svc.lb_class,
            "announced": {a: holders.get(a) for a in svc.lb_ingress} if ours else {},
        }

    def services_status(self) -> list[dict]:
        """Each Service's addresses and the holders of the announced ones (`ovsctl status`)."""
        parsed, holders = self._lb_state()
        return [
            {"name": key, "type": svc.type, "cluster_ips": list(svc.cluster_ips),
             **self._addresses(svc, holders)}
            for key, (svc, _) in sorted(parsed.items())
        ]  # fmt: skip

    def flows_view(self) -> dict:
        """The desired flows, each with its owner key, and owner id -> key for every owner
        (cookies carry only a 40-bit hash of the key)."""
        with self.a.sync.lock:  # only to copy: the work below runs without it
            owners = dict(self.a.sync.owners)
            winners = self.a.sync.desired()
        out = []
        for key, flows in sorted(owners.items()):
            for f in sorted(flows, key=lambda f: (f.table_id, -f.priority, f.match)):
                out.append(
                    {
                        "table": f.table,
                        "table_id": f.table_id,
                        "priority": f.priority,
                        "match": f.match_text(),
                        "actions": f.actions_text(),
                        "cookie": f"{f.cookie:#x}",
                        "owner": key,
                        # False: another owner's flow with the same match is the one installed
                        "active": winners.get(f.key) == f,
                    }
                )
        return {
            "round": self.a.controller.round if self.a.controller else 0,
            "owners": {f"{cookie.owner_id(k):#x}": k for k in owners},
            "desired": out,
        }

    def status(self) -> dict:
        ipam = self.a.ipam
        pools = ipam.usage_by_cidr() if ipam is not None else []
        used, cap = pools[0][1:] if pools else (0, 0)
        desired = self.a.sync.desired()
        per_table = collections.Counter(f.table for f in desired.values())
        ctl = self.a.controller
        lb = getattr(self.a, "lb", None)
        return {
            "node": self.a.cfg.node_name,
            "node_ip": self.a.node_ip,
            "node_ips": list(self.a.node_ips),  # one per family, IPv4 first
            "pod_cidrs": list(self.a.pod_cidrs),
            "bridge": self.a.cfg.bridge,
            "ready": self.a.ready() or "ok",
            "source": {
                "kind": self.a.cfg.source,
                "synced": self.a.source.synced() if self.a.source is not None else True,
                "objects": len(self.a.cluster),
            },
            "openflow": {
                "connected": bool(ctl and ctl.ready.is_set()),
                # the agent connects to the bridge's management socket; nothing listens
                "listen": ctl.target if ctl else f"unix:{self.a.mgmt_socket}",
                "datapath_id": (
                    f"{ctl.channel.expected_dpid:016x}"
                    if ctl and ctl.channel.expected_dpid is not None
                    else None
                ),
                "error": ctl.channel.error if ctl else None,
                "healthy": self.a.healthy() or "ok",
                "reconnects": ctl.reconnects if ctl else 0,
                "round": ctl.round if ctl else 0,
            },
            "connected": bool(ctl and ctl.ready.is_set()),
            "round": ctl.round if ctl else 0,
            "last_sync": ctl.last_sync if ctl else {},
            "flows_desired": len(desired),
            "flows_per_table": {t.name: per_table.get(t.name, 0) for t in tables.PIPELINE},
            "pods": [asdict(a) for a in list(self.a.pods.values())],
            "tunnel": (
                {"port": self.a.cfg.tunnel_name, "ofport": self.a.overlay.tun_ofport}
                if self.a.overlay
                else None
            ),
            "peers": [
                {
                    "node": r.name,
                    "node_ip": r.node_ip,
                    "pod_cidr": r.pod_cidr,
                    "pod_cidrs": list(r.pod_cidrs),
                }
                for r in sorted(self.a.remote_nodes.values(), key=lambda r: r.name)
            ],
            # the first pod CIDR's figures as always; "cidrs": each pod CIDR's, IPv4 first
            "ipam": {
                "cidr": self.a.pod_cidr,
                "used": used,
                "capacity": cap,
                "cidrs": [{"cidr": c, "used": u, "capacity": n} for c, u, n in pools],
            },
            "uptime_s": round(time.time() - self.a.started, 1),
            "services": self.services_status(),
            "lb_pool": {
                "pool": [str(r) for r in lb.pool] if lb is not None else [],
                "writer": lb.writer_node() if lb is not None else None,
                "held": sorted(lb.held) if lb is not None else [],
            },
            "threads": sorted(t.name for t in threading.enumerate()),
            "audit": {
                **(self.a.audit.status() if self.a.audit else {}),
                "meter": ctl.meter_ok if ctl else None,
            },
        }
