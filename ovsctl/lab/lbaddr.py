"""The lab's stand-ins for what sits outside a cluster in front of its LoadBalancer Services
(pure: dicts in, answers out; the lab applies them):

- **the external allocator** (a cloud, MetalLB, kube-vip): a `type: LoadBalancer` Service
  without `spec.loadBalancerClass` gets `status.loadBalancer.ingress` from LB_RANGE
  (172.30.0.200-172.30.0.250), the lowest free address; a re-applied Service keeps the
  one it has (the stored object's status, as the API server keeps status across an update of
  the spec); a deleted Service's address is free again. With `loadBalancerClass: ovsctl.io/lb`
  the lab leaves status to the agents (their pool, LB_POOL, announced by ARP on the underlay).
- **the cloud load balancer**: every LoadBalancer ingress address the lab allocated (or the
  manifest gave) and every `spec.externalIPs` address is routed from the external host to the
  nodes, an ECMP route over the underlay address of every node that is up; for
  `externalTrafficPolicy: Local` only over the nodes with a ready local endpoint (a selector
  Service's ready pods; all nodes that are up when it has none, so the packets reach a node and
  are dropped there).
"""

from __future__ import annotations

import netaddr

from ovsctl.lab.base import LabError

LB_RANGE = netaddr.IPRange("172.30.0.200", "172.30.0.250")
# ovsctl's own pool in the lab (the agents' `lb_pool`), for `loadBalancerClass: ovsctl.io/lb`:
# inside the underlay subnet (the holder answers ARP there) and apart from LB_RANGE.
LB_POOL = "172.30.0.176/28"
LB_POOL6 = "fd00:172:30::b0/124"  # in a lab with IPv6 too (the nodes are fd00:172:30::a+k)
LB_CLASS = "ovsctl.io/lb"


def _ingress(status: dict | None) -> list[str]:
    lb = ((status or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in lb if isinstance(i, dict) and i.get("ip")]


def ingress_ips(body: dict) -> list[str]:
    """The Service's status.loadBalancer.ingress[].ip (type LoadBalancer only)."""
    if (body.get("spec") or {}).get("type") != "LoadBalancer":
        return []
    return _ingress(body.get("status"))


def fill_ingress(body: dict, mine: dict, used: set[str], ref: str) -> bool:
    """Fill in `body`'s status.loadBalancer.ingress (in place) as the external allocator
    would; True if it changed. `mine`: the stored object (or {}); `used`: the LoadBalancer
    ingress addresses other Services hold. Raises LabError naming the Service and field."""
    spec = body.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    if _ingress(body.get("status")):
        return False  # the manifest says (a test, or an allocator of its own)
    kept = [a for a in _ingress(mine.get("status")) if a not in used]
    lb_class = spec.get("loadBalancerClass")
    if lb_class not in (None, ""):
        if not isinstance(lb_class, str):
            raise LabError(f"{ref}: spec.loadBalancerClass must be a string")
        if not kept:
            return False  # not ours: its own controller (ovsctl.io/lb: the agents) fills it
        ips = kept
    else:
        ips = kept or [next((str(a) for a in LB_RANGE if str(a) not in used), "")]
        if not ips[0]:
            raise LabError(
                f"{ref}: status.loadBalancer.ingress: no free address left in {LB_RANGE}"
            )
    body.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": a} for a in ips]}
    return True


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def routed_addresses(body: dict) -> list[str]:
    """The addresses the lab's cloud load balancer routes to the nodes: LoadBalancer ingress
    (not for class ovsctl.io/lb: the agents announce those) and spec.externalIPs."""
    spec = body.get("spec") or {}
    out = [] if spec.get("loadBalancerClass") == LB_CLASS else list(ingress_ips(body))
    for a in spec.get("externalIPs") or []:
        if isinstance(a, str) and a not in out:
            out.append(a)
    good = []
    for a in out:
        try:
            good.append(str(netaddr.IPAddress(a)))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            continue  # the agents report it (the Service named); nothing to route here
    return good


def ext_routes(services: list[dict], pods: dict, nodes: dict, down: set[str]) -> dict:
    """{address: [next hops]}: for every routed address of every Service body, the underlay
    addresses (of the address's family) of the nodes that are up, only those with a ready
    local endpoint for externalTrafficPolicy Local (when there is one). `pods`: the lab's
    records (namespace, node, labels, ready); `nodes`: name -> its underlay addresses."""
    up = sorted((n for n in nodes if n not in down), key=lambda n: (len(n), n))
    routes: dict[str, list[str]] = {}
    for body in services:
        spec, meta = body.get("spec") or {}, body.get("metadata") or {}
        addrs = routed_addresses(body)
        if not addrs:
            continue
        chosen = up
        if spec.get("externalTrafficPolicy") == "Local":
            ns = meta.get("namespace") or "default"
            local = {
                p["node"]
                for p in pods.values()
                if p.get("namespace") == ns
                and p.get("ip")
                and p.get("ready", True)
                and _selects(spec.get("selector") or {}, p.get("labels") or {})
            }
            chosen = [n for n in up if n in local] or up
        for a in addrs:
            version = netaddr.IPAddress(a).version
            hops = [
                ip for n in chosen for ip in nodes[n] if netaddr.IPAddress(ip).version == version
            ]
            if hops:
                routes[a] = sorted(set(routes.get(a, [])) | set(hops), key=netaddr.IPAddress)
    return routes


def route_commands(want: dict, have: dict) -> list[list[str]]:
    """`ip route` argument lists turning the external host's routes `have` into `want` (both
    {address: [next hops]}), tagged with protocol PROTO so the lab finds its own."""
    cmds = []
    for a in sorted(set(have) - set(want)):
        cmds.append(["route", "del", _host(a), "proto", PROTO])
    for a, hops in sorted(want.items()):
        if have.get(a) == hops:
            continue
        if len(hops) == 1:
            cmds.append(["route", "replace", _host(a), "proto", PROTO, "via", hops[0]])
        else:
            nh = [w for h in hops for w in ("nexthop", "via", h)]
            cmds.append(["route", "replace", _host(a), "proto", PROTO, *nh])
    return cmds


PROTO = "77"  # the routes' protocol number: the lab's cloud load balancer


def _host(a: str) -> str:
    return f"{a}/{32 if netaddr.IPAddress(a).version == 4 else 128}"


def parse_routes(rows: list[dict]) -> dict:
    """`ip -j route show proto PROTO` (IPv4 or IPv6) -> {address: [next hops]}."""
    out = {}
    for r in rows:
        dst = str(r.get("dst", "")).split("/")[0]
        if not dst:
            continue
        hops = [h["gateway"] for h in r.get("nexthops") or [] if h.get("gateway")]
        if r.get("gateway"):
            hops.append(r["gateway"])
        out[dst] = sorted(set(hops), key=netaddr.IPAddress)
    return out
