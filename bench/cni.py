"""CNI latency: 100 pods ADD then DEL, the plugin invoked exactly as kubelet does (environment +
config on stdin, the executable run directly), p50/p99; ovsctl (shim -> agent -> OVS, returns
once the pod's flows are on the switch) against Debian's reference plugins (bridge + host-local
from containernetworking-plugins, /usr/lib/cni) on the same machine in the same run, taking
turns in 4 rounds of 25 pods. Also 10 concurrent ADDs (wall time of the batch, the median of 5
batches taken in turns with the reference's), and what one exec costs before any work (the
interpreter alone, the shim's own VERSION answer, the reference's), since a Python shim starts
in about the reference's whole ADD time.

The reference runs in its own network namespace (its bridge must not touch the host), timed by
a small driver started inside that namespace, so neither side pays for `ip netns exec`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import REPO, BenchNode, in_ns, save, sh, summary, uid

SHIM = os.path.join(REPO, "cni-shim", "ovsctl-cni")
REF_DIR = "/usr/lib/cni"
PODS = 100
ROUNDS = 4  # ours and the reference take turns, PODS / ROUNDS pods each time
CONCURRENT = 10
CONCURRENT_ROUNDS = 5  # batches of CONCURRENT ADDs, ours and the reference's in turn

# Runs inside the reference's namespace: times every plugin call (ADD for all, then DEL).
DRIVER = r"""
import json, os, subprocess, sys, time
conf, netnses, plugin, concurrent = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def call(cmd, i, ns):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd, "CNI_CONTAINERID": f"c{i}",
           "CNI_NETNS": ns, "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(plugin),
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i}"}
    t0 = time.monotonic()
    p = subprocess.run([plugin], env=env, input=conf, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} {i}: {p.stdout} {p.stderr}")
    return dt
out = {"add": [], "del": []}
if concurrent:
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(lambda a: call("ADD", *a), enumerate(netnses)))
    out["concurrent_wall"] = time.monotonic() - t0
    for i, ns in enumerate(netnses):
        call("DEL", i, ns)
else:
    out["add"] = [call("ADD", i, ns) for i, ns in enumerate(netnses)]
    out["del"] = [call("DEL", i, ns) for i, ns in enumerate(netnses)]
