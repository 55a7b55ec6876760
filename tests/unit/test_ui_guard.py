"""ovsctl ui's defences, without root, over a real HTTP socket: other sites and other Host
names refused, the headers of every reply, how much it does at once, one trace per query,
the pipeline drawing's cache, parameters in odd digits. The API under the server is a stub
whose documents the tests choose (the real one needs a lab: tests/e2e/test_ui_api.py)."""

from __future__ import annotations

import copy
import http.client
import json
import os
import socket
import threading
import time
import types

import pytest

from ovsctl.ui import draw, guard, server
from ovsctl.ui.api import API
from ovsctl.ui.data import NotFound

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ui")
with open(os.path.join(DATA, "pipeline.json")) as fh:
    PIPELINE = json.load(fh)


class StubAPI(API):
    """Documents from the test: `pipeline_docs` in turn, traces that wait for `release`."""

    def __init__(self):
        super().__init__([])
        self.pipeline_docs = [PIPELINE]
        self.traces: list[dict] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Semaphore(0)

    def nodes(self):
        return {"lab": None, "nodes": []}

    def pipeline(self, node, owner=None):
        return self.pipeline_docs[0] if len(self.pipeline_docs) == 1 else self.pipeline_docs.pop(0)

    def trace(self, src, dst, proto="tcp", dport=None, sport=None, family=None):
        self.traces.append({"src": src, "dst": dst})
        self.started.release()
        assert self.release.wait(20)
        if src == "x/nobody":
            raise NotFound("no pod x/nobody")
        return {"verdict": "delivered", "src": src, "dst": dst, "n": len(self.traces)}

    def matrix(self, namespace=None, probe=False):
        return {"namespaces": [], "pods": [], "cells": []}


def serve(host="127.0.0.1", **kw):
    api = StubAPI()
    s = server.make_server(api, host, 0, **kw)
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    s.stub = api
    return s


def stop(s):
    s.stub.release.set()
    s.shutdown()
    s.server_close()


@pytest.fixture
def srv():
    s = serve()
    yield s
    stop(s)


def ask(srv, path, headers=None, method="GET", addr="127.0.0.1"):
    c = http.client.HTTPConnection(addr, srv.server_address[1], timeout=20)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def error_of(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"error"}
    return doc["error"]


# ---- other sites ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1 is the same site
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another server on this machine
        {"Origin": "http://127.0.0.1:x"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
    ],
)
@pytest.mark.parametrize("path", ["/api/nodes", "/api/matrix?probe=1", "/svg/topology"])
def test_another_site_cannot_make_it_work(srv, headers, path):
    status, got, body = ask(srv, path, headers)
    assert status == 403 and "refused" in error_of(body), (status, body)
    assert got["X-Content-Type-Options"] == "nosniff"


