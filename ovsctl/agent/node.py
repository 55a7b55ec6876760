"""This node's host side: the bridge, the gateway and tunnel ports, host routes, masquerade
and NodePort plumbing, and flow-restore-wait (never left set)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

import netaddr

from flows import model, pipeline
from flows.family import V6, family
from flows.model import NodeNet, Overlay
from ovsctl.agent import LOGGER
from ovsctl.agent.host import hostnet, netlink
from ovsctl.agent.host.ovsdb import OVSDB
from ovsctl.agent.pods import OWNER_KEY
from ovsctl.config import AgentConfig

log = logging.getLogger(LOGGER)


class NodeHost:
    """The node's ports and host plumbing. `net` (the NodeNet) and `overlay` change when OVS
    renumbers the ports (after a restart): readers take them from here each time."""

    def __init__(self, cfg: AgentConfig, pod_cidr, node_ip: str, sync, store, node_ips=()):
        """`pod_cidr`: one CIDR or one per family (IPv4 first); `node_ip`: the tunnel endpoint
        (IPv4); `node_ips`: the node's addresses, one per family."""
        self.cfg = cfg
        self.pod_cidrs = (pod_cidr,) if isinstance(pod_cidr, str) else tuple(pod_cidr)
        self.pod_cidr, self.node_ip = self.pod_cidrs[0], node_ip
        self.node_ips = tuple(node_ips) or ((node_ip,) if node_ip else ())
        self.sync = sync
        self.store = store  # pods.PodStore: pod flows follow a renumbered port
        self.ovsdb: OVSDB | None = None
        self.net: NodeNet | None = None
        self.overlay: Overlay | None = None
        self.on_renumbered = lambda: None  # the tunnel's ofport changed: remote nodes' flows
        self._restoring = threading.Lock()
        self._node_ports: set | None = None  # NodePort host rules as last written

    @property
    def mgmt_socket(self) -> str:
        """The bridge's OpenFlow management socket (root-only), which the agent connects to."""
        return os.path.join(self.cfg.ovs_rundir, f"{self.cfg.bridge}.mgmt")

    def open_bridge(self) -> int:
        """Connect to OVSDB and make sure the bridge is there; returns its datapath ID."""
        cfg = self.cfg
        self.ovsdb = OVSDB(cfg.ovsdb, timeout=cfg.cni_timeout)
        return self.ovsdb.ensure_bridge(
            cfg.bridge,
            datapath_type=cfg.datapath_type,
            external_ids={"ovsctl-node": cfg.node_name},
        )

    def watch_flow_restore_wait(self) -> None:
        self.ovsdb.on_change = self._on_ovsdb_change
        self._on_ovsdb_change()  # a flow-restore-wait left set must not stop forwarding

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        """The cluster CIDR of each family this node has pods of, IPv4 first."""
        given = tuple(self.cfg.cluster_cidrs) or (self.cfg.cluster_cidr,)
        return tuple(c for c in given if any(family(c) is family(p) for p in self.pod_cidrs))

    def plug(self, prefixlen: int, mtu: int) -> None:
        """The gateway and tunnel ports, then the host side: gateway addresses, forwarding,
        the routes to the cluster CIDRs, masquerade and the NodePort plumbing. An IPv4-only
        node touches nothing of IPv6 (no ip6tables)."""
        cfg = self.cfg
        self._plug_node_ports()
        addrs = [
            (gw, prefixlen if c == self.pod_cidr else netaddr.IPNetwork(c).prefixlen)
            for gw, c in zip(self.net.gw_ips, self.net.pod_cidrs, strict=True)
        ]
        netlink.setup_gateway(
            cfg.gateway_name,
            addrs,
            None,
            self.net.gw_mac,
            mtu,
            tx_off=cfg.datapath_type == "netdev",
        )
        log.info(
            "gateway %s: %s (%s), ofport %d",
            cfg.gateway_name,
            ", ".join(f"{a}/{p}" for a, p in addrs),
            self.net.gw_mac,
            self.net.gw_ofport,
        )
        hostnet.enable_forwarding(ipv6=V6 in self.net.families)
        for cidr in self.cluster_cidrs:
            hostnet.route_cluster_cidr(cfg.gateway_name, cidr, mtu)
        if cfg.masquerade:
            for cidr in self.cluster_cidrs:
                hostnet.setup_masquerade(self.net.pod_cidr_of(family(cidr)), cidr)
        hostnet.setup_node_ports(
            cfg.gateway_name,
            self.net.gw_mac,
            tuple(a for fam in self.net.families for a in model.nodeport_ips(fam)),
        )
        self.sync.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(self.net, self.overlay))

    def _plug_node_ports(self) -> None:
        cfg = self.cfg
        gw_ofport = self.ovsdb.add_port(
            cfg.bridge,
            cfg.gateway_name,
            type="internal",
            ofport_request=cfg.gateway_ofport,
            external_ids={OWNER_KEY: "gateway"},
        )
        self.net = self._node_net(gw_ofport)
        if self.node_ip:
            tun = self.ovsdb.add_port(
                cfg.bridge,
                cfg.tunnel_name,
                type="vxlan",
                ofport_request=cfg.tunnel_ofport,
                options={"remote_ip": "flow", "key": "flow", "local_ip": self.node_ip},
                external_ids={OWNER_KEY: "tunnel"},
            )
            self.overlay = self._overlay(tun)
            log.info("tunnel %s (vxlan, remote_ip=flow) on ofport %d", cfg.tunnel_name, tun)

    def _node_net(self, gw_ofport: int) -> NodeNet:
        return NodeNet.for_cidrs(self.pod_cidrs, gw_ofport, self.node_ips, tunnel_ip=self.node_ip)

    def _overlay(self, tun_ofport: int) -> Overlay:
        cidrs = tuple(self.cfg.cluster_cidrs) or (self.cfg.cluster_cidr,)
        return Overlay(tun_ofport, cidrs[0], cidrs)

    def sync_node_ports(self, entries: set) -> None:
        """Write the NodePort host rules the Services want, when they changed (a failure is
        retried on the next change)."""
        if entries == self._node_ports:
            return
        try:
            hostnet.sync_node_ports(entries, ipv6=self.net is not None and V6 in self.net.families)
            self._node_ports = entries
        except hostnet.HostNetError as e:
            log.error("node ports not updated (retried on the next change): %s", e)

    def refresh_ports(self) -> None:
        """Before a new round: OVS may have renumbered ports (after a restart)."""
        by_name = {p["name"]: p for p in self.ovsdb.ports(self.cfg.bridge)}
        gw = by_name.get(self.cfg.gateway_name, {}).get("ofport", 0)
        tun = by_name.get(self.cfg.tunnel_name, {}).get("ofport", 0)
        changed = (gw > 0 and gw != self.net.gw_ofport) or (
            self.overlay is not None and tun > 0 and tun != self.overlay.tun_ofport
        )
        if changed:
            log.warning("node ports renumbered: gateway %d, tunnel %d", gw, tun)
            self.net = self._node_net(gw)
            if self.overlay is not None:
                self.overlay = self._overlay(tun)
            self.sync.set_owner(
                pipeline.pipeline_owner(), pipeline.node_flows(self.net, self.overlay)
            )
            self.on_renumbered()  # their L2 flows name the tunnel's ofport
        for att in list(self.store.pods.values()):
            port = by_name.get(att.host_if)
            if port and port["ofport"] > 0 and (port["ofport"] != att.ofport or changed):
                self.sync.remove_owner(pipeline.pod_owner(att.pod_port()))
                att.ofport = port["ofport"]
                self.sync.set_owner(
                    pipeline.pod_owner(att.pod_port()),
                    pipeline.pod_flows(self.net, att.pod_port()),
                )

    def synced_full(self) -> None:
        """A full round is on the switch: flow-restore-wait can go."""
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

    def close(self) -> None:
        if self.ovsdb:
            self.ovsdb.close()
