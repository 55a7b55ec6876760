"""Services complete (#18) in the lab, real packets: LoadBalancer from the external host
(externalTrafficPolicy Cluster and Local, loadBalancerSourceRanges), externalIPs, ovsctl's own
pool and its failover when the holding node stops, internalTrafficPolicy Local,
trafficDistribution PreferClose across two zones, affinity expiring after timeoutSeconds, and
TCP and UDP spread over three endpoints on three nodes. One lab for the module."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from ovsctl.lab import lbaddr
from tests.helpers import in_ns, wait_for

NS = "lbe"
EXT = "172.30.0.2"
EXT_IP = "192.0.2.50"  # spec.externalIPs of Service xip
ZONES = {"node0": "zone-a", "node1": "zone-a", "node2": "zone-b"}


def _pod(name, node, app, ports=True):
    spec = {"nodeName": node, "containers": [{"name": "app", "image": "x"}]}
    if ports:
        spec["containers"][0]["ports"] = [
            {"name": "http", "containerPort": 80, "protocol": "TCP"},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ]
    meta = {"name": name, "namespace": NS, "labels": {"app": app}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _svc(name, app="web", **spec):
    ports = [
        {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
    ]
    body = {"selector": {"app": app}, "ports": ports, **spec}
    meta = {"name": name, "namespace": NS}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body}


LB = {"type": "LoadBalancer"}
OBJECTS = (
    [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n, "labels": {"topology.kubernetes.io/zone": z}},
        }  # fmt: skip
        for n, z in ZONES.items()
    ]
    + [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    + [_pod(f"w{k}", f"node{k}", "web") for k in range(3)]
    + [_pod("solo", "node1", "solo")]
    + [_pod(f"c{k}", f"node{k}", "client", ports=False) for k in range(3)]
    + [
        _svc("lbc", **LB),
        _svc("lbl", **LB, externalTrafficPolicy="Local"),
        _svc("deny", **LB, loadBalancerSourceRanges=["10.0.0.0/8"]),
        _svc("allow", **LB, loadBalancerSourceRanges=["10.0.0.0/8", "172.30.0.0/24"]),
        _svc("xip", externalIPs=[EXT_IP]),
        _svc("pool", **LB, loadBalancerClass=lbaddr.LB_CLASS),
        _svc("itp", app="solo", internalTrafficPolicy="Local"),
        _svc("close", trafficDistribution="PreferClose"),
        _svc(
            "aff",
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}},
        ),
    ]
)

# N new connections (TCP) or N datagrams each from a new socket (UDP) to HOST:PORT; prints
# {"servers": {server: n}, "clients": {client as the server saw it: n}, "failed": n,
# "refused": n, "seconds": s}. The responders answer "PEER_IP OWN_IP".
CONNECT = r"""
import collections, json, socket, sys, time
host, port, n, proto, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
servers, clients = collections.Counter(), collections.Counter(); failed = refused = 0
t0 = time.monotonic()
for _ in range(n):
    try:
        if proto == "UDP":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout); s.sendto(b"x", (host, port)); data, _ = s.recvfrom(256)
        else:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout); data = s.recv(256)
        client, server = data.decode().split()[:2]
        servers[server] += 1; clients[client] += 1
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        failed += 1
print(json.dumps({"servers": servers, "clients": clients, "failed": failed,
                  "refused": refused, "seconds": time.monotonic() - t0}))
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(3, yaml.safe_dump_all(OBJECTS), source="api")


def connect(netns, host, n=1, proto="TCP", port=None, timeout=2.0) -> dict:
    port = port or (53 if proto == "UDP" else 80)
    out = in_ns(
        netns, sys.executable, "-c", CONNECT, host, str(port), str(n), proto, str(timeout),
        timeout=n * timeout + 60,
    )  # fmt: skip
    return json.loads(out.stdout)


def ext(lab) -> str:
    return lab.meta()["external"]["netns"]


def pod_ips(lab) -> dict:
    return {p["name"]: p["ip"] for p in lab.status()["pods"]}


def service(lab, name) -> dict:
    return next(s for s in lab.services() if (s["namespace"], s["name"]) == (NS, name))


def ingress(lab, name) -> str:
    return service(lab, name)["loadBalancerIngress"][0]


