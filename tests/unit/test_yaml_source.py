"""Unit tests for ovsctl.k8s.source: events, helpers and the YAML-directory source."""

import json
import logging
import os
import threading
import time

import pytest
import yaml

from ovsctl.k8s.model import Generic, Namespace, Node, Pod, parse, to_dict
from ovsctl.k8s.source import (
    ADDED,
    DELETED,
    MODIFIED,
    Event,
    YAMLDirSource,
    apply_events,
    diff_states,
    sort_events,
)

POLL = 0.01


def wait_for(cond, timeout=10.0, what="condition"):
    """Poll cond() until truthy, with a deadline; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Recorder:
    """A handler that records batches; wait() returns batches as they arrive."""

    def __init__(self):
        self.batches: list[list[Event]] = []
        self.cond = threading.Condition()
        self.seen = 0

    def __call__(self, events):
        with self.cond:
            self.batches.append(list(events))
            self.cond.notify_all()

    def next(self, timeout=10.0) -> list[Event]:
        """The next batch not yet returned."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.batches) > self.seen, timeout)
            assert ok, f"no batch within {timeout}s (have {self.batches})"
            self.seen += 1
            return self.batches[self.seen - 1]

    def no_more(self, src: YAMLDirSource, polls: int = 5):
        """Assert no further batch arrives while the source completes a few more polls."""
        target = src._polls + polls
        wait_for(lambda: src._polls >= target, what="more polls")
        with self.cond:
            assert len(self.batches) == self.seen, f"unexpected: {self.batches[self.seen :]}"


class CountingSource(YAMLDirSource):
    """Counts completed polls so tests can wait for 'nothing happened' without sleeping."""

    _polls = 0

    def _scan(self):
        try:
            return super()._scan()
        finally:
            self._polls += 1


def dump(*objs) -> str:
    return yaml.safe_dump_all([to_dict(o) if not isinstance(o, dict) else o for o in objs])


def write(path, text):
    path.write_text(text)


def atomic_write(path, text):
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def summary(batch):
    return [(e.type, e.obj.key) for e in batch]


@pytest.fixture
def source(tmp_path):
    sources = []

    def make(path=None, **kw):
        src = CountingSource(str(path or tmp_path / "state"), poll_interval=POLL, **kw)
        sources.append(src)
        return src

    yield make
    for s in sources:
        s.stop()


NS_A = Namespace("a")
NODE1 = Node("node1", "10.244.1.0/24", "192.168.0.11")
P1 = Pod("a", "p1", labels={"app": "x"}, node_name="node1")
P2 = Pod("a", "p2", labels={"app": "y"})
P3 = Pod("a", "p3")


# --------------------------------------------------------------------------- helpers


def test_event_validates_type_and_has_key():
    e = Event(ADDED, P1)
    assert e.key == ("Pod", "a", "p1")
    assert e == Event(ADDED, P1) and hash(e) == hash(Event(ADDED, P1))
    with pytest.raises(ValueError):
        Event("BOOKMARK", P1)


def test_diff_states_and_apply_events():
    old = {o.key: o for o in (NS_A, P1, P2)}
    p2b = Pod("a", "p2", labels={"app": "z"})
    new = {o.key: o for o in (NS_A, NODE1, p2b, P3)}
    events = diff_states(old, new)
    assert summary(events) == [
        (DELETED, P1.key),
        (ADDED, NODE1.key),
        (MODIFIED, P2.key),
        (ADDED, P3.key),
    ]
    assert events[0].obj == P1  # the last known version
    store = dict(old)
    apply_events(store, events)
    assert store == new
    assert diff_states(new, new) == []


def test_sort_events_order():
    np = parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "a"},
            "spec": {"podSelector": {}},
        }
    )
    events = [Event(ADDED, P1), Event(ADDED, np), Event(ADDED, NODE1), Event(ADDED, NS_A)]
    assert [e.obj.kind for e in sort_events(events)] == [
        "Namespace",
        "Node",
        "NetworkPolicy",
        "Pod",
    ]
    dels = [Event(DELETED, e.obj) for e in events]
    assert [e.obj.kind for e in sort_events(dels)] == ["Pod", "NetworkPolicy", "Node", "Namespace"]
    mixed = sort_events([Event(ADDED, P2), Event(DELETED, NS_A), Event(DELETED, P1)])
    assert summary(mixed) == [(DELETED, P1.key), (DELETED, NS_A.key), (ADDED, P2.key)]


# --------------------------------------------------------------------------- the source


def test_creates_directory_and_empty_snapshot(tmp_path, source):
    d = tmp_path / "missing" / "state"
    src = source(d)
    rec = Recorder()
    assert not src.synced()
    src.start(rec)
    assert rec.next() == []
    assert d.is_dir()
    assert src.wait_synced(5) and src.synced()
    assert src.objects() == {}


