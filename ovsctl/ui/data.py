"""What the UI reads: one node (its agent's unix socket, its switch) or every node of a lab.

A node is read as the tools read it: the agent's /cluster, /flows and /status views
(ovsctl/tools/agentclient), the installed flows with their counters (`ovs-ofctl dump-flows` on
the bridge's management socket, ovsctl/tools/flowdump; owners named by flowview), traces over
ovs-vswitchd's unixctl socket (ovsctl/tools/trace). A lab node's socket and OVS run directory
are where `ovsctl lab flows`/`trace` find them (Lab.api_socket, Lab.ovs(node).rundir); both
are files, so no network namespace is entered.

The flow dump of a node is kept for DUMP_TTL seconds and shared by the requests in that time
(a page polling /api/pipeline and opening /api/flows costs one dump); the agent's views for
VIEW_TTL seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

from flows.canon import split_nat_target
from ovsctl.tools import agentclient, flowdump, flowview

from . import pipeline

log = logging.getLogger("ovsctl.ui")

DUMP_TTL = 1.5
VIEW_TTL = 2.0
SLOW = 2.0  # an agent or switch slower than this is named in the log (a request waits on it)


class UIError(Exception):
    """An error with the HTTP status it is answered with."""

    status = 500


class BadRequest(UIError):
    status = 400


class NotFound(UIError):
    status = 404


class Unreachable(UIError):
    status = 502


class _Cached:
    """A value recomputed at most every `ttl` seconds; callers in between share it (one
    computation at a time). While one caller recomputes an expired value, the others get the
    last one at once instead of waiting (an agent or switch that hangs holds up one request
    for its node, not every request)."""

    _NONE = object()

    def __init__(self, ttl: float, compute):
        self.ttl, self.compute = ttl, compute
        self._lock = threading.Lock()
        self._at = -1e9
        self._value = self._NONE

    def get(self):
        if time.monotonic() - self._at < self.ttl:
            return self._value
        if self._value is self._NONE:
            self._lock.acquire()  # nothing to give meanwhile: wait for the first
        elif not self._lock.acquire(blocking=False):
            return self._value  # being recomputed: the last value meanwhile
        try:
            if time.monotonic() - self._at >= self.ttl:
                self._value = self.compute()
                self._at = time.monotonic()
            return self._value
        finally:
            self._lock.release()


class NodeSource:
    """One node: its agent (a unix socket path, unix:PATH or an http:// URL) and its switch
    (the OVS run directory holding BRIDGE.mgmt and ovs-vswitchd's control socket)."""

    def __init__(self, name: str, agent: str, rundir: str, bridge: str = "br-int"):
        self.name, self.agent, self.rundir, self.bridge = name, agent, rundir, bridge
        self.switch = f"unix:{os.path.join(rundir, bridge + '.mgmt')}"
        self._views = {
            p: _Cached(VIEW_TTL, self._fetcher(p)) for p in ("/cluster", "/flows", "/status")
        }
        self._rows = _Cached(DUMP_TTL, self._dump)

    def _fetcher(self, path: str):
        def fetch():
            t0 = time.monotonic()
            try:
                return agentclient.get(path, self.agent)
            except agentclient.AgentUnreachable as e:
                return e
            finally:
                if (took := time.monotonic() - t0) > SLOW:
                    log.warning("node %s: its agent took %.1f s for %s", self.name, took, path)

        return fetch

    def view(self, path: str) -> dict:
        """An agent view; Unreachable when the agent does not answer."""
        v = self._views[path].get()
        if isinstance(v, Exception):
            raise Unreachable(f"node {self.name}: agent: {v}")
        return v

    def view_or_none(self, path: str) -> dict | None:
        v = self._views[path].get()
        return None if isinstance(v, Exception) else v

    def ports(self) -> dict:
        c = self.view_or_none("/cluster") or {}
        return {"gateway": (c.get("gateway") or {}).get("ofport"), "tunnel": c.get("tunnel_ofport")}

    def rows(self) -> list[dict]:
        """The installed flows (flowdump rows, owners named, `ui_owner` added); Unreachable
        when the switch cannot be dumped. Shared for DUMP_TTL seconds."""
        v = self._rows.get()
        if isinstance(v, Exception):
            raise Unreachable(f"node {self.name}: {v}")
        return v

    def _dump(self):
        t0 = time.monotonic()
        try:
            rows = flowdump.dump(self.switch)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            return e
        name_rows(
            rows,
            self.view_or_none("/flows"),
            self.view_or_none("/status"),
            lambda: self.view_or_none("/cluster"),
        )
        took = time.monotonic() - t0
        (log.warning if took > SLOW else log.debug)(
            "node %s: %d flows dumped in %.3f s", self.name, len(rows), took
        )
        return rows

    def pod_ips(self, ref: str) -> list[str]:
        """The addresses of pod NS/NAME in the agent's /cluster view (empty: unknown)."""
        for p in (self.view_or_none("/cluster") or {}).get("pods") or []:
            if f"{p['namespace']}/{p['name']}" == ref:
                return list(p.get("ips") or ([p["ip"]] if p.get("ip") else []))
        return []


def name_rows(rows: list[dict], flows_view, status, cluster=lambda: None) -> list[dict]:
    """Name the owners of flowdump rows as `ovsctl flows` does (owner_key, owner_name, from
    the agent's /flows and /status views; None when the agent is down: owners stay ids) and add
    each row's UI owner (`ui_owner`, pipeline.owner_of). `cluster`: called for the /cluster
    view when a ClusterNetworkPolicy owns flows (its rules' tiers and names)."""
    owners = {int(k, 16): v for k, v in ((flows_view or {}).get("owners") or {}).items()}
    pods = flowview.pod_index((status or {}).get("pods") or [])
    cnps = {}
    if any(k.startswith("cnp/") for k in owners.values()):
        cnps = flowview.cluster_policies(cluster())
    flowview.name_rows(rows, owners, pods, cnps)
    ui: dict[tuple, dict] = {}  # once per distinct (owner id, feature), as flowview names them
    for r in rows:
        o = r["owner"]
        k = (o["owner"], o["feature"])
        u = ui.get(k)
        if u is None:
            u = ui[k] = pipeline.owner_of(
                r["owner_key"], o["feature"], o["owner"], r["owner_name"], pods
            )
        r["ui_owner"] = u
    return rows


def services_endpoints(flows_view: dict) -> dict[str, list[tuple[str, str]]]:
    """Service NS/NAME -> its endpoints (address, port) as the agent load-balances to them: the
    DNAT targets of its desired flows (`ct(...nat(dst=IP:PORT))`)."""
    out: dict[str, list] = {}
    for f in flows_view.get("desired") or []:
        key = f.get("owner") or ""
        if not key.startswith("service/") or "nat(dst=" not in f["actions"]:
            continue
        target = f["actions"].split("nat(dst=", 1)[1].split(")", 1)[0]
        ip, port = split_nat_target(target.split("-", 1)[0])
        eps = out.setdefault(key[len("service/") :], [])
        if (ip, port) not in eps:
            eps.append((ip, port))
    return out
