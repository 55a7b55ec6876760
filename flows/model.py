"""The desired-state values the pipeline functions take: plain, immutable, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr


def mac_from_ip(ip: str) -> str:
    """The MAC ovsctl gives an address it owns: 0a:58 + the IPv4 bytes (as ovn-kubernetes and
    Kube-OVN do), so any node can compute a peer's gateway MAC from its IP."""
    addr = netaddr.IPAddress(ip)
    if addr.version != 4:
        raise ValueError(f"mac_from_ip needs an IPv4 address, not {ip}")
    octets = addr.words
    return "0a:58:" + ":".join(f"{o:02x}" for o in octets)


@dataclass(frozen=True)
class NodeNet:
    """This node's side of the pipeline."""

    pod_cidr: str  # "10.244.0.0/24"
    gw_ip: str  # first address of pod_cidr, on the gateway internal port
    gw_mac: str
    gw_ofport: int
    node_ip: str = ""  # the node's own address (pods may always reach it)

    @classmethod
    def for_cidr(cls, pod_cidr: str, gw_ofport: int, node_ip: str = "") -> NodeNet:
        net = netaddr.IPNetwork(pod_cidr)
        gw = str(netaddr.IPAddress(net.first + 1))
        return cls(str(net.cidr), gw, mac_from_ip(gw), gw_ofport, node_ip)


@dataclass(frozen=True)
class Overlay:
    """The node's tunnel side: one flow-based VXLAN port and the cluster CIDR it serves."""

    tun_ofport: int
    cluster_cidr: str  # e.g. 10.244.0.0/16


@dataclass(frozen=True)
class RemoteNode:
    """Another node: where its pods live and how to reach it."""

    name: str
    pod_cidr: str
    node_ip: str

    @property
    def gw_mac(self) -> str:
        net = netaddr.IPNetwork(self.pod_cidr)
        return mac_from_ip(str(netaddr.IPAddress(net.first + 1)))


# The source a pod sees when it reaches itself through a Service (hairpin), as kube-proxy's
# masquerade would make it; link-local, never routed.
HAIRPIN_IP = "169.254.169.252"

# NodePort traffic: the host DNATs nodeIP:nodePort to one of these (same port) and routes it
# into br-int through the gateway; ServiceLB load-balances it there. Traffic to NODEPORT_IP
# (externalTrafficPolicy Cluster) is also SNATed to the gateway IP so that replies come back
# through this node; NODEPORT_LOCAL_IP (policy Local) keeps the client's IP and only uses this
# node's endpoints.
NODEPORT_IP = "169.254.169.250"
NODEPORT_LOCAL_IP = "169.254.169.251"

# ct_mark bit of connections that need the NodePort SNAT (zone 65001) on every packet.
SNAT_MARK = 0x1

# The UDP port of every node's VXLAN tunnel (OVS's default dst_port; the agent sets no other).
VXLAN_PORT = 4789

# Answered to the host for addresses behind a tunnel; L3Forwarding rewrites it anyway.
VIRTUAL_ROUTER_MAC = "0a:58:ff:ff:ff:fe"


@dataclass(frozen=True)
class PodPort:
    """One pod attachment plugged into br-int. `key` names the owner of its flows
    (container id + interface), never the ofport, which OVS may hand to the next pod."""

    key: str
    ofport: int
    ip: str
    mac: str
    namespace: str = ""
    name: str = ""
