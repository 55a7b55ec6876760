"""Services in the lab: ClusterIP load-balanced in OVS (conntrack DNAT, no kube-proxy), over
endpoints on three nodes, NetworkPolicy applied after DNAT, endpoints scaling."""

from __future__ import annotations

import re
import sys

import netaddr
import pytest
import yaml

from tests.e2e.conftest import lab_pods_yaml
from tests.helpers import in_ns, wait_for

VIP = "10.96.0.10"
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "backend"},
    "spec": {
        "clusterIP": VIP,
        "selector": {"app": "backend"},
        "ports": [
            {"name": "web", "port": 8080, "targetPort": "http", "protocol": "TCP"},
            {"name": "dns", "port": 5353, "targetPort": 53, "protocol": "UDP"},
        ],
    },
}

CONNECT = """
import collections, json, socket, sys
host, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seen = collections.Counter(); peers = set(); failed = 0
for _ in range(n):
    try:
        if proto == "UDP":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"x", (host, port)); data, src = s.recvfrom(256)
            peers.add(src[0])
        else:
            s = socket.create_connection((host, port), timeout=2); s.settimeout(2)
            data = s.recv(256); peers.add(host)
        client, server = data.decode().split()
        seen[server] += 1; peers.add("client=" + client)
        s.close()
    except OSError:
        failed += 1
print(json.dumps({"servers": seen, "failed": failed, "peers": sorted(peers)}))
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(
        3, lab_pods_yaml(("frontend", "backend"), per_ns=3) + "---\n" + yaml.safe_dump(SERVICE)
    )


def pods(lab) -> dict:
    return {f"{p['namespace']}/{p['name']}": p for p in lab.status()["pods"]}


def connect(lab, src: str, n: int, port: int = 8080, proto: str = "TCP", vip: str = VIP) -> dict:
    import json

    out = in_ns(
        lab.pod_netns(src),
        sys.executable,
        "-c",
        CONNECT,
        vip,
        str(port),
        str(n),
        proto,
        timeout=120,
    )
    return json.loads(out.stdout)


def dnat_targets(lab, node: str, port: int) -> set[str]:
    """The endpoints the node's EndpointDNAT flows send the Service port to."""
    text = lab.ovs(node).ofctl("dump-flows", "br-int", "table=36")
    return set(re.findall(rf"tp_dst={port} .*nat\(dst=([0-9.]+):", text))


def test_cluster_ip_spreads_over_endpoints_on_every_node(lab):
    ps = pods(lab)
    backends = {ps[f"backend/b{i}"]["ip"] for i in (1, 2, 3)}
    assert len({ps[f"backend/b{i}"]["node"] for i in (1, 2, 3)}) == 3
    # the client's node knows every endpoint first (right after `lab up` the other nodes' pods
    # may not have reached its agent yet: the first connections would all go to the local one)
    node = ps["frontend/f1"]["node"]
    wait_for(lambda: dnat_targets(lab, node, 8080) == backends, 30, what="all endpoints known")
    res = connect(lab, "frontend/f1", 300)
    assert res["failed"] == 0
    assert set(res["servers"]) == backends
    assert all(c >= 45 for c in res["servers"].values()), res["servers"]  # each at least 15%
    # the endpoint sees the client's own address (no SNAT)
    assert f"client={ps['frontend/f1']['ip']}" in res["peers"]


def test_udp_service_answers_from_the_cluster_ip(lab):
    res = connect(lab, "frontend/f2", 30, port=5353, proto="UDP")
    assert res["failed"] == 0 and sum(res["servers"].values()) == 30
    assert VIP in res["peers"]  # replies are un-NATed back to the ClusterIP


def test_probe_services_keys(lab):
    res = lab.probe(services=True)
    svc = {k: v for k, v in res.items() if "->svc:" in k}
    ps = pods(lab)
    assert set(svc) == {
        f"{p}->svc:backend/web:{port}" for p in ps for port in ("8080/TCP", "5353/UDP")
    }
    assert all(svc.values())  # from backend pods too: hairpin works


