"""The reference ClusterNetworkPolicy evaluator (tests/cnp_reference.py) against the upstream
conformance scenarios of conformance/base/api_integration/standard-anp-np-banp.yaml, and its random
case generator (deterministic, valid, exercising every feature). Hand-made cases are in
test_cnp_reference.py."""

from __future__ import annotations

import json

import yaml

from tests import cnp_reference as ref
from tests.unit.test_cnp_reference import namespaces, nodes, pods

# -- upstream conformance: api_integration/standard-anp-np-banp.yaml -------------------------

HOUSES = {
    "gryffindor": "harry-potter",
    "slytherin": "draco-malfoy",
    "hufflepuff": "cedric-diggory",
    "ravenclaw": "luna-lovegood",
}
# a copy of conformance/base/api_integration/standard-anp-np-banp.yaml (policy-api v0.2.0)
ANP_NP_BANP = """
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pass-example}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-all-ingress-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
  egress:
  - {name: deny-all-egress-to-slytherin, action: Deny, to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-gress-from-to-slytherin-to-gryffindor, namespace: network-policy-conformance-gryffindor}
spec:
  podSelector:
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]
  egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default}
spec:
  tier: Baseline
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-all-ingress-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
  egress:
  - {name: deny-all-egress-to-slytherin, action: Deny, to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
"""


def conformance_world():
    nss = [
        {
            "metadata": {
                "name": f"network-policy-conformance-{h}",
                "labels": {"conformance-house": h},
            }
        }
        for h in HOUSES
    ]
    plist = []
    for i, (house, pod) in enumerate(HOUSES.items()):
        for j in range(2):
            plist.append(
                {
                    "metadata": {
                        "namespace": f"network-policy-conformance-{house}",
                        "name": f"{pod}-{j}",
                        "labels": {"conformance-house": house},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "s",
                                "ports": [
                                    {"containerPort": 80, "protocol": "TCP", "name": "web"},
                                    {"containerPort": 53, "protocol": "UDP", "name": "dns"},
                                ],
                            }
                        ]
                    },
                    "status": {"podIP": f"10.244.{i}.{j + 10}"},
                }
            )
    objs = list(yaml.safe_load_all(ANP_NP_BANP))
    return (
        nss,
        plist,
        [o for o in objs if o["kind"] == "NetworkPolicy"],
        [o for o in objs if o["kind"] != "NetworkPolicy"],
    )


def poke(world, src, dst, port, proto="TCP") -> bool:
    """PokeServer: `port` need not be a declared containerPort (the tests probe 8080 too)."""
    nss, plist, nps, cnps = world
    by = {p["metadata"]["name"]: p for p in plist}
    return ref.explain(nss, plist, nps, cnps, by[src], by[dst], port, proto)["allowed"]


def test_conformance_admin_tier_integration():
    world = conformance_world()
    nss, plist, nps, cnps = world
    assert all(not ref.problems(c) for c in cnps) and len(nps) == 1 and len(cnps) == 2
    # "Should Deny traffic from slytherin to gryffindor respecting admin CNP", and the egress one
    assert not poke(world, "draco-malfoy-0", "harry-potter-0", 80)
    assert not poke(world, "draco-malfoy-1", "harry-potter-0", 8080)
    assert not poke(world, "harry-potter-0", "draco-malfoy-0", 80)
    assert not poke(world, "harry-potter-1", "draco-malfoy-0", 8080)
    # the NetworkPolicy isolates gryffindor both ways: other houses neither in nor out
    assert not poke(world, "cedric-diggory-0", "harry-potter-0", 80)
    assert not poke(world, "harry-potter-0", "luna-lovegood-1", 53, "UDP")
    assert poke(world, "cedric-diggory-0", "luna-lovegood-0", 80)
    # "Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy"
    cnps[0]["spec"]["ingress"][0]["action"] = "Pass"
    assert poke(world, "draco-malfoy-0", "harry-potter-0", 80)
    assert poke(world, "draco-malfoy-1", "harry-potter-0", 8080)
    assert not poke(world, "harry-potter-0", "draco-malfoy-0", 80)  # egress still Denied
    # "... 'pass-egress' ... respect the match for network policy"
    cnps[0]["spec"]["egress"][0]["action"] = "Pass"
    assert poke(world, "harry-potter-0", "draco-malfoy-0", 80)
    assert poke(world, "harry-potter-1", "draco-malfoy-0", 8080)
    # "... 'pass-ingress' / 'pass-egress' ... respect the match for baseline cluster network
    # policy": the NetworkPolicy deleted, the Baseline Deny decides
    nps.clear()
    for src, dst, port in [
        ("draco-malfoy-0", "harry-potter-0", 80),
        ("draco-malfoy-1", "harry-potter-0", 8080),
        ("harry-potter-0", "draco-malfoy-0", 80),
        ("harry-potter-1", "draco-malfoy-0", 8080),
    ]:
        assert not poke(world, src, dst, port), (src, dst, port)
    assert poke(world, "cedric-diggory-0", "harry-potter-0", 80)  # nobody isolates it now
    got = ref.evaluate(nss, plist, nps, cnps)
    assert {k for k, v in got.items() if not v} == {
        f"network-policy-conformance-{a}/{pa}-{i}->network-policy-conformance-{b}/{pb}-{j}:{port}"
        for a, pa, b, pb in [
            ("slytherin", "draco-malfoy", "gryffindor", "harry-potter"),
            ("gryffindor", "harry-potter", "slytherin", "draco-malfoy"),
        ]
        for i in range(2)
        for j in range(2)
        for port in ("80/TCP", "53/UDP")
    }