def test_initial_snapshot_ordered(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    write(d / "10-pods.yaml", dump(P2, P1))
    write(d / "00-cluster.yaml", dump(NS_A, NODE1))
    (d / "README.md").write_text("ignored")
    src = source(d)
    rec = Recorder()
    src.start(rec)
    batch = rec.next()
    assert summary(batch) == [
        (ADDED, NS_A.key),
        (ADDED, NODE1.key),
        (ADDED, P1.key),
        (ADDED, P2.key),
    ]
    assert src.synced()
    assert src.objects() == {o.key: o for o in (NS_A, NODE1, P1, P2)}
    rec.no_more(src)


def test_add_modify_delete(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    write(d / "pods.yaml", dump(P1, P2, P3))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert len(rec.next()) == 3

    # a new file: its objects are ADDED
    write(d / "ns.yaml", dump(NS_A, NODE1))
    assert summary(rec.next()) == [(ADDED, NS_A.key), (ADDED, NODE1.key)]

    # one object changes in a multi-object file: only it is MODIFIED
    p2b = Pod("a", "p2", labels={"app": "changed"}, ip="10.244.1.9")
    write(d / "pods.yaml", dump(P1, p2b, P3))
    batch = rec.next()
    assert summary(batch) == [(MODIFIED, P2.key)]
    assert batch[0].obj == p2b

    # an object removed from a file: DELETED with the last known version
    write(d / "pods.yaml", dump(P1, p2b))
    batch = rec.next()
    assert summary(batch) == [(DELETED, P3.key)]
    assert batch[0].obj == P3

    # a file deleted: its objects are DELETED, pods before namespaces
    (d / "ns.yaml").unlink()
    assert summary(rec.next()) == [(DELETED, NODE1.key), (DELETED, NS_A.key)]
    assert src.objects() == {P1.key: P1, p2b.key: p2b}

    # rewriting identical content (or touching) yields nothing
    write(d / "pods.yaml", dump(P1, p2b))
    os.utime(d / "pods.yaml")
    rec.no_more(src)


def test_state_mirrors_handler_view(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    store: dict = {}
    views = []

    def handler(events):
        apply_events(store, events)
        views.append(src.objects() == store)

    src = source(d)
    src.start(handler)
    wait_for(src.synced, what="sync")
    write(d / "a.yaml", dump(NS_A, P1))
    wait_for(lambda: len(store) == 2, what="two objects")
    write(d / "a.yaml", dump(P2))
    wait_for(lambda: set(store) == {P2.key}, what="replacement")
    assert all(views)


def test_broken_file_keeps_last_good_objects_and_recovers(tmp_path, source, caplog):
    d = tmp_path / "state"
    d.mkdir()
    write(d / "pods.yaml", dump(P1, P2))
    write(d / "other.yaml", dump(NS_A))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert len(rec.next()) == 3

    with caplog.at_level(logging.ERROR, logger="ovsctl.k8s.source"):
        write(d / "pods.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n")
        wait_for(lambda: "invalid YAML" in caplog.text, what="YAML error logged")
        assert "pods.yaml" in caplog.text
        # an invalid object (ModelError) also keeps the last good objects
        bad = (
            dump(P1)
            + "---\n"
            + dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "X"}})
        )
        write(d / "pods.yaml", bad)
        wait_for(lambda: "metadata.name" in caplog.text, what="model error logged")
        assert "document 2" in caplog.text
    # other files still flow while one is broken
    write(d / "other.yaml", dump(NS_A, NODE1))
    assert summary(rec.next()) == [(ADDED, NODE1.key)]
    assert src.objects()[P1.key] == P1 and src.objects()[P2.key] == P2

    # fixed: the real changes against the last good version flow again
    p1b = Pod("a", "p1", labels={"app": "fixed"}, node_name="node1")
    write(d / "pods.yaml", dump(p1b, P3))
    assert summary(rec.next()) == [(DELETED, P2.key), (MODIFIED, P1.key), (ADDED, P3.key)]


