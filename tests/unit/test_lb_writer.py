"""The LB pool's allocation reaching the Services: written to status.loadBalancer.ingress
through the Kubernetes API (the fake API server: GET + merge PATCH with the resourceVersion,
409 on a stale one) by the writer agent only, retried after failures; with a source that
cannot be written, used by the flows as computed."""

from __future__ import annotations

import types

import pytest

from flows.policy import View
from ovsctl.agent.reconcile import SkipLog, lbpool
from ovsctl.agent.reconcile.lbannounce import LBAnnouncer
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.k8s import apiclient
from ovsctl.k8s.apiclient import StatusConflict, make_api_client, write_lb_status
from ovsctl.k8s.model import parse
from ovsctl.lab.apiserver import FakeAPI
from ovsctl.util import wait_until

POOL = lbpool.parse_pool(["172.30.0.192/30", "fd00:172:30::c0/126"])


def service(name, cls=lbpool.LB_CLASS, type_="LoadBalancer", ingress=(), families=("IPv4",)):
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {
            "type": type_,
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:10:96::10"][: len(families)],
            "ipFamilies": list(families),
            "ipFamilyPolicy": "PreferDualStack" if len(families) > 1 else "SingleStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            **({"loadBalancerClass": cls} if cls else {}),
        },
    }
    if ingress:
        body["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in ingress]}}
    return body


def node(name, ready=True):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def cluster_of(api: FakeAPI) -> dict:
    out = {}
    for body in api.objects():
        obj = parse(body)
        out[obj.key] = obj
    return out


def ingress_of(api: FakeAPI, name: str) -> list[str]:
    obj = api.get("Service", name, "default") or {}
    return [e["ip"] for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get(
        "ingress", [])]  # fmt: skip


@pytest.fixture
def api():
    with FakeAPI() as a:
        yield a


def test_write_lb_status_patches_and_a_stale_resource_version_conflicts(api, monkeypatch):
    api.create(service("web"))
    client = make_api_client(host=api.url)
    write_lb_status(client, "default", "web", ("172.30.0.192",))
    assert ingress_of(api, "web") == ["172.30.0.192"]
    write_lb_status(client, "default", "web", (), expect=("172.30.0.192",))
    assert ingress_of(api, "web") == []
    write_lb_status(client, "default", "gone", ("172.30.0.192",))  # deleted: nothing to do
    # the Service changes between write_lb_status's GET and its PATCH (another writer): the
    # PATCH carries the GET's resourceVersion, the server answers 409, nothing is written
    real = apiclient._request

    def racing(client_, method, path, body=None, timeout=10.0):
        got = real(client_, method, path, body=body, timeout=timeout)
        if method == "GET":
            api.update(service("web", ingress=("172.30.0.195",)))
        return got

    monkeypatch.setattr(apiclient, "_request", racing)
    with pytest.raises(StatusConflict, match=r"default/web status: conflict \(HTTP 409\)"):
        write_lb_status(client, "default", "web", ("172.30.0.193",), expect=())
    assert ingress_of(api, "web") == ["172.30.0.195"]


def test_a_write_computed_from_a_stale_cache_is_refused(api):
    """The writer's cache lags the API: a Service's live status is not what the allocation
    was computed from. The write is refused (nothing renumbered) and the next round, from the
    newer state, writes what is right."""
    for body in (service("a"), service("b"), node("node1")):
        api.create(body)
    client = make_api_client(host=api.url)
    lb = LBAnnouncer(cluster_of(api), "node1", POOL,
                     lambda ns, n, ing, exp: write_lb_status(client, ns, n, ing, exp))  # fmt: skip
    # an earlier writer gave "a" .193 and "b" .192; this writer's cache has not seen it yet
    api.update(service("a", ingress=("172.30.0.193",)))
    api.update(service("b", ingress=("172.30.0.192",)))
    assert lb.write_once() >= 1  # refused (StatusConflict): the round stops
    assert ingress_of(api, "a") == ["172.30.0.193"]  # not renumbered to .192
    assert ingress_of(api, "b") == ["172.30.0.192"]
    lb.cluster.clear()
    lb.cluster.update(cluster_of(api))  # the events arrive
    assert lb.write_once() == 0
    assert ingress_of(api, "a") == ["172.30.0.193"] and ingress_of(api, "b") == ["172.30.0.192"]


def test_the_writer_remembers_its_writes_until_their_events_arrive(api):
    for body in (service("a"), node("node1")):
        api.create(body)
    client = make_api_client(host=api.url)
    calls = []

    def write(ns, n, ing, exp):
        calls.append((n, ing))
        write_lb_status(client, ns, n, ing, exp)

    lb = LBAnnouncer(cluster_of(api), "node1", POOL, write)
    assert lb.write_once() == 0
    assert calls == [("a", ("172.30.0.192",))]
    # a new Service before the first write's event: not written again, and .192 is taken
    api.create(service("c"))
    lb.cluster.update({k: v for k, v in cluster_of(api).items() if k[2] == "c"})
    assert lb.write_once() == 0
    assert calls[1:] == [("c", ("172.30.0.193",))]
    lb.cluster.clear()
    lb.cluster.update(cluster_of(api))  # the events arrive: nothing left to write
    assert lb.write_once() == 0 and len(calls) == 2 and lb._written == {}


def test_the_writer_agent_fills_frees_and_keeps(api):
    for body in (
        service("a-new", families=("IPv4", "IPv6")),
        service("b-kept", ingress=("172.30.0.194",)),
        service("c-left", cls=None, type_="ClusterIP", ingress=("172.30.0.195",)),
        service("d-cloud", cls="example.com/lb", ingress=("203.0.113.1",)),
        service("e-metallb", cls="metallb.io/lb", ingress=("172.30.0.193",)),
        node("node1"),
        node("node2"),
    ):
        api.create(body)
    client = make_api_client(host=api.url)
    lb = LBAnnouncer(cluster_of(api), "node1", POOL,
                     lambda ns, n, ing, exp: write_lb_status(client, ns, n, ing, exp))  # fmt: skip
    assert lb.write_once() == 0
    assert ingress_of(api, "a-new") == ["172.30.0.192", "fd00:172:30::c0"]
    assert ingress_of(api, "b-kept") == ["172.30.0.194"]
    assert ingress_of(api, "c-left") == []  # no longer a LoadBalancer: its address goes back
    assert ingress_of(api, "d-cloud") == ["203.0.113.1"]  # someone else's: untouched
    assert ingress_of(api, "e-metallb") == ["172.30.0.193"]  # an overlapping pool: untouched
    lb.cluster.clear()
    lb.cluster.update(cluster_of(api))
    assert lbpool.status_patches(lb.lb_services(), POOL) == {}  # nothing more to write


def test_only_the_lowest_named_ready_node_writes_and_failures_are_retried(api):
    api.create(service("web"))
    api.create(node("node1", ready=False))
    api.create(node("node2"))
    api.create(node("node3"))
    client = make_api_client(host=api.url)
    calls = []

    def flaky(me):
        def write(ns, name, ingress, expect):
            calls.append(me)
            if len(calls) == 1:
                raise StatusConflict("the object has been modified")
            write_lb_status(client, ns, name, ingress, expect)

        return write

    writers = {n: LBAnnouncer(cluster_of(api), n, POOL, flaky(n)) for n in ("node1", "node2",
                                                                           "node3")}  # fmt: skip
    try:
        for lb in writers.values():
            lb.start()
            lb.update(set(), {})
        wait_until(lambda: ingress_of(api, "web") == ["172.30.0.192"], 10, "the status write")
        assert len(calls) >= 2  # the conflict was retried
        assert set(calls) == {"node2"}  # node1 is NotReady: node2 is the lowest Ready one
    finally:
        for lb in writers.values():
            lb.stop()
    assert lbpool.writer({"node2": {4}, "node3": {4}}) == "node2"


def test_a_source_that_cannot_be_written_uses_the_computed_allocation():
    cluster = {}
    for body in (service("web", families=("IPv4", "IPv6")), service("api"), node("node1")):
        obj = parse(body)
        cluster[obj.key] = obj
    lb = LBAnnouncer(cluster, "node1", POOL, write_status=None)
    svcs = ServiceReconciler(cluster, "10.244.0.0/24", SkipLog(), node_name="node1",
                             pod_cidrs=("10.244.0.0/24", "fd00:10:244::/64"))  # fmt: skip
    svcs.lb_assignments = lb.assignments
    svcs.owners(View({}, [], {}))
    assert svcs.parsed["default/api"][0].lb_ingress == ("172.30.0.192",)
    assert svcs.parsed["default/web"][0].lb_ingress == ("172.30.0.193", "fd00:172:30::c0")
    assert "172.30.0.193" in svcs.external_addrs
    # deleting a Service frees its address; with nothing written, the allocation is computed
    # afresh (as every agent computes it): the Services after it move down (documented)
    del cluster[("Service", "default", "api")]
    svcs.owners(View({}, [], {}), everything=False)
    assert "172.30.0.193" not in svcs.external_addrs
    assert svcs.parsed["default/web"][0].lb_ingress == ("172.30.0.192", "fd00:172:30::c0")
    assert lb.announced(svcs.parsed) == [("172.30.0.192", None), ("fd00:172:30::c0", None)]


def test_the_policy_round_hands_the_external_addresses_to_the_host():
    from ovsctl.agent.pods import PodStore
    from ovsctl.agent.reconcile.policy import PolicyReconciler

    cluster = {}
    for body in (service("web"), node("node1")):
        obj = parse(body)
        cluster[obj.key] = obj
    lb = LBAnnouncer(cluster, "node1", POOL, write_status=None)
    svcs = ServiceReconciler(cluster, "10.244.0.0/24", SkipLog(), node_name="node1")
    svcs.lb_assignments = lb.assignments
    got = []
    pol = PolicyReconciler(cluster, PodStore(), svcs, SkipLog())
    pol.on_external = lambda addrs, parsed: got.append((set(addrs), sorted(parsed)))
    pol.sync = types.SimpleNamespace(set_owner=lambda owner, flows: None)
    pol.apply(push=False)
    assert got == [({"172.30.0.192"}, ["default/web"])]


def test_holders_only_on_nodes_not_excluded_and_of_their_pod_cidr_families():
    cluster = {}
    bodies = [node("node1"), node("node2"), node("node3")]
    bodies[0]["metadata"]["labels"] = {LBAnnouncer.EXCLUDE_LABEL: ""}
    bodies[1]["spec"] = {"podCIDRs": ["fd00:10:244:1::/64"]}  # an IPv4 InternalIP, IPv6 pods
    bodies[2]["spec"] = {"podCIDRs": ["10.244.2.0/24"]}
    for body in bodies:
        obj = parse(body)
        cluster[obj.key] = obj
    lb = LBAnnouncer(cluster, "node1", POOL)
    assert lb.ready_nodes() == {"node1": {4}, "node2": {6}, "node3": {4}}
    assert lb.eligible_nodes() == {"node2": {6}, "node3": {4}}
    assert lbpool.writer(lb.ready_nodes()) == "node1"  # excluded from holding, not writing
