"""The agent's HTTP endpoints: metrics and health on TCP, its views on a root-only unix socket.

On TCP (`metrics_host`:`metrics_port`, 9476; host network, so every pod can reach it):

    GET /metrics   Prometheus text format (prometheus-client, a registry of the agent's own)
    GET /healthz   200 while the agent process serves and its OpenFlow channel works
                   (liveness); 503 with the reason when the channel's thread died or no
                   accepted connection to the switch's management socket for 15 s
    GET /readyz    200 once the cluster state is synced and the switch holds the current flow
                   round (readiness); 503 with the reason otherwise

On the unix socket (`api_socket`, /run/ovsctl/agent.sock, mode 0600 in a 0700 directory: root
only), the same three and the agent's views, which name every pod, Service and policy:

    GET /status    the agent's status as JSON (what `ovsctl status` prints)
    GET /flows     the desired flows with their owners, and every owner id -> owner key (what
                   `ovsctl flows` uses to name owners and to diff against the switch)
    GET /cluster   the cluster as the agent sees it (what `trace` and `reachability` use)

Asking the TCP port for a view gets a 404 and no data.

Neither endpoint has a thread per connection (see :class:`_Endpoint`): one thread accepts
connections and reads their request heads (bounded size, 10 s to send one), answers
/healthz and /readyz itself, and hands the other requests to two worker threads, so at most
two heavy answers (a view, a scrape) are computed at a time per endpoint and CNI requests keep
their share of the interpreter.

Counters and histograms are updated where things happen (CNI requests, flow syncs); values that
already live in the agent (flows per table, IPAM usage, reconnects, watch events) are read at
scrape time by a collector, so they can never drift from the truth.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from flows import tables

log = logging.getLogger(__name__)

DEFAULT_PORT = 9476
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000)

# name -> help: the documented metrics (docs/tools.md lists the same)
DOCUMENTED = {
    "ovsctl_cni_requests_total": "CNI requests by command and result (ok or the CNI error code)",
    "ovsctl_cni_request_seconds": "CNI request latency by command and result",
    "ovsctl_flow_sync_seconds": "time to bring the switch to the desired flows, per sync",
    "ovsctl_flow_sync_flows": "flow mods sent per sync",
    "ovsctl_flows": "desired flows per table",
    "ovsctl_openflow_reconnects_total": "OpenFlow connections from the switch (first one too)",
    "ovsctl_openflow_connected": "1 while the switch is connected and synced",
    "ovsctl_watch_events_total": "cluster state events received, by kind",
    "ovsctl_watch_relists_total": "full relists of the cluster state (Kubernetes API), by kind",
    "ovsctl_ipam_addresses": "pod addresses by state (used, free)",
    "ovsctl_ipam_cidr_addresses": "pod addresses of each pod CIDR by state (used, free)",
    "ovsctl_pods": "pod attachments on this node",
    "ovsctl_packet_in_total": "packets the switch sent up, by outcome (rejected, rate_limited, ...)",
}


class Metrics:
    """The agent's metrics. `agent` is read at scrape time (duck-typed: sync, ipam, pods,
    controller, source, events_total)."""

    def __init__(self, agent=None):
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=True)
        self.cni_requests = PCounter(
            "ovsctl_cni_requests",
            DOCUMENTED["ovsctl_cni_requests_total"],
            ["command", "result"],
            registry=self.registry,
        )
        self.cni_seconds = Histogram(
            "ovsctl_cni_request_seconds",
            DOCUMENTED["ovsctl_cni_request_seconds"],
            ["command", "result"],
            buckets=CNI_BUCKETS,
            registry=self.registry,
        )
        self.sync_seconds = Histogram(
            "ovsctl_flow_sync_seconds",
            DOCUMENTED["ovsctl_flow_sync_seconds"],
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self.sync_flows = Histogram(
            "ovsctl_flow_sync_flows",
            DOCUMENTED["ovsctl_flow_sync_flows"],
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_AgentCollector(self))

    def cni(self, command: str, result: str, seconds: float) -> None:
        self.cni_requests.labels(command, result).inc()
        self.cni_seconds.labels(command, result).observe(seconds)

    def synced(self, seconds: float, size: int) -> None:
        self.sync_seconds.observe(seconds)
        self.sync_flows.observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AgentCollector:
    """Scrape-time values read from the agent."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        agent = self.m.agent
        if agent is None:
            return
        per_table = Counter(tables.name_of(f.table_id) for f in agent.sync.desired().values())
        g = GaugeMetricFamily("ovsctl_flows", DOCUMENTED["ovsctl_flows"], labels=["table"])
        for t in tables.PIPELINE:
            g.add_metric([t.name], per_table.get(t.name, 0))
        yield g
        ctl = agent.controller
        yield CounterMetricFamily(
            "ovsctl_openflow_reconnects",
            DOCUMENTED["ovsctl_openflow_reconnects_total"],
            value=ctl.reconnects if ctl else 0,
        )
        yield GaugeMetricFamily(
            "ovsctl_openflow_connected",
            DOCUMENTED["ovsctl_openflow_connected"],
            value=1 if ctl is not None and ctl.ready.is_set() else 0,
        )
        src = agent.source
        ev = CounterMetricFamily(
            "ovsctl_watch_events", DOCUMENTED["ovsctl_watch_events_total"], labels=["kind"]
        )
        for kind, n in sorted(dict(getattr(agent, "events_total", {})).items()):
            ev.add_metric([kind], n)
        yield ev
        rl = CounterMetricFamily(
            "ovsctl_watch_relists", DOCUMENTED["ovsctl_watch_relists_total"], labels=["kind"]
        )
        for kind, n in sorted(dict(getattr(src, "relists_total", {}) or {}).items()):
            rl.add_metric([kind], n)
        yield rl
        ipam = getattr(agent, "ipam", None)
        used, cap = ipam.usage() if ipam is not None else (0, 0)
        ip = GaugeMetricFamily(
            "ovsctl_ipam_addresses", DOCUMENTED["ovsctl_ipam_addresses"], labels=["state"]
        )
        ip.add_metric(["used"], used)
        ip.add_metric(["free"], cap - used)
        yield ip
        pools = ipam.usage_by_cidr() if ipam is not None and hasattr(ipam, "usage_by_cidr") else []
        pc = GaugeMetricFamily(
            "ovsctl_ipam_cidr_addresses",
            DOCUMENTED["ovsctl_ipam_cidr_addresses"],
            labels=["cidr", "state"],
        )
        for cidr, u, n in pools:
            pc.add_metric([cidr, "used"], u)
            pc.add_metric([cidr, "free"], n - u)
        yield pc
        yield GaugeMetricFamily("ovsctl_pods", DOCUMENTED["ovsctl_pods"], value=len(agent.pods))
        pi = CounterMetricFamily(
            "ovsctl_packet_in", DOCUMENTED["ovsctl_packet_in_total"], labels=["reason"]
        )
        for reason, n in sorted(dict(getattr(ctl, "packet_ins", {}) or {}).items()):
            pi.add_metric([reason], n)
        yield pi