def test_lab_allocates_ingress_and_routes_it_ecmp(lab):
    got = {n: service(lab, n)["loadBalancerIngress"] for n in ("lbc", "lbl", "deny", "allow")}
    # lowest free from 172.30.0.200-250, in the order applied; the pool Service left alone
    assert sorted(a for v in got.values() for a in v) == [f"172.30.0.{k}" for k in range(200, 204)]
    routes = lab.ext_routes()
    every = ["172.30.0.10", "172.30.0.11", "172.30.0.12"]
    for addr in [a for v in got.values() for a in v] + [EXT_IP]:
        assert routes[addr] == every, addr  # the cloud LB: ECMP over every node
    # re-applied: keeps its address
    before = ingress(lab, "lbc")
    lab.apply([_write(lab, [_svc("lbc", **LB)])], log=lambda *_: None)
    assert ingress(lab, "lbc") == before


def _write(lab, objs) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=lab.dir) as fh:
        yaml.safe_dump_all(objs, fh)
    return fh.name


def lab_cli(lab, *argv) -> str:
    """`ovsctl lab ARGV --name LAB`, its stdout (exit 0 required)."""
    cmd = [sys.executable, "-m", "ovsctl.cli", "lab", *argv, "--name", lab.name]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_probe_keys_from_external_host(lab):
    """`ovsctl lab probe --services --json`: the external host to every LB ingress address and
    external IP, keys ext->svc:NS/NAME:PORT/PROTO@ADDRESS (beside the pods' keys)."""
    res = json.loads(lab_cli(lab, "probe", "--services", "--json", "--timeout", "1"))
    assert res[f"{NS}/c0->{NS}/w1:80/TCP"] is True
    lbc, xip = ingress(lab, "lbc"), EXT_IP
    for key in (
        f"ext->svc:{NS}/lbc:80/TCP@{lbc}",
        f"ext->svc:{NS}/lbc:53/UDP@{lbc}",
        f"ext->svc:{NS}/xip:80/TCP@{xip}",
        f"ext->svc:{NS}/xip:53/UDP@{xip}",
        f"ext->svc:{NS}/allow:80/TCP@{ingress(lab, 'allow')}",
    ):
        assert res.get(key) is True, (key, res)
    assert res[f"ext->svc:{NS}/deny:80/TCP@{ingress(lab, 'deny')}"] is False


def test_lb_cluster_snat_and_local_keeps_client_ip(lab):
    ips = pod_ips(lab)
    web = {ips["w0"], ips["w1"], ips["w2"]}
    r = connect(ext(lab), ingress(lab, "lbc"), n=30)
    assert r["failed"] == 0 and set(r["servers"]) <= web
    # Cluster: SNAT to the receiving node's gateway address; never the client's own
    assert EXT not in r["clients"] and all(c.endswith(".1") for c in r["clients"]), r
    r = connect(ext(lab), ingress(lab, "lbl"), n=30)
    assert r["failed"] == 0 and set(r["servers"]) <= web
    assert set(r["clients"]) == {EXT}, r  # Local: the endpoint sees the client's IP


def test_source_ranges(lab):
    r = connect(ext(lab), ingress(lab, "deny"), n=3, timeout=1)
    assert r["failed"] == 3 and not r["servers"], r  # 172.30.0.2 is outside 10.0.0.0/8: dropped
    r = connect(ext(lab), ingress(lab, "allow"), n=3)
    assert r["failed"] == 0 and sum(r["servers"].values()) == 3, r


def test_external_ips(lab):
    for proto in ("TCP", "UDP"):
        r = connect(ext(lab), EXT_IP, n=10, proto=proto)
        assert r["failed"] == 0 and set(r["servers"]) <= set(pod_ips(lab).values()), r


@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_spread_over_three_endpoints_on_three_nodes(lab, proto):
    ips = pod_ips(lab)
    r = connect(ext(lab), ingress(lab, "lbc"), n=300, proto=proto)
    assert r["failed"] == 0, r
    shares = {w: r["servers"].get(ips[w], 0) / 300 for w in ("w0", "w1", "w2")}
    print(f"\n{proto} spread over 300 new connections from the external host: {shares}")
    assert all(s >= 0.15 for s in shares.values()), shares


