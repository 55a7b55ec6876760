"""`ovsctl ui --lab` against a real 3-node lab: the JSON API a user's page (and scripts) read.

One lab for the module: namespaces frontend, backend, data with a pod of each on every node
(f1 b1 d1 on node0, f2 b2 d2 on node1, ...), a Service backend/web, and a NetworkPolicy
data/from-backend that lets only the backend namespace into the data pods (so frontend -> data
is blocked). The server is the real command, started as a user starts it.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

import pytest

from flows import tables
from tests.e2e.conftest import lab_pods_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = ["node0", "node1", "node2"]


def data_from_backend(name: str) -> str:
    """A NetworkPolicy NAME in namespace data that admits only namespace backend: frontend ->
    data is blocked."""
    return f"""
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: data}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: backend}}}}
"""


POLICY = data_from_backend("from-backend")
SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 80, targetPort: 80, protocol: TCP}
"""


class UI:
    """A running `ovsctl ui` (stopped by its PID), its output in a file (a pipe nobody reads
    would fill up and stop it)."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=REPO)
        fd, self.log = tempfile.mkstemp(prefix="ovsctl-ui-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ovsctl.cli", "ui", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        line = ""
        while self.proc.poll() is None and time.monotonic() < deadline:
            line = next((x for x in self.output().splitlines() if " at http://" in x), "")
            if line:
                break
            time.sleep(0.1)  # polling the log for the line it prints
        if not line:
            raise AssertionError(f"ovsctl ui did not start: {self.stop()}")
        self.url = urllib.parse.urlsplit(line.split(" at ", 1)[1].strip())
        self.line = line

    def output(self) -> str:
        with open(self.log) as fh:
            return fh.read()

    def ask(
        self, path: str, method: str = "GET", host: str | None = None, headers=None
    ) -> tuple[int, object]:
        c = http.client.HTTPConnection(host or self.url.hostname, self.url.port, timeout=60)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            ctype = r.getheader("Content-Type") or ""
            return r.status, json.loads(body) if ctype == "application/json" else body
        finally:
            c.close()

    def get(self, path: str):
        status, doc = self.ask(path)
        assert status == 200, (path, status, doc)
        return doc

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        out = self.output()
        os.unlink(self.log)
        return out


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(3, lab_pods_yaml(node_names=NODES) + POLICY + SERVICE)


@pytest.fixture(scope="module")
def ui(lab):
    u = UI("--lab", lab.name, "--listen", "127.0.0.1:0")
    yield u
    u.stop()


def _installed(lab) -> dict[str, set]:
    """Every node's flows as (table, match, actions), counters left out."""
    from ovsctl.tools import flowdump

    return {
        n: {
            (r["table_id"], r["match"], r["actions"])
            for r in flowdump.dump(f"unix:{lab.ovs(n).rundir}/br-int.mgmt")
        }
        for n in NODES
    }


def _table(doc: dict, name: str) -> dict:
    return next(t for t in doc["tables"] if t["name"] == name)


def test_pipeline_counters_rise_while_traffic_flows(lab, ui):
    before = ui.get("/api/pipeline?node=node1")
    names = [t["name"] for t in before["tables"]]
    installed = [t.name for t in tables.PIPELINE if t.name in names]
    assert names == installed and {"Classifier", "IngressDefault", "Output"} <= set(names)
    assert _table(before, "IngressDefault")["drop_flows"] >= 1  # data/from-backend's isolation
    res = lab.probe()  # real packets between every pair of pods
    assert res["frontend/f1->data/d2:80/TCP"] is False and res["backend/b1->data/d2:80/TCP"]
    deadline = time.monotonic() + 10
    while True:
        after = ui.get("/api/pipeline?node=node1")
        rose = {
            t["name"]
            for t in after["tables"]
            if t["packets"] > _table(before, t["name"])["packets"]
        }
        if {"Classifier", "Conntrack", "L2Forwarding", "Output"} <= rose or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.3)
    assert {"Classifier", "Conntrack", "L2Forwarding", "Output"} <= rose
    assert after["time"] > before["time"]
    ingress = _table(after, "IngressDefault")
    assert ingress["drop_packets"] > _table(before, "IngressDefault")["drop_packets"]


