"""Faults in a 2-node lab whose agents watch the lab's Kubernetes API (`--source api`):
ovs-vswitchd and ovsdb-server killed and restarted under traffic, the API server cut off for 30 s
while policies change, and a pod flooding the agent with packet-ins while other pods are added.

Pods x1, y1 run on node0 and x2, y2 on node1, each answering TCP 80 and UDP 53."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from flows.services import REJECT_METER
from ovsctl.lab import kubelet
from tests.e2e.conftest import lab_pods_yaml
from tests.helpers import in_ns, netns_add, netns_del, uid, wait_for

NODES = ("node0", "node1")
VOID_IP = "10.96.0.77"  # a Service without endpoints: every packet to it goes to the agent
VOID_PORT = 9999
VOID = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "void", "namespace": "y"},
    "spec": {
        "clusterIP": VOID_IP,
        "selector": {"app": "nobody"},
        "ports": [{"name": "u", "port": VOID_PORT, "protocol": "UDP"}],
    },
}


@pytest.fixture(scope="module")
def lab(make_lab):
    text = lab_pods_yaml(("x", "y"), per_ns=2, node_names=list(NODES))
    return make_lab(len(NODES), text + "---\n" + yaml.safe_dump(VOID), source="api")


def pods(lab) -> dict:
    return {f"{p['namespace']}/{p['name']}": p for p in lab.status()["pods"]}


def ping(lab, src: str, ip: str) -> bool:
    ns = lab.pod_netns(src)
    return in_ns(ns, "ping", "-n", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def flows(lab, node: str) -> set[str]:
    """br-int's flows without counters and without the round in the cookie."""
    out = set()
    for line in lab.ovs(node).ofctl("dump-flows", "br-int", "--no-stats").splitlines():
        line = line.strip()
        if line.startswith("cookie="):
            head, rest = line.split(", ", 1)
            c = int(head.split("=")[1], 16) & ((1 << 48) - 1)
            line = f"cookie={c:#x}, {rest}"
        if line and not line.startswith("OFPST"):
            out.add(line)
    return out


def ports(lab, node: str) -> dict[str, int]:
    """br-int's ports and their ofports."""
    ovs = lab.ovs(node)
    return {
        p: int(ovs.vsctl("get", "Interface", p, "ofport"))
        for p in ovs.vsctl("list-ports", "br-int").split()
    }


METRICS = """
import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9476/metrics", timeout=5).read().decode())
"""


def metric(lab, node: str, name: str) -> float:
    """Sum of a Prometheus sample family on a node's agent (0 if absent)."""
    text = in_ns(lab.meta()["nodes"][node]["netns"], sys.executable, "-c", METRICS).stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- ovs-vswitchd and ovsdb-server restarted under traffic ------------------------------------


