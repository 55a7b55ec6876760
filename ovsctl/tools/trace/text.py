"""A trace as text."""

from __future__ import annotations

from .tiers import describe
from .tracer import Trace, Tracer


def render(t: Trace, tracer: Tracer, raw: bool = False) -> str:
    lines = []
    what = f"{t.proto}/{t.dport}" if t.dport else t.proto
    lines.append(
        f"trace {t.src.label} -> {t.dst.label} {what} (a new connection; no packet is sent)"
    )
    for n in t.notes:
        lines.append(f"note: {n}")
    for h in t.hops:
        view = tracer.views[h.node]
        lines.append("")
        lines.append(
            f"node {h.node}: {h.packet.describe()}, in_port {h.packet.in_port} ({h.entered})"
        )
        bridge = getattr(tracer.runners.get(h.node), "bridge", "br-int")
        lines.append(f"  ofproto/trace {bridge} '{h.packet.flow()}'")
        for i, p in enumerate(h.passes):
            if i > 0:
                lines.append(f"  -- recirculated: conntrack state {p.ct_state or '?'}")
                if p.nat_to:
                    lines.append(f"  -- NAT: {p.nat_from}  =>  {p.nat_to}")
            for s in p.own():
                ind = "    " * s.depth
                owner = view.owner_label(view.owner_key(s.cookie))
                head = f"  {ind}{s.table_id:>3} {s.table:<16}"
                if s.is_miss:
                    lines.append(f"{head} (miss) {s.action_text()}")
                    continue
                match = s.match or "(any)"
                lines.append(f"{head} {match}, priority {s.priority}  [{owner}]")
                acts = s.action_text()
                if acts:
                    lines.append(f"  {ind}{'':20} {acts}")
                for a in s.actions:
                    if a.startswith("-> output") or a.startswith("-> tunneling to"):
                        lines.append(f"  {ind}{'':20} {a}")
        oc = h.outcome
        if oc["kind"] == "output" and oc["to"] == "tunnel":
            lines.append(
                f"  => out to the tunnel: node {oc.get('next_node')} ({oc.get('tun_dst')})"
            )
        if raw:
            lines.append("")
            lines += ["  | " + x for x in h.raw.splitlines()]
    lines.append("")
    head = t.verdict.upper()
    if t.verdict == "delivered":
        lines.append(f"verdict: {head} to {t.to}")
        if t.continues:
            lines.append(
                f"  continues on node {t.continues['node']} (tunnel to {t.continues['tun_dst']}); "
                f"trace the rest there"
            )
    elif t.verdict == "dropped" and t.cluster_policy:
        lines.append(f"verdict: {head} on {t.node}: {t.reason}")
    elif t.verdict == "dropped":
        lines.append(f"verdict: {head} on {t.node} in table {t.table}: {t.reason}")
    else:
        lines.append(f"verdict: {head} on {t.node} ({t.table}): {t.reason}")
    if t.service:
        sv = t.service
        lines.append(
            f"  Service {sv['service']} {sv['frontend']}: DNAT to endpoint {sv['endpoint']}"
            f" ({sv['endpoint_pod'] or 'not a pod'}), picked on {sv['node']} by the ServiceLB hash"
            f" of this packet (source port {t.sport})"
        )
    for d in ("egress", "ingress"):
        c = t.checks.get(d) or {}
        lines.append(f"  {d:<7} {_check_text(d, c)}")
    if t.intent is not None:
        lines.append(f"  intent  {intent_text(t.intent)}")
        if t.agrees() is False:
            lines.append("  !! the switch and the policies' intent DISAGREE")
        for d in t.tier_disagreements:
            lines.append(f"  !! tiers disagree: {d}")
    return "\n".join(lines)


def intent_text(it: dict) -> str:
    parts = []
    for d in ("egress", "ingress"):
        x = it[d]
        if not x["pod"]:
            continue
        passed = x.get("passed")
        pre = f"{describe({'direction': d, **passed})} passed it on, " if passed else ""
        dec = x.get("decided_by")
        if x.get("always"):
            parts.append(f"{d} of {x['pod']}: {x['always']}")
        elif dec and x.get("tier") != "NetworkPolicy":
            how = ", the default allows" if dec["action"] == "Pass" else ""
            parts.append(f"{d} of {x['pod']}: {pre}{describe({'direction': d, **dec})}{how}")
        elif not x["isolated_by"]:
            parts.append(f"{d} of {x['pod']}: {pre}not isolated")
        elif x["allowed_by"]:
            r = x["allowed_by"][0]
            parts.append(f"{d} of {x['pod']}: {pre}{r['policy']} {d} rule {r['rule']}")
        else:
            iso = ", ".join(x["isolated_by"])
            parts.append(f"{d} of {x['pod']}: {pre}isolated by {iso}, no rule")
    verdict = "the policies allow it" if it["allowed"] else "the policies deny it"
    return verdict + (f" ({'; '.join(parts)})" if parts else "")


def _check_text(direction: str, c: dict) -> str:
    text = _np_check_text(direction, c)
    if c.get("cnp_passed") and c.get("status") not in ("not-reached", "not-checked"):
        pod, _, rest = text.partition(": ")
        text = f"{pod}: {describe(c['cnp_passed'])} passed it on; {rest}"
    return text


def _np_check_text(direction: str, c: dict) -> str:
    st = c.get("status")
    iso = ", ".join(c.get("isolated_by") or [])
    if st == "accepted":
        return f"{c['pod']}: allowed by {describe(c['cnp'])}"
    if st == "denied":
        return f"{c['pod']}: dropped by {describe(c['cnp'])}"
    if st == "not-isolated" and c.get("cnp"):
        return f"{c['pod']}: not isolated; {describe(c['cnp'])}: the default allows it"
    if st == "allowed":
        r = c["allowed_by"][0]
        return (
            f"{c['pod']}: allowed by NetworkPolicy {r['policy']} {direction} rule {r['rule']}"
            + (f" (isolated by {iso})" if iso else "")
        )
    if st == "dropped":
        return f"{c['pod']}: isolated by {iso or '?'}; no rule allowed it"
    if st == "not-isolated":
        return f"{c['pod']}: not isolated"
    if st == "always-allowed":
        return f"{c['pod']}: always allowed: {c.get('by')}"
    if st == "passed":
        return f"{c['pod']}: passed the {direction} tables (isolated by {iso})"
    if st == "not-reached":
        return "not reached (the packet stopped before)"
    return "not checked here (not a pod, or its node is not at hand)"
