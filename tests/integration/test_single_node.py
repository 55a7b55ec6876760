"""One node, real OVS (userspace datapath), real namespaces and veths, the shim called as
kubelet calls it. Every assertion is about what a user sees: the IP given, packets delivered or
not, flows and ports present or gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import netaddr
import pytest

from flows import pipeline
from flows.model import NodeNet, PodPort
from ovsctl.tools import agentclient
from tests.helpers import in_ns, netns_add, uid, wait_for

NETUTIL = os.path.join(os.path.dirname(os.path.dirname(__file__)), "netutil.py")


@pytest.fixture(scope="module")
def pods(node):
    return [node.add_pod(n) for n in ("pa", "pb", "pc")]


def ping(ns: str, ip: str, count: int = 1, extra=()) -> bool:
    return (
        in_ns(ns, "ping", "-n", "-c", str(count), "-W", "1", *extra, ip, check=False).returncode
        == 0
    )


def ipam_ips(node) -> set[str]:
    d = os.path.join(node.state, "ipam")
    out = set()
    for f in os.listdir(d):
        if f.endswith(".json"):
            with open(os.path.join(d, f)) as fh:
                out |= {a["ip"] for a in json.load(fh)["allocations"]}
    return out


def ovs_ports(node) -> list[str]:
    return node.ovs.vsctl("list-ports", "br-int").split()


def node_links(node) -> set[str]:
    out = in_ns(node.ns, "ip", "-o", "link", "show").stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def cookies_on_switch(node) -> set[int]:
    out = node.ovs.ofctl("dump-flows", "br-int")
    return {
        int(p.split("=")[1], 16) & ((1 << 48) - 1)
        for line in out.splitlines()
        for p in line.split(", ")
        if p.strip().startswith("cookie=")
    }


def flow_texts(node) -> set[str]:
    """Installed flows as `ovs-ofctl dump-flows --no-stats` lines, round stripped from cookies."""
    out = set()
    for line in node.ovs.ofctl("dump-flows", "br-int", "--no-stats").splitlines():
        line = line.strip()
        if line.startswith("cookie="):
            head, rest = line.split(", ", 1)
            c = int(head.split("=")[1], 16) & ((1 << 48) - 1)
            line = (f"cookie={c:#x}, " if c else "") + rest
        out.add(line)
    return out


def pod_port(node, pod) -> PodPort:
    for line in node.ovs.vsctl(
        "--format=json", "--columns=name,ofport,external_ids", "list", "Interface"
    ).splitlines():
        data = json.loads(line)
        for _name, ofport, ext in data["data"]:
            ext = dict(ext[1])
            if ext.get("container-id") == pod["cid"]:
                return PodPort(f"{pod['cid']}/eth0", ofport, pod["ip"], ext["attached-mac"])
    raise AssertionError(f"no OVS port for {pod['name']}")


def test_add_gives_distinct_ips_from_the_cidr_and_a_spec_result(node, pods):
    net = netaddr.IPNetwork(node.pod_cidr)
    gw = str(net[1])
    ips = [p["ip"] for p in pods]
    assert len(set(ips)) == 3
    for p in pods:
        assert netaddr.IPAddress(p["ip"]) in net and p["ip"] not in (gw, str(net[0]), str(net[-1]))
        res = p["result"]
        assert res["cniVersion"] == "1.0.0"
        assert res["ips"] == [{"address": f"{p['ip']}/24", "gateway": gw, "interface": 1}]
        assert res["interfaces"][1] == {
            "name": "eth0",
            "mac": res["interfaces"][1]["mac"],
            "sandbox": p["netns"],
        }
        assert {"dst": "0.0.0.0/0", "gw": gw} in res["routes"]
        # What the pod sees matches the result.
        addr = in_ns(p["ns"], "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert f"{p['ip']}/24" in addr
        assert f"default via {gw}" in in_ns(p["ns"], "ip", "route").stdout
        assert "mtu 1450" in in_ns(p["ns"], "ip", "link", "show", "eth0").stdout


def test_pods_ping_each_other(node, pods):
    for a in pods:
        for b in pods:
            if a is not b:
                assert ping(a["ns"], b["ip"]), f"{a['name']} cannot ping {b['name']}"


def test_full_size_tcp_between_pods(node, pods):
    a, b = pods[0], pods[1]
    srv = subprocess.Popen(
        ["ip", "netns", "exec", b["ns"], sys.executable, NETUTIL, "serve", "5001"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout.readline().strip() == "listening"
        n = 20 * 1024 * 1024
        out = in_ns(a["ns"], sys.executable, NETUTIL, "send", b["ip"], "5001", str(n), timeout=60)
        assert out.stdout.split() == [a["ip"], str(n)]  # all bytes, and the real source IP
    finally:
        srv.kill()
        srv.wait()


def test_node_reaches_every_pod_through_the_gateway(node, pods):
    route = in_ns(node.ns, "ip", "route", "get", pods[0]["ip"]).stdout
    assert "dev ovsctl-gw0" in route
    for p in pods:
        assert ping(node.ns, p["ip"]), f"node cannot reach {p['name']}"


def test_installed_flows_are_exactly_the_pipeline(node, pods):
    gw_ofport = int(node.ovs.vsctl("get", "Interface", "ovsctl-gw0", "ofport"))
    n = NodeNet.for_cidr(node.pod_cidr, gw_ofport)
    want = set()
    for f in pipeline.node_flows(n):
        want.add(f.text())
    for p in pods:
        for f in pipeline.pod_flows(n, pod_port(node, p)):
            want.add(f.text())
    have = wait_for(lambda: (t := flow_texts(node)) >= want and t, 30, what="flows installed")
    extra = {t for t in have if t not in want}
    # Only flows of other pods (made by other tests) may be there besides ours.
    assert all("cookie=0x2" in t for t in extra), extra


def test_trace_verdicts(node, pods):
    a, b = pod_port(node, pods[0]), pod_port(node, pods[1])
    ok = node.ovs.appctl(
        "ofproto/trace",
        "br-int",
        f"in_port={a.ofport},ip,dl_src={a.mac},dl_dst={b.mac},nw_src={a.ip},nw_dst={b.ip}",
    )
    # Classifier -> SpoofGuard -> conntrack -> ... -> L2Forwarding -> commit -> b's port.
    assert "10. ip,in_port=" in ok and f"70. dl_dst={b.mac}" in ok, ok
    assert f"output port is {b.ofport}" in ok and "ct(commit,zone=65000)" in ok, ok
    assert "Datapath actions: drop" not in ok
    spoof = node.ovs.appctl(
        "ofproto/trace",
        "br-int",
        f"in_port={a.ofport},ip,dl_src={a.mac},dl_dst={b.mac},nw_src=10.244.0.250,nw_dst={b.ip}",
    )
    # Dropped by SpoofGuard's table-miss flow, nothing after it.
    assert "10. priority 0" in spoof and "Datapath actions: drop" in spoof, spoof


def test_spoofed_source_ip_gets_no_answer(node):
    a, b = node.add_pod("spa"), node.add_pod("spb")
    assert ping(a["ns"], b["ip"])  # control: it works unspoofed
    spoof = "10.244.0.250"
    in_ns(a["ns"], "ip", "addr", "add", f"{spoof}/32", "dev", "eth0")
    assert not ping(a["ns"], b["ip"], count=2, extra=("-I", spoof))
    assert ping(a["ns"], b["ip"])  # the pod's own address still works


def test_spoofed_source_mac_gets_no_answer(node):
    a, b = node.add_pod("sma"), node.add_pod("smb")
    assert ping(a["ns"], b["ip"])
    in_ns(a["ns"], "ip", "neigh", "flush", "dev", "eth0")
    in_ns(a["ns"], "ip", "link", "set", "eth0", "address", "0a:58:de:ad:be:ef")
    assert not ping(a["ns"], b["ip"], count=2)


def test_check_passes_then_fails_when_the_veth_is_deleted_behind_the_agents_back(node):
    p = node.add_pod("chk")
    ok = node.cni(
        "CHECK",
        p["cid"],
        p["netns"],
        pod="default/chk",
        conf=node.netconf("1.0.0", prevResult=p["result"]),
    )
    assert ok.returncode == 0, ok.stdout
    host_if = p["result"]["interfaces"][0]["name"]
    in_ns(node.ns, "ip", "link", "del", host_if)
    bad = node.cni(
        "CHECK",
        p["cid"],
        p["netns"],
        pod="default/chk",
        conf=node.netconf("1.0.0", prevResult=p["result"]),
    )
    assert bad.returncode != 0
    err = json.loads(bad.stdout)
    assert err["code"] == 102 and host_if in err["details"]
    # DEL still cleans up what is left.
    assert node.cni("DEL", p["cid"], p["netns"], pod="default/chk").returncode == 0
    assert host_if not in ovs_ports(node)


def test_check_of_an_unknown_container_says_so(node):
    path = netns_add(f"{node.ns}-unk")
    node.pods.append(f"{node.ns}-unk")
    r = node.cni("CHECK", "nosuchcontainer", path)
    assert r.returncode != 0 and json.loads(r.stdout)["code"] == 3


def test_del_twice_succeeds_and_leaves_nothing(node, pods):
    p = node.add_pod("gone")
    host_if = p["result"]["interfaces"][0]["name"]
    port = pod_port(node, p)
    from flows import cookie

    own = cookie.make("pod", pipeline.pod_owner(port))
    assert host_if in ovs_ports(node) and own in cookies_on_switch(node)
    assert p["ip"] in ipam_ips(node) and host_if in node_links(node)
    for _ in range(2):
        r = node.cni("DEL", p["cid"], p["netns"], pod="default/gone")
        assert r.returncode == 0 and r.stdout == "", r.stdout
    assert host_if not in ovs_ports(node)
    assert own not in cookies_on_switch(node)
    assert p["ip"] not in ipam_ips(node)
    assert host_if not in node_links(node)
    assert "eth0" not in in_ns(p["ns"], "ip", "-o", "link").stdout
    # DEL with an empty netns (as containerd sends on sandbox removal) is fine too.
    r = node.cni("DEL", p["cid"], "", pod="default/gone")
    assert r.returncode == 0
    # The other pods are untouched.
    assert ping(pods[0]["ns"], pods[1]["ip"])


def test_concurrent_adds_get_distinct_ips(node):
    results, errors = [], []

    def one(i):
        try:
            results.append(node.add_pod(f"cc{i}"))
        except AssertionError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ips = [r["ip"] for r in results]
    assert len(ips) == 6 and len(set(ips)) == 6
    for r in results:
        assert ping(r["ns"], results[0]["ip"] if r is not results[0] else results[1]["ip"])


def test_agent_kill9_and_restart_loses_no_pings_and_never_reuses_held_ips(node, pods):
    a, b = pods[0], pods[2]
    rounds_before = int(open(os.path.join(node.state, "round")).read())
    pinger = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            a["ns"],
            "ping",
            "-n",
            "-i",
            "0.05",
            "-c",
            "80",
            "-W",
            "1",
            b["ip"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = pinger.stdout.readline() + pinger.stdout.readline()  # header, then a reply
        assert " bytes from " in first, first
        node.kill_agent(signal.SIGKILL)
        # With the agent gone, the switch keeps forwarding (fail_mode=secure, flows stay).
        assert ping(a["ns"], b["ip"])
        node.start_agent()
        out, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    assert " 0% packet loss" in out, out
    assert int(open(os.path.join(node.state, "round")).read()) > rounds_before
    # Only the new round's flows are left.
    rounds = {
        int(line.split("cookie=")[1].split(",")[0], 16) >> 48
        for line in node.ovs.ofctl("dump-flows", "br-int").splitlines()
        if "cookie=" in line
    }
    assert len(rounds) == 1
    held = ipam_ips(node)
    fresh = node.add_pod(f"after{uid(3)}")
    assert fresh["ip"] not in held  # every address held before the restart stays held
    assert ping(fresh["ns"], a["ip"])
    # The pods from before the restart were restored, and CHECK agrees.
    r = node.cni("CHECK", a["cid"], a["netns"], pod="default/pa")
    assert r.returncode == 0, r.stdout


def test_status_and_version(node):
    r = node.cni("STATUS", "", "", "")
    assert r.returncode == 0 and r.stdout == ""
    v = node.cni("VERSION", "", "", "", stdin="")
    assert "1.1.0" in json.loads(v.stdout)["supportedVersions"]


def _state(node):
    return (sorted(ovs_ports(node)), node_links(node), ipam_ips(node), flow_texts(node))


BAD = [
    # (what, command, env overrides, stdin or None for a good config, expected code)
    ("missing CNI_COMMAND", "ADD", {"CNI_COMMAND": ""}, None, 4),
    ("unknown command", "FROB", {}, None, 4),
    ("missing container id", "ADD", {"CNI_CONTAINERID": ""}, None, 4),
    ("bad container id", "ADD", {"CNI_CONTAINERID": "bad/id"}, None, 4),
    ("missing netns", "ADD", {"CNI_NETNS": ""}, None, 4),
    ("missing ifname", "ADD", {"CNI_IFNAME": ""}, None, 4),
    ("ifname too long", "ADD", {"CNI_IFNAME": "eth0123456789abc"}, None, 4),
    ("ifname with slash", "ADD", {"CNI_IFNAME": "et/h0"}, None, 4),
    ("missing CNI_PATH", "ADD", {"CNI_PATH": ""}, None, 4),
    ("malformed CNI_ARGS", "ADD", {"CNI_ARGS": "K8S_POD_NAME"}, None, 4),
    ("bad JSON", "ADD", {}, "{not json", 6),
    ("JSON not an object", "ADD", {}, "[1, 2]", 6),
    (
        "unknown cniVersion",
        "ADD",
        {},
        json.dumps({"cniVersion": "9.9.9", "name": "n", "type": "t"}),
        1,
    ),
    ("missing name", "ADD", {}, json.dumps({"cniVersion": "1.0.0", "type": "t"}), 7),
    ("missing type", "ADD", {}, json.dumps({"cniVersion": "1.0.0", "name": "n"}), 7),
    ("CHECK at 0.3.1", "CHECK", {}, "v0.3.1", 1),
    ("GC at 1.0.0", "GC", {}, "v1.0.0", 1),
    (
        "netns that does not exist",
        "ADD",
        {"CNI_NETNS": "/var/run/netns/ovsctl-no-such-ns"},
        None,
        3,
    ),
]


@pytest.mark.parametrize("what,command,env,stdin,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_the_right_code_and_leaves_nothing(
    node, pods, what, command, env, stdin, code
):
    path = f"/var/run/netns/{node.ns}-pa"
    before = _state(node)
    if stdin and stdin.startswith("v"):
        stdin = json.dumps(node.netconf(stdin[1:]))
    r = node.cni(
        command, f"bad{uid(6)}", path, stdin=stdin, env_extra={"CNI_COMMAND": command, **env}
    )
    assert r.returncode != 0, (what, r.stdout)
    err = json.loads(r.stdout)
    assert err["code"] == code, (what, err)
    assert err["msg"]
    assert _state(node) == before, what


def test_the_shim_fails_fast_with_11_when_the_agent_is_unreachable(node):
    path = f"/var/run/netns/{node.ns}-pa"
    conf = node.netconf("1.0.0")
    conf["socket"] = os.path.join(node.dir, "nobody-listens.sock")
    r = node.cni("ADD", f"x{uid()}", path, conf=conf)
    assert r.returncode != 0 and json.loads(r.stdout)["code"] == 11


def test_gc_frees_stale_allocations_but_never_a_live_port(node, pods):
    keep = node.add_pod("gck")
    stale = node.add_pod("gcs")
    # Make "stale" dead behind the agent's back: its veth goes away (the pod was torn down).
    in_ns(node.ns, "ip", "link", "del", stale["result"]["interfaces"][0]["name"])
    valid = [{"containerID": p["cid"], "ifname": "eth0"} for p in pods]
    # "keep" is not in the runtime's list, but its port is live: GC must not free its address.
    conf = node.netconf("1.1.0", **{"cni.dev/valid-attachments": valid})
    r = node.cni("GC", "", "", "", conf=conf)
    assert r.returncode == 0, r.stdout
    ips = ipam_ips(node)
    assert keep["ip"] in ips
    assert stale["ip"] not in ips
    assert stale["result"]["interfaces"][0]["name"] not in ovs_ports(node)
    assert all(p["ip"] in ips for p in pods)
    assert ping(keep["ns"], pods[0]["ip"])


def test_lost_ipam_state_is_rebuilt_from_live_ports(node, pods):
    """If the IPAM file is lost while the agent is down, addresses of live pods are re-reserved
    from OVSDB at start-up: a new pod never gets one of them."""
    node.kill_agent(signal.SIGKILL)
    ipam_dir = os.path.join(node.state, "ipam")
    for f in os.listdir(ipam_dir):
        if f.endswith(".json"):
            os.unlink(os.path.join(ipam_dir, f))
    node.start_agent()
    live = {p["ip"] for p in pods}
    assert live <= ipam_ips(node)
    fresh = node.add_pod(f"lost{uid(3)}")
    assert fresh["ip"] not in live
    assert ping(fresh["ns"], pods[0]["ip"])


# ---- the HTTP endpoint: metrics, health -----------------------------------------------------

GET = """
import sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen("http://127.0.0.1:9476" + sys.argv[1], timeout=5)
    print(r.status); print(r.read().decode(), end="")
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(), end="")
"""


def http_get(node, path: str) -> tuple[int, str]:
    out = in_ns(node.ns, sys.executable, "-c", GET, path).stdout
    code, _, body = out.partition("\n")
    return int(code), body


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_serve_the_documented_families_and_move_with_cni_calls(node, pods):
    from ovsctl.agent.metrics import DOCUMENTED

    code, text = http_get(node, "/metrics")
    assert code == 200
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert set(DOCUMENTED) <= families, set(DOCUMENTED) - families
    before = samples(text)
    add_ok = 'ovsctl_cni_requests_total{command="ADD",result="ok"}'
    p = node.add_pod(f"m{uid(4)}")
    after = samples(http_get(node, "/metrics")[1])
    assert after[add_ok] == before.get(add_ok, 0) + 1
    assert after['ovsctl_ipam_addresses{state="used"}'] == (
        before['ovsctl_ipam_addresses{state="used"}'] + 1
    )
    assert after["ovsctl_pods"] == before["ovsctl_pods"] + 1
    assert after['ovsctl_cni_request_seconds_count{command="ADD",result="ok"}'] >= 1
    assert (
        after['ovsctl_flows{table="Classifier"}'] == before['ovsctl_flows{table="Classifier"}'] + 1
    )
    assert after["ovsctl_flow_sync_seconds_count"] > before["ovsctl_flow_sync_seconds_count"]
    assert node.cni("DEL", p["cid"], p["netns"]).returncode == 0
    final = samples(http_get(node, "/metrics")[1])
    assert (
        final['ovsctl_ipam_addresses{state="used"}']
        == before['ovsctl_ipam_addresses{state="used"}']
    )
    # a failed request is counted with its CNI error code
    bad = 'ovsctl_cni_requests_total{command="CHECK",result="3"}'
    r = node.cni("CHECK", "nope-" + uid(), pods[0]["netns"])
    assert json.loads(r.stdout)["code"] == 3
    assert samples(http_get(node, "/metrics")[1])[bad] == final.get(bad, 0) + 1


def test_health_readiness_and_status_endpoints(node, pods):
    assert http_get(node, "/healthz") == (200, "ok\n")
    assert http_get(node, "/readyz") == (200, "ok\n")
    assert http_get(node, "/status")[0] == 404  # the views: the unix socket only
    st = agentclient.get("/status", node.api_sock)
    assert st["ready"] == "ok" and st["openflow"]["connected"]
    assert st["ipam"]["used"] >= len(pods)
    assert sum(st["flows_per_table"].values()) == st["flows_desired"]
    assert http_get(node, "/nope")[0] == 404
