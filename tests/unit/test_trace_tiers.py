"""`ovsctl trace` and ClusterNetworkPolicy, without a switch (tests/e2e/test_cnp_tools.py
traces the same on real OVS): a direction's check reads the tier tables in evaluation order
(Admin, NetworkPolicy, Baseline) and names the rule that decided (tier, policy, priority,
index, name, action), an Admin Pass and the NetworkPolicy verdict after it; the verdict of a
CNP drop names the rule; the switch's tier is compared with the intent's; a pair's deciding
tier for reachability; the text forms."""

from __future__ import annotations

from flows import cookie, tables
from flows.intent import Intents
from ovsctl.tools.matrix import render_tiers
from ovsctl.tools.trace import text, tiers
from ovsctl.tools.trace.parse import Pass, Step
from ovsctl.tools.trace.tracer import Hop, Trace, Tracer
from ovsctl.tools.trace.view import End, NodeView, Packet

NS = "kubernetes.io/metadata.name"


def cnp(name, tier, priority, action, rule_name="r", subject="x", peer="y"):
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {NS: subject}}},
            "ingress": [
                {
                    "name": rule_name,
                    "action": action,
                    "from": [{"namespaces": {"matchLabels": {NS: peer}}}],
                }
            ],
        },
    }


CNPS = [
    cnp("deny-y", "Admin", 10, "Deny", "from-y"),
    cnp("pass-y", "Admin", 20, "Pass", "to-np"),
    cnp("base-ok", "Baseline", 3, "Accept", "ok"),
    cnp("base-pass", "Baseline", 4, "Pass", ""),
]
CLUSTER = {
    "node": "n0",
    "node_ip": "172.30.0.10",
    "gateway": {"ofport": 2, "mac": "0a:58:0a:f4:00:01"},
    "namespaces": [{"name": "x"}, {"name": "y"}],
    "nodes": [{"name": "n0", "ip": "172.30.0.10", "pod_cidr": "10.244.0.0/24"}],
    "pods": [
        {"namespace": "x", "name": "a", "ip": "10.244.0.2", "node": "n0",
         "local": {"key": "cidA/eth0", "ofport": 3, "mac": "0a:58:0a:f4:00:02"},
         "ports": [["http", 80, "TCP"]], "labels": {}},
        {"namespace": "y", "name": "b", "ip": "10.244.0.3", "node": "n0",
         "local": {"key": "cidB/eth0", "ofport": 4, "mac": "0a:58:0a:f4:00:03"},
         "ports": [["http", 80, "TCP"]], "labels": {}},
    ],
    "cluster_network_policies": CNPS,
}  # fmt: skip
KEYS = [
    "pipeline",
    "policy/x/closed/isolation",
    *(f"cnp/{n}/ingress/0" for n in ("deny-y", "pass-y", "base-ok", "base-pass")),
]
FLOWS = {"owners": {f"{cookie.owner_id(k):#x}": k for k in KEYS}, "desired": []}
T = {n: t.id for n, t in tables.BY_NAME.items()}
FEATURE = {"pipeline": "pipeline", "policy": "policy", "cnp": "cnp"}


def step(table: str, key: str | None, actions: list[str], match="ip", prio=100) -> Step:
    if key is None:  # a table miss
        return Step("br-int", T[table], "", 0, cookie.make("pipeline", "pipeline"), actions)
    ck = cookie.with_round(cookie.make(FEATURE[key.split("/")[0]], key), 3)
    return Step("br-int", T[table], match, prio, ck, actions)


def goto(table: str) -> str:
    return f"goto_table:{T[table]}"


def trace_of(steps: list[Step], cluster=CLUSTER) -> tuple[Tracer, Trace]:
    view = NodeView(cluster, FLOWS)
    tr = Tracer({"n0": view}, {"n0": None})
    src = End("pod", "10.244.0.3", "y/b", pod=cluster["pods"][1])
    dst = End("pod", "10.244.0.2", "x/a", pod=cluster["pods"][0])
    pkt = Packet("tcp", "10.244.0.3", "10.244.0.2", 40000, 80, 4, "a", "b")
    p = Pass(flow=pkt.flow(), bridge="br-int", steps=steps, final_flow="unchanged")
    t = Trace(src, dst, "tcp", 80, 40000, hops=[Hop("n0", pkt, "pod y/b", "", "", [p])])
    t.hops[0].outcome = tr._outcome(view, t.hops[0])
    return tr, t


