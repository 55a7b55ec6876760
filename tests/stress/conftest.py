"""Faults and stress: real OVS, real agents, the shim run as kubelet runs it, under faults
(agent kill -9, OVS daemons restarted, the state source cut off, garbage input, packet-in
floods). Bounded in time: the whole directory runs in a few minutes as part of `make test`."""

from __future__ import annotations

import json
import os

import pytest

from ovsctl.agent.host.adapters import HOST_IF_RE
from ovsctl.lab import kubelet
from tests.e2e.conftest import make_lab  # noqa: F401 - the lab fixture, shared with e2e
from tests.helpers import Node, in_ns


def pytest_configure(config):
    config.addinivalue_line("markers", "stress: faults and stress tests (root, real OVS)")


def pytest_collection_modifyitems(items):
    for item in items:
        if f"{os.sep}stress{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.stress)


@pytest.fixture(scope="module")
def node(request):
    """One node (private OVS + agent in a netns) for this module; its pod CIDR is a /25 so that
    a few hundred ADDs wrap around it and addresses get reused."""
    if os.geteuid() != 0:
        pytest.fail("stress tests need root (network namespaces, OVS)")
    n = Node(pod_cidr="10.244.0.0/25")

    def stop():
        # SIGKILL first: on SIGTERM the agent logs "stopping" but its process does not exit
        # (a non-daemon thread stays), and Node.stop would wait 10 s for it every time.
        n.kill_agent()
        n.stop()

    request.addfinalizer(stop)
    n.start()
    return n


# ---- what a node holds, as a user would look at it --------------------------------------------


def cni(
    node: Node,
    command: str,
    cid: str,
    netns: str,
    pod: str = "default/pod",
    pod_uid: str | None = None,
    conf: dict | None = None,
    timeout: float = 60,
):
    """The shim, run as kubelet runs it (CNI_* environment, the config on stdin)."""
    ns, name = pod.split("/")
    env = kubelet.cni_env(command, cid, netns, namespace=ns, name=name, pod_uid=pod_uid)
    return kubelet.run(env, json.dumps(conf or node.netconf("1.1.0")), timeout=timeout)


def pod_ports(node: Node) -> set[str]:
    """br-int's pod ports (host ends of pod veths)."""
    return {p for p in node.ovs.vsctl("list-ports", "br-int").split() if HOST_IF_RE.match(p)}


def pod_veths(node: Node) -> set[str]:
    """Host ends of pod veths in the node's namespace, plugged or not."""
    out = in_ns(node.ns, "ip", "-o", "link", "show").stdout
    names = {line.split(": ")[1].split("@")[0] for line in out.splitlines()}
    return {n for n in names if HOST_IF_RE.match(n)}


def ipam_allocations(node: Node) -> dict[str, str]:
    """container ID -> IP, from the agent's persisted IPAM state."""
    d = os.path.join(node.state, "ipam")
    out = {}
    for f in os.listdir(d) if os.path.isdir(d) else ():
        if f.endswith(".json"):
            with open(os.path.join(d, f)) as fh:
                for a in json.load(fh)["allocations"]:
                    out[a["container_id"]] = a["ip"]
    return out


def pod_cookie_owners(node: Node) -> set[int]:
    """Owner ids (low 40 bits of the cookie) of the pod flows on br-int."""
    from flows import cookie

    out = set()
    for line in node.ovs.ofctl("dump-flows", "br-int").splitlines():
        line = line.strip()
        if line.startswith("cookie="):
            c = int(line.split(",", 1)[0].split("=")[1], 16)
            d = cookie.decode(c)
            if d["feature"] == "pod":
                out.add(d["owner"])
    return out


def netns_files() -> set[str]:
    try:
        return set(os.listdir("/var/run/netns"))
    except FileNotFoundError:
        return set()
