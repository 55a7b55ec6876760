"""The lab's ClusterIP allocation, as the API server does it for a Service (pure: a spec in,
the spec filled in): the families from spec.ipFamilyPolicy / spec.ipFamilies / spec.clusterIPs
and the cluster's families (the lab's cluster CIDRs, primary first), one ClusterIP per family
from that family's Service range (IPv4 SERVICE_CIDR, IPv6 SERVICE_CIDR6 = fd00:10:96::/112),
and spec.clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy written as the real API server
writes them.

- ipFamilyPolicy unset: RequireDualStack when ipFamilies or clusterIPs name two families, else
  SingleStack.
- SingleStack: the family of ipFamilies[0], else of clusterIPs[0], else the cluster's primary.
- PreferDualStack: both families on a dual-stack cluster, one on a single-stack cluster.
- RequireDualStack: both families; an error on a single-stack cluster.
- A family the cluster does not have is an error; so is an address that is not one.

A re-applied Service keeps its own addresses (those of `mine`, the stored object's spec).
"""

from __future__ import annotations

import netaddr

from flows.family import V4, V6, Family, family
from ovsctl.lab.base import SERVICE_CIDR, LabError

SERVICE_CIDR6 = netaddr.IPNetwork("fd00:10:96::/112")
SERVICE_CIDRS = {V4: SERVICE_CIDR, V6: SERVICE_CIDR6}
POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
NAMES = {"IPv4": V4, "IPv6": V6}


def cluster_families(cluster_cidr: str) -> tuple[Family, ...]:
    """The cluster's families from its comma-separated cluster CIDRs, the primary first."""
    out: list[Family] = []
    for c in str(cluster_cidr).split(","):
        if c.strip() and family(c.strip()) not in out:
            out.append(family(c.strip()))
    return tuple(out) or (V4,)


def _addr(value, where: str) -> str:
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise LabError(f"{where} {value!r} is not an IP address") from None


def allocate(spec: dict, mine: dict, used: set[str], cluster: tuple[Family, ...], ref: str) -> bool:
    """Fill in `spec` (in place) as the API server would; True if anything changed. `used`:
    the addresses other Services hold. Raises LabError naming the Service and the field."""
    before = {k: spec.get(k) for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")}
    policy = spec.get("ipFamilyPolicy")
    if policy not in (None, "") and policy not in POLICIES:
        raise LabError(f"{ref}: spec.ipFamilyPolicy must be one of {', '.join(POLICIES)}")
    fam_names = spec.get("ipFamilies") or []
    if not isinstance(fam_names, list) or len(fam_names) > 2:
        raise LabError(f"{ref}: spec.ipFamilies must be a list of one or two families")
    for i, f in enumerate(fam_names):
        if f not in NAMES:
            raise LabError(f"{ref}: spec.ipFamilies[{i}] must be IPv4 or IPv6, got {f!r}")
    fams = [NAMES[f] for f in fam_names]
    if len(fams) == 2 and fams[0] is fams[1]:
        raise LabError(f"{ref}: spec.ipFamilies lists {fam_names[0]} twice")
    headless = spec.get("clusterIP") == "None"
    given = [a for a in spec.get("clusterIPs") or [] if a not in ("", None, "None")]
    if spec.get("clusterIP") not in (None, "", "None"):
        ip = _addr(spec["clusterIP"], f"{ref}: spec.clusterIP")
        if given and _addr(given[0], f"{ref}: spec.clusterIPs[0]") != ip:
            raise LabError(f"{ref}: spec.clusterIPs[0] {given[0]} is not spec.clusterIP {ip}")
        given = given or [ip]
    given = [_addr(a, f"{ref}: spec.clusterIPs[{i}]") for i, a in enumerate(given)]
    if len(given) > 2 or (len(given) == 2 and family(given[0]) is family(given[1])):
        raise LabError(f"{ref}: spec.clusterIPs {given}: at most one address per family")
    for i, a in enumerate(given):
        if i < len(fams) and family(a) is not fams[i]:
            raise LabError(f"{ref}: spec.clusterIPs[{i}] {a} is not of spec.ipFamilies[{i}]")
    if not policy:
        policy = "RequireDualStack" if 2 in (len(fams), len(given)) else "SingleStack"
    if policy == "SingleStack" and 2 in (len(fams), len(given)):
        raise LabError(f"{ref}: spec.ipFamilyPolicy SingleStack with two families")
    # the families, in order: as asked, else as the addresses given, else the cluster's
    order = fams or [family(a) for a in given] or [cluster[0]]
    if policy != "SingleStack":
        order += [f for f in cluster if f not in order]
    for i, f in enumerate(order):
        if f not in cluster and (i == 0 or policy == "RequireDualStack"):
            raise LabError(
                f"{ref}: spec.ipFamilies: {f} is not a family of this lab "
                f"({', '.join(str(c) for c in cluster)})"
            )
    order = [f for f in order if f in cluster][: 1 if policy == "SingleStack" else 2]
    if policy == "RequireDualStack" and len(order) < 2:
        raise LabError(
            f"{ref}: spec.ipFamilyPolicy RequireDualStack needs a dual-stack lab "
            f"(this one is {cluster[0]} only)"
        )
    spec["ipFamilyPolicy"] = policy
    spec["ipFamilies"] = [str(f) for f in order]
    if headless:
        spec["clusterIPs"] = ["None"]
        return before != {k: spec.get(k) for k in before}
    theirs = {family(a): a for a in mine.get("clusterIPs") or [mine.get("clusterIP")] if _ip(a)}
    ips = []
    for i, f in enumerate(order):
        if i < len(given):
            ips.append(given[i])  # as asked (the lab, as before, trusts a manifest's address)
            continue
        ip = theirs.get(f)
        if ip is None or ip in used:
            ip = next((str(a) for a in SERVICE_CIDRS[f].iter_hosts() if str(a) not in used), None)
            if ip is None:
                raise LabError(f"{ref}: no free ClusterIP left in {SERVICE_CIDRS[f]}")
        ips.append(ip)
    spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
    return before != {k: spec.get(k) for k in before}


def _ip(a) -> bool:
    try:
        netaddr.IPAddress(a)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False
    return True
