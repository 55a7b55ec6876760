"""Remote nodes: tunnel flows for every other node with a pod CIDR and an IP."""

from __future__ import annotations

import logging

import netaddr

from flows import pipeline
from flows.family import family, ordered
from flows.model import RemoteNode
from ovsctl.agent import LOGGER
from ovsctl.openflow.controller import SyncError

log = logging.getLogger(LOGGER)


class NodeReconciler:
    def __init__(self, cluster: dict, node_name: str, host):
        self.cluster = cluster
        self.node_name = node_name
        self.host = host  # node.NodeHost: this node's NodeNet and Overlay (they may renumber)
        self.remote_nodes: dict[str, RemoteNode] = {}
        self.sync = None
        self.controller = None

    def apply(self, push: bool) -> None:
        """Tunnel flows for every other node with a pod CIDR and an IP; only changed nodes are
        touched (each node owns its flows)."""
        overlay = self.host.overlay
        if overlay is None:
            return
        want = {}
        for key, obj in list(self.cluster.items()):
            if key[0] != "Node" or obj.name == self.node_name:
                continue
            if obj.pod_cidr and obj.internal_ip:
                first = str(netaddr.IPNetwork(obj.pod_cidr).cidr)
                # its pod CIDRs of the families this node has pods of (IPv4 first)
                mine = set(self.host.net.families) if self.host.net else set()
                cidrs = ordered(
                    str(netaddr.IPNetwork(c).cidr) for c in obj.pod_cidrs if family(c) in mine
                )
                if first not in cidrs:
                    cidrs = (first,)
                want[obj.name] = RemoteNode(obj.name, cidrs[0], obj.internal_ip, pod_cidrs=cidrs)
        for name in set(self.remote_nodes) | set(want):
            old, new = self.remote_nodes.get(name), want.get(name)
            if old == new:
                continue
            owner = pipeline.node_owner(old or new)
            flows = pipeline.remote_node_flows(self.host.net, overlay, new) if new else frozenset()
            if new:
                self.remote_nodes[name] = new
                log.info(
                    "node %s: pods %s via tunnel to %s",
                    name,
                    ", ".join(new.pod_cidrs),
                    new.node_ip,
                )
            else:
                self.remote_nodes.pop(name, None)
                log.info("node %s left: its tunnel flows go", name)
            if push:
                try:
                    self.controller.apply({owner: flows}, wait=False)
                except SyncError as e:
                    log.warning(
                        "node %s flows not pushed now (%s); the next round has them", name, e
                    )
            else:
                self.sync.set_owner(owner, flows)

    def renumbered(self) -> None:
        """The tunnel's ofport changed: every remote node's L2 flows name it."""
        self.remote_nodes.clear()
        self.apply(push=False)
