"""The cluster state: the source (YAML directory or Kubernetes API), the snapshot of its
objects by key, and its events fanned out to the reconcilers."""

from __future__ import annotations

import collections
import logging
import time

import netaddr

from ovsctl.agent import LOGGER
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.changes import Objects

log = logging.getLogger(LOGGER)

# the kinds policy and Service flows depend on (Nodes: ClusterNetworkPolicy `nodes` peers)
POLICY_INPUTS = (
    "Namespace",
    "Pod",
    "NetworkPolicy",
    "ClusterNetworkPolicy",
    "Service",
    "EndpointSlice",
    "Node",
)


class Cluster:
    def __init__(self, source, node_name: str, skip: SkipLog):
        self.source = source  # None: static (no cluster state)
        self.node_name = node_name
        self.skip = skip
        # the source's objects by key; the reconcilers learn from it which keys changed
        self.objects: Objects = Objects()
        self.events_total: collections.Counter = collections.Counter()  # by kind
        self.pod_cidr = ""
        self.pod_cidrs: tuple[str, ...] = ()
        # the reconcilers, once the node's ports are plugged (before: the snapshot only)
        self.nodes = None
        self.policy = None

    def synced(self) -> bool:
        return self.source is None or self.source.synced()

    def start(self, pod_cidr, node_ip: str, node_ips=()) -> tuple:
        """Take the initial snapshot; learn this node's pod CIDR(s) and IP from its Node object
        (waiting for a Node that has no pod CIDR yet, as kubelet does). Returns the node's
        identity: (pod CIDR, node IP), each as configured when it was. `pod_cidr` may be a list
        (one per family): then the answer is (pod CIDRs, node IP, node IPs), the Node's
        spec.podCIDRs and InternalIPs filling what was not configured (per family)."""
        many = not isinstance(pod_cidr, str)
        self.source.start(self.on_events)
        if not self.source.wait_synced(60):
            raise TimeoutError(
                "timed out after 60s waiting for the cluster state's initial snapshot"
            )
        last_log = 0.0
        while True:
            me = self.objects.get(("Node", "", self.node_name))
            if me is not None and (pod_cidr or me.pod_cidr or me.pod_cidrs):
                break
            if time.monotonic() - last_log > 10:
                log.info("waiting for Node %s to have a spec.podCIDR", self.node_name)
                last_log = time.monotonic()
            time.sleep(0.2)
        if not many:
            if not pod_cidr:
                pod_cidr = str(netaddr.IPNetwork(me.pod_cidr).cidr)
            return pod_cidr, node_ip or me.internal_ip or ""
        cidrs = list(pod_cidr) or [str(netaddr.IPNetwork(c).cidr) for c in me.pod_cidrs]
        ips = list(node_ips)
        for a in me.internal_ips:  # the Node's address of each family not configured
            if all(netaddr.IPAddress(a).version != netaddr.IPAddress(b).version for b in ips):
                ips.append(a)
        ips.sort(key=lambda a: netaddr.IPAddress(a).version)
        return cidrs, node_ip or me.internal_ip or "", ips

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()

    def on_events(self, events) -> None:
        nodes_changed = False
        live = self.nodes is not None
        for ev in events:
            key = ev.obj.key
            self.events_total[key[0]] += 1
            if ev.type == "DELETED":
                self.objects.pop(key, None)
                self.skip.forget(key)
            else:
                self.objects[key] = ev.obj
            if key[0] == "Node":
                nodes_changed = True
                if key[2] == self.node_name and ev.type == "MODIFIED" and live:
                    cidr = ev.obj.pod_cidr and str(netaddr.IPNetwork(ev.obj.pod_cidr).cidr)
                    cidrs = tuple(str(netaddr.IPNetwork(c).cidr) for c in ev.obj.pod_cidrs)
                    if cidr and cidr != self.pod_cidr:
                        log.error("this node's podCIDR changed to %s; restart the agent", cidr)
                    elif cidrs and self.pod_cidrs and set(cidrs) != set(self.pod_cidrs):
                        log.error(
                            "this node's podCIDRs changed to %s; restart the agent",
                            ", ".join(cidrs),
                        )
            log.debug("cluster %s %s", ev.type, key)
        if nodes_changed and live:
            self.nodes.apply(push=True)
        if live and any(ev.obj.key[0] in POLICY_INPUTS for ev in events):
            self.policy.apply(push=True)