def test_new_broken_file_contributes_nothing_until_fixed(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    write(d / "bad.yaml", "kind: [")
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert rec.next() == []
    write(d / "bad.yaml", dump(P1))
    assert summary(rec.next()) == [(ADDED, P1.key)]


def test_atomic_rename_writes_detected(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    f = d / "pods.yaml"
    write(f, dump(P1))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert summary(rec.next()) == [(ADDED, P1.key)]

    # same size and same mtime as before: only the inode tells the files apart
    p1b = Pod("a", "p1", labels={"app": "z"}, node_name="node1")
    text = dump(p1b)
    assert len(text) == f.stat().st_size
    old = f.stat()
    tmp = d / ".pods.yaml.tmp"
    tmp.write_text(text)
    os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp, f)
    batch = rec.next()
    assert summary(batch) == [(MODIFIED, P1.key)]
    assert batch[0].obj == p1b

    # a sequence of atomic writes: the last one wins, the temporary files are never read
    for i in range(5):
        atomic_write(f, dump(Pod("a", "p1", labels={"v": str(i)})))
    wait_for(lambda: src.objects()[P1.key].labels_dict() == {"v": "4"}, what="last write")


def test_in_place_same_size_rewrites_converge(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    f = d / "p.yaml"
    write(f, dump(Pod("a", "p", labels={"v": "00"})))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    rec.next()
    # rapid in-place rewrites of identical size (same inode; often the same timestamp tick)
    for i in range(1, 50):
        with open(f, "r+") as fh:
            fh.write(dump(Pod("a", "p", labels={"v": f"{i:02d}"})))
    wait_for(
        lambda: src.objects()[("Pod", "a", "p")].labels_dict() == {"v": "49"}, what="final content"
    )


def test_racy_same_tick_rewrite_detected(tmp_path, source, monkeypatch):
    """Simulate coarse timestamps (a rewrite in the same tick leaves mtime/ctime unchanged):
    a file read soon after its last change is re-read until it is stable."""
    import ovsctl.k8s.source as source_mod

    tick = time.time_ns()  # every change lands in this one timestamp tick
    monkeypatch.setattr(source_mod, "_sig", lambda st: (tick, tick, st.st_size, st.st_ino))
    monkeypatch.setattr(source_mod, "_ctime_ns", lambda st: tick)
    monkeypatch.setattr(source_mod, "_RACY_NS", 3600 * 10**9)
    d = tmp_path / "state"
    d.mkdir()
    f = d / "p.yaml"
    write(f, dump(Pod("a", "p", labels={"v": "1"})))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    rec.next()
    with open(f, "r+") as fh:  # in place, same size, same inode
        fh.write(dump(Pod("a", "p", labels={"v": "2"})))
    batch = rec.next()
    assert summary(batch) == [(MODIFIED, ("Pod", "a", "p"))]
    assert batch[0].obj.labels_dict() == {"v": "2"}
    rec.no_more(src)  # re-reading identical bytes yields nothing


def test_duplicate_keys_last_file_wins(tmp_path, source, caplog):
    d = tmp_path / "state"
    d.mkdir()
    first = Pod("a", "dup", labels={"from": "a"})
    second = Pod("a", "dup", labels={"from": "b"})
    write(d / "a.yaml", dump(first))
    write(d / "b.yaml", dump(second))
    src = source(d)
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="ovsctl.k8s.source"):
        src.start(rec)
        batch = rec.next()
    assert summary(batch) == [(ADDED, first.key)]
    assert batch[0].obj == second
    assert "a/dup" in caplog.text and "a.yaml" in caplog.text and "b.yaml" in caplog.text

    # removing the winner falls back to the other definition
    (d / "b.yaml").unlink()
    batch = rec.next()
    assert summary(batch) == [(MODIFIED, first.key)] and batch[0].obj == first
    # and removing the last definition deletes it
    (d / "a.yaml").unlink()
    assert summary(rec.next()) == [(DELETED, first.key)]


def test_handler_exception_does_not_stop_source(tmp_path, source, caplog):
    d = tmp_path / "state"
    d.mkdir()
    calls = []

    def handler(events):
        calls.append(summary(events))
        if len(calls) <= 2:
            raise RuntimeError("handler bug")

    src = source(d)
    with caplog.at_level(logging.ERROR, logger="ovsctl.k8s.source"):
        src.start(handler)
        # the snapshot counts as delivered even though the handler raised
        wait_for(src.synced, what="synced")
        assert len(calls) == 1
        write(d / "a.yaml", dump(P1))
        wait_for(lambda: len(calls) == 2, what="second batch")
        write(d / "b.yaml", dump(P2))
        wait_for(lambda: len(calls) == 3, what="third batch")
    assert calls == [[], [(ADDED, P1.key)], [(ADDED, P2.key)]]
    assert "handler bug" in caplog.text


def test_generic_objects_flow(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": []},
    }
    write(d / "svc.yaml", dump(svc))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    (e,) = rec.next()
    assert isinstance(e.obj, Generic) and e.key == ("Service", "default", "web")
    svc["spec"]["ports"] = [{"port": 80}]
    write(d / "svc.yaml", dump(svc))
    assert summary(rec.next()) == [(MODIFIED, ("Service", "default", "web"))]


def test_json_and_list_files(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    (d / "a.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": [to_dict(P1)]})
    )
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert summary(rec.next()) == [(ADDED, P1.key)]


