"""The agent's HTTP endpoint: Prometheus metrics, liveness and readiness.

    GET /metrics   Prometheus text format (prometheus-client, a registry of the agent's own)
    GET /healthz   200 while the agent process serves and its OpenFlow channel works
                   (liveness); 503 with the reason when the channel's thread died or no
                   accepted connection to the switch's management socket for 15 s
    GET /readyz    200 once the cluster state is synced and the switch holds the current flow
                   round (readiness); 503 with the reason otherwise
    GET /status    the agent's status as JSON (what `ovsctl status` prints)
    GET /flows     the desired flows with their owners, and every owner id -> owner key (what
                   `ovsctl flows` uses to name owners and to diff against the switch)

Counters and histograms are updated where things happen (CNI requests, flow syncs); values that
already live in the agent (flows per table, IPAM usage, reconnects, watch events) are read at
scrape time by a collector, so they can never drift from the truth.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    "ovsctl_openflow_reconnects_total": "OpenFlow connections to the switch (first one too)",
    "ovsctl_openflow_connected": "1 while the switch is connected and synced",
    "ovsctl_watch_events_total": "cluster state events received, by kind",
    "ovsctl_watch_relists_total": "full relists of the cluster state (Kubernetes API), by kind",
    "ovsctl_ipam_addresses": "pod addresses by state (used, free)",
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
        yield GaugeMetricFamily("ovsctl_pods", DOCUMENTED["ovsctl_pods"], value=len(agent.pods))
        pi = CounterMetricFamily(
            "ovsctl_packet_in", DOCUMENTED["ovsctl_packet_in_total"], labels=["reason"]
        )
        for reason, n in sorted(dict(getattr(ctl, "packet_ins", {}) or {}).items()):
            pi.add_metric([reason], n)
        yield pi


class HTTPEndpoint:
    """/metrics, /healthz, /readyz and /status on host:port, in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], str | None],
        views: dict[str, Callable[[], object]],
        healthy: Callable[[], str | None] | None = None,
    ):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                endpoint._get(self)

            def log_message(self, fmt, *args):
                log.debug("http %s - %s", self.address_string(), fmt % args)

        self.metrics, self.ready, self.views = metrics, ready, views
        self.healthy = healthy or (lambda: None)
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="http-endpoint", daemon=True
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()
        log.info(
            "http endpoint on %s:%d: /metrics /healthz /readyz %s",
            self.server.server_address[0],
            self.port,
            " ".join(self.views),
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(h, 200, self.metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                why = self.healthy()
                self._send(h, 503 if why else 200, f"{why or 'ok'}\n".encode())
            elif path == "/readyz":
                why = self.ready()
                self._send(h, 503 if why else 200, f"{why or 'ok'}\n".encode())
            elif path in self.views:
                body = json.dumps(self.views[path](), indent=2, default=str).encode()
                self._send(h, 200, body, "application/json")
            else:
                known = " ".join(["/metrics", "/healthz", "/readyz", *self.views])
                self._send(h, 404, f"not found: {known}\n".encode())
        except Exception as e:  # noqa: BLE001 - a scrape must not kill the endpoint
            log.exception("http %s failed", path)
            self._send(h, 500, f"error: {e}\n".encode())

    @staticmethod
    def _send(h, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
