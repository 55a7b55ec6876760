"""The node agent: owns br-int, serves CNI requests, keeps the flows in sync.

Start-up order matters for "no window without flows": the pods already plugged into br-int are
read back from OVSDB first, so the first round the controller installs is complete.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass

import netaddr

from flows import cookie, incremental, model, netpol, pipeline, policy, services, tables
from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
from flows.policy import PodInfo, View
from ovsctl.agent.audit import AuditLog
from ovsctl.agent.cniserver import (
    ERR_ADDRESS_IN_USE,
    ERR_ADDRESS_UNAVAILABLE,
    ERR_CHECK_FAILED,
    ERR_INTERNAL,
    ERR_IPAM_EXHAUSTED,
    CNIError,
    CNIServer,
)
from ovsctl.agent.gctune import GCPolicy
from ovsctl.agent.host import hostnet, netlink
from ovsctl.agent.host.ovsdb import OVSDB, OVSDBError
from ovsctl.agent.ipam import IPAM, IPAMError, IPAMExhausted, IPAMInUse, IPAMUnavailable
from ovsctl.agent.metrics import APIEndpoint, HTTPEndpoint, Metrics
from ovsctl.config import AgentConfig, ConfigError
from ovsctl.k8s.model import STATIC_IP_ANNOTATION
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow.controller import Controller, NotConnected, SyncError
from ovsctl.openflow.sync import FlowSync

log = logging.getLogger(__name__)


POLICY_INPUTS = ("Namespace", "Pod", "NetworkPolicy", "Service", "EndpointSlice")
OWNER_KEY = "ovsctl-owner"  # external_ids marker on every port the agent made
HOST_IF_RE = re.compile(r"^ovs[0-9a-f]{11}$")
# what a runtime may send as a container ID, a pod's name or namespace (podman container names
# and Kubernetes names both fit): no "/", no control characters, nothing a log line can forge
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def pod_ref(namespace: str, name: str, container_id: str = "") -> str:
    """How logs, status and flows name a pod: NS/NAME; a runtime that sends no namespace
    (podman) gives NAME alone; with no name either, the container ID."""
    if namespace and name:
        return f"{namespace}/{name}"
    return name or (f"container {container_id[:12]}" if container_id else "-")


@dataclass
class Attachment:
    """One pod interface plugged into br-int (what OVSDB external_ids record for it)."""

    container_id: str
    ifname: str
    namespace: str
    name: str
    uid: str
    netns: str
    host_if: str
    ip: str
    mac: str
    ofport: int = 0
    host_mac: str = ""
    network: str = ""  # the CNI network (config "name") it was made for; "" = not recorded
    default_route: bool = True  # whether ADD gave the pod its default route through this one

    @property
    def key(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    @property
    def ref(self) -> str:
        return pod_ref(self.namespace, self.name, self.container_id)

    def external_ids(self) -> dict:
        return {
            OWNER_KEY: "pod",
            "container-id": self.container_id,
            "ifname": self.ifname,
            "pod-namespace": self.namespace,
            "pod-name": self.name,
            "pod-uid": self.uid,
            "netns": self.netns,
            "ip": self.ip,
            "attached-mac": self.mac,
            "cni-network": self.network,
            "default-route": "true" if self.default_route else "false",
        }

    @classmethod
    def from_port(cls, port: dict) -> Attachment | None:
        ext = port["external_ids"]
        if ext.get(OWNER_KEY) != "pod":
            return None
        return cls(
            ext.get("container-id", ""),
            ext.get("ifname", ""),
            ext.get("pod-namespace", ""),
            ext.get("pod-name", ""),
            ext.get("pod-uid", ""),
            ext.get("netns", ""),
            port["name"],
            ext.get("ip", ""),
            ext.get("attached-mac", ""),
            port["ofport"],
            network=ext.get("cni-network", ""),
            default_route=ext.get("default-route", "true") != "false",
        )

    def pod_port(self) -> PodPort:
        return PodPort(self.key, self.ofport, self.ip, self.mac, self.namespace, self.name)


class Agent:
    def __init__(self, cfg: AgentConfig, source=None):
        self.cfg = cfg
        self.source = source  # cluster state (YAML directory or Kubernetes API); None: static
        self.sync = FlowSync()
        self.pods: dict[str, Attachment] = {}
        self.cluster: dict[tuple, object] = {}  # the source's objects by key
        self.remote_nodes: dict[str, RemoteNode] = {}
        self._pods_lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}  # never removed: see cni_del
        self._inflight: set[tuple[str, str]] = set()  # ADDs under way (GC must not free them)
        self._restoring = threading.Lock()
        self._policy_lock = threading.RLock()
        self._policy_slots: dict[str, int] = {}
        self._free_slots: list[int] = []
        self._services: set[str] = set()  # Service owners with flows
        self._node_ports: set | None = None  # NodePort host rules as last written
        # incremental policy/Service computation: the last inputs and results
        self._view_pods: dict = {}
        self._pod_infos: dict[tuple, tuple] = {}
        self.gc = GCPolicy()
        self._view_ns: dict | None = None
        self._policy_cache: dict[tuple, tuple] = {}
        self._service_cache: dict[tuple, tuple] = {}
        self._skipped: dict[tuple, tuple] = {}  # what was logged as unprogrammable, per object
        self.ovsdb: OVSDB | None = None
        self.controller: Controller | None = None
        self.server: CNIServer | None = None
        self.node: NodeNet | None = None
        self.overlay: Overlay | None = None
        self.node_ip = cfg.node_ip
        self.mtu = cfg.mtu
        self.started = time.time()
        self.events_total: collections.Counter = collections.Counter()  # by kind
        self.metrics = Metrics(self)
        self.http: HTTPEndpoint | None = None
        self.api: APIEndpoint | None = None
        self.audit: AuditLog | None = None

    @property
    def mgmt_socket(self) -> str:
        """The bridge's OpenFlow management socket (root-only), which the agent connects to."""
        return os.path.join(self.cfg.ovs_rundir, f"{self.cfg.bridge}.mgmt")

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
        cfg = self.cfg
        for warning in cfg.deprecated():
            log.warning("%s", warning)
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
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
        if self.source is not None:
            self._start_source()
        if not cfg.pod_cidr:
            raise ConfigError("no pod CIDR: set pod_cidr, or give the Node a spec.podCIDR")
        net = netaddr.IPNetwork(cfg.pod_cidr)
        self.prefixlen = net.prefixlen
        self.ipam = IPAM(cfg.pod_cidr, os.path.join(cfg.state_dir, "ipam"))
        self.mtu = hostnet.pod_mtu(self.node_ip, cfg.mtu)
        log.info(
            "agent for node %s: pod CIDR %s, node IP %s, bridge %s (%s datapath), MTU %d",
            cfg.node_name,
            cfg.pod_cidr,
            self.node_ip or "-",
            cfg.bridge,
            cfg.datapath_type,
            self.mtu,
        )
        self.ovsdb = OVSDB(cfg.ovsdb, timeout=cfg.cni_timeout)
        dpid = self.ovsdb.ensure_bridge(
            cfg.bridge,
            datapath_type=cfg.datapath_type,
            external_ids={"ovsctl-node": cfg.node_name},
        )
        self.controller = Controller(
            self.sync,
            cfg.state_dir,
            target=self.mgmt_socket,
            datapath_id=dpid,
            timeout=cfg.cni_timeout,
            on_synced=self._on_synced,
            before_resync=self._refresh_ports,
            hold=True,
        )
        # NetworkPolicy audit log: packet-ins of audited policies' flows, rate-limited by a
        # meter on the switch and by the log's own token bucket
        self.audit = AuditLog(cfg.audit_log, cfg.audit_rate, lambda: list(self._policy_slots))
        self.audit.start()
        self.controller.on_audit = self.audit.packet_in
        # each audited policy has its own meter (its own budget of audit_rate/s)
        self.controller.meter_rate = lambda m: cfg.audit_rate if policy.is_audit_meter(m) else None
        self.controller.meters = [(services.REJECT_METER, services.REJECT_RATE)]
        self.ovsdb.on_change = self._on_ovsdb_change
        self._on_ovsdb_change()  # a flow-restore-wait left set must not stop forwarding
        # connecting now overlaps the handshake with the rest of the start; the first round
        # waits for release() below
        self.controller.start()
        self._plug_node_ports()
        tx_off = cfg.datapath_type == "netdev"
        netlink.setup_gateway(
            cfg.gateway_name,
            self.node.gw_ip,
            self.prefixlen,
            self.node.gw_mac,
            self.mtu,
            tx_off=tx_off,
        )
        log.info(
            "gateway %s: %s/%d (%s), ofport %d",
            cfg.gateway_name,
            self.node.gw_ip,
            self.prefixlen,
            self.node.gw_mac,
            self.node.gw_ofport,
        )
        hostnet.enable_forwarding()
        hostnet.route_cluster_cidr(cfg.gateway_name, cfg.cluster_cidr, self.mtu)
        if cfg.masquerade:
            hostnet.setup_masquerade(cfg.pod_cidr, cfg.cluster_cidr)
        hostnet.setup_node_ports(
            cfg.gateway_name, self.node.gw_mac, (model.NODEPORT_IP, model.NODEPORT_LOCAL_IP)
        )
        self.sync.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(self.node, self.overlay))
        self._restore_pods()
        self._apply_nodes(push=False)
        self._apply_policies(push=False)
        self.controller.release()  # the desired flows are complete: the first round goes
        self.server = CNIServer(cfg.cni_socket, self.dispatch, after=self.gc.settle)
        self.server.start()

    def _start_source(self) -> None:
        """Take the initial snapshot; learn this node's pod CIDR and IP from its Node object
        (waiting for a Node that has no pod CIDR yet, as kubelet does)."""
        cfg = self.cfg
        self.source.start(self._on_events)
        if not self.source.wait_synced(60):
            raise TimeoutError(
                "timed out after 60s waiting for the cluster state's initial snapshot"
            )
        last_log = 0.0
        while True:
            me = self.cluster.get(("Node", "", cfg.node_name))
            if me is not None and (cfg.pod_cidr or me.pod_cidr):
                break
            if time.monotonic() - last_log > 10:
                log.info("waiting for Node %s to have a spec.podCIDR", cfg.node_name)
                last_log = time.monotonic()
            time.sleep(0.2)
        if not cfg.pod_cidr:
            cfg.pod_cidr = str(netaddr.IPNetwork(me.pod_cidr).cidr)
        if not self.node_ip:
            self.node_ip = me.internal_ip or ""

    def _plug_node_ports(self) -> None:
        cfg = self.cfg
        gw_ofport = self.ovsdb.add_port(
            cfg.bridge,
            cfg.gateway_name,
            type="internal",
            ofport_request=cfg.gateway_ofport,
            external_ids={OWNER_KEY: "gateway"},
        )
        self.node = NodeNet.for_cidr(cfg.pod_cidr, gw_ofport, self.node_ip)
        if self.node_ip:
            tun = self.ovsdb.add_port(
                cfg.bridge,
                cfg.tunnel_name,
                type="vxlan",
                ofport_request=cfg.tunnel_ofport,
                options={"remote_ip": "flow", "key": "flow", "local_ip": self.node_ip},
                external_ids={OWNER_KEY: "tunnel"},
            )
            self.overlay = Overlay(tun, cfg.cluster_cidr)
            log.info("tunnel %s (vxlan, remote_ip=flow) on ofport %d", cfg.tunnel_name, tun)

    def _refresh_ports(self) -> None:
        """Before a new round: OVS may have renumbered ports (after a restart)."""
        by_name = {p["name"]: p for p in self.ovsdb.ports(self.cfg.bridge)}
        gw = by_name.get(self.cfg.gateway_name, {}).get("ofport", 0)
        tun = by_name.get(self.cfg.tunnel_name, {}).get("ofport", 0)
        changed = (gw > 0 and gw != self.node.gw_ofport) or (
            self.overlay is not None and tun > 0 and tun != self.overlay.tun_ofport
        )
        if changed:
            log.warning("node ports renumbered: gateway %d, tunnel %d", gw, tun)
            self.node = NodeNet.for_cidr(self.cfg.pod_cidr, gw, self.node_ip)
            if self.overlay is not None:
                self.overlay = Overlay(tun, self.cfg.cluster_cidr)
            self.sync.set_owner(
                pipeline.pipeline_owner(), pipeline.node_flows(self.node, self.overlay)
            )
            self.remote_nodes.clear()  # their L2 flows name the tunnel's ofport
            self._apply_nodes(push=False)
        for att in list(self.pods.values()):
            port = by_name.get(att.host_if)
            if port and port["ofport"] > 0 and (port["ofport"] != att.ofport or changed):
                self.sync.remove_owner(pipeline.pod_owner(att.pod_port()))
                att.ofport = port["ofport"]
                self.sync.set_owner(
                    pipeline.pod_owner(att.pod_port()),
                    pipeline.pod_flows(self.node, att.pod_port()),
                )

    def _on_synced(self, seconds: float, count: int) -> None:
        self.metrics.synced(seconds, count)
        if self.controller.last_sync.get("kind") == "full":
            self.gc.settle()
            if self.ovsdb is not None:
                self.ovsdb.set_flow_restore_wait(False)

    # -- flow-restore-wait: never left set -----------------------------------------------------

    def _on_ovsdb_change(self) -> None:
        if self.ovsdb.flow_restore_wait() and self._restoring.acquire(blocking=False):
            threading.Thread(
                target=self._clear_flow_restore_wait, name="flow-restore-wait", daemon=True
            ).start()

    def _clear_flow_restore_wait(self) -> None:
        """A restart script (ovs-ctl) sets flow-restore-wait so that a new ovs-vswitchd neither
        forwards nor connects to controllers until flows are restored. Left set, the node never
        forwards again (Antrea #1600). OVS flushes the table anyway when the primary controller
        becomes active after it is cleared, so the agent clears it as soon as the new daemon
        answers on its management socket; the controller connection then brings a new round
        with every flow (see docs/pipeline.md)."""
        try:
            mgmt = f"unix:{self.mgmt_socket}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                p = subprocess.run(
                    ["ovs-ofctl", "-O", "OpenFlow15", "show", mgmt],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if p.returncode == 0:
                    break
                time.sleep(0.1)  # the new ovs-vswitchd is not up yet
            log.info("flow-restore-wait is set and ovs-vswitchd is up: clearing it")
        finally:
            self.ovsdb.set_flow_restore_wait(False)
            self._restoring.release()

    # -- cluster state ------------------------------------------------------------------------

    def _on_events(self, events) -> None:
        nodes_changed = False
        for ev in events:
            key = ev.obj.key
            self.events_total[key[0]] += 1
            if ev.type == "DELETED":
                self.cluster.pop(key, None)
                self._skipped.pop(key, None)
            else:
                self.cluster[key] = ev.obj
            if key[0] == "Node":
                nodes_changed = True
                if key[2] == self.cfg.node_name and ev.type == "MODIFIED" and self.node is not None:
                    cidr = ev.obj.pod_cidr and str(netaddr.IPNetwork(ev.obj.pod_cidr).cidr)
                    if cidr and cidr != self.cfg.pod_cidr:
                        log.error("this node's podCIDR changed to %s; restart the agent", cidr)
            log.debug("cluster %s %s", ev.type, key)
        if nodes_changed and self.node is not None:
            self._apply_nodes(push=self.controller is not None)
        if self.node is not None and any(ev.obj.key[0] in POLICY_INPUTS for ev in events):
            self._apply_policies(push=self.controller is not None)

    # -- NetworkPolicy ----------------------------------------------------------------------------

    def _policy_view(self) -> View:
        namespaces, pods = {}, {}
        infos = {}  # PodInfo per cluster Pod object, kept while the object is the same
        for key, obj in list(self.cluster.items()):
            if key[0] == "Namespace":
                namespaces[obj.name] = obj.labels_dict()
            elif key[0] == "Pod" and not obj.host_network and obj.ip and not _finished(obj):
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
                    )
                infos[key] = (obj, info)
                pods[(obj.namespace, obj.name)] = info
        self._pod_infos = infos
        # a pod with several interfaces is one peer: its primary one (the default route's)
        # comes last and wins
        for att in sorted(self.pods.values(), key=lambda a: (a.default_route, a.ifname == "eth0")):
            if att.ofport <= 0:
                continue
            obj = self.cluster.get(("Pod", att.namespace, att.name))
            if obj is not None and _finished(obj):
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
            )
        return View(namespaces, sorted(pods.values(), key=lambda p: (p.namespace, p.name)))

    def _policy_owners(self) -> dict:
        """Desired flows of the policy owners (rules and isolation) and Services that were
        recomputed; owners that are gone map to an empty set; unchanged owners are left out
        (the flow sync already holds them). Slots (priority + conjunction ids) stay with an owner
        while it lives. Incremental: a policy is recomputed only when it changed, when the
        namespaces changed, or when a pod changed that it may depend on (flows/incremental.py);
        a Service only when it, its EndpointSlices or (derived endpoints) its namespace's pods
        changed."""
        view = self._policy_view()
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
            hit = self._policy_cache.get(key)
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
                self._skip_once(key, obj, f"ignoring {e}")
                cache[key] = (obj, None, {})
                continue
            for why in pol.skipped:
                self._skip_once(key, obj, why)
            owners = self._programmable(key, obj, pol, view)
            cache[key] = (obj, pol, owners)
            want.update(owners)
            live.update(owners)
        self._policy_cache = cache
        for owner in set(self._policy_slots) - set(live):
            want[owner] = frozenset()
            self._free_slots.append(self._policy_slots.pop(owner))
        want.update(self._service_owners(view, changed, everything))
        self._view_pods, self._view_ns = pods_now, view.namespaces
        return want

    def _service_owners(self, view: View, changed=(), everything: bool = True) -> dict:
        """Flows of every Service (ClusterIP load-balancing); Services that are gone map to an
        empty set. Endpoints come from EndpointSlices, or from the selector when there are none
        (as the EndpointSlice controller would make them)."""
        slices: dict[tuple[str, str], list[dict]] = {}
        for key, obj in list(self.cluster.items()):
            if key[0] == "EndpointSlice":
                body = obj.obj()
                svc = ((body.get("metadata") or {}).get("labels") or {}).get(
                    "kubernetes.io/service-name"
                )
                if svc:
                    slices.setdefault((key[1], svc), []).append(body)
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
            hit = self._service_cache.get(key)
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
                    self._skip_once(key, inputs, f"Service {key[1]}/{key[2]}: {why}")
                owner = services.service_owner(svc)
                sflows = services.service_flows(svc, eps, self.cfg.pod_cidr)
                ofconv.check_encodable(sflows)
                flows = {owner: sflows}
                ports = services.node_port_entries(svc)
            except Exception as e:  # noqa: BLE001 - one Service never stops the others
                # unprogrammable: no flows (its address leads nowhere), logged once
                self._skip_once(key, inputs, f"ignoring Service {key[1]}/{key[2]}: {e}")
                cache[key] = (inputs, {}, set())
                continue
            cache[key] = (inputs, flows, ports)
            want.update(flows)
            live.update(flows)
            node_ports |= ports
        self._service_cache = cache
        if node_ports != self._node_ports:
            try:
                hostnet.sync_node_ports(node_ports)
                self._node_ports = node_ports
            except hostnet.HostNetError as e:
                log.error("node ports not updated (retried on the next change): %s", e)
        for owner in self._services - set(live):
            want[owner] = frozenset()
        self._services = {o for o, f in live.items() if f}
        return want

    def _programmable(self, key: tuple, obj, pol, view: View) -> dict:
        """A policy's owners and flows, each checked to encode. A rule whose flows cannot be
        computed or encoded is left out (logged once); the isolation drops always go in, so a
        policy the node cannot fully program closes more, never less."""
        owners: dict[str, frozenset] = {}
        try:
            computed = policy.policy_flows(pol, view, self._slot)
        except Exception as e:  # noqa: BLE001 - fall back to isolation only
            self._skip_once(key, obj, f"NetworkPolicy {pol.key}: rules not programmed: {e}")
            iso = policy.isolation_owner(pol)
            computed = {iso: policy.isolation_flows(pol, view, self._slot(iso))}
        for owner, flows in computed.items():
            try:
                ofconv.check_encodable(flows)
            except Exception as e:  # noqa: BLE001 - this owner only
                self._skip_once(key, obj, f"{owner}: not programmed: {type(e).__name__}: {e}")
                flows = frozenset()
            owners[owner] = flows
        return owners

    def _skip_once(self, key: tuple, version, why: str) -> None:
        """Log what cannot be programmed once per object version (not on every event)."""
        seen = self._skipped.setdefault(key, (version, set()))
        if seen[0] is not version and seen[0] != version:
            seen = self._skipped[key] = (version, set())
        if why not in seen[1]:
            seen[1].add(why)
            log.error("%s", why)

    def _slot(self, owner: str) -> int:
        if owner not in self._policy_slots:
            if self._free_slots:
                self._policy_slots[owner] = self._free_slots.pop()
            else:
                self._policy_slots[owner] = len(self._policy_slots)
        return self._policy_slots[owner]

    def _apply_policies(self, push: bool) -> None:
        t0 = time.monotonic()
        with self._policy_lock:
            owners = self._policy_owners()
            if not push:
                for owner, flows in owners.items():
                    self.sync.set_owner(owner, flows)
                return
            keys = self.controller.stage(owners)
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
        self.gc.settle()

    def _apply_nodes(self, push: bool) -> None:
        """Tunnel flows for every other node with a pod CIDR and an IP; only changed nodes are
        touched (each node owns its flows)."""
        if self.overlay is None:
            return
        want = {}
        for key, obj in list(self.cluster.items()):
            if key[0] != "Node" or obj.name == self.cfg.node_name:
                continue
            if obj.pod_cidr and obj.internal_ip:
                want[obj.name] = RemoteNode(
                    obj.name, str(netaddr.IPNetwork(obj.pod_cidr).cidr), obj.internal_ip
                )
        for name in set(self.remote_nodes) | set(want):
            old, new = self.remote_nodes.get(name), want.get(name)
            if old == new:
                continue
            owner = pipeline.node_owner(old or new)
            flows = pipeline.remote_node_flows(self.node, self.overlay, new) if new else frozenset()
            if new:
                self.remote_nodes[name] = new
                log.info("node %s: pods %s via tunnel to %s", name, new.pod_cidr, new.node_ip)
            else:
                self.remote_nodes.pop(name, None)
                log.info("node %s left: its tunnel flows go", name)
            if push:
                try:
                    self.controller.update(owner, flows, wait=False)
                except SyncError as e:
                    log.warning(
                        "node %s flows not pushed now (%s); the next round has them", name, e
                    )
            else:
                self.sync.set_owner(owner, flows)

    def _restore_pods(self) -> None:
        """Rebuild attachments from OVSDB; drop what a crash left half-made."""
        ports = self.ovsdb.ports(self.cfg.bridge)
        for port in ports:
            att = Attachment.from_port(port)
            if att is None:
                continue
            att.host_mac = netlink.link_mac(att.host_if) or ""
            self.pods[att.key] = att
            if att.ofport > 0:
                self.sync.set_owner(
                    pipeline.pod_owner(att.pod_port()),
                    pipeline.pod_flows(self.node, att.pod_port()),
                )
            else:
                log.warning(
                    "pod %s (%s): its interface is gone (ofport %s); kept until DEL/GC",
                    att.ref,
                    att.key,
                    att.ofport,
                )
        for att in self.pods.values():  # a live port keeps its address even if IPAM lost it
            if att.ip and self.ipam.get(att.container_id, att.ifname) is None:
                try:
                    self.ipam.adopt(
                        att.ip,
                        att.container_id,
                        att.ifname,
                        {"namespace": att.namespace, "name": att.name},
                    )
                    log.warning("IPAM had no record of %s for %s; re-reserved it", att.ip, att.key)
                except IPAMError as e:
                    log.error("cannot re-reserve %s for %s: %s", att.ip, att.key, e)
        known_ips = {a.ip for a in self.pods.values()}
        known_ifs = {a.host_if for a in self.pods.values()}
        for alloc in self.ipam.allocations():
            if alloc.ip not in known_ips:
                log.info(
                    "releasing %s of %s/%s: no port was ever plugged (interrupted ADD)",
                    alloc.ip,
                    alloc.container_id,
                    alloc.ifname,
                )
                self.ipam.release(alloc.container_id, alloc.ifname)
        for name in self._orphan_veths(known_ifs):
            log.info("deleting orphan veth %s (interrupted ADD)", name)
            netlink.delete_link(name)
        log.info("restored %d pod attachments from OVSDB", len(self.pods))

    @staticmethod
    def _orphan_veths(known: set[str]) -> list[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        return [n for n in names if n and HOST_IF_RE.match(n) and n not in known]

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
        if self.controller:
            self.controller.stop()
        if self.server:
            self.server.stop()
        if self.ovsdb:
            self.ovsdb.close()
        if self.http:
            self.http.stop()
        if self.api:
            self.api.stop()
        if self.audit:
            self.audit.stop()

    # -- CNI ------------------------------------------------------------------------------------

    def dispatch(self, req: dict):
        cmd = req.get("command")
        t0 = time.monotonic()
        try:
            result = self._dispatch(req)
        except BaseException as e:
            err = _as_cni_error(e) if isinstance(e, Exception) else None
            self.metrics.cni(str(cmd), str(err.code) if err else "aborted", time.monotonic() - t0)
            raise
        self.metrics.cni(str(cmd), "ok", time.monotonic() - t0)
        return result

    def _dispatch(self, req: dict):
        cmd = req.get("command")
        handler = {
            "ADD": self.cni_add,
            "DEL": self.cni_del,
            "CHECK": self.cni_check,
            "STATUS": self.cni_status,
            "GC": self.cni_gc,
        }.get(cmd)
        if handler is None:
            raise CNIError(4, f"unknown command {cmd!r}")
        t0 = time.monotonic()
        result = handler(req)
        args = req.get("args") or {}
        log.info(
            "CNI %s %s pod %s ok (%.1f ms)",
            cmd,
            req.get("containerID", "") or "-",
            pod_ref(args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")),
            (time.monotonic() - t0) * 1000,
        )
        return result

    def _lock_for(self, key: str) -> threading.Lock:
        with self._pods_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _result(self, att: Attachment, prev: dict | None = None) -> dict:
        """The CNI result of an attachment. Chained after other plugins, the previous result's
        interfaces, IPs, routes and DNS come first and are kept; ours are added (our IP's
        interface index counts the interfaces before ours)."""
        gw = self.node.gw_ip
        prev = prev or {}
        interfaces = list(prev.get("interfaces") or [])
        base = len(interfaces)
        interfaces += [
            {"name": att.host_if, "mac": att.host_mac},
            {"name": att.ifname, "mac": att.mac, "sandbox": att.netns},
        ]
        ips = list(prev.get("ips") or [])
        ips.append({"address": f"{att.ip}/{self.prefixlen}", "gateway": gw, "interface": base + 1})
        routes = list(prev.get("routes") or [])
        if att.default_route:
            routes.append({"dst": "0.0.0.0/0", "gw": gw})
        return {
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": prev.get("dns") or {},
        }

    @staticmethod
    def _prev_result(req: dict) -> dict | None:
        """The config's prevResult, checked enough to build on (CNI spec: a plugin that is not
        first in a chain returns the previous result with its own additions)."""
        prev = (req.get("config") or {}).get("prevResult")
        if prev is None:
            return None
        if not isinstance(prev, dict):
            raise CNIError(7, "prevResult must be an object")
        for key in ("interfaces", "ips", "routes"):
            items = prev.get(key)
            if items is not None and (
                not isinstance(items, list) or not all(isinstance(i, dict) for i in items)
            ):
                raise CNIError(7, f"prevResult.{key} must be a list of objects")
        if prev.get("dns") is not None and not isinstance(prev.get("dns"), dict):
            raise CNIError(7, "prevResult.dns must be an object")
        return prev

    @staticmethod
    def _ids(req: dict) -> tuple[str, str, str, dict]:
        """containerID, ifname, netns and CNI_ARGS, checked here too: the agent does not trust
        the shim (anything root runs can talk to the socket)."""
        cid, ifname, netns = (
            req.get("containerID") or "",
            req.get("ifname") or "",
            req.get("netns") or "",
        )
        args = req.get("args") or {}
        if not cid or not ifname:
            raise CNIError(4, "containerID and ifname are required")
        if not isinstance(cid, str) or not NAME_RE.match(cid):
            raise CNIError(4, "invalid characters in containerID", repr(cid)[:300])
        if (
            not isinstance(ifname, str)
            or len(ifname.encode("utf-8", "surrogateescape")) > 15
            or ifname in (".", "..")
            or any(c in "/:" or c.isspace() or not c.isprintable() for c in ifname)
        ):
            raise CNIError(4, "invalid interface name", repr(ifname)[:60])
        if not isinstance(netns, str) or "\x00" in netns:
            raise CNIError(4, "invalid netns path")
        if not isinstance(args, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in args.items()
        ):
            raise CNIError(4, "CNI_ARGS must map strings to strings")
        for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
            value = args.get(key, "")
            if value and not NAME_RE.match(value):
                raise CNIError(4, f"invalid {key}", repr(value)[:300])
        return cid, ifname, netns, args

    def _requested(self, req: dict, args: dict) -> tuple[str | None, str | None]:
        """The address and MAC the caller asks for, if any: runtimeConfig "ips"/"mac"
        (capabilities), CNI_ARGS IP=/MAC= (podman's network reload), or the Pod's annotation
        ovsctl.io/ip-address (a static IP). Sources that disagree are an error."""
        rc = (req.get("config") or {}).get("runtimeConfig")
        rc = {} if rc is None else rc
        if not isinstance(rc, dict):
            raise CNIError(7, "runtimeConfig must be an object")
        ips: list[tuple[str, str]] = []
        rc_ips = rc.get("ips")
        if rc_ips is not None:
            if not isinstance(rc_ips, list) or not all(isinstance(i, str) for i in rc_ips):
                raise CNIError(7, 'runtimeConfig "ips" must be a list of strings')
            ips += [(i.split("/", 1)[0], 'runtimeConfig "ips"') for i in rc_ips]
        if args.get("IP"):
            ips += [(i.strip().split("/", 1)[0], "CNI_ARGS IP") for i in args["IP"].split(",")]
        ns, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        pod = self.cluster.get(("Pod", ns, name)) if ns and name else None
        note = getattr(pod, "static_ip", "") if pod is not None else ""
        if note:
            ips += [(i.strip(), f"annotation {STATIC_IP_ANNOTATION}") for i in note.split(",")]
        ip = None
        for value, where in ips:
            try:
                addr = netaddr.IPAddress(value)
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE,
                    f"requested address {value!r} ({where}) is not an IP address",
                ) from None
            if addr.version != 4:
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE,
                    f"requested address {value} ({where}): this node serves IPv4 pods only",
                )
            if ip is not None and str(addr) != ip:
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE,
                    f"requested addresses disagree: {ip} and {addr} ({where})",
                )
            ip = str(addr)
        mac = None
        for value, where in ((rc.get("mac"), 'runtimeConfig "mac"'), (args.get("MAC"), "MAC")):
            if value is None or value == "":
                continue
            if not isinstance(value, str) or not MAC_RE.match(value.lower()):
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE, f"requested MAC {value!r} ({where}) is malformed"
                )
            value = value.lower()
            if int(value[:2], 16) & 1 or value == "00:00:00:00:00:00":
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE,
                    f"requested MAC {value} ({where}) is not a unicast address",
                )
            if mac is not None and value != mac:
                raise CNIError(
                    ERR_ADDRESS_UNAVAILABLE, f"requested MACs disagree: {mac} and {value}"
                )
            mac = value
        return ip, mac

    def _host_netns(self, netns: str) -> bool:
        """Whether `netns` is the agent's (the node's) own network namespace."""
        try:
            st = os.stat(netns)
            me = os.stat("/proc/self/ns/net")
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino)

    def cni_add(self, req: dict) -> dict:
        cid, ifname, netns, args = self._ids(req)
        if not netns:
            raise CNIError(4, "CNI_NETNS is required for ADD")
        if not os.path.exists(netns):
            raise CNIError(3, f"network namespace {netns} does not exist")
        if self._host_netns(netns):
            raise CNIError(4, f"{netns} is the node's own network namespace, not a pod's")
        prev = self._prev_result(req)
        want_ip, want_mac = self._requested(req, args)
        network = (req.get("config") or {}).get("name") or ""
        if not isinstance(network, str):
            raise CNIError(7, "the network name must be a string")
        key = f"{cid}/{ifname}"
        with self._lock_for(key):
            existing = self.pods.get(key)
            if (
                existing is not None
                and existing.ofport > 0
                and want_ip in (None, existing.ip)
                and want_mac in (None, existing.mac)
            ):
                log.info("ADD for %s again: returning the existing attachment", key)
                return self._result(existing, prev)
            if existing is not None:
                self._teardown(existing)
            with self._pods_lock:
                self._inflight.add((cid, ifname))
            try:
                return self._add(cid, ifname, netns, args, network, want_ip, want_mac, prev)
            finally:
                with self._pods_lock:
                    self._inflight.discard((cid, ifname))

    def _add(
        self,
        cid: str,
        ifname: str,
        netns: str,
        args: dict,
        network: str,
        want_ip: str | None,
        want_mac: str | None,
        prev: dict | None,
    ) -> dict:
        cfg = self.cfg
        ns, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        undo: list = []
        steps = [time.monotonic()]  # when each step ended: ipam, veth, OVS port, flows
        step = "IPAM"
        try:
            owner = {"namespace": ns, "name": name, "network": network}
            try:
                if want_ip:
                    alloc = self.ipam.reserve(want_ip, cid, ifname, owner)
                else:
                    alloc = self.ipam.allocate(cid, ifname, owner)
            except IPAMExhausted as e:
                raise CNIError(ERR_IPAM_EXHAUSTED, str(e)) from None
            except IPAMUnavailable as e:
                raise CNIError(ERR_ADDRESS_UNAVAILABLE, str(e)) from None
            except IPAMInUse as e:
                raise CNIError(ERR_ADDRESS_IN_USE, str(e)) from None
            undo.append(lambda: self.ipam.release(cid, ifname))
            steps.append(time.monotonic())
            att = Attachment(
                cid,
                ifname,
                ns,
                name,
                args.get("K8S_POD_UID", ""),
                netns,
                netlink.host_ifname(cid, ifname),
                alloc.ip,
                want_mac or mac_from_ip(alloc.ip),
                network=network,
            )
            step = "veth"
            att.host_mac, att.default_route = netlink.create_pod_interface(
                att.host_if,
                netns,
                ifname,
                mac=att.mac,
                ip=att.ip,
                prefixlen=self.prefixlen,
                gateway=self.node.gw_ip,
                mtu=self.mtu,
                tx_off=cfg.datapath_type == "netdev",
            )
            steps.append(time.monotonic())
            undo.append(lambda: netlink.delete_link(att.host_if))
            undo.append(lambda: self.ovsdb.del_port(cfg.bridge, att.host_if))
            step = "OVS port"
            att.ofport = self.ovsdb.add_port(
                cfg.bridge,
                att.host_if,
                external_ids=att.external_ids(),
                wait_ofport=cfg.cni_timeout,
            )
            steps.append(time.monotonic())
            step = "flows"
            owner = pipeline.pod_owner(att.pod_port())
            undo.append(lambda: self._remove_flows(owner))
            with self._pods_lock:
                self.pods[att.key] = att
            undo.append(lambda: self._forget(att.key))
            with self._policy_lock:  # the pod's own flows and its policy flows in one bundle
                owners = self._policy_owners()
                owners[owner] = pipeline.pod_flows(self.node, att.pod_port())
                keys = self.controller.stage(owners)
            self.controller.push(keys, timeout=cfg.cni_timeout)
            steps.append(time.monotonic())
            ms = [(b - a) * 1000 for a, b in zip(steps, steps[1:], strict=False)]
            log.info(
                "pod %s (%s): %s %s on ofport %d via %s%s "
                "(ipam %.1f ms, veth %.1f ms, OVS port %.1f ms, flows %.1f ms)",
                att.ref,
                att.key,
                att.ip,
                att.mac,
                att.ofport,
                att.host_if,
                "" if att.default_route else " (no default route: the pod has one)",
                *ms,
            )
            return self._result(att, prev)
        except BaseException as e:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception as ue:  # noqa: BLE001 - keep undoing the rest
                    log.warning("rollback step failed for %s/%s: %s", cid, ifname, ue)
            raise _as_cni_error(e, step) from None

    def _forget(self, key: str) -> None:
        with self._pods_lock:
            self.pods.pop(key, None)

    def _remove_flows(self, owner: str) -> None:
        """Remove a pod's flows, and its place in policy flows, in one bundle."""
        with self._policy_lock:
            owners = self._policy_owners()
            owners[owner] = frozenset()
            keys = self.controller.stage(owners)
        try:
            # Without a switch, the desired state is enough: the next round leaves them out.
            self.controller.push(keys, timeout=self.cfg.cni_timeout, wait=False)
        except NotConnected:
            # Desired state no longer has them; the next round (on reconnect) drops them.
            log.warning("switch not connected: flows of %s will go with the next round", owner)

    def _teardown(self, att: Attachment) -> None:
        """Remove an attachment: flows first, then port, veth, and last the IP."""
        with self._pods_lock:
            self.pods.pop(att.key, None)
        self._remove_flows(pipeline.pod_owner(att.pod_port()))
        self.ovsdb.del_port(self.cfg.bridge, att.host_if)
        netlink.delete_link(att.host_if)
        self.ipam.release(att.container_id, att.ifname)
        with self._pods_lock:
            self.pods.pop(att.key, None)
        log.info("pod %s (%s): removed, %s released", att.ref, att.key, att.ip)

    def cni_del(self, req: dict):
        cid, ifname, _netns, _args = self._ids(req)
        key = f"{cid}/{ifname}"
        with self._lock_for(key):
            att = self.pods.get(key)
            step = "removing the attachment"
            try:
                if att is not None:
                    self._teardown(att)
                else:
                    # Unknown to us (already deleted, or a crash in the middle): clean by name.
                    host_if = netlink.host_ifname(cid, ifname)
                    step = "OVS port"
                    self.ovsdb.del_port(self.cfg.bridge, host_if)
                    step = "veth"
                    netlink.delete_link(host_if)
                    step = "IPAM"
                    self.ipam.release(cid, ifname)
            except BaseException as e:
                raise _as_cni_error(e, step) from None
        return None

    def cni_check(self, req: dict):
        cid, ifname, netns, _args = self._ids(req)
        key = f"{cid}/{ifname}"
        att = self.pods.get(key)
        if att is None:
            raise CNIError(3, f"no attachment {key} on this node")
        problems = []
        port = self.ovsdb.port(self.cfg.bridge, att.host_if)
        if port is None:
            problems.append(f"OVS port {att.host_if} is missing")
        elif port["ofport"] <= 0:
            problems.append(
                f"OVS port {att.host_if} has no ofport ({port['error'] or 'interface gone'})"
            )
        if not netlink.link_exists(att.host_if):
            problems.append(f"host veth {att.host_if} is missing")
        alloc = self.ipam.get(cid, ifname)
        if alloc is None or alloc.ip != att.ip:
            problems.append(f"IPAM does not hold {att.ip} for {key}")
        try:
            iface = netlink.pod_interface(netns or att.netns, ifname)
        except netlink.NetlinkFailure as e:
            iface = None
            problems.append(str(e))
        if iface is None:
            if not problems or "namespace" not in problems[-1]:
                problems.append(f"{ifname} is missing in {netns or att.netns}")
        else:
            want = f"{att.ip}/{self.prefixlen}"
            if want not in iface["addresses"]:
                problems.append(f"{ifname} lacks {want} (has {iface['addresses']})")
            if iface["mac"] != att.mac:
                problems.append(f"{ifname} MAC is {iface['mac']}, expected {att.mac}")
        prev = self._prev_result(req)
        if prev is not None:
            addrs = {ip.get("address") for ip in prev.get("ips") or []}
            if addrs and f"{att.ip}/{self.prefixlen}" not in addrs:
                problems.append(f"prevResult has {sorted(addrs)}, the pod has {att.ip}")
        owner = pipeline.pod_owner(att.pod_port())
        missing = [f for f in self.sync.owner_flows(owner) if self.sync.installed.get(f.key) != f]
        if missing or not self.sync.owner_flows(owner):
            problems.append(f"{len(missing)} of the pod's flows are not installed")
        if problems:
            raise CNIError(ERR_CHECK_FAILED, f"attachment {key} is broken", "; ".join(problems))
        return None

    def cni_status(self, req: dict):
        if self.controller is None or not self.controller.ready.is_set():
            raise CNIError(50, "the agent is not connected to its switch yet")
        return None

    def cni_gc(self, req: dict):
        """Remove what the runtime no longer knows, of this network only. An attachment is
        kept when it is in the runtime's list, belongs to another network (or its network was
        not recorded), is being added right now, or its port is live; each is logged."""
        cfg_ = req.get("config") or {}
        network = cfg_.get("name") or ""
        if not isinstance(network, str) or not network:
            raise CNIError(7, "GC needs the network's name")
        valid_list = cfg_.get("cni.dev/valid-attachments")
        if not isinstance(valid_list, list):
            raise CNIError(7, "GC needs cni.dev/valid-attachments (a list)")
        valid = set()
        for v in valid_list:
            if (
                not isinstance(v, dict)
                or not isinstance(v.get("containerID"), str)
                or not isinstance(v.get("ifname"), str)
            ):
                raise CNIError(7, "each valid attachment needs containerID and ifname (strings)")
            valid.add((v["containerID"], v["ifname"]))
        with self._pods_lock:
            inflight = set(self._inflight)  # an ADD under way is not yet in the runtime's list
        live_ips = set()
        for att in list(self.pods.values()):
            why = None
            if (att.container_id, att.ifname) in valid:
                why = "in the runtime's list"
            elif att.network != network:
                why = (
                    f"it belongs to network {att.network!r}"
                    if att.network
                    else "its network was not recorded"
                )
            elif (att.container_id, att.ifname) in inflight:
                why = "its ADD is under way"
            if why is not None:
                log.info("GC %s: keeping %s (%s, %s): %s", network, att.key, att.ref, att.ip, why)
                continue
            with self._lock_for(att.key):
                if self.pods.get(att.key) is not att:
                    continue  # DEL'd (or replaced) meanwhile
                port = self.ovsdb.port(self.cfg.bridge, att.host_if)
                if port and port["ofport"] > 0 and netlink.link_exists(att.host_if):
                    live_ips.add(att.ip)
                    log.warning(
                        "GC %s: keeping %s (%s, %s): not in the runtime's list but its port "
                        "is live",
                        network,
                        att.key,
                        att.ref,
                        att.ip,
                    )
                    continue
                log.info("GC %s: removing stale attachment %s (%s)", network, att.key, att.ip)
                self._teardown(att)
        live_ips |= {a.ip for a in self.pods.values()}
        for alloc in self.ipam.gc(valid | inflight, live_ips, network=network):
            log.info(
                "GC %s: released %s of %s/%s",
                network,
                alloc.ip,
                alloc.container_id,
                alloc.ifname,
            )
        return None

    # -- status -------------------------------------------------------------------------------

    def cluster_view(self) -> dict:
        """The cluster as this agent sees it (for trace and reachability): nodes, pods with
        labels, IPs and ports, Services with their frontends, and NetworkPolicies as given."""
        nodes, pods, svcs, pols, nss = [], [], [], [], []
        # copies first (no agent lock is taken: CNI never waits for a view)
        cluster, attachments = list(self.cluster.items()), list(self.pods.values())
        for key, obj in sorted(cluster, key=lambda kv: kv[0]):
            kind = key[0]
            if kind == "Node":
                nodes.append({"name": obj.name, "ip": obj.internal_ip, "pod_cidr": obj.pod_cidr})
            elif kind == "Namespace":
                nss.append({"name": obj.name, "labels": obj.labels_dict()})
            elif kind == "Pod":
                pods.append(
                    {
                        "namespace": obj.namespace,
                        "name": obj.name,
                        "node": obj.node_name,
                        # a Succeeded/Failed pod holds no address: its IP may be another's
                        "ip": None if _finished(obj) else obj.ip,
                        "phase": obj.phase,
                        "labels": obj.labels_dict(),
                        "ports": [[p.name, p.port, p.protocol] for p in obj.ports],
                        "ready": obj.ready,
                        "host_network": obj.host_network,
                    }
                )
            elif kind == "Service":
                try:
                    svc = services.parse_service(obj.obj())
                except services.ServiceError:
                    continue
                svcs.append(
                    {
                        "namespace": svc.namespace,
                        "name": svc.name,
                        "cluster_ip": svc.cluster_ip,
                        "type": svc.type,
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
        local = {
            (a.namespace, a.name): {"ofport": a.ofport, "mac": a.mac, "key": a.key}
            for a in attachments
        }
        for p in pods:
            p["local"] = local.get((p["namespace"], p["name"]))
        node = self.node
        return {
            "node": self.cfg.node_name,
            "node_ip": self.node_ip,
            "gateway": (
                {"ip": node.gw_ip, "mac": node.gw_mac, "ofport": node.gw_ofport} if node else None
            ),
            "tunnel_ofport": self.overlay.tun_ofport if self.overlay else None,
            "cluster_cidr": self.cfg.cluster_cidr,
            "nodes": nodes,
            "namespaces": nss,
            "pods": pods,
            "services": svcs,
            "policies": pols,
        }

    def flows_view(self) -> dict:
        """The desired flows, each with its owner key, and owner id -> key for every owner
        (cookies carry only a 40-bit hash of the key)."""
        with self.sync.lock:  # only to copy: the work below runs without it
            owners = dict(self.sync.owners)
            winners = self.sync.desired()
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
            "round": self.controller.round if self.controller else 0,
            "owners": {f"{cookie.owner_id(k):#x}": k for k in owners},
            "desired": out,
        }

    def status(self) -> dict:
        ipam = getattr(self, "ipam", None)
        used, cap = ipam.usage() if ipam is not None else (0, 0)
        desired = self.sync.desired()
        per_table = collections.Counter(f.table for f in desired.values())
        ctl = self.controller
        return {
            "node": self.cfg.node_name,
            "node_ip": self.node_ip,
            "bridge": self.cfg.bridge,
            "ready": self.ready() or "ok",
            "source": {
                "kind": self.cfg.source,
                "synced": self.source.synced() if self.source is not None else True,
                "objects": len(self.cluster),
            },
            "openflow": {
                "connected": bool(ctl and ctl.ready.is_set()),
                # the agent connects to the bridge's management socket; nothing listens
                "listen": ctl.target if ctl else f"unix:{self.mgmt_socket}",
                "datapath_id": (
                    f"{ctl.channel.expected_dpid:016x}"
                    if ctl and ctl.channel.expected_dpid is not None
                    else None
                ),
                "error": ctl.channel.error if ctl else None,
                "healthy": self.healthy() or "ok",
                "reconnects": ctl.reconnects if ctl else 0,
                "round": ctl.round if ctl else 0,
            },
            "connected": bool(ctl and ctl.ready.is_set()),
            "round": ctl.round if ctl else 0,
            "last_sync": ctl.last_sync if ctl else {},
            "flows_desired": len(desired),
            "flows_per_table": {t.name: per_table.get(t.name, 0) for t in tables.PIPELINE},
            "pods": [asdict(a) for a in list(self.pods.values())],
            "tunnel": (
                {"port": self.cfg.tunnel_name, "ofport": self.overlay.tun_ofport}
                if self.overlay
                else None
            ),
            "peers": [
                {"node": r.name, "node_ip": r.node_ip, "pod_cidr": r.pod_cidr}
                for r in sorted(self.remote_nodes.values(), key=lambda r: r.name)
            ],
            "ipam": {"cidr": self.cfg.pod_cidr, "used": used, "capacity": cap},
            "uptime_s": round(time.time() - self.started, 1),
            "threads": sorted(t.name for t in threading.enumerate()),
            "audit": {
                **(self.audit.status() if self.audit else {}),
                "meter": ctl.meter_ok if ctl else None,
            },
        }


def _finished(pod) -> bool:
    """A pod in phase Succeeded or Failed is no policy peer, no endpoint and holds no address
    in any flow: its IP goes back to IPAM and may be another pod's already (Antrea #6507)."""
    return pod.phase in ("Succeeded", "Failed")


def _as_cni_error(e: BaseException, step: str = "") -> CNIError:
    """The CNI error for an exception; `step` (IPAM, veth, OVS port, flows, ...) names where
    it happened, so the runtime's message says which step failed."""
    if isinstance(e, CNIError):
        return e
    at = f"{step}: " if step else ""
    if isinstance(e, NotConnected):
        return CNIError(11, f"{at}the agent is not connected to its switch", str(e))
    if isinstance(e, SyncError):
        return CNIError(11, f"{at}installing the pod's flows failed", str(e))
    if isinstance(e, OVSDBError):
        return CNIError(ERR_INTERNAL, f"{at}OVSDB operation failed", str(e))
    if isinstance(e, netlink.NetlinkFailure):
        return CNIError(ERR_INTERNAL, f"{at}interface setup failed", str(e))
    if isinstance(e, IPAMError):
        return CNIError(ERR_INTERNAL, f"{at}IPAM failed", str(e))
    return CNIError(ERR_INTERNAL, f"{at}unexpected agent failure", repr(e))
