"""ovsctl/ui/draw.py: the SVG pictures of `ovsctl ui`, laid out by the real Graphviz `dot`."""

import glob
import json
import os
import xml.etree.ElementTree as ET

import pytest

from ovsctl.ui import draw

NS = {"s": draw.SVG_NS}
DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ui")
EVIL = '<script>alert("x")</script>&amp;\\N\\"'


def pipeline_doc(**kw):
    doc = {
        "node": "node0",
        "time": 1.0,
        "tables": [
            {"id": 0, "name": "Classifier", "flows": 7, "packets": 39, "drop_flows": 1},
            {"id": 10, "name": "SpoofGuard", "flows": 7, "packets": 28, "drop_flows": 0},
            {"id": 65, "name": "IngressDefault", "flows": 2, "packets": 12345, "drop_flows": 1},
            {"id": 90, "name": "Output", "flows": 1, "packets": 2_500_000, "drop_flows": 0},
        ],
        "edges": [
            {"from": 0, "to": 10, "kind": "goto", "flows": 3},
            {"from": 10, "to": 65, "kind": "goto", "flows": 1},
            {"from": 10, "to": 65, "kind": "ct", "flows": 1},
            {"from": 65, "to": 90, "kind": "goto", "flows": 1},
            {"from": 65, "to": 99, "kind": "goto", "flows": 1},  # no such table: left out
        ],
        "exits": [
            {"table": 90, "to": "output", "flows": 1},
            {"table": 65, "to": "drop", "flows": 1},
        ],
    }
    doc.update(kw)
    return doc


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def by_id(root: ET.Element, eid: str) -> ET.Element:
    found = [e for e in root.iter() if e.get("id") == eid]
    assert len(found) == 1, f"{eid}: {len(found)} elements"
    return found[0]


def texts(el: ET.Element) -> list[str]:
    return [t.text for t in el.iter(f"{{{draw.SVG_NS}}}text")]


def test_pipeline_has_a_box_per_table_with_named_counters():
    root = parse(draw.pipeline_svg(pipeline_doc()))
    assert root.tag == f"{{{draw.SVG_NS}}}svg" and root.get("viewBox")
    assert "width" not in root.attrib  # the page scales it
    for tid, name in (
        (0, "Classifier"),
        (10, "SpoofGuard"),
        (65, "IngressDefault"),
        (90, "Output"),
    ):
        g = by_id(root, f"table-{tid}")
        assert "table" in g.get("class").split()
        assert by_id(root, f"table-{tid}-name").text == f"[{tid}] {name}"
    assert by_id(root, "table-0-flows").text == "7 flows"
    assert by_id(root, "table-65-packets").text == "12.3k pkts"
    assert by_id(root, "table-90-packets").text == "2.5M pkts"


def test_pipeline_marks_drop_tables_and_draws_edges_once_per_pair():
    root = parse(draw.pipeline_svg(pipeline_doc()))
    assert "drop" in by_id(root, "table-0").get("class").split()
    assert "drop" in by_id(root, "table-65").get("class").split()
    assert "drop" not in by_id(root, "table-10").get("class").split()
    for a, b in ((0, 10), (10, 65), (65, 90)):
        by_id(root, f"edge-{a}-{b}")
    assert "edge-ct" in by_id(root, "edge-10-65").get("class").split()  # goto and ct: one edge
    assert not [e for e in root.iter() if (e.get("id") or "").startswith("edge-65-99")]
    by_id(root, "exit-output")
    by_id(root, "exit-90-output")
    assert not [e for e in root.iter() if e.get("id") == "exit-drop"]  # drops: the table's mark


def test_pipeline_hit_tables_carry_the_class():
    doc = pipeline_doc()
    doc["tables"][1]["hit"] = True
    root = parse(draw.pipeline_svg(doc))
    assert "hit" in by_id(root, "table-10").get("class").split()
    assert "hit" not in by_id(root, "table-0").get("class").split()


