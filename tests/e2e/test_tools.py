"""`trace` and `reachability` in the lab, against the probe matrix (real packets).

A 3-node lab with test_netpol's namespaces x, y, z and pods a, b, c (TCP 80, 81, UDP 53). For
six of test_netpol's scenarios: apply the policies, converge the probe matrix to the scenario's
expected one, then

- `lab.reachability()` (ofproto/trace of every pair on every port, no packet sent) equals the
  probe matrix, and the intended matrix has no differences;
- for every pod pair on 80/TCP, the trace's verdict (delivered/dropped) is the probe's, and a
  dropped pair names a policy that isolates the destination (ingress) or the source (egress),
  and the isolating set it lists is all of them; an allowed pair into an isolated pod names a
  rule of a policy isolating it. The expected sets come from the scenario's policies through
  the reference evaluator's selector code, not from the product.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ovsctl.lab.cli import in_node
from tests.e2e.test_netpol import (
    NAMESPACES,
    PODS,
    SCENARIOS,
    apply,
    cluster_yaml,
    converge,
    diff,
    matrix,
)
from tests.netpol_reference import policy_types, selector_matches

CHOSEN = [
    "deny-all-ingress",
    "deny-all-egress",
    "pod-and-namespace-selector-combined",
    "named-port",
    "union-of-two-policies",
    "ingress-and-egress-together",
]


@pytest.fixture(scope="module")
def tlab(make_lab):
    return make_lab(3, cluster_yaml())


def isolating(policies: list[dict], ns: str, pod: str, direction: str) -> set[str]:
    """ns/name of the scenario's policies isolating pod ns/pod for direction (Ingress/Egress);
    test_netpol's pods are labelled {pod: NAME}."""
    return {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in policies
        if p["metadata"]["namespace"] == ns
        and direction in policy_types(p)
        and selector_matches(p["spec"].get("podSelector"), {"pod": pod})
    }


@pytest.mark.parametrize("name", CHOSEN, ids=CHOSEN)
def test_trace_and_reachability_match_the_probe(tlab, tmp_path, name):
    policies, rule = SCENARIOS[name]
    want = matrix(rule)
    f = apply(tlab, tmp_path, policies)
    try:
        probed = converge(tlab, want)
        assert probed == want, diff(probed, want)

        rep = tlab.reachability_report()
        assert rep["traced"] == probed, "reachability vs probe: " + diff(rep["traced"], probed)
        assert rep["differences"] == []
        assert tlab.reachability() == probed

        tracer = tlab.tracer()
        try:
            for sn in NAMESPACES:
                for sp in PODS:
                    for dn in NAMESPACES:
                        for dp in PODS:
                            if (sn, sp) == (dn, dp):
                                continue
                            key = f"{sn}/{sp}->{dn}/{dp}:80/TCP"
                            t = tracer.trace(f"{sn}/{sp}", f"{dn}/{dp}", "tcp", 80)
                            check_trace(t, key, probed[key], policies)
        finally:
            tracer.close()
    finally:
        if policies:
            tlab.delete([f], log=lambda *_: None)


def check_trace(t, key: str, reachable: bool, policies: list[dict]) -> None:
    sn, sp = t.src.label.split("/")
    dn, dp = t.dst.label.split("/")
    iso = {
        "ingress": isolating(policies, dn, dp, "Ingress"),
        "egress": isolating(policies, sn, sp, "Egress"),
    }
    where = f"{key}: {t.verdict} {t.reason}"
    assert t.verdict == ("delivered" if reachable else "dropped"), where
    assert t.reached is reachable, where
    assert t.agrees() is True, where
    if reachable:
        assert t.delivered_pod == t.dst.label, where
        for d in ("ingress", "egress"):
            chk = t.checks[d]
            assert set(chk.get("isolated_by") or []) == iso[d], where
            if iso[d]:  # an isolated direction let it through: a rule of an isolating policy
                assert chk["status"] == "allowed", where
                assert chk["allowed_by"][0]["policy"] in iso[d], where
            else:
                assert chk["status"] == "not-isolated", where
        return
    assert t.table in ("IngressDefault", "EgressDefault"), where
    d = "ingress" if t.table == "IngressDefault" else "egress"
    assert t.direction == d, where
    assert t.policy in iso[d], f"{where}: expected one of {sorted(iso[d])}"
    assert set(t.isolated_by) == iso[d], where
    assert t.reason.endswith("no rule allowed it"), where
    # the node that dropped it is the isolated pod's node
    pod = t.dst if d == "ingress" else t.src
    assert t.node == pod.node, where


def test_the_commands(tlab, tmp_path):
    """The CLI: `lab reachability --json` is probe's shape, `lab trace` names the policy, and
    the node commands (`ovsctl reachability` / `trace` inside a node, as on a real node) trace
    their half of each pair."""
    policies, rule = SCENARIOS["ingress-and-egress-together"]
    want = matrix(rule)
    f = apply(tlab, tmp_path, policies)
    try:
        probed = converge(tlab, want)
        assert probed == want, diff(probed, want)
        base = ["lab"]
        cli = [sys.executable, "-m", "ovsctl.cli"]
        p = subprocess.run(
            cli + base + ["reachability", "--name", tlab.name, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == probed
        p = subprocess.run(
            cli + base + ["reachability", "--name", tlab.name],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0 and "differences: none" in p.stdout, p.stdout + p.stderr

        p = subprocess.run(
            cli + base + ["trace", "--name", tlab.name, "z/a", "x/a"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert "verdict: DROPPED" in p.stdout and "NetworkPolicy x/both" in p.stdout, p.stdout
        assert "no rule allowed it" in p.stdout

        p = subprocess.run(
            cli + base + ["trace", "--name", tlab.name, "x/a", "z/b", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        t = json.loads(p.stdout)
        assert t["verdict"] == "delivered" and len(t["hops"]) == 2
        assert t["egress"]["allowed_by"][0]["policy"] == "x/both"

        nodes = {p["name"]: p["node"] for p in tlab.status()["pods"] if p["namespace"] == "x"}
        node = nodes["a"]
        r = in_node(tlab, node, ["reachability", "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["node"] == node and res["differences"] == []
        for k, v in res["traced"].items():
            if res["scope"][k] == "full":
                assert v == probed[k], k
            elif not v:  # a half that blocks blocks the whole path
                assert probed[k] is False, k
        assert {res["scope"][k] for k in res["traced"]} == {"full", "egress", "ingress"}
    finally:
        tlab.delete([f], log=lambda *_: None)
