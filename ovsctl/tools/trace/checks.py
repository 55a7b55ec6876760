"""What each direction's policy tables did in a trace: the ClusterNetworkPolicy Admin tier,
NetworkPolicy (its rules, its isolation), the Baseline tier (statuses in docs/tools.md)."""

from __future__ import annotations

from .parse import flow_fields
from .tiers import ADMIN, BASELINE, decision
from .view import policy_owner


def check(views: dict, t, direction: str) -> dict:
    """What the policy tables of `direction` did, on the node that enforces it (the
    source's node for egress, the destination's for ingress): the Admin tier, then
    NetworkPolicy, then the Baseline tier (trace/tiers.py). `views`: NodeView per node;
    `t`: a tracer.Trace with its hops."""
    admin_t, base_t = ADMIN[direction], BASELINE[direction]
    rule_t = "EgressRule" if direction == "egress" else "IngressRule"
    dflt_t = "EgressDefault" if direction == "egress" else "IngressDefault"
    for h in t.hops:
        view = views[h.node]
        for p in h.passes:
            fl = flow_fields(p.flow)
            v6 = "ipv6_src" in fl
            src_f, dst_f = ("ipv6_src", "ipv6_dst") if v6 else ("nw_src", "nw_dst")
            ip = fl.get(src_f) if direction == "egress" else fl.get(dst_f)
            steps = p.top()
            names = [s.table for s in steps]
            if rule_t not in names and admin_t not in names:
                continue
            pod = view.local_pod_ip(ip or "")
            if pod is None:
                continue  # this pod is not on this node: its policy is enforced elsewhere
            who = f"{pod['namespace']}/{pod['name']}"
            out = {"pod": who, "node": h.node, "isolated_by": view.isolating(dflt_t, ip)}
            if admin_t in names and not steps[names.index(admin_t)].is_miss:
                s = steps[names.index(admin_t)]
                dec = decision(view, s, h.node)
                if dec is None:  # the pipeline's: what no policy may block
                    out["status"] = "always-allowed"
                    out["by"] = f"{s.match} ({view.owner_label(view.owner_key(s.cookie))})"
                    return out
                if dec["action"] != "Pass":
                    out["status"] = "accepted" if dec["action"] == "Accept" else "denied"
                    out["cnp"] = dec
                    return out
                out["cnp_passed"] = dec
            if rule_t in names:
                rule = steps[names.index(rule_t)]
                key = view.owner_key(rule.cookie) or ""
                pol = policy_owner(key)
                if pol and pol["kind"] == "rule":
                    out["status"] = "allowed"
                    out["allowed_by"] = [
                        {
                            "policy": pol["policy"],
                            "direction": pol["direction"],
                            "rule": pol["rule"],
                            "node": h.node,
                        }
                    ]
                    return out
                if not rule.is_miss:
                    out["status"] = "always-allowed"
                    out["by"] = f"{rule.match} ({view.owner_label(key)})"
                    return out
            if dflt_t in names:
                d = steps[names.index(dflt_t)]
                stops = d.drops or (d.to_controller and d.goto is None)
                out["status"] = "dropped" if stops and not d.is_miss else "not-isolated"
                if out["status"] == "not-isolated" and out["isolated_by"]:
                    out["status"] = "passed"  # isolated, yet the default table let it by
            if out.get("status") == "dropped" or base_t not in names:
                return out
            b = steps[names.index(base_t)]
            dec = None if b.is_miss else decision(view, b, h.node)
            if dec is not None and dec["action"] != "Pass":
                out["status"] = "accepted" if dec["action"] == "Accept" else "denied"
                out["cnp"] = dec
            elif dec is not None:
                out["cnp"] = dec  # a Baseline Pass: the default allows
            return out
    return {"status": "not-checked"}
