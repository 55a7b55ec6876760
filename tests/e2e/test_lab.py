"""The multi-node lab end to end: 3 nodes (each its own OVS + agent in a netns), 9 pods in 3
namespaces plugged in through the CNI shim, packets across a VXLAN overlay."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import netaddr
import pytest

from ovsctl.lab.lab import EXTERNAL_IP, EXTERNAL_PORT, Lab, netns_list
from tests.e2e.conftest import lab_pods_yaml
from tests.helpers import in_ns, wait_for

CLIENT = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=5)
c.settimeout(30)
f = c.makefile("rb")
peer = f.readline().decode().split()[0]  # "PEER_IP SERVER_IP"
chunk = b"x" * 65536
left = n
while left > 0:
    c.sendall(chunk[: min(left, len(chunk))]); left -= min(left, len(chunk))
c.shutdown(socket.SHUT_WR)
print(peer, f.readline().decode().strip())
"""


@pytest.fixture(scope="module")
def lab(make_lab) -> Lab:
    return make_lab(3, lab_pods_yaml())


def pods_by_name(lab: Lab) -> dict:
    return {f"{p['namespace']}/{p['name']}": p for p in lab.status()["pods"]}


def talk(lab: Lab, src: str, host: str, port: int, nbytes: int = 0) -> list[str]:
    """From pod `src`, connect to host:port, send nbytes; returns [peer address the server
    saw, bytes the server counted]."""
    out = in_ns(
        lab.pod_netns(src), sys.executable, "-c", CLIENT, host, str(port), str(nbytes), timeout=60
    )
    return out.stdout.split()


def ping(lab: Lab, src: str, ip: str, count: int = 1) -> bool:
    return (
        in_ns(
            lab.pod_netns(src), "ping", "-n", "-c", str(count), "-W", "1", ip, check=False
        ).returncode
        == 0
    )


def test_status_shows_nodes_and_pods(lab):
    st = lab.status()
    assert [n["name"] for n in st["nodes"]] == ["node0", "node1", "node2"]
    assert all(n["healthy"] for n in st["nodes"])
    assert [n["podCIDR"] for n in st["nodes"]] == [
        "10.244.0.0/24",
        "10.244.1.0/24",
        "10.244.2.0/24",
    ]
    cidr = {n["name"]: netaddr.IPNetwork(n["podCIDR"]) for n in st["nodes"]}
    assert len(st["pods"]) == 9
    assert {p["node"] for p in st["pods"]} == {"node0", "node1", "node2"}
    for p in st["pods"]:
        assert set(p) == {"namespace", "name", "node", "ip", "ips"} and p["ips"] == [p["ip"]]
        assert netaddr.IPAddress(p["ip"]) in cidr[p["node"]]
    # the CLI prints the same JSON
    cli = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "status", "--name", lab.name, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout)["pods"] == st["pods"]


def test_full_matrix_is_reachable(lab):
    res = lab.probe()
    pods = pods_by_name(lab)
    expected = {
        f"{s}->{d}:{port}" for s in pods for d in pods if s != d for port in ("80/TCP", "53/UDP")
    }
    assert set(res) == expected
    assert [k for k, v in res.items() if not v] == []


def test_probe_cli_json_keys_and_matrix(lab):
    out = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "probe", "--name", lab.name, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout)
    assert len(res) == 9 * 8 * 2 and all(res.values())
    assert "frontend/f1->backend/b2:80/TCP" in res
    text = subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", "probe", "--name", lab.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "144/144 reachable" in text


def test_source_ip_is_preserved_across_nodes(lab):
    pods = pods_by_name(lab)
    for src, dst in (("frontend/f1", "backend/b2"), ("data/d3", "frontend/f1")):
        assert pods[src]["node"] != pods[dst]["node"]
        peer, _ = talk(lab, src, pods[dst]["ip"], 80)
        assert peer == pods[src]["ip"]


def test_full_size_tcp_across_nodes_does_not_stall(lab):
    pods = pods_by_name(lab)
    n = 20 * 1024 * 1024
    peer, count = talk(lab, "frontend/f1", pods["data/d2"]["ip"], 80, n)
    assert (peer, count) == (pods["frontend/f1"]["ip"], str(n))
    # pods got the underlay MTU minus the VXLAN overhead
    link = in_ns(lab.pod_netns("frontend/f1"), "ip", "link", "show", "eth0").stdout
    assert "mtu 1450" in link


def test_pod_to_external_is_masqueraded_to_the_node_ip(lab):
    st = lab.status()
    node_ip = {n["name"]: n["ip"] for n in st["nodes"]}
    for p in st["pods"][:3]:
        peer, _ = talk(lab, f"{p['namespace']}/{p['name']}", EXTERNAL_IP, EXTERNAL_PORT)
        assert peer == node_ip[p["node"]]


PROBE_TIMEOUT = 2.0


