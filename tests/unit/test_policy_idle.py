"""A new pod elsewhere recomputes only the policies that select a pod of this node: a policy
without one has no flows here whatever its peers are (the 50k-pod reaction bench's case)."""

from __future__ import annotations

from ovsctl.agent.pods import PodStore
from ovsctl.agent.reconcile.changes import Objects
from tests.unit.test_agent_reconcile import _attach, _full, _obj, _reconciler
from tests.unit.test_incremental import NS, pod_dict


def _policy(name: str, app: str):
    return _obj(
        {
            "metadata": {"name": name, "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"app": app}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "peer"}}}]}],
            },
        },
        "NetworkPolicy",
        "networking.k8s.io/v1",
    )


def test_a_peer_elsewhere_recomputes_only_policies_with_a_pod_here():
    cluster, store = Objects(), PodStore()
    for d in NS:
        o = _obj(d, "Namespace")
        cluster[o.key] = o
    here = _obj(pod_dict("x", "here", {"app": "here"}, "10.0.0.2"), "Pod")
    away = _obj(pod_dict("x", "away", {"app": "away"}, "10.0.1.2"), "Pod")
    for o in (here, away, _policy("for-here", "here"), _policy("for-away", "away")):
        cluster[o.key] = o
    _attach(store, here, 1)
    rec = _reconciler(cluster, store)
    first = rec.owners()
    assert {o for o, f in first.items() if f} == {"policy/x/for-here/isolation"}  # no peer yet
    peer = _obj(pod_dict("x", "peer", {"app": "peer"}, "10.0.1.3"), "Pod")
    cluster[peer.key] = peer
    again = rec.owners()
    assert {o.split("/")[2] for o in again} == {"for-here"}  # for-away: not recomputed
    assert any("nw_src=10.0.1.3" in str(f) for f in again["policy/x/for-here/ingress/0"])
    # and the same flows as a full recomputation
    kept = {**{o: f for o, f in first.items() if f}, **again}
    assert {o: f for o, f in kept.items() if f} == _full(cluster, store, rec.slots)

    # the other policy's pod comes to this node: it is asked about, and gets its flows
    _attach(store, away, 2)
    moved = rec.owners()
    assert "policy/x/for-away/ingress/0" in moved and moved["policy/x/for-away/ingress/0"]