def test_flows_and_owners(ui):
    owners = {o["id"]: o for o in ui.get("/api/owners?node=node1")["owners"]}
    ingress_default = tables.BY_NAME["IngressDefault"].id
    assert {"pod/data/d2", "pod/frontend/f2", "service/backend/web", "node/node0"} <= set(owners)
    assert ingress_default in owners["policy/data/from-backend"]["tables"]
    doc = ui.get(f"/api/flows?node=node1&table={ingress_default}&owner=policy/data/from-backend")
    assert doc["table"] == {"id": ingress_default, "name": "IngressDefault"}
    drops = [f for f in doc["flows"] if f["drop"]]
    assert drops and all(f["owner"]["kind"] == "policy" for f in doc["flows"])
    assert drops[0]["owner"]["text"] == "policy:data/from-backend/isolation"
    cls = ui.get("/api/flows?node=node1&table=0&owner=pod/data/d2")
    assert cls["total"] >= 1 and cls["flows"][0]["owner"]["name"] == "data/d2"
    hit = ui.get("/api/pipeline?node=node1&owner=policy/data/from-backend")
    assert {t["name"] for t in hit["tables"] if t["hit"]} == {"IngressRule", "IngressDefault"}
    status, err = ui.ask("/api/flows?node=node7&table=0")
    assert status == 404 and "node7" in err["error"]


def test_trace_of_a_blocked_pair_names_the_policy(ui):
    t = ui.get("/api/trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80")
    assert t["verdict"] == "dropped" and t["policy"] == "data/from-backend"
    assert [h["node"] for h in t["hops"]] == ["node0", "node1"]
    steps = [s for p in t["hops"][1]["passes"] for s in p["steps"]]
    assert "IngressDefault" in [s["table"] for s in steps]


def test_trace_across_nodes_has_both_pipelines(ui):
    t = ui.get("/api/trace?src=backend/b1&dst=data/d2&proto=tcp&dport=80")
    assert t["verdict"] == "delivered" and t["to"].startswith("pod data/d2 on node1")
    assert [h["node"] for h in t["hops"]] == ["node0", "node1"]
    for hop in t["hops"]:
        assert hop["passes"][0]["steps"][0]["table"] == "Classifier"
    status, err = ui.ask("/api/trace?src=frontend/nobody&dst=data/d2")
    assert status == 404 and "frontend/nobody" in err["error"]


def test_trace_to_a_service_and_to_an_address(lab, ui):
    t = ui.get("/api/trace?src=frontend/f1&dst=svc:backend/web")
    assert t["verdict"] == "delivered" and t["dport"] == 80
    assert t["service"]["service"] == "svc:backend/web"
    assert t["service"]["endpoint_pod"] in {"backend/b1", "backend/b2", "backend/b3"}
    assert t["to"].startswith(f"pod {t['service']['endpoint_pod']} on ")
    d2 = lab.pods()["data/d2"]["ip"]
    t = ui.get(f"/api/trace?src=frontend/f1&dst={d2}&proto=tcp&dport=80")
    # the address is the pod it belongs to
    assert (
        t["dst"] == "data/d2" and t["verdict"] == "dropped" and t["policy"] == "data/from-backend"
    )
    status, err = ui.ask("/api/trace?src=frontend/f1&dst=svc:backend/nothing")
    assert status == 404 and "backend/nothing" in err["error"]
    status, err = ui.ask("/api/pipeline?node=node1&owner=pod/data/nobody")
    assert status == 404 and "data/nobody" in err["error"]