print(json.dumps(out))
"""


def _ref_conf(data_dir: str) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "refnet",
            "type": "bridge",
            "bridge": "cniref0",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": data_dir},
        }
    )


def reference(n: int, concurrent: int = 0) -> dict:
    ns = f"ovbref{uid()}"
    tmp = tempfile.mkdtemp(prefix="ovbref-")
    pods = [f"{ns}-p{i}" for i in range(n)]
    try:
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        for p in pods:
            sh("ip", "netns", "add", p)
        out = in_ns(
            ns,
            sys.executable,
            "-c",
            DRIVER,
            _ref_conf(os.path.join(tmp, "ipam")),
            json.dumps([f"/var/run/netns/{p}" for p in pods]),
            os.path.join(REF_DIR, "bridge"),
            str(concurrent),
            timeout=600,
        )
        return json.loads(out.stdout)
    finally:
        for p in [*pods, ns]:
            sh("ip", "netns", "del", p, check=False)
        sh("rm", "-rf", tmp, check=False)


def _shim(node: BenchNode, cmd: str, i: int, netns: str, tag: str) -> float:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": f"{tag}{i}",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": os.path.dirname(SHIM),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={tag}{i}",
    }
    conf = json.dumps(
        {"cniVersion": "1.0.0", "name": "ovsctl", "type": "ovsctl-cni", "socket": node.sock}
    )
    t0 = time.monotonic()
    p = subprocess.run([SHIM], env=env, input=conf, capture_output=True, text=True, timeout=60)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"ovsctl {cmd} {i}: {p.stdout} {p.stderr}")
    return dt


def ours_round(node: BenchNode, n: int, tag: str) -> dict:
    nss = [node.pod_netns() for _ in range(n)]
    adds = [_shim(node, "ADD", i, ns, tag) for i, ns in enumerate(nss)]
    dels = [_shim(node, "DEL", i, ns, tag) for i, ns in enumerate(nss)]
    return {"add": adds, "del": dels}


def ours_concurrent(node: BenchNode) -> float:
    cns = [node.pod_netns() for _ in range(CONCURRENT)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        list(pool.map(lambda a: _shim(node, "ADD", *a, "c"), enumerate(cns)))
    wall = time.monotonic() - t0
    for i, ns in enumerate(cns):
        _shim(node, "DEL", i, ns, "c")
    return wall


def _exec_ms(cmd: list[str], env: dict, n: int = 20) -> float:
    """Median wall time of running `cmd` to completion, in ms."""
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        times.append(time.monotonic() - t0)
    return summary(times)["p50"] * 1000


def run() -> dict:
    if not os.access(os.path.join(REF_DIR, "bridge"), os.X_OK):
        raise SystemExit(f"{REF_DIR}/bridge missing: apt-get install containernetworking-plugins")
    # Rounds of PODS/ROUNDS pods, ours and the reference in turn, so that both see the same
    # machine (a shared 2-vCPU VM: the reference alone moved between 17 and 27 ms p50 from
    # one run to the next).
    mine: dict = {"add": [], "del": []}
    ref: dict = {"add": [], "del": []}
    with BenchNode(pod_cidr="10.244.0.0/22") as node:
        node.start_agent()
        for r in range(ROUNDS):
            got = ours_round(node, PODS // ROUNDS, f"s{r}x")
            want = reference(PODS // ROUNDS)
            for k in ("add", "del"):
                mine[k] += got[k]
                ref[k] += want[k]
        # one batch of 10 is a single sample on a shared machine (one run's ratio moved between
        # 1.6 and 3.5): batches in turns with the reference's, the median of each side
        walls, ref_walls = [], []
        for _ in range(CONCURRENT_ROUNDS):
            walls.append(ours_concurrent(node))
            ref_walls.append(reference(CONCURRENT, concurrent=CONCURRENT)["concurrent_wall"])
    mine["concurrent_wall"] = summary(walls)["p50"]
    ref_conc = {"concurrent_wall": summary(ref_walls)["p50"]}
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    floors = {
        "python3_IS_start_ms": _exec_ms(["/usr/bin/python3", "-IS", "-c", "pass"], env),
        "shim_version_ms": _exec_ms([SHIM], env),
        "reference_bridge_version_ms": _exec_ms([os.path.join(REF_DIR, "bridge")], env),
    }
    o_add, r_add = summary(mine["add"]), summary(ref["add"])
    o_del, r_del = summary(mine["del"]), summary(ref["del"])
    result = {
        "cni_add_p50_ratio": o_add["p50"] / r_add["p50"],
        "cni_add_p99_ratio": o_add["p99"] / r_add["p99"],
        "cni_del_p50_ratio": o_del["p50"] / r_del["p50"],
        "cni_concurrent10_ratio": mine["concurrent_wall"] / ref_conc["concurrent_wall"],
        "raw": {
            "ovsctl": {
                "add_s": o_add,
                "del_s": o_del,
                "concurrent10_wall_s": mine["concurrent_wall"],
                "concurrent10_walls_s": walls,
            },
            "reference_bridge_host_local": {
                "add_s": r_add,
                "del_s": r_del,
                "concurrent10_wall_s": ref_conc["concurrent_wall"],
                "concurrent10_walls_s": ref_walls,
            },
            "pods": PODS,
            "rounds": ROUNDS,
            # what one exec costs before any work: the interpreter alone, our shim answering
            # VERSION itself (no agent), the reference plugin answering VERSION
            "exec_floors": floors,
        },
    }
    save("cni", result)
    print(
        f"CNI ADD p50 {o_add['p50'] * 1000:.1f} ms vs reference {r_add['p50'] * 1000:.1f} ms "
        f"(ratio {result['cni_add_p50_ratio']:.2f}); p99 ratio {result['cni_add_p99_ratio']:.2f}; "
        f"DEL p50 ratio {result['cni_del_p50_ratio']:.2f}; 10 concurrent ADDs "
        f"{mine['concurrent_wall']:.2f}s vs {ref_conc['concurrent_wall']:.2f}s "
        f"(ratio {result['cni_concurrent10_ratio']:.2f}); exec alone: python3 -IS "
        f"{floors['python3_IS_start_ms']:.1f} ms, shim VERSION {floors['shim_version_ms']:.1f} ms, "
        f"bridge VERSION {floors['reference_bridge_version_ms']:.1f} ms"
    )
    return result


if __name__ == "__main__":
    run()
