"""The host side of external Service addresses (LoadBalancer ingress IPs, externalIPs):

- routes: each address /32 (/128) to the gateway interface, with a permanent neighbour entry
  holding the gateway's own MAC, so a packet for it that reaches this node enters br-int
  (where ServiceLB flows match it). The routes carry ovsctl's route protocol number
  (RTPROT_OVSCTL): the set is reconciled against the kernel's, and only routes of that
  protocol are ever removed (a restarted agent removes the stale ones it made before).
- announcement: the node holding an address of ovsctl's pool answers ARP / Neighbor
  Solicitation for it on its node-network interface (a proxy neighbour entry: `ip neigh add
  proxy`), and announces it with a gratuitous ARP / unsolicited Neighbor Advertisement.

The kernel answers for a proxy entry when forwarding is on, the address routes through
another interface (the gateway) and, for IPv6, proxy_ndp is set on the interface; proxy_arp
is not needed for proxy entries. proxy_delay is set to 0 so that the answer is immediate (the
default delays answers to broadcast requests by up to 0.8 s). An IPv6 proxy entry makes the
kernel join the address's solicited-node multicast group, so the solicitations arrive.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import struct
import subprocess

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ovsctl.agent.host.hostnet import HostNetError

log = logging.getLogger(__name__)

RTPROT_OVSCTL = 243  # the route protocol number of ovsctl's external-address routes
NUD_PERMANENT = 0x80
ETH_P_ARP = 0x0806


def _fam(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _host(addr: str) -> str:
    return f"{addr}/{128 if ':' in addr else 32}"


def external_routes(gateway_if: str) -> set[str]:
    """The addresses ovsctl routes to the gateway (routes of protocol RTPROT_OVSCTL)."""
    out = set()
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=gateway_if)
        if not idx:
            return out
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=254):
                if r["proto"] == RTPROT_OVSCTL and r.get_attr("RTA_OIF") == idx[0]:
                    out.add(str(ipaddress.ip_address(r.get_attr("RTA_DST"))))
    return out


_foreign_logged: set[str] = set()  # addresses whose foreign route was logged (once each)


def _route_of(ipr, addr: str):
    """The main table's host route (/32, /128) for `addr`, or None."""
    fam = _fam(addr)
    plen = 128 if fam == socket.AF_INET6 else 32
    for r in ipr.get_routes(family=fam, table=254):
        dst = r.get_attr("RTA_DST")
        if r["dst_len"] == plen and dst and ipaddress.ip_address(dst) == ipaddress.ip_address(addr):
            return r
    return None


def _our_neighbours(ipr, ifindex: int, gw_mac: str) -> set[str]:
    """The addresses with a PERMANENT neighbour entry holding the gateway's MAC on the
    gateway: the ones ovsctl makes (any other entry there is someone else's)."""
    out = set()
    for fam in (socket.AF_INET, socket.AF_INET6):
        for n in ipr.get_neighbours(family=fam, ifindex=ifindex):
            mac = (n.get_attr("NDA_LLADDR") or "").lower()
            if n["state"] & NUD_PERMANENT and mac == gw_mac.lower() and n.get_attr("NDA_DST"):
                out.add(str(ipaddress.ip_address(n.get_attr("NDA_DST"))))
    return out


def sync_external_routes(gateway_if: str, gw_mac: str, want: set[str]) -> set[str]:
    """Make the routes of protocol RTPROT_OVSCTL to the gateway exactly `want` (each with its
    permanent neighbour entry); the stale ones go with their neighbour entries. A route is
    created exclusively: an address that already has a host route of another protocol (the
    node-port route, a BGP /32, one an administrator made) is left alone and logged once,
    never taken over nor removed later. A neighbour entry is removed only if it is
    PERMANENT with the gateway's MAC (ours). Every call checks all of them against the
    kernel's and repairs what is missing. Returns the addresses routed now; one address that
    fails is logged and left out (the others go on)."""
    have = external_routes(gateway_if)
    done = set(have)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=gateway_if)
        if not idx:
            raise HostNetError(f"gateway {gateway_if} missing")
        ours = _our_neighbours(ipr, idx[0], gw_mac)
        for addr in sorted(have - want):
            fam = _fam(addr)
            try:
                ipr.route("del", dst=_host(addr), oif=idx[0], family=fam, proto=RTPROT_OVSCTL,
                          **({} if fam == socket.AF_INET6 else {"scope": 253}))  # fmt: skip
                done.discard(addr)
            except NetlinkError as e:
                log.error("external address %s: route not removed: %s", addr, e)
                continue
            _del_neigh(ipr, idx[0], addr, ours)
            log.info("external address %s: route to %s removed", addr, gateway_if)
        # every wanted address gets its neighbour entry again, not only the new ones: the routes
        # outlive an agent restart but the gateway's set-up flushes its neighbour entries
        for addr in sorted(want):
            fam = _fam(addr)
            try:
                if addr not in have and not _add_route(ipr, idx[0], addr):
                    continue  # someone else's route: not ours to change
                if addr not in ours:
                    ipr.neigh("replace", dst=addr, lladdr=gw_mac, ifindex=idx[0],
                              state=NUD_PERMANENT, family=fam)  # fmt: skip
                if addr not in done:
                    log.info("external address %s: routed into br-int through %s", addr, gateway_if)
                done.add(addr)
            except NetlinkError as e:
                log.error("external address %s: route to %s not added: %s", addr, gateway_if, e)
    for addr in list(_foreign_logged - want):
        _foreign_logged.discard(addr)  # logged again if it is wanted again
    return done


