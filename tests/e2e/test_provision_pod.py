"""`provision.sh pod` (kubelet's part for a pod of the Vagrant lab, which has no kubelet) against
a node of the netns lab: the same shim and agent a VM runs. CNI ADD plugs the pod into node1,
the printed Pod parses with its IP, a lab pod on node0 reaches it over the overlay on TCP and
UDP with its source IP kept, and `pod del` removes the port, the responder and the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from ovsctl.k8s import model
from ovsctl.lab.lab import PROBER, PROVISION
from tests.helpers import REPO, in_ns, wait_for

SHIM = os.path.join(REPO, "cni-shim", "ovsctl-cni")
CLIENT_POD = """apiVersion: v1
kind: Pod
metadata: {name: c, namespace: default}
spec:
  nodeName: node0
  containers:
  - {name: app, image: busybox}
"""
READ_LINE = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    print(s.makefile().readline().strip())
"""


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, CLIENT_POD)


def provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", PROVISION, *args], capture_output=True, text=True, timeout=120)


def test_pod_add_plugs_a_pod_that_others_reach_and_del_removes_it(lab):
    netns = lab.ns("p.vm.p1")  # `lab down` removes every LAB.* namespace, also after a failure
    run_dir = os.path.join(lab.dir, "vmpods")  # and every process naming the lab directory
    out = os.path.join(lab.cluster_dir, "Pod-vm.p1.yaml")
    common = ["--namespace", "vm", "--name", "p1", "--netns", netns, "--run-dir", run_dir]
    common += ["--cni-socket", lab.socket("node1"), "--shim", SHIM]
    ports_before = lab.ovs("node1").vsctl("list-ports", "br-int").split()

    p = provision(
        "pod", "add", *common, "--node", "node1", "--label", "app=vm", "--label", "tier=x",
        "--port", "http:80/TCP", "--port", "53/UDP", "--python", sys.executable, "--out", out,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    pod = model.parse(yaml.safe_load(open(out).read()))
    assert (pod.namespace, pod.name, pod.node_name) == ("vm", "p1", "node1")
    assert dict(pod.labels) == {"app": "vm", "tier": "x"} and pod.ready
    assert [(cp.name, cp.port, cp.protocol) for cp in pod.ports] == [
        ("http", 80, "TCP"),
        ("", 53, "UDP"),
    ]
    assert pod.ip in p.stderr and pod.ip.startswith("10.244.1.")  # node1's pod CIDR
    assert len(lab.ovs("node1").vsctl("list-ports", "br-int").split()) == len(ports_before) + 1

    client = lab.pod_netns("default/c")
    client_ip = next(x["ip"] for x in lab.status()["pods"] if x["name"] == "c")
    got = wait_for(
        lambda: in_ns(client, sys.executable, "-c", READ_LINE, pod.ip, "80", check=False).stdout,
        30,
        what="TCP to the provisioned pod",
    )
    assert got.split() == [client_ip, pod.ip]  # across the overlay, the source IP unchanged
    targets = [{"key": "udp", "ip": pod.ip, "port": 53, "proto": "UDP"}]
    probe = subprocess.run(
        ["ip", "netns", "exec", client, sys.executable, PROBER, "--timeout", "5"],
        input=json.dumps(targets),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(probe.stdout) == {"udp": True}, probe.stderr

    pid = int(open(os.path.join(run_dir, "vm.p1.pid")).read())
    p = provision("pod", "del", *common)
    assert p.returncode == 0, p.stderr
    os.unlink(out)
    assert (
        netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="the responder to stop")
    assert sorted(os.listdir(run_dir)) == []
    assert lab.ovs("node1").vsctl("list-ports", "br-int").split() == ports_before