_HEAD_MAX = 8192  # bytes of request line + headers
_CHUNK = 65536
SAFE_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Conn:
    __slots__ = ("sock", "buf", "deadline")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.buf, self.deadline = sock, b"", deadline


class _Endpoint:
    """A small HTTP/1.1 GET server without a thread per connection.

    One thread (`name`) accepts connections and reads each request head without blocking; a
    connection that has not sent a complete head within `timeout` seconds is closed, and
    beyond `max_conns` open connections the oldest waiting one is closed. /healthz and /readyz
    are answered on that thread (cheap, so a probe never waits behind a heavy request); every
    other request goes to a pool of `workers` threads, which drop it when it has waited past
    its deadline and write the answer within `timeout` seconds. Every answer closes the
    connection. A client that goes away is logged at debug level, one line."""

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        routes: dict[str, Callable[[], tuple[int, bytes, str]]],
        ready: Callable[[], str | None],
        workers: int = 2,
        max_conns: int = 512,
        timeout: float = 10.0,
        healthy: Callable[[], str | None] | None = None,
    ):
        self.sock, self.name, self.routes, self.ready = sock, name, routes, ready
        self.healthy = healthy or (lambda: None)
        self.max_conns, self.timeout = max_conns, timeout
        self.sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._conns: dict[int, _Conn] = {}
        # a fixed set of workers, started with the endpoint (a pool that grows on demand looks
        # like a thread leak and hides one)
        self._work: queue.Queue = queue.Queue()
        self._workers = [
            threading.Thread(target=self._worker, name=f"{name}-worker_{i}", daemon=True)
            for i in range(workers)
        ]
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def paths(self) -> list[str]:
        return ["/healthz", "/readyz", *self.routes]

    def start(self) -> None:
        self.thread.start()
        for t in self._workers:
            t.start()

    def _worker(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            try:
                self._serve(*job)
            except Exception:  # noqa: BLE001 - _serve answers its own errors; keep serving
                log.exception("%s: request failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)
        for _ in self._workers:
            self._work.put(None)
        for c in list(self._conns.values()):
            self._close(c)
        for s in (self.sock, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
        self._sel.close()

    # -- the accepting thread ----------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            try:
                events = self._sel.select(0.5)
            except OSError:
                if self._stop.is_set():
                    return
                raise
            for key, _ in events:
                try:
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        return
                    else:
                        self._read(key.data)
                except Exception:  # noqa: BLE001 - the endpoint must survive anything
                    log.exception("%s: unexpected error", self.name)
            now = time.monotonic()
            if now >= next_sweep:  # close connections that never sent a request
                next_sweep = now + 0.5
                for c in [c for c in self._conns.values() if c.deadline < now]:
                    log.debug("%s: closing a connection idle for %gs", self.name, self.timeout)
                    self._close(c)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: try again on the next event
                log.warning("%s: accept failed: %s", self.name, e)
                return
            conn.setblocking(False)
            if len(self._conns) >= self.max_conns:
                oldest = min(self._conns.values(), key=lambda c: c.deadline)
                log.debug(
                    "%s: %d connections open: closing the oldest", self.name, len(self._conns)
                )
                self._close(oldest)
            c = _Conn(conn, time.monotonic() + self.timeout)
            self._conns[conn.fileno()] = c
            self._sel.register(conn, selectors.EVENT_READ, c)

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(_HEAD_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("%s: client went away: %s", self.name, e)
            self._close(c)
            return
        if not data:
            self._close(c)  # closed before sending a whole request
            return
        c.buf += data
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            end = c.buf.find(b"\n\n")
        if (end < 0 and len(c.buf) > _HEAD_MAX) or end > _HEAD_MAX:
            self._quick(c, 431, b"request header too large\n")
            return
        if end < 0:
            return
        method, path = _request_line(c.buf[:end])
        if method not in ("GET", "HEAD"):
            self._quick(c, 400 if method is None else 405, b"GET only\n")
        elif path in ("/healthz", "/readyz"):
            try:
                why = (self.healthy if path == "/healthz" else self.ready)()
            except Exception as e:  # noqa: BLE001
                why = f"error: {e}"
            self._quick(c, 503 if why else 200, f"{why or 'ok'}\n".encode(), method)
        else:
            self._sel.unregister(c.sock)
            del self._conns[c.sock.fileno()]
            self._work.put((c, method, path))

    def _quick(self, c: _Conn, code: int, body: bytes, method: str = "GET") -> None:
        """A small answer written without blocking (it fits in the socket buffer)."""
        try:
            c.sock.send(_response(code, body, "text/plain; charset=utf-8", method))
        except OSError as e:
            log.debug("%s: client went away: %s", self.name, e)
        self._close(c)

    def _close(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        if fd >= 0 and self._conns.get(fd) is c:
            del self._conns[fd]
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
        try:
            c.sock.close()
        except OSError:
            pass

    # -- the workers -------------------------------------------------------------------------

    def _serve(self, c: _Conn, method: str, path: str) -> None:
        sock = c.sock
        try:
            if time.monotonic() > c.deadline:
                log.debug("%s: %s waited past its deadline: dropped", self.name, path)
                return
            route = self.routes.get(path)
            if route is None:
                code, body, ctype = self.not_found(path)
            else:
                try:
                    code, body, ctype = route()
                except Exception as e:  # noqa: BLE001 - a request must not kill the endpoint
                    log.exception("%s: %s failed", self.name, path)
                    code, body, ctype = 500, f"error: {e}\n".encode(), "text/plain; charset=utf-8"
            _send_all(sock, _response(code, body, ctype, method), time.monotonic() + self.timeout)
        except SAFE_ERRORS as e:
            log.debug("%s: %s: client went away: %s", self.name, path, e)
        except OSError as e:
            log.debug("%s: %s: %s", self.name, path, e)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def not_found(self, path: str) -> tuple[int, bytes, str]:
        known = " ".join(self.paths())
        return 404, f"not found: {known}\n".encode(), "text/plain; charset=utf-8"


def _request_line(head: bytes) -> tuple[str | None, str]:
    line = head.split(b"\n", 1)[0].strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None, ""
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None, ""
    return method, target.split("?", 1)[0]


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _response(code: int, body: bytes, ctype: str, method: str = "GET") -> bytes:
    head = (
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """sendall with one deadline for the whole answer (a reader that trickles cannot hold a
    worker longer)."""
    view = memoryview(data)
    sock.setblocking(True)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client did not read the answer in time")
        sock.settimeout(left)
        n = sock.send(view[:_CHUNK])
        view = view[n:]


def _text(body: bytes) -> tuple[int, bytes, str]:
    return 200, body, CONTENT_TYPE_LATEST


def _json_view(view: Callable[[], object]) -> Callable[[], tuple[int, bytes, str]]:
    def route():
        body = json.dumps(view(), indent=2, default=str).encode()
        return 200, body, "application/json"

    return route


VIEWS_ON_SOCKET = ("/status", "/flows", "/cluster")


class HTTPEndpoint(_Endpoint):
    """/metrics, /healthz and /readyz on host:port (TCP). The agent's views are not here:
    asking for one gets a 404 naming the unix socket, and no data."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], str | None],
        workers: int = 2,
        max_conns: int = 512,
        timeout: float = 10.0,
        healthy: Callable[[], str | None] | None = None,
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.metrics = metrics
        routes = {"/metrics": lambda: _text(metrics.render())}
        super().__init__(sock, "http-endpoint", routes, ready, workers, max_conns, timeout, healthy)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        super().start()
        host = self.sock.getsockname()[0]
        log.info("http endpoint on %s:%d: %s", host, self.port, " ".join(self.paths()))

    def not_found(self, path: str) -> tuple[int, bytes, str]:
        if path in VIEWS_ON_SOCKET:
            msg = f"not found: {path} is served on the agent's unix socket only\n"
            return 404, msg.encode(), "text/plain; charset=utf-8"
        return super().not_found(path)


class APIEndpoint(_Endpoint):
    """The agent's views (/status, /flows, /cluster) and /metrics /healthz /readyz on a unix
    socket only root can use: the socket is mode 0600, its directory made 0700 when missing."""

    def __init__(
        self,
        path: str,
        metrics: Metrics,
        ready: Callable[[], str | None],
        views: dict[str, Callable[[], object]],
        workers: int = 2,
        max_conns: int = 512,
        timeout: float = 10.0,
        healthy: Callable[[], str | None] | None = None,
    ):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket from a previous agent
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        routes = {"/metrics": lambda: _text(metrics.render())}
        routes.update({p: _json_view(v) for p, v in views.items()})
        super().__init__(sock, "api-endpoint", routes, ready, workers, max_conns, timeout, healthy)

    def start(self) -> None:
        super().start()
        log.info("api endpoint on unix:%s (mode 0600): %s", self.path, " ".join(self.paths()))

    def stop(self) -> None:
        super().stop()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
