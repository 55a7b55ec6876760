"""The agent's endpoints (ovsctl/metrics.py) without an agent: metrics and health on TCP, the
views on a root-only unix socket; bounded threads, idle and slow clients timed out, heavy
answers two at a time, clients that go away logged without a traceback; and agentclient
reaching both. Loopback and a temporary directory only; no root needed."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading

import pytest

from ovsctl.agent.metrics import APIEndpoint, HTTPEndpoint, Metrics
from ovsctl.tools import agentclient
from ovsctl.util import wait_until

T = 10.0
LOGGER = "ovsctl.agent.metrics"


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="ovep-")  # AF_UNIX paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Views:
    """/status /flows /cluster returning canned data; `gate` holds /flows until set."""

    def __init__(self):
        self.calls = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def status(self):
        self.calls += 1
        return {"node": "n1", "secret": "SENTINEL-status"}

    def flows(self):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(T)
            return {"desired": [], "owners": {}, "secret": "SENTINEL-flows"}
        finally:
            with self.lock:
                self.running -= 1

    def cluster(self):
        return {"pods": [{"name": "SENTINEL-cluster"}]}

    def table(self):
        return {"/status": self.status, "/flows": self.flows, "/cluster": self.cluster}


@pytest.fixture
def endpoints(sockdir):
    made = []

    def make(timeout=10.0, max_conns=512, ready=lambda: None):
        views = Views()
        http = HTTPEndpoint(
            "127.0.0.1", 0, Metrics(None), ready, timeout=timeout, max_conns=max_conns
        )
        api = APIEndpoint(
            os.path.join(sockdir, "run", "agent.sock"),
            Metrics(None),
            ready,
            views.table(),
            timeout=timeout,
            max_conns=max_conns,
        )
        for e in (http, api):
            e.start()
            made.append(e)
        return http, api, views

    yield make
    for e in made:
        e.stop()


def tcp_get(port: int, path: str) -> tuple[int, bytes]:
    return agentclient.get_raw(path, f"http://127.0.0.1:{port}", timeout=5)


def test_tcp_has_metrics_and_health_only(endpoints):
    calls = []
    http, _api, views = endpoints(ready=lambda: calls.append(1) or "waiting for the cluster state")
    code, body = tcp_get(http.port, "/metrics")
    assert code == 200 and b"# TYPE ovsctl_cni_requests_total counter" in body
    assert tcp_get(http.port, "/healthz") == (200, b"ok\n")
    assert tcp_get(http.port, "/readyz") == (503, b"waiting for the cluster state\n")
    for path in ("/status", "/flows", "/cluster", "/status?x=1"):
        code, body = tcp_get(http.port, path)
        assert code == 404, path
        assert b"SENTINEL" not in body and b"unix socket" in body, body
    assert views.calls == 0
    assert tcp_get(http.port, "/nope")[0] == 404


def test_the_views_are_on_the_unix_socket_mode_0600_in_a_0700_dir(endpoints):
    _http, api, _views = endpoints()
    st = os.stat(api.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(api.path)).st_mode) == 0o700
    for url in (api.path, f"unix:{api.path}"):
        assert agentclient.get("/status", url)["secret"] == "SENTINEL-status"
        assert agentclient.get("/cluster", url)["pods"][0]["name"] == "SENTINEL-cluster"
    assert agentclient.get_raw("/healthz", api.path) == (200, b"ok\n")
    assert agentclient.get_raw("/metrics", api.path)[0] == 200
    with pytest.raises(agentclient.AgentUnreachable, match="HTTP 404"):
        agentclient.get("/nope", api.path)


def test_the_socket_refuses_other_users(endpoints):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534")
    _http, api, _views = endpoints()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(api.path)
                os.write(w, b"connected")
            except PermissionError:
                os.write(w, b"denied")
            except OSError as e:
                os.write(w, f"error {e}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"denied"
    os.close(r)


def test_stale_socket_replaced_and_removed_on_stop(sockdir):
    path = os.path.join(sockdir, "agent.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    api = APIEndpoint(path, Metrics(None), lambda: None, {})
    api.start()
    assert agentclient.get_raw("/healthz", path) == (200, b"ok\n")
    api.stop()
    assert not os.path.exists(path)


def threads() -> int:
    return threading.active_count()


def test_idle_connections_take_no_threads_and_are_timed_out(endpoints):
    http, _api, _views = endpoints(timeout=1.0)
    before = threads()
    idle = [socket.create_connection(("127.0.0.1", http.port)) for _ in range(200)]
    try:
        partial = socket.create_connection(("127.0.0.1", http.port))
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert tcp_get(http.port, "/healthz") == (200, b"ok\n")
        assert tcp_get(http.port, "/metrics")[0] == 200
        assert threads() <= before + 2  # the two workers at most, none per connection
        for s in [*idle, partial]:  # each is closed by the endpoint after its second
            s.settimeout(T)
            assert s.recv(100) == b""
    finally:
        for s in idle:
            s.close()
        partial.close()


def test_too_many_connections_close_the_oldest(endpoints):
    http, _api, _views = endpoints(max_conns=20)
    idle = [socket.create_connection(("127.0.0.1", http.port)) for _ in range(60)]
    try:
        assert tcp_get(http.port, "/healthz") == (200, b"ok\n")
        idle[0].settimeout(T)
        assert idle[0].recv(100) == b""  # evicted
    finally:
        for s in idle:
            s.close()


def test_heavy_views_two_at_a_time_and_health_meanwhile(endpoints):
    _http, api, views = endpoints()
    views.gate.clear()
    results = []

    def client():
        results.append(agentclient.get("/flows", api.path, timeout=T)["secret"])

    ts = [threading.Thread(target=client) for _ in range(8)]
    for t in ts:
        t.start()
    wait_until(lambda: views.running == 2, T, "two views running")
    assert agentclient.get_raw("/healthz", api.path) == (200, b"ok\n")  # not behind them
    assert agentclient.get_raw("/readyz", api.path) == (200, b"ok\n")
    views.gate.set()
    for t in ts:
        t.join(T)
    assert results == ["SENTINEL-flows"] * 8
    assert views.most == 2


def test_a_client_that_goes_away_logs_one_debug_line(endpoints, caplog):
    _http, api, views = endpoints()
    views.gate.clear()
    with caplog.at_level(logging.DEBUG, LOGGER):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(api.path)
        s.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: views.running == 1, T, "the view running")
        s.close()  # aborted before the answer
        t = socket.create_connection(("127.0.0.1", _http.port))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.sendall(b"GET /metr")
        t.close()  # a reset mid-request
        views.gate.set()
        wait_until(lambda: "client went away" in caplog.text, T, "the debug line")
        assert agentclient.get_raw("/healthz", api.path)[0] == 200
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_bad_requests(endpoints):
    http, _api, _views = endpoints()

    def raw(data: bytes) -> bytes:
        s = socket.create_connection(("127.0.0.1", http.port))
        s.settimeout(T)
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b

    assert raw(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 431")
    head = raw(b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")


def test_agentclient_paths_and_defaults(monkeypatch):
    monkeypatch.delenv("OVSCTL_AGENT", raising=False)
    assert agentclient.default_url() == "/run/ovsctl/agent.sock"
    monkeypatch.setenv("OVSCTL_AGENT", "unix:/x/y.sock")
    assert agentclient.socket_path(agentclient.default_url()) == "/x/y.sock"
    assert agentclient.socket_path("/a/b.sock") == "/a/b.sock"
    assert agentclient.socket_path("http://127.0.0.1:9476") is None
    with pytest.raises(agentclient.AgentUnreachable, match="nope.sock"):
        agentclient.get("/status", "/nonexistent/nope.sock", timeout=1)
