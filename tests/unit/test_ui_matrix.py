"""ovsctl ui's /api/matrix and /api/trace documents (ovsctl/ui/api.py) over a stand-in tracer:
cells that differ from the intent, a node whose agent is down, probes limited to the cells
asked for, the deadline, and errors classed by their type. The intent is the real one
(flows/intent.py); the switch's answers are the test's."""

from __future__ import annotations

import time
import types

import pytest

from flows.intent import Intents
from ovsctl.tools import trace as tracing
from ovsctl.ui import api as uiapi
from ovsctl.ui.data import BadRequest, NotFound, Unreachable

PODS = [
    {"namespace": "x", "name": "a", "ip": "10.244.1.5", "node": "n1", "ports": [["http", 80, "TCP"]]},
    {"namespace": "x", "name": "b", "ip": "10.244.1.6", "node": "n1", "ports": [["http", 80, "TCP"]],
     "labels": {"app": "b"}},
    {"namespace": "y", "name": "c", "ip": "10.244.2.5", "node": "n2", "ports": [["http", 80, "TCP"]]},
]  # fmt: skip
ISOLATE_B = {  # nothing may reach x/b
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-b", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "b"}},
        "policyTypes": ["Ingress"],
        "ingress": [],
    },
}
CLUSTER = {"namespaces": [{"name": "x"}, {"name": "y"}], "pods": PODS, "policies": [ISOLATE_B]}


class StubTracer:
    """What api.py and reach.py use of a Tracer; `reached(src ip, dst ip)` is the switch."""

    def __init__(self, reached, fail=None):
        self.intents = Intents({**CLUSTER, "nodes": []})
        self.any = types.SimpleNamespace(pods=PODS, name="n1")
        self.views = {"n1": self.any}
        self.runners = {"n1": types.SimpleNamespace(close=lambda: None)}
        self.reached, self.fail, self.closed = reached, fail, False

    def trace(self, s, d, proto="tcp", port=None, sport=None, family=None, node=None):
        if self.fail:
            raise self.fail
        s_ip = s.ip if hasattr(s, "ip") else s
        d_ip = d.ip if hasattr(d, "ip") else d
        return types.SimpleNamespace(
            reached=self.reached(s_ip, d_ip),
            continues={"node": "n2"} if d == "y/c" else None,
            to_dict=lambda: {"verdict": "delivered", "notes": []},
        )

    def close(self):
        self.closed = True


class StubLab:
    name = "stub"

    def __init__(self, answers):
        self.answers, self.asked = answers, None

    def probe(self, only=None):
        self.asked = set(only)
        return {k: self.answers(k) for k in only}


class StubAPI(uiapi.API):
    def __init__(self, tracer, lab=None, down=None):
        super().__init__([], lab)
        self.stub, self.down = tracer, down or {}

    def cluster(self):
        return CLUSTER

    def tracer(self):
        return self.stub, dict(self.down)


def cells(doc) -> dict:
    return {(c["src"], c["dst"]): c for c in doc["cells"]}


def test_a_switch_that_disagrees_with_the_intent_is_marked():
    # the switch lets x/a into x/b although deny-b isolates it, and blocks x/b -> x/a
    switch = {("10.244.1.5", "10.244.1.6"): True, ("10.244.1.6", "10.244.1.5"): False}
    doc = StubAPI(StubTracer(lambda s, d: switch.get((s, d), d != "10.244.1.6")), StubLab(
        lambda k: True)).matrix("x")  # fmt: skip
    c = cells(doc)
    assert (c[("x/a", "x/b")]["intent"], c[("x/a", "x/b")]["traced"]) == (False, True)
    assert (c[("x/b", "x/a")]["intent"], c[("x/b", "x/a")]["traced"]) == (True, False)
    assert c[("x/a", "x/b")]["differs"] and c[("x/b", "x/a")]["differs"]
    assert not c[("y/c", "x/a")]["differs"] and c[("y/c", "x/a")]["probed"] is None
    assert doc["down"] == {} and c[("x/a", "x/b")]["trace"].startswith("#trace?src=x/a&dst=x/b")