def test_internal_traffic_policy_local(lab):
    ips = pod_ips(lab)
    vip = service(lab, "itp")["clusterIP"]
    r = connect(lab.pod_netns(f"{NS}/c1"), vip, n=5)  # solo is on node1, as c1
    assert r["servers"] == {ips["solo"]: 5}, r
    r = connect(lab.pod_netns(f"{NS}/c0"), vip, n=3, timeout=2)
    assert r["refused"] == 3 and r["seconds"] < 1.5, r  # none local on node0: refused at once


def test_prefer_close_two_zones_with_fallback(lab):
    ips = pod_ips(lab)
    vip = service(lab, "close")["clusterIP"]
    r = connect(lab.pod_netns(f"{NS}/c0"), vip, n=40)  # zone-a: w0 and w1 only
    assert set(r["servers"]) == {ips["w0"], ips["w1"]}, r
    r = connect(lab.pod_netns(f"{NS}/c2"), vip, n=20)  # zone-b: w2 alone
    assert set(r["servers"]) == {ips["w2"]}, r
    lab.set_ready(f"{NS}/w2", False, log=lambda *_: None)
    try:  # nothing close left in zone-b: every ready endpoint
        wait_for(
            lambda: (
                set(connect(lab.pod_netns(f"{NS}/c2"), vip, n=20)["servers"])
                == {ips["w0"], ips["w1"]}
            ),
            20,
            what="zone-b falling back to zone-a's endpoints",
        )
    finally:
        lab.set_ready(f"{NS}/w2", True, log=lambda *_: None)


def _learned(lab, node, client) -> bool:
    return f"nw_src={client}" in lab.ovs(node).ofctl("dump-flows", "br-int", "table=33")


def test_affinity_expires_after_timeout_seconds(lab):
    ips = pod_ips(lab)
    vip = service(lab, "aff")["clusterIP"]
    c0 = lab.pod_netns(f"{NS}/c0")
    r = connect(c0, vip, n=20)
    assert len(r["servers"]) == 1, r  # within timeoutSeconds: always the same endpoint
    first = next(iter(r["servers"]))
    assert _learned(lab, "node0", ips["c0"])
    seen = {first}
    deadline = time.monotonic() + 60
    while seen == {first} and time.monotonic() < deadline:
        # idle past timeoutSeconds (5 s): the learned flow goes, the next connection chooses anew
        wait_for(lambda: not _learned(lab, "node0", ips["c0"]), 15, what="affinity expiry")
        seen |= set(connect(c0, vip, n=1)["servers"])
    assert len(seen) > 1, "after expiry a new choice never differed"


def test_trace_from_external_host(lab):
    addr, ips = ingress(lab, "lbc"), pod_ips(lab)
    for sport in range(40000, 40040):
        t = lab.trace("ext", addr, "tcp", 80, sport, node="node0")
        if t.service and t.service["endpoint_pod"] != f"{NS}/w0":
            break
    d = t.to_dict()
    assert t.hops[0].node == "node0" and "gateway" in t.hops[0].entered, d
    assert t.service["service"] == f"svc:{NS}/lbc" and t.service["endpoint"].startswith(
        tuple(ips[w] for w in ("w1", "w2"))
    )
    assert len(t.hops) == 2 and t.hops[1].entered == "tunnel from node0", d
    assert t.verdict == "delivered"
    # the command: `ovsctl lab trace ext SVC --dport P` (a Service name: its first LB address)
    out = json.loads(lab_cli(lab, "trace", "ext", f"svc:{NS}/lbc", "--dport", "80", "--json"))
    assert (out["src"], out["dst"], out["verdict"]) == (
        f"ext ({EXT})",
        f"svc:{NS}/lbc",
        "delivered",
    )
    assert out["service"]["frontend"] == f"{addr}:80" and out["hops"][0]["node"] == "node0"


def _ready(lab, node) -> str:
    with open(lab._node_file(node)) as fh:
        conds = (yaml.safe_load(fh).get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conds if c["type"] == "Ready"), "absent")


def _pod_ready(lab, pod) -> str:
    with open(f"{lab.cluster_dir}/Pod-{NS}.{pod}.yaml") as fh:
        conds = yaml.safe_load(fh)["status"]["conditions"]
    return next(c["status"] for c in conds if c["type"] == "Ready")