def test_names_from_the_cluster_stay_text():
    doc = pipeline_doc()
    doc["tables"][0]["name"] = EVIL
    svg = draw.pipeline_svg(doc)
    assert "<script" not in svg
    assert by_id(parse(svg), "table-0-name").text == f"[0] {EVIL}"
    topo = {
        "nodes": [
            {
                "name": "n<1>",
                "ip": "172.30.0.10",
                "pod_cidrs": ["10.244.0.0/24"],
                "tunnels": [],
                "pods": [{"ns": "x", "name": EVIL, "ips": ["10.244.0.2"], "port": 3}],
            }
        ],
        "services": [],
    }
    svg = draw.topology_svg(topo)
    assert "<script" not in svg
    root = parse(svg)
    pod = [e for e in root.iter() if "pod" in (e.get("class") or "").split()]
    assert len(pod) == 1 and texts(pod[0]) == [f"x/{EVIL}", "10.244.0.2"]
    assert set(pod[0].get("id")) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
    )
    t = trace_doc()
    t["src"], t["policy"] = EVIL, f"x/{EVIL}"
    t["hops"][0]["node"] = EVIL
    t["hops"][0]["passes"][0]["steps"][0]["owner"] = EVIL
    svg = draw.trace_svg(t)
    assert "<script" not in svg
    root = parse(svg)
    assert texts(by_id(root, "trace-src")) == [EVIL]
    assert by_id(root, "step-0-0-0-flow").text == f"prio 200 · {EVIL}"
    assert texts(by_id(root, "verdict"))[-1] == f"NetworkPolicy x/{EVIL}"


def step(tid, name, prio=0, owner="pipeline", actions=("goto_table:1",)):
    return {"table_id": tid, "table": name, "priority": prio, "match": "", "cookie": "0x1",
            "owner": owner, "actions": list(actions), "depth": 0}  # fmt: skip


def trace_doc():
    return {
        "src": "frontend/f1",
        "dst": "data/d2",
        "verdict": "dropped",
        "to": "",
        "reason": "isolated",
        "node": "node1",
        "table": "IngressDefault",
        "policy": "data/deny-from-frontend",
        "cluster_policy": None,
        "hops": [
            {
                "node": "node0",
                "entered": "pod frontend/f1",
                "outcome": {"kind": "output", "to": "tunnel", "tun_dst": "172.30.0.11"},
                "passes": [
                    {
                        "ct_state": None,
                        "steps": [step(0, "Classifier", 200, "pod/f1"), step(30, "Conntrack", 200)],
                    },
                    {
                        "ct_state": "new|trk",
                        "steps": [step(31, "ConntrackState"), step(90, "Output", 200)],
                    },
                ],  # fmt: skip
            },
            {
                "node": "node1",
                "entered": "tunnel from node0",
                "outcome": {"kind": "drop", "table": "IngressDefault"},
                "passes": [
                    {
                        "ct_state": None,
                        "steps": [
                            step(0, "Classifier", 200, "node/node0"),
                            step(
                                65,
                                "IngressDefault",
                                1000,
                                "policy/data/deny-from-frontend/isolation",
                                ["drop"],
                            ),
                        ],
                    },
                ],  # fmt: skip
            },
        ],
    }


def test_trace_draws_each_node_the_tunnel_and_the_verdict():
    root = parse(draw.trace_svg(trace_doc()))
    hop0, hop1 = by_id(root, "hop-0"), by_id(root, "hop-1")
    assert "node0 · br-int" in texts(hop0)[0] and "node1 · br-int" in texts(hop1)[0]
    assert by_id(root, "step-0-0-0-table").text == "[0] Classifier"
    assert by_id(root, "step-0-0-0-flow").text == "prio 200 · pod/f1"
    assert by_id(root, "step-1-0-1-flow").text == (
        "prio 1000 · policy/data/deny-from-frontend/isolation"
    )
    assert "drop" in by_id(root, "step-1-0-1").get("class").split()
    assert "drop" not in by_id(root, "step-0-1-1").get("class").split()
    tunnel = by_id(root, "tunnel-0-1")
    assert "VXLAN tunnel to node1 172.30.0.11" in texts(tunnel)
    recirc = [e for e in root.iter() if "recirc" in (e.get("class") or "").split()]
    assert len(recirc) == 1 and texts(recirc[0]) == ["ct recirc new|trk"]
    verdict = by_id(root, "verdict")
    assert "verdict-dropped" in verdict.get("class").split()
    assert texts(verdict) == [
        "DROPPED",
        "in IngressDefault on node1",
        "NetworkPolicy data/deny-from-frontend",
    ]