def test_an_admin_deny_decides_and_the_verdict_names_it():
    tr, t = trace_of([step("AdminIngressRule", "cnp/deny-y/ingress/0", ["drop"])])
    c = tr._check(t, "ingress")
    assert c["status"] == "denied" and tiers.check_tier(c) == "Admin"
    assert c["cnp"] == {
        "tier": "Admin",
        "policy": "deny-y",
        "priority": 10,
        "direction": "ingress",
        "rule": 0,
        "rule_name": "from-y",
        "action": "Deny",
        "node": "n0",
        "table": "AdminIngressRule",
    }
    tr._explain(t)
    assert t.verdict == "dropped" and t.cluster_policy["policy"] == "deny-y"
    assert t.reason == (
        "dropped in AdminIngressRule by ClusterNetworkPolicy deny-y (Admin, priority 10) "
        "ingress rule 0 'from-y': Deny"
    )
    assert t.intent["ingress"]["tier"] == "Admin" and t.tier_disagreements == []
    d = t.to_dict()
    assert d["cluster_policy"]["rule_name"] == "from-y"
    assert d["tiers"] == {"egress": None, "ingress": "Admin"}  # y/b's egress: Admin table absent
    out = text.render(t, tr)
    assert (
        "58 AdminIngressRule ip, priority 100  [cnp deny-y ingress rule 0 (Admin 'from-y': Deny)]"
        in out
    )
    assert f"verdict: DROPPED on n0: {t.reason}" in out
    assert "ingress x/a: dropped by ClusterNetworkPolicy deny-y" in out


def test_an_audited_deny_goes_to_the_agent_and_is_a_drop():
    tr, t = trace_of(
        [
            step(
                "AdminIngressRule",
                "cnp/deny-y/ingress/0",
                ["controller(max_len=128,meter_id=65537)"],
            )
        ]
    )
    assert t.hops[0].outcome["kind"] == "drop" and t.hops[0].outcome["audited"]
    tr._explain(t)
    assert t.verdict == "dropped" and t.cluster_policy["action"] == "Deny"
    assert any("deny-y is audited" in n for n in t.notes)


def test_an_admin_pass_then_networkpolicy_names_both():
    closed = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "closed", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    cluster = {**CLUSTER, "policies": [closed],
               "cluster_network_policies": [c for c in CNPS if c["metadata"]["name"] != "deny-y"]}  # fmt: skip
    flows = {**FLOWS, "desired": [{"table": "IngressDefault", "match": "priority=1000,ip,nw_dst=10.244.0.2", "owner": "policy/x/closed/isolation"}]}  # fmt: skip
    steps = [
        step("AdminIngressRule", "cnp/pass-y/ingress/0", [goto("IngressRule")]),
        step("IngressRule", None, [goto("IngressDefault")]),
        step("IngressDefault", "policy/x/closed/isolation", ["drop"], "ip,nw_dst=10.244.0.2"),
    ]
    view = NodeView(cluster, flows)
    tr, t = trace_of(steps, cluster)
    tr.views["n0"] = view
    c = tr._check(t, "ingress")
    assert c["status"] == "dropped" and c["cnp_passed"]["policy"] == "pass-y"
    assert c["cnp_passed"]["action"] == "Pass" and tiers.check_tier(c) == "NetworkPolicy"
    tr._explain(t)
    assert t.policy == "x/closed" and t.cluster_policy is None
    assert (
        t.reason.endswith("passed it on")
        and "ClusterNetworkPolicy pass-y (Admin, priority 20) ingress rule 0 'to-np': Pass"
        in t.reason
    )
    assert t.intent["ingress"]["passed"]["policy"] == "pass-y"
    assert t.tier_disagreements == []
    out = text.render(t, tr)
    assert "NetworkPolicy x/closed" in out and "pass-y" in out


def test_baseline_accept_and_baseline_pass():
    cluster = {**CLUSTER, "cluster_network_policies": [CNPS[2]]}
    steps = [
        step("AdminIngressRule", None, [goto("IngressRule")]),
        step("IngressRule", None, [goto("IngressDefault")]),
        step("IngressDefault", None, [goto("BaselineIngressRule")]),
        step("BaselineIngressRule", "cnp/base-ok/ingress/0", [goto("L2Forwarding")]),
    ]
    tr, t = trace_of(steps, cluster)
    c = tr._check(t, "ingress")
    assert c["status"] == "accepted" and c["cnp"]["tier"] == "Baseline"
    assert c["cnp"]["action"] == "Accept" and tiers.check_tier(c) == "Baseline"
    # a Baseline Pass: the same flow as an Accept; the policy tells, the default allows
    cluster = {**CLUSTER, "cluster_network_policies": [CNPS[3]]}
    steps[-1] = step("BaselineIngressRule", "cnp/base-pass/ingress/0", [goto("L2Forwarding")])
    tr, t = trace_of(steps, cluster)
    c = tr._check(t, "ingress")
    assert c["status"] == "not-isolated" and c["cnp"]["action"] == "Pass"
    assert tiers.check_tier(c) == "default"
    assert "the default allows it" in text._check_text("ingress", c)


