"""flows/incremental.py: recomputing only the policies a pod change may affect gives exactly
the flows a full recomputation gives (checked over random policies and pod changes)."""

from __future__ import annotations

import random

import pytest

from flows import incremental, netpol, policy
from tests.netpol_reference import random_case

NS = [
    {"metadata": {"name": n, "labels": {"team": t}}}
    for n, t in (("x", "red"), ("y", "blue"), ("z", "red"))
]


def pod_dict(ns: str, name: str, labels: dict, ip: str) -> dict:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {
            "containers": [
                {
                    "ports": [
                        {"name": "http", "containerPort": 80, "protocol": "TCP"},
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    ]
                }
            ]
        },
        "status": {"podIP": ip},
    }


def info(d: dict, local: bool) -> policy.PodInfo:
    m = d["metadata"]
    ports = tuple(
        (p["name"], p["containerPort"], p["protocol"]) for p in d["spec"]["containers"][0]["ports"]
    )
    return policy.PodInfo(
        m["namespace"], m["name"], tuple(sorted(m["labels"].items())), d["status"]["podIP"],
        ports, local=local,
    )  # fmt: skip


def view_of(pods: list[policy.PodInfo]) -> policy.View:
    ns = {
        n["metadata"]["name"]: {**n["metadata"]["labels"], "kubernetes.io/metadata.name": n["metadata"]["name"]}
        for n in NS
    }  # fmt: skip
    return policy.View(ns, sorted(pods, key=lambda p: (p.namespace, p.name)))


def flows_of(pols, view) -> dict:
    slots: dict[str, int] = {}
    out = {}
    for pol in pols:
        out[pol.key] = policy.policy_flows(pol, view, lambda o: slots.setdefault(o, len(slots)))
    return out


def _strip_slots(owner_flows: dict) -> dict:
    # slots differ between a cached and a fresh computation only in numbering; compare the
    # match/action shape without priorities and conjunction ids
    out = {}
    for owner, flows in owner_flows.items():
        out[owner] = sorted(
            (f.table, f.match, tuple(type(a).__name__ for a in f.actions)) for f in flows
        )
    return out


LABELS = [{"app": "a"}, {"app": "b"}, {"app": "a", "tier": "t"}, {}]


def _case(seed: int) -> tuple:
    """(rng, label sets, nine pod dicts in x/y/z, random parsed policies) for a seed."""
    rng = random.Random(seed)
    dicts = [
        pod_dict(ns, f"p{i}", rng.choice(LABELS), f"10.0.{j}.{i + 2}")
        for j, ns in enumerate(("x", "y", "z"))
        for i in range(3)
    ]
    return rng, LABELS, dicts, [netpol.parse(d) for d in random_case(seed, NS, dicts)]


@pytest.mark.parametrize("seed", range(300))
def test_unaffected_policies_keep_exactly_their_flows(seed):
    rng, labels, dicts, pols = _case(seed)
    before = [info(d, local=rng.random() < 0.5) for d in dicts]
    # one pod changes: labels, IP, locality, or it goes away / a new one comes
    i = rng.randrange(len(before))
    old = before[i]
    kind = rng.choice(["labels", "ip", "local", "gone", "new"])
    after = list(before)
    new = None
    if kind == "labels":
        new = policy.PodInfo(old.namespace, old.name, tuple(sorted(rng.choice(labels).items())), old.ip, old.ports, old.local)  # fmt: skip
    elif kind == "ip":
        new = policy.PodInfo(old.namespace, old.name, old.labels, "10.9.9.9", old.ports, old.local)
    elif kind == "local":
        new = policy.PodInfo(old.namespace, old.name, old.labels, old.ip, old.ports, not old.local)
    if kind == "gone":
        after.pop(i)
    elif kind == "new":
        new = policy.PodInfo(rng.choice("xyz"), "fresh", (("app", "a"),), "10.8.8.8", old.ports, True)  # fmt: skip
        old = None
        after.append(new)
    else:
        after[i] = new
    full_before = flows_of(pols, view_of(before))
    full_after = flows_of(pols, view_of(after))
    ns_labels = view_of(after).ns_labels
    for pol in pols:
        if not (
            incremental.affects(pol, old, ns_labels) or incremental.affects(pol, new, ns_labels)
        ):
            assert _strip_slots(full_before[pol.key]) == _strip_slots(full_after[pol.key]), (
                f"{pol.key} changed although the {kind} change of a pod was said not to affect it"
            )


def test_a_pod_elsewhere_does_not_affect_a_namespace_local_policy():
    pol = netpol.parse(
        {
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
        }
    )
    other = policy.PodInfo("y", "q", (), "10.0.1.2")
    same = policy.PodInfo("x", "q", (), "10.0.0.2")
    assert not incremental.affects(pol, other, lambda ns: {})
    assert incremental.affects(pol, same, lambda ns: {})
    assert not incremental.affects(pol, None, lambda ns: {})


@pytest.mark.parametrize("seed", range(200))
def test_the_index_names_every_policy_a_pod_affects(seed):
    """incremental.Index.candidates is a superset of the policies `affects` says yes for, as
    policies come, change and go (what lets the agent ask only those)."""
    rng, labels, dicts, pols = _case(seed)
    pods = [info(d, local=rng.random() < 0.5) for d in dicts]
    pods.append(policy.PodInfo("w", "elsewhere", (("app", "a"),), "10.7.7.7", local=True))
    index = incremental.Index()
    filed: dict = {}
    ns_labels = view_of(pods).ns_labels
    for _ in range(6):
        for pol in rng.sample(pols, k=min(len(pols), 3)):  # filed, or filed again
            index.add(pol.key, pol)
            filed[pol.key] = pol
        if filed and rng.random() < 0.3:
            gone = rng.choice(sorted(filed))
            index.remove(gone)
            del filed[gone]
        assert len(index) == len(filed)
        for pod in pods:
            want = {k for k, pol in filed.items() if incremental.affects(pol, pod, ns_labels)}
            assert want <= index.candidates(pod, ns_labels), (seed, pod)
        # no pod (a pair's absent side) affects nothing
        assert index.candidates(None, ns_labels) == set()