def test_network_policy_applies_after_dnat(lab, tmp_path):
    """Only frontend/f1 may reach the backend pods: through the ClusterIP too."""
    pol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-f1", "namespace": "backend"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "backend"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "frontend"}},
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "app", "operator": "In", "values": ["frontend"]}
                                ]
                            },
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        },
    }
    f = tmp_path / "pol.yaml"
    f.write_text(yaml.safe_dump(pol))
    relabel = tmp_path / "f2.yaml"
    try:
        lab.apply([str(f)], log=lambda *_: None)
        # f2 loses the label the policy needs: it is blocked through the ClusterIP
        doc = yaml.safe_load(lab_pods_yaml(("frontend",), per_ns=3).split("---\n")[2])
        doc["metadata"]["labels"] = {"app": "other"}
        relabel.write_text(yaml.safe_dump(doc))
        lab.apply([str(relabel)], log=lambda *_: None)

        def blocked():
            lab.flush_conntrack()
            return connect(lab, "frontend/f2", 5)["failed"] == 5

        wait_for(blocked, 20, interval=0.2, what="frontend/f2 blocked through the ClusterIP")
        res = connect(lab, "frontend/f1", 30)
        assert res["failed"] == 0 and len(res["servers"]) == 3
        # and UDP 5353 -> 53 is not in the policy's ports: blocked for everyone
        assert connect(lab, "frontend/f1", 3, port=5353, proto="UDP")["failed"] == 3
    finally:
        doc = yaml.safe_load(lab_pods_yaml(("frontend",), per_ns=3).split("---\n")[2])
        relabel.write_text(yaml.safe_dump(doc))
        lab.apply([str(relabel)], log=lambda *_: None)
        lab.delete([str(f)], log=lambda *_: None)


def test_endpoints_scaling_moves_new_connections_only(lab, tmp_path):
    ps = pods(lab)
    spec = yaml.safe_load_all(lab_pods_yaml(("backend",), per_ns=3))
    docs = list(spec)
    gone = tmp_path / "gone.yaml"
    gone.write_text(yaml.safe_dump_all(docs[2:]))  # b2, b3
    lab.delete([str(gone)], log=lambda *_: None)
    try:

        def only_b1():
            res = connect(lab, "frontend/f3", 20)
            return res["failed"] == 0 and set(res["servers"]) == {ps["backend/b1"]["ip"]}

        wait_for(only_b1, 20, interval=0.2, what="all connections on the one endpoint left")
    finally:
        lab.apply([str(gone)], log=lambda *_: None)
    back = {p["ip"] for n, p in pods(lab).items() if n.startswith("backend/")}

    def spread():
        res = connect(lab, "frontend/f3", 60)
        return res["failed"] == 0 and set(res["servers"]) == back

    wait_for(spread, 20, interval=0.2, what="connections spread over three endpoints again")


