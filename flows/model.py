"""The desired-state values the pipeline functions take: plain, immutable, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows.family import V4, Family, family, ordered


def mac_from_ip(ip: str) -> str:
    """The MAC ovsctl gives an address it owns: 0a:58 + the IPv4 bytes (as ovn-kubernetes and
    Kube-OVN do), so any node can compute a peer's gateway MAC from its IP. An IPv6 address
    (IPv6-only pods and gateways) gives 0a:58 + two XOR-folds of 16 bits: of its /64 prefix's
    four groups, then of its interface ID's four groups (fd00:10:244:1::5 -> 0a:58:ff:55:00:05):
    node k's pod CIDR fd00:10:244:k::/64 (or any scheme where nodes differ in one group of the
    prefix) gives every node's gateway and pods their own MACs; the last four bytes alone would
    give every node's gateway the same one."""
    addr = netaddr.IPAddress(ip)
    if addr.version == 6:
        n = int(addr)
        groups = [(n >> (16 * i)) & 0xFFFF for i in range(8)]  # groups[0] is the last
        host, prefix = 0, 0
        for g in groups[:4]:
            host ^= g
        for g in groups[4:]:
            prefix ^= g
        low = (prefix << 16) | host
    else:
        low = int(addr) & 0xFFFFFFFF
    return "0a:58:" + ":".join(f"{(low >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def link_local(mac: str) -> str:
    """The IPv6 link-local address the kernel derives from a MAC (modified EUI-64), e.g.
    0a:58:0a:f4:01:05 -> fe80::858:aff:fef4:105: the only link-local source a pod may use."""
    return str(netaddr.EUI(mac).ipv6_link_local())


def first_host(cidr: str) -> str:
    """The gateway address of a pod CIDR: its first address after the network's own."""
    net = netaddr.IPNetwork(cidr)
    return str(netaddr.IPAddress(net.first + 1, net.version))


def _fill(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class NodeNet:
    """This node's side of the pipeline. A dual-stack node has one pod CIDR per family (IPv4
    first); `pod_cidr`, `gw_ip` and `node_ip` are the first of each list, so single-stack code
    reads as it always did."""

    pod_cidr: str  # "10.244.0.0/24"
    gw_ip: str  # first address of pod_cidr, on the gateway internal port
    gw_mac: str
    gw_ofport: int
    node_ip: str = ""  # the node's own address, the tunnel endpoint (pods may always reach it)
    pod_cidrs: tuple[str, ...] = ()  # every pod CIDR, IPv4 first (default: pod_cidr)
    gw_ips: tuple[str, ...] = ()  # the gateway's address in each pod CIDR
    node_ips: tuple[str, ...] = ()  # the node's own addresses, one per family, IPv4 first

    def __post_init__(self) -> None:
        if not self.pod_cidrs:
            _fill(self, "pod_cidrs", (self.pod_cidr,))
        if not self.gw_ips:
            _fill(self, "gw_ips", tuple(first_host(c) for c in self.pod_cidrs))
        if not self.node_ips and self.node_ip:
            _fill(self, "node_ips", (self.node_ip,))

    @classmethod
    def for_cidr(cls, pod_cidr: str, gw_ofport: int, node_ip: str = "") -> NodeNet:
        return cls.for_cidrs((pod_cidr,), gw_ofport, (node_ip,) if node_ip else ())

    @classmethod
    def for_cidrs(cls, pod_cidrs, gw_ofport: int, node_ips=(), tunnel_ip: str = "") -> NodeNet:
        """`tunnel_ip`: the node address the overlay uses (default the first of node_ips)."""
        cidrs = ordered(str(netaddr.IPNetwork(c).cidr) for c in pod_cidrs)
        if not cidrs or len({family(c) for c in cidrs}) != len(cidrs):
            raise ValueError(f"pod CIDRs {list(pod_cidrs)}: need one per family, at most two")
        gws = tuple(first_host(c) for c in cidrs)
        nips = ordered(a for a in node_ips if a)
        node_ip = tunnel_ip or (nips[0] if nips else "")
        return cls(cidrs[0], gws[0], mac_from_ip(gws[0]), gw_ofport, node_ip, cidrs, gws, nips)

    def gw_ip_of(self, fam: Family) -> str:
        return next((g for g in self.gw_ips if family(g) is fam), "")

    def pod_cidr_of(self, fam: Family) -> str:
        return next((c for c in self.pod_cidrs if family(c) is fam), "")

    def node_ip_of(self, fam: Family) -> str:
        return next((a for a in self.node_ips if family(a) is fam), "")

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(family(c) for c in self.pod_cidrs)


@dataclass(frozen=True)
class Overlay:
    """The node's tunnel side: one flow-based VXLAN port and the cluster CIDR it serves."""

    tun_ofport: int
    cluster_cidr: str  # e.g. 10.244.0.0/16 (the first of cluster_cidrs)
    cluster_cidrs: tuple[str, ...] = ()  # one per family, IPv4 first (default: cluster_cidr)

    def __post_init__(self) -> None:
        if not self.cluster_cidrs:
            _fill(self, "cluster_cidrs", (self.cluster_cidr,))


@dataclass(frozen=True)
class RemoteNode:
    """Another node: where its pods live and how to reach it."""

    name: str
    pod_cidr: str  # the first of pod_cidrs
    node_ip: str  # its tunnel endpoint (IPv4 underlay)
    pod_cidrs: tuple[str, ...] = ()  # one per family, IPv4 first (default: pod_cidr)

    def __post_init__(self) -> None:
        if not self.pod_cidrs:
            _fill(self, "pod_cidrs", (self.pod_cidr,))

    @property
    def gw_mac(self) -> str:
        """Its gateway's MAC: from the gateway address of its first pod CIDR, as it computes it."""
        return mac_from_ip(first_host(self.pod_cidrs[0]))


# The source a pod sees when it reaches itself through a Service (hairpin), as kube-proxy's
# masquerade would make it; link-local, never routed.
HAIRPIN_IP = "169.254.169.252"
# Its IPv6 counterpart (and the node-port addresses below) come from a ULA block ovsctl keeps
# for itself: fd00:ffff::/96 must not be given to pods, Services or nodes.
HAIRPIN_IP6 = "fd00:ffff::a9fe:a9fc"

# NodePort traffic: the host DNATs nodeIP:nodePort to one of these (same port) and routes it
# into br-int through the gateway; ServiceLB load-balances it there. Traffic to NODEPORT_IP
# (externalTrafficPolicy Cluster) is also SNATed to the gateway IP so that replies come back
# through this node; NODEPORT_LOCAL_IP (policy Local) keeps the client's IP and only uses this
# node's endpoints.
NODEPORT_IP = "169.254.169.250"
NODEPORT_LOCAL_IP = "169.254.169.251"
NODEPORT_IP6 = "fd00:ffff::a9fe:a9fa"
NODEPORT_LOCAL_IP6 = "fd00:ffff::a9fe:a9fb"


def hairpin_ip(fam: Family) -> str:
    return HAIRPIN_IP if fam is V4 else HAIRPIN_IP6


def nodeport_ips(fam: Family) -> tuple[str, str]:
    """(Cluster, Local) node-port addresses of a family."""
    return (NODEPORT_IP, NODEPORT_LOCAL_IP) if fam is V4 else (NODEPORT_IP6, NODEPORT_LOCAL_IP6)


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
    ip: str  # the first of ips
    mac: str
    namespace: str = ""
    name: str = ""
    ips: tuple[str, ...] = ()  # every address, one per family, IPv4 first (default: ip)

    def __post_init__(self) -> None:
        if not self.ips:
            _fill(self, "ips", (self.ip,))

    def ip_of(self, fam: Family) -> str:
        return next((a for a in self.ips if family(a) is fam), "")
