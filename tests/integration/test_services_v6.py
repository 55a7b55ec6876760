"""Dual-stack Services on one real node (issue 16): an agent with an IPv4 and an IPv6 pod CIDR
and a directory of YAML as its cluster state, pods plugged by the CNI shim, real packets
through OVS (userspace datapath).

- A RequireDualStack Service answers on both ClusterIPs, from an endpoint of each family
  (EndpointSlices of addressType IPv4 and IPv6), and the endpoint sees the client's own
  address of that family.
- A Service without endpoints is refused at once over IPv6: TCP gets a RST (connection
  refused, not a timeout), UDP an ICMPv6 port unreachable (a connected UDP socket's next
  receive fails with ECONNREFUSED).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.helpers import Node, in_ns, wait_for

POD_CIDRS = "10.244.0.0/24,fd00:10:244::/64"
VIP4, VIP6, EMPTY6 = "10.96.0.50", "fd00:10:96::50", "fd00:10:96::51"

# a TCP and UDP server on both families: answers "<peer address>" and closes
SERVER = """
import socket, sys, threading
def tcp():
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", 8080)); s.listen(16)
    while True:
        c, peer = s.accept()
        with c:
            c.sendall(peer[0].removeprefix("::ffff:").encode() + b"\\n")
threading.Thread(target=tcp, daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""


class DualNode(Node):
    """The harness's node with both families and a YAML cluster state."""

    def __init__(self):
        super().__init__(pod_cidr=POD_CIDRS.split(",")[0])
        self.cluster_dir = os.path.join(self.dir, "cluster")
        os.makedirs(self.cluster_dir)
        # the agent waits for its Node in the cluster state
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.ns}}
        node["spec"] = {"podCIDR": self.pod_cidr, "podCIDRs": POD_CIDRS.split(",")}
        self.write("node", node)

    def agent_cmd(self) -> list[str]:
        return [
            *super().agent_cmd(),
            "--pod-cidrs",
            POD_CIDRS,
            "--cluster-cidrs",
            "10.244.0.0/16,fd00:10:244::/56",
            "--cluster-state",
            self.cluster_dir,
        ]

    def write(self, name: str, obj: dict) -> None:
        tmp = os.path.join(self.cluster_dir, f".{name}.tmp")
        with open(tmp, "w") as fh:
            yaml.safe_dump(obj, fh)
        os.rename(tmp, os.path.join(self.cluster_dir, f"{name}.yaml"))


@pytest.fixture(scope="module")
def dual(request):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, OVS)")
    n = DualNode()
    request.addfinalizer(n.stop)
    n.start()
    return n


@pytest.fixture(scope="module")
def world(dual):
    srv, cli = dual.add_pod("srv"), dual.add_pod("cli")
    ips = {p["name"]: [a["address"].split("/")[0] for a in p["result"]["ips"]] for p in (srv, cli)}
    assert all(len(v) == 2 and ":" in v[1] for v in ips.values()), ips  # IPv4 first, IPv6
    server = subprocess.Popen(
        ["ip", "netns", "exec", srv["ns"], sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "listening"
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "clusterIP": VIP4,
                "clusterIPs": [VIP4, VIP6],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        }
        dual.write("svc-web", svc)
        for k, fam in enumerate(("IPv4", "IPv6")):
            dual.write(
                f"eps-web-{fam}",
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"web-{fam.lower()}",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"},
                    },
                    "addressType": fam,
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ips["srv"][k]]}],
                },
            )
        dual.write(
            "svc-empty",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "empty", "namespace": "default"},
                "spec": {
                    "clusterIP": EMPTY6,
                    "ipFamilies": ["IPv6"],
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080},
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                    ],
                },
            },
        )
        yield {"srv": srv, "cli": cli, "ips": ips}
    finally:
        server.kill()
        server.wait(timeout=10)


def _client(ns: str, code: str) -> str:
    p = in_ns(ns, sys.executable, "-c", textwrap.dedent(code), check=False, timeout=30)
    return (p.stdout + p.stderr).strip()


def _get(ns: str, host: str) -> str:
    return _client(
        ns,
        f"""
        import socket
        fam = socket.AF_INET6 if ":" in {host!r} else socket.AF_INET
        with socket.socket(fam) as s:
            s.settimeout(2)
            try:
                s.connect(({host!r}, 80))
                print("reply", s.recv(100).decode().strip())
            except OSError as e:
                print(type(e).__name__)
        """,
    )


def test_a_require_dual_stack_service_answers_on_both_cluster_ips(dual, world):
    cli = world["cli"]["ns"]
    for k, vip in enumerate((VIP4, VIP6)):
        got = wait_for(
            lambda vip=vip: (r := _get(cli, vip)).startswith("reply") and r,
            30,
            interval=0.3,
            what=f"the Service on {vip} (agent log:\n{dual.tail_log()})",
        )
        # the endpoint of that family answered, and saw the client's own address of it
        assert got == f"reply {world['ips']['cli'][k]}", got


def test_a_service_without_endpoints_is_refused_at_once_over_ipv6(dual, world):
    cli = world["cli"]["ns"]
    wait_for(
        lambda: _get(cli, EMPTY6) == "ConnectionRefusedError",
        30,
        interval=0.3,
        what=f"a TCP RST from {EMPTY6} (agent log:\n{dual.tail_log()})",
    )
    udp = _client(
        cli,
        f"""
        import socket
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.connect(({EMPTY6!r}, 53))
            s.send(b"query")
            try:
                s.recv(100)
                print("answered")
            except OSError as e:
                print(type(e).__name__)
        """,
    )
    assert udp == "ConnectionRefusedError", udp  # the ICMPv6 port unreachable arrived
