"""Per-node IPv4 address allocator over the node's pod CIDR.

State lives in one JSON file per CIDR under ``state_dir`` and is rewritten atomically
(temp file + fsync + rename + directory fsync). Every operation holds a thread lock and an
``flock`` on a lock file and re-reads the state, so threads, instances and processes that
share a directory never hand out the same address. A state file that cannot be read or
does not match the CIDR raises :class:`IPAMCorrupt` and is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import netaddr

from ovsctl.util import atomic_write

STATE_VERSION = 1


class IPAMError(Exception):
    """Base IPAM error; the message is user-facing."""


class IPAMExhausted(IPAMError):
    """No free address left in the CIDR."""


class IPAMCorrupt(IPAMError):
    """The state file is unreadable or invalid; it is left untouched."""


class IPAMUnavailable(IPAMError):
    """A requested address cannot be given: outside the CIDR, reserved, or malformed."""


class IPAMInUse(IPAMError):
    """A requested address is held by another attachment."""


@dataclass(frozen=True)
class Allocation:
    ip: str
    container_id: str
    ifname: str
    owner: dict  # free-form metadata, persisted

    def to_json(self) -> dict:
        return {
            "ip": self.ip,
            "container_id": self.container_id,
            "ifname": self.ifname,
            "owner": self.owner,
        }


@dataclass
class _State:
    cursor: int | None = None  # last address handed out, as an int
    allocs: dict[tuple[str, str], Allocation] = field(default_factory=dict)


class IPAM:
    """Allocates addresses of ``cidr``, except network, gateway (first host) and broadcast."""

    def __init__(self, cidr: str, state_dir: str):
        try:
            net = netaddr.IPNetwork(cidr)
        except (netaddr.AddrFormatError, TypeError, ValueError) as e:
            raise IPAMError(f"invalid pod CIDR {cidr!r}: {e}") from None
        if net.version != 4:
            raise IPAMError(f"pod CIDR {cidr} is not IPv4")
        if net.prefixlen > 30:
            raise IPAMError(f"pod CIDR {cidr} is too small: need at least a /30")
        self.cidr: netaddr.IPNetwork = net.cidr
        self.prefixlen: int = net.prefixlen
        self.gateway: netaddr.IPAddress = netaddr.IPAddress(self.cidr.first + 1)
        self._first = self.cidr.first + 2  # first allocatable address (int)
        self._last = self.cidr.last - 1  # last allocatable address (int)
        self.state_dir = os.path.abspath(state_dir)
        base = f"ipam-{self.cidr.network}_{self.prefixlen}"
        self.path = os.path.join(self.state_dir, base + ".json")
        self.lock_path = os.path.join(self.state_dir, base + ".lock")
        self._lock = threading.Lock()
        self._cached: tuple[int, tuple, _State] | None = None  # (open fd, identity, state)
        try:
            if not os.path.isdir(self.state_dir):
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
                os.chmod(self.state_dir, 0o700)
        except OSError as e:
            raise IPAMError(f"cannot create IPAM state directory {self.state_dir}: {e}") from e

    # ---- public API -------------------------------------------------------------------

    def allocate(self, container_id: str, ifname: str, owner: dict | None = None) -> Allocation:
        """Allocate an address for (container_id, ifname); idempotent."""
        key = _key(container_id, ifname)
        owner = _check_owner(owner)
        with self._locked():
            state = self._load()
            existing = state.allocs.get(key)
            if existing is not None:
                return existing
            ip = self._next_free(state)
            alloc = Allocation(str(netaddr.IPAddress(ip)), key[0], key[1], owner)
            state.allocs[key] = alloc
            state.cursor = ip
            self._save(state)
            return alloc

    def reserve(
        self, ip: str, container_id: str, ifname: str, owner: dict | None = None
    ) -> Allocation:
        """Allocate the requested address `ip` to (container_id, ifname): a static IP, or the
        address a runtime asks back (podman's network reload). Idempotent for the same holder;
        raises IPAMUnavailable (not an allocatable address of the CIDR), IPAMInUse (held by
        another attachment) or IPAMError (this attachment already holds another address), and
        then allocates nothing."""
        key = _key(container_id, ifname)
        owner = _check_owner(owner)
        want = _norm_ip(ip)
        if want is None:
            raise IPAMUnavailable(f"requested address {ip!r} is not an IPv4 address")
        n = int(netaddr.IPAddress(want))
        if not self.cidr.first <= n <= self.cidr.last:
            raise IPAMUnavailable(
                f"requested address {want} is outside this node's pod CIDR {self.cidr}"
            )
        if not self._first <= n <= self._last:
            what = "the gateway's" if n == int(self.gateway) else "not a host address"
            raise IPAMUnavailable(f"requested address {want} is reserved in {self.cidr} ({what})")
        with self._locked():
            state = self._load()
            existing = state.allocs.get(key)
            if existing is not None:
                if existing.ip == want:
                    return existing
                raise IPAMError(
                    f"{key[0]}/{key[1]} already holds {existing.ip}, not the requested {want}"
                )
            for k, a in state.allocs.items():
                if a.ip == want:
                    raise IPAMInUse(f"requested address {want} is held by {k[0]}/{k[1]}")
            alloc = Allocation(want, key[0], key[1], owner)
            state.allocs[key] = alloc
            self._save(state)
            return alloc

    def adopt(
        self, ip: str, container_id: str, ifname: str, owner: dict | None = None
    ) -> Allocation:
        """Record that (container_id, ifname) holds `ip` (found in use, e.g. on a live port
        after the state was lost). Idempotent; raises if another attachment holds it."""
        key = _key(container_id, ifname)
        owner = _check_owner(owner)
        want = _norm_ip(ip)
        if want is None or netaddr.IPAddress(want) not in self.cidr:
            raise IPAMError(f"{ip!r} is not an address in {self.cidr}")
        with self._locked():
            state = self._load()
            for k, a in state.allocs.items():
                if a.ip == want:
                    if k == key:
                        return a
                    raise IPAMError(f"{want} is already held by {k[0]}/{k[1]}")
            if key in state.allocs:
                raise IPAMError(f"{key[0]}/{key[1]} already holds {state.allocs[key].ip}")
            alloc = Allocation(want, key[0], key[1], owner)
            state.allocs[key] = alloc
            self._save(state)
            return alloc

    def release(self, container_id: str, ifname: str) -> Allocation | None:
        """Free the address of (container_id, ifname); idempotent, None if there was none."""
        key = _key(container_id, ifname)
        with self._locked():
            state = self._load()
            alloc = state.allocs.pop(key, None)
            if alloc is not None:
                self._save(state)
            return alloc

    def get(self, container_id: str, ifname: str) -> Allocation | None:
        key = _key(container_id, ifname)
        with self._locked():
            return self._load().allocs.get(key)

    def by_ip(self, ip: str) -> Allocation | None:
        want = _norm_ip(ip)
        if want is None:
            raise IPAMError(f"invalid IP address {ip!r}")
        with self._locked():
            return next((a for a in self._load().allocs.values() if a.ip == want), None)

    def allocations(self) -> list[Allocation]:
        """All allocations, sorted by address."""
        with self._locked():
            allocs = self._load().allocs.values()
        return sorted(allocs, key=lambda a: int(netaddr.IPAddress(a.ip)))

    def gc(
        self, valid: set[tuple[str, str]], in_use_ips: set[str], network: str | None = None
    ) -> list[Allocation]:
        """Free allocations not in ``valid`` unless their address is in ``in_use_ips``. With
        ``network``, only allocations made for that CNI network (owner "network") are looked
        at: a GC of one network never frees another's (nor one whose network is unknown)."""
        in_use = {_norm_ip(ip) or ip for ip in in_use_ips}
        with self._locked():
            state = self._load()
            freed = [
                a
                for key, a in state.allocs.items()
                if key not in valid
                and a.ip not in in_use
                and (network is None or a.owner.get("network") == network)
            ]
            for a in freed:
                del state.allocs[(a.container_id, a.ifname)]
            if freed:
                self._save(state)
        return sorted(freed, key=lambda a: int(netaddr.IPAddress(a.ip)))

    def usage(self) -> tuple[int, int]:
        """(used, capacity)."""
        with self._locked():
            used = len(self._load().allocs)
        return used, self._last - self._first + 1

    # ---- internals --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise IPAMError(f"cannot open IPAM lock file {self.lock_path}: {e}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _next_free(self, state: _State) -> int:
        used = {int(netaddr.IPAddress(a.ip)) for a in state.allocs.values()}
        capacity = self._last - self._first + 1
        start = self._first
        if state.cursor is not None and state.cursor < self._last:
            start = state.cursor + 1
        for i in range(capacity):
            ip = self._first + (start - self._first + i) % capacity
            if ip not in used:
                return ip
        raise IPAMExhausted(f"no free IP address left in {self.cidr} ({capacity} in use)")

    def _load(self) -> _State:
        """The state on disk (a copy to change). The parsed file is kept, open, with its
        identity (device, inode, mtime, size). Holding it open keeps its inode number from
        going to another file, and every save is a new inode: so a file whose identity is
        unchanged is the one parsed last, and is not parsed again."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._forget()
            return _State()
        except OSError as e:
            raise self._corrupt(f"cannot read it: {e}") from e
        c = self._cached
        if c is not None and _identity(st) == c[1] == _identity(os.fstat(c[0])):
            return _copy(c[2])
        try:
            with open(self.path, encoding="utf-8") as f:
                sig = _identity(os.fstat(f.fileno()))
                raw = f.read()
                held = os.dup(f.fileno())
        except FileNotFoundError:
            self._forget()
            return _State()
        except (OSError, UnicodeDecodeError) as e:
            raise self._corrupt(f"cannot read it: {e}") from e
        try:
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise self._corrupt(f"not valid JSON: {e}") from None
            state = self._parse(data)
        except BaseException:
            os.close(held)
            raise
        self._remember(held, sig, state)
        return state

    def _remember(self, fd: int, sig: tuple, state: _State) -> None:
        self._forget()
        self._cached = (fd, sig, _copy(state))

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[0])
            self._cached = None

    def __del__(self) -> None:
        try:
            self._forget()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _parse(self, data: object) -> _State:
        if not isinstance(data, dict):
            raise self._corrupt("top level is not an object")
        if data.get("version") != STATE_VERSION:
            raise self._corrupt(f"unsupported version {data.get('version')!r}")
        if data.get("cidr") != str(self.cidr):
            raise self._corrupt(f"it is for CIDR {data.get('cidr')!r}, not {self.cidr}")
        state = _State()
        cursor = data.get("cursor")
        if cursor is not None:
            state.cursor = self._parse_ip(cursor, "cursor")
        entries = data.get("allocations")
        if not isinstance(entries, list):
            raise self._corrupt("'allocations' is not a list")
        seen_ips: set[str] = set()
        for entry in entries:
            if not isinstance(entry, dict):
                raise self._corrupt(f"allocation {entry!r} is not an object")
            cid, ifname, owner = (entry.get(k) for k in ("container_id", "ifname", "owner"))
            if not (isinstance(cid, str) and cid and isinstance(ifname, str) and ifname):
                raise self._corrupt(f"allocation {entry!r} lacks container_id/ifname")
            if not isinstance(owner, dict):
                raise self._corrupt(f"allocation {entry!r} has a non-object owner")
            ip = str(netaddr.IPAddress(self._parse_ip(entry.get("ip"), "allocation ip")))
            if ip in seen_ips or (cid, ifname) in state.allocs:
                raise self._corrupt(f"duplicate allocation {entry!r}")
            seen_ips.add(ip)
            state.allocs[(cid, ifname)] = Allocation(ip, cid, ifname, owner)
        return state

    def _parse_ip(self, value: object, what: str) -> int:
        norm = _norm_ip(value) if isinstance(value, str) else None
        ip = int(netaddr.IPAddress(norm)) if norm else None
        if ip is None or not self._first <= ip <= self._last:
            raise self._corrupt(f"{what} {value!r} is not an allocatable address of {self.cidr}")
        return ip

    def _corrupt(self, why: str) -> IPAMCorrupt:
        return IPAMCorrupt(
            f"IPAM state file {self.path} is invalid ({why}); "
            "it was left untouched: inspect or move it away to continue"
        )

    def _save(self, state: _State) -> None:
        allocs = sorted(state.allocs.values(), key=lambda a: int(netaddr.IPAddress(a.ip)))
        data = {
            "version": STATE_VERSION,
            "cidr": str(self.cidr),
            "cursor": None if state.cursor is None else str(netaddr.IPAddress(state.cursor)),
            "allocations": [a.to_json() for a in allocs],
        }
        self._forget()
        try:
            atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._remember(fd, _identity(os.fstat(fd)), state)
        except OSError as e:
            raise IPAMError(f"cannot write IPAM state file {self.path}: {e}") from e


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _copy(state: _State) -> _State:
    return _State(state.cursor, dict(state.allocs))  # Allocations are immutable


def _key(container_id: str, ifname: str) -> tuple[str, str]:
    if not isinstance(container_id, str) or not container_id:
        raise IPAMError("container_id must be a non-empty string")
    if not isinstance(ifname, str) or not ifname:
        raise IPAMError("ifname must be a non-empty string")
    return container_id, ifname


def _check_owner(owner: dict | None) -> dict:
    if owner is None:
        return {}
    if not isinstance(owner, dict):
        raise IPAMError("owner must be a dict")
    try:
        return json.loads(json.dumps(owner))  # a JSON-safe deep copy
    except (TypeError, ValueError) as e:
        raise IPAMError(f"owner is not JSON-serialisable: {e}") from None


def _norm_ip(ip: object) -> str | None:
    """Canonical IPv4 text of ``ip``, or None if it is not a valid IPv4 address."""
    try:
        return str(netaddr.IPAddress(ip, version=4))
    except (netaddr.AddrFormatError, TypeError, ValueError):
        return None
