"""The node agent's composition root: builds its parts, starts and stops them.

    node.py       bridge, gateway/tunnel ports, host plumbing, flow-restore-wait
    cluster.py    the state source, the snapshot, events fanned out to the reconcilers
    pods.py       attachments, per-key locks, ADDs in flight, restore after restart
    cni.py        ADD/DEL/CHECK/STATUS/GC (the host through host/adapters.py)
    reconcile/    nodes, policy, services: changes -> {owner: frozenset[Flow]}
    views.py      /status /flows /cluster

Start-up order matters for "no window without flows": the pods already plugged into br-int are
read back from OVSDB first, so the first round the controller installs is complete.
"""

from __future__ import annotations

import logging
import os
import time

import netaddr

from flows import policy, services
from ovsctl.agent import LOGGER, gctune
from ovsctl.agent.audit import AuditLog, cnp_rule_of
from ovsctl.agent.cluster import POLICY_INPUTS, Cluster
from ovsctl.agent.cni import CNI
from ovsctl.agent.cniserver import CNIServer
from ovsctl.agent.gctune import GCPolicy
from ovsctl.agent.host import hostnet
from ovsctl.agent.host.adapters import Interfaces, Ports
from ovsctl.agent.ipam import IPAM
from ovsctl.agent.metrics import APIEndpoint, HTTPEndpoint, Metrics
from ovsctl.agent.node import NodeHost
from ovsctl.agent.pods import HOST_IF_RE, OWNER_KEY, Attachment, PodStore, pod_ref, restore_pods
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.lbannounce import LBAnnouncer
from ovsctl.agent.reconcile.lbpool import parse_pool
from ovsctl.agent.reconcile.nodes import NodeReconciler
from ovsctl.agent.reconcile.policy import PolicyReconciler
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.agent.views import Views
from ovsctl.config import AgentConfig, ConfigError, check_cluster_cidrs
from ovsctl.k8s.apiclient import write_lb_status
from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync

log = logging.getLogger(LOGGER)

# what other modules imported from here before the split
__all__ = ["HOST_IF_RE", "OWNER_KEY", "POLICY_INPUTS", "Agent", "Attachment", "pod_ref"]


