"""ovsctl ui's server without root: parameters, paths, methods and errors, over a real HTTP
socket on 127.0.0.1 (the node it reads has no agent and no switch: its data answers 502)."""

from __future__ import annotations

import http.client
import json
import os
import types

import pytest

from ovsctl.ui import server
from ovsctl.ui.api import API, parse_key, trace_link
from ovsctl.ui.data import BadRequest, NodeSource, NotFound


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ui")
    api = API([NodeSource("n1", str(tmp_path / "agent.sock"), str(tmp_path / "ovs"))])
    s = server.make_server(api, "127.0.0.1", 0)
    import threading

    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()
    t.join(5)


def ask(srv, method, path, headers=None):
    c = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, dict(r.getheaders()), body
    finally:
        c.close()


def error_of(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"error"} and "Traceback" not in doc["error"]
    return doc["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_only_get_is_answered(srv, method):
    status, headers, body = ask(srv, method, "/api/nodes")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert "read-only" in error_of(body)


def test_nodes_answers_with_the_agent_down(srv):
    status, headers, body = ask(srv, "GET", "/api/nodes")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "lab": None,
        "nodes": [{"name": "n1", "ip": None, "pod_cidrs": [], "agent": "down"}],
    }
    status, _, body = ask(srv, "HEAD", "/api/nodes")
    assert status == 200 and body == b""


def test_unreachable_switch_is_a_502_naming_the_node(srv):
    status, _, body = ask(srv, "GET", "/api/pipeline?node=n1")
    assert status == 502 and error_of(body).startswith("node n1:")


@pytest.mark.parametrize(
    "path, status, words",
    [
        ("/api/pipeline?node=n9", 404, "no node 'n9'"),
        ("/api/pipeline?node=n1&color=red", 400, "unknown parameter 'color'"),
        ("/api/pipeline?node=n1&node=n1", 400, "given twice"),
        ("/api/pipeline?node=n1&owner=bogus", 400, "KIND/NAME"),
        ("/api/flows?node=n1", 400, "give table="),
        ("/api/flows?node=n1&table=x", 400, "table='x'"),
        ("/api/flows?node=n1&table=300", 400, "0..254"),
        ("/api/flows?node=n1&table=0&limit=-1", 400, "limit='-1'"),
        ("/api/trace?src=x/a", 400, "give src= and dst="),
        ("/api/trace?src=x/a&dst=y/b&proto=sctp", 400, "proto='sctp'"),
        ("/api/trace?src=x/a&dst=y/b&dport=70000", 400, "dport='70000'"),
        ("/api/trace?src=x/a&dst=y/b&family=5", 400, "family='5'"),
        ("/api/matrix?probe=yes", 400, "probe='yes'"),
        ("/api/nothing", 404, "no such path"),
        ("/etc/passwd", 404, "no such path"),
    ],
)
def test_bad_requests_get_a_clear_json_error(srv, path, status, words):
    got, _, body = ask(srv, "GET", path)
    assert got == status and words in error_of(body)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static//etc/passwd",
        "/static/",
        "/static/nothing.js",
    ],
)
def test_static_never_leaves_its_directory(srv, path):
    status, _, body = ask(srv, "GET", path)
    assert status == 404 and "no file" in error_of(body)


def test_static_path(tmp_path):
    root = tmp_path / "static"
    (root / "sub").mkdir(parents=True)
    (root / "app.js").write_text("x")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "link")
    assert server.static_path("app.js", str(root)) == str((root / "app.js").resolve())
    for bad in ("../secret", "/etc/passwd", "sub", "sub/../../secret", "link", "a\0b", "..\\x"):
        with pytest.raises(NotFound):
            server.static_path(bad, str(root))


def test_host_must_be_loopback_while_bound_to_loopback(srv):
    for host in ("evil.example", "10.0.0.1:8476", "localhost.evil.example"):
        status, _, body = ask(srv, "GET", "/api/nodes", {"Host": host})
        assert status == 403 and "loopback" in error_of(body)
    for host in ("localhost:8476", "127.0.0.1", "[::1]:8476"):
        assert ask(srv, "GET", "/api/nodes", {"Host": host})[0] == 200


