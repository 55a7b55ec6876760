"""The /api/ documents (docs/ui.md), for one node or every node of a lab."""

from __future__ import annotations

import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from ovsctl.tools import trace as tracing

from . import pipeline
from .data import BadRequest, NodeSource, NotFound, UIError, Unreachable, services_endpoints

PROTOS = ("tcp", "udp", "icmp")
MATRIX_SECONDS = 60.0  # a matrix that takes longer is stopped (ns= traces fewer pairs)


class TooLong(UIError):
    status = 503


class _Deadline:
    """A node's ofproto/trace runner that refuses to start a trace after `at` (monotonic)."""

    def __init__(self, runner, at: float):
        self.runner, self.at = runner, at

    def trace(self, flow: str, ct_next: list[str]) -> str:
        if time.monotonic() > self.at:
            raise TooLong(
                f"the matrix took longer than {MATRIX_SECONDS:.0f} s and was stopped: "
                "give ns= to trace fewer pairs"
            )
        return self.runner.trace(flow, ct_next)

    def close(self) -> None:
        self.runner.close()


def parse_key(key: str) -> tuple[str, str, int, str]:
    """A matrix key "ns/a->ns/b:80/TCP" -> (src, dst, port, proto in lower case)."""
    src, _, rest = key.partition("->")
    dst, _, pp = rest.rpartition(":")
    port, _, proto = pp.partition("/")
    return src, dst, int(port), proto.lower()


def trace_link(src: str, dst: str, proto: str, port: int | None) -> str:
    q = {"src": src, "dst": dst, "proto": proto}
    if port is not None:
        q["dport"] = str(port)
    return "#trace?" + urllib.parse.urlencode(q, safe="/")