# -- random cases ---------------------------------------------------------------------------

EXTERNALS = [("8.8.8.8", 53, "UDP"), ("1.1.1.1", 443, "TCP"), ("2001:db8::1", 443, "TCP")]


def test_random_case_is_deterministic_valid_and_does_not_mutate():
    nss, plist, nds = namespaces(), pods(), nodes()
    before = json.dumps([nss, plist, nds], sort_keys=True)
    for seed in range(60):
        a = ref.random_case(seed, nss, plist, nds, EXTERNALS)
        b = ref.random_case(seed, nss[::-1], plist[::-1], nds[::-1], EXTERNALS[::-1])
        assert a == b
        nps, cnps = a
        assert 0 <= len(nps) <= 3 and 1 <= len(cnps) <= 4
        assert all(ref.problems(c) == [] for c in cnps), [ref.problems(c) for c in cnps]
        assert len({c["metadata"]["name"] for c in cnps}) == len(cnps)
    assert json.dumps([nss, plist, nds], sort_keys=True) == before


WORDS = (
    '"Admin"',
    '"Baseline"',
    '"Pass"',
    '"namespaces"',
    '"pods"',
    '"networks"',
    '"nodes"',
    "0.0.0.0/0",
    "::/0",
    '"number"',
    '"range"',
    "destinationNamedPort",
    '"tcp"',
    '"udp"',
    '"sctp"',
    "domainNames",
)


def test_random_cases_exercise_every_feature():
    """Every feature is drawn, and decides connections: each tier and action, Admin Pass."""
    nss, plist, nds = namespaces(), pods(), nodes()
    seen: set[str] = set()
    for seed in range(200):
        nps, cnps = ref.random_case(seed, nss, plist, nds, EXTERNALS, unknown_peers=seed % 2 == 0)
        seen.add(f"nps={len(nps)}")
        seen.add(f"cnps={len(cnps)}")
        keys = [(c["spec"]["tier"], c["spec"]["priority"]) for c in cnps]
        if len(set(keys)) < len(keys):
            created = [c["metadata"]["name"] for c in cnps]
            seen.add("tie-reordered" if created != sorted(created) else "tie")
        text = json.dumps(cnps)
        seen.update(w for w in WORDS if w in text)
        for found in ref.decisions(nss, plist, nps, cnps, nds).values():
            for d in (found["egress"], found["ingress"]):
                seen.add(f"{d['tier']}:{d['action'] or d['allowed']}")
                if d["passed"]:
                    seen.add("admin-passed")
        out = ref.evaluate_egress(nss, plist, nps, cnps, nds, EXTERNALS + ref.node_targets(nds))
        seen.add("external-denied" if not all(out.values()) else "external-allowed")
    want = {f"nps={n}" for n in range(4)} | {f"cnps={n}" for n in range(1, 5)} | set(WORDS)
    want |= {f"{t}:{a}" for t in ("Admin", "Baseline") for a in ("Accept", "Deny")}
    want |= {"NetworkPolicy:True", "NetworkPolicy:False", "default:True", "admin-passed"}
    want |= {"tie-reordered", "external-denied", "external-allowed"}
    assert want <= seen, want - seen
    nps, cnps = ref.random_case(1, nss, plist, nds, EXTERNALS)
    assert "domainNames" not in json.dumps(cnps)