def test_probe_is_bounded_when_most_probes_are_blocked(lab):
    pods = pods_by_name(lab)
    blocked = list(pods)[:7]
    for p in blocked:  # drop everything arriving at 7 of the 9 pods
        in_ns(
            lab.pod_netns(p),
            "iptables",
            "-I",
            "INPUT",
            "-i",
            "eth0",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DROP",
        )
        in_ns(
            lab.pod_netns(p),
            "iptables",
            "-I",
            "INPUT",
            "-i",
            "eth0",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "DROP",
        )
    try:
        t0 = time.monotonic()
        res = lab.probe(timeout=PROBE_TIMEOUT)
        took = time.monotonic() - t0
        for k, v in res.items():
            assert v == (k.split("->")[1].split(":")[0] not in blocked), k
        # The blocked probes wait out their timeout side by side, not one after the other: the
        # bound is what a source with n blocked targets would take probing them in turn (n
        # timeouts, 28 s here), against the few seconds it takes side by side.
        per_src = collections.Counter(k.split("->")[0] for k, v in res.items() if not v)
        serial = max(per_src.values()) * PROBE_TIMEOUT
        assert max(per_src.values()) >= 12, per_src
        assert took < serial, (
            f"probe took {took:.1f}s, as long as {serial:.0f}s of blocked probes in turn"
        )
    finally:
        for p in blocked:
            in_ns(lab.pod_netns(p), "iptables", "-F", "INPUT")


def test_agent_restart_loses_no_packets(lab):
    pods = pods_by_name(lab)
    src, dst = "frontend/f1", "backend/b2"
    pinger = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.pod_netns(src),
            "ping",
            "-n",
            "-i",
            "0.05",
            "-c",
            "120",
            "-W",
            "1",
            pods[dst]["ip"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for node in ("node0", "node1"):  # both ends' agents, kill -9
            lab.restart(node, "agent", log=lambda *_: None)
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    assert " 0% packet loss" in out and "duplicates" not in out, out


@pytest.mark.parametrize("frw", [True, False], ids=["flow-restore-wait", "crash"])
def test_ovs_vswitchd_restart_gets_connectivity_back_within_10s(lab, frw):
    pods = pods_by_name(lab)
    lab.restart("node1", "ovs-vswitchd", flow_restore_wait=frw, log=lambda *_: None)
    wait_for(
        lambda: ping(lab, "frontend/f1", pods["backend/b2"]["ip"]),
        10,
        interval=0.1,
        what="pod on node0 reaching a pod on node1 again",
    )
    ovs = lab.ovs("node1")
    # flow-restore-wait is never left set
    assert "flow-restore-wait" not in ovs.vsctl("get", "Open_vSwitch", ".", "other_config")
    assert ping(lab, "backend/b2", pods["data/d3"]["ip"])


def test_a_node_that_was_down_catches_up_and_a_new_node_is_reached_by_everyone(lab, tmp_path):
    meta = lab.meta()
    # node2's agent dies and stays away while the cluster changes
    os.kill(meta["nodes"]["node2"]["agent_pid"], signal.SIGKILL)
    lab.up(4, log=lambda *_: None)
    f = tmp_path / "p.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: newcomer, namespace: backend}\n"
        "spec:\n  nodeName: node3\n  containers:\n  - name: a\n    image: x\n    ports:\n"
        "    - {containerPort: 80}\n"
    )
    lab.apply([str(f)], log=lambda *_: None)
    lab.restart("node2", "agent", log=lambda *_: None)
    res = lab.probe()
    to_new = {k: v for k, v in res.items() if "->backend/newcomer:" in k}
    assert len(to_new) == 9 and all(to_new.values()), to_new
    from_new = {k: v for k, v in res.items() if k.startswith("backend/newcomer->")}
    assert len(from_new) == 18 and all(from_new.values())


def test_deleted_pod_stops_answering_and_its_ip_is_reused_later(make_lab, tmp_path):
    small = make_lab(1, node_prefix=29)  # 5 usable pod addresses: reuse comes quickly
    other = make_lab(1)  # several labs at once
    assert all(n["healthy"] for n in small.status()["nodes"] + other.status()["nodes"])

    def pod_file(name):
        p = tmp_path / f"{name}.yaml"
        p.write_text(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n"
            "  - name: a\n    image: x\n    ports: [{containerPort: 80}]\n"
        )
        return str(p)

    small.apply([pod_file("keeper"), pod_file("victim")], log=lambda *_: None)
    ips = {p["name"]: p["ip"] for p in small.status()["pods"]}
    assert ping(small, "default/keeper", ips["victim"])
    small.delete([pod_file("victim")], log=lambda *_: None)
    assert not ping(small, "default/keeper", ips["victim"], count=2)
    seen = []
    for i in range(4):
        small.apply([pod_file(f"n{i}")], log=lambda *_: None)
        seen.append({p["name"]: p["ip"] for p in small.status()["pods"]}[f"n{i}"])
        if seen[-1] == ips["victim"]:
            break
    assert ips["victim"] in seen, seen  # handed out again once the range wrapped
    assert seen[0] != ips["victim"]  # but not right away
    newest = seen[-1]
    who = [p for p in small.status()["pods"] if p["ip"] == newest][0]["name"]
    peer, _ = talk(small, "default/keeper", newest, 80)
    assert peer == ips["keeper"] and who.startswith("n")


def test_down_removes_everything_even_after_a_crash(make_lab):
    lab = make_lab(2, lab_pods_yaml(("solo",), per_ns=2))
    # simulate a crashed CLI: the bookkeeping is gone, processes and namespaces are not
    os.unlink(lab.meta_path)
    lab.down(log=lambda *_: None)
    lab.down(log=lambda *_: None)  # idempotent
    assert not [ns for ns in netns_list() if ns.startswith(lab.name + ".")]
    assert not os.path.exists(lab.dir)
    leftovers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if lab.dir.encode() in fh.read():
                        leftovers.append(pid)
            except OSError:
                pass
    assert leftovers == []
