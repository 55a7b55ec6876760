"""External Service addresses on a node, with real namespaces, veths and packets: the routes
(of ovsctl's protocol) and permanent neighbour entries to the gateway appear and go; the
holder of a pool address answers ARP and Neighbor Solicitation from a peer on the node
network, sends a gratuitous ARP / unsolicited NA on take-over, and stops answering when it is
no longer the holder (a NotReady node); a restarted agent removes what it made before and
never a route it did not make."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time

import pytest

from flows.service_model import Service, ServicePort
from ovsctl.agent.host import announce
from ovsctl.agent.host.netlink import in_netns
from ovsctl.agent.reconcile import lbpool
from ovsctl.agent.reconcile.lbannounce import LBAnnouncer
from ovsctl.k8s.objects import Node

TAG = f"lb{os.getpid() % 100000}"
NODE_NS, PEER_NS = f"{TAG}n", f"{TAG}p"
NODE_IF, PEER_IF, GW_IF = f"{TAG}a", f"{TAG}b", f"{TAG}gw"
NODE_IP, PEER_IP = "192.168.77.1", "192.168.77.2"
NODE_IP6, PEER_IP6 = "fd77::1", "fd77::2"
VIP, VIP6 = "192.168.77.200", "fd77::c0"
GW_MAC = "02:00:00:77:00:01"
POOL = lbpool.parse_pool(["192.168.77.192/28", "fd77::c0/124"])


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    p = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {p.stderr}")
    return p.stdout


def wait_for(cond, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    try:
        for ns in (NODE_NS, PEER_NS):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", NODE_IF, "netns", NODE_NS, "type", "veth", "peer", "name",
           PEER_IF, "netns", PEER_NS)  # fmt: skip
        # the gateway: one end of a veth pair (no dummy module needed)
        sh("ip", "link", "add", GW_IF, "address", GW_MAC, "type", "veth", "peer", "name",
           f"{TAG}gx", ns=NODE_NS)  # fmt: skip
        sh("ip", "link", "set", f"{TAG}gx", "up", ns=NODE_NS)
        for ns, ifname, ip4, ip6 in ((NODE_NS, NODE_IF, NODE_IP, NODE_IP6),
                                     (PEER_NS, PEER_IF, PEER_IP, PEER_IP6)):  # fmt: skip
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", ns=ns)
            sh("ip", "addr", "add", f"{ip4}/24", "dev", ifname, ns=ns)
            sh("ip", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad", ns=ns)
            sh("ip", "link", "set", ifname, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", GW_IF, "up", ns=NODE_NS)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=NODE_NS)
        sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=NODE_NS)
        yield
    finally:
        for ns in (NODE_NS, PEER_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_node(fn, *args):
    return in_netns(f"/run/netns/{NODE_NS}", fn, *args)


def in_peer(fn, *args):
    return in_netns(f"/run/netns/{PEER_NS}", fn, *args)


def lb_service(addrs, local=False, name="web") -> Service:
    return Service("default", name, "10.96.0.10", (ServicePort("http", 80, "TCP", 80),), None,
                   type="LoadBalancer", lb_ingress=tuple(addrs), lb_class=lbpool.LB_CLASS,
                   external_local=local)  # fmt: skip


def announcer(nodes: dict[str, bool], pool=POOL, state_file=None) -> LBAnnouncer:
    cluster = {("Node", "", n): Node(n, internal_ips=(f"10.0.0.{i + 1}", f"fd00::{i + 1}"),
                                     ready=r) for i, (n, r) in enumerate(sorted(nodes.items()))}  # fmt: skip
    lb = LBAnnouncer(cluster, "node1", pool, state_file=state_file)
    in_node(lb.attach, GW_IF, GW_MAC, (NODE_IP, NODE_IP6), {4: NODE_IF, 6: NODE_IF})
    return lb


def update(lb: LBAnnouncer, addrs, parsed: dict) -> None:
    """One round: the allocation (computed from the cluster in the agent; here the Services'
    own ingress) and the host."""
    lb.allocation = {k: svc.lb_ingress for k, (svc, _) in parsed.items()}
    in_node(lb.update, addrs, parsed)


def set_nodes(lb: LBAnnouncer, nodes: dict[str, bool]) -> None:
    lb.cluster.clear()
    lb.cluster.update({("Node", "", n): Node(n, internal_ips=("10.0.0.9", "fd00::9"), ready=r)
                       for n, r in nodes.items()})  # fmt: skip


def node_mac() -> str:
    return sh("cat", f"/sys/class/net/{NODE_IF}/address", ns=NODE_NS).strip()


def routes(v6: bool) -> str:
    return sh("ip", "-6" if v6 else "-4", "route", "show", "dev", GW_IF, ns=NODE_NS)


class Listener:
    """A raw socket on the peer's interface collecting frames of one EtherType."""

    def __init__(self, ethertype: int):
        self.sock = in_peer(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                  socket.htons(ethertype)))  # fmt: skip
        self.sock.bind((PEER_IF, ethertype))

    def frames(self, timeout: float):
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.sock], [], [], left)[0]:
                yield self.sock.recv(2048)

    def close(self):
        self.sock.close()


