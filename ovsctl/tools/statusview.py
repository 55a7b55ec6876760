"""`ovsctl status`: the local agent's /status, for people (or as JSON with --json)."""

from __future__ import annotations

import json
import sys
import time

from ovsctl.tools import agentclient


def _ago(at: float | None, now: float) -> str:
    if not at:
        return "never"
    s = max(0, int(now - at))
    return f"{s}s ago" if s < 120 else f"{s // 60}m{s % 60:02d}s ago"


def _uptime(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d or h:
        return (f"{d}d" if d else "") + f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


def render(st: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    of = st.get("openflow") or {}
    src = st.get("source") or {}
    ipam = st.get("ipam") or {}
    sync = st.get("last_sync") or {}
    node_ips = ", ".join(st.get("node_ips") or []) or st.get("node_ip") or "no node IP"
    lines = [
        f"node      {st.get('node')} ({node_ips})   "
        f"ready: {st.get('ready')}   up {_uptime(st.get('uptime_s', 0))}",
        f"bridge    {st.get('bridge')}",
        f"openflow  {of.get('listen', '-')}  "
        f"{'connected' if of.get('connected') else 'NOT CONNECTED'}  round {of.get('round', 0)}"
        f"  connections {of.get('reconnects', 0)}"
        + (f"  datapath {of['datapath_id']}" if of.get("datapath_id") else ""),
    ]
    if of.get("error"):
        lines.append(f"          {of['error']}")
    if sync:
        lines.append(
            f"last sync {sync.get('kind')}: {sync.get('flows', 0)} flows in "
            f"{sync.get('seconds', 0) * 1000:.1f} ms, {_ago(sync.get('at'), now)}"
        )
    else:
        lines.append("last sync never")
    lines.append(
        f"source    {src.get('kind', '-')}, {'synced' if src.get('synced') else 'NOT SYNCED'}, "
        f"{src.get('objects', 0)} objects"
    )
    pools = ipam.get("cidrs") or [ipam]
    for i, pool in enumerate(pools):
        lines.append(
            f"{'ipam' if i == 0 else '':<10}{pool.get('cidr')}: {pool.get('used', 0)} of "
            f"{pool.get('capacity', 0)} used"
        )
    tun = st.get("tunnel")
    lines.append(f"tunnel    {tun['port']} (ofport {tun['ofport']})" if tun else "tunnel    none")
    peers = st.get("peers") or []
    if not peers:
        lines.append("peers     none")
    for i, p in enumerate(peers):
        lines.append(
            f"{'peers' if i == 0 else '':<10}{p['node']:<12} {p['node_ip']:<15} "
            + ", ".join(p.get("pod_cidrs") or [p["pod_cidr"]])
        )
    audit = st.get("audit") or {}
    if audit:
        meter = {True: "meter on the switch", False: "NO METER (agent limit only)"}.get(
            audit.get("meter"), "meter not set yet"
        )
        lines.append(
            f"audit     {audit.get('log') or '(logger only)'}, at most {audit.get('rate')}/s, "
            f"{meter}; {audit.get('lines', 0)} lines, {audit.get('rate_limited', 0)} "
            f"rate-limited, {audit.get('repeats', 0)} repeats"
        )
    per_table = st.get("flows_per_table") or {}
    lines.append(f"flows     {st.get('flows_desired', 0)} desired")
    width = max([len(t) for t in per_table] + [1])
    for t, n in per_table.items():
        if n:
            lines.append(f"  {t:<{width}} {n:>6}")
    pods = st.get("pods") or []
    lines.append(f"pods      {len(pods)}")
    for p in sorted(pods, key=lambda p: (p.get("namespace", ""), p.get("name", ""))):
        ns, name = p.get("namespace") or "", p.get("name") or ""
        name = f"{ns}/{name}" if ns else name or str(p.get("container_id", ""))[:12]
        ips = ", ".join(p.get("ips") or [p.get("ip", "")])
        lines.append(
            f"  {name:<30} {ips:<15} {p.get('mac', '')}  ofport {p.get('ofport')}"
            f"  {p.get('host_if', '')}"
        )
    lines += _services(st)
    return "\n".join(lines)


def _services(st: dict) -> list[str]:
    """The LB pool line and each Service's addresses: cluster IPs, externalIPs, load
    balancer ingress (an announced one with its holder node; "no holder": no eligible node).
    Nothing for an agent that does not report them."""
    lines = []
    pool = st.get("lb_pool") or {}
    if pool.get("pool"):
        lines.append(
            f"lb pool   {', '.join(pool['pool'])}; writer {pool.get('writer') or 'none'}; "
            f"held here: {', '.join(pool.get('held') or []) or 'none'}"
        )
    svcs = st.get("services")
    if svcs is None:
        return lines
    lines.append(f"services  {len(svcs)}")
    for s in svcs:
        parts = [", ".join(s.get("cluster_ips") or []) or "no cluster IP"]
        if s.get("external_ips"):
            parts.append("external " + ", ".join(s["external_ips"]))
        announced = s.get("announced") or {}
        lb = [
            f"{a} ({'held by ' + announced[a] if announced[a] else 'no holder'})"
            if a in announced
            else a
            for a in s.get("lb_ingress") or []
        ]
        if lb:
            cls = f" [{s['lb_class']}]" if s.get("lb_class") else ""
            parts.append(f"lb{cls} " + ", ".join(lb))
        lines.append(f"  {s.get('name', ''):<30} {s.get('type', ''):<12} " + "; ".join(parts))
    return lines


def main(args) -> int:
    try:
        st = agentclient.get("/status", getattr(args, "agent", None))
    except agentclient.AgentUnreachable as e:
        print(f"ovsctl status: agent unreachable: {e}", file=sys.stderr)
        return 2
    print(json.dumps(st, indent=2) if args.json else render(st))
    return 0 if st.get("ready") == "ok" else 1