def test_probe_sends_only_the_cells_asked_and_a_differing_probe_is_marked():
    lab = StubLab(lambda k: not k.startswith("x/a->"))  # x/a reaches nobody, really
    doc = StubAPI(StubTracer(lambda s, d: d != "10.244.1.6"), lab).matrix("y", probe=True)
    assert lab.asked == {f"{s}->{d}:80/TCP" for s, d in cells(doc)}  # no x/a -> x/b
    assert all("y/" in s + d for s, d in cells(doc))
    c = cells(doc)[("x/a", "y/c")]
    assert (c["intent"], c["traced"], c["probed"], c["differs"]) == (True, True, False, True)


def test_a_node_whose_agent_is_down_leaves_its_cells_unknown():
    tracer = StubTracer(lambda s, d: d != "10.244.1.6")
    doc = StubAPI(tracer, StubLab(lambda k: True), {"n2": "connection refused"}).matrix()
    c = cells(doc)
    assert doc["down"] == {"n2": "connection refused"}
    for pair in (("x/a", "y/c"), ("y/c", "x/a"), ("y/c", "x/b")):
        assert c[pair]["traced"] is None and not c[pair]["differs"], pair
    assert c[("x/b", "x/a")]["traced"] is True and tracer.closed


def test_a_matrix_stops_at_its_deadline(monkeypatch):
    class Runner:
        def trace(self, flow, ct):
            return "traced"

        def close(self):
            pass

    d = uiapi._Deadline(Runner(), time.monotonic() + 60)
    assert d.trace("f", []) == "traced"
    late = uiapi._Deadline(Runner(), time.monotonic() - 1)
    with pytest.raises(uiapi.TooLong, match="give ns="):
        late.trace("f", [])


def test_an_unknown_namespace_is_a_404():
    with pytest.raises(NotFound, match="no namespace 'z'"):
        StubAPI(StubTracer(lambda s, d: True), StubLab(lambda k: True)).matrix("z")


@pytest.mark.parametrize(
    "error, kind, words",
    [
        (tracing.NotFoundError("no pod or Service x/z"), NotFound, "x/z"),
        (tracing.UnreachableError("cannot reach ovs-vswitchd at /r/c"), Unreachable, "/r/c"),
        (tracing.TraceError("SRC and DST must be of one IP family"), BadRequest, "one IP"),
        # a message that starts "no " is not thereby a 404 any more
        (tracing.TraceError("no --dport: x/b declares no TCP port"), BadRequest, "--dport"),
        # its source is on a node whose agent is down: that node and its agent named
        (tracing.TraceError("y/c is on node n2: run the trace there"), Unreachable, "n2: agent"),
    ],
)
def test_trace_errors_are_classed_by_type(error, kind, words):
    api = StubAPI(StubTracer(None, fail=error), down={"n2": "connection refused"})
    with pytest.raises(kind, match=words):
        api.trace("y/c", "x/a")
    assert api.stub.closed


def test_a_trace_that_leaves_for_a_node_that_is_down_says_so():
    api = StubAPI(StubTracer(lambda s, d: True), down={"n2": "connection refused"})
    doc = api.trace("x/a", "y/c")
    assert any("node n2: agent: connection refused" in n for n in doc["notes"])


def test_a_hung_node_holds_up_one_request_not_every_one():
    """data._Cached: while one caller recomputes (an agent that hangs), the others get the
    last value at once; the first caller ever waits (there is nothing to give)."""
    import threading

    from ovsctl.ui.data import _Cached

    release, values = threading.Event(), iter(["first", "second"])

    def compute():
        v = next(values)
        if v == "second":
            assert release.wait(20)
        return v

    c = _Cached(0.0, compute)  # expired at once: every get recomputes
    assert c.get() == "first"
    slow = threading.Thread(target=c.get)
    slow.start()  # recomputing, and hanging until released
    deadline = time.monotonic() + 10
    while not c._lock.locked():
        assert time.monotonic() < deadline
    t0 = time.monotonic()
    assert c.get() == "first" and time.monotonic() - t0 < 1  # not held up
    release.set()
    slow.join(10)
    assert c._value == "second"