def garp_seen(listener: Listener, addr: str, mac: str) -> bool:
    ip = socket.inet_aton(addr)
    for f in listener.frames(3.0):
        op = struct.unpack("!H", f[20:22])[0]
        if (
            op == 1
            and f[22:28] == bytes.fromhex(mac.replace(":", ""))
            and f[28:32] == ip == f[38:42]
        ):
            return True
    return False


def na_seen(listener: Listener, addr: str, mac: str) -> bool:
    target = socket.inet_pton(socket.AF_INET6, addr)
    for f in listener.frames(3.0):
        if f[20] == 58 and f[54] == 136 and f[62:78] == target:  # ICMPv6 NA for the address
            opt = f[78:86]
            return opt[0] == 2 and opt[2:8] == bytes.fromhex(mac.replace(":", ""))
    return False


def resolved_by_peer(addr: str) -> str | None:
    """The MAC the peer's kernel learns for `addr` after sending to it (a real ARP / NS)."""
    v6 = ":" in addr
    sh("ip", "-6" if v6 else "-4", "neigh", "flush", "dev", PEER_IF, ns=PEER_NS, check=False)

    def ask():
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (addr, 9))
        out = sh("ip", "neigh", "show", addr, "dev", PEER_IF, ns=PEER_NS).split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    try:
        return wait_for(lambda: in_peer(ask), f"the peer to resolve {addr}", timeout=3.0)
    except AssertionError:
        return None


def test_routes_and_neighbours_follow_the_external_addresses(net):
    lb = announcer({"node1": True})
    sh("ip", "route", "add", "192.168.77.250/32", "dev", GW_IF, ns=NODE_NS)  # not ovsctl's
    update(lb, {"198.51.100.7", "2001:db8::7", NODE_IP}, {})
    assert "198.51.100.7 proto 243 scope link" in routes(False)
    assert "2001:db8::7 proto 243" in routes(True)
    assert NODE_IP not in routes(False)  # the node's own address is never routed away
    neigh = sh("ip", "neigh", "show", "dev", GW_IF, ns=NODE_NS)
    assert f"198.51.100.7 lladdr {GW_MAC} PERMANENT" in neigh
    assert f"2001:db8::7 lladdr {GW_MAC} PERMANENT" in sh("ip", "-6", "neigh", "show", "dev",
                                                          GW_IF, ns=NODE_NS)  # fmt: skip
    update(lb, {"198.51.100.8"}, {})
    assert "198.51.100.7" not in routes(False) and "2001:db8::7" not in routes(True)
    assert "198.51.100.8 proto 243" in routes(False)
    assert "198.51.100.7" not in sh("ip", "neigh", "show", "dev", GW_IF, ns=NODE_NS)
    # a restarted agent (a new announcer) with no external addresses removes what it made,
    # and only that
    update(announcer({"node1": True}), set(), {})
    assert "198.51.100.8" not in routes(False)
    assert "192.168.77.250" in routes(False)
    sh("ip", "route", "del", "192.168.77.250/32", "dev", GW_IF, ns=NODE_NS)


