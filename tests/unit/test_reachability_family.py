"""`ovsctl reachability --family` (ovsctl/tools/trace/reach.py): which addresses a pair is
traced between and which intent it is compared with, per family. The tracer here is a stand-in
that records what it was asked and answers from a table; the intent is the real one
(flows/intent.py) over a dual-stack /cluster view with an IPv6 ipBlock."""

from __future__ import annotations

import types

from flows.intent import Intents
from ovsctl.tools.trace import reach

PODS = [
    {"namespace": "x", "name": "a", "ip": "10.244.1.5", "ips": ["10.244.1.5", "fd00:10:244:1::5"],
     "node": "n1", "ports": [["http", 80, "TCP"]]},
    {"namespace": "x", "name": "b", "ip": "10.244.2.5", "ips": ["10.244.2.5", "fd00:10:244:2::5"],
     "node": "n2", "ports": [["http", 80, "TCP"]]},
    {"namespace": "x", "name": "v4only", "ip": "10.244.2.6", "node": "n2",
     "ports": [["http", 80, "TCP"]]},
]  # fmt: skip
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "from-a6", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244:1::5/128"}}]}],
    },
}


class StubTracer:
    """What reach.py uses of a Tracer: views, any, intents, trace()."""

    def __init__(self, reached):
        view = {"namespaces": [{"name": "x"}], "pods": PODS, "nodes": [], "policies": [POLICY]}
        self.intents = Intents(view)
        node_view = types.SimpleNamespace(pods=PODS, local={("x", "a")}, name="n1")
        self.views = {"n1": node_view}
        self.any = node_view
        self.reached = reached
        self.asked = []

    def trace(self, s, d, proto, port, node=None):
        self.asked.append((s.ip, d.ip, proto, port))
        return types.SimpleNamespace(reached=self.reached(s.ip, d.ip))


def test_default_traces_first_addresses_as_before():
    tr = StubTracer(lambda s, d: s == "10.244.1.5")
    res = reach.node_matrix(tr, "n1")
    assert "family" not in res
    assert sorted(tr.asked) == [
        ("10.244.1.5", "10.244.2.5", "tcp", 80),
        ("10.244.1.5", "10.244.2.6", "tcp", 80),
        ("10.244.2.5", "10.244.1.5", "tcp", 80),
        ("10.244.2.6", "10.244.1.5", "tcp", 80),
    ]
    # IPv4: the IPv6 block admits nobody into x/a; x/a's egress (this node's half) is free
    assert res["intended"] == {
        "x/a->x/b:80/TCP": True,
        "x/a->x/v4only:80/TCP": True,
        "x/b->x/a:80/TCP": False,
        "x/v4only->x/a:80/TCP": False,
    }
    assert res["differences"] == []


def test_family_6_traces_ipv6_addresses_and_compares_with_the_ipv6_intent():
    tr = StubTracer(lambda s, d: s == "fd00:10:244:1::5")  # a switch that does it right
    res = reach.node_matrix(tr, "n1", family=6)
    assert res["family"] == 6
    assert sorted(tr.asked) == [
        ("fd00:10:244:1::5", "fd00:10:244:2::5", "tcp", 80),
        ("fd00:10:244:2::5", "fd00:10:244:1::5", "tcp", 80),
    ]  # the IPv4-only pod has no IPv6 pair
    assert res["intended"] == {"x/a->x/b:80/TCP": True, "x/b->x/a:80/TCP": False}
    assert res["scope"] == {"x/a->x/b:80/TCP": "egress", "x/b->x/a:80/TCP": "ingress"}
    assert res["differences"] == []
    # a switch that blocks x/a's IPv6 connection is flagged
    bad = reach.node_matrix(StubTracer(lambda s, d: False), "n1", family=6)
    assert [d["key"] for d in bad["differences"]] == ["x/a->x/b:80/TCP"]


def test_lab_matrix_per_family():
    tr = StubTracer(lambda s, d: True)
    traced, intended, _ = reach.lab_matrix(tr, family=6)
    assert set(traced) == {"x/a->x/b:80/TCP", "x/b->x/a:80/TCP"}
    assert intended == {"x/a->x/b:80/TCP": True, "x/b->x/a:80/TCP": False}
    traced4, intended4, _ = reach.lab_matrix(StubTracer(lambda s, d: True), family=4)
    assert len(traced4) == 6 and not any(intended4.values())