def test_trace_verdicts_name_what_decided():
    t = trace_doc()
    t.update(verdict="rejected", cluster_policy="deny-y", policy=None)
    v = by_id(parse(draw.trace_svg(t)), "verdict")
    assert "verdict-rejected" in v.get("class").split()
    assert "ClusterNetworkPolicy deny-y" in texts(v)
    t.update(verdict="delivered", to="pod data/d2 on node1 (port 4)")
    v = by_id(parse(draw.trace_svg(t)), "verdict")
    assert texts(v) == ["DELIVERED", "pod data/d2 on node1 (port 4)"]


def test_topology_nodes_tunnels_pods_and_services():
    nodes = []
    for i in range(3):
        others = [f"node{j}" for j in range(3) if j != i]
        nodes.append({"name": f"node{i}", "ip": f"172.30.0.1{i}", "pod_cidrs": [f"10.244.{i}.0/24"],
                      "tunnels": [{"to": o, "remote_ip": "x", "port": 1} for o in others],
                      "pods": [{"ns": "web", "name": f"w{i}", "ips": [f"10.244.{i}.2"], "port": 3}]})  # fmt: skip
    svc = {"ns": "web", "name": "front", "cluster_ips": ["10.96.0.10"],
           "ports": [{"name": "", "port": 80, "protocol": "TCP", "node_port": None},
                     {"name": "dns", "port": 53, "protocol": "UDP", "node_port": None}],
           "endpoints": [{"pod": "web/w0", "ip": "10.244.0.2", "node": "node0"},
                         {"pod": None, "ip": "192.0.2.7", "node": None}]}  # fmt: skip
    root = parse(draw.topology_svg({"nodes": nodes, "services": [svc]}))
    for i in range(3):
        assert texts(by_id(root, f"node-node{i}"))[0] == f"node{i} 172.30.0.1{i}"
        assert texts(by_id(root, f"pod-web-w{i}")) == [f"web/w{i}", f"10.244.{i}.2"]
    tunnels = sorted(e.get("id") for e in root.iter() if "tunnel" in (e.get("class") or ""))
    assert tunnels == ["tunnel-node0-node1", "tunnel-node0-node2", "tunnel-node1-node2"]
    assert texts(by_id(root, "svc-web-front")) == [
        "svc web/front",
        "10.96.0.10",
        "80/TCP, 53/UDP (dns)",
    ]
    by_id(root, "ep-web-front-0")
    by_id(root, "ep-web-front-1")


def test_a_missing_dot_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(draw.DrawError, match="graphviz"):
        draw.pipeline_svg(pipeline_doc())


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(DATA, "*.json"))))
def test_the_committed_samples_draw(path):
    """The JSON documents ui-server recorded from a real lab (tests/data/ui) draw."""
    doc = json.load(open(path))
    name = os.path.basename(path)
    if name.startswith("pipeline"):
        root = parse(draw.pipeline_svg(doc))
        for t in doc["tables"]:
            by_id(root, f"table-{t['id']}-packets")
    elif name.startswith("trace"):
        root = parse(draw.trace_svg(doc))
        assert f"verdict-{doc['verdict']}" in by_id(root, "verdict").get("class").split()
    elif name.startswith("topology"):
        root = parse(draw.topology_svg(doc))
        for n in doc["nodes"]:
            by_id(root, f"node-{n['name']}")


def test_a_step_shows_its_named_owner_not_the_raw_key():
    t = trace_doc()
    first = t["hops"][0]["passes"][0]["steps"][0]
    first["owner"], first["owner_text"] = "pod/153d7ca0ffee/eth0", "pod frontend/f1"
    root = parse(draw.trace_svg(t))
    assert by_id(root, "step-0-0-0-flow").text == "prio 200 · pod frontend/f1"


def test_the_pipeline_is_laid_out_in_rows():
    assert draw.grid(list(range(22))) == [
        [0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17], [18, 19, 20, 21]
    ]  # fmt: skip
    assert draw.grid(list(range(20))) == [list(range(i, i + 5)) for i in range(0, 20, 5)]
    assert draw.grid([1, 2]) == [[1, 2]] and draw.grid([]) == []
    source, _ = draw.pipeline_dot(pipeline_doc())
    assert "{rank=same; " in source


def test_the_whole_pipeline_is_wider_than_tall():
    with open(os.path.join(DATA, "pipeline.json")) as fh:
        doc = json.load(fh)
    assert len(doc["tables"]) == 22
    x, y, w, h = map(float, parse(draw.pipeline_svg(doc)).get("viewBox").split())
    assert w > 3 * h and w < 1300, (w, h)  # 1400 px across shows it whole, 11 pt text legible