@pytest.mark.parametrize("v6", [False, True], ids=["arp", "ndp"])
def test_holder_answers_announces_and_releases(net, v6, caplog):
    caplog.set_level("INFO", logger="ovsctl.agent")
    addr = VIP6 if v6 else VIP
    lb = announcer({"node1": True})
    parsed = {"default/web": (lb_service([addr]), ())}
    assert resolved_by_peer(addr) is None  # nobody answers before
    # the peer remembers the address at another MAC (an earlier holder's)
    fam = "-6" if v6 else "-4"
    sh("ip", fam, "neigh", "replace", addr, "lladdr", "02:00:00:00:00:99", "nud", "stale",
       "dev", PEER_IF, ns=PEER_NS)  # fmt: skip
    listener = Listener(0x86DD if v6 else 0x0806)
    try:
        update(lb, {addr}, parsed)  # node1, the only Ready node, takes it over
        assert lb.holders == {addr: "node1"}
        assert (na_seen if v6 else garp_seen)(listener, addr, node_mac()), "no announcement"
    finally:
        listener.close()
    # ... and the announcement alone moved it (nothing was sent to the address meanwhile)
    wait_for(lambda: node_mac() in sh("ip", fam, "neigh", "show", addr, "dev", PEER_IF,
                                      ns=PEER_NS), "the peer to learn the new MAC")  # fmt: skip
    assert addr in in_node(announce.proxies, NODE_IF)
    assert resolved_by_peer(addr) == node_mac()
    # node1 NotReady, node2 Ready: node2 holds it; node1 stops answering at once
    set_nodes(lb, {"node1": False, "node2": True})
    update(lb, {addr}, parsed)
    assert lb.holders == {addr: "node2"}
    assert addr not in in_node(announce.proxies, NODE_IF)
    assert resolved_by_peer(addr) is None
    logged = [r.getMessage() for r in caplog.records]
    assert f"LB address {addr}: taken over by node1, announced on {NODE_IF}" in logged
    assert f"LB address {addr}: released by node1 (holder now node2)" in logged
    # back again; then a restarted agent whose Service is gone releases the stale entry
    set_nodes(lb, {"node1": True})
    update(lb, {addr}, parsed)
    assert addr in in_node(announce.proxies, NODE_IF)
    fresh = announcer({"node1": True})
    update(fresh, set(), {})
    assert addr not in in_node(announce.proxies, NODE_IF)


def test_local_service_without_a_local_endpoint_is_not_held_here(net):
    lb = announcer({"node1": True, "node2": True})
    from flows.service_model import Endpoint

    eps = (Endpoint("10.244.1.5", (("http", 80, "TCP"),), node_name="node2"),)
    parsed = {"default/loc": (lb_service([VIP], local=True, name="loc"), eps)}
    update(lb, {VIP}, parsed)
    assert lb.holders == {VIP: "node2"}
    assert VIP not in in_node(announce.proxies, NODE_IF)
    update(lb, set(), {})


def test_one_bad_address_never_stops_the_others(net):
    lb = announcer({"node1": True})
    # an IPv6 address on a node whose IPv6 interface is unknown: logged, the IPv4 one goes on
    lb.ifaces = {4: NODE_IF}
    parsed = {"default/a": (lb_service(["fd77::c1"], name="a"), ()),
              "default/b": (lb_service([VIP], name="b"), ())}  # fmt: skip
    update(lb, {"fd77::c1", VIP}, parsed)
    assert VIP in in_node(announce.proxies, NODE_IF)
    assert lb.held == {VIP}
    update(lb, set(), {})
    assert in_node(announce.proxies, NODE_IF) == set()


