"""Match and NAT values written as ovs-ofctl prints them (addresses canonical, a /32 or /128
bare, /0 left out; VLAN "no header" forms; nat targets with IPv6 in brackets), and the error
flow() raises for a malformed flow."""

from __future__ import annotations

import functools

import netaddr


class FlowError(ValueError):
    pass


def nat_target(ip: str, port: int | str | None = None) -> str:
    """The address[:port] of ct(nat(...)) as OVS prints it: an IPv6 address in brackets when a
    port follows ("[fd00::5]:8080"), bare otherwise."""
    if not port:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def split_nat_target(target: str) -> tuple[str, str]:
    """'10.0.0.1:80' / '[fd00::1]:80' / 'fd00::1' -> (address, port or '')."""
    if target.startswith("["):
        ip, _, rest = target[1:].partition("]")
        return ip, rest.removeprefix(":")
    if target.count(":") > 1:
        return target, ""
    ip, _, port = target.partition(":")
    return ip, port


def _check_nat(table: str, nat: str) -> None:
    """ct(nat(src=IP[:PORT])) / nat(dst=IP[:PORT]): an address and a port 1..65535 (a port 0
    reached the switch once from an EndpointSlice without a port: OVS refuses it); an IPv6
    address with a port in brackets, as nat_target() writes it."""
    kind, _, target = nat.partition("=")
    ip, port = split_nat_target(target)
    try:
        ok = kind in ("src", "dst") and bool(netaddr.IPAddress(ip))
        ok = ok and (":" not in ip or not port or target.startswith("["))
        ok = ok and str(netaddr.IPAddress(ip)) == ip
    except (netaddr.AddrFormatError, ValueError, TypeError):
        ok = False
    if ok and port:
        ok = port.isdigit() and 1 <= int(port) <= 0xFFFF
    if not ok:
        raise FlowError(f"{table}: nat({nat}): needs src= or dst= an address[:1..65535]")


def _or(words) -> str:
    """('tcp', 'udp', 'sctp') -> 'tcp, udp or sctp'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _canonical_ipv6(f: str, v: str) -> str | None:
    """The text OVS shows for an IPv6 match value; None for a /0 (no match at all)."""
    out = _canonical_ip(v, 6)
    if out is False:
        raise FlowError(f"{f}={v!r}: not an IPv6 address or CIDR")
    return out


def _canonical_ipv4(f: str, v: str) -> str | None:
    """The text OVS shows for an IPv4 match value; None for a /0 (no match at all)."""
    out = _canonical_ip(v, 4)
    if out is False:
        raise FlowError(f"{f}={v!r}: not an IPv4 address or CIDR")
    return out


@functools.lru_cache(maxsize=1 << 16)
def _canonical_ip(v: str, version: int) -> str | None | bool:
    """An address or CIDR of IP `version` as OVS shows it; None for a /0; False when `v` is
    not one. Remembered: every flow of a pod's address parses the same text (a cold start
    built 11,000 flows from 1,100 addresses)."""
    try:
        net = netaddr.IPNetwork(v)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False
    if net.version != version:
        return False
    if net.prefixlen == 0:
        return None
    if net.prefixlen == (32 if version == 4 else 128):
        return str(net.ip)
    return str(net.cidr)


# VLAN: only "no 802.1Q header" is matched (value without the CFI/present bit 0x1000, the mask
# with it), which OVS prints as vlan_tci=0xVVVV/0xMMMM; other forms OVS rewrites (dl_vlan=...).
VLAN_PRESENT = 0x1000


def _canonical_vlan_tci(v) -> str:
    try:
        if isinstance(v, int):
            val, mask = v, 0xFFFF
        else:
            val_s, _, mask_s = v.partition("/")
            val, mask = int(val_s, 0), int(mask_s, 0) if mask_s else 0xFFFF
    except ValueError:
        raise FlowError(f"vlan_tci={v!r}: not a number or value/mask") from None
    if not (0 <= val <= 0xFFFF and 0 <= mask <= 0xFFFF):
        raise FlowError(f"vlan_tci={v!r}: out of range")
    if val & VLAN_PRESENT or not mask & VLAN_PRESENT or val & ~mask:
        raise FlowError(f"vlan_tci={v!r}: only 'no VLAN header' matches are supported")
    return f"{val:#06x}" if mask == 0xFFFF else f"{val:#06x}/{mask:#06x}"