def _add_route(ipr, ifindex: int, addr: str) -> bool:
    """Add ovsctl's route for `addr` (exclusive: never replacing). False: a route of another
    protocol is there (logged once; left alone)."""
    fam = _fam(addr)
    try:
        ipr.route("add", dst=_host(addr), oif=ifindex, family=fam, proto=RTPROT_OVSCTL,
                  **({} if fam == socket.AF_INET6 else {"scope": 253}))  # fmt: skip
        return True
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
    r = _route_of(ipr, addr)
    if r is not None and r["proto"] == RTPROT_OVSCTL:
        # ours through another interface (the gateway renamed, re-created): point it here
        ipr.route("replace", dst=_host(addr), oif=ifindex, family=fam, proto=RTPROT_OVSCTL,
                  **({} if fam == socket.AF_INET6 else {"scope": 253}))  # fmt: skip
        return True
    if addr not in _foreign_logged:
        _foreign_logged.add(addr)
        log.warning("external address %s: a route of protocol %s is there already: left "
                    "alone (not routed into br-int by ovsctl)", addr,
                    r["proto"] if r is not None else "?")  # fmt: skip
    return False


def _del_neigh(ipr, ifindex: int, addr: str, ours: set[str]) -> None:
    if addr not in ours:
        return  # not a PERMANENT entry with the gateway's MAC: someone else's
    try:
        ipr.neigh("del", dst=addr, ifindex=ifindex, family=_fam(addr))
    except NetlinkError as e:
        if e.code != errno.ENOENT:
            log.error("external address %s: neighbour entry not removed: %s", addr, e)


def proxy_arp_on(ifname: str) -> bool:
    """net.ipv4.conf.IF.proxy_arp is on (or all's): then the kernel answers ARP for every
    address routed through another interface, on every node."""
    for conf in (ifname, "all"):
        try:
            with open(f"/proc/sys/net/ipv4/conf/{conf}/proxy_arp") as fh:
                if fh.read().strip() not in ("", "0"):
                    return True
        except OSError:
            continue
    return False


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise HostNetError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{value}\n")
    except OSError as e:
        raise HostNetError(f"{path}: {e}") from e


def prepare_proxy(ifname: str, v6: bool) -> None:
    """Immediate proxy answers on `ifname` (proxy_delay 0); for IPv6 also proxy_ndp."""
    if v6:
        _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/proxy_ndp", "1")
        _sysctl(f"/proc/sys/net/ipv6/neigh/{ifname}/proxy_delay", "0")
    else:
        _sysctl(f"/proc/sys/net/ipv4/neigh/{ifname}/proxy_delay", "0")


def proxies(ifname: str) -> set[str]:
    """The addresses with a proxy neighbour entry on `ifname`."""
    out = set()
    for fam in ("-4", "-6"):
        p = _ip("-j", fam, "neigh", "show", "proxy", "dev", ifname, check=False)
        if p.returncode == 0 and p.stdout.strip():
            out.update(str(ipaddress.ip_address(e["dst"])) for e in json.loads(p.stdout))
    return out


def add_proxy(ifname: str, addr: str) -> None:
    prepare_proxy(ifname, ":" in addr)
    _ip("-6" if ":" in addr else "-4", "neigh", "replace", "proxy", addr, "dev", ifname)


def del_proxy(ifname: str, addr: str) -> None:
    p = _ip(
        "-6" if ":" in addr else "-4", "neigh", "del", "proxy", addr, "dev", ifname, check=False
    )
    if p.returncode != 0 and addr in proxies(ifname):
        raise HostNetError(f"ip neigh del proxy {addr} dev {ifname}: {p.stderr.strip()}")


def _mac(ifname: str) -> bytes:
    """The interface's MAC (netlink: /sys shows the namespace it was mounted in)."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise HostNetError(f"interface {ifname} missing")
        mac = ipr.get_links(idx[0])[0].get_attr("IFLA_ADDRESS")
    return bytes.fromhex(mac.replace(":", ""))


def arp_frame(mac: bytes, addr: str) -> bytes:
    """A gratuitous ARP (a request whose sender and target are `addr`, from `mac`, broadcast):
    neighbours that know the address update its MAC."""
    ip = socket.inet_aton(addr)
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return eth + arp


def gratuitous_arp(ifname: str, addr: str, count: int = 2) -> None:
    frame = arp_frame(_mac(ifname), addr)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, ETH_P_ARP))
        for _ in range(count):
            s.send(frame)


def na_message(mac: bytes, addr: str) -> bytes:
    """An unsolicited Neighbor Advertisement (ICMPv6 136, Override set) for `addr` with the
    target link-layer address option; the kernel fills in the checksum."""
    target = socket.inet_pton(socket.AF_INET6, addr)
    return struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + bytes([2, 1]) + mac


def unsolicited_na(ifname: str, addr: str, count: int = 2) -> None:
    msg = na_message(_mac(ifname), addr)
    index = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        for _ in range(count):
            s.sendto(msg, ("ff02::1", 0, 0, index))


def announce(ifname: str, addr: str) -> None:
    """Tell the node network that `addr` is at this interface now."""
    if ":" in addr:
        unsolicited_na(ifname, addr)
    else:
        gratuitous_arp(ifname, addr)