class Agent:
    def __init__(self, cfg: AgentConfig, source=None):
        self.cfg = cfg
        self.source = source  # cluster state (YAML directory or Kubernetes API); None: static
        self.sync = FlowSync()
        self.store = PodStore()
        self.skip = SkipLog()
        self.state = Cluster(source, cfg.node_name, self.skip)
        self.pod_cidr, self.node_ip, self.mtu = cfg.pod_cidr, cfg.node_ip, cfg.mtu
        # one pod CIDR and one node address per family, IPv4 first (pod_cidr/node_ip: firsts)
        self.pod_cidrs: tuple[str, ...] = tuple(cfg.pod_cidrs) or (
            (cfg.pod_cidr,) if cfg.pod_cidr else ()
        )
        self.node_ips: tuple[str, ...] = tuple(cfg.node_ips) or (
            (cfg.node_ip,) if cfg.node_ip else ()
        )
        self.gc = GCPolicy()
        self.services = ServiceReconciler(
            self.cluster, cfg.pod_cidr, self.skip, node_name=cfg.node_name
        )
        self.services.cluster_cidrs = tuple(cfg.cluster_cidrs)  # refused as external addresses
        self.services.external_ip_cidrs = tuple(cfg.external_ip_cidrs)
        self.policy = PolicyReconciler(self.cluster, self.store, self.services, self.skip)
        # external addresses: routes, the announcement and allocation of the LB pool
        self.lb = LBAnnouncer(
            self.cluster,
            cfg.node_name,
            parse_pool(cfg.lb_pool),
            self._status_writer(source),
            state_file=os.path.join(cfg.state_dir, "lb-held.json"),
        )
        self.services.lb_assignments = self.lb.assignments
        self.policy.sync, self.policy.settle = self.sync, self.gc.settle
        self.host: NodeHost | None = None
        self.nodes: NodeReconciler | None = None
        self.ipam: IPAM | None = None
        self.cni: CNI | None = None
        self.controller: Controller | None = None
        self.server: CNIServer | None = None
        self.started = time.time()
        self.metrics = Metrics(self)
        self.views = Views(self)
        self.http: HTTPEndpoint | None = None
        self.api: APIEndpoint | None = None
        self.audit: AuditLog | None = None

    # what the views, metrics and tests read
    cluster = property(lambda self: self.state.objects)
    pods = property(lambda self: self.store.pods)
    events_total = property(lambda self: self.state.events_total)
    node = property(lambda self: self.host.net if self.host else None)
    overlay = property(lambda self: self.host.overlay if self.host else None)
    remote_nodes = property(lambda self: self.nodes.remote_nodes if self.nodes else {})

    @property
    def mgmt_socket(self) -> str:
        """The bridge's OpenFlow management socket (root-only), which the agent connects to."""
        return os.path.join(self.cfg.ovs_rundir, f"{self.cfg.bridge}.mgmt")

    def cluster_view(self) -> dict:
        return self.views.cluster_view()

    def flows_view(self) -> dict:
        return self.views.flows_view()

    def status(self) -> dict:
        return self.views.status()

    def dispatch(self, req: dict):
        return self.cni.dispatch(req)

    def healthy(self) -> str | None:
        """None while the agent's machinery works (liveness); else why not. Only the OpenFlow
        channel can fail this after start: its thread died, or no accepted connection to the
        switch for longer than the grace period (HEALTH_GRACE)."""
        if self.controller is None:
            return None
        return self.controller.health()

    def ready(self) -> str | None:
        """None when ready (cluster state synced, switch synced); else why not."""
        if self.source is not None and not self.source.synced():
            return "waiting for the cluster state"
        if self.node is None:
            return "starting"
        if self.controller is None or not self.controller.ready.is_set():
            return "switch not connected or not synced"
        return None

    # -- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        finally:
            gctune.release()  # the collector, held off while the start built its state (cli.py)

    def _start(self) -> None:
        cfg = self.cfg
        for warning in cfg.deprecated():
            log.warning("%s", warning)
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        self._start_endpoints()
        if self.source is not None:
            cidrs, self.node_ip, ips = self.state.start(
                list(self.pod_cidrs), self.node_ip, list(self.node_ips)
            )
            self.pod_cidrs, self.node_ips = self._per_family(cidrs, ips)
        if not self.pod_cidrs:
            raise ConfigError("no pod CIDR: set pod_cidr, or give the Node a spec.podCIDR")
        check_cluster_cidrs(self.pod_cidrs, cfg.cluster_cidrs)
        self.pod_cidr = self.pod_cidrs[0]
        self.prefixlen = netaddr.IPNetwork(self.pod_cidr).prefixlen
        self.services.pod_cidr = self.state.pod_cidr = self.pod_cidr
        self.services.pod_cidrs = tuple(self.pod_cidrs)  # local endpoints, node-port families
        self.state.pod_cidrs = self.pod_cidrs
        self.ipam = IPAM(self.pod_cidrs, os.path.join(cfg.state_dir, "ipam"))
        self.mtu = hostnet.pod_mtu(self.node_ip, cfg.mtu)
        log.info(
            "agent for node %s: pod CIDR %s, node IP %s, bridge %s (%s datapath), MTU %d",
            cfg.node_name,
            ", ".join(self.pod_cidrs),
            ", ".join(self.node_ips) or self.node_ip or "-",
            cfg.bridge,
            cfg.datapath_type,
            self.mtu,
        )
        self.host = NodeHost(
            cfg, self.pod_cidrs, self.node_ip, self.sync, self.store, node_ips=self.node_ips
        )
        dpid = self.host.open_bridge()
        self.controller = Controller(
            self.sync,
            cfg.state_dir,
            target=self.mgmt_socket,
            datapath_id=dpid,
            timeout=cfg.cni_timeout,
            on_synced=self._on_synced,
            before_resync=self.host.refresh_ports,
            hold=True,
        )
        # NetworkPolicy audit log: packet-ins of audited policies' flows, rate-limited by a
        # meter on the switch and by the log's own token bucket
        self.audit = AuditLog(
            cfg.audit_log,
            cfg.audit_rate,
            lambda: list(self.policy.slots),
            cnp_rule=lambda key: cnp_rule_of(list(self.policy.cnp_cache.values()), key),
        )
        self.audit.start()
        self.controller.on_audit = self.audit.packet_in
        # each audited policy has its own meter (its own budget of audit_rate/s)
        self.controller.meter_rate = lambda m: cfg.audit_rate if policy.is_audit_meter(m) else None
        self.controller.meters = [(services.REJECT_METER, services.REJECT_RATE)]
        self.host.watch_flow_restore_wait()
        # connecting now overlaps the handshake with the rest of the start; the first round
        # waits for release() below
        self.controller.start()
        self.nodes = NodeReconciler(self.cluster, cfg.node_name, self.host)
        self.nodes.sync, self.nodes.controller = self.sync, self.controller
        self.host.on_renumbered = self.nodes.renumbered
        self.policy.controller = self.controller
        self.policy.on_node_ports = self.host.sync_node_ports  # the host writes iptables
        self.host.plug(self.prefixlen, self.mtu)
        self._attach_lb()
        ports = Ports(self.host.ovsdb, cfg.bridge)
        ifaces = Interfaces()
        restore_pods(self.store, ports, ifaces, self.ipam, self.sync, self.host.net)
        self.state.nodes, self.state.policy = self.nodes, self.policy  # events reach them now
        self.nodes.apply(push=False)
        self.policy.apply(push=False)
        self.controller.release()  # the desired flows are complete: the first round goes
        self.cni = CNI(
            self.store,
            self.ipam,
            ifaces,
            ports,
            self.policy,
            self.controller,
            self.sync,
            self.host,
            self.cluster,
            self.metrics,
            prefixlen=self.prefixlen,
            mtu=self.mtu,
            timeout=cfg.cni_timeout,
            datapath_type=cfg.datapath_type,
        )
        self.server = CNIServer(cfg.cni_socket, self.dispatch, after=self.gc.settle)
        self.server.start()

    @staticmethod
    def _status_writer(source):
        """How the LB pool's allocation is written: a Service status PATCH through the
        Kubernetes API source's client; None for a source that cannot be written (YAML)."""
        api = getattr(source, "api", None)
        if api is None:
            return None
        return lambda ns, name, ingress, expect: write_lb_status(api, ns, name, ingress, expect)

    def _attach_lb(self) -> None:
        """External addresses route to the gateway; held pool addresses are answered for on
        the interface of the node's address of their family."""
        ifaces = {}
        for ip in self.node_ips:
            found = hostnet.interface_of(ip)
            if found:
                ifaces[netaddr.IPAddress(ip).version] = found[0]
        if self.lb.pool and not ifaces:
            log.error("LB pool: no interface holds the node's addresses; nothing is announced")
        self.lb.attach(self.cfg.gateway_name, self.host.net.gw_mac, self.node_ips, ifaces)
        # recorded under the policy lock after each round, put on the host after its push
        self.policy.on_external = self.lb.record
        gc_settle = self.policy.settle
        self.policy.settle = lambda: (gc_settle(), self.lb.apply())
        self.lb.start()

    def _per_family(self, cidrs, ips) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The pod CIDRs and node addresses learnt at start: canonical, one per family, IPv4
        first (the tunnel endpoint node_ip is the IPv4 one)."""
        cidrs = [str(netaddr.IPNetwork(c).cidr) for c in cidrs]
        versions = [netaddr.IPNetwork(c).version for c in cidrs]
        if len(set(versions)) != len(versions):
            raise ConfigError(f"pod CIDRs {', '.join(cidrs)}: need at most one per family")
        cidrs.sort(key=lambda c: netaddr.IPNetwork(c).version)
        addrs = list(ips)
        if self.node_ip and self.node_ip not in addrs:
            addrs = [a for a in addrs if netaddr.IPAddress(a).version != 4] + [self.node_ip]
        # only the families the node has pods of (an IPv4-only node ignores its IPv6 address)
        addrs = [a for a in addrs if netaddr.IPAddress(a).version in versions]
        addrs.sort(key=lambda a: netaddr.IPAddress(a).version)
        return tuple(cidrs), tuple(addrs)

    def _start_endpoints(self) -> None:
        cfg = self.cfg
        if cfg.metrics_port:  # every pod can reach this port: metrics and health only
            self.http = HTTPEndpoint(
                cfg.metrics_host, cfg.metrics_port, self.metrics, self.ready, healthy=self.healthy
            )
            self.http.start()
        if cfg.api_socket:  # the views name every pod, Service and policy: root only
            self.api = APIEndpoint(
                cfg.api_socket,
                self.metrics,
                self.ready,
                {"/status": self.status, "/flows": self.flows_view, "/cluster": self.cluster_view},
                healthy=self.healthy,
            )
            self.api.start()

    def _on_synced(self, seconds: float, count: int) -> None:
        self.metrics.synced(seconds, count)
        if self.controller.last_sync.get("kind") == "full":
            self.gc.settle()
            self.host.synced_full()
            self.lb.apply()  # the round recorded at start: its flows are in the switch now

    def stop(self) -> None:
        self.state.stop()
        self.lb.stop()
        if self.controller:
            self.controller.stop()
        if self.server:
            self.server.stop()
        if self.host:
            self.host.close()
        if self.http:
            self.http.stop()
        if self.api:
            self.api.stop()
        if self.audit:
            self.audit.stop()
