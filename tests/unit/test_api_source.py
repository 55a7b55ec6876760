"""Unit tests for ovsctl.k8s.apisource.APISource, against the fake API server in ovsctl/lab/apiserver.py.

Everything runs over real HTTP on 127.0.0.1 through the official kubernetes client. Waits are
polls with deadlines (ovsctl.util.wait_until); nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import socket
import subprocess
import threading

import pytest
import yaml

from ovsctl.k8s.apisource import RESOURCES, APISource, make_api_client
from ovsctl.k8s.model import ACCEPTED_KINDS, parse
from ovsctl.k8s.source import (
    ADDED,
    DELETED,
    MODIFIED,
    Event,
    YAMLDirSource,
    apply_events,
    sort_events,
)
from ovsctl.lab.apiserver import FakeAPI
from ovsctl.util import wait_until

LOGGER = "ovsctl.k8s.apisource"
T = 10.0  # every wait's deadline (s); the tests normally take a fraction of it

# One valid object of every kind, as the API server would hold it.
SAMPLES: dict[str, dict] = {
    "Namespace": {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "a", "labels": {"team": "x"}},
    },
    "Node": {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node1", "labels": {"zone": "z1"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]},
    },
    "NetworkPolicy": {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "a"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    },
    "ClusterNetworkPolicy": {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "deny-metadata"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}],
        },
    },
    "Service": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "a"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    },
    "EndpointSlice": {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abcde",
            "namespace": "a",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.244.1.5"],
                "conditions": {"ready": True},
                "nodeName": "node1",
                "targetRef": {"kind": "Pod", "namespace": "a", "name": "p1"},
            }
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    },
    "Pod": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "a", "uid": "uid-p1", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node1",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
    },
}


def pod(name: str, ip: str | None = None, node: str = "node1", ns: str = "a", **labels) -> dict:
    d: dict = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running"},
    }
    if ip:
        d["status"]["podIP"] = ip
    return d


def relabel(obj: dict, **labels) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"].setdefault("labels", {}).update(labels)
    return obj


def model(obj: dict):
    return parse(obj)


def summary(events) -> list[tuple[str, tuple]]:
    return [(e.type, e.key) for e in events]


class Recorder:
    """The handler: records batches and keeps the view they build."""

    def __init__(self):
        self.lock = threading.Lock()
        self.batches: list[list[Event]] = []
        self.view: dict = {}

    def __call__(self, events):
        with self.lock:
            self.batches.append(list(events))
            apply_events(self.view, events)

    def count(self) -> int:
        with self.lock:
            return len(self.batches)

    def since(self, n: int) -> list[Event]:
        """Every event of the batches after the first n."""
        with self.lock:
            return [e for b in self.batches[n:] for e in b]

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.view)


def server_view(api: FakeAPI) -> dict:
    out = {}
    for o in api.objects():
        m = model(o)
        out[m.key] = m
    return out


def converge(rec: Recorder, api: FakeAPI, what: str = "the view to match the server") -> None:
    wait_until(lambda: rec.snapshot() == server_view(api), T, what)


@pytest.fixture
def api():
    with FakeAPI() as a:
        yield a


@contextlib.contextmanager
def source_factory():
    """make(api_or_url, **options) -> a new APISource (test timings), stopped on exit."""
    made: list[APISource] = []

    def make(api_or_url, **kw) -> APISource:
        url = api_or_url if isinstance(api_or_url, str) or api_or_url is None else api_or_url.url
        opts = {
            "host": url,
            "watch_timeout": 60,
            "resync_period": 0,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
            "request_timeout": 5,
        }
        opts.update(kw)
        src = APISource(**opts)
        made.append(src)
        return src

    try:
        yield make
    finally:
        for s in made:
            s.stop()


@pytest.fixture
def make_source():
    with source_factory() as make:
        yield make


def start(src: APISource) -> Recorder:
    rec = Recorder()
    src.start(rec)
    assert src.wait_synced(T), "no initial snapshot"
    return rec


def all_watching(api: FakeAPI, n: int = len(ACCEPTED_KINDS)) -> None:
    wait_until(lambda: api.open_watches() == n, T, f"{n} open watches")


def disconnect(api: FakeAPI) -> None:
    """Every watch dropped, and new ones refused (HTTP 503) until reconnect(api)."""
    all_watching(api)
    api.watches_available = False
    api.drop_watches()


def reconnect(api: FakeAPI) -> None:
    api.watches_available = True


# --------------------------------------------------------------------------- snapshot


def test_resources_are_the_real_collection_paths():
    assert {k: r.path for k, r in RESOURCES.items()} == {
        "Namespace": "/api/v1/namespaces",
        "Node": "/api/v1/nodes",
        "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
        "ClusterNetworkPolicy": "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies",
        "Service": "/api/v1/services",
        "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices",
        "Pod": "/api/v1/pods",
    }


def test_initial_snapshot_is_one_sorted_batch_of_every_kind(api, make_source):
    for obj in SAMPLES.values():
        api.create(obj)
    api.create(pod("p2", "10.244.1.6"))
    src = make_source(api)
    rec = start(src)
    expected = sort_events(Event(ADDED, model(o)) for o in api.objects())
    assert len(expected) == len(SAMPLES) + 1
    assert rec.batches == [expected]
    assert src.synced()
    assert src.objects() == server_view(api)
    # every kind was listed exactly once, then watched from the list's resourceVersion
    rv = str(api.resource_version)
    for kind in ACCEPTED_KINDS:
        assert len(api.list_requests(kind)) == 1
        assert src.resource_version[kind] == rv
        assert src.relists_total[kind] == 0
    all_watching(api)
    w = api.watch_requests("Pod")[0]
    assert w["resourceVersion"] == rv and w["allowWatchBookmarks"] == "true"
    assert w["timeoutSeconds"] == "60"


def test_initial_snapshot_of_an_empty_cluster_is_an_empty_batch(api, make_source):
    src = make_source(api)
    rec = start(src)
    assert rec.batches == [[]]
    assert src.objects() == {}


def test_lists_are_paged(api, make_source):
    for i in range(5):
        api.create(pod(f"p{i}", f"10.244.1.{10 + i}"))
    src = make_source(api, page_size=2)
    rec = start(src)
    assert [e.key for e in rec.batches[0]] == [("Pod", "a", f"p{i}") for i in range(5)]
    lists = api.list_requests("Pod")
    assert [q.get("limit") for q in lists] == ["2", "2", "2"]
    assert [bool(q.get("continue")) for q in lists] == [False, True, True]


# --------------------------------------------------------------------------- incremental


@pytest.mark.parametrize("kind", ACCEPTED_KINDS)
def test_incremental_added_modified_deleted(api, make_source, kind):
    src = make_source(api)
    rec = start(src)
    all_watching(api)
    obj = SAMPLES[kind]

    api.create(obj)
    wait_until(lambda: rec.count() == 2, T, "ADDED")
    assert rec.batches[1] == [Event(ADDED, model(obj))]

    changed = relabel(obj, rev="2")
    api.update(changed)
    wait_until(lambda: rec.count() == 3, T, "MODIFIED")
    assert rec.batches[2] == [Event(MODIFIED, model(changed))]

    # a write that leaves the model object unchanged (only resourceVersion moves) is no event:
    # the DELETED that follows on the same stream is the next batch
    api.update(changed)
    api.delete(kind, obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
    wait_until(lambda: rec.count() == 4, T, "DELETED")
    assert rec.batches[3] == [Event(DELETED, model(changed))]
    assert src.objects() == {}
    assert src.events_total[kind] == 4  # received from the server, no-op included
    assert src.resource_version[kind] == str(api.resource_version)


def test_field_selector_narrows_pods(api, make_source):
    api.create(pod("mine", "10.244.1.5", node="node1"))
    api.create(pod("other", "10.244.2.5", node="node2"))
    src = make_source(api, pod_field_selector="spec.nodeName=node1")
    rec = start(src)
    assert summary(rec.batches[0]) == [(ADDED, ("Pod", "a", "mine"))]
    all_watching(api)
    api.create(pod("other2", "10.244.2.6", node="node2"))
    api.create(pod("mine2", "10.244.1.6", node="node1"))
    wait_until(lambda: rec.count() == 2, T, "the node1 pod")
    assert summary(rec.batches[1]) == [(ADDED, ("Pod", "a", "mine2"))]
    assert all(q.get("fieldSelector") == "spec.nodeName=node1" for q in api.watch_requests("Pod"))
    assert not any("fieldSelector" in q for q in api.watch_requests("Node"))


# --------------------------------------------------------------------------- disconnections


def test_no_event_is_lost_across_a_dropped_watch(api, make_source):
    p1, p2 = pod("p1", "10.244.1.1"), pod("p2", "10.244.1.2")
    api.create(p1)
    api.create(p2)
    src = make_source(api)
    rec = start(src)
    rv = src.resource_version["Pod"]
    disconnect(api)
    seen = len(api.watch_requests("Pod"))

    # changes while the source is disconnected (and its watches are refused)
    api.create(pod("p3", "10.244.1.3"))
    api.update(relabel(p1, rev="2"))
    api.delete("Pod", "p2", "a")
    api.create(SAMPLES["Node"])
    wait_until(lambda: len(api.watch_requests("Pod")) >= seen + 2, T, "failed watch attempts")
    assert rec.count() == 1  # nothing could arrive meanwhile

    reconnect(api)
    converge(rec, api)
    assert sorted(summary(rec.since(1))) == sorted(
        [
            (ADDED, ("Pod", "a", "p3")),
            (MODIFIED, ("Pod", "a", "p1")),
            (DELETED, ("Pod", "a", "p2")),
            (ADDED, ("Node", "", "node1")),
        ]
    )
    # the watches resumed where they stopped: no relist, every retry from the same version
    assert src.relists_total == dict.fromkeys(ACCEPTED_KINDS, 0)
    assert {q["resourceVersion"] for q in api.watch_requests("Pod")} == {rv}


@pytest.mark.parametrize("compacted", [False, True], ids=["replayed", "relisted"])
def test_object_deleted_while_disconnected_is_removed(api, make_source, compacted):
    api.create(pod("p1", "10.244.1.1"))
    api.create(pod("p2", "10.244.1.2"))
    src = make_source(api)
    rec = start(src)
    disconnect(api)
    api.delete("Pod", "p1", "a")
    if compacted:  # the DELETED event is gone from the history: only a relist can see it
        api.compact()
    reconnect(api)
    converge(rec, api)
    assert rec.since(1) == [Event(DELETED, model(pod("p1", "10.244.1.1")))]
    assert ("Pod", "a", "p1") not in src.objects()
    assert src.relists_total["Pod"] == (1 if compacted else 0)


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
def test_410_relist_converges_and_emits_only_real_differences(make_source, gone_as_http):
    with FakeAPI(gone_as_http=gone_as_http) as api:
        pods = {f"p{i}": pod(f"p{i}", f"10.244.1.{i}") for i in range(1, 5)}
        for p in pods.values():
            api.create(p)
        api.create(SAMPLES["Node"])
        src = make_source(api)
        rec = start(src)
        disconnect(api)

        api.update(relabel(pods["p1"], rev="2"))  # a real change
        api.delete("Pod", "p2", "a")  # a deletion
        api.create(pod("p5", "10.244.1.5"))  # an addition
        api.update(pods["p3"])  # a write that changes nothing we model
        api.update(SAMPLES["Node"])  # likewise, on another kind
        api.compact()  # too late to replay: every watch now gets 410 Gone
        reconnect(api)

        wait_until(
            lambda: all(n == 1 for n in src.relists_total.values()), T, "every kind relisted"
        )
        converge(rec, api)
        assert sorted(summary(rec.since(1))) == sorted(
            [
                (MODIFIED, ("Pod", "a", "p1")),
                (DELETED, ("Pod", "a", "p2")),
                (ADDED, ("Pod", "a", "p5")),
            ]
        )
        assert src.objects() == server_view(api)


def test_410_error_event_during_a_watch_relists(api, make_source):
    p1 = pod("p1", "10.244.1.1")
    api.create(p1)
    src = make_source(api)
    rec = start(src)
    all_watching(api)
    api.apply(relabel(p1, rev="2"), silent=True)  # a change no watch hears about
    api.watch_error(410, kinds={"Pod"})
    wait_until(lambda: src.relists_total["Pod"] == 1, T, "the Pod relist")
    converge(rec, api)
    assert rec.since(1) == [Event(MODIFIED, model(relabel(p1, rev="2")))]
    assert src.relists_total["Node"] == 0


def test_other_watch_error_reconnects_without_relisting(api, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = make_source(api)
    rec = start(src)
    all_watching(api)
    rv = src.resource_version["Pod"]
    assert api.watch_error(500, kinds={"Pod"}, message="etcd hiccup") == 1
    all_watching(api)
    api.create(pod("p1", "10.244.1.1"))
    converge(rec, api)
    assert src.relists_total["Pod"] == 0
    assert [q["resourceVersion"] for q in api.watch_requests("Pod")] == [rv, rv]
    assert any("etcd hiccup" in r.getMessage() for r in caplog.records)


def test_bookmarks_advance_the_resource_version(api, make_source):
    api.create(SAMPLES["Node"])
    src = make_source(api)
    rec = start(src)
    all_watching(api)
    node_rv = src.resource_version["Node"]
    api.create(pod("p1", "10.244.1.1"))
    api.create(pod("p2", "10.244.1.2"))
    converge(rec, api)
    delivered = rec.count()
    newest = str(api.resource_version)
    assert src.resource_version["Pod"] == newest
    assert src.resource_version["Node"] == node_rv != newest  # Nodes saw no event

    assert api.bookmark(kinds={"Node"}) == 1
    wait_until(lambda: src.resource_version["Node"] == newest, T, "the bookmark")

    # what bookmarks are for: after the history is compacted, a watch that resumes from a
    # bookmarked version needs no relist; one without (Namespaces, Services, ...) does
    api.compact()
    api.drop_watches()
    others = [k for k in ACCEPTED_KINDS if k not in ("Node", "Pod")]
    wait_until(lambda: all(src.relists_total[k] == 1 for k in others), T, "the 410 relists")
    all_watching(api)
    assert src.relists_total["Node"] == 0 and src.relists_total["Pod"] == 0
    assert api.watch_requests("Node")[-1]["resourceVersion"] == newest
    assert rec.count() == delivered  # nothing changed, so nothing was delivered


def test_periodic_resync_repairs_a_lost_event_and_emits_only_differences(api, make_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    p1 = pod("p1", "10.244.1.1")
    api.create(p1)
    api.create(SAMPLES["Namespace"])
    src = make_source(api, resync_period=0.2)
    rec = start(src)
    api.apply(relabel(p1, rev="2"), silent=True)  # no watch hears about it
    wait_until(lambda: rec.count() == 2, T, "the resync to find the change")
    before = src.relists_total["Pod"]
    wait_until(lambda: src.relists_total["Pod"] > before, T, "one more resync")
    assert rec.batches[1:] == [[Event(MODIFIED, model(relabel(p1, rev="2")))]]
    assert src.relists_total["Namespace"] >= 1
    # the watches ended in time for the resync: timeoutSeconds <= the resync period (1 s min)
    assert {q["timeoutSeconds"] for q in api.watch_requests("Pod")} == {"1"}
    assert any("periodic resync" in r.getMessage() for r in caplog.records)


def test_reconnect_backoff_doubles_to_the_cap_and_resets(api, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = make_source(api, kinds=["Pod"], backoff_initial=0.01, backoff_max=0.04)
    rec = start(src)
    all_watching(api, 1)

    def delays():
        return [
            r.getMessage().rsplit(" in ", 1)[1]
            for r in caplog.records
            if r.getMessage().startswith("Pod: ")
        ]

    api.watches_available = False
    api.drop_watches()
    wait_until(lambda: len(delays()) >= 5, T, "five reconnect attempts")
    assert delays()[:5] == ["0.01s", "0.02s", "0.04s", "0.04s", "0.04s"]
    api.watches_available = True
    api.create(pod("p1", "10.244.1.1"))
    converge(rec, api)
    n = len(delays())
    api.drop_watches()  # after a watch that worked, the backoff starts over
    wait_until(lambda: len(delays()) > n, T, "the next reconnect")
    assert delays()[n] == "0.01s"


def test_watches_ended_early_and_empty_back_off(api, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = make_source(api, kinds=["Node"], backoff_initial=0.01, backoff_max=0.04)
    start(src)
    # the watch is open before the server starts misbehaving (set first, a watch that began
    # late ended at once and "one open watch" was seldom seen on a loaded machine)
    all_watching(api, 1)
    api.watch_seconds_cap = 0  # a misbehaving proxy: every watch ends at once, cleanly
    api.end_watches()

    def early():
        return [r.getMessage() for r in caplog.records if "ended the watch early" in r.getMessage()]

    def backoffs() -> list[float]:
        return [float(m.rsplit(" in ", 1)[1].rstrip("s")) for m in early()]

    # doubling from 0.01 s up to the 0.04 s cap; a watch that delivered something before the
    # server began misbehaving may reset it once to the start (seen on a loaded machine)
    wait_until(lambda: backoffs().count(0.04) >= 2, T, "early ends backed off up to the cap")
    seq = backoffs()
    assert seq[0] == 0.01
    assert all(b == min(2 * a, 0.04) or b == 0.01 for a, b in zip(seq, seq[1:], strict=False)), seq
    assert src.relists_total["Node"] == 0


def test_reconnects_while_the_server_is_unreachable_and_stop_is_prompt(make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = make_source(f"http://127.0.0.1:{port}", backoff_initial=0.01, backoff_max=0.04)
    src.start(Recorder())
    kinds = len(src._threads)

    def failed(backoff: str = "") -> dict[str, int]:
        """kind -> failed lists logged (with that backoff, if given)"""
        out: dict[str, int] = {}
        for r in caplog.records:
            m = r.getMessage()
            if f"listing again in {backoff}" in m:
                out[m.split(":", 1)[0]] = out.get(m.split(":", 1)[0], 0) + 1
        return out

    # every watcher keeps retrying: three failed lists each, at least
    wait_until(lambda: len(failed()) == kinds and min(failed().values()) >= 3, T, "failed lists")
    assert not src.synced()
    src.stop()
    assert not any(t.is_alive() for t in src._threads)

    # stop() wakes a watcher in the middle of its backoff: with a backoff of 60 s, longer than
    # stop() waits for its threads (5 s), a watcher that slept it out would still be alive
    caplog.clear()
    src = make_source(f"http://127.0.0.1:{port}", backoff_initial=60, backoff_max=60)
    src.start(Recorder())
    wait_until(lambda: len(failed("60.00s")) == kinds, T, "every watcher backing off for 60 s")
    src.stop()
    assert not any(t.is_alive() for t in src._threads)
    assert not [r for r in caplog.records if "still busy after stop" in r.getMessage()]


# --------------------------------------------------------------------------- malformed objects


def test_malformed_object_is_skipped_and_logged(api, make_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    good = pod("good", "10.244.1.1")
    bad = pod("bad", "not-an-ip")
    api.create(good)
    api.create(bad)
    src = make_source(api)
    rec = start(src)
    assert summary(rec.batches[0]) == [(ADDED, ("Pod", "a", "good"))]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("Pod a/bad" in m and "status.podIP" in m for m in errors), errors

    # a malformed object from the watch is skipped too, and the watcher carries on
    all_watching(api)
    api.create(pod("bad2", "999.1.1.1"))
    api.create(pod("p2", "10.244.1.2"))
    wait_until(lambda: ("Pod", "a", "p2") in rec.snapshot(), T, "p2")
    assert ("Pod", "a", "bad2") not in rec.snapshot()
    # fixed, it appears
    api.update(pod("bad2", "10.244.1.3"))
    wait_until(lambda: ("Pod", "a", "bad2") in rec.snapshot(), T, "bad2 once fixed")

    # a known object whose new version does not parse keeps its last good version, across a
    # relist too, until it is deleted
    api.update(pod("good", "10.244.1.1.1"))
    api.create(pod("p3", "10.244.1.4"))
    wait_until(lambda: ("Pod", "a", "p3") in rec.snapshot(), T, "p3")
    assert rec.snapshot()[("Pod", "a", "good")] == model(good)
    api.watch_error(410, kinds={"Pod"})
    wait_until(lambda: src.relists_total["Pod"] == 1, T, "the relist")
    api.create(pod("p4", "10.244.1.5"))
    wait_until(lambda: ("Pod", "a", "p4") in rec.snapshot(), T, "p4")
    assert src.objects()[("Pod", "a", "good")] == model(good)
    api.delete("Pod", "good", "a")
    wait_until(lambda: ("Pod", "a", "good") not in rec.snapshot(), T, "the deletion")
    assert rec.since(1).count(Event(DELETED, model(good))) == 1
    # each distinct error is logged once, however often the object is seen
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("Pod a/good" in m for m in errors) == 1
    assert src.synced()


# --------------------------------------------------------------------------- stop


def test_stop_returns_promptly_during_a_long_watch(api, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = make_source(api, watch_timeout=300)
    rec = start(src)
    all_watching(api)
    # stop() aborts the open watches: a watcher still reading its 300 s watch would outlive
    # stop()'s wait for its threads (5 s) and be alive here
    src.stop()
    assert not any(t.is_alive() for t in [*src._threads, src._dispatcher])
    assert not [r for r in caplog.records if "still busy after stop" in r.getMessage()]
    wait_until(lambda: api.open_watches() == 0, T, "the server to see the watches closed")
    api.create(pod("late", "10.244.1.9"))
    assert rec.count() == 1
    src.stop()  # idempotent


def test_stop_from_the_handler(api, make_source):
    src = make_source(api)
    done = threading.Event()

    def handler(events):
        src.stop()
        done.set()

    src.start(handler)
    assert done.wait(T)
    wait_until(lambda: not any(t.is_alive() for t in src._threads), T, "the watchers to end")


# --------------------------------------------------------------------------- same as YAML


def test_events_equal_those_of_a_yaml_dir_source(api, make_source, tmp_path):
    objs = [*SAMPLES.values(), pod("p2", "10.244.1.6")]
    for o in objs:
        api.create(o)
    state = tmp_path / "state"
    state.mkdir()
    (state / "cluster.yaml").write_text(yaml.safe_dump_all(objs))
    ysrc = YAMLDirSource(str(state), poll_interval=0.01)
    yrec = Recorder()
    ysrc.start(yrec)
    try:
        assert ysrc.wait_synced(T)
        src = make_source(api)
        rec = start(src)
        assert rec.batches[0] == yrec.batches[0]
        assert src.objects() == ysrc.objects()
        assert {type(o) for o in src.objects().values()} == {
            type(o) for o in ysrc.objects().values()
        }

        # the same changes on both sides: the same events
        all_watching(api)
        changed_pod = relabel(SAMPLES["Pod"], rev="2")
        changed_svc = relabel(SAMPLES["Service"], rev="2")
        api.update(changed_pod)
        api.update(changed_svc)
        api.delete("NetworkPolicy", "deny-all", "a")
        new = [changed_pod if o is SAMPLES["Pod"] else o for o in objs]
        new = [changed_svc if o is SAMPLES["Service"] else o for o in new]
        new = [o for o in new if o is not SAMPLES["NetworkPolicy"]]
        tmp = state / ".cluster.yaml.tmp"
        tmp.write_text(yaml.safe_dump_all(new))
        os.replace(tmp, state / "cluster.yaml")
        converge(rec, api)
        wait_until(lambda: yrec.snapshot() == rec.snapshot(), T, "the YAML source")
        assert sort_events(rec.since(1)) == sort_events(yrec.since(1))
        assert len(rec.since(1)) == 3
    finally:
        ysrc.stop()


# --------------------------------------------------------------------------- configuration


def test_kubeconfig_is_used(api, make_source, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "me", "user": {"token": "s3cret"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "fake", "user": "me"}}],
                "current-context": "ctx",
            }
        )
    )
    api.create(SAMPLES["Namespace"])
    src = make_source(None, host=None, kubeconfig=str(kubeconfig))
    rec = start(src)
    assert summary(rec.batches[0]) == [(ADDED, ("Namespace", "", "a"))]
    assert set(api.authorizations) == {"Bearer s3cret"}


def test_host_with_token_and_in_cluster_configuration(tmp_path, monkeypatch):
    c = make_api_client(host="http://127.0.0.1:1/", token="t0k")
    assert c.configuration.host == "http://127.0.0.1:1"
    assert c.configuration.auth_settings()["BearerToken"]["value"] == "Bearer t0k"
    c.close()

    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("not really a certificate")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    for c in (make_api_client(in_cluster=True), make_api_client()):  # explicit, and detected
        assert c.configuration.host == "https://10.96.0.1:443"
        value = c.configuration.auth_settings()["BearerToken"]["value"]
        assert value.lower() == "bearer sa-token"
        c.close()


def test_rejects_unknown_kinds(api):
    with pytest.raises(ValueError):
        APISource(host=api.url, kinds=["Pod", "Secret"])


# --------------------------------------------------------------------------- CA, token file


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 (and its key), made with openssl."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=fake-apiserver"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return str(cert), str(key)


@pytest.fixture
def tls_api(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = _self_signed(tmp_path)
    api = FakeAPI().start(tls=(cert, key))
    yield api, cert
    api.stop()


def test_api_ca_and_token_file_over_tls(tls_api, make_source, tmp_path, caplog):
    """api_server over https with api_ca (the server's self-signed certificate) and
    api_token_file: a real TLS handshake, the token in every request's Authorization header;
    a rewritten token file (a rotated projected token) is picked up by the next request."""
    api, cert = tls_api
    assert api.url.startswith("https://127.0.0.1:")
    # from the start: under load a watcher may ask again (and re-read) before end_watches()
    caplog.set_level(logging.INFO, LOGGER)
    token = tmp_path / "token"
    token.write_text("t0k-1\n")
    api.create(SAMPLES["Namespace"])
    src = make_source(api, ca_file=cert, token_file=str(token))
    assert src.api.configuration.ssl_ca_cert == cert
    rec = start(src)
    assert summary(rec.batches[0]) == [(ADDED, ("Namespace", "", "a"))]
    assert set(api.authorizations) == {"Bearer t0k-1"}
    # rotation: the kubelet swaps the projected token in atomically (a new inode)
    new = tmp_path / "token.new"
    new.write_text("t0k-2\n")
    os.replace(new, token)
    all_watching(api)
    n = len(api.authorizations)
    with caplog.at_level(logging.INFO, LOGGER):
        api.end_watches()  # every watcher asks again
        wait_until(lambda: "Bearer t0k-2" in api.authorizations[n:], T, "the new token used")
    assert "token re-read from" in caplog.text
    assert set(api.authorizations[n:]) == {"Bearer t0k-2"}
    # a token file that vanishes keeps the last token (logged once)
    token.unlink()
    n = len(api.authorizations)
    with caplog.at_level(logging.WARNING, LOGGER):
        all_watching(api)
        api.end_watches()
        wait_until(lambda: len(api.authorizations) > n, T, "new watches")
    assert set(api.authorizations[n:]) == {"Bearer t0k-2"}
    assert caplog.text.count("keeping the last token") == 1


def test_tls_without_the_ca_is_refused(tls_api, make_source, caplog):
    """The self-signed server without api_ca: the handshake fails, the source never syncs."""
    api, _cert = tls_api
    src = make_source(api)
    with caplog.at_level(logging.WARNING, LOGGER):
        src.start(Recorder())
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, T, "a refused handshake")
    assert not src.synced()
    assert not any(a for a in api.authorizations)  # no request got through


def test_token_file_refresh_unit(tmp_path):
    from ovsctl.k8s.apisource import TokenFile

    t = [0.0]
    path = tmp_path / "tok"
    path.write_text("one")
    tf = TokenFile(str(path), every=60, clock=lambda: t[0])

    class Cfg:
        api_key: dict = {}

    cfg = Cfg()
    assert tf.read() == "one"
    tf.refresh(cfg)
    assert cfg.api_key["authorization"] == "Bearer one"
    path.write_text("two-longer")  # changed size and mtime: re-read at once
    tf.refresh(cfg)
    assert cfg.api_key["authorization"] == "Bearer two-longer"
    # same size, same mtime (a clock too coarse): re-read after `every` seconds anyway
    st = path.stat()
    path.write_text("three-long")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    tf.refresh(cfg)
    t[0] = 61.0
    tf.refresh(cfg)
    assert cfg.api_key["authorization"] == "Bearer three-long"


# --------------------------------------------------------------------------- large objects


def test_line_splitter_is_linear_and_bounded():
    """A 20 MB line in 64 KiB pieces: accepted whole under a 32 MiB limit; under a 16 MiB limit
    it is dropped as it arrives (never more than the limit held), reported with its size, and
    the lines around it are unaffected."""
    from ovsctl.k8s.apisource import LineSplitter, _TooLarge

    size = 20_000_000
    line = b"x" * size
    piece = 65536
    stream = b'{"a":1}\n' + line + b'\n{"b":2}\n'

    def feed(split):
        out = []
        for i in range(0, len(stream), piece):
            out += split.feed(stream[i : i + piece])
        return out + split.end()

    ok = LineSplitter(32 << 20)
    got = feed(ok)
    assert [len(x) for x in got] == [7, size, 7] and got[1] == line
    assert ok.peak == size  # the one line, held once

    capped = LineSplitter(16 << 20)
    with pytest.raises(_TooLarge) as e:
        feed(capped)
    assert f"dropped a watch event of {size} bytes" in str(e.value)
    assert f"the limit is {16 << 20} bytes" in str(e.value)
    assert capped.peak <= 16 << 20 and capped.pending == 0
    # a line without its newline at the end of the stream counts too
    tail = LineSplitter(1000)
    tail.feed(b"y" * 600)
    tail.feed(b"y" * 600)
    with pytest.raises(_TooLarge, match="1200 bytes"):
        tail.end()
    assert tail.peak <= 1000


def test_an_oversized_watch_event_is_dropped_and_the_kind_relisted(api, make_source, caplog):
    """One watch event above max_object_bytes: one log line naming its size, the kind is
    relisted (a list is not bounded by the limit, so the object arrives that way), and the watch
    goes on: later events arrive as usual."""
    api.create(SAMPLES["Namespace"])
    src = make_source(api, max_object_bytes=64 << 10)
    rec = start(src)
    all_watching(api)
    big = pod("big", "10.244.1.9")
    big["metadata"]["annotations"] = {"blob": "z" * (100 << 10)}
    with caplog.at_level(logging.WARNING, LOGGER):
        api.create(big)
        wait_until(lambda: src.relists_total["Pod"] == 1, T, "a Pod relist")
        converge(rec, api)
    dropped = [r for r in caplog.records if "dropped a watch event of" in r.getMessage()]
    assert len(dropped) == 1 and "relisting" in dropped[0].getMessage()
    size = int(dropped[0].getMessage().split("dropped a watch event of ")[1].split()[0])
    assert size > 100 << 10
    assert ("Pod", "a", "big") in rec.snapshot()
    all_watching(api)
    api.create(pod("small", "10.244.1.10"))
    converge(rec, api)
    assert src.relists_total["Pod"] == 1


def test_config_api_ca_and_token_file_validation(tmp_path):
    from ovsctl.config import AgentConfig, ConfigError, from_mapping

    ca, tok = tmp_path / "ca.crt", tmp_path / "token"
    ca.write_text("pem")
    tok.write_text("t")
    base = {"source": "api", "api_server": "https://10.0.0.1:6443", "pod_cidr": "10.244.0.0/24"}
    cfg = from_mapping({**base, "api_ca": str(ca), "api_token_file": str(tok)}).validate()
    assert (cfg.api_ca, cfg.api_token_file) == (str(ca), str(tok))
    bad = [
        ({"api_ca": str(tmp_path / "nope.crt")}, "api_ca: .*nope.crt is not a file"),
        ({"api_token_file": str(tmp_path / "nope")}, "api_token_file: .*nope is not a file"),
        ({"api_ca": str(tmp_path)}, "is not a file"),
        ({"api_token_file": str(tok), "api_server": "http://10.0.0.1:8080"}, "in the clear"),
        ({"api_ca": str(ca), "api_server": ""}, "only with source api and api_server"),
    ]
    for extra, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            from_mapping({**base, **extra}).validate()
    with pytest.raises(ConfigError, match="only with source api"):
        from_mapping({"pod_cidr": "10.244.0.0/24", "api_token_file": str(tok)}).validate()
    assert AgentConfig().api_socket == "/run/ovsctl/agent.sock"
    with pytest.raises(ConfigError, match="api_socket: .*absolute"):
        from_mapping({"pod_cidr": "10.244.0.0/24", "api_socket": "agent.sock"}).validate()
