"""Interfaces, addresses and routes, through pyroute2 (netlink; its ethtool for TX checksums).

Work inside a pod's network namespace runs in a short-lived thread that has entered that
namespace with setns(2): sockets opened there belong to the pod, and nothing forks.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import socket
import threading
import time

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool, NoSuchDevice, NotSupportedError

from ovsctl.agent.host import rtnl

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


class NetlinkFailure(RuntimeError):
    pass


def _failed(step: str, e: OSError, batch: bool = False) -> NetlinkFailure:
    """The failure of `step`, said once: the reason without an OSError's "[Errno N]", the file
    it concerns if any, and, for a `batch` of netlink requests, which one the kernel refused
    (a step of one request names it already)."""
    reason = e.strerror or str(e)
    if batch and isinstance(e, rtnl.RtnlError) and e.request not in step:
        reason = f"{e.request}: {reason}"
    elif e.filename is not None:
        reason = f"{e.filename}: {reason}"
    return NetlinkFailure(f"{step}: {reason}")


def host_ifname(container_id: str, ifname: str) -> str:
    """Host-side veth name for an attachment: stable, unique, at most 15 bytes."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return "ovs" + digest[:11]


def in_netns(path: str, fn, *args):
    """Run fn(*args) in a thread that has entered the network namespace at `path`."""
    return _finish(*_start_in_netns(path, fn, *args))