@pytest.mark.parametrize("component", ["ovs-vswitchd", "ovsdb-server"])
def test_ovs_daemon_restart_under_traffic_recovers(lab, component):
    """kill -9 of an OVS daemon under traffic: traffic comes back, with the same flows and
    ports as before, and the agent still plugs pods in. (How long it took is printed; a
    wall-clock bound on a shared machine would only measure the machine.)"""
    p = pods(lab)
    node = "node1"
    flows_before, ports_before = flows(lab, node), ports(lab, node)
    reconnects = metric(lab, node, "ovsctl_openflow_reconnects_total")
    # traffic through the restart: node0 -> node1 and within node1, 20 pings a second
    pingers = [
        subprocess.Popen(
            ["ip", "netns", "exec", lab.pod_netns(src), "ping", "-n", "-i", "0.05", "-W", "1"]
            + [p[dst]["ip"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for src, dst in (("x/x1", "x/x2"), ("y/y2", "x/x2"))
    ]
    try:
        wait_for(lambda: ping(lab, "x/x1", p["x/x2"]["ip"]), 30, what="traffic before")
        t0 = time.monotonic()
        lab.restart(node, component, log=lambda *_: None)  # kill -9, start again
        for src, dst in (("x/x1", "x/x2"), ("y/y2", "x/x2"), ("x/x2", "y/y1")):
            wait_for(
                lambda s=src, d=dst: ping(lab, s, p[d]["ip"]),
                60,  # a hang bound: recovery takes about 3 s here
                interval=0.05,
                what=f"{src} reaching {dst} again after the {component} restart",
            )
        recovered = time.monotonic() - t0
    finally:
        for pinger in pingers:
            pinger.send_signal(signal.SIGINT)  # ping prints its summary on SIGINT
        summaries = [pg.communicate(timeout=10)[0].strip().splitlines()[-2:] for pg in pingers]
    # every flow and every port is back (ports keep their ofports), and the agent's switch
    # connection is healthy again
    wait_for(lambda: flows(lab, node) == flows_before, 30, what="the same flows as before")
    if component == "ovs-vswitchd":  # the new switch connected, and the agent replayed to it
        assert metric(lab, node, "ovsctl_openflow_reconnects_total") > reconnects
    wait_for(
        lambda: metric(lab, node, "ovsctl_openflow_connected") == 1, 30, what="connected again"
    )
    assert ports(lab, node) == ports_before
    assert "flow-restore-wait" not in lab.ovs(node).vsctl(
        "get", "Open_vSwitch", ".", "other_config"
    )
    # the agent still plugs pods in on that node (it talks to the restarted OVSDB)
    pns = f"{lab.name}.p.stress.{uid(4)}"
    path = netns_add(pns)
    cid = uid(16)
    try:
        res = kubelet.add(lab.socket(node), cid, path, "stress", pns)
        ip = res["ips"][0]["address"].split("/")[0]
        assert in_ns(pns, "ping", "-n", "-c", "1", "-W", "2", p["x/x1"]["ip"]).returncode == 0
        assert ping(lab, "x/x1", ip)
    finally:
        kubelet.delete(lab.socket(node), cid, path, "stress", pns)
        netns_del(pns)
    print(f"\n{component} kill -9 + restart: traffic back after {recovered:.2f}s; {summaries}")


# ---- the state source cut off for 30 s while policies change ----------------------------------


def matrix(lab, rule) -> dict[str, bool]:
    p = lab.pods()
    out = {}
    for s in p.values():
        for d in p.values():
            if s is d:
                continue
            for _name, port, proto in d["ports"]:
                key = f"{s['namespace']}/{s['name']}->{d['namespace']}/{d['name']}:{port}/{proto}"
                out[key] = bool(rule(s["namespace"], d["namespace"], port, proto))
    return out


def netpol(name: str, ns: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def converge(lab, want: dict, timeout: float) -> tuple[dict, float]:
    """Probe (new connections only) until the matrix is `want`; (last matrix, seconds)."""
    t0 = time.monotonic()
    while True:
        lab.flush_conntrack()
        got = lab.probe(timeout=1.0)
        if got == want or time.monotonic() - t0 > timeout:
            return got, time.monotonic() - t0
        time.sleep(0.2)


def diff(got: dict, want: dict) -> str:
    wrong = sorted(k for k in want if got.get(k) != want[k])
    return f"{len(wrong)} of {len(want)} differ: " + ", ".join(
        f"{k} {'allowed' if got.get(k) else 'blocked'}" for k in wrong[:10]
    )


OUTAGE = 30.0


def test_api_server_down_30s_while_policies_change(lab, tmp_path):
    old = [netpol("deny-x", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    new = [
        netpol(
            "y-from-x-http",
            "y",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        )
    ]
    want_old = matrix(lab, lambda sn, dn, port, proto: dn != "x")
    want_new = matrix(lab, lambda sn, dn, port, proto: dn == "x" or (sn, port) == ("x", 80))
    f_old, f_new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    f_old.write_text(yaml.safe_dump_all(old))
    f_new.write_text(yaml.safe_dump_all(new))
    lab.apply([str(f_old)], log=lambda *_: None)
    try:
        got, _ = converge(lab, want_old, 20)
        assert got == want_old, "before the outage: " + diff(got, want_old)
        relists = {n: metric(lab, n, "ovsctl_watch_relists_total") for n in NODES}

        lab.stop_api()
        t_down = time.monotonic()
        # The policies change while nobody can tell the agents.
        lab.delete([str(f_old)], log=lambda *_: None)
        lab.apply([str(f_new)], log=lambda *_: None)
        # The outage itself (a fixed 30 s is the scenario): the agents keep the flows they
        # have, so the old policy keeps holding, for new connections too.
        # At least three probes, the last one after the 30 s.
        checks = 0
        while checks < 3 or time.monotonic() - t_down < OUTAGE:
            lab.flush_conntrack()
            got = lab.probe(timeout=1.0)
            assert got == want_old, f"{time.monotonic() - t_down:.0f}s into the outage: " + diff(
                got, want_old
            )
            checks += 1
            time.sleep(min(3.0, max(0.0, OUTAGE - (time.monotonic() - t_down))))
        assert all(n["healthy"] for n in lab.status()["nodes"])  # CNI keeps working, too

        lab.start_api()
        # (a deadline, not a promise: the watchers' backoff is at most 10 s, then one relist)
        got, took = converge(lab, want_new, 60)
        assert got == want_new, f"{took:.0f}s after the API came back: " + diff(got, want_new)
        for n in NODES:  # they relisted: their resourceVersions were gone (410)
            assert metric(lab, n, "ovsctl_watch_relists_total") > relists[n], n
        print(
            f"\nAPI down {OUTAGE:.0f}s ({checks} probes held the old policy); new policy on "
            f"every node {took:.1f}s after the API server came back"
        )
    finally:
        lab.start_api()
        for f in (f_old, f_new):
            lab.delete([str(f)], log=lambda *_: None)


# ---- a packet-in flood is metered in the switch; CNI ADD and flow updates go on --------------

FLOOD = """
import signal, socket, sys
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, payload, n = (sys.argv[1], int(sys.argv[2])), b"x" * 64, 0
while not stop:
    for _ in range(256):
        try:
            s.sendto(payload, dst)
        except OSError:
            pass
    n += 256
print(n, flush=True)
"""

REFUSED = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"x")
try:
    s.recv(64)
    print("answer")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""

ADDS = 10


def agent_status(lab, node: str) -> dict:
    from ovsctl.tools import agentclient

    return agentclient.get("/status", lab.api_socket(node))  # the agent's unix socket


def reject_packet_ins(lab, node: str) -> float:
    """Packet-ins of the reject path (Services without endpoints) that reached the agent, by
    every outcome (answered, limited by the agent's own bucket, unanswerable); audit copies of
    NetworkPolicy flows go through another meter and are not counted."""
    return sum(
        metric(lab, node, f'ovsctl_packet_in_total{{reason="{r}"}}')
        for r in ("rejected", "rate_limited", "unanswerable")
    )


def reject_meter(lab, node: str) -> dict[str, int]:
    """The switch's own account of the reject meter: packets in, packets its drop band
    dropped (so passed = packets - dropped went on to the controller)."""
    out = lab.ovs(node).ofctl("meter-stats", "br-int", f"meter={REJECT_METER}")
    m = re.search(
        rf"meter:{REJECT_METER}\b.*?packet_in_count:(\d+).*?\b0: packet_count:(\d+)", out, re.S
    )
    assert m, f"no stats of meter {REJECT_METER} on {node}:\n{out}"
    return {"packets": int(m.group(1)), "dropped": int(m.group(2))}


def test_packet_in_flood_is_metered_and_cni_add_and_flow_updates_go_on(lab):
    """A pod floods a Service without endpoints (every packet is a packet-in) while ten pods
    are added on its node. What protects the agent, and what it must keep doing, as counts and
    outcomes (the latency ratio with and without a flood is bench/flood.py's figure):
    - the switch's meter takes the flood: its drop band drops packets, and no more
      packet-ins reach the agent than the meter let through;
    - the agent keeps answering: every ADD succeeds (each waits for its flows on the switch,
      bounded by the agent's own timeout, so flow updates are not stuck behind packet-ins),
      each new pod's flows are on br-int, the flow-sync count grew by at least one per ADD,
      and a new pod reaches a pod on the other node."""
    node = "node0"
    flooder = "x/x1"  # on node0
    # the Service without endpoints is refused by the agent (a packet-in per packet)
    r = in_ns(lab.pod_netns(flooder), sys.executable, "-c", REFUSED, VOID_IP, str(VOID_PORT))
    assert r.stdout.strip() == "refused", r.stdout
    assert agent_status(lab, node)["audit"]["meter"] is True, "the meters are not on the switch"

    made: list = []
    pins0 = reject_packet_ins(lab, node)
    meter0 = reject_meter(lab, node)
    syncs0 = metric(lab, node, "ovsctl_flow_sync_seconds_count")
    flood = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod_netns(flooder), sys.executable, "-c", FLOOD]
        + [VOID_IP, str(VOID_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    sent = ""
    try:
        # the flood is on once the meter drops (more than its rate and burst arrive)
        wait_for(
            lambda: reject_meter(lab, node)["dropped"] > meter0["dropped"],
            30,
            interval=0.2,
            what="the reject meter dropping the flood",
        )
        pins1, meter1 = reject_packet_ins(lab, node), reject_meter(lab, node)
        added = []
        for i in range(ADDS):
            pns = f"{lab.name}.p.f{i}"
            path = netns_add(pns)
            made.append((node, pns, path, f"f{i}{uid(10)}"))
            res = kubelet.add(lab.socket(node), made[-1][3], path, "stress", pns)
            added.append((pns, res["ips"][0]["address"].split("/")[0]))
        # still flooding after the ADDs: the agent got packet-ins and the meter dropped more
        pins2, meter2 = reject_packet_ins(lab, node), reject_meter(lab, node)
        syncs = metric(lab, node, "ovsctl_flow_sync_seconds_count") - syncs0
        dump = lab.ovs(node).ofctl("dump-flows", "br-int", "--no-stats")
        x2 = pods(lab)["x/x2"]["ip"]
        reached = in_ns(added[-1][0], "ping", "-n", "-c", "1", "-W", "2", x2, check=False)
    finally:
        flood.terminate()
        sent = flood.communicate(timeout=30)[0].strip()
        remove_pods(lab, made)
    assert flood.returncode == 0 and int(sent) > 0, f"the flooder failed: {sent!r}"
    # the meter worked through the ADDs, and the agent was under packet-in load
    assert meter2["dropped"] > meter1["dropped"], (meter1, meter2)
    assert pins2 > pins1, "no packet-in reached the agent during the ADDs"
    # what the switch let through is all the agent got (read the agent first: what it counts
    # has passed the meter before)
    meter_end = reject_meter(lab, node)
    passed = (meter_end["packets"] - meter_end["dropped"]) - (meter0["packets"] - meter0["dropped"])
    got = reject_packet_ins(lab, node) - pins0
    assert got <= passed, f"{got} packet-ins reached the agent, the meter passed {passed}"
    dropped = meter_end["dropped"] - meter0["dropped"]
    assert dropped > passed, f"the meter dropped {dropped} and passed {passed}"
    # CNI ADD and flow updates went on: every ADD succeeded (above), its flows are on br-int,
    # and every ADD synced flows
    missing = [ip for _, ip in added if f"nw_dst={ip}," not in dump and f"nw_dst={ip} " not in dump]
    assert not missing, f"flows of {missing} not on br-int"
    assert syncs >= ADDS, f"{syncs} flow syncs for {ADDS} ADDs"
    assert reached.returncode == 0, (
        f"a pod added under the flood cannot reach x/x2: {reached.stdout}"
    )
    assert ping(lab, "y/y1", pods(lab)["x/x2"]["ip"])
    print(
        f"\nflood: {sent} packets sent; reject meter {dropped} dropped, {passed} passed; "
        f"{got:.0f} packet-ins reached the agent; {ADDS} ADDs ok, {syncs:.0f} flow syncs"
    )


def remove_pods(lab, made: list) -> None:
    while made:
        node, pns, path, cid = made.pop()
        kubelet.delete(lab.socket(node), cid, path, "stress", pns)
        netns_del(pns)
