"""The API watcher and ClusterNetworkPolicy, a kind served by a CustomResourceDefinition that a
cluster may not have installed (or that the agent's ClusterRole may not grant yet).

Against the fake API server over real HTTP, as tests/unit/test_api_source.py; waits are polls
with deadlines.
"""

from __future__ import annotations

import copy
import logging

import pytest

from ovsctl.k8s.source import ADDED, MODIFIED
from ovsctl.lab.apiserver import FakeAPI
from ovsctl.util import wait_until
from tests.unit.test_api_source import (
    LOGGER,
    SAMPLES,
    T,
    all_watching,
    model,
    pod,
    source_factory,
    start,
    summary,
)


@pytest.fixture
def api():
    with FakeAPI() as a:
        yield a


@pytest.fixture
def make_source():
    with source_factory() as make:
        yield make


KIND = "ClusterNetworkPolicy"
CRD_FILE = "manifests/05-clusternetworkpolicy-crd.yaml"
N_KINDS = len(SAMPLES)


def cnp(name: str = "deny-metadata", priority: int = 10, **meta) -> dict:
    obj = copy.deepcopy(SAMPLES[KIND])
    obj["metadata"] = {"name": name, **meta}
    obj["spec"]["priority"] = priority
    return obj


def key(name: str = "deny-metadata") -> tuple[str, str, str]:
    return (KIND, "", name)


def warnings(caplog, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and needle in r.getMessage()
    ]


def others(api) -> None:
    for kind, obj in SAMPLES.items():
        if kind != KIND:
            api.create(obj)


def test_without_the_crd_every_other_kind_works_and_installing_it_takes_effect(
    api, make_source, caplog
):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    api.unserve(KIND, 404)
    others(api)
    src = make_source(api, crd_retry=0.05)
    rec = start(src)
    # the initial snapshot did not wait for the missing kind
    assert sorted(k for _, k in summary(rec.batches[0])) == sorted(
        model(o).key for k, o in SAMPLES.items() if k != KIND
    )
    assert src.unserved == {KIND: 404}
    all_watching(api, N_KINDS - 1)
    # listed again and again (every crd_retry), logged once, naming the manifest to apply
    wait_until(lambda: len(api.list_requests(KIND)) >= 4, T, "lists of the missing kind")
    said = warnings(caplog, "ClusterNetworkPolicy: GET /apis/policy.networking.k8s.io/v1alpha2/")
    assert len(said) == 1, said
    assert "HTTP 404" in said[0] and f"kubectl apply -f {CRD_FILE}" in said[0], said[0]
    assert "the other kinds are watched as usual" in said[0]
    # the other kinds are watched meanwhile
    n = rec.count()
    api.create(pod("p2", "10.244.1.6"))
    wait_until(lambda: rec.count() > n, T, "the new pod")
    assert summary(rec.since(n)) == [(ADDED, ("Pod", "a", "p2"))]

    # the CRD is installed and a policy created: it arrives, without a restart
    api.serve(KIND)
    n = rec.count()
    api.create(cnp())
    wait_until(lambda: key() in rec.snapshot(), T, "the ClusterNetworkPolicy")
    assert summary(rec.since(n)) == [(ADDED, key())]
    assert src.unserved == {}
    assert any("ClusterNetworkPolicy: served now" in r.getMessage() for r in caplog.records)
    all_watching(api, N_KINDS)
    n = rec.count()
    api.update(cnp(priority=20))
    wait_until(lambda: rec.count() > n, T, "the modification")
    assert summary(rec.since(n)) == [(MODIFIED, key())]
    assert rec.snapshot()[key()].obj()["spec"]["priority"] == 20


def test_deleting_the_crd_removes_its_policies_until_it_is_back(api, make_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.create(cnp())
    api.create(cnp("other", 5))
    src = make_source(api, crd_retry=0.05)
    rec = start(src)
    assert set(rec.snapshot()) == {key(), key("other")}
    all_watching(api)
    api.unserve(KIND, 404)  # the CRD is deleted (and with it its objects): the watch ends
    wait_until(lambda: not rec.snapshot(), T, "the policies to go")
    assert src.objects() == {}
    assert len(warnings(caplog, CRD_FILE)) == 1
    api.create(pod("p1", "10.244.1.5"))  # the others carry on
    wait_until(lambda: ("Pod", "a", "p1") in rec.snapshot(), T, "the pod")
    api.serve(KIND)
    api.create(cnp("again"))
    wait_until(lambda: key("again") in rec.snapshot(), T, "the new policy")
    assert {k for k in rec.snapshot() if k[0] == KIND} == {key("again")}


def test_forbidden_kind_is_empty_at_start_and_kept_once_known(api, make_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.create(cnp())
    api.unserve(KIND, 403)  # an old ClusterRole: the agent may not list the kind
    others(api)
    src = make_source(api, crd_retry=0.05)
    rec = start(src)
    assert key() not in rec.snapshot() and len(rec.snapshot()) == N_KINDS - 1
    (said,) = warnings(caplog, "HTTP 403")
    assert "kubectl apply -f manifests/01-rbac.yaml" in said and "clusternetworkpolicies" in said
    assert src.unserved == {KIND: 403}
    api.serve(KIND)  # the ClusterRole is updated
    wait_until(lambda: key() in rec.snapshot(), T, "the policy once granted")
    all_watching(api)
    # forbidden again after it was known: its last objects stay (RBAC changed, not the policy)
    caplog.clear()
    api.unserve(KIND, 403)
    wait_until(lambda: warnings(caplog, "keeping the last 1 ClusterNetworkPolicy"), T, "the log")
    assert key() in src.objects() and key() in rec.snapshot()
    api.serve(KIND)
    wait_until(lambda: not src.unserved, T, "served again")
    api.update(cnp(priority=30))
    wait_until(lambda: rec.snapshot()[key()].obj()["spec"]["priority"] == 30, T, "the modification")


def test_a_built_in_kind_is_not_optional(api, make_source):
    """Only CRD kinds may be missing: a 404 of a built-in collection still holds the initial
    snapshot back (retried with backoff), as before."""
    api.unserve("NetworkPolicy", 404)
    src = make_source(api, crd_retry=0.05)
    rec = []
    src.start(rec.append)
    wait_until(lambda: len(api.list_requests("NetworkPolicy")) >= 3, T, "the retries")
    assert not src.synced() and rec == [] and src.unserved == {}
    api.serve("NetworkPolicy")
    assert src.wait_synced(T)


def test_malformed_policies_are_skipped_naming_the_object_and_field(api, make_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.create(cnp("scoped", namespace="a"))  # a namespace on a cluster-scoped kind
    api.create(cnp())
    src = make_source(api)
    rec = start(src)
    assert summary(rec.batches[0]) == [(ADDED, key())]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "ClusterNetworkPolicy scoped: metadata.namespace: must not be set" in m for m in errors
    ), errors
    all_watching(api)
    bad = cnp("v1alpha1")
    bad["apiVersion"] = "policy.networking.k8s.io/v1alpha1"
    api.create(bad)
    api.create(cnp("later"))
    wait_until(lambda: key("later") in rec.snapshot(), T, "the good policy")
    assert key("v1alpha1") not in rec.snapshot()
    assert any(
        "ClusterNetworkPolicy v1alpha1: apiVersion: must be 'policy.networking.k8s.io/v1alpha2'"
        in r.getMessage()
        for r in caplog.records
    )
