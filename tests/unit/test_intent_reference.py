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
