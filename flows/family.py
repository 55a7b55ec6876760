"""IP families: the names the pipeline uses for an IPv4 or an IPv6 address.

Every flow that matches an address is written once and built per family: `family(addr)` says
which protocol shorthand and which match fields go with it (`ip`/`nw_src` or `ipv6`/`ipv6_src`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import netaddr


@dataclass(frozen=True)
class Family:
    version: int  # 4 or 6
    eth: str  # the protocol shorthand of any IP packet: "ip" / "ipv6"
    src: str  # source address match field
    dst: str  # destination address match field
    icmp: str  # "icmp" / "icmp6"
    host_bits: int  # 32 / 128
    any: str  # "0.0.0.0/0" / "::/0"

    def proto(self, l4: str) -> str:
        """The shorthand for an L4 protocol of this family: tcp -> tcp / tcp6."""
        l4 = l4.lower()
        if l4 not in ("tcp", "udp", "sctp", "icmp"):
            raise ValueError(f"unknown L4 protocol {l4!r}")
        if l4 == "icmp":
            return self.icmp
        return l4 if self.version == 4 else f"{l4}6"

    def __str__(self) -> str:
        return f"IPv{self.version}"


V4 = Family(4, "ip", "nw_src", "nw_dst", "icmp", 32, "0.0.0.0/0")
V6 = Family(6, "ipv6", "ipv6_src", "ipv6_dst", "icmp6", 128, "::/0")
FAMILIES = (V4, V6)


@functools.lru_cache(maxsize=1 << 14)
def family(addr: str) -> Family:
    """The family of an address or CIDR ("10.0.0.1", "fd00::/64"); ValueError if neither."""
    try:
        net = netaddr.IPNetwork(addr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"{addr!r} is not an IP address or CIDR") from None
    return V4 if net.version == 4 else V6


def of_version(version: int) -> Family:
    return V4 if version == 4 else V6


def ordered(addrs) -> tuple[str, ...]:
    """Addresses (or CIDRs) with IPv4 first, each family's order kept: how CNI results, pod
    status and the pipeline list a dual-stack pod's addresses."""
    addrs = tuple(addrs)
    out = tuple(a for a in addrs if family(a) is V4) + tuple(a for a in addrs if family(a) is V6)
    return addrs if out == addrs else out  # mostly already so: no second copy kept


def of(addrs, fam: Family) -> str:
    """The first of `addrs` in family `fam`, or ""."""
    return next((a for a in addrs if a and family(a) is fam), "")
