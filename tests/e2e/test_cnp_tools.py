"""The tools explain ClusterNetworkPolicy, in a 2-node lab (real OVS, real ofproto/trace, real
packets for the probe matrix).

Pods x/a (node0), y/b (node1), z/c (node0), TCP 80. Policies:
- deny-y (Admin, priority 10): x's ingress from y: Deny ("from-y")
- accept-y (Admin, priority 20): z's ingress from y: Accept ("y-in")
- pass-z (Admin, priority 30): x's ingress from z: Pass ("to-np"), then NetworkPolicy x/closed
  (isolates x for ingress, allows nothing)
- base-no-x (Baseline, priority 5): z's ingress from x: Deny ("no-x")

so each pair is decided by another tier: y/b->x/a Admin Deny, y/b->z/c Admin Accept, z/c->x/a
Admin Pass then NetworkPolicy, x/a->z/c Baseline Deny, x/a->y/b and z/c->y/b nothing (allowed).
`lab flows --policy cnp/NAME` shows that policy's flows with its owners named, `--diff` sees a
CNP flow deleted behind the agent's back, `lab trace` names the tier, policy, rule and action,
`lab reachability` and the node's `ovsctl reachability` show the tiers.
"""

from __future__ import annotations

import json

import pytest
import yaml

from ovsctl.lab.cli import in_node
from tests.e2e.test_audit import lab_cli
from tests.helpers import wait_for

NS_LABEL = "kubernetes.io/metadata.name"


def ns_sel(name: str) -> dict:
    return {"namespaces": {"matchLabels": {NS_LABEL: name}}}


def cnp(name, tier, priority, subject_ns, rule_name, action, from_ns) -> dict:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": ns_sel(subject_ns),
            "ingress": [{"name": rule_name, "action": action, "from": [ns_sel(from_ns)]}],
        },
    }


def pod(ns: str, name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ],
        },
    }


DOCS = [
    *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in "xyz"),
    pod("x", "a", "node0"),
    pod("y", "b", "node1"),
    pod("z", "c", "node0"),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "closed", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    },
    cnp("deny-y", "Admin", 10, "x", "from-y", "Deny", "y"),
    cnp("accept-y", "Admin", 20, "z", "y-in", "Accept", "y"),
    cnp("pass-z", "Admin", 30, "x", "to-np", "Pass", "z"),
    cnp("base-no-x", "Baseline", 5, "z", "no-x", "Deny", "x"),
]
# pair -> (reachable, tier)
WANT = {
    "x/a->y/b:80/TCP": (True, "default"),
    "x/a->z/c:80/TCP": (False, "Baseline"),
    "y/b->x/a:80/TCP": (False, "Admin"),
    "y/b->z/c:80/TCP": (True, "Admin"),
    "z/c->x/a:80/TCP": (False, "NetworkPolicy"),
    "z/c->y/b:80/TCP": (True, "default"),
}


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, yaml.safe_dump_all(DOCS))


def probed(lab) -> dict:
    lab.flush_conntrack()
    return lab.probe(timeout=1.0)


def test_the_probe_matrix_is_the_tiers_verdict(lab):
    want = {k: v for k, (v, _) in WANT.items()}
    last = {}

    def converged() -> bool:
        last.update(probed(lab))
        return last == want

    wait_for(converged, 30, what=f"the probe matrix {want}")


def test_lab_reachability_shows_the_deciding_tier(lab):
    p = lab_cli(lab, "reachability", "--json", "--tiers")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["differences"] == []
    assert rep["traced"] == {k: v for k, (v, _) in WANT.items()}
    assert rep["tiers"] == {k: t for k, (_, t) in WANT.items()}
    # --json alone keeps probe's shape
    plain = lab_cli(lab, "reachability", "--json")
    assert json.loads(plain.stdout) == rep["traced"]
    text = lab_cli(lab, "reachability").stdout
    assert "intended, by the tier that decided" in text
    assert "A Admin 2, N NetworkPolicy 1, B Baseline 1, . default 2" in text
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.startswith("y/b ")}
    assert rows["y/b"] == ["A", "-", "A"]  # the last matrix: x/a, y/b, z/c


