"""ClusterNetworkPolicy in a trace: which tier decided each direction on the switch, the rule
that did (tier, policy, priority, index, name, action), and how that compares with the intent.

Each direction of a new connection meets the tier tables in evaluation order:

    egress:  AdminEgressRule -> EgressRule -> EgressDefault -> BaselineEgressRule
    ingress: AdminIngressRule -> IngressRule -> IngressDefault -> BaselineIngressRule

A CNP rule's flow carries its owner `cnp/NAME/DIR/I` in the cookie; what it did is read from
the flow (no goto: Deny; goto the NetworkPolicy table: an Admin Pass; goto L3/L2Forwarding:
Accept, or a Baseline Pass, which only the policy itself tells apart), and its name, priority
and action from the agent's /cluster view. A check (checks.check) then carries:

    status   "accepted" / "denied" (a CNP rule decided), or NetworkPolicy's statuses
    cnp      the deciding CNP rule (a Baseline Pass too: then the default allows)
    cnp_passed  the Admin Pass that handed the connection on to NetworkPolicy
"""

from __future__ import annotations

from flows import owners, tables

from .parse import Step

ADMIN = {d: tables.TIER_TABLES[("Admin", d)] for d in ("egress", "ingress")}
BASELINE = {d: tables.TIER_TABLES[("Baseline", d)] for d in ("egress", "ingress")}
TIER_OF = {**{t: "Admin" for t in ADMIN.values()}, **{t: "Baseline" for t in BASELINE.values()}}
NP_RULE = {"egress": "EgressRule", "ingress": "IngressRule"}


def flow_action(step: Step) -> str:
    """What a CNP rule's flow does: no goto (a drop, or an audited drop to the agent) Deny;
    on to the NetworkPolicy table Pass; on to forwarding Accept (a Baseline Pass too)."""
    if step.goto is None:
        return "Deny"
    if tables.name_of(step.goto) in NP_RULE.values():
        return "Pass"
    return "Accept"


def decision(view, step: Step, node: str) -> dict | None:
    """The CNP rule whose flow `step` matched, or None when the flow is no CNP rule's (the
    pipeline's always-allowed flows in the Admin tables). `view` is the node's NodeView."""
    key = view.owner_key(step.cookie) or ""
    owner = owners.try_parse(key)
    if not isinstance(owner, owners.ClusterPolicyRule):
        return None
    action = flow_action(step)
    out = {
        "tier": TIER_OF.get(step.table, ""),
        "policy": owner.name,
        "priority": None,
        "direction": owner.direction,
        "rule": owner.index,
        "rule_name": "",
        "action": action,
        "node": node,
        "table": step.table,
    }
    pol = view.cluster_policies.get(owner.name)
    rules = pol.rules(owner.direction) if pol is not None else ()
    if owner.index < len(rules):
        rule = rules[owner.index]
        out.update(priority=pol.priority, rule_name=rule.name)
        if rule.action == "Pass" and action == "Accept" and out["tier"] == "Baseline":
            out["action"] = "Pass"  # the same flow as an Accept: the policy tells
        elif rule.action != action:
            out["policy_says"] = rule.action  # /cluster and the switch differ (a change?)
    return out


def describe(d: dict) -> str:
    """ "ClusterNetworkPolicy deny-y (Admin, priority 10) ingress rule 0 'from-y': Deny"."""
    prio = f", priority {d['priority']}" if d.get("priority") is not None else ""
    named = f" {d['rule_name']!r}" if d.get("rule_name") else ""
    return (
        f"ClusterNetworkPolicy {d['policy']} ({d['tier']}{prio}) {d['direction']} rule "
        f"{d['rule']}{named}: {d['action']}"
    )


def check_tier(c: dict) -> str | None:
    """The tier that decided a direction on the switch: "Admin", "NetworkPolicy", "Baseline",
    "default" (nothing decided: allowed), "always" (the pod's own node), or None when that
    direction was not checked."""
    st = c.get("status")
    if st in ("accepted", "denied"):
        return c["cnp"]["tier"]
    if st in ("allowed", "dropped"):
        return "NetworkPolicy"
    if st == "always-allowed":
        return "always"
    if st in ("not-isolated", "passed"):
        return "default"
    return None


def _same_rule(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a["policy"], a["rule"]) == (b["policy"], b["rule"])


def disagreements(checks: dict, intent: dict | None, half: str | None = None) -> list[str]:
    """Where the switch's deciding tier or ClusterNetworkPolicy rule differs from the intent's
    (flows/intent.py Direction: tier, decided_by, passed), per checked direction."""
    if intent is None:
        return []
    out = []
    for d in ("egress", "ingress"):
        if half and d != half:
            continue
        c, x = checks.get(d) or {}, intent.get(d) or {}
        got = check_tier(c)
        if got is None or not x.get("pod") or x.get("always") or got == "always":
            continue
        want = x.get("tier")
        dec = c.get("cnp") if got in ("Admin", "Baseline", "default") else None
        want_dec = x.get("decided_by")
        if got != want:
            out.append(
                f"{d} of {x['pod']}: the switch decided in tier {got}"
                + (f" ({describe(dec)})" if dec else "")
                + f", the intent in tier {want}"
                + (f" ({_intent_rule(want_dec, d)})" if want_dec else "")
            )
        elif want in ("Admin", "Baseline", "default") and not _same_rule(dec, want_dec):
            out.append(
                f"{d} of {x['pod']}: the switch applied "
                + (describe(dec) if dec else "no ClusterNetworkPolicy rule")
                + ", the intent "
                + (_intent_rule(want_dec, d) if want_dec else "no ClusterNetworkPolicy rule")
            )
        if not _same_rule(c.get("cnp_passed"), x.get("passed")) and want == got:
            p, q = c.get("cnp_passed"), x.get("passed")
            out.append(
                f"{d} of {x['pod']}: Admin Pass on the switch: "
                + (describe(p) if p else "none")
                + "; in the intent: "
                + (_intent_rule(q, d) if q else "none")
            )
    return out


def _intent_rule(dec: dict, direction: str) -> str:
    return describe({"direction": direction, **dec})


def pair_tier(intent) -> str:
    """The tier that decided a pair (an intents.Intent): a denied pair, the tier of the
    direction that denied it (egress first); an allowed one, the most significant tier that
    decided a direction: Admin, then NetworkPolicy, then Baseline, else "default"."""
    dirs = (intent.egress, intent.ingress)
    for x in dirs:
        if not x.allowed:
            return x.tier
    found = {x.tier for x in dirs if x.pod and not x.always}
    for tier in ("Admin", "NetworkPolicy", "Baseline"):
        if tier in found:
            return tier
    return "default"
