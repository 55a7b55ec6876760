"""`ovsctl trace` and `ovsctl reachability` on a node, and the tracer of a lab."""

from __future__ import annotations

import json
import os
import sys

from .parse import TraceError
from .reach import node_matrix, render_reachability
from .switch import Appctl, ctl_path
from .text import render
from .tracer import Tracer
from .view import NodeView, fetch


def node_tracer(agent: str, rundir: str, bridge: str = "br-int") -> Tracer:
    cluster = fetch("/cluster", agent)
    flows = fetch("/flows", agent)
    view = NodeView(cluster, flows)
    return Tracer({view.name: view}, {view.name: Appctl(ctl_path(rundir), bridge)})


def lab_tracer(lab, down: dict | None = None) -> Tracer:
    """Every node of a lab: each agent's views (read inside the node's netns) and a unixctl
    connection to each node's ovs-vswitchd. `down`, a dict: a node whose agent does not answer
    is left out and recorded there ({node: why}; a trace stops where its packet leaves for it,
    as on a real node); without it, such a node fails the whole."""
    from concurrent.futures import ThreadPoolExecutor

    meta = lab.meta()
    nodes = sorted(meta["nodes"], key=lambda n: (len(n), n))  # node0 … node10

    def views(n):  # the agents' unix sockets are files: no need to enter the node's netns
        sock = lab.api_socket(n)
        try:
            return NodeView(fetch("/cluster", sock), fetch("/flows", sock))
        except TraceError as e:
            if down is None:
                raise
            return e

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        vs = dict(zip(nodes, pool.map(views, nodes), strict=True))
    if down is not None:
        down.update({n: str(v) for n, v in vs.items() if isinstance(v, TraceError)})
    up = {n: v for n, v in vs.items() if not isinstance(v, TraceError)}
    return Tracer(up, {n: Appctl(os.path.join(lab.ovs(n).rundir, "ovs-vswitchd.ctl")) for n in up})


def main_trace(args) -> int:
    try:
        tracer = node_tracer(args.agent, args.ovs_rundir, args.bridge)
        try:
            t = tracer.trace(
                args.src,
                args.dst,
                args.proto,
                args.dport,
                args.sport,
                family=getattr(args, "family", None),
            )
            if args.json:
                print(json.dumps(t.to_dict(), indent=2))
            else:
                print(render(t, tracer, raw=args.raw))
        finally:
            tracer.close()
    except TraceError as e:
        print(f"ovsctl trace: {e}", file=sys.stderr)
        return 2
    return 0


def main_reachability(args) -> int:
    try:
        tracer = node_tracer(args.agent, args.ovs_rundir, args.bridge)
        try:
            res = node_matrix(
                tracer, tracer.any.name, args.namespace, getattr(args, "family", None)
            )
        finally:
            tracer.close()
    except TraceError as e:
        print(f"ovsctl reachability: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        fam = f" (IPv{res['family']})" if res.get("family") else ""
        print(f"node {res['node']}{fam}")
        print(
            render_reachability(
                res["traced"], res["intended"], res["differences"], res["scope"], res["tiers"]
            )
        )
    return 1 if res["differences"] else 0