def test_node_reachability_has_tiers_per_half(lab):
    r = in_node(lab, "node0", ["reachability", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["differences"] == []
    t = res["tiers"]
    assert t["y/b->x/a:80/TCP"] == "Admin"  # the ingress half, on node0
    assert t["x/a->z/c:80/TCP"] == "Baseline"  # both on node0
    assert t["z/c->x/a:80/TCP"] == "NetworkPolicy"
    assert t["x/a->y/b:80/TCP"] == "default"  # the egress half


def trace_json(lab, src: str, dst: str) -> dict:
    p = lab_cli(lab, "trace", src, dst, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_trace_names_an_admin_deny(lab):
    t = trace_json(lab, "y/b", "x/a")
    assert t["verdict"] == "dropped" and t["table"] == "AdminIngressRule"
    c = t["cluster_policy"]
    assert (c["tier"], c["policy"], c["priority"], c["rule"], c["rule_name"], c["action"]) == (
        "Admin",
        "deny-y",
        10,
        0,
        "from-y",
        "Deny",
    )
    assert t["ingress"]["status"] == "denied" and t["tiers"]["ingress"] == "Admin"
    assert t["intent"]["ingress"]["decided_by"]["policy"] == "deny-y"
    assert t["agrees_with_intent"] is True and t["tier_disagreements"] == []
    text = lab_cli(lab, "trace", "y/b", "x/a").stdout
    assert (
        "dropped in AdminIngressRule by ClusterNetworkPolicy deny-y (Admin, priority 10) "
        "ingress rule 0 'from-y': Deny"
    ) in text
    assert "!!" not in text


def test_trace_names_an_admin_accept_and_a_baseline_deny(lab):
    t = trace_json(lab, "y/b", "z/c")
    assert t["verdict"] == "delivered"
    assert t["ingress"]["status"] == "accepted"
    assert t["ingress"]["cnp"]["policy"] == "accept-y" and t["ingress"]["cnp"]["action"] == "Accept"
    assert t["tiers"] == {"egress": "default", "ingress": "Admin"}
    assert t["tier_disagreements"] == []
    t = trace_json(lab, "x/a", "z/c")
    assert t["verdict"] == "dropped" and t["table"] == "BaselineIngressRule"
    assert t["cluster_policy"]["policy"] == "base-no-x"
    assert t["cluster_policy"]["tier"] == "Baseline"
    assert (
        "ClusterNetworkPolicy base-no-x (Baseline, priority 5) ingress rule 0 'no-x': Deny"
        in (t["reason"])
    )
    assert t["agrees_with_intent"] is True and t["tier_disagreements"] == []


def test_trace_names_an_admin_pass_and_the_networkpolicy_after_it(lab):
    t = trace_json(lab, "z/c", "x/a")
    assert t["verdict"] == "dropped" and t["table"] == "IngressDefault"
    assert t["policy"] == "x/closed" and t["cluster_policy"] is None
    ing = t["ingress"]
    assert ing["status"] == "dropped" and ing["cnp_passed"]["policy"] == "pass-z"
    assert ing["cnp_passed"]["action"] == "Pass" and ing["cnp_passed"]["rule_name"] == "to-np"
    assert t["tiers"]["ingress"] == "NetworkPolicy"
    assert t["intent"]["ingress"]["passed"]["policy"] == "pass-z"
    assert t["tier_disagreements"] == []
    text = lab_cli(lab, "trace", "z/c", "x/a").stdout
    assert "NetworkPolicy x/closed" in text
    assert "ClusterNetworkPolicy pass-z (Admin, priority 30) ingress rule 0 'to-np': Pass" in text


def test_flows_of_one_cnp_named_and_diffed(lab):
    p = lab_cli(lab, "flows", "node0", "--policy", "cnp/deny-y", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert rows and {r["owner_key"] for r in rows} == {"cnp/deny-y/ingress/0"}
    assert {r["table"] for r in rows} == {"AdminIngressRule"}
    assert {r["owner_name"] for r in rows} == {"cnp deny-y ingress rule 0 (Admin 'from-y': Deny)"}
    # --policy NS/NAME is still a NetworkPolicy
    closed = json.loads(lab_cli(lab, "flows", "node0", "--policy", "x/closed", "--json").stdout)
    assert closed and all(r["owner_key"].startswith("policy/x/closed/") for r in closed)
    # every dump names them, and the tier tables by name
    text = lab_cli(lab, "flows", "node0", "--no-stats").stdout
    for table in ("AdminEgressRule", "AdminIngressRule", "BaselineEgressRule"):
        assert f"] {table}  — " in text
    assert "cnp base-no-x ingress rule 0 (Baseline 'no-x': Deny)" in text
    wait_for(lambda: lab_cli(lab, "flows", "node0", "--diff").returncode == 0, 15, what="in sync")
    # a CNP flow deleted behind the agent's back: --diff names it
    conj = next(r for r in rows if "conj_id=" in r["match"])
    node0 = lab.ovs("node0")
    node0.ofctl("del-flows", "--strict", "br-int", f"table={conj['table_id']},{conj['match']}")
    try:
        d = lab_cli(lab, "flows", "node0", "--diff", "--policy", "cnp/deny-y")
        assert d.returncode == 1, d.stdout + d.stderr
        assert d.stdout.splitlines()[0] == (
            f"- [AdminIngressRule] {conj['match']} actions={conj['actions']}  "
            "(cnp deny-y ingress rule 0 (Admin 'from-y': Deny): desired, not on the switch)"
        )
    finally:
        node0.ofctl(
            "add-flow",
            "br-int",
            f"cookie={conj['cookie']},table={conj['table_id']},{conj['match']},"
            f"actions={conj['actions']}",
        )
    assert lab_cli(lab, "flows", "node0", "--diff", "--policy", "cnp/deny-y").returncode == 0
