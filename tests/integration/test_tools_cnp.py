"""`ovsctl flows`, `trace` and `reachability` explain ClusterNetworkPolicy on one real node, run
as a user runs them (inside the node's network namespace, with its OVS run directory and its
agent's socket): an agent with a directory of YAML as its cluster state, pods plugged by the
CNI shim, real flows, real `ofproto/trace`, and a real TCP connection for the verdict.

Pods x/ca and y/cb on the node; ClusterNetworkPolicy deny-y (Admin, priority 10) denies x's
ingress from y (rule "from-y"), base-x (Baseline, priority 3) accepts y's ingress from x
(rule "from-x"). So y/cb -> x/ca is dropped by the Admin Deny and x/ca -> y/cb is accepted by
the Baseline rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.test_cnp_tools import cnp
from tests.helpers import Node, in_ns, wait_for
from tests.integration.test_services_v6 import DualNode
from tests.integration.test_tools import flows_json, ovsctl

SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""
CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(1.0)
try:
    s.connect((sys.argv[1], 80)); print("open")
except OSError:
    print("blocked")
"""


class YamlNode(Node):
    """The harness's node with a YAML cluster state (Namespaces, Pods, policies)."""

    def __init__(self):
        super().__init__()
        self.cluster_dir = os.path.join(self.dir, "cluster")
        os.makedirs(self.cluster_dir)
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.ns}}
        node["spec"] = {"podCIDR": self.pod_cidr}
        self.write("node", node)

    def agent_cmd(self) -> list[str]:
        return [*super().agent_cmd(), "--cluster-state", self.cluster_dir]

    write = DualNode.write  # an object into the YAML directory, atomically


@pytest.fixture(scope="module")
def ynode(request):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, OVS)")
    n = YamlNode()
    request.addfinalizer(n.stop)
    n.start()
    return n


@pytest.fixture(scope="module")
def world(ynode, request):
    for ns in ("x", "y"):
        ynode.write(f"ns-{ns}", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    pods = {"ca": ynode.add_pod("ca", "x"), "cb": ynode.add_pod("cb", "y")}
    for (name, p), ns in zip(pods.items(), ("x", "y"), strict=True):
        ynode.write(
            f"pod-{name}",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {
                    "nodeName": ynode.ns,
                    "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}],
                },
                "status": {"phase": "Running", "podIP": p["ip"], "podIPs": [{"ip": p["ip"]}]},
            },
        )
    servers = []
    for p in pods.values():
        srv = subprocess.Popen(
            ["ip", "netns", "exec", p["ns"], sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers.append(srv)
        request.addfinalizer(srv.kill)
        assert srv.stdout.readline().strip() == "listening"
    ynode.write("cnp-deny-y", cnp("deny-y", "Admin", 10, "x", "from-y", "Deny", "y"))
    ynode.write("cnp-base-x", cnp("base-x", "Baseline", 3, "y", "from-x", "Accept", "x"))
    wait_for(
        lambda: (
            len(flows_json(ynode, "--policy", "cnp/deny-y")) > 0
            and len(flows_json(ynode, "--policy", "cnp/base-x")) > 0
        ),
        20,
        what="both ClusterNetworkPolicies' flows installed",
    )
    return {n: p["ip"] for n, p in pods.items()} | {"_pods": pods}


def connect(pod: dict, ip: str) -> str:
    return in_ns(pod["ns"], sys.executable, "-c", CONNECT, ip).stdout.strip()


def test_real_connections_follow_the_tiers(ynode, world):
    pods = world["_pods"]
    wait_for(lambda: connect(pods["ca"], world["cb"]) == "open", 10, what="x/ca -> y/cb open")
    assert connect(pods["cb"], world["ca"]) == "blocked"


def test_trace_names_the_admin_deny_and_the_baseline_accept(ynode, world):
    p = ovsctl(ynode, "trace", "y/cb", "x/ca", "--json")
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)
    assert t["verdict"] == "dropped" and t["table"] == "AdminIngressRule"
    assert t["cluster_policy"]["policy"] == "deny-y"
    assert t["cluster_policy"]["rule_name"] == "from-y"
    assert t["tiers"]["ingress"] == "Admin" and t["tier_disagreements"] == []
    assert t["agrees_with_intent"] is True
    text = ovsctl(ynode, "trace", "y/cb", "x/ca").stdout
    assert (
        "dropped in AdminIngressRule by ClusterNetworkPolicy deny-y (Admin, priority 10) "
        "ingress rule 0 'from-y': Deny"
    ) in text
    # the path through every tier table by name
    for table in ("AdminEgressRule", "EgressRule", "BaselineEgressRule", "AdminIngressRule"):
        assert f" {table} " in text, text
    t = json.loads(ovsctl(ynode, "trace", "x/ca", "y/cb", "--json").stdout)
    assert t["verdict"] == "delivered" and t["ingress"]["status"] == "accepted"
    assert t["ingress"]["cnp"]["tier"] == "Baseline" and t["ingress"]["cnp"]["action"] == "Accept"
    assert t["tiers"] == {"egress": "default", "ingress": "Baseline"}
    assert t["tier_disagreements"] == []


def test_reachability_shows_the_tiers(ynode, world):
    p = ovsctl(ynode, "reachability", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout)
    assert res["traced"] == {"x/ca->y/cb:80/TCP": True, "y/cb->x/ca:80/TCP": False}
    assert res["tiers"] == {"x/ca->y/cb:80/TCP": "Baseline", "y/cb->x/ca:80/TCP": "Admin"}
    text = ovsctl(ynode, "reachability").stdout
    assert "A Admin 1, N NetworkPolicy 0, B Baseline 1, . default 0" in text


def test_flows_by_cnp_with_and_without_the_agent(ynode, world):
    rows = flows_json(ynode, "--policy", "cnp/deny-y")
    assert {r["table"] for r in rows} == {"AdminIngressRule"}
    assert {r["owner_name"] for r in rows} == {"cnp deny-y ingress rule 0 (Admin 'from-y': Deny)"}
    assert ovsctl(ynode, "flows", "--diff", "--policy", "cnp/deny-y").returncode == 0
    ynode.kill_agent()
    try:
        gone = ovsctl(ynode, "flows", "--json", "--policy", "cnp/deny-y")
        assert gone.returncode == 0 and "agent unreachable" in gone.stderr
        by_cookie = json.loads(gone.stdout)
        assert [r["match"] for r in by_cookie] == [r["match"] for r in rows]
        assert {r["owner_name"] for r in by_cookie} == {"cnp deny-y ingress rule 0"}
    finally:
        ynode.start_agent()
    wait_for(
        lambda: ovsctl(ynode, "flows", "--diff").returncode == 0, 30, what="in sync after restart"
    )
