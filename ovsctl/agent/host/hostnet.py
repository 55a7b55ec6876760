"""The node's host stack around br-int: forwarding, the route to the cluster CIDR through the
gateway, masquerade for pod traffic leaving the cluster, and the underlay MTU.

Egress SNAT uses iptables MASQUERADE in the host stack rather than OVS ct(nat): packets to
the outside already leave br-int through the gateway into the host, which owns the node IP and
picks the egress interface; MASQUERADE takes that interface's address, and the kernel's
conntrack un-NATs the replies before they are routed back through the gateway. It works the
same on the system and userspace datapaths, and needs no flows per destination.
"""

from __future__ import annotations

import logging
import socket
import subprocess

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

NAT_CHAIN = "OVSCTL-POSTROUTING"
NODEPORT_CHAIN = "OVSCTL-NODEPORTS"
FWD_CHAIN = "OVSCTL-FORWARD"
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


class HostNetError(RuntimeError):
    pass


def _ipt(*args: str, check: bool = True, v6: bool = False) -> subprocess.CompletedProcess:
    """iptables (ip6tables with `v6`)."""
    cmd = "ip6tables" if v6 else "iptables"
    p = subprocess.run([cmd, "-w", "5", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise HostNetError(f"{cmd} {' '.join(args)}: {p.stderr.strip()}")
    return p


def _ensure_chain(table: str, chain: str, parent: str, v6: bool = False) -> None:
    if _ipt("-t", table, "-L", chain, "-n", check=False, v6=v6).returncode != 0:
        _ipt("-t", table, "-N", chain, v6=v6)
    _ipt("-t", table, "-F", chain, v6=v6)
    if _ipt("-t", table, "-C", parent, "-j", chain, check=False, v6=v6).returncode != 0:
        _ipt("-t", table, "-I", parent, "1", "-j", chain, v6=v6)


def setup_masquerade(pod_cidr: str, cluster_cidr: str) -> None:
    """Pod traffic to outside the cluster CIDR is masqueraded to the node's address; forwarded
    pod traffic is accepted even where the FORWARD policy is DROP. An IPv6 pod CIDR's rules go
    to ip6tables (MASQUERADE takes the egress interface's IPv6 address: the node's), an IPv4
    one's to iptables."""
    v6 = ":" in pod_cidr
    _ensure_chain("nat", NAT_CHAIN, "POSTROUTING", v6=v6)
    _ipt(
        "-t",
        "nat",
        "-A",
        NAT_CHAIN,
        "-s",
        pod_cidr,
        "!",
        "-d",
        cluster_cidr,
        "-m",
        "comment",
        "--comment",
        "ovsctl: pods to outside the cluster",
        "-j",
        "MASQUERADE",
        v6=v6,
    )
    _ensure_chain("filter", FWD_CHAIN, "FORWARD", v6=v6)
    for direction in ("-s", "-d"):
        _ipt("-t", "filter", "-A", FWD_CHAIN, direction, pod_cidr, "-j", "ACCEPT", v6=v6)
    log.info(
        "masquerade %s -> outside %s; forwarding of pod traffic accepted", pod_cidr, cluster_cidr
    )


def setup_node_ports(gateway_if: str, gw_mac: str, addresses: tuple[str, ...]) -> None:
    """NodePort entry: packets to a local address and a node port are DNATed (port kept) to a
    node-port address, which is routed into br-int through the gateway (a permanent neighbour
    entry with the gateway's own MAC, so the pipeline routes them like host traffic to pods).
    IPv6 node-port addresses (NODEPORT_IP6, NODEPORT_LOCAL_IP6) get the same in ip6tables, a
    /128 route and a permanent IPv6 neighbour; with only IPv4 addresses ip6tables is never
    run. The per-port rules are written by sync_node_ports."""
    v6_addrs = [a for a in addresses if ":" in a]
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=gateway_if)
        if not idx:
            raise HostNetError(f"gateway {gateway_if} missing")
        if v6_addrs:
            _enable_ipv6(gateway_if)
        for addr in addresses:
            v6 = ":" in addr
            fam = socket.AF_INET6 if v6 else socket.AF_INET
            try:
                ipr.route(
                    "replace",
                    dst=f"{addr}/{128 if v6 else 32}",
                    oif=idx[0],
                    scope=253,
                    **({"family": fam} if v6 else {}),
                )
                ipr.neigh(
                    "replace",
                    dst=addr,
                    lladdr=gw_mac,
                    ifindex=idx[0],
                    state=0x80,
                    **({"family": fam} if v6 else {}),
                )
            except NetlinkError as e:
                raise HostNetError(f"route/neighbour {addr} dev {gateway_if}: {e}") from e
    for v6 in (False, True) if v6_addrs else (False,):
        if _ipt("-t", "nat", "-L", NODEPORT_CHAIN, "-n", check=False, v6=v6).returncode != 0:
            _ipt("-t", "nat", "-N", NODEPORT_CHAIN, v6=v6)
        jump = ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", NODEPORT_CHAIN]
        if _ipt("-t", "nat", "-C", *jump, check=False, v6=v6).returncode != 0:
            _ipt("-t", "nat", "-I", jump[0], "1", *jump[1:], v6=v6)
        if _missing_chain("filter", FWD_CHAIN, v6=v6):
            # (setup_masquerade makes it otherwise)
            _ensure_chain("filter", FWD_CHAIN, "FORWARD", v6=v6)
        for addr in addresses:
            if (":" in addr) != v6:
                continue
            host = f"{addr}/{128 if v6 else 32}"
            for direction in ("-s", "-d"):
                rule = ["-t", "filter", "-A", FWD_CHAIN, direction, host, "-j", "ACCEPT"]
                check = ["-t", "filter", "-C", *rule[3:]]
                if _ipt(*check, check=False, v6=v6).returncode != 0:
                    _ipt(*rule, v6=v6)
    log.info("node ports enter br-int through %s at %s", gateway_if, ", ".join(addresses))


def _enable_ipv6(ifname: str) -> None:
    """An interface needs IPv6 on for its IPv6 neighbour entries (a gateway created while
    IPv6 is off by default has it off)."""
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    try:
        with open(path) as fh:
            if fh.read().strip() == "0":
                return
        with open(path, "w") as fh:
            fh.write("0\n")
    except OSError as e:
        raise HostNetError(f"IPv6 on {ifname}: {e}") from e


def _missing_chain(table: str, chain: str, v6: bool = False) -> bool:
    return _ipt("-t", table, "-L", chain, "-n", check=False, v6=v6).returncode != 0


def node_port_rules(entries: set[tuple[str, int, str]], v6: bool) -> str:
    """The iptables-restore (v6: ip6tables-restore) input that replaces the NodePort chain
    with the entries (protocol, node port, node-port address) of that family."""
    lines = ["*nat", f":{NODEPORT_CHAIN} - [0:0]"]
    for proto, port, addr in sorted(entries):
        if (":" in addr) != v6:
            continue
        lines.append(
            f"-A {NODEPORT_CHAIN} -p {proto} -m {proto} --dport {port} "
            f'-m comment --comment "ovsctl: nodePort {port}/{proto}" '
            f"-j DNAT --to-destination {addr}"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def sync_node_ports(entries: set[tuple[str, int, str]], ipv6: bool = False) -> None:
    """Replace the NodePort rules with `entries` (protocol, node port, node-port address), in
    one atomic iptables-restore of the chain; the IPv6 ones (an IPv6 node-port address) in one
    ip6tables-restore, run only when the node has IPv6 (`ipv6`) or an entry is IPv6."""
    families = [False] + ([True] if ipv6 or any(":" in e[2] for e in entries) else [])
    for v6 in families:
        cmd = "ip6tables-restore" if v6 else "iptables-restore"
        p = subprocess.run(
            [cmd, "-w", "5", "--noflush"],
            input=node_port_rules(entries, v6),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if p.returncode != 0:
            raise HostNetError(f"{cmd} of {NODEPORT_CHAIN}: {p.stderr.strip()}")
    log.info(
        "node ports: %s",
        ", ".join(f"{port}/{proto}->{addr}" for proto, port, addr in sorted(entries)) or "none",
    )


def enable_forwarding(ipv6: bool = False) -> None:
    """IPv4 forwarding; IPv6 forwarding too (net.ipv6.conf.all.forwarding) on a node with an
    IPv6 pod CIDR."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
        fh.write("1\n")
    if ipv6:
        with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as fh:
            fh.write("1\n")


def route_cluster_cidr(gateway_if: str, cluster_cidr: str, mtu: int) -> None:
    """The host reaches pods of other nodes through the gateway (the pipeline tunnels them);
    an IPv6 cluster CIDR likewise."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=gateway_if)
        if not idx:
            raise HostNetError(f"gateway {gateway_if} missing")
        try:
            if ":" in cluster_cidr:
                ipr.route(
                    "replace",
                    dst=cluster_cidr,
                    oif=idx[0],
                    family=socket.AF_INET6,
                    metrics={"mtu": mtu},
                )
            else:
                ipr.route("replace", dst=cluster_cidr, oif=idx[0], scope=253, metrics={"mtu": mtu})
        except NetlinkError as e:
            raise HostNetError(f"route {cluster_cidr} dev {gateway_if}: {e}") from e


def interface_of(ip: str) -> tuple[str, int] | None:
    """(name, mtu) of the interface holding `ip` (IPv4 or IPv6) in this namespace."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    want = socket.inet_pton(fam, ip)
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=fam):
            if socket.inet_pton(fam, a.get_attr("IFA_ADDRESS")) == want:
                link = ipr.get_links(a["index"])[0]
                return link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU")
    return None


def pod_mtu(node_ip: str | None, configured: int) -> int:
    """Configured MTU, or the uplink's MTU minus the VXLAN overhead."""
    if configured:
        return configured
    found = interface_of(node_ip) if node_ip else None
    if found is None:
        log.info("no uplink found for node IP %s; pod MTU 1450", node_ip)
        return 1500 - VXLAN_OVERHEAD
    name, mtu = found
    log.info("uplink %s has MTU %d: pods get %d", name, mtu, mtu - VXLAN_OVERHEAD)
    return mtu - VXLAN_OVERHEAD
