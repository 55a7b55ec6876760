"""Reading a CNI request: the IDs and CNI_ARGS (checked here too: the agent does not trust the
shim), prevResult, and the address and MAC the caller asks for. No host, no state but the
cluster snapshot (a Pod's static-IP annotation)."""

from __future__ import annotations

import os
import re

import netaddr

from ovsctl.agent.cniserver import ERR_ADDRESS_UNAVAILABLE, ERR_INVALID_CONFIG, CNIError
from ovsctl.k8s.model import STATIC_IP_ANNOTATION

# CNI error codes by name (the spec's; ours, 100 and up, are in cniserver)
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ARGS = 4
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50

# what a runtime may send as a container ID, a pod's name or namespace (podman container names
# and Kubernetes names both fit): no "/", no control characters, nothing a log line can forge
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def prev_result(req: dict) -> dict | None:
    """The config's prevResult, checked enough to build on (CNI spec: a plugin that is not
    first in a chain returns the previous result with its own additions)."""
    prev = (req.get("config") or {}).get("prevResult")
    if prev is None:
        return None
    if not isinstance(prev, dict):
        raise CNIError(ERR_INVALID_CONFIG, "prevResult must be an object")
    for key in ("interfaces", "ips", "routes"):
        items = prev.get(key)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, dict) for i in items)
        ):
            raise CNIError(ERR_INVALID_CONFIG, f"prevResult.{key} must be a list of objects")
    if prev.get("dns") is not None and not isinstance(prev.get("dns"), dict):
        raise CNIError(ERR_INVALID_CONFIG, "prevResult.dns must be an object")
    return prev


def ids(req: dict) -> tuple[str, str, str, dict]:
    """containerID, ifname, netns and CNI_ARGS, checked here too: the agent does not trust
    the shim (anything root runs can talk to the socket)."""
    cid, ifname, netns = (
        req.get("containerID") or "",
        req.get("ifname") or "",
        req.get("netns") or "",
    )
    args = req.get("args") or {}
    if not cid or not ifname:
        raise CNIError(ERR_INVALID_ARGS, "containerID and ifname are required")
    if not isinstance(cid, str) or not NAME_RE.match(cid):
        raise CNIError(ERR_INVALID_ARGS, "invalid characters in containerID", repr(cid)[:300])
    if (
        not isinstance(ifname, str)
        or len(ifname.encode("utf-8", "surrogateescape")) > 15
        or ifname in (".", "..")
        or any(c in "/:" or c.isspace() or not c.isprintable() for c in ifname)
    ):
        raise CNIError(ERR_INVALID_ARGS, "invalid interface name", repr(ifname)[:60])
    if not isinstance(netns, str) or "\x00" in netns:
        raise CNIError(ERR_INVALID_ARGS, "invalid netns path")
    if not isinstance(args, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in args.items()
    ):
        raise CNIError(ERR_INVALID_ARGS, "CNI_ARGS must map strings to strings")
    for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
        value = args.get(key, "")
        if value and not NAME_RE.match(value):
            raise CNIError(ERR_INVALID_ARGS, f"invalid {key}", repr(value)[:300])
    return cid, ifname, netns, args


def requested(cluster: dict, req: dict, args: dict) -> tuple[str | None, str | None]:
    """The address and MAC the caller asks for on an IPv4-only node (see requested_addrs)."""
    ips, mac = requested_addrs(cluster, req, args, (4,))
    return (ips[0] if ips else None), mac


def requested_addrs(
    cluster: dict, req: dict, args: dict, versions=(4,)
) -> tuple[tuple[str, ...], str | None]:
    """The addresses (at most one per family, IPv4 first) and the MAC the caller asks for, if
    any: runtimeConfig "ips"/"mac" (capabilities), CNI_ARGS IP=/MAC= (podman's network
    reload; IP= may list one address per family, comma-separated), or the Pod's annotation
    ovsctl.io/ip-address (a static IP, or a comma list of one per family). Sources that
    disagree, or an address of a family this node has no pod CIDR of (`versions`), are an
    error."""
    rc = (req.get("config") or {}).get("runtimeConfig")
    rc = {} if rc is None else rc
    if not isinstance(rc, dict):
        raise CNIError(ERR_INVALID_CONFIG, "runtimeConfig must be an object")
    ips: list[tuple[str, str]] = []
    rc_ips = rc.get("ips")
    if rc_ips is not None:
        if not isinstance(rc_ips, list) or not all(isinstance(i, str) for i in rc_ips):
            raise CNIError(ERR_INVALID_CONFIG, 'runtimeConfig "ips" must be a list of strings')
        ips += [(i.split("/", 1)[0], 'runtimeConfig "ips"') for i in rc_ips]
    if args.get("IP"):
        ips += [(i.strip().split("/", 1)[0], "CNI_ARGS IP") for i in args["IP"].split(",")]
    ns, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    pod = cluster.get(("Pod", ns, name)) if ns and name else None
    note = getattr(pod, "static_ip", "") if pod is not None else ""
    if note:
        ips += [(i.strip(), f"annotation {STATIC_IP_ANNOTATION}") for i in note.split(",")]
    chosen: dict[int, str] = {}  # version -> address
    for value, where in ips:
        try:
            addr = netaddr.IPAddress(value)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise CNIError(
                ERR_ADDRESS_UNAVAILABLE,
                f"requested address {value!r} ({where}) is not an IP address",
            ) from None
        if addr.version not in versions:
            served = " and ".join(f"IPv{v}" for v in sorted(versions))
            raise CNIError(
                ERR_ADDRESS_UNAVAILABLE,
                f"requested address {value} ({where}): this node serves {served} pods only",
            )
        ip = chosen.get(addr.version)
        if ip is not None and str(addr) != ip:
            raise CNIError(
                ERR_ADDRESS_UNAVAILABLE,
                f"requested addresses disagree: {ip} and {addr} ({where})",
            )
        chosen[addr.version] = str(addr)
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
            raise CNIError(ERR_ADDRESS_UNAVAILABLE, f"requested MACs disagree: {mac} and {value}")
        mac = value
    return tuple(chosen[v] for v in sorted(chosen)), mac


def host_netns(netns: str) -> bool:
    """Whether `netns` is the agent's (the node's) own network namespace."""
    try:
        st = os.stat(netns)
        me = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino)