def test_hairpin_a_pod_reaches_itself_through_its_service(lab, tmp_path):
    """A Service whose only endpoint (from an explicit EndpointSlice) is backend/b1: b1 reaches
    itself through the ClusterIP, over TCP and UDP, and sees the hairpin address as the client;
    another pod reaching the same Service is seen with its own address."""
    me = pods(lab)["backend/b1"]["ip"]
    solo = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "solo", "namespace": "backend"},
        "spec": {
            "clusterIP": "10.96.0.11",
            "ports": [
                {"name": "web", "port": 8080, "targetPort": 80, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "targetPort": 53, "protocol": "UDP"},
            ],
        },
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "solo-1",
            "namespace": "backend",
            "labels": {"kubernetes.io/service-name": "solo"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [me], "conditions": {"ready": True}}],
        "ports": [
            {"name": "web", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
    }
    f = tmp_path / "solo.yaml"
    f.write_text(yaml.safe_dump_all([solo, eps]))
    lab.apply([str(f)], log=lambda *_: None)
    try:
        from_f1 = lambda: connect(lab, "frontend/f1", 1, vip="10.96.0.11")  # noqa: E731
        wait_for(lambda: from_f1()["servers"] == {me: 1}, 20, 0.2, what="the solo Service")
        assert_hairpin(lab, me, 20)
        other = connect(lab, "frontend/f1", 5, vip="10.96.0.11")
        assert f"client={pods(lab)['frontend/f1']['ip']}" in other["peers"]
        # An ingress policy that admits only backend pods admits b1 reaching itself through the
        # Service too (it arrives from the hairpin address), and shuts frontend/f1 out.
        pol = tmp_path / "own-kind.yaml"
        pol.write_text(yaml.safe_dump(OWN_KIND))
        lab.apply([str(pol)], log=lambda *_: None)
        try:
            wait_for(lambda: from_f1()["failed"] == 1, 20, 0.2, what="frontend shut out")
            assert_hairpin(lab, me, 5)
        finally:
            lab.delete([str(pol)], log=lambda *_: None)
    finally:
        lab.delete([str(f)], log=lambda *_: None)


def assert_hairpin(lab, me: str, n: int) -> None:
    """backend/b1 (address `me`) reaches itself through the solo Service n times over TCP and
    UDP, seen from the hairpin address."""
    for port, proto in ((8080, "TCP"), (5353, "UDP")):
        res = connect(lab, "backend/b1", n, port=port, proto=proto, vip="10.96.0.11")
        assert res["failed"] == 0 and res["servers"] == {me: n}, (proto, res)
        assert "client=169.254.169.252" in res["peers"], res


OWN_KIND = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "own-kind", "namespace": "backend"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "backend"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "backend"}}}]}],
    },
}


REFUSE = """
import json, socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def syn_retrans():  # this network namespace's count of retransmitted SYNs
    with open("/proc/net/netstat") as fh:
        for names, values in zip(*[iter(fh.read().splitlines())] * 2):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split()))["TCPSynRetrans"])
before = syn_retrans()
try:
    if proto == "UDP":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.connect((host, port)); s.send(b"x"); s.recv(64)
    else:
        socket.create_connection((host, port), timeout=3)
    outcome = "answered"
except ConnectionRefusedError:
    outcome = "refused"
except OSError as e:
    outcome = type(e).__name__
print(json.dumps({"outcome": outcome, "syn_retrans": syn_retrans() - before}))
"""


def test_a_service_without_endpoints_refuses_at_once(lab, tmp_path):
    import json

    empty = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "empty", "namespace": "backend"},
        "spec": {
            "clusterIP": "10.96.0.12",
            "selector": {"app": "nobody"},
            "ports": [
                {"name": "web", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        },
    }
    f = tmp_path / "empty.yaml"
    f.write_text(yaml.safe_dump(empty))
    lab.apply([str(f)], log=lambda *_: None)
    try:

        def attempt(port, proto):
            out = in_ns(
                lab.pod_netns("frontend/f1"),
                sys.executable,
                "-c",
                REFUSE,
                "10.96.0.12",
                str(port),
                proto,
            )
            return json.loads(out.stdout)

        wait_for(
            lambda: attempt(80, "TCP")["outcome"] == "refused",
            20,
            interval=0.2,
            what="the Service without endpoints refusing",
        )
        # At once: the first packet is answered (UDP sends one; TCP did not resend its SYN,
        # which it does when the first one goes unanswered), instead of a wall-clock bound.
        for port, proto in ((80, "TCP"), (53, "UDP")):
            res = attempt(port, proto)
            assert res["outcome"] == "refused" and res["syn_retrans"] == 0, (proto, res)
    finally:
        lab.delete([str(f)], log=lambda *_: None)


# ---- NodePort, session affinity, readiness --------------------------------------------------


def external(lab, node_ip: str, port: int, n: int, proto: str = "TCP", timeout=2) -> dict:
    import json

    out = in_ns(
        lab.meta()["external"]["netns"],
        sys.executable,
        "-c",
        CONNECT.replace("settimeout(2)", f"settimeout({timeout})"),
        node_ip,
        str(port),
        str(n),
        proto,
        timeout=120,
    )
    return json.loads(out.stdout)


def apply_docs(lab, tmp_path, name: str, *docs) -> str:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump_all(list(docs)))
    lab.apply([str(f)], log=lambda *_: None)
    return str(f)


