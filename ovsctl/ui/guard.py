"""What keeps `ovsctl ui` to the one user it serves: which Host names and which origins it
answers, how much it does at once, and one trace shared by the requests that ask for it.

- Host: on a loopback bind only loopback names (a page elsewhere cannot reach the server by
  DNS rebinding); on another bind also an IP address literal (rebinding needs a name) and the
  names given with --allow-host.
- Origin: /api/ and /svg/ answer only the page itself: a request a browser marks as coming
  from another site (`Sec-Fetch-Site` other than same-origin or none) or whose `Origin` is not
  the server's own is refused, so that a web page elsewhere (`<img src=http://127.0.0.1:8476/
  api/matrix?probe=1>`) cannot make it trace or send packets.
- Load: at most MAX_CONNECTIONS requests at once (more: a 503 at once), at most HEAVY traces
  and matrices at once (more: 503 "busy").
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.parse

from .data import UIError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
SAFE_FETCH_SITES = {"same-origin", "none"}
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
HEAVY = 2  # traces and matrices computed at once
MAX_CONNECTIONS = 32
SHARED_TTL = 2.0  # a trace's document is shared for this long (the page asks twice)


class Forbidden(UIError):
    status = 403


class Busy(UIError):
    status = 503


def host_name(header: str) -> str:
    """The name in a Host header, without the port: '[::1]:8476' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header if header.count(":") > 1 else header.partition(":")[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def check_host(header: str, bound: str, allowed: frozenset | set = frozenset()) -> None:
    """Forbidden unless the Host header names this server as it may be named (see above)."""
    name = host_name(header or "")
    if name in LOOPBACK_NAMES or name in allowed:
        return
    if not is_loopback(bound) and is_address(name):
        return
    if is_loopback(bound):
        raise Forbidden("Host must be a loopback name (localhost, 127.0.0.1, ::1)")
    raise Forbidden(
        f"Host {name!r} is not a name of this server: use its address, or start it with "
        f"--allow-host {name}"
    )


def _origin_of(scheme: str, host: str, port) -> tuple:
    return scheme, host.lower(), int(port) if port else (443 if scheme == "https" else 80)


def check_origin(headers, host_header: str) -> None:
    """Forbidden when a browser says the request comes from another site or origin."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in SAFE_FETCH_SITES:
        raise Forbidden(f"refused: a request from another site (Sec-Fetch-Site: {site.strip()})")
    origin = headers.get("Origin")
    if origin is None:
        return
    o = urllib.parse.urlsplit(origin.strip())
    h = urllib.parse.urlsplit("http://" + (host_header or "").strip())
    try:
        same = o.hostname is not None and _origin_of(o.scheme, o.hostname, o.port) == _origin_of(
            "http", h.hostname or "", h.port
        )
    except ValueError:  # a port that is no number
        same = False
    if not same:
        raise Forbidden(f"refused: a request from another origin ({origin.strip()[:100]})")


def busy_reply() -> bytes:
    """What a connection over MAX_CONNECTIONS gets before it is closed."""
    body = json.dumps({"error": "busy: too many requests at once; try again"}).encode()
    head = (
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"X-Content-Type-Options: nosniff\r\nContent-Security-Policy: {CSP}\r\n"
        f"Retry-After: 1\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Entry:
    def __init__(self):
        self.done = threading.Event()
        self.at = 0.0
        self.value = None
        self.error: Exception | None = None


class Shared:
    """Documents computed once per key and shared for `ttl` seconds: a request for a key being
    computed waits for that computation (the page asks /api/trace and /svg/trace of the same
    query together; both get the one trace). At most `heavy` computations run at once: one
    more is Busy. Errors are not kept."""

    def __init__(self, ttl: float = SHARED_TTL, heavy: int = HEAVY, size: int = 64):
        self.ttl, self.size = ttl, size
        self._lock = threading.Lock()
        self._entries: dict = {}
        self._slots = threading.BoundedSemaphore(heavy)

    def get(self, key, compute, wait: float = 300.0):
        now = time.monotonic()
        with self._lock:
            e = self._entries.get(key)
            mine = e is None or (e.done.is_set() and now - e.at >= self.ttl)
            if mine:
                e = self._entries[key] = _Entry()
                while len(self._entries) > self.size:
                    self._entries.pop(next(iter(self._entries)))
        if mine:
            self._compute(key, e, compute)
        elif not e.done.wait(wait):
            raise Busy("busy: the same request is still being computed; try again")
        if e.error is not None:
            raise e.error
        return e.value

    def _compute(self, key, e: _Entry, compute) -> None:
        try:
            e.value = self.run(compute)
        except Exception as err:  # noqa: BLE001 - handed to every waiter, raised in each
            e.error = err
            with self._lock:
                if self._entries.get(key) is e:
                    del self._entries[key]
        finally:
            e.at = time.monotonic()
            e.done.set()

    def run(self, compute):
        """`compute()` in one of the heavy slots; Busy when none is free."""
        if not self._slots.acquire(blocking=False):
            raise Busy("busy: other traces or matrices are being computed; try again in a moment")
        try:
            return compute()
        finally:
            self._slots.release()
