"""The multi-node lab with its state served through a Kubernetes API (list/watch) instead of the
YAML directory: the agents run the Kubernetes API source against the lab's API server, and the
probe matrices are the same as with the YAML source (checked against the reference evaluator,
as in test_netpol), for pods, policies and Services."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ovsctl.tools import agentclient
from tests.e2e import test_netpol as np
from tests.helpers import REPO, wait_for
from tests.netpol_reference import evaluate

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "x"},
    "spec": {
        "clusterIP": "10.96.0.40",
        "selector": {"pod": "a"},
        "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
    },
}


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(3, np.cluster_yaml() + "---\n" + yaml.safe_dump(SERVICE), source="api")


@pytest.fixture(scope="module")
def world(lab):
    ips = {(p["namespace"], p["name"]): p["ip"] for p in lab.status()["pods"]}
    nss = [{"metadata": {"name": ns, "labels": {"ns": ns}}} for ns in np.NAMESPACES]
    pods = [np.pod_doc(ns, p, {"pod": p}, ips[(ns, p)]) for ns in np.NAMESPACES for p in np.PODS]
    return {"namespaces": nss, "pods": pods, "ips": ips, "lab": lab}


def test_agents_watch_the_kubernetes_api(lab):
    for name in lab.meta()["nodes"]:
        st = agentclient.get("/status", lab.api_socket(name))  # the agent's unix socket
        assert st["source"]["kind"] == "api" and st["source"]["synced"], st["source"]
        assert st["ready"] == "ok"
        assert len(st["peers"]) == 2  # the other nodes, learnt from Node objects over the API


@pytest.mark.parametrize(
    "name", ["no-policy-allows-all", "namespace-selector", "ingress-and-egress-together"]
)
def test_probe_matrix_as_with_the_yaml_source(world, tmp_path, name):
    policies, rule = np.SCENARIOS[name]
    assert evaluate(world["namespaces"], world["pods"], policies) == np.matrix(rule)
    np.run_scenario(world, tmp_path, policies, rule)


def test_services_and_a_policy_change_arrive_over_the_api(world, tmp_path):
    lab = world["lab"]
    svc = {k: v for k, v in lab.probe(services=True).items() if "->svc:" in k}
    assert svc and all(svc.values()), svc
    deny = np.netpol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})
    f = np.apply(lab, tmp_path, [deny])
    try:

        def blocked():
            lab.flush_conntrack()
            res = lab.probe(timeout=1.0, services=True)
            return not any(v for k, v in res.items() if "->svc:" in k)  # x/a isolated

        wait_for(
            blocked, 20, interval=0.3, what="the Service blocked by a policy sent over the API"
        )
    finally:
        lab.delete([f], log=lambda *_: None)


def _cnp(priority: int, **spec) -> dict:
    """A ClusterNetworkPolicy whose subject selects no namespace: it reaches every agent without
    changing any verdict of the other tests."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "e2e-objects"},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"ns": "no-such-namespace"}}},
            **spec,
        },
    }


def _lab_cli(lab, command: str, path) -> subprocess.CompletedProcess:
    """`ovsctl lab apply|delete --name LAB -f PATH`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", command, "--name", lab.name, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def _views(lab) -> dict:
    """Each agent's ClusterNetworkPolicies and NetworkPolicy names, from its /cluster view."""
    out = {}
    for node in lab.meta()["nodes"]:
        view = agentclient.get("/cluster", lab.api_socket(node))
        pols = sorted(p["metadata"]["name"] for p in view["policies"])
        out[node] = (view["cluster_network_policies"], pols)
    return out


def _everywhere(lab, cnps: list[dict], policy: bool, what: str) -> None:
    want_pols = {"e2e-nothing"} if policy else set()

    def arrived():
        views = _views(lab)
        return all(
            [(c["metadata"]["name"], c["spec"]) for c in got]
            == [(c["metadata"]["name"], c["spec"]) for c in cnps]
            and want_pols == set(pols) - {"deny"}
            for got, pols in views.values()
        )

    wait_for(arrived, 30, interval=0.2, what=f"{what} in every agent's /cluster view")


def test_cluster_network_policies_are_applied_and_deleted_over_the_api(world, tmp_path):
    """`lab apply -f` takes a ClusterNetworkPolicy in a `kind: List` with another object and
    alone; re-applying the name replaces its spec; a namespace on it is refused naming the
    object and the field; `lab delete -f` removes it; every agent (API source) sees each step."""
    lab = world["lab"]
    nothing = np.netpol("e2e-nothing", "x", {"podSelector": {"matchLabels": {"pod": "none"}}})
    deny = {"action": "Deny", "from": [{"namespaces": {}}]}
    first = _cnp(5, ingress=[{"name": "deny-all", **deny}])
    listed = tmp_path / "list.yaml"
    listed.write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [nothing, first]})
    )
    res = _lab_cli(lab, "apply", listed)
    assert res.returncode == 0, res.stderr
    assert "clusternetworkpolicy/e2e-objects applied" in res.stdout, res.stdout
    try:
        _everywhere(lab, [first], True, "the policy and the NetworkPolicy of the List")

        second = _cnp(6, egress=[{"action": "Accept", "to": [{"networks": ["192.0.2.0/24"]}]}])
        alone = tmp_path / "cnp.yaml"
        alone.write_text(yaml.safe_dump(second))
        res = _lab_cli(lab, "apply", alone)
        assert res.returncode == 0, res.stderr
        _everywhere(lab, [second], True, "the re-applied spec (priority 6, egress only)")

        bad = _cnp(7)
        bad["metadata"]["namespace"] = "x"
        broken = tmp_path / "bad.yaml"
        broken.write_text(yaml.safe_dump(bad))
        res = _lab_cli(lab, "apply", broken)
        assert res.returncode == 1, res
        assert "ClusterNetworkPolicy e2e-objects: metadata.namespace: must not be set" in res.stderr
        _everywhere(lab, [second], True, "the last good spec, kept")
    finally:
        res = _lab_cli(lab, "delete", listed)
    assert res.returncode == 0, res.stderr
    assert "clusternetworkpolicy/e2e-objects deleted" in res.stdout, res.stdout
    _everywhere(lab, [], False, "no ClusterNetworkPolicy and no e2e NetworkPolicy")