def test_stop_joins_thread_and_is_idempotent(tmp_path, source):
    src = source()
    rec = Recorder()
    src.start(rec)
    rec.next()
    thread = src._thread
    assert thread.is_alive() and thread.daemon
    src.stop()
    assert not thread.is_alive()
    src.stop()
    with pytest.raises(RuntimeError):
        src.start(rec)


def test_stop_from_handler_does_not_deadlock(tmp_path, source):
    src = source()
    done = threading.Event()

    def handler(events):
        src.stop()
        done.set()

    src.start(handler)
    assert done.wait(5)
    wait_for(lambda: not src._thread.is_alive(), what="thread end")


def test_many_files(tmp_path, source):
    d = tmp_path / "state"
    d.mkdir()
    n = 300
    for i in range(n):
        write(d / f"p{i:04d}.yaml", dump(Pod("a", f"p{i}", labels={"i": str(i)})))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    assert len(rec.next()) == n
    write(d / "p0150.yaml", dump(Pod("a", "p150", labels={"i": "changed"})))
    assert summary(rec.next()) == [(MODIFIED, ("Pod", "a", "p150"))]


# --------------------------------------------------------------------------- ClusterNetworkPolicy


def _cnp(name: str, priority: int = 10, **meta) -> dict:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, **meta},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


def test_sort_events_puts_cluster_network_policies_after_network_policies():
    np = parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "a"},
            "spec": {"podSelector": {}},
        }
    )
    cnp = parse(_cnp("c"))
    svc = parse(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}}
    )
    events = [Event(ADDED, o) for o in (P1, svc, cnp, np, NS_A)]
    order = ["Namespace", "NetworkPolicy", "ClusterNetworkPolicy", "Service", "Pod"]
    assert [e.obj.key[0] for e in sort_events(events)] == order
    dels = sort_events(Event(DELETED, e.obj) for e in events)
    assert [e.obj.key[0] for e in dels] == order[::-1]


def test_cluster_network_policies_flow(tmp_path, source, caplog):
    """Added alone or in a List with other kinds; a changed spec is MODIFIED; a removed file
    DELETES; a broken one (a namespace on this cluster-scoped kind) is logged naming the object
    and the field, keeps that file's last good objects, and stops no other file."""
    d = tmp_path / "state"
    d.mkdir()
    write(d / "10-cnp.yaml", dump(_cnp("deny-all")))
    mixed = {"apiVersion": "v1", "kind": "List", "items": [to_dict(NS_A), _cnp("b.baseline")]}
    write(d / "20-list.yaml", dump(mixed))
    src = source(d)
    rec = Recorder()
    src.start(rec)
    first = rec.next()
    assert summary(first) == [
        (ADDED, ("Namespace", "", "a")),
        (ADDED, ("ClusterNetworkPolicy", "", "b.baseline")),
        (ADDED, ("ClusterNetworkPolicy", "", "deny-all")),
    ]
    held = src.objects()[("ClusterNetworkPolicy", "", "deny-all")]
    assert isinstance(held, Generic) and held.obj()["spec"]["priority"] == 10
    assert "namespace" not in held.obj()["metadata"]

    atomic_write(d / "10-cnp.yaml", dump(_cnp("deny-all", priority=20)))
    (e,) = rec.next()
    assert (e.type, e.key) == (MODIFIED, ("ClusterNetworkPolicy", "", "deny-all"))
    assert e.obj.obj()["spec"]["priority"] == 20

    caplog.set_level(logging.ERROR, logger="ovsctl.k8s.source")
    atomic_write(d / "10-cnp.yaml", dump(_cnp("deny-all", priority=30, namespace="a")))
    wait_for(
        lambda: any(
            "10-cnp.yaml: document 1: ClusterNetworkPolicy deny-all: metadata.namespace: "
            "must not be set: ClusterNetworkPolicy is cluster-scoped, got 'a'" in r.getMessage()
            for r in caplog.records
        ),
        what="the error naming the object and the field",
    )
    atomic_write(d / "30-p.yaml", dump(P1))
    assert summary(rec.next()) == [(ADDED, P1.key)]
    assert src.objects()[("ClusterNetworkPolicy", "", "deny-all")].obj()["spec"]["priority"] == 20

    (d / "10-cnp.yaml").unlink()
    assert summary(rec.next()) == [(DELETED, ("ClusterNetworkPolicy", "", "deny-all"))]
    rec.no_more(src)
