"""Syntax checks of names, label keys/values, IPs and CIDRs, and the immutable :class:`Labels`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

import netaddr

from ovsctl.k8s.kinds import ModelError

# --------------------------------------------------------------------------- syntax checks

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _dns_problem(value: str, rule: str) -> str | None:
    """Why value is not a valid name under rule, or None."""
    if rule == "label":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1123_LABEL.fullmatch(value):
            return (
                "must be a DNS-1123 label (lower case alphanumeric characters or '-', "
                "starting and ending with an alphanumeric character)"
            )
    elif rule == "subdomain":
        if len(value) > 253:
            return "must be no more than 253 characters"
        if not _DNS1123_SUBDOMAIN.fullmatch(value):
            return (
                "must be a DNS-1123 subdomain (lower case alphanumeric characters, '-' or '.', "
                "starting and ending with an alphanumeric character)"
            )
    elif rule == "1035":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1035_LABEL.fullmatch(value):
            return (
                "must be a DNS-1035 label (lower case alphanumeric characters or '-', "
                "starting with a letter and ending with an alphanumeric character)"
            )
    else:  # pragma: no cover - programming error
        raise AssertionError(rule)
    return None


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "label key prefix must not be empty"
        p = _dns_problem(prefix, "subdomain")
        if p:
            return f"label key prefix {p}"
    if not name:
        return "label key name must not be empty"
    if len(name) > 63:
        return "label key name must be no more than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            "label key name must consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def _label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "label value must be no more than 63 characters"
    if value and not _QUALIFIED_NAME.fullmatch(value):
        return (
            "label value must be empty or consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def _port_name_problem(name: str) -> str | None:
    if len(name) > 15:
        return "must be no more than 15 characters (IANA_SVC_NAME)"
    if not _IANA_SVC_NAME.fullmatch(name):
        return (
            "must contain only lower case alphanumeric characters or '-', "
            "starting and ending with an alphanumeric character (IANA_SVC_NAME)"
        )
    if "--" in name:
        return "must not contain consecutive hyphens (IANA_SVC_NAME)"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (IANA_SVC_NAME)"
    return None


def _canonical_ip(value: object) -> str:
    """Canonical text of an IPv4/IPv6 address; ValueError if value is not one."""
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address string, got {_show(value)}")
    try:
        return str(netaddr.IPAddress(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not a valid IP address: {value!r}") from None


def _canonical_cidr(value: object) -> str:
    """Canonical network text (host bits cleared) of an ADDRESS/PREFIX string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a CIDR string, got {_show(value)}")
    addr, slash, prefix = value.partition("/")
    if not slash or not prefix.isdigit() or not prefix.isascii():
        raise ValueError(f"not a valid CIDR (ADDRESS/PREFIXLEN): {value!r}")
    try:
        ip = netaddr.IPAddress(addr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"not a valid CIDR (bad address): {value!r}") from None
    bits = 32 if ip.version == 4 else 128
    if int(prefix) > bits:
        raise ValueError(f"not a valid CIDR (prefix length > {bits}): {value!r}")
    return str(netaddr.IPNetwork(f"{ip}/{int(prefix)}").cidr)


def _norm(fn, value: object, ref: str, path: str) -> str:
    """fn(value), turning its ValueError into a ModelError naming ref and path."""
    try:
        return fn(value)
    except ValueError as e:
        raise ModelError(str(e), ref=ref, path=path) from None


def _is_ipv4(text: str) -> bool:
    return ":" not in text


def _show(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {value}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------- labels


class Labels(Mapping[str, str]):
    """An immutable, hashable str -> str mapping, stored as a sorted tuple of pairs.

    Compares equal to any mapping with the same items. Build it from a mapping or from an
    iterable of (key, value) pairs.
    """

    __slots__ = ("_pairs", "_dict")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        if isinstance(items, Labels):
            pairs, d = items._pairs, items._dict
        else:
            d = dict(items)
            for k, v in d.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError(f"labels must map str to str, got {k!r}: {v!r}")
            pairs = tuple(sorted(d.items()))
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_dict", d)

    def __setattr__(self, name, value):
        raise AttributeError("Labels is immutable")

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({dict(self._pairs)!r})"

    def __reduce__(self):
        return (Labels, (self._pairs,))

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The sorted (key, value) pairs."""
        return self._pairs

    def to_dict(self) -> dict[str, str]:
        return dict(self._pairs)
