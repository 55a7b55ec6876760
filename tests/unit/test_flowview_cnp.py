"""`ovsctl flows` and ClusterNetworkPolicy (no switch): owners read "cnp NAME ingress rule 0"
(with tier, rule name and action from the agent's /cluster), `--policy cnp/NAME` keeps only
that policy's flows (by key, and without the agent by cookie owner id, then named from the
key scheme), `--policy NS/NAME` stays a NetworkPolicy, `--diff` covers CNP flows, and the
tier tables appear by name."""

from __future__ import annotations

import json

from flows import cookie, tables
from ovsctl.tools import flowview
from tests.unit.test_flowview import desired, installed, run_main

DENY = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "deny-y"},
    "spec": {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}},
        "ingress": [
            {
                "name": "from-y",
                "action": "Deny",
                "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
            },
            {"action": "Pass", "from": [{"namespaces": {}}]},
        ],
    },
}
BASE = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "base"},
    "spec": {
        "tier": "Baseline",
        "priority": 1,
        "subject": {"namespaces": {}},
        "egress": [{"name": "out", "action": "Accept", "to": [{"networks": ["0.0.0.0/0"]}]}],
    },
}
BROKEN = {"kind": "ClusterNetworkPolicy", "metadata": {"name": "broken"}, "spec": {}}
CLUSTER = {"cluster_network_policies": [DENY, BASE, BROKEN], "pods": []}
KEYS = [
    "pipeline",
    "cnp/deny-y/ingress/0",
    "cnp/deny-y/ingress/1",
    "cnp/base/egress/0",
    "policy/cnp/deny-y/ingress/0",  # a NetworkPolicy named deny-y in a namespace named cnp
]
OWNERS = {cookie.owner_id(k): k for k in KEYS}
T = {n: tables.BY_NAME[n].id for n in ("AdminIngressRule", "BaselineEgressRule", "IngressRule")}


def rows():
    return [
        installed("Classifier", 0, "pipeline", "pipeline", "priority=0", "drop"),
        installed(
            "AdminIngressRule",
            T["AdminIngressRule"],
            "cnp",
            "cnp/deny-y/ingress/0",
            "priority=64000,conj_id=200,ip",
            "drop",
        ),
        installed(
            "AdminIngressRule",
            T["AdminIngressRule"],
            "cnp",
            "cnp/deny-y/ingress/1",
            "priority=63999,ip,nw_dst=10.244.0.2",
            f"goto_table:{tables.BY_NAME['IngressRule'].id}",
        ),
        installed(
            "BaselineEgressRule",
            T["BaselineEgressRule"],
            "cnp",
            "cnp/base/egress/0",
            "priority=64000,ip,nw_src=10.244.0.2",
            "goto_table:50",
        ),
        installed(
            "IngressRule",
            T["IngressRule"],
            "policy",
            "policy/cnp/deny-y/ingress/0",
            "priority=1001,ip,nw_src=10.244.1.3",
            "conjunction(512,2/2)",
        ),
    ]


def test_the_tier_tables_have_names():
    assert [tables.name_of(i) for i in (38, 47, 58, 67)] == [
        "AdminEgressRule",
        "BaselineEgressRule",
        "AdminIngressRule",
        "BaselineIngressRule",
    ]
    text = flowview.render(flowview.name_rows(rows(), OWNERS, {}), stats=False)
    assert "\n[58] AdminIngressRule  — ClusterNetworkPolicy Admin tier" in text
    assert "\n[47] BaselineEgressRule  — ClusterNetworkPolicy Baseline tier" in text


def test_cnp_owners_are_named_with_tier_rule_name_and_action():
    cnps = flowview.cluster_policies(CLUSTER)
    assert sorted(cnps) == ["base", "deny-y"]  # the invalid one is left out
    named = flowview.name_rows(rows(), OWNERS, {}, cnps)
    assert [r["owner_name"] for r in named[1:4]] == [
        "cnp deny-y ingress rule 0 (Admin 'from-y': Deny)",
        "cnp deny-y ingress rule 1 (Admin: Pass)",
        "cnp base egress rule 0 (Baseline 'out': Accept)",
    ]
    # without /cluster: the owner's own label
    plain = flowview.name_rows(rows(), OWNERS, {})
    assert plain[1]["owner_name"] == "cnp deny-y ingress rule 0"
    # a rule index the policy does not have (changed meanwhile): the label alone
    assert flowview.owner_name("cnp/deny-y/ingress/7", "cnp", 1, {}, cnps) == (
        "cnp deny-y ingress rule 7"
    )


