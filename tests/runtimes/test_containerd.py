"""containerd 1.6 (CRI, runc) runs the real `ovsctl-cni` for pod sandboxes, as kubelet would
have it do: RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox over gRPC."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

import pytest

from tests.helpers import uid, wait_for
from tests.runtimes.checks import (
    assert_back_to,
    assert_pings,
    assert_tcp,
    flows_mentioning,
    gateway,
    in_cidr,
    ipam_ips,
    node_links,
    node_state,
    ovs_ports,
)
from tests.runtimes.cri import CRIError


def sandbox(containerd, name: str | None = None, namespace: str = "default") -> dict:
    name = name or f"p{uid()}"
    sid = containerd.cri.run_pod_sandbox(name, namespace, str(uuid.uuid4()))
    status, info = containerd.cri.pod_sandbox_status(sid)
    spec = info["info"]["runtimeSpec"]
    netns = next(n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network")
    return {"id": sid, "name": name, "ip": status.network.ip, "netns": netns}


def remove(containerd, sid: str, timeout: float = 60) -> None:
    """What kubelet does until it succeeds: stop, then remove."""

    def gone():
        containerd.cri.stop_pod_sandbox(sid)
        containerd.cri.remove_pod_sandbox(sid)
        return True

    wait_for(gone, timeout, interval=0.5, what=f"sandbox {sid[:12]} stopped and removed")


def host_if_of(node, sid: str) -> set[str]:
    """OVS ports the agent made for this sandbox (external_ids container-id)."""
    out = node.ovs.vsctl(
        "--bare", "--columns=name", "find", "Interface", f"external_ids:container-id={sid}"
    )
    return set(out.split())


@pytest.fixture
def baseline(rt_node, containerd):
    return node_state(rt_node)


def test_containerd_is_the_real_cri_with_runc(containerd):
    v = containerd.cri.version()
    assert v.runtime_name == "containerd" and v.runtime_version.startswith("1.6")
    assert v.runtime_api_version == "v1"


def test_sandbox_gets_a_pod_cidr_address_and_reaches_a_peer_and_the_gateway(
    rt_node, containerd, baseline
):
    a, b = sandbox(containerd), sandbox(containerd)
    try:
        for s in (a, b):
            assert in_cidr(s["ip"], rt_node.pod_cidr), s
            assert s["ip"] in ipam_ips(rt_node)
            assert host_if_of(rt_node, s["id"]), f"no OVS port for sandbox {s['id']}"
        assert a["ip"] != b["ip"]
        assert_pings(a["netns"], b["ip"])
        assert_pings(b["netns"], gateway(rt_node.pod_cidr))
        assert_tcp(b["netns"], b["ip"], a["netns"])
    finally:
        for s in (a, b):
            remove(containerd, s["id"])
    assert_back_to(rt_node, baseline, what="after two sandboxes")


def test_stop_and_remove_leave_nothing_and_the_second_del_succeeds(rt_node, containerd, baseline):
    s = sandbox(containerd)
    ports = host_if_of(rt_node, s["id"])
    assert ports and s["ip"] in ipam_ips(rt_node) and flows_mentioning(rt_node, s["ip"])
    assert ports <= node_links(rt_node)
    containerd.cri.stop_pod_sandbox(s["id"])
    # stopped: the network is torn down already (kubelet may keep a stopped sandbox for long)
    assert s["ip"] not in ipam_ips(rt_node)
    assert not ports & ovs_ports(rt_node) and not ports & node_links(rt_node)
    assert not flows_mentioning(rt_node, s["ip"])
    assert not os.path.exists(s["netns"]), "containerd left the sandbox netns"
    containerd.cri.remove_pod_sandbox(s["id"])
    assert_back_to(rt_node, baseline, what="after stop+remove")
    with open(rt_node.agent_log) as fh:
        dels = [line for line in fh if f"CNI DEL {s['id']} " in line]
    assert len(dels) >= 2 and all(re.search(r" ok \(", d) for d in dels), dels


def test_twenty_sequential_and_ten_parallel_sandboxes_leave_nothing(rt_node, containerd, baseline):
    seen = set()
    for i in range(20):
        s = sandbox(containerd, f"seq{i}-{uid(4)}")
        assert in_cidr(s["ip"], rt_node.pod_cidr)
        seen.add(s["ip"])
        remove(containerd, s["id"])
    assert_back_to(rt_node, baseline, what="after 20 sequential sandboxes")

    made, errors = [], []

    def run(i):
        try:
            made.append(sandbox(containerd, f"par{i}-{uid(4)}"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        ips = [s["ip"] for s in made]
        assert len(set(ips)) == 10 and all(in_cidr(ip, rt_node.pod_cidr) for ip in ips)
        assert_pings(made[0]["netns"], made[-1]["ip"])
    finally:
        rm = [threading.Thread(target=remove, args=(containerd, s["id"])) for s in made]
        for t in rm:
            t.start()
        for t in rm:
            t.join(120)
    assert_back_to(rt_node, baseline, what="after 10 parallel sandboxes")


def test_agent_kill9_during_parallel_runs_then_runtime_removes_all_and_nothing_is_left(
    rt_node, containerd, baseline
):
    outcomes: list = []
    n = 8

    def run(i):
        try:
            outcomes.append(sandbox(containerd, f"kill{i}-{uid(4)}"))
        except CRIError as e:
            outcomes.append(e)

    adds_before = _count(rt_node, "CNI ADD ")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        # kill it mid-flight: once the first ADDs have been answered, before all have
        wait_for(lambda: _count(rt_node, "CNI ADD ") > adds_before, 60, what="a first ADD answered")
        rt_node.kill_agent()
        for t in threads:
            t.join(180)
        rt_node.start_agent()
        ok = [o for o in outcomes if isinstance(o, dict)]
        failed = [o for o in outcomes if not isinstance(o, dict)]
        assert len(outcomes) == n
        print(f"kill -9 mid-flight: {len(ok)} sandboxes ran, {len(failed)} failed: {failed}")
        # the ones that ran keep their addresses across the restart and still work
        held = ipam_ips(rt_node)
        for s in ok:
            assert s["ip"] in held, f"{s['name']} lost {s['ip']} in the agent's restart"
        for s in ok[:2]:
            assert_pings(s["netns"], gateway(rt_node.pod_cidr))
    finally:
        if rt_node.agent_proc.poll() is not None:
            rt_node.start_agent()
        items = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                items = containerd.cri.list_pod_sandbox()
                break
            except CRIError:
                time.sleep(0.5)
        for sb in items:
            if sb.metadata.name.startswith("kill"):
                remove(containerd, sb.id, timeout=120)
    assert not [
        sb for sb in containerd.cri.list_pod_sandbox() if sb.metadata.name.startswith("kill")
    ]
    assert_back_to(rt_node, baseline, timeout=60, what="after kill -9 and removal of every sandbox")


def _count(node, text: str) -> int:
    with open(node.agent_log) as fh:
        return sum(text in line and " ok (" in line for line in fh)