def test_matrix_marks_the_blocked_cells(ui):
    doc = ui.get("/api/matrix?ns=data&probe=1")
    assert doc["namespaces"] == ["backend", "data", "frontend"]
    cells = {(c["src"], c["dst"], c["port"], c["proto"]): c for c in doc["cells"]}
    blocked = cells[("frontend/f1", "data/d2", 80, "tcp")]
    assert (blocked["intent"], blocked["traced"], blocked["probed"]) == (False, False, False)
    assert blocked["trace"] == "#trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80"
    allowed = cells[("backend/b1", "data/d2", 80, "tcp")]
    assert (allowed["intent"], allowed["traced"], allowed["probed"]) == (True, True, True)
    assert not any(c["differs"] for c in doc["cells"])
    assert all("data/" in c["src"] + c["dst"] for c in doc["cells"])


def test_topology(ui):
    doc = ui.get("/api/topology")
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert sorted(nodes) == NODES
    for n in NODES:
        assert sorted(t["to"] for t in nodes[n]["tunnels"]) == sorted(set(NODES) - {n})
        pods = {f"{p['ns']}/{p['name']}" for p in nodes[n]["pods"]}
        i = n[-1]
        assert pods == {f"frontend/f{int(i) + 1}", f"backend/b{int(i) + 1}", f"data/d{int(i) + 1}"}
        assert all(isinstance(p["port"], int) and p["ips"] for p in nodes[n]["pods"])
    web = next(s for s in doc["services"] if (s["ns"], s["name"]) == ("backend", "web"))
    assert sorted(e["pod"] for e in web["endpoints"]) == ["backend/b1", "backend/b2", "backend/b3"]
    assert sorted(e["node"] for e in web["endpoints"]) == NODES
    assert ui.get("/api/nodes")["nodes"][0] == {
        "name": "node0",
        "ip": nodes["node0"]["ip"],
        "pod_cidrs": nodes["node0"]["pod_cidrs"],
        "agent": "up",
    }


def test_read_only_and_local_unless_asked(lab, ui):
    before = _installed(lab)
    for path in ("/api/pipeline?node=node0", "/api/flows?node=node0&table=0", "/api/trace",
                 "/api/matrix", "/", "/static/index.html"):  # fmt: skip
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, doc = ui.ask(path, method)
            assert status == 405 and "read-only" in doc["error"], (method, path)
    assert _installed(lab) == before  # nothing changed on any switch
    # another web page in the user's browser cannot make it probe (or trace)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        status, doc = ui.ask("/api/matrix?probe=1", headers=headers)
        assert status == 403 and "refused" in doc["error"], headers
    # bound to 127.0.0.1 only: another loopback address is not served
    with pytest.raises(ConnectionRefusedError):
        ui.ask("/api/nodes", host="127.0.0.2")
    wide = UI("--lab", lab.name, "--listen", "0.0.0.0:0", "--allow-host", "ui.example")
    try:
        status, doc = wide.ask("/api/nodes", host="127.0.0.2")
        assert status == 200 and doc["lab"] == lab.name
        port = wide.url.port
        status, doc = wide.ask("/api/nodes", headers={"Host": f"rebound.evil.example:{port}"})
        assert status == 403 and "--allow-host" in doc["error"]  # DNS rebinding: refused
        assert wide.ask("/api/nodes", headers={"Host": f"ui.example:{port}"})[0] == 200
    finally:
        err = wide.stop()
    assert "not only this machine" in err and "ui.example" in err and "stopped" in err


def test_drawings_are_the_documents_laid_out(ui):
    doc = ui.get("/api/pipeline?node=node1")
    c = http.client.HTTPConnection(ui.url.hostname, ui.url.port, timeout=60)
    try:
        for path in ("/svg/pipeline?node=node1", "/svg/trace?src=frontend/f1&dst=data/d2&dport=80"):
            c.request("GET", path)
            r = c.getresponse()
            svg = r.read().decode()
            assert r.status == 200 and r.getheader("Content-Type") == "image/svg+xml", svg[:200]
            if "pipeline" in path:
                assert all(f'id="table-{t["id"]}"' in svg for t in doc["tables"])
            else:
                assert "verdict-dropped" in svg
    finally:
        c.close()