def test_a_drawing_fails_as_its_document_does(srv):
    status, _, body = ask(srv, "GET", "/svg/pipeline?node=n1")
    assert status == 502 and error_of(body).startswith("node n1:")
    status, _, body = ask(srv, "GET", "/svg/pipeline?node=n1&x=1")
    assert status == 400


def test_a_drawing_that_cannot_be_made_is_a_503():
    def broken(doc):
        raise RuntimeError("Graphviz `dot` is not installed")

    with pytest.raises(server.Unavailable, match="not installed"):
        server._draw(types.SimpleNamespace(pipeline_svg=broken), "pipeline_svg", {})
    with pytest.raises(server.Unavailable, match="has no trace_svg"):
        server._draw(types.SimpleNamespace(), "trace_svg", {})


@pytest.mark.parametrize(
    "text, want",
    [
        ("127.0.0.1:8476", ("127.0.0.1", 8476)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(text, want):
    assert server.parse_listen(text) == want


@pytest.mark.parametrize("text", ["8476", ":8476", "127.0.0.1:", "127.0.0.1:99999", "h:x"])
def test_parse_listen_refuses(text):
    with pytest.raises(ValueError, match="--listen"):
        server.parse_listen(text)


def test_loopback_and_host_names():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1")
    assert server.is_loopback("localhost") and server.is_loopback("127.1.2.3")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("10.0.0.1")
    assert server.host_name("[::1]:8476") == "::1"
    assert server.host_name("LocalHost:1") == "localhost"
    assert server.host_name("::1") == "::1"


def test_params_and_trace_args():
    assert server.params("/api/flows", "node=a&table=3") == {"node": "a", "table": "3"}
    with pytest.raises(BadRequest, match="malformed"):
        server.params("/api/flows", "node")
    a = server.trace_args({"src": "x/a", "dst": "svc:y/web", "dport": "80", "family": "6"})
    assert a == {
        "src": "x/a",
        "dst": "svc:y/web",
        "proto": "tcp",
        "dport": 80,
        "sport": None,
        "family": 6,
    }


def test_matrix_keys_and_links():
    assert parse_key("x/a->y/b:80/TCP") == ("x/a", "y/b", 80, "tcp")
    assert trace_link("x/a", "y/b", "udp", 53) == "#trace?src=x/a&dst=y/b&proto=udp&dport=53"


def test_trace_steps_name_their_owners_as_ovsctl_trace_does():
    from ovsctl.tools.trace import NodeView
    from ovsctl.ui.api import name_owners

    cid = "153d7ca0ffee153d7ca0ffee"
    pod = {"namespace": "frontend", "name": "f1", "ip": "10.244.0.3", "node": "node0",
           "local": {"key": f"{cid}/eth0", "ofport": 4}}  # fmt: skip
    view = NodeView({"node": "node0", "pods": [pod]}, {})
    step = {"table_id": 0, "owner": f"pod/{cid}/eth0"}
    doc = {
        "hops": [
            {
                "node": "node0",
                "passes": [{"steps": [step, {"owner": "pipeline"}, {"owner": None}]}],
                "outcome": {"kind": "drop", "owner": "policy/data/deny/isolation"},
            },
            {"node": "elsewhere", "passes": [{"steps": [{"owner": "node/node1"}]}]},
        ]
    }
    out = name_owners(doc, {"node0": view})
    steps = out["hops"][0]["passes"][0]["steps"]
    assert [s["owner_text"] for s in steps] == ["pod frontend/f1", "pipeline", ""]
    assert steps[0]["owner"] == f"pod/{cid}/eth0"  # the raw key stays
    assert out["hops"][0]["outcome"]["owner_text"] == "policy data/deny isolation"
    assert out["hops"][1]["passes"][0]["steps"][0]["owner_text"] == "node/node1"


def test_the_node_image_can_draw():
    """Without Graphviz in the image every /svg on a real node is a 503 (the page then lists
    the tables): the Containerfile installs it and checks that dot runs."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "Containerfile")) as fh:
        text = fh.read()
    install = text.split("apt-get install", 1)[1].split("&&", 1)[0]
    assert "graphviz" in install.split() and "| dot -Tsvg" in text