def node_port_service(name: str, node_port: int, policy: str, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "backend"},
        "spec": {
            "type": "NodePort",
            "externalTrafficPolicy": policy,
            "selector": {"app": "backend"},
            "ports": [
                {"name": "web", "port": 8080, "targetPort": "http", "nodePort": node_port},
                {
                    "name": "dns",
                    "port": 5353,
                    "targetPort": 53,
                    "protocol": "UDP",
                    "nodePort": node_port,
                },
            ],
            **spec,
        },
    }


def test_node_port_from_the_external_host_through_every_node(lab, tmp_path):
    """externalTrafficPolicy Cluster: every node answers on the node port with any endpoint
    (local or remote); the endpoint sees the node's gateway address (SNAT), as kube-proxy's
    masquerade would make it. The lab allocated the ClusterIP, which answers too."""
    f = apply_docs(lab, tmp_path, "np", node_port_service("np", 30080, "Cluster"))
    try:
        ps = pods(lab)
        backends = {ps[f"backend/b{i}"]["ip"] for i in (1, 2, 3)}
        nodes = lab.status()["nodes"]
        gateways = {str(netaddr.IPNetwork(n["podCIDR"]).network + 1): n for n in nodes}
        wait_for(
            lambda: external(lab, nodes[0]["ip"], 30080, 1)["failed"] == 0,
            20,
            interval=0.2,
            what="the node port answering",
        )
        seen = set()
        for n in nodes:
            res = external(lab, n["ip"], 30080, 30)
            assert res["failed"] == 0, (n, res)
            assert set(res["servers"]) <= backends
            seen |= set(res["servers"])
            clients = {p[len("client=") :] for p in res["peers"] if p.startswith("client=")}
            assert clients <= set(gateways), clients  # SNAT to a gateway IP...
            mine = str(netaddr.IPNetwork(n["podCIDR"]).network + 1)
            assert clients == {mine}, (n["name"], clients)  # ...of the node entered
            udp = external(lab, n["ip"], 30080, 5, proto="UDP")
            assert udp["failed"] == 0 and n["ip"] in udp["peers"], udp  # replies from nodeIP
        assert seen == backends  # through three nodes, every endpoint answered
        vip = next(s["clusterIP"] for s in lab.services() if s["name"] == "np")
        assert netaddr.IPAddress(vip) in netaddr.IPNetwork("10.96.0.0/16")
        assert connect(lab, "frontend/f1", 10, vip=vip)["failed"] == 0
    finally:
        lab.delete([f], log=lambda *_: None)


def test_node_port_local_keeps_the_client_ip_and_uses_local_endpoints(lab, tmp_path):
    ps = pods(lab)
    ext_ip = lab.status()["external"]["ip"]
    svc = node_port_service("npl", 30081, "Local")
    f = apply_docs(lab, tmp_path, "npl", svc)
    try:
        nodes = {n["name"]: n for n in lab.status()["nodes"]}
        wait_for(
            lambda: all(external(lab, n["ip"], 30081, 1)["failed"] == 0 for n in nodes.values()),
            20,
            interval=0.2,
            what="the Local node port answering on every node",
        )
        for name, n in nodes.items():
            local = {
                p["ip"] for k, p in ps.items() if k.startswith("backend/") and p["node"] == name
            }
            res = external(lab, n["ip"], 30081, 20)
            assert res["failed"] == 0 and set(res["servers"]) == local, (name, res)
            assert f"client={ext_ip}" in res["peers"], res  # the client's own address
        # Only b1 is an endpoint now (explicit EndpointSlice): the other nodes drop, b1's node
        # answers.
        b1 = ps["backend/b1"]
        svc["spec"].pop("selector")
        eps = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "npl-1",
                "namespace": "backend",
                "labels": {"kubernetes.io/service-name": "npl"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [b1["ip"]], "conditions": {"ready": True}}],
            "ports": [{"name": "web", "port": 80, "protocol": "TCP"}],
        }
        f = apply_docs(lab, tmp_path, "npl", svc, eps)
        others = [n for name, n in nodes.items() if name != b1["node"]]
        # (a connection counts as dropped after the default 2 s: a shorter wait could take a
        # slow answer on a loaded machine for a drop)
        wait_for(
            lambda: all(external(lab, n["ip"], 30081, 1)["failed"] == 1 for n in others),
            20,
            interval=0.2,
            what="nodes without a local endpoint dropping",
        )
        res = external(lab, nodes[b1["node"]]["ip"], 30081, 10)
        assert res["failed"] == 0 and res["servers"] == {b1["ip"]: 10}
    finally:
        lab.delete([f], log=lambda *_: None)


