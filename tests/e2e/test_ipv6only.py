"""An IPv6-only lab (issue 16): one IPv6 cluster CIDR, 2 nodes (the VXLAN underlay stays
IPv4), 4 pods. Connectivity on both nodes, one NetworkPolicy scenario, one Service (ClusterIP
from the pods, NodePort from the external host over IPv6)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import netaddr
import pytest
import yaml

from ovsctl.lab.lab import EXTERNAL_IP6, EXTERNAL_PORT, LabError
from tests.e2e.conftest import lab_pods_yaml
from tests.helpers import in_ns, wait_for


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, lab_pods_yaml(("front", "back"), per_ns=2), cluster_cidr="fd00:10:244::/56")


def test_nodes_and_pods_are_ipv6_only(lab):
    st = lab.status()
    assert [n["podCIDRs"] for n in st["nodes"]] == [["fd00:10:244::/64"], ["fd00:10:244:1::/64"]]
    # the nodes keep their IPv4 underlay address (the tunnel endpoint) beside the IPv6 one
    assert [n["ips"] for n in st["nodes"]] == [
        ["172.30.0.10", "fd00:172:30::a"],
        ["172.30.0.11", "fd00:172:30::b"],
    ]
    cidr = {n["name"]: netaddr.IPNetwork(n["podCIDR"]) for n in st["nodes"]}
    assert len(st["pods"]) == 4 and {p["node"] for p in st["pods"]} == {"node0", "node1"}
    for p in st["pods"]:
        assert p["ips"] == [p["ip"]] and netaddr.IPAddress(p["ip"]) in cidr[p["node"]], p
        shown = in_ns(lab.pod_netns(f"{p['namespace']}/{p['name']}"), "ip", "-4", "addr").stdout
        assert "inet " not in shown.replace("inet 127.0.0.1", ""), shown  # no IPv4 address
    with pytest.raises(LabError, match="no IPv4 pods"):
        lab.probe(family=4)


def test_every_pod_reaches_every_pod_and_the_external_host(lab):
    res = lab.probe()  # IPv6, the lab's only family
    assert len(res) == 4 * 3 * 2 and all(res.values()), res
    out = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "probe", "--name", lab.name, "--json"]
        + ["--family", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == res
    st = lab.status()
    node_ip6 = {n["name"]: n["ips"][1] for n in st["nodes"]}
    for p in st["pods"]:
        key = f"{p['namespace']}/{p['name']}"
        # to another pod: the source address arrives unchanged; to the external host:
        # masqueraded to the node's IPv6 address
        other = next(q for q in st["pods"] if q["node"] != p["node"])
        line = in_ns(lab.pod_netns(key), *CONNECT, other["ip"], "80").stdout.split()
        assert line[0] == p["ip"], (p, line)
        line = in_ns(lab.pod_netns(key), *CONNECT, EXTERNAL_IP6, str(EXTERNAL_PORT)).stdout.split()
        assert line[0] == node_ip6[p["node"]], (p, line)


CONNECT = (
    sys.executable,
    "-c",
    "import socket, sys; c = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); "
    "c.settimeout(5); print(c.makefile().readline().strip())",
)


def test_a_policy_isolates_a_namespace_on_ipv6(lab, tmp_path):
    """Ingress into `back` only from `front`, and only on TCP 80."""
    pol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "from-front", "namespace": "back"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "front"}}}],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                }
            ],
        },
    }
    f = tmp_path / "pol.yaml"
    f.write_text(yaml.safe_dump(pol))
    before = lab.probe()
    want = {
        k: not k.split("->")[1].startswith("back/")
        or (k.startswith("front/") and k.endswith(":80/TCP"))
        for k in before
    }
    assert sum(want.values()) == 24 - 12 + 4  # 12 probes into back, front's 4 on TCP 80 allowed
    lab.apply([str(f)], log=lambda *_: None)
    try:
        deadline = time.monotonic() + 20
        while True:
            lab.flush_conntrack()
            got = lab.probe(timeout=1.0)
            if got == want or time.monotonic() > deadline:
                break
        assert got == want, sorted(k for k in want if got[k] != want[k])
    finally:
        lab.delete([str(f)], log=lambda *_: None)
    wait_for(lambda: all(lab.probe(timeout=1.0).values()), 20, what="the policy gone")


def test_an_ipv6_service_from_pods_and_its_node_port_from_outside(lab, tmp_path):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "back"},
        "spec": {
            "type": "NodePort",
            "ipFamilies": ["IPv6"],
            "selector": {"app": "back"},
            "ports": [{"name": "web", "port": 8080, "targetPort": 80, "nodePort": 30690}],
        },
    }
    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump(svc))
    lab.apply([str(f)], log=lambda *_: None)
    try:
        got = next(s for s in lab.services() if s["name"] == "web")
        vip = got["clusterIP"]
        assert got["clusterIPs"] == [vip]
        assert netaddr.IPAddress(vip) in netaddr.IPNetwork("fd00:10:96::/112"), vip

        def from_pods():
            res = lab.probe(timeout=1.0, services=True)
            return {k: v for k, v in res.items() if "->svc:" in k}

        wait_for(lambda: all(from_pods().values()), 20, interval=0.2, what="the Service")
        assert len(from_pods()) == 4
        backends = {p["ip"] for p in lab.status()["pods"] if p["namespace"] == "back"}
        server = in_ns(lab.pod_netns("front/f1"), *CONNECT, vip, "8080").stdout.split()[1]
        assert server in backends
        targets = [
            {"key": n["name"], "ip": n["ips"][1], "port": 30690, "proto": "TCP"}
            for n in lab.status()["nodes"]
        ]
        wait_for(
            lambda: all(lab.probe_from_external(targets, timeout=1.0).values()),
            20,
            interval=0.2,
            what="the node port from the external host over IPv6",
        )
    finally:
        lab.delete([str(f)], log=lambda *_: None)