def test_the_page_itself_is_answered(srv):
    port = srv.server_address[1]
    for headers in (
        {},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
        {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
    ):
        status, _, body = ask(srv, "/api/nodes", headers)
        assert status == 200 and json.loads(body) == {"lab": None, "nodes": []}, headers
    # a link to the page from elsewhere opens it (it asks /api/ itself, same-origin)
    assert ask(srv, "/", {"Sec-Fetch-Site": "cross-site"})[0] == 200


def test_every_reply_has_the_security_headers(srv):
    replies = [
        ask(srv, "/"),
        ask(srv, "/static/app.js"),
        ask(srv, "/api/nodes"),
        ask(srv, "/api/nothing"),
        ask(srv, "/api/nodes", method="POST"),
        ask(srv, "/api/nodes", {"Host": "evil.example"}),
        ask(srv, "/api/flows?table=x"),
    ]
    for status, headers, _ in replies:
        assert headers["Content-Security-Policy"] == guard.CSP, status
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff", status


# ---- Host names -------------------------------------------------------------------------------


def test_check_host():
    allowed = frozenset({"ui.example"})
    for header, bound in [
        ("127.0.0.1:8476", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("ui.example:8476", "127.0.0.1"),
        ("10.1.2.3:8476", "0.0.0.0"),  # an address: no DNS rebinding through it
        ("[fd00::1]:8476", "::"),
        ("ui.example", "0.0.0.0"),
    ]:
        guard.check_host(header, bound, allowed)
    for header, bound in [
        ("evil.example", "127.0.0.1"),
        ("10.1.2.3", "127.0.0.1"),
        ("evil.example:8476", "0.0.0.0"),
        ("127.0.0.1.evil.example", "0.0.0.0"),
        ("", "0.0.0.0"),
    ]:
        with pytest.raises(guard.Forbidden):
            guard.check_host(header, bound, allowed)


def test_a_wide_listen_answers_addresses_and_allowed_names_only():
    s = serve("0.0.0.0", allow_hosts=["UI.example"])
    try:
        port = s.server_address[1]
        status, _, body = ask(s, "/api/nodes", {"Host": f"rebind.evil.example:{port}"})
        assert status == 403 and "--allow-host rebind.evil.example" in error_of(body)
        for host in (f"ui.example:{port}", f"127.0.0.1:{port}", f"192.0.2.7:{port}"):
            assert ask(s, "/api/nodes", {"Host": host})[0] == 200, host
    finally:
        stop(s)


def test_the_one_node_flags_with_lab_are_refused():
    args = types.SimpleNamespace(lab="x", agent="/a.sock", ovs_rundir=None, bridge="br0")
    with pytest.raises(ValueError, match="--agent and --bridge name one node; with --lab"):
        server.node_args(args)
    args = types.SimpleNamespace(lab=None, agent=None, ovs_rundir="/r", bridge=None)
    assert server.node_args(args)[1:] == ("/r", "br-int")


# ---- how much at once -------------------------------------------------------------------------


def test_one_trace_per_query_shared_by_the_page_and_its_drawing(srv):
    stub = srv.stub
    stub.release.clear()
    got = []
    q = "src=x/a&dst=y/b&dport=80"
    workers = [
        threading.Thread(target=lambda: got.append(ask(srv, "/api/trace?" + q))) for _ in range(3)
    ]
    for w in workers:
        w.start()
    assert stub.started.acquire(timeout=10)
    stub.release.set()  # the others wait for this trace or, come later, find it kept
    for w in workers:
        w.join(20)
    assert [g[0] for g in got] == [200, 200, 200]
    assert len(stub.traces) == 1 and {json.loads(g[2])["n"] for g in got} == {1}
    # a different query is a trace of its own; an error is not kept
    assert json.loads(ask(srv, "/api/trace?src=x/a&dst=y/c")[2])["n"] == 2
    for _ in range(2):
        status, _, body = ask(srv, "/api/trace?src=x/nobody&dst=y/c")
        assert status == 404 and "x/nobody" in error_of(body)
    assert len(stub.traces) == 4


def test_more_traces_at_once_than_the_slots_are_refused(srv):
    stub = srv.stub
    stub.release.clear()
    held = []
    workers = [
        threading.Thread(target=lambda i=i: held.append(ask(srv, f"/api/trace?src=x/{i}&dst=y/b")))
        for i in range(guard.HEAVY)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        assert stub.started.acquire(timeout=10)
    status, headers, body = ask(srv, "/api/trace?src=x/late&dst=y/b")
    assert status == 503 and "busy" in error_of(body) and headers["Retry-After"] == "2"
    status, _, body = ask(srv, "/api/matrix")
    assert status == 503 and "busy" in error_of(body)
    stub.release.set()
    for w in workers:
        w.join(20)
    assert [h[0] for h in held] == [200] * guard.HEAVY
    assert ask(srv, "/api/matrix")[0] == 200  # the slots are free again


def test_more_connections_than_the_cap_get_a_503():
    s = serve(max_connections=1)
    try:
        hold = socket.create_connection(s.server_address[:2], timeout=10)
        hold.sendall(b"GET /api/nodes HTTP/1.1\r\n")  # a request that has not ended
        deadline = time.monotonic() + 10
        while True:  # its thread has the one slot once it reads the line
            status, headers, body = ask(s, "/api/nodes")
            if status == 503 or time.monotonic() > deadline:
                break
        assert status == 503 and "too many requests" in error_of(body)
        assert headers["Content-Security-Policy"] == guard.CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        hold.sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert b" 200 " in hold.recv(100)
        hold.close()
        deadline = time.monotonic() + 10
        while ask(s, "/api/nodes")[0] != 200:
            assert time.monotonic() < deadline, "the slot was not given back"
    finally:
        stop(s)


# ---- parameters and http.server's own errors --------------------------------------------------


@pytest.mark.parametrize(
    "path, words",
    [
        ("/api/flows?node=n&table=%C2%B2", "table='²'"),  # superscript two: isdigit() says yes
        ("/api/flows?node=n&table=%D9%A3", "table='٣'"),  # Arabic-Indic three
        ("/api/trace?src=x/a&dst=y/b&dport=%EF%BC%98%EF%BC%90", "dport='８０'"),  # fullwidth
        ("/api/flows?node=n&table=0&limit=99999999999", "limit="),
    ],
)
def test_numbers_are_ascii_digits(srv, path, words):
    status, _, body = ask(srv, path)
    assert status == 400 and words in error_of(body)


def test_parse_listen_takes_ascii_digits_only():
    for text in ("127.0.0.1:²", "127.0.0.1:٨٠"):
        with pytest.raises(ValueError, match="a number"):
            server.parse_listen(text)


def raw(srv, data: bytes) -> bytes:
    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply


def test_http_servers_own_errors_are_json_with_the_headers(srv):
    # a quote in the request line: pasted into the old error template it was invalid JSON
    reply = raw(srv, b'GET /x HTTP/1.1"x\r\n\r\n')
    assert json.loads(reply)["error"].startswith("400 Bad request version")
    head, _, body = raw(srv, b"GET / HTTP/1.1\r\nX: " + b'"' * 70000 + b"\r\n\r\n").partition(
        b"\r\n\r\n"
    )
    assert head.split(b" ")[1] == b"431" and json.loads(body)["error"].startswith("431 ")
    assert b"X-Content-Type-Options: nosniff" in head and b"Content-Security-Policy" in head
    # a request line it cannot read: answered as to HTTP/0.9, the body alone
    assert error_of(raw(srv, b"GET /api/nodes HTTP/1.1 extra\r\n\r\n")).startswith("400 ")
    head, _, body = raw(srv, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"414" and b"Content-Type: application/json" in head
    assert error_of(body).startswith("414 ")


# ---- drawings ---------------------------------------------------------------------------------


def test_a_cached_pipeline_drawing_gets_the_new_counters_and_new_exits_redraw(srv, monkeypatch):
    calls = []
    real = draw.pipeline_svg
    monkeypatch.setattr(draw, "pipeline_svg", lambda doc: calls.append(1) or real(doc))
    later = copy.deepcopy(PIPELINE)
    later["tables"][0]["packets"] += 123_456
    later["tables"][0]["flows"] += 1
    t0 = later["tables"][0]["id"]
    moved = copy.deepcopy(later)
    moved["exits"] = [x for x in moved["exits"] if x["table"] != moved["exits"][0]["table"]]
    srv.stub.pipeline_docs = [PIPELINE, later, moved, moved]
    first = ask(srv, "/svg/pipeline")[2].decode()
    second = ask(srv, "/svg/pipeline")[2].decode()
    assert len(calls) == 1  # the same layout: from the cache …
    want = f'id="table-{t0}-packets">{draw.count(later["tables"][0]["packets"])} pkts<'
    assert want in second and want not in first  # … with the counters of now
    assert f'id="table-{t0}-flows">{draw.count(later["tables"][0]["flows"])} flows<' in second
    ask(srv, "/svg/pipeline")
    assert len(calls) == 2  # other exits: drawn anew


def test_a_drawing_dot_wrote_badly_is_a_503():
    def bad(doc):
        return draw.finish("<svg><g></svg>")

    with pytest.raises(server.Unavailable, match="drawing failed"):
        server._draw(types.SimpleNamespace(trace_svg=bad), "trace_svg", {})