def test_session_affinity_pins_each_client(lab, tmp_path):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "sticky", "namespace": "backend"},
        "spec": {
            "clusterIP": "10.96.0.20",
            "selector": {"app": "backend"},
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}},
            "ports": [{"name": "web", "port": 8080, "targetPort": "http"}],
        },
    }
    f = apply_docs(lab, tmp_path, "sticky", svc)
    try:
        wait_for(
            lambda: connect(lab, "frontend/f1", 1, vip="10.96.0.20")["failed"] == 0,
            20,
            interval=0.2,
            what="the sticky Service answering",
        )
        chosen = {}
        for c in ("frontend/f1", "frontend/f2", "frontend/f3", "backend/b1"):
            res = connect(lab, c, 30, vip="10.96.0.20")
            assert res["failed"] == 0 and len(res["servers"]) == 1, (c, res)
            chosen[c] = next(iter(res["servers"]))
        assert len(chosen) == 4
        # the pinned endpoint of f1 goes out of service: f1 is pinned to another one
        ps = pods(lab)
        gone = next(k for k, p in ps.items() if p["ip"] == chosen["frontend/f1"])
        lab.set_ready(gone, False, log=lambda *_: None)
        try:

            def repinned():
                res = connect(lab, "frontend/f1", 20, vip="10.96.0.20")
                return (
                    res["failed"] == 0
                    and len(res["servers"]) == 1
                    and (chosen["frontend/f1"] not in res["servers"])
                )

            wait_for(repinned, 20, interval=0.2, what="f1 pinned to a remaining endpoint")
        finally:
            lab.set_ready(gone, True, log=lambda *_: None)
    finally:
        lab.delete([f], log=lambda *_: None)


HOLD = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.recv(256).decode().split()[1], flush=True)
sys.stdin.readline()                  # the test changes the endpoints meanwhile
s.sendall(b"x" * 1000); s.shutdown(socket.SHUT_WR)
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(256)
    if not chunk:
        break
    data += chunk
print(data.decode().strip(), flush=True)
"""


def test_unready_endpoint_gets_no_new_connections_and_existing_ones_live_on(lab):
    import subprocess

    ps = pods(lab)
    other = None
    hold = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.pod_netns("frontend/f2"),
            sys.executable,
            "-c",
            HOLD,
            VIP,
            "8080",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server = hold.stdout.readline().strip()
        held = next(k for k, p in ps.items() if p["ip"] == server)
        other = next(f"backend/b{i}" for i in (1, 2, 3) if f"backend/b{i}" != held)
        lab.set_ready(other, False, log=lambda *_: None)
        rest = {ps[f"backend/b{i}"]["ip"] for i in (1, 2, 3)} - {ps[other]["ip"]}

        def moved():
            res = connect(lab, "frontend/f3", 30)
            return res["failed"] == 0 and set(res["servers"]) == rest

        wait_for(moved, 20, interval=0.2, what=f"{other} (not ready) getting no new connections")
        # the connection opened before the change still works, on its endpoint
        out, _ = hold.communicate("go\n", timeout=20)
        assert out.strip() == "1000"
    finally:
        if hold.poll() is None:
            hold.kill()
        if other:
            lab.set_ready(other, True, log=lambda *_: None)
    back = {ps[f"backend/b{i}"]["ip"] for i in (1, 2, 3)}
    wait_for(
        lambda: set(connect(lab, "frontend/f3", 60)["servers"]) == back,
        20,
        interval=0.2,
        what="the endpoint back in service once ready",
    )
