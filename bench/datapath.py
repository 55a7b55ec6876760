"""Datapath: iperf3 TCP between pods on two lab nodes through the full pipeline (conntrack and a
NetworkPolicy that allows the client on), against the same lab with the bridges on a single
NORMAL flow (agents stopped, the tunnel given a fixed remote; the nodes' host stacks route
between the pod subnets). The lab is dual-stack: each family is measured to the server's
address of that family, both ways (pipeline and reference) in the same lab. Median of 5 runs
of 5 s each after a 1 s warm-up run; ratio ours/reference per family.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile

from bench.common import save, sh, uid, wait_until

RUNS, SECONDS = 5, 5

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: perf, labels: {team: perf}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: perf, labels: {app: client}}
spec: {nodeName: node0, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: perf, labels: {app: server}}
spec: {nodeName: node1, containers: [{name: c}]}  # no declared port: the lab would start its responder on it
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-client, namespace: perf}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 5201}]}]
"""


def iperf(lab, server_ip: str, seconds: int = SECONDS) -> float:
    """Gbit/s of one TCP run from perf/client to perf/server."""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod_netns("perf/server"), "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):  # the server is listening once a client can connect
            p = subprocess.run(
                ["ip", "netns", "exec", lab.pod_netns("perf/client"), "iperf3", "-c", server_ip,
                 "-t", str(seconds), "-J"],
                capture_output=True, text=True, timeout=seconds + 30,
            )  # fmt: skip
            if "Connection refused" in p.stdout + p.stderr:
                subprocess.run(["sleep", "0.1"])  # not listening yet (-J may still exit 0)
                continue
            if p.returncode == 0:
                res = json.loads(p.stdout)
                if "sum_received" not in res.get("end", {}):
                    raise RuntimeError(
                        f"iperf3 to {server_ip}: {res.get('error', p.stdout[-300:])}"
                    )
                return res["end"]["sum_received"]["bits_per_second"] / 1e9
            raise RuntimeError(f"iperf3: {p.stdout[-500:]} {p.stderr[-500:]}")
        raise RuntimeError("iperf3 server never came up")
    finally:
        srv.kill()
        srv.wait()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")  # a zombie has exited
    except OSError:
        return True


def normal_bridges(lab) -> None:
    """Agents stopped; every br-int on one NORMAL flow; the tunnel to the other node fixed."""
    meta = lab.meta()
    nodes = meta["nodes"]
    for info in nodes.values():
        pid = info.get("agent_pid")
        if pid:
            sh("kill", "-KILL", str(pid), check=False)
            wait_until(lambda pid=pid: _gone(pid), 15, "agent exit", 0.05)
    for name in nodes:
        ovs = lab.ovs(name)
        peer = next(i["ip"] for n, i in nodes.items() if n != name)
        ovs.ofctl("del-flows", "br-int")
        ovs.ofctl("add-flow", "br-int", "priority=0,actions=NORMAL")
        ovs.vsctl("set", "interface", "ovsctl-tun0", f"options:remote_ip={peer}", "options:key=0")
    lab._warm_underlay(meta)


CLUSTER_CIDR = "10.244.0.0/16,fd00:10:244::/56"


def _measure(lab, ips: list[str]) -> dict[str, list[float]]:
    out = {}
    for ip in ips:
        iperf(lab, ip, 1)  # warm-up, not counted: ARP/ND, megaflows, conntrack
        out[ip] = [iperf(lab, ip) for _ in range(RUNS)]
    return out


def run() -> dict:
    from ovsctl.lab.lab import Lab

    if not shutil.which("iperf3"):
        raise SystemExit("iperf3 missing: apt-get install iperf3")
    lab = Lab(f"bd{uid(4)}")
    tmp = tempfile.mkdtemp(prefix="ovbdp-")
    f = os.path.join(tmp, "pods.yaml")
    with open(f, "w") as fh:
        fh.write(PODS)
    try:
        lab.up(2, CLUSTER_CIDR, files=[f], log=lambda *_: None)
        server = next(p for p in lab.status()["pods"] if p["name"] == "server")
        ips = server["ips"]  # IPv4 first
        if len(ips) != 2:
            raise RuntimeError(f"the server should have two addresses, has {ips}")
        ours = _measure(lab, ips)
        normal_bridges(lab)
        ref = _measure(lab, ips)
    finally:
        lab.down(log=lambda *_: None)
        sh("rm", "-rf", tmp, check=False)
    v4, v6 = ips
    o4, r4 = statistics.median(ours[v4]), statistics.median(ref[v4])
    o6, r6 = statistics.median(ours[v6]), statistics.median(ref[v6])
    result = {
        "datapath_ratio": o4 / r4,
        "datapath_ratio_v6": o6 / r6,
        "raw": {
            "ovsctl_gbps": ours[v4],
            "normal_flow_gbps": ref[v4],
            "ovsctl_gbps_v6": ours[v6],
            "normal_flow_gbps_v6": ref[v6],
            "seconds_per_run": SECONDS,
            "datapath": "OVS userspace (netdev), VXLAN (IPv4 underlay) between two network "
            "namespaces; dual-stack lab " + CLUSTER_CIDR,
            "policy": "perf/only-client: server admits only the client, on port 5201",
        },
    }
    save("datapath", result)
    print(
        f"datapath: iperf3 pod->pod across nodes, IPv4 {o4:.2f} Gbit/s through the pipeline vs "
        f"{r4:.2f} on NORMAL bridges: ratio {result['datapath_ratio']:.2f}; IPv6 {o6:.2f} vs "
        f"{r6:.2f}: ratio {result['datapath_ratio_v6']:.2f}"
    )
    return result


if __name__ == "__main__":
    run()
