"""The pictures of `ovsctl ui`, laid out by Graphviz `dot` (Debian `graphviz`) as SVG.

Three functions, each from the JSON document the matching /api/ endpoint returns:
`pipeline_svg` (the tables and their gotos), `trace_svg` (a packet's path through each node's
tables, the tunnel between them, the verdict) and `topology_svg` (nodes, tunnels, pods,
Services). Elements the page works with carry stable ids and classes (docs/ui.md). Every name
from the cluster reaches dot only inside a quoted, escaped label and the SVG is re-serialised
by an XML library, so a pod called `<script>` stays text."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)

DOT_TIMEOUT = 20.0
EXIT_KINDS = ("output", "tunnel", "gateway", "controller")
FONT = "DejaVu Sans"


class DrawError(RuntimeError):
    """dot is missing, failed or timed out."""


def count(n) -> str:
    """A counter as the picture prints it: 999, 12.3k, 4.5M (the page writes the same form)."""
    if n is None:
        return "-"
    n = int(n)
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def quote(text) -> str:
    """A dot double-quoted string whose label shows `text` literally: dot's escapes (\\N, \\l,
    \\") and its HTML entities (&lt;) are neutralised."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    s = s.replace("\r", " ").replace("\n", "\\n")
    return f'"{s}"'


def safe_id(*parts) -> str:
    """An element id from cluster names: letters, digits, `_`, `.` and `-` only."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p)) for p in parts)


def attrs(**kw) -> str:
    """`[k="v", ...]` with the values quoted; `klass` is written as `class`."""
    items = [f"{'class' if k == 'klass' else k}={quote(v)}" for k, v in kw.items() if v is not None]
    return "[" + ", ".join(items) + "]"


def run_dot(source: str, timeout: float = DOT_TIMEOUT) -> str:
    """Lay `source` out with `dot -Tsvg`; the SVG re-serialised without prolog or comments."""
    exe = shutil.which("dot")
    if not exe:
        raise DrawError("Graphviz `dot` is not installed (Debian package graphviz; `make deps`)")
    try:
        p = subprocess.run(
            [exe, "-Tsvg"], input=source, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise DrawError(f"dot took longer than {timeout:.0f}s") from e
    if p.returncode != 0:
        raise DrawError(f"dot failed: {p.stderr.strip()[-500:]}")
    return p.stdout


def finish(svg: str, texts: dict[str, list[str]] | None = None) -> str:
    """Parse dot's SVG, give the `<text>` lines of the groups in `texts` their ids (group id ->
    one id per line, in order), drop dot's fixed width/height so the page can scale it."""
    root = ET.fromstring(svg)
    root.attrib.pop("width", None)
    root.attrib.pop("height", None)
    if texts:
        for g in root.iter(f"{{{SVG_NS}}}g"):
            ids = texts.get(g.get("id", ""))
            if ids:
                for el, tid in zip(g.iter(f"{{{SVG_NS}}}text"), ids, strict=False):
                    el.set("id", tid)
    return ET.tostring(root, encoding="unicode")


def header(name: str, rankdir: str = "TB") -> list[str]:
    return [
        f"digraph {name} {{",
        f"graph {attrs(id=name, rankdir=rankdir, bgcolor='transparent', nodesep='0.25', ranksep='0.3', fontname=FONT)};",
        f"node {attrs(shape='box', style='rounded,filled', fillcolor='#ffffff', color='#5b6b7f', fontname=FONT, fontsize='11')};",
        f"edge {attrs(color='#7b8794', fontname=FONT, fontsize='9', arrowsize='0.6')};",
    ]


# -- the pipeline ------------------------------------------------------------------------------


def table_label(t: dict) -> str:
    return f"[{t['id']}] {t['name']}\n{count(t.get('flows'))} flows\n{count(t.get('packets'))} pkts"


ROW = 6  # tables per row of the pipeline drawing, at most