def test_policy_ref():
    assert flowview.policy_ref("cnp/deny-y") == ("cnp", "deny-y")
    assert flowview.policy_ref("x/web") == ("x", "web")
    assert flowview.policy_ref("web") == ("default", "web")
    assert flowview.policy_ref("cnp/") == ("cnp", "")  # no name: no ClusterNetworkPolicy


def test_filter_by_cnp_by_key_and_without_the_agent_by_id():
    named = flowview.name_rows(rows(), OWNERS, {})
    ids = set(flowview.cluster_policy_owners("deny-y"))
    got = flowview.select(named, policy=("cnp", "deny-y"), policy_ids=ids)
    assert [r["owner_key"] for r in got] == ["cnp/deny-y/ingress/0", "cnp/deny-y/ingress/1"]
    unnamed = flowview.name_rows(rows(), {}, {})
    got2 = flowview.select(unnamed, policy=("cnp", "deny-y"), policy_ids=ids)
    assert [r["match"] for r in got2] == [r["match"] for r in got]
    # a NetworkPolicy's flows are never a ClusterNetworkPolicy's, even by owner id
    np_ids = flowview.policy_owner_ids("cnp", "deny-y")
    assert flowview.select(unnamed, policy=("cnp", "deny-y"), policy_ids=np_ids) == []


def test_main_policy_cnp_with_the_agent(monkeypatch, capsys):
    view = {
        "round": 5,
        "owners": {f"{k:#x}": v for k, v in OWNERS.items()},
        "desired": [
            desired(
                r["table"],
                r["table_id"],
                r["owner"]["feature"],
                OWNERS.get(r["owner"]["owner"], "pipeline"),
                r["match"],
                r["actions"],
            )
            for r in rows()
        ],
    }
    asked = []

    def get(path, url=None, timeout=5.0):
        asked.append(path)
        return {"/flows": view, "/status": {"pods": []}, "/cluster": CLUSTER}[path]

    code, out, _ = run_main(monkeypatch, capsys, rows(), get=get, policy="cnp/deny-y")
    assert code == 0 and "/cluster" in asked
    assert [r["owner_name"] for r in json.loads(out)] == [
        "cnp deny-y ingress rule 0 (Admin 'from-y': Deny)",
        "cnp deny-y ingress rule 1 (Admin: Pass)",
    ]
    # --diff covers them: in sync, then one CNP flow missing and one changed
    monkeypatch.setattr(flowview.time, "sleep", lambda s: None)
    code, out, _ = run_main(monkeypatch, capsys, rows(), get=get, diff=True, json=False)
    assert (code, out) == (0, "")
    broken = rows()
    broken[2] = dict(broken[2], actions="drop")
    del broken[1]
    code, out, _ = run_main(
        monkeypatch, capsys, broken, get=get, diff=True, json=False, policy="cnp/deny-y"
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (
        "- [AdminIngressRule] priority=64000,conj_id=200,ip actions=drop  "
        "(cnp deny-y ingress rule 0 (Admin 'from-y': Deny): desired, not on the switch)"
    )
    assert lines[1] == "~ [AdminIngressRule] priority=63999,ip,nw_dst=10.244.0.2"
    assert "(cnp deny-y ingress rule 1 (Admin: Pass))" in lines[2]
    assert lines[-1] == "2 difference(s): 1 missing, 0 unexpected, 1 changed"
    # NS/NAME is the NetworkPolicy
    code, out, _ = run_main(monkeypatch, capsys, rows(), get=get, policy="x/deny-y")
    assert json.loads(out) == []


def test_main_policy_cnp_without_the_agent_names_the_owners_from_the_key_scheme(
    monkeypatch, capsys
):
    code, out, err = run_main(monkeypatch, capsys, rows(), policy="cnp/deny-y")
    assert code == 0 and "agent unreachable" in err
    assert [r["owner_name"] for r in json.loads(out)] == [
        "cnp deny-y ingress rule 0",
        "cnp deny-y ingress rule 1",
    ]
    code, out, err = run_main(monkeypatch, capsys, rows())
    names = [r["owner_name"] for r in json.loads(out)]
    assert f"cnp:{cookie.owner_id('cnp/base/egress/0'):#x}" in names