def test_a_foreign_route_or_neighbour_entry_is_never_taken_over_nor_removed(net, caplog):
    caplog.set_level("WARNING", logger="ovsctl.agent.host.announce")
    lb = announcer({"node1": True})
    # a wanted address already routed by someone else (a BGP /32, the node-port route)
    sh("ip", "route", "add", "198.51.100.20/32", "dev", NODE_IF, "proto", "static", ns=NODE_NS)
    try:
        update(lb, {"198.51.100.20", "198.51.100.21"}, {})
        got = sh("ip", "-4", "route", "show", "198.51.100.20/32", ns=NODE_NS)
        assert f"dev {NODE_IF} proto static" in got and "proto 243" not in got  # not overwritten
        assert "198.51.100.20" not in routes(False)
        assert "198.51.100.21 proto 243" in routes(False)
        assert "198.51.100.20" not in sh("ip", "neigh", "show", "dev", GW_IF, ns=NODE_NS)
        assert any("198.51.100.20: a route of protocol 4 is there already" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        # a neighbour entry on the gateway that is not ours (another MAC) survives our route
        sh("ip", "neigh", "replace", "198.51.100.21", "lladdr", "02:00:00:00:00:42", "nud",
           "permanent", "dev", GW_IF, ns=NODE_NS)  # fmt: skip
        update(lb, set(), {})  # neither is wanted any more
        got = sh("ip", "-4", "route", "show", "198.51.100.20/32", ns=NODE_NS)
        assert f"dev {NODE_IF} proto static" in got  # not removed
        assert "198.51.100.21" not in routes(False)
        assert "02:00:00:00:00:42" in sh("ip", "neigh", "show", "198.51.100.21", "dev", GW_IF,
                                         ns=NODE_NS)  # fmt: skip
    finally:
        sh("ip", "route", "del", "198.51.100.20/32", ns=NODE_NS, check=False)
        sh("ip", "neigh", "del", "198.51.100.21", "dev", GW_IF, ns=NODE_NS, check=False)


def test_every_round_repairs_what_someone_removed(net):
    lb = announcer({"node1": True})
    parsed = {"default/web": (lb_service([VIP]), ())}
    update(lb, {VIP}, parsed)
    sh("ip", "route", "del", f"{VIP}/32", "dev", GW_IF, ns=NODE_NS)
    sh("ip", "neigh", "del", "proxy", VIP, "dev", NODE_IF, ns=NODE_NS)
    update(lb, {VIP}, parsed)  # the same set: checked against the kernel anyway
    assert f"{VIP} proto 243" in routes(False)
    assert f"{VIP} lladdr {GW_MAC} PERMANENT" in sh("ip", "neigh", "show", "dev", GW_IF,
                                                    ns=NODE_NS)  # fmt: skip
    assert VIP in in_node(announce.proxies, NODE_IF)
    update(lb, set(), {})
    assert VIP not in in_node(announce.proxies, NODE_IF)


def test_a_restart_releases_what_the_state_file_held_even_outside_the_pool(net, tmp_path):
    state = str(tmp_path / "lb-held.json")
    lb = announcer({"node1": True}, state_file=state)
    update(lb, {VIP}, {"default/web": (lb_service([VIP]), ())})
    assert VIP in in_node(announce.proxies, NODE_IF)
    # restarted with a pool that no longer has the address: the state file names it
    fresh = announcer({"node1": True}, pool=lbpool.parse_pool(["192.168.77.240/29"]),
                      state_file=state)  # fmt: skip
    update(fresh, set(), {})
    assert VIP not in in_node(announce.proxies, NODE_IF)


def test_proxy_arp_on_the_uplink_is_warned_about(net, caplog):
    caplog.set_level("WARNING", logger="ovsctl.agent")
    sh("sysctl", "-qw", f"net.ipv4.conf.{NODE_IF}.proxy_arp=1", ns=NODE_NS)
    try:
        announcer({"node1": True})
    finally:
        sh("sysctl", "-qw", f"net.ipv4.conf.{NODE_IF}.proxy_arp=0", ns=NODE_NS)
    assert any(f"proxy_arp=1 on {NODE_IF}" in r.getMessage() for r in caplog.records)
    caplog.clear()
    announcer({"node1": True})
    assert not any("proxy_arp" in r.getMessage() for r in caplog.records)