def grid(ids: list, per_row: int = ROW) -> list[list]:
    """`ids` in rows of at most `per_row`, as even as they come: 22 tables -> 6, 6, 6, 4."""
    if not ids:
        return []
    rows = -(-len(ids) // per_row)
    per = -(-len(ids) // rows)
    return [ids[i : i + per] for i in range(0, len(ids), per)]


def pipeline_dot(pipeline: dict) -> tuple[str, dict[str, list[str]]]:
    """The tables left to right in pipeline order, wrapped in rows (like lines of text) so that
    the whole pipeline fits a screen: each row one rank, kept in order by invisible edges, and
    its tables aligned with the row above by heavier invisible edges; where packets leave the
    switch ends the last row."""
    lines = header("pipeline")
    texts: dict[str, list[str]] = {}
    known = set()
    for t in pipeline.get("tables", []):
        tid = int(t["id"])
        known.add(tid)
        gid = f"table-{tid}"
        texts[gid] = [f"{gid}-name", f"{gid}-flows", f"{gid}-packets"]
        klass = "table drop" if t.get("drop_flows") else "table"
        if t.get("hit"):
            klass += " hit"
        fill = "#fdecea" if t.get("drop_flows") else "#ffffff"
        lines.append(
            f"t{tid} "
            + attrs(id=gid, klass=klass, label=table_label(t), width="1.9", fillcolor=fill)
            + ";"
        )
    kinds: dict[tuple[int, int], list[str]] = {}  # one edge per pair, whatever its kinds
    for e in pipeline.get("edges", []):
        pair = (int(e["from"]), int(e["to"]))
        if pair[0] in known and pair[1] in known:
            kinds.setdefault(pair, []).append(e.get("kind", "goto"))
    for (a, b), ks in kinds.items():
        style = "solid" if "goto" in ks else "dashed" if "ct" in ks else "dotted"
        label = " ".join(k for k in ks if k != "goto") or None
        klass = " ".join(f"edge-{k}" for k in ks)
        lines.append(
            f"t{a} -> t{b} "
            + attrs(id=f"edge-{a}-{b}", klass=klass, style=style, label=label)
            + ";"
        )
    sinks = sorted({x.get("to") for x in pipeline.get("exits", [])} & set(EXIT_KINDS))
    for kind in sinks:
        lines.append(
            f"x_{kind} "
            + attrs(id=f"exit-{kind}", klass="exit", label=kind, shape="oval", fillcolor="#eef2f7")
            + ";"
        )
    for x in pipeline.get("exits", []):
        a, kind = int(x["table"]), x.get("to")
        if kind in sinks and a in known:
            lines.append(
                f"t{a} -> x_{kind} "
                + attrs(id=f"exit-{a}-{kind}", klass="exit", style="dashed")
                + ";"
            )
    rows = grid([f"t{t}" for t in sorted(known)])
    if rows:
        rows[-1] += [f"x_{kind}" for kind in sinks]
    for row in rows:
        lines.append("{rank=same; " + "; ".join(row) + ";}")
        if len(row) > 1:
            lines.append(" -> ".join(row) + " [style=invis, weight=10];")
    for above, below in zip(rows, rows[1:], strict=False):
        for a, b in zip(above, below, strict=False):
            lines.append(f"{a} -> {b} [style=invis, weight=100];")
    lines.append("}")
    return "\n".join(lines), texts


def pipeline_svg(pipeline: dict) -> str:
    """One box per table (`table-<id>`, class `drop` when it has drop flows) with its name,
    flow count and packet counter in `<text id="table-<id>-name|-flows|-packets">`; the edges
    `edge-<from>-<to>`; where packets leave the switch, `exit-<kind>`."""
    source, texts = pipeline_dot(pipeline)
    return finish(run_dot(source), texts)


# -- a trace -----------------------------------------------------------------------------------


def step_label(step: dict) -> str:
    owner = step.get("owner_text") or step.get("owner") or "?"
    return f"[{step.get('table_id')}] {step.get('table')}\nprio {step.get('priority')} · {owner}"


def verdict_label(trace: dict) -> str:
    v = trace.get("verdict") or "unknown"
    if v == "delivered":
        return f"DELIVERED\n{trace.get('to') or ''}".strip()
    who = trace.get("cluster_policy") or trace.get("policy")
    lines = [v.upper()]
    if trace.get("table"):
        lines.append(f"in {trace['table']} on {trace.get('node') or '?'}")
    if trace.get("cluster_policy"):
        lines.append(f"ClusterNetworkPolicy {trace['cluster_policy']}")
    elif who:
        lines.append(f"NetworkPolicy {who}")
    elif trace.get("reason"):
        lines.append(str(trace["reason"]))
    return "\n".join(lines)


def trace_dot(trace: dict) -> tuple[str, dict[str, list[str]]]:
    """Each hop a column (the tunnel edge does not constrain the layout, so the next node's
    pipeline starts level with the first); edges come after the clusters so that no node is
    pulled into another's cluster."""
    lines = header("trace")
    texts: dict[str, list[str]] = {}
    edges: list[str] = []
    src = trace.get("src") or "source"
    lines.append(f"src {attrs(id='trace-src', klass='end', label=src, shape='oval')};")
    verdict = trace.get("verdict") or "unknown"
    hops = trace.get("hops") or []
    prev = "src"
    for h, hop in enumerate(hops):
        label = f"{hop.get('node')} · br-int · entered from {hop.get('entered') or '?'}"
        cluster = attrs(id=f"hop-{h}", klass="hop", label=label, style="rounded", color="#9aa5b1")
        lines.append(f"subgraph cluster_hop{h} {{")
        lines.append(f"graph {cluster};")
        outcome = hop.get("outcome") or {}
        steps = [
            (p, s, ps, step)
            for p, ps in enumerate(hop.get("passes") or [])
            for s, step in enumerate(ps.get("steps") or [])
        ]
        for n, (p, s, ps, step) in enumerate(steps):
            name, gid = f"s{h}_{p}_{s}", f"step-{h}-{p}-{s}"
            texts[gid] = [f"{gid}-table", f"{gid}-flow"]
            klass, fill = "step", None
            if n == len(steps) - 1 and outcome.get("kind") == "drop":
                klass, fill = "step drop", "#fdecea"
            elif step.get("owner") and step.get("owner") != "pipeline":
                klass = "step owned"
            lines.append(
                f"{name} {attrs(id=gid, klass=klass, label=step_label(step), fillcolor=fill)};"
            )
            if n == 0 and h > 0:
                tun = hops[h - 1].get("outcome") or {}
                tlabel = f"VXLAN tunnel to {hop.get('node')} {tun.get('tun_dst') or ''}".strip()
                edges.append(
                    f"{prev} -> {name} "
                    + attrs(
                        id=f"tunnel-{h - 1}-{h}",
                        klass="tunnel",
                        label=tlabel,
                        color="#2b6cb0",
                        penwidth="2",
                        constraint="false",
                    )
                )
            elif p > 0 and s == 0:
                rlabel = f"ct recirc {ps.get('ct_state') or ''}".strip()
                edges.append(
                    f"{prev} -> {name} {attrs(klass='recirc', style='dashed', label=rlabel)}"
                )
            else:
                edges.append(f"{prev} -> {name}")
            prev = name
        lines.append("}")
    fill = {"delivered": "#e6f4ea", "dropped": "#fdecea", "rejected": "#fff4e5"}.get(
        verdict, "#ffffff"
    )
    vattrs = attrs(
        id="verdict",
        klass=f"verdict verdict-{safe_id(verdict)}",
        label=verdict_label(trace),
        fillcolor=fill,
        penwidth="2",
    )
    lines.append(f"verdict {vattrs};")
    edges.append(f"{prev} -> verdict {attrs(klass='to-verdict')}")
    lines += [e + ";" for e in edges]
    lines.append("}")
    return "\n".join(lines), texts


def trace_svg(trace: dict) -> str:
    """The packet's path: a cluster `hop-<i>` per node it crossed, one box per matched flow
    (`step-<hop>-<pass>-<step>`: table name and id, priority and owner), ct recirculations
    dashed, the tunnel (`tunnel-<i>-<j>`) between nodes, and the verdict box
    (`verdict`, class `verdict-dropped|delivered|rejected`; a drop names the policy)."""
    source, texts = trace_dot(trace)
    return finish(run_dot(source), texts)


# -- the topology ------------------------------------------------------------------------------


def port_text(port) -> str:
    """A Service port as the page's table shows it: `80/TCP`, `53/UDP (dns)`."""
    if not isinstance(port, dict):
        return str(port)
    name = f" ({port['name']})" if port.get("name") else ""
    return f"{port.get('port')}/{port.get('protocol') or 'TCP'}{name}"


def topology_dot(topology: dict) -> str:
    lines = header("topology")
    nodes = topology.get("nodes") or []
    pod_ids: dict[str, str] = {}
    for n, node in enumerate(nodes):
        name = node.get("name")
        lines.append(f"subgraph cluster_node{n} {{")
        label = f"{name} {node.get('ip') or ''}\n{', '.join(node.get('pod_cidrs') or [])}"
        lines.append(
            f"graph {attrs(id=safe_id('node', name), klass='node-box', label=label, style='rounded', color='#9aa5b1')};"
        )
        lines.append(
            f"br{n} {attrs(id=safe_id('bridge', name), klass='bridge', label='br-int', shape='cylinder', fillcolor='#eef2f7')};"
        )
        for i, pod in enumerate(node.get("pods") or []):
            key = f"{pod.get('ns')}/{pod.get('name')}"
            pod_ids[key] = f"p{n}_{i}"
            lines.append(
                f"p{n}_{i} "
                + attrs(
                    id=safe_id("pod", pod.get("ns"), pod.get("name")),
                    klass="pod",
                    label=f"{key}\n{', '.join(pod.get('ips') or [])}",
                )
                + ";"
            )
            lines.append(f"br{n} -> p{n}_{i} {attrs(dir='none')};")
        lines.append("}")
    index = {node.get("name"): n for n, node in enumerate(nodes)}
    seen = set()
    for n, node in enumerate(nodes):
        for t in node.get("tunnels") or []:
            m = index.get(t.get("to"))
            if m is None or (min(n, m), max(n, m)) in seen:
                continue
            seen.add((min(n, m), max(n, m)))
            a, b = sorted((node.get("name"), t.get("to")))
            lines.append(
                f"br{n} -> br{m} "
                + attrs(
                    id=safe_id("tunnel", a, b),
                    klass="tunnel",
                    dir="none",
                    color="#2b6cb0",
                    penwidth="2",
                    label="VXLAN",
                    constraint="false",
                )
                + ";"
            )
    for k, svc in enumerate(topology.get("services") or []):
        key = f"{svc.get('ns')}/{svc.get('name')}"
        ports = ", ".join(port_text(p) for p in svc.get("ports") or [])
        label = f"svc {key}\n{', '.join(svc.get('cluster_ips') or [])}\n{ports}".rstrip()
        lines.append(
            f"v{k} "
            + attrs(
                id=safe_id("svc", svc.get("ns"), svc.get("name")),
                klass="service",
                label=label,
                shape="hexagon",
                fillcolor="#f3ebfa",
            )
            + ";"
        )
        for e, ep in enumerate(svc.get("endpoints") or []):
            target = pod_ids.get(ep.get("pod") or "")
            if target is None:
                target = f"v{k}_e{e}"
                lines.append(f"{target} {attrs(klass='endpoint', label=ep.get('ip') or '?')};")
            lines.append(  # drawn pod -> Service, arrow back: Services sit below the pods
                f"{target} -> v{k} "
                + attrs(
                    id=safe_id("ep", svc.get("ns"), svc.get("name"), e),
                    klass="endpoint",
                    style="dashed",
                    color="#805ad5",
                    dir="back",
                )
                + ";"
            )
    lines.append("}")
    return "\n".join(lines)


def topology_svg(topology: dict) -> str:
    """A cluster per node (`node-<name>`: address, pod CIDRs) holding its br-int
    (`bridge-<name>`) and pods (`pod-<ns>-<name>` with addresses); the VXLAN tunnels between
    bridges (`tunnel-<a>-<b>`); Services (`svc-<ns>-<name>`) with dashed edges to their
    endpoints."""
    return finish(run_dot(topology_dot(topology)))
