"""The reconciler's ClusterNetworkPolicy cache (agent/reconcile/policy.py) gives exactly what a
full recomputation gives after every step of a random sequence of changes (pods, attachments,
namespace labels, node labels, ClusterNetworkPolicies added, removed, re-prioritised), and one
invalid policy is logged, installs nothing and stops no other."""

from __future__ import annotations

import copy
import logging
import random

import pytest

from ovsctl.agent.pods import PodStore
from ovsctl.agent.reconcile.changes import Objects
from tests.cnp_reference import random_case
from tests.unit.test_agent_reconcile import _attach, _full, _obj, _reconciler
from tests.unit.test_incremental import NS, pod_dict

API = "policy.networking.k8s.io/v1alpha2"
LABELS = [{"app": "a"}, {"app": "b"}, {"app": "a", "tier": "t"}, {}]


def _node(name: str, ip: str, labels: dict):
    return _obj(
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        },
        "Node",
    )


def _cnp(d: dict):
    return _obj(d, "ClusterNetworkPolicy", API)


@pytest.mark.parametrize("tracked", [False, True], ids=["dict", "tracked"])
@pytest.mark.parametrize("seed", range(30))
def test_cluster_policy_cache_equals_a_full_recomputation(seed, tracked):
    rng = random.Random(seed)
    dicts = [
        pod_dict(ns, f"p{i}", rng.choice(LABELS), f"10.0.{j}.{i + 2}")
        for j, ns in enumerate(("x", "y", "z"))
        for i in range(3)
    ]
    cluster: dict = Objects() if tracked else {}  # see test_agent_reconcile.py
    store = PodStore()
    for n in NS:
        o = _obj(copy.deepcopy(n), "Namespace")
        cluster[o.key] = o
    nodes = [_node(f"n{i}", f"192.168.1.{i + 1}", {"zone": "ab"[i]}) for i in range(2)]
    for o in nodes:
        cluster[o.key] = o
    bodies: dict = {}
    for i, d in enumerate(dicts):
        o = _obj(copy.deepcopy(d), "Pod")
        cluster[o.key], bodies[o.key] = o, d
        if i % 2 == 0:
            _attach(store, o, i)
    node_dicts = [
        {
            "metadata": {"name": o.name, "labels": o.labels_dict()},
            "status": {"addresses": [{"type": "InternalIP", "address": o.internal_ip}]},
        }
        for o in nodes
    ]
    nps, cnps = random_case(seed, NS, dicts, node_dicts)
    for p in nps:
        o = _obj(p, "NetworkPolicy", "networking.k8s.io/v1")
        cluster[o.key] = o
    pool = [_cnp(c) for c in cnps]
    for o in pool:
        cluster[o.key] = o
    inc = _reconciler(cluster, store)
    state: dict = {}

    def step(what: str) -> None:
        for owner, flows in inc.owners().items():
            if flows:
                state[owner] = flows
            else:
                state.pop(owner, None)
        assert state == _full(cluster, store, inc.slots), f"seed {seed}: stale after {what}"

    step("start")
    for n in range(14):
        kind = rng.choice(
            ["labels", "ip", "ports", "local", "unplug", "ns", "node", "cnp", "prio", "audit"]
        )
        pods = [k for k in cluster if k[0] == "Pod"]
        if kind in ("labels", "ip", "ports"):
            d = copy.deepcopy(bodies[rng.choice(pods)])
            if kind == "labels":
                d["metadata"]["labels"] = rng.choice(LABELS)
            elif kind == "ip":
                d["status"]["podIP"] = f"10.0.{rng.randint(0, 6)}.{n + 20}"
            else:  # named ports resolve against container ports
                d["spec"]["containers"][0]["ports"] = [
                    {"name": rng.choice(["http", "dns", "alt"]), "containerPort": rng.choice([80, 81, 53]),
                     "protocol": rng.choice(["TCP", "UDP"])}
                ]  # fmt: skip
            o = _obj(d, "Pod")
            cluster[o.key], bodies[o.key] = o, d
        elif kind == "local":
            _attach(store, cluster[rng.choice(pods)], 100 + n)
        elif kind == "unplug" and store.pods:
            store.forget(rng.choice(sorted(store.pods)))
        elif kind == "ns":
            d = copy.deepcopy(rng.choice(NS))
            d["metadata"]["labels"] = {"team": rng.choice(["red", "blue", "green"])}
            o = _obj(d, "Namespace")
            cluster[o.key] = o
        elif kind == "node":
            o = _node(rng.choice(["n0", "n1"]), f"192.168.1.{rng.randint(1, 3)}",
                      {"zone": rng.choice("abc")})  # fmt: skip
            cluster[o.key] = o
        elif kind == "cnp":
            have = [k for k in cluster if k[0] == "ClusterNetworkPolicy"]
            if have and rng.random() < 0.5:
                cluster.pop(rng.choice(have))
            else:
                o = rng.choice(pool)
                cluster[o.key] = o
        elif kind == "audit":  # audited flows send to the controller first
            o = rng.choice(pool)
            d = copy.deepcopy(o.obj())
            ann = d["metadata"].setdefault("annotations", {})
            ann["ovsctl.io/audit"] = rng.choice(["true", "false"])
            o = _cnp(d)
            cluster[o.key] = o
        else:  # another priority for one policy: its flows and maybe others' move
            o = rng.choice(pool)
            d = copy.deepcopy(o.obj())
            d["spec"]["priority"] = rng.choice([0, 5, 10, 999])
            o = _cnp(d)
            cluster[o.key] = o
        step(kind)


def test_an_invalid_cluster_policy_installs_nothing_and_stops_no_other(caplog):
    cluster: dict = {}
    store = PodStore()
    for n in NS:
        o = _obj(copy.deepcopy(n), "Namespace")
        cluster[o.key] = o
    pod = _obj(pod_dict("x", "p0", {"app": "a"}, "10.0.0.2"), "Pod")
    cluster[pod.key] = pod
    _attach(store, pod, 0)

    def cnp(name, tier):
        return _cnp(
            {
                "metadata": {"name": name},
                "spec": {
                    "tier": tier,
                    "priority": 1,
                    "subject": {"namespaces": {}},
                    "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
                },
            }
        )

    for o in (cnp("bad", "Middle"), cnp("good", "Admin")):
        cluster[o.key] = o
    with caplog.at_level(logging.WARNING):
        owners = _reconciler(cluster, store).owners()
    assert owners["cnp/good/ingress/0"]
    assert not [o for o in owners if o.startswith("cnp/bad/")]
    assert "ClusterNetworkPolicy bad: spec.tier: 'Middle' is not Admin or Baseline" in caplog.text
