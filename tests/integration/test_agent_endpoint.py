"""The agent's endpoints on one real node (tests.helpers.Node): /metrics and the health
endpoints on TCP port 9476 (what kubelet probes and Prometheus scrape, reachable from every
pod), the views (/status /flows /cluster: every pod, Service and policy) only on the agent's
root-only unix socket; connections bounded and timed out; a CNI ADD still served while
clients loop the heaviest view; and CNI requests over the 4 MiB limit answered with code 7."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from ovsctl.tools import agentclient
from tests.helpers import uid, wait_for
from tests.integration.test_single_node import http_get

pytestmark = pytest.mark.integration


def log_since(node, offset: int) -> str:
    with open(node.agent_log, errors="replace") as fh:
        fh.seek(offset)
        return fh.read()


def log_size(node) -> int:
    return os.path.getsize(node.agent_log)


def agent_threads(node) -> int:
    with open(f"/proc/{node.agent_proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def test_the_agent_process_is_the_one_we_count(node):
    with open(f"/proc/{node.agent_proc.pid}/cmdline", "rb") as fh:
        assert b"agent" in fh.read()  # `ip netns exec` execs the agent itself


def test_metrics_and_health_on_tcp_views_not(node):
    assert http_get(node, "/healthz") == (200, "ok\n")
    assert http_get(node, "/readyz") == (200, "ok\n")
    code, text = http_get(node, "/metrics")
    assert code == 200 and "# TYPE ovsctl_cni_requests_total counter" in text
    for path in ("/status", "/flows", "/cluster"):
        code, body = http_get(node, path)
        assert code == 404, (path, body)
        assert node.ns not in body and "pods" not in body and "{" not in body, body


def test_views_on_the_unix_socket_only_for_root(node):
    st = os.stat(node.api_sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert agentclient.get("/status", node.api_sock)["node"] == node.ns
    assert "desired" in agentclient.get("/flows", f"unix:{node.api_sock}")
    assert agentclient.get("/cluster", node.api_sock)["node"] == node.ns
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n"
        "    s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    # the socket's directory is the node's private tmp dir: let nobody through to the socket
    # itself, so only the socket's own mode decides
    mode = stat.S_IMODE(os.stat(node.dir).st_mode)
    os.chmod(node.dir, 0o711)
    try:
        p = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
            + [sys.executable, "-I", "-c", code, node.api_sock],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.chmod(node.dir, mode)
    assert p.stdout.strip() == "denied", p.stdout + p.stderr


IDLE = """
import socket, sys
conns = [socket.create_connection(("127.0.0.1", 9476)) for _ in range(int(sys.argv[1]))]
print("open", flush=True)
sys.stdin.read()
"""


def test_idle_connections_do_not_make_threads(node):
    before = agent_threads(node)
    p = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, sys.executable, "-c", IDLE, "200"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "open"
        assert http_get(node, "/healthz") == (200, "ok\n")
        assert http_get(node, "/metrics")[0] == 200
        during = agent_threads(node)
        assert during <= before + 4, (before, during)  # the endpoint's workers at most
    finally:
        p.stdin.close()
        p.wait(30)


ABORT = """
import socket, struct
s = socket.create_connection(("127.0.0.1", 9476))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.sendall(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
s.close()  # reset before the answer is read
"""


def test_aborted_requests_log_no_traceback(node):
    start = log_size(node)
    for _ in range(5):
        p = subprocess.run(
            ["ip", "netns", "exec", node.ns, sys.executable, "-c", ABORT],
            capture_output=True,
            timeout=30,
        )
        assert p.returncode == 0, p.stderr
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(node.api_sock)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, bytes(8))
        s.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    assert agentclient.get("/status", node.api_sock)["ready"] == "ok"
    text = log_since(node, start)
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def test_cni_add_goes_on_while_clients_loop_flows(node):
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def loop():
        while not stop.is_set():
            try:
                agentclient.get("/flows", node.api_sock, timeout=30)
                key = "ok"
            except agentclient.AgentUnreachable:
                key = "failed"
            with lock:
                counts[key] += 1

    clients = [threading.Thread(target=loop, daemon=True) for _ in range(8)]
    for t in clients:
        t.start()
    pods = []
    try:
        wait_for(lambda: counts["ok"] >= 8, 30, what="the clients looping /flows")
        for i in range(4):
            pods.append(node.add_pod(f"busy{i}{uid(3)}"))  # asserts the ADD succeeded
    finally:
        stop.set()
        for t in clients:
            t.join(60)
    assert len(pods) == 4 and all(p["ip"] for p in pods)
    assert counts["ok"] > 8 and counts["failed"] == 0, counts
    for p in pods:
        assert node.cni("DEL", p["cid"], p["netns"]).returncode == 0


def _raw_cni(path: str, payload: bytes) -> dict:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(30)
    c.connect(path)
    try:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
        return json.loads(data)
    finally:
        c.close()


def test_oversized_cni_requests_are_invalid_config(node):
    start = log_size(node)
    conf = node.netconf("1.0.0", padding="x" * (5 << 20))
    p = node.cni("ADD", f"big{uid(8)}", "/var/run/netns/none", conf=conf)
    out = json.loads(p.stdout)
    assert p.returncode != 0 and out["code"] == 7, out
    assert "4194304" in out["msg"]
    # a client that is not the shim: the agent itself answers 7 and closes cleanly
    req = {"command": "ADD", "containerID": "big", "config": {"pad": "x" * (5 << 20)}}
    reply = _raw_cni(node.sock, json.dumps(req).encode() + b"\n")
    assert reply["error"]["code"] == 7 and "4194304" in reply["error"]["msg"], reply
    assert node.cni("STATUS", "", "", "").returncode == 0  # still serving
    text = log_since(node, start)
    assert "error 7 request too large" in text and "Traceback" not in text