def _start_in_netns(path: str, fn, *args) -> tuple[threading.Thread, dict]:
    """Start fn(*args) in a thread that enters the network namespace at `path`; _finish()
    joins it and returns fn's value (or raises its exception)."""
    out: dict = {}

    def run():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            out["e"] = NetlinkFailure(f"cannot open network namespace {path}: {e.strerror}")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                out["e"] = NetlinkFailure(f"setns({path}): {os.strerror(err)}")
                return
        finally:
            os.close(fd)
        try:
            out["v"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out["e"] = e

    t = threading.Thread(target=run, name="netns-worker")
    t.start()
    return t, out


def _finish(t: threading.Thread, out: dict):
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("v")


def tx_checksum_off(ifname: str) -> None:
    """Turn off TX checksum offload (ethtool -K IF tx off) in the current namespace.
    With the userspace datapath, partial checksums would reach the receiver unfinished.
    pyroute2's ethtool (its ioctl half: ETHTOOL_STXCSUM, what `ethtool -K` sends); its errors
    become OSError, as the callers expect."""
    eth = IoctlEthtool(ifname)
    try:
        eth.set_offload_flag("tx-checksumming", 0)
    except NotSupportedError as e:
        raise OSError(errno.EOPNOTSUPP, f"{ifname}: TX checksum offload cannot be changed") from e
    except NoSuchDevice as e:
        raise OSError(errno.ENODEV, f"no interface {ifname}") from e
    finally:
        eth.close()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def link_mac(name: str) -> str | None:
    """An interface's MAC: from sysfs (cheap; the agent reads it for every pod at start), else
    netlink."""
    try:
        with open(f"/sys/class/net/{name}/address") as fh:
            return fh.read().strip() or None
    except OSError:
        pass
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return None
        return ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")


IFA_F_NODAD = 0x02  # an IPv6 address usable at once: no duplicate address detection


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _no_dad(ifname: str) -> None:
    """IPv6 on `ifname` (in the current namespace) without duplicate address detection: the
    MAC-derived link-local and the pod's address are usable at once (addresses are unique by
    IPAM)."""
    base = f"/proc/sys/net/ipv6/conf/{ifname}"
    try:
        _sysctl(f"{base}/disable_ipv6", "0")
        _sysctl(f"{base}/accept_dad", "0")
        _sysctl(f"{base}/accept_ra", "0")  # the pipeline drops pods' RAs; take none either
    except OSError as e:
        raise _failed(f"enabling IPv6 on {ifname}", e) from e


def setup_gateway(
    name: str,
    ip,
    prefixlen: int | None,
    mac: str,
    mtu: int,
    timeout: float = 10.0,
    tx_off: bool = False,
) -> None:
    """Configure the gateway internal port (created by OVS): MAC, MTU, addresses, up. `ip`
    is one address (with `prefixlen`), or a list of (address, prefixlen), one per family. Each
    address's prefix gives the host its route to that pod CIDR through the gateway; IPv6
    addresses are added without DAD."""
    addrs = [(ip, prefixlen)] if isinstance(ip, str) else [tuple(a) for a in ip]
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        while (idx := _index(ipr, name)) is None:
            if time.monotonic() > deadline:
                raise NetlinkFailure(f"gateway interface {name} did not appear within {timeout}s")
            time.sleep(0.02)
        ipr.link("set", index=idx, address=mac, mtu=mtu)
        if any(_family(a) == socket.AF_INET6 for a, _ in addrs):
            _no_dad(name)
        for fam in (socket.AF_INET, socket.AF_INET6):
            want = {(a, p) for a, p in addrs if _family(a) == fam}
            if fam == socket.AF_INET6 and not want:
                continue  # an IPv4-only node leaves IPv6 on the gateway as it is
            have = {
                (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in ipr.get_addr(index=idx, family=fam)
                if not (fam == socket.AF_INET6 and a["scope"] != 0)  # keep the link-local
            }
            for addr, plen in have - want:
                ipr.addr("del", index=idx, address=addr, prefixlen=plen)
            for addr, plen in sorted(want - have):
                extra = {"flags": IFA_F_NODAD} if fam == socket.AF_INET6 else {}
                ipr.addr("add", index=idx, address=addr, prefixlen=plen, **extra)
        ipr.link("set", index=idx, state="up")
    if tx_off:
        tx_checksum_off(name)


def create_pod_interface(
    host_if: str,
    netns: str,
    ifname: str,
    *,
    mac: str,
    ip: str,
    prefixlen: int,
    gateway: str,
    mtu: int,
    tx_off: bool,
    more: tuple = (),
    during=None,
) -> tuple[str, bool] | tuple[str, tuple[bool, ...]]:
    """Make a veth pair: `host_if` in this namespace, `ifname` inside `netns`, configured with
    MAC, MTU, address, default route via the gateway (unless the pod already has one of that
    family: a second interface, e.g. a Multus delegate, must not take it), and loopback up.
    `more`: further (ip, prefixlen, gateway), one per other family (dual-stack); an IPv6
    address is added without DAD, with accept_dad=0 on the interface, so that it and the
    MAC-derived link-local are usable at once. Returns the host MAC (chosen: host_side_mac) and
    whether the default route was added (with `more`: a tuple, one per address). On failure the
    pair is removed again; the NetlinkFailure says which step failed.
    `during`: called (in this thread) once the host end is up, while the pod end is configured
    in its namespace's thread (the CNI ADD plugs the host end into OVS meanwhile); what it raises
    is raised (after the pod side's thread has ended, the pair removed)."""
    host_mac = host_side_mac(host_if)
    nl = rtnl.host()
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetlinkFailure(f"cannot open network namespace {netns}: {e.strerror}") from e
    try:
        nl.do(rtnl.veth(host_if, host_mac, mtu, ifname, mac, fd))
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise NetlinkFailure(
                f"interface {host_if} or {ifname} in {netns} already exists"
            ) from e
        raise _failed(f"creating veth {host_if}", e) from e
    finally:
        os.close(fd)
    try:
        try:
            idx = socket.if_nametoindex(host_if)
            quiet_host_side(host_if)
            nl.do(rtnl.link_up(idx, host_if))
        except OSError as e:
            raise _failed(f"bringing up host end {host_if}", e) from e
        addrs = ((ip, prefixlen, gateway), *more)
        job = _start_in_netns(netns, _configure_pod_side, ifname, addrs, tx_off)
        if during is not None:
            try:
                during()
            except BaseException:
                job[0].join()  # the pod side's thread never outlives the call
                raise
        routed = _finish(*job)
        return host_mac, (routed if more else routed[0])
    except BaseException:
        delete_link(host_if)
        raise


def host_side_mac(host_if: str) -> str:
    """The host end's MAC, chosen rather than read back: locally administered, unicast, from
    the interface name (itself unique per attachment)."""
    digest = hashlib.sha256(host_if.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E, *digest[:5]))


def quiet_host_side(name: str) -> None:
    """The host end of a pod's veth is only a wire into br-int: the host stack must not answer
    ARP on it (it would hand the pod its own MAC for the gateway address and then route the
    pod's packets itself, next to OVS) nor speak IPv6 on it."""
    for path, value in (
        (f"/proc/sys/net/ipv4/conf/{name}/arp_ignore", "8"),
        (f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1"),
    ):
        try:
            with open(path, "w") as fh:
                fh.write(value)
        except FileNotFoundError:
            if "ipv4" in path:
                raise NetlinkFailure(f"{path} is missing") from None


def _configure_pod_side(ifname, addrs, tx_off) -> tuple[bool, ...]:
    """In the pod's namespace: the veth end (MAC and MTU set when it was made) up with its
    addresses (IPv6 without DAD), the default route of each family unless the pod has one of
    that family already, loopback up. Returns, per address, whether its default route was
    added."""
    try:
        idx = socket.if_nametoindex(ifname)
    except OSError:
        raise NetlinkFailure(f"{ifname} did not appear in the pod's namespace") from None
    routed = []
    step = f"enabling IPv6 on {ifname} in the pod's namespace"
    try:
        if any(_family(a[0]) == socket.AF_INET6 for a in addrs):
            _no_dad(ifname)  # before the link is up: its link-local is never tentative
        step = f"configuring {ifname} in the pod's namespace"
        with rtnl.Rtnl() as nl:
            # one send: the link up, its addresses, loopback up (the kernel takes them in order)
            reqs = [rtnl.link_up(idx, ifname)]
            for ip, prefixlen, _gw in addrs:
                v6 = _family(ip) == socket.AF_INET6
                reqs.append(rtnl.addr_add(idx, ip, prefixlen, IFA_F_NODAD if v6 else 0))
            lo = _lo_index()
            if lo is not None:
                reqs.append(rtnl.link_up(lo, "lo"))
            nl.do(*reqs)
            for ip, _plen, gateway in addrs:
                fam = _family(ip)
                step = f"adding the default route via {gateway} on {ifname} in the pod's namespace"
                has_default = nl.default_route(fam, gateway_only=fam == socket.AF_INET6)
                if not has_default:
                    nl.do(rtnl.default_route_add(gateway, idx))
                routed.append(not has_default)
        step = f"turning off TX checksum offload on {ifname}"
        if tx_off:
            tx_checksum_off(ifname)
    except OSError as e:
        raise _failed(step, e, batch=True) from e
    return tuple(routed)


def _lo_index() -> int | None:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return None  # no loopback device: nothing to bring up


def delete_link(name: str) -> bool:
    """Delete an interface (a veth takes its peer with it); False if it was not there."""
    try:
        rtnl.host().do(rtnl.link_del(name))
    except OSError as e:
        if rtnl.gone(e):
            return False
        raise _failed(f"deleting {name}", e) from e
    return True


def pod_interface(netns: str, ifname: str) -> dict | None:
    """What is configured on `ifname` inside `netns`: mac, mtu, addresses (IPv4, then IPv6
    global ones), default gateways (IPv4 in "gateways", IPv6 in "gateways6")."""

    def read():
        with IPRoute() as ipr:
            idx = _index(ipr, ifname)
            if idx is None:
                return None
            link = ipr.get_links(idx)[0]
            addrs = [
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=idx, family=socket.AF_INET)
            ] + [
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=idx, family=socket.AF_INET6)
                if a["scope"] == 0
            ]
            gws = [
                r.get_attr("RTA_GATEWAY")
                for r in ipr.get_routes(family=socket.AF_INET, oif=idx)
                if r["dst_len"] == 0
            ]
            gws6 = [
                r.get_attr("RTA_GATEWAY")
                for r in ipr.get_routes(family=socket.AF_INET6, oif=idx, table=254)
                if r["dst_len"] == 0
            ]
            return {
                "mac": link.get_attr("IFLA_ADDRESS"),
                "mtu": link.get_attr("IFLA_MTU"),
                "addresses": addrs,
                "gateways": [g for g in gws if g],
                "gateways6": [g for g in gws6 if g],
                "up": bool(link["flags"] & 1),
            }

    return in_netns(netns, read)