class API:
    """Documents over `sources` (one per node, in order); `lab` a ovsctl.lab.lab.Lab or None."""

    def __init__(self, sources: list[NodeSource], lab=None):
        self.sources = {s.name: s for s in sources}
        self.lab = lab

    @classmethod
    def for_node(cls, agent: str, rundir: str, bridge: str = "br-int") -> API:
        src = NodeSource("local", agent, rundir, bridge)
        cluster = src.view_or_none("/cluster")
        if cluster and cluster.get("node"):
            src.name = cluster["node"]
        return cls([src])

    @classmethod
    def for_lab(cls, name: str) -> API:
        """Every node of lab `name` (LabError when there is none)."""
        from ovsctl.lab.lab import Lab

        lab = Lab(name)
        nodes = sorted(lab.meta()["nodes"], key=lambda n: (len(n), n))  # node0 … node10
        return cls([NodeSource(n, lab.api_socket(n), lab.ovs(n).rundir) for n in nodes], lab)

    # -- helpers ---------------------------------------------------------------------------------

    def source(self, node: str | None) -> NodeSource:
        if not node:
            if len(self.sources) == 1:
                return next(iter(self.sources.values()))
            raise BadRequest(f"give node= (one of {', '.join(self.sources)})")
        s = self.sources.get(node)
        if s is None:
            raise NotFound(f"no node {node!r} (nodes: {', '.join(self.sources)})")
        return s

    def cluster(self) -> dict:
        """The /cluster view of the first node whose agent answers."""
        errors = []
        for s in self.sources.values():
            try:
                return s.view("/cluster")
            except Unreachable as e:
                errors.append(str(e))
        raise Unreachable("; ".join(errors))

    @staticmethod
    def check_owner(owner: str | None) -> None:
        if owner:
            try:
                pipeline.check_owner(owner)
            except ValueError as e:
                raise BadRequest(str(e)) from None

    def owner_filter(self, src: NodeSource, owner: str | None, rows: list[dict]):
        """The OwnerFilter of `owner` (None without one); NotFound for a pod neither the
        node's agent nor its flows know."""
        if not owner:
            return None
        ips = src.pod_ips(owner[len("pod/") :]) if owner.startswith("pod/") else []
        if owner.startswith("pod/") and not ips and all(r["ui_owner"]["id"] != owner for r in rows):
            why = "" if src.view_or_none("/cluster") else " (its agent does not answer)"
            raise NotFound(f"no pod {owner[len('pod/') :]!r} on {src.name}{why}")
        return pipeline.OwnerFilter(owner, ips)

    def tracer(self) -> tuple[tracing.Tracer, dict[str, str]]:
        """A tracer over the nodes whose agents answer, and {node: why} of those that do not."""
        down: dict[str, str] = {}
        try:
            if self.lab is not None:
                return tracing.lab_tracer(self.lab, down), down
            s = next(iter(self.sources.values()))
            return tracing.node_tracer(s.agent, s.rundir, s.bridge), down
        except tracing.TraceError as e:
            gone = "; ".join(f"node {n}: agent: {why}" for n, why in down.items())
            raise Unreachable(gone or str(e)) from None

    # -- documents -------------------------------------------------------------------------------

    def nodes(self) -> dict:
        out = []
        srcs = list(self.sources.values())
        with ThreadPoolExecutor(max_workers=max(1, len(srcs))) as pool:  # a slow agent: once
            views = list(pool.map(lambda s: s.view_or_none("/cluster"), srcs))
        for s, c in zip(srcs, views, strict=True):
            me = next((n for n in (c or {}).get("nodes") or [] if n["name"] == s.name), {})
            out.append(
                {
                    "name": s.name,
                    "ip": (c or {}).get("node_ip") or me.get("ip"),
                    "pod_cidrs": (c or {}).get("pod_cidrs") or me.get("pod_cidrs") or [],
                    "agent": "up" if c is not None else "down",
                }
            )
        return {"lab": self.lab.name if self.lab is not None else None, "nodes": out}

    def pipeline(self, node: str | None, owner: str | None = None) -> dict:
        src = self.source(node)
        self.check_owner(owner)
        rows = src.rows()
        match = self.owner_filter(src, owner, rows)
        return pipeline.pipeline_doc(src.name, rows, time.time(), src.ports(), match)

    def flows(self, node, table, owner=None, offset=0, limit=500) -> dict:
        src = self.source(node)
        self.check_owner(owner)
        rows = src.rows()
        match = self.owner_filter(src, owner, rows)
        if not any(r["table_id"] == table for r in rows):
            raise NotFound(f"no flows in table {table} on {src.name}")
        return pipeline.flows_doc(src.name, rows, table, match, offset, limit)

    def owners(self, node: str | None) -> dict:
        src = self.source(node)
        return pipeline.owners_doc(src.name, src.rows())

    def trace(self, src, dst, proto="tcp", dport=None, sport=None, family=None) -> dict:
        tracer, down = self.tracer()
        try:
            t = tracer.trace(src, dst, proto, dport, sport or tracing.DEFAULT_SPORT, family=family)
        except tracing.NotFoundError as e:
            raise NotFound(str(e)) from None
        except tracing.UnreachableError as e:
            raise Unreachable(str(e)) from None
        except tracing.TraceError as e:
            msg = str(e).replace("give --dport", "give a port (dport=)")  # the CLI's words
            gone = [n for n in down if re.search(rf"\b{re.escape(n)}\b", msg)]
            if gone:  # e.g. its source is on a node whose agent does not answer
                raise Unreachable(f"{msg} (node {gone[0]}: agent: {down[gone[0]]})") from None
            raise BadRequest(msg) from None
        finally:
            tracer.close()
        doc = name_owners(t.to_dict(), tracer.views)
        nxt = (t.continues or {}).get("node")
        if nxt in down:
            doc["notes"].append(
                f"node {nxt}: agent: {down[nxt]}: not traced there; the trace ends where the "
                f"packet leaves for {nxt}"
            )
        return doc

    def matrix(self, namespace: str | None = None, probe: bool = False) -> dict:
        cluster = self.cluster()
        if namespace and namespace not in {n["name"] for n in cluster.get("namespaces") or []}:
            raise NotFound(f"no namespace {namespace!r}")
        if probe and self.lab is None:
            raise BadRequest("probe=1 needs a lab (ovsctl ui --lab NAME): it sends real packets")
        tracer, down = self.tracer()
        at = time.monotonic() + MATRIX_SECONDS
        tracer.runners = {n: _Deadline(r, at) for n, r in tracer.runners.items()}
        scope: dict = {}
        try:
            if self.lab is not None:
                traced, intended, _ = tracing.lab_matrix(tracer, namespace, skip_nodes=set(down))
            else:
                res = tracing.node_matrix(tracer, tracer.any.name, namespace)
                traced, intended, scope = res["traced"], res["intended"], res["scope"]
        except tracing.TraceError as e:
            raise Unreachable(str(e)) from None
        finally:
            tracer.close()
        probed: dict = {}
        if probe:
            from ovsctl.lab.lab import LabError

            try:
                probed = self.lab.probe(only=set(intended))
            except LabError as e:
                raise Unreachable(f"probe: {e}") from None
        cells, pods = [], set()
        for key in sorted(intended):
            s, d, port, proto = parse_key(key)
            pods |= {s, d}
            t, p = traced.get(key), probed.get(key) if probe else None
            cell = {
                "src": s,
                "dst": d,
                "proto": proto,
                "port": port,
                "intent": intended[key],
                "traced": t,
                "probed": p,
                "differs": any(v is not None and v != intended[key] for v in (t, p)),
                "trace": trace_link(s, d, proto, port),
            }
            if scope:
                cell["scope"] = scope.get(key)
            cells.append(cell)
        return {
            "namespaces": sorted(n["name"] for n in cluster.get("namespaces") or []),
            "pods": sorted(pods),
            "cells": cells,
            "down": down,
        }

    def topology(self) -> dict:
        any_cluster = self.cluster()
        pods_by_ip = {}
        for p in any_cluster.get("pods") or []:
            for ip in p.get("ips") or [p.get("ip")]:
                if ip:
                    pods_by_ip[ip] = p
        nodes = []
        for n in any_cluster.get("nodes") or []:
            src = self.sources.get(n["name"])
            own = src.view_or_none("/cluster") if src else None
            st = src.view_or_none("/status") if src else None
            view_pods = (own or any_cluster).get("pods") or []
            tun = (st or {}).get("tunnel") or {}
            nodes.append(
                {
                    "name": n["name"],
                    "ip": n.get("ip"),
                    "pod_cidrs": n.get("pod_cidrs") or [n.get("pod_cidr")],
                    "agent": None if src is None else ("up" if own else "down"),
                    "tunnels": [
                        {"to": p["node"], "remote_ip": p["node_ip"], "port": tun.get("port")}
                        for p in (st or {}).get("peers") or []
                    ],
                    "pods": [
                        {
                            "ns": p["namespace"],
                            "name": p["name"],
                            "ips": p.get("ips") or [p.get("ip")],
                            "port": (p.get("local") or {}).get("ofport"),
                        }
                        for p in view_pods
                        if p.get("node") == n["name"]
                    ],
                }
            )
        flows_view = next((v for s in self.sources.values() if (v := s.view_or_none("/flows"))), {})
        eps = services_endpoints(flows_view)
        services = []
        for sv in any_cluster.get("services") or []:
            ref = f"{sv['namespace']}/{sv['name']}"
            endpoints = []
            for ip, port in eps.get(ref, []):
                p = pods_by_ip.get(ip)
                endpoints.append(
                    {
                        "pod": f"{p['namespace']}/{p['name']}" if p else None,
                        "ip": ip,
                        "port": int(port) if port else None,
                        "node": p.get("node") if p else _node_of(any_cluster, ip),
                    }
                )
            services.append(
                {
                    "ns": sv["namespace"],
                    "name": sv["name"],
                    "type": sv.get("type"),
                    "cluster_ips": sv.get("cluster_ips") or [sv.get("cluster_ip")],
                    "ports": sv.get("ports") or [],
                    "endpoints": endpoints,
                }
            )
        lab = self.lab.name if self.lab is not None else None
        return {"lab": lab, "nodes": nodes, "services": services}


def name_owners(doc: dict, views: dict) -> dict:
    """Give every step of a trace document (and a hop's drop outcome) `owner_text`: its owner
    as `ovsctl trace` prints it (`pod frontend/f1`, `policy data/deny isolation`, `node node1`),
    named by the view of the node the step ran on; `owner` keeps the raw key (a pod's is its
    container id)."""
    for hop in doc.get("hops") or []:
        view = views.get(hop.get("node"))
        label = view.owner_label if view is not None else (lambda k: k or "")
        for ps in hop.get("passes") or []:
            for step in ps.get("steps") or []:
                step["owner_text"] = label(step.get("owner"))
        out = hop.get("outcome") or {}
        if out.get("owner"):
            out["owner_text"] = label(out["owner"])
    return doc


def _node_of(cluster: dict, ip: str) -> str | None:
    """The node whose pod CIDR holds `ip` (an endpoint that is no pod the view knows)."""
    try:
        return tracing.NodeView(cluster, {}).node_of_pod_ip(ip)
    except (ValueError, KeyError):
        return None
