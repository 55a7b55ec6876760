"""The OpenFlow channel belongs to root and the real switch (issue 14, item 2).

The agent connects to OVS's management socket `<rundir>/br-int.mgmt` (root-only) and listens on
nothing; the bridge has no Controller row. Each attack from the issue is replayed here against a
real OVS and a real agent, the unprivileged ones as uid 65534 (setpriv), and each is checked by
what the attacker gets (errno, bytes, connections) and what the pods get (pings)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from ovsctl.tools import agentclient
from tests.helpers import in_ns, wait_for
from tests.integration.test_single_node import http_get, ping

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3"]

# What a local user tries: TCP connections to the old controller ports and the agent's HTTP
# port (speaking OpenFlow HELLO to whatever answers), and unix connections to given paths.
PROBE = r"""
import errno, json, socket, sys

def tcp(port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    s.sendall(bytes([5, 0, 0, 8, 0, 0, 0, 1]))  # OFPT_HELLO, OpenFlow 1.4
    s.shutdown(socket.SHUT_WR)
    try:
        data = s.recv(64)
    except OSError:
        data = b""
    return "answered:" + data[:16].decode("latin-1")

def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(path)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    return "connected"

ports, paths = sys.argv[1], sys.argv[2:]
print(json.dumps({"tcp": {p: tcp(int(p)) for p in ports.split(",")},
                  "unix": {p: unix(p) for p in paths}}))
"""

# A rogue controller: listens where the old agent listened and reports what connects.
ROGUE_TCP = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(8)
print("listening", flush=True)
while True:
    c, _ = srv.accept()
    print("accepted", flush=True)
    n = 0
    while True:
        try:
            b = c.recv(4096)
        except OSError:
            b = b""
        if not b:
            break
        n += len(b)
    print(f"eof {n}", flush=True)
    c.close()
"""

# A rogue switch: a unix listener at a path the agent is pointed at (as if planted in its rundir).
ROGUE_UNIX = r"""
import socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(8)
print("listening", flush=True)
while True:
    c, _ = srv.accept()
    c.settimeout(10)
    try:
        b = c.recv(4096)
    except OSError:
        b = b""
    print(f"accepted, received {len(b)} bytes", flush=True)
    c.close()
"""


class Rogue:
    """A process as uid 65534 in the node's netns; its output lines are collected."""

    def __init__(self, node, script: str, *args: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, *NOBODY, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: "listening" in self.lines, 10, what=f"rogue listening ({self.lines})")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def pods(node):
    return [node.add_pod(n) for n in ("ca", "cb")]


def status(node) -> dict:
    return agentclient.get("/status", node.api_sock)  # the views: on the root-only socket


def http_or_none(node, path: str) -> tuple[int, str]:
    """http_get, or (0, "") while the agent's endpoint is not up yet."""
    try:
        return http_get(node, path)
    except AssertionError:
        return 0, ""


def mgmt(node) -> str:
    return os.path.join(node.ovs.rundir, "br-int.mgmt")


def agent_listeners(node) -> set[tuple[str, str]]:
    """(kind, local address) of every listening socket the agent process holds."""
    pid = node.agent_proc.pid
    out = in_ns(node.ns, "ss", "-Hlnp", "-A", "inet,unix").stdout
    found = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            cols = line.split()
            found.add((cols[0], cols[4]))
    return found


def probe_as_nobody(node, ports: list[int], paths: list[str]) -> dict:
    p = in_ns(node.ns, *NOBODY, "-c", PROBE, ",".join(map(str, ports)), *paths)
    return json.loads(p.stdout)


def agent_threads(node) -> int:
    return len(os.listdir(f"/proc/{node.agent_proc.pid}/task"))


def restart_agent(node, rundir: str | None = None, wait: bool = True) -> None:
    node.kill_agent()
    node.agent_rundir = rundir
    node.start_agent(wait=wait)


def test_nothing_listens_for_openflow_and_a_local_user_reaches_neither_agent_nor_switch(node, pods):
    # the agent's only listeners: the HTTP endpoint, the CNI socket and the views' socket
    # (both mode 0600)
    assert agent_listeners(node) == {
        ("tcp", "0.0.0.0:9476"),
        ("u_str", node.sock),
        ("u_str", node.api_sock),
    }
    # the management socket is root's: not even a path through a world-open directory helps
    st = os.stat(mgmt(node))
    assert st.st_uid == 0 and st.st_mode & 0o007 == 0, oct(st.st_mode)
    world = tempfile.mkdtemp(prefix="ofchan-", dir="/tmp")
    os.chmod(world, 0o755)
    link = os.path.join(world, "br-int.mgmt")
    os.link(mgmt(node), link)  # the same socket inode, reachable by path for everyone
    try:
        got = probe_as_nobody(node, [6653, 6633, 9476], [link, mgmt(node), node.sock])
    finally:
        shutil.rmtree(world)
    assert got["tcp"]["6653"] == "ECONNREFUSED" and got["tcp"]["6633"] == "ECONNREFUSED"
    # HELLO to the only TCP port gets no OpenFlow: an HTTP error, or the connection closed
    # once no HTTP request head came (the endpoint's request timeout)
    answer = got["tcp"]["9476"]
    assert answer == "answered:" or answer.startswith("answered:HTTP/"), answer
    assert set(got["unix"].values()) == {"EACCES"}, got
    # ...while root gets in (the agent, ovs-ofctl)
    assert node.ovs.ofctl("show", f"unix:{mgmt(node)}")


def test_an_upgraded_bridge_loses_its_tcp_controller_so_a_rogue_listener_gets_nothing(node, pods):
    a, b = pods
    node.kill_agent()
    # what the old agent left on the bridge, and a local user waiting on its port
    node.ovs.vsctl("set-controller", "br-int", "tcp:127.0.0.1:6653")
    rogue = Rogue(node, ROGUE_TCP, "6653")
    try:
        wait_for(
            lambda: "accepted" in rogue.lines,
            15,
            what="OVS connecting to the rogue listener (the hole the old target left)",
        )
        node.start_agent()
        assert node.ovs.vsctl("get-controller", "br-int").strip() == ""
        assert node.ovs.vsctl("--columns=_uuid", "list", "Controller").strip() == ""
        # OVS dropped the rogue's connection, and the rogue got no OpenFlow flows from us
        wait_for(lambda: any(x.startswith("eof") for x in rogue.lines), 10, what="rogue eof")
        assert node.ovs.vsctl("get", "Bridge", "br-int", "fail_mode").strip() == "secure"
        # the flush OVS does when the last controller goes came before the agent's round
        wait_for(lambda: ping(a["ns"], b["ip"]), 10, what="pods ping after the upgrade")
        assert status(node)["openflow"]["connected"]
    finally:
        rogue.stop()


def test_flows_added_behind_the_agents_back_go_when_it_restarts(node, pods):
    a, b = pods
    assert ping(a["ns"], b["ip"])
    foreign = [
        "cookie=0,priority=65535,actions=drop",  # black-holes every pod
        "cookie=0x004d000400000001,priority=65534,ip,nw_src=203.0.113.1,actions=drop",  # round 77
        "cookie=0x0000020000000abc,priority=65534,ip,nw_src=203.0.113.2,actions=drop",  # round 0
    ]
    learned = "cookie=0x0000060000000abc,priority=65534,ip,nw_src=203.0.113.3,actions=drop"
    for spec in [*foreign, learned]:
        node.ovs.ofctl("add-flow", "br-int", spec)
    assert not ping(a["ns"], b["ip"])
    restart_agent(node)
    dump = node.ovs.ofctl("dump-flows", "br-int", "--no-stats")
    assert "priority=65535" not in dump
    assert "203.0.113.1" not in dump and "203.0.113.2" not in dump
    # round 0 with feature "affinity" is a flow the switch learned (sessionAffinity): kept
    assert "cookie=0x60000000abc" in dump and "203.0.113.3" in dump
    assert status(node)["last_sync"]["deleted_foreign"] == 2
    wait_for(lambda: ping(a["ns"], b["ip"]), 10, what="pods ping again")
    node.ovs.ofctl("del-flows", "br-int", "cookie=0x0000060000000abc/-1")


def test_only_the_bridges_own_switch_is_accepted_and_healthz_follows_the_channel(node, pods):
    """The agent pointed at a run directory whose br-int.mgmt is (1) missing, (2) a socket a
    local user listens on, (3) another bridge's management socket, (4) br-int's."""
    a, b = pods
    node.ovs.vsctl(
        "add-br", "br-x", "--", "set", "Bridge", "br-x", "datapath_type=netdev",
        "fail_mode=secure", "other_config:datapath-id=00000000000000aa",
    )  # fmt: skip
    fake = tempfile.mkdtemp(prefix="ofchan-run-", dir="/tmp")
    os.chmod(fake, 0o755)
    planted = os.path.join(fake, "br-int.mgmt")
    rogue_dir = tempfile.mkdtemp(prefix="ofchan-rogue-", dir="/tmp")
    os.chmod(rogue_dir, 0o777)
    rogue = None
    try:
        # (1) nothing to connect to: not ready, and after the grace period not healthy either
        restart_agent(node, fake, wait=False)
        code, body = wait_for(
            lambda: (r := http_or_none(node, "/healthz"))[0] == 503 and r, 40, what="healthz 503"
        )
        assert "cannot connect" in body and planted in body, (
            f"{body}\nagent log:\n{node.tail_log(60)}"
        )
        assert http_get(node, "/readyz")[0] == 503
        assert status(node)["openflow"]["healthy"] != "ok"

        # (2) a socket whose listener is not root: refused before a byte is sent
        rogue = Rogue(node, ROGUE_UNIX, os.path.join(rogue_dir, "sock"))
        os.symlink(os.path.join(rogue_dir, "sock"), planted)
        wait_for(
            lambda: "runs as uid 65534" in (status(node)["openflow"]["error"] or ""),
            10,
            what="the agent refusing a listener of uid 65534",
        )
        wait_for(lambda: rogue.lines[1:], 10, what="the rogue's accept")
        assert rogue.lines[1] == "accepted, received 0 bytes"
        assert http_get(node, "/healthz")[0] == 503

        # (3) root's socket, but another bridge: refused on its datapath ID, given nothing
        os.unlink(planted)
        os.symlink(os.path.join(node.ovs.rundir, "br-x.mgmt"), planted)
        wait_for(
            lambda: "datapath ID 00000000000000aa" in (status(node)["openflow"]["error"] or ""),
            10,
            what="the agent refusing br-x",
        )
        assert node.ovs.ofctl("dump-flows", "br-x", "--no-stats").strip() == ""
        assert http_get(node, "/healthz")[0] == 503 and http_get(node, "/readyz")[0] == 503

        # (4) br-int's own: accepted, synced, healthy
        os.unlink(planted)
        os.symlink(mgmt(node), planted)
        wait_for(lambda: http_get(node, "/readyz")[0] == 200, 20, what="readyz 200")
        assert http_get(node, "/healthz") == (200, "ok\n")
        st = status(node)["openflow"]
        assert st["error"] is None and st["listen"] == f"unix:{planted}"
        assert st["datapath_id"] == node.ovs.vsctl(
            "get", "Bridge", "br-int", "other_config:datapath-id"
        ).strip().strip('"')
        assert ping(a["ns"], b["ip"])
    finally:
        if rogue is not None:
            rogue.stop()
        restart_agent(node)
        node.ovs.vsctl("del-br", "br-x")
        shutil.rmtree(fake, ignore_errors=True)
        shutil.rmtree(rogue_dir, ignore_errors=True)


def _reconnected(node, before: int):
    of = status(node)["openflow"]
    return of["connected"] and of["reconnects"] > before and of


def test_switch_side_disconnects_and_restarts_leave_no_threads_behind(node, pods):
    a, b = pods
    protocols = ("OpenFlow14,OpenFlow15", "OpenFlow13,OpenFlow14,OpenFlow15")  # [1]: the agent's

    def cycle(i: int) -> None:
        before = status(node)["openflow"]["reconnects"]
        # a change of the bridge's protocols makes OVS close its management connections
        node.ovs.vsctl("set", "Bridge", "br-int", f"protocols={protocols[i % 2]}")
        wait_for(lambda: _reconnected(node, before), 10, what=f"reconnect {i}")

    def restart_vswitchd() -> None:
        before = status(node)["openflow"]["reconnects"]
        node.ovs.stop_daemon("ovs-vswitchd")
        node.ovs.start_vswitchd()
        wait_for(lambda: _reconnected(node, before), 30, what="reconnect after a restart")

    cycle(0)
    restart_vswitchd()  # warm: every thread the agent starts lazily exists now
    base = agent_threads(node)
    names = status(node)["threads"]
    for i in range(1, 101):
        cycle(i)
    for _ in range(3):
        restart_vswitchd()
    # short-lived threads (a round's resync, an HTTP request) end on their own
    wait_for(
        lambda: agent_threads(node) <= base,
        10,
        what=f"threads back to {base} ({names} -> {status(node)['threads']})",
    )
    assert status(node)["openflow"]["reconnects"] >= 105
    node.ovs.vsctl("set", "Bridge", "br-int", f"protocols={protocols[1]}")
    wait_for(lambda: ping(a["ns"], b["ip"]), 10, what="pods ping after the reconnects")