def test_the_pipelines_always_allowed_flow_in_the_admin_table():
    tr, t = trace_of([step("AdminIngressRule", "pipeline", [goto("L2Forwarding")], "ip,reg0=0x1")])
    c = tr._check(t, "ingress")
    assert c["status"] == "always-allowed" and "ip,reg0=0x1" in c["by"]
    assert tiers.check_tier(c) == "always"


def test_a_policy_changed_since_the_view_is_shown_as_the_switch_did():
    step_ = step("AdminIngressRule", "cnp/pass-y/ingress/0", ["drop"])
    d = tiers.decision(NodeView(CLUSTER, FLOWS), step_, "n0")
    assert d["action"] == "Deny" and d["policy_says"] == "Pass"


def test_disagreements_with_the_intent():
    dec = {"tier": "Admin", "policy": "deny-y", "priority": 10, "direction": "ingress",
           "rule": 0, "rule_name": "from-y", "action": "Deny"}  # fmt: skip
    want = {k: dec[k] for k in ("tier", "policy", "priority", "rule", "rule_name", "action")}
    intent = {
        "egress": {"pod": None},
        "ingress": {"pod": "x/a", "tier": "Admin", "decided_by": want, "passed": None},
    }
    checks = {"ingress": {"status": "denied", "cnp": dec}, "egress": {"status": "not-checked"}}
    assert tiers.disagreements(checks, intent) == []
    other = {**dec, "policy": "other"}
    got = tiers.disagreements({"ingress": {"status": "denied", "cnp": other}}, intent)
    assert got == [
        "ingress of x/a: the switch applied ClusterNetworkPolicy other (Admin, priority 10) "
        "ingress rule 0 'from-y': Deny, the intent ClusterNetworkPolicy deny-y (Admin, "
        "priority 10) ingress rule 0 'from-y': Deny"
    ]
    got = tiers.disagreements({"ingress": {"status": "not-isolated"}}, intent)
    assert got == [
        "ingress of x/a: the switch decided in tier default, the intent in tier Admin "
        "(ClusterNetworkPolicy deny-y (Admin, priority 10) ingress rule 0 'from-y': Deny)"
    ]
    # a half trace compares its half only; the pod's own node is never compared
    assert tiers.disagreements({"ingress": {"status": "not-isolated"}}, intent, "egress") == []
    always = {**intent, "ingress": {**intent["ingress"], "always": "its own node"}}
    assert tiers.disagreements({"ingress": {"status": "not-isolated"}}, always) == []
    # an Admin Pass the switch did not apply
    np = {"pod": "x/a", "tier": "NetworkPolicy", "decided_by": None, "passed": want}
    got = tiers.disagreements({"ingress": {"status": "dropped"}}, {"ingress": np})
    assert got == [
        "ingress of x/a: Admin Pass on the switch: none; in the intent: ClusterNetworkPolicy "
        "deny-y (Admin, priority 10) ingress rule 0 'from-y': Deny"
    ]


def test_pair_tiers_and_their_matrix():
    its = Intents({**CLUSTER, "cluster_network_policies": CNPS[:1]})
    a, b = its.pod("x/a"), its.pod("y/b")
    assert tiers.pair_tier(its.evaluate(b, a, 80, "TCP")) == "Admin"  # denied by deny-y
    assert tiers.pair_tier(its.evaluate(a, b, 80, "TCP")) == "default"
    res = {"x/a->y/b:80/TCP": "default", "y/b->x/a:80/TCP": "Admin"}
    out = render_tiers(res)
    assert out.splitlines()[1:3] == ["x/a   -  .", "y/b   A  -"]
    assert out.endswith("A Admin 1, N NetworkPolicy 0, B Baseline 0, . default 1 ('-' self)")
    intent = its.evaluate(b, a, 80, "TCP").to_dict()
    assert "ingress of x/a: ClusterNetworkPolicy deny-y (Admin, priority 10) ingress rule 0" in (
        text.intent_text(intent)
    )
