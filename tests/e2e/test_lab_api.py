"""The multi-node lab with its state served through a Kubernetes API (list/watch) instead of the
YAML directory: the agents run the Kubernetes API source against the lab's API server, and the
probe matrices are the same as with the YAML source (checked against the reference evaluator,
as in test_netpol), for pods, policies and Services."""

from __future__ import annotations

import pytest
import yaml

from ovsctl.tools import agentclient
from tests.e2e import test_netpol as np
from tests.helpers import wait_for
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