def test_one_node_without_the_lab(lab):
    """`ovsctl ui --agent SOCKET --ovs-rundir DIR`, as on a real node: node1 alone."""
    one = UI(
        "--agent", lab.api_socket("node1"), "--ovs-rundir", lab.ovs("node1").rundir,
        "--listen", "127.0.0.1:0",
    )  # fmt: skip
    try:
        assert one.get("/api/nodes") == {
            "lab": None,
            "nodes": [
                {
                    "name": "node1",
                    "ip": "172.30.0.11",
                    "pod_cidrs": ["10.244.1.0/24"],
                    "agent": "up",
                }
            ],
        }
        assert "IngressDefault" in {t["name"] for t in one.get("/api/pipeline")["tables"]}
        t = one.get("/api/trace?src=frontend/f2&dst=data/d2&dport=80")
        assert t["verdict"] == "dropped" and t["policy"] == "data/from-backend"
        remote = one.get("/api/trace?src=backend/b2&dst=data/d1&dport=80")  # on to node0
        assert remote["continues"]["node"] == "node0" and len(remote["hops"]) == 1
        cells = {
            (c["src"], c["dst"], c["port"]): c for c in one.get("/api/matrix?ns=data")["cells"]
        }
        assert cells[("frontend/f1", "data/d2", 80)]["scope"] == "ingress"
        assert cells[("frontend/f1", "data/d2", 80)]["traced"] is False
        status, err = one.ask("/api/matrix?probe=1")
        assert status == 400 and "needs a lab" in err["error"]
    finally:
        one.stop()


def test_a_node_whose_agent_is_gone(lab, ui):
    """Last in the module: node2's agent is killed and comes back."""
    lab.node_stop("node2", log=lambda *_: None)
    try:
        deadline = time.monotonic() + 10
        while ui.get("/api/nodes")["nodes"][2]["agent"] != "down":
            assert time.monotonic() < deadline, "node2's agent still reported up"
            time.sleep(0.3)
        # its switch still forwards and is still read; owners are ids without the agent
        doc = ui.get("/api/owners?node=node2")
        assert doc["owners"] and {o["kind"] for o in doc["owners"]} == {"unknown"}
        topo = ui.get("/api/topology")
        assert [n["agent"] for n in topo["nodes"]] == ["up", "up", "down"]
        # the others still trace: node0 -> node1 whole
        t = ui.get("/api/trace?src=frontend/f1&dst=data/d2&dport=80")
        assert t["verdict"] == "dropped" and [h["node"] for h in t["hops"]] == ["node0", "node1"]
        # towards node2: up to the tunnel, saying why it stops there
        t = ui.get("/api/trace?src=backend/b1&dst=data/d3&dport=80")
        assert [h["node"] for h in t["hops"]] == ["node0"] and t["continues"]["node"] == "node2"
        assert any("node node2: agent" in n for n in t["notes"]), t["notes"]
        # from node2: it cannot be traced, and the error names the node and its agent
        status, err = ui.ask("/api/trace?src=frontend/f3&dst=backend/b2&dport=80")
        assert status == 502 and "node2" in err["error"] and "agent" in err["error"], err
        # the matrix of the others: node2's cells unknown, the rest traced
        doc = ui.get("/api/matrix?ns=data")
        assert list(doc["down"]) == ["node2"]
        for c in doc["cells"]:
            on2 = c["src"].endswith("3") or c["dst"].endswith("3")  # f3, b3, d3 on node2
            assert (c["traced"] is None) == on2, c
        cells = {(c["src"], c["dst"], c["port"]): c for c in doc["cells"]}
        assert cells[("frontend/f1", "data/d2", 80)]["traced"] is False
        assert cells[("backend/b1", "data/d2", 80)]["traced"] is True
    finally:
        lab.node_start("node2", log=lambda *_: None)
    deadline = time.monotonic() + 15
    while ui.get("/api/nodes")["nodes"][2]["agent"] != "up":
        assert time.monotonic() < deadline, "node2's agent not back"
        time.sleep(0.3)