def test_node_stop_and_start(lab):
    """A stopped node and its pods are NotReady at once and the node is left out of the
    external routes; `lab apply` and `lab status` keep working; started again it is Ready and
    routed to."""
    lab.node_stop("node2", log=lambda *_: None)
    try:
        assert _ready(lab, "node2") == "False"
        assert _pod_ready(lab, "w2") == "False" and _pod_ready(lab, "w1") == "True"
        st = {n["name"]: n for n in lab.status()["nodes"]}
        assert st["node2"]["stopped"] and not st["node2"]["healthy"] and st["node0"]["healthy"]
        assert "172.30.0.12" not in lab.ext_routes()[ingress(lab, "lbc")]
        lab.apply([_write(lab, [_svc("lbc", **LB)])], log=lambda *_: None)
        assert ingress(lab, "lbc") == "172.30.0.200"
    finally:
        lab.node_start("node2", log=lambda *_: None)
    assert _ready(lab, "node2") == "True" and _pod_ready(lab, "w2") == "True"
    assert "172.30.0.12" in lab.ext_routes()[ingress(lab, "lbc")]
    assert all(n["healthy"] for n in lab.status()["nodes"])
    wait_for(lambda: connect(ext(lab), ingress(lab, "lbc"), n=9)["failed"] == 0, 20,
             what="LoadBalancer traffic after node2 came back")  # fmt: skip


def test_pool_failover_when_holder_stops(lab):
    """ovsctl's own pool (loadBalancerClass ovsctl.io/lb, lb_pool 172.30.0.176/28): the agents
    fill status, one node answers ARP; stopping it moves the address (gratuitous ARP)."""
    addr = wait_for(
        lambda: service(lab, "pool")["loadBalancerIngress"], 30, what="the agents' allocation"
    )[0]
    assert addr in [str(a) for a in __import__("netaddr").IPNetwork(lbaddr.LB_POOL)]
    assert addr not in lab.ext_routes()  # announced by the agents, not routed by the lab
    e = ext(lab)
    assert connect(e, addr, n=5)["failed"] == 0
    holder = _holder(lab, addr)
    # exactly one node answers for it: the one the external host resolved it to
    assert _proxy_nodes(lab, addr) == {holder}
    t0 = time.monotonic()
    lab.node_stop(holder, log=lambda *_: None)
    try:
        node = yaml.safe_load(open(lab._node_file(holder)))
        assert {"type": "Ready", "status": "False"}.items() <= node["status"]["conditions"][
            0
        ].items()
        assert lab.status()["nodes"][int(holder[4:])]["stopped"]
        wait_for(lambda: connect(e, addr, n=1, timeout=0.5)["failed"] == 0, 30, 0.0,
                 what=f"{addr} answering again after {holder} stopped")  # fmt: skip
        recovered = time.monotonic() - t0
        print(f"\nfailover of {addr} from {holder}: {recovered:.2f} s to the first answer")
        new = _holder(lab, addr)
        assert new != holder
        # among the running nodes exactly the new holder answers (the stopped node's agent
        # was killed: its kernel keeps its entry, but its uplink is down)
        assert _proxy_nodes(lab, addr) - {holder} == {new}
    finally:
        lab.node_start(holder, log=lambda *_: None)
    # the restarted agent releases the entry it left: exactly one node answers again
    wait_for(lambda: len(_proxy_nodes(lab, addr)) == 1, 30,
             what=f"one proxy entry for {addr} after {holder} restarted")  # fmt: skip


def _proxy_nodes(lab, addr) -> set[str]:
    """The nodes with a proxy neighbour entry (`ip neigh show proxy`) for `addr`."""
    out = set()
    for name, info in lab.meta()["nodes"].items():
        rows = json.loads(in_ns(info["netns"], "ip", "-j", "neigh", "show", "proxy").stdout or "[]")
        if any(r.get("dst") == addr for r in rows):
            out.add(name)
    return out


def _holder(lab, addr) -> str:
    """The node whose br-phy MAC the external host's neighbour entry for `addr` names."""
    rows = json.loads(in_ns(ext(lab), "ip", "-j", "neigh", "show", addr).stdout)
    mac = next(r["lladdr"] for r in rows if r.get("lladdr"))
    for name, info in lab.meta()["nodes"].items():
        out = json.loads(in_ns(info["netns"], "ip", "-j", "link", "show", "br-phy").stdout)
        if out[0]["address"] == mac:
            return name
    raise AssertionError(f"{addr} is at {mac}, no node's br-phy")
