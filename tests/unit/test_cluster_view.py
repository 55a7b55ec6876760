"""The agent's /cluster view lists ClusterNetworkPolicies (issue 17): the raw objects, sorted by
name, under "cluster_network_policies", beside the NetworkPolicies under "policies"."""

from __future__ import annotations

import json
import types

from ovsctl.agent.views import Views
from ovsctl.k8s.model import parse


def _cnp(name: str, tier: str = "Admin", priority: int = 10) -> dict:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, "labels": {"owner": "sec"}, "resourceVersion": "9"},
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"env": "prod"}}},
            "ingress": [{"name": "no-dev", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


NP = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "np", "namespace": "a"},
    "spec": {"podSelector": {}},
}


def _agent(*objs) -> types.SimpleNamespace:
    parsed = [parse(o) for o in objs]
    cfg = types.SimpleNamespace(node_name="node0", cluster_cidr="10.244.0.0/16", cluster_cidrs=())
    return types.SimpleNamespace(
        cluster={o.key: o for o in reversed(parsed)},  # not in key order
        pods={},
        node=None,
        overlay=None,
        cfg=cfg,
        node_ip="172.30.0.10",
        node_ips=("172.30.0.10",),
        pod_cidrs=("10.244.0.0/24",),
    )


def test_cluster_view_lists_cluster_network_policies_sorted_by_name():
    objs = [_cnp("zz-baseline", "Baseline", 1), _cnp("a.admin"), _cnp("m-admin", priority=0)]
    view = Views(_agent(NP, *objs)).cluster_view()
    cnps = view["cluster_network_policies"]
    assert [c["metadata"]["name"] for c in cnps] == ["a.admin", "m-admin", "zz-baseline"]
    first = cnps[0]
    assert first["kind"] == "ClusterNetworkPolicy"
    assert first["spec"] == _cnp("a.admin")["spec"], "the raw spec, as written"
    assert first["metadata"] == {"name": "a.admin", "labels": {"owner": "sec"}}
    assert [p["metadata"]["name"] for p in view["policies"]] == ["np"], "NetworkPolicies apart"
    json.dumps(view)  # served as JSON


def test_cluster_view_without_cluster_network_policies_has_an_empty_list():
    view = Views(_agent(NP)).cluster_view()
    assert view["cluster_network_policies"] == []
    assert len(view["policies"]) == 1
