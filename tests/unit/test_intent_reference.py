"""The intent `reachability` shows (ovsctl/intent.py) against the independent reference
evaluator (tests/netpol_reference.py), on the same random cases the flows are checked on
(tests/unit/test_policy_flows.py): both go through netpol's one peer/port implementation, the
reference through none of it."""

from __future__ import annotations

import pytest

from flows.intent import Intents, pairs, probe_key
from tests.netpol_reference import evaluate, random_case
from tests.unit.test_policy_flows import _diff, _world_dicts

PORTS = {("y", "b"): (("http", 8080, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))}


def _view(nss: list[dict], pods: list[dict], policies: list[dict]) -> dict:
    """The agent's /cluster shape for the reference's namespaces and pods."""
    return {
        "namespaces": [
            {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels") or {}}
            for n in nss
        ],
        "pods": [
            {
                "namespace": p["metadata"]["namespace"],
                "name": p["metadata"]["name"],
                "ip": p["status"]["podIP"],
                "labels": p["metadata"].get("labels") or {},
                "ports": [
                    [cp.get("name", ""), cp["containerPort"], cp.get("protocol", "TCP")]
                    for c in p["spec"]["containers"]
                    for cp in c.get("ports") or []
                ],
            }
            for p in pods
        ],
        "nodes": [],
        "policies": policies,
    }


@pytest.mark.parametrize("seed", range(60))
def test_intent_matches_the_reference_on_random_policies(seed):
    nss, pods = _world_dicts(PORTS)
    policies = random_case(seed, nss, pods)
    intents = Intents(_view(nss, pods, policies))
    assert not intents.errors
    got = {
        probe_key(src, dst, port, proto): intents.evaluate(src, dst, port, proto).allowed
        for src, dst, port, proto in pairs(intents.pods)
    }
    want = evaluate(nss, pods, policies)
    assert got == want, f"seed {seed}: {policies}\n" + _diff(got, want)


# -- dual-stack: the intent per family against the reference per family (issue 16) ----------


def _dual_view(nss, pods, policies) -> dict:
    v = _view(nss, pods, policies)
    for vp, p in zip(v["pods"], pods, strict=True):
        vp["ips"] = [e["ip"] for e in p["status"]["podIPs"]]
    return v


@pytest.mark.parametrize("seed", range(60))
def test_dual_stack_intent_matches_the_reference_on_both_families(seed):
    """Random policies with IPv4 and IPv6 ipBlocks over dual-stack pods: the intent of each
    family is the reference's; for the selector-only ones the two families agree."""
    from tests.unit.test_policy_flows_v6 import _dual_world_dicts, _has_ip_block

    nss, pods = _dual_world_dicts(PORTS)
    policies = random_case(seed, nss, pods)
    intents = Intents(_dual_view(nss, pods, policies))
    assert not intents.errors
    got = {}
    for fam in (4, 6):
        got[fam] = {
            probe_key(src, dst, port, proto): intents.evaluate(src, dst, port, proto, fam).allowed
            for src, dst, port, proto in pairs(intents.pods, family=fam)
        }
        want = evaluate(nss, pods, policies, family=fam)
        assert got[fam] == want, f"seed {seed} IPv{fam}: {policies}\n" + _diff(got[fam], want)
    if not _has_ip_block(policies):
        assert got[4] == got[6]


def test_intent_family_of_plain_ips_and_addresses():
    from tests.unit.test_policy_flows_v6 import _dual_world_dicts, v6

    nss, pods = _dual_world_dicts(PORTS)
    ip4 = pods[0]["status"]["podIP"]
    pol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": f"{v6(ip4)}/128"}}]}],
        },
    }
    intents = Intents(_dual_view(nss, pods, [pol]))
    a, b = intents.pod("x/a"), intents.pod("x/b")
    assert a.ip == ip4 and a.ip_of(6) == v6(ip4) and intents.by_ip[v6(ip4)] is a
    # the IPv6 block admits x/a's IPv6 address only
    assert intents.evaluate(a, b, 80, "TCP", 6).allowed
    assert not intents.evaluate(a, b, 80, "TCP", 4).allowed
    assert not intents.evaluate(a, b, 80, "TCP").allowed  # default: the source's first (IPv4)
    # plain addresses name their family
    assert intents.evaluate(v6(ip4), b.ip_of(6), 80, "TCP").allowed
    assert not intents.evaluate(ip4, b.ip, 80, "TCP").allowed
    assert intents.evaluate(v6(ip4), b, 80, "TCP").ingress.allowed_by == (("x/p", 0),)
    with pytest.raises(ValueError, match="not 4 or 6"):
        intents.evaluate(a, b, 80, "TCP", 5)


def test_own_node_is_always_allowed_on_both_families():
    view = {
        "namespaces": [{"name": "x"}],
        "nodes": [
            {
                "name": "n1",
                "ip": "192.168.0.2",
                "ips": ["192.168.0.2", "fd00:192::2"],
                "pod_cidr": "10.244.1.0/24",
                "pod_cidrs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
            }
        ],
        "pods": [
            {
                "namespace": "x",
                "name": "a",
                "ip": "10.244.1.5",
                "ips": ["10.244.1.5", "fd00:10:244:1::5"],
                "node": "n1",
                "ports": [["", 80, "TCP"]],
            }
        ],  # fmt: skip
        "policies": [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "x"},
                "spec": {"podSelector": {}},
            }
        ],
    }
    intents = Intents(view)
    for src in ("fd00:10:244:1::1", "fd00:192::2", "10.244.1.1", "192.168.0.2"):
        assert intents.evaluate(src, "fd00:10:244:1::5", 80, "TCP").allowed, src
    assert not intents.evaluate("fd00:10:244:1::7", "fd00:10:244:1::5", 80, "TCP").allowed


def test_pairs_per_family_leave_out_pods_without_that_family():
    view = {
        "pods": [
            {"namespace": "x", "name": "a", "ip": "10.0.0.1", "ips": ["10.0.0.1", "fd00::1"],
             "ports": [["", 80, "TCP"]]},
            {"namespace": "x", "name": "b", "ip": "10.0.0.2", "ports": [["", 80, "TCP"]]},
            {"namespace": "x", "name": "c", "ips": ["fd00::3"], "ports": [["", 80, "TCP"]]},
        ]
    }  # fmt: skip
    intents = Intents(view)
    keys = {f: [probe_key(*t) for t in pairs(intents.pods, family=f)] for f in (4, 6)}
    assert keys[4] == ["x/a->x/b:80/TCP", "x/b->x/a:80/TCP"]
    assert keys[6] == ["x/a->x/c:80/TCP", "x/c->x/a:80/TCP"]
    assert len(list(pairs(intents.pods))) == 6  # no family: every pod, as before
    assert intents.pod("x/c").ip == "fd00::3"
