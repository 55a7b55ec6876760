"""Reachability: every pod pair traced, next to what the policies intend, and which tier of
them decided each pair (A: a ClusterNetworkPolicy of the Admin tier, N: NetworkPolicy, B: the
Baseline tier, .: nothing, the default allows; trace/tiers.py pair_tier)."""

from __future__ import annotations

from flows import intent as intents

from .tiers import pair_tier
from .tracer import Tracer
from .view import End


def _addr(pod: intents.Pod, family: int | None) -> str:
    """The address a pair is traced between: the pod's first, or its one of `family`."""
    return pod.ip if family is None else pod.ip_of(family)


def lab_matrix(
    tracer: Tracer,
    namespace: str | None = None,
    family: int | None = None,
    tiers: dict | None = None,
    skip_nodes: set[str] | frozenset = frozenset(),
) -> tuple[dict, dict, dict]:
    """Every pod to every other pod on every declared TCP/UDP port, traced through every node
    (all nodes at hand): ({key: reachable}, {key: intended}, {key: Trace}). `family` 4 or 6:
    between the pods' addresses of that family (pods without one left out); the keys are the
    same for both families. `tiers`, a dict: filled with {key: the tier that decided the pair
    in the intent ("Admin", "NetworkPolicy", "Baseline", "default")}. `skip_nodes`: nodes not
    at hand (an agent that does not answer): a pair with an end there is intended, not traced."""
    pods = tracer.intents.pods
    traced, intended, traces = {}, {}, {}
    ends = {p["namespace"] + "/" + p["name"]: p for p in tracer.any.pods}
    skip = set(skip_nodes)
    for src, dst, port, proto in intents.pairs(pods, namespace, family):
        key = intents.probe_key(src, dst, port, proto)
        it = tracer.intents.evaluate(src, dst, port, proto, family)
        if not {ends[src.key].get("node"), ends[dst.key].get("node")} & skip:
            s = End("pod", _addr(src, family), src.key, pod=ends[src.key])
            d = End("pod", _addr(dst, family), dst.key, pod=ends[dst.key])
            t = tracer.trace(s, d, proto.lower(), port)
            traces[key] = t
            traced[key] = t.reached
        intended[key] = it.allowed
        if tiers is not None:
            tiers[key] = pair_tier(it)
    return traced, intended, traces


def node_matrix(
    tracer: Tracer, node: str, namespace: str | None = None, family: int | None = None
) -> dict:
    """On one node: pairs with a local end. Local -> local is traced whole; local -> remote up
    to the tunnel (the egress half, enforced here); remote -> local from the tunnel on (the
    ingress half). Each half is compared with the same half of the intent. `family` as in
    lab_matrix."""
    view = tracer.views[node]
    pods = tracer.intents.pods
    ends = {p["namespace"] + "/" + p["name"]: p for p in view.pods}
    local = {f"{ns}/{n}" for ns, n in view.local}
    traced, intended, scope, decided = {}, {}, {}, {}
    for src, dst, port, proto in intents.pairs(pods, namespace, family):
        s_local, d_local = src.key in local, dst.key in local
        if not (s_local or d_local):
            continue
        key = intents.probe_key(src, dst, port, proto)
        s = End("pod", _addr(src, family), src.key, pod=ends[src.key])
        d = End("pod", _addr(dst, family), dst.key, pod=ends[dst.key])
        t = tracer.trace(s, d, proto.lower(), port, node=node)
        it = tracer.intents.evaluate(src, dst, port, proto, family)
        traced[key] = t.reached
        if s_local and d_local:
            scope[key], intended[key] = "full", it.allowed
            decided[key] = pair_tier(it)
        elif s_local:
            scope[key], intended[key] = "egress", it.egress.allowed
            decided[key] = it.egress.tier
        else:
            scope[key], intended[key] = "ingress", it.ingress.allowed
            decided[key] = it.ingress.tier
    diffs = [
        {"key": k, "traced": traced[k], "intended": intended[k], "scope": scope[k]}
        for k in traced
        if traced[k] != intended[k]
    ]
    return {
        "node": node,
        **({"family": family} if family is not None else {}),
        "traced": traced,
        "intended": intended,
        "scope": scope,
        "differences": diffs,
        "tiers": decided,
    }


def differences(traced: dict, intended: dict) -> list[dict]:
    return [
        {"key": k, "traced": traced[k], "intended": intended.get(k)}
        for k in traced
        if traced[k] != intended.get(k)
    ]


def render_reachability(
    traced: dict, intended: dict, diffs: list[dict], scope=None, tiers: dict | None = None
) -> str:
    from ovsctl.tools.matrix import render_matrix, render_tiers

    out = ["traced (ofproto/trace of every pair through the live pipelines, no packet sent):"]
    out.append(render_matrix(traced) if traced else "(no pairs)")
    out.append("")
    out.append("intended (NetworkPolicy semantics from the cluster state):")
    out.append(render_matrix(intended) if intended else "(no pairs)")
    out.append("")
    if tiers:
        out.append("intended, by the tier that decided (ClusterNetworkPolicy tiers):")
        out.append(render_tiers(tiers))
        out.append("")
    if not diffs:
        out.append("differences: none — the switch does what the policies say")
    else:
        out.append(f"differences ({len(diffs)}):")
        for d in diffs:
            sc = f" [{d['scope']} half]" if d.get("scope") and d["scope"] != "full" else ""
            out.append(
                f"  !! {d['key']}{sc}: traced {'allowed' if d['traced'] else 'blocked'}, "
                f"intended {'allowed' if d['intended'] else 'blocked'}"
            )
    if scope and any(v != "full" for v in scope.values()):
        out.append(
            "\n(pairs with one end on another node are traced for this node's half: egress of "
            "a local source up to the tunnel, ingress of a local destination from the tunnel)"
        )
    return "\n".join(out)
