"""Reaction time: from a change in the state source to the datapath enforcing it, p50/p99 over
50 changes of three kinds — a NetworkPolicy added, a pod added on another node that a policy
selects as a peer, an endpoint removed from a Service — with the agent watching a Kubernetes
API (list/watch, the lab's server) that holds 1,000 pods on 50 nodes and 200 policies.

"Enforcing" is observed on the switch: the flow that carries the change is installed (or gone),
polled with `ovs-ofctl dump-flows` back to back (each poll's own cost, a process start, is in
the figures; `ovs-ofctl monitor` would be finer but holds its events in stdio buffers). The reference for the same run is the switch itself: the time one `ovs-ofctl
add-flow` takes to show up in a dump the same way (the floor of this measurement).
"""

from __future__ import annotations

import copy
import random
import time

from bench import cluster
from bench.common import BenchNode, in_ns, save, sh, summary, uid, wait_until

NODES, PODS, LOCAL, POLICIES, CHANGES = 50, 1000, 100, 200, 50
HOST_IP, NODE_IP = "10.200.0.1", "10.200.0.2"


def _link(node: BenchNode) -> str:
    """A veth between the bench (root namespace) and the node, for the API server."""
    host = f"ovbh{uid(4)}"
    sh("ip", "link", "add", host, "type", "veth", "peer", "name", "api0", "netns", node.ns)
    sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", host)
    sh("ip", "link", "set", host, "up")
    in_ns(node.ns, "ip", "addr", "add", f"{NODE_IP}/30", "dev", "api0")
    in_ns(node.ns, "ip", "link", "set", "api0", "up")
    return host


def _dump(node: BenchNode, *filt: str) -> str:
    return node.ovs.ofctl("dump-flows", "--no-stats", "br-int", *filt)


def _slice(endpoints: list[str]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "ns0",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in endpoints],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "ns0"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
}


def run() -> dict:
    from flows import cookie
    from ovsctl.lab.apiserver import FakeAPI

    api = FakeAPI()
    docs = (
        cluster.nodes(NODES)
        + cluster.namespaces(PODS)
        + cluster.pods(PODS, LOCAL, NODES)
        + cluster.policies(POLICIES, PODS)
    )
    remote_ips = [d["status"]["podIP"] for d in docs if d["kind"] == "Pod" and "status" in d]
    endpoints = remote_ips[: CHANGES + 5]
    for d in [*docs, SERVICE, _slice(endpoints)]:
        api.create(d)
    host = None
    samples: dict[str, list[float]] = {"policy": [], "pod": [], "endpoint": []}
    floor: list[float] = []
    try:
        with BenchNode() as node:
            host = _link(node)
            api.start(HOST_IP, 0)
            node.extra = [
                "--source", "api", "--api-server", api.url, "--node-name", "node0",
                "--cluster-cidr", "10.64.0.0/10",
            ]  # fmt: skip
            node.start_agent()
            node.add_local_pods(LOCAL, cluster.n_namespaces(PODS))
            eps = list(endpoints)
            for n in range(CHANGES):
                kind = ("policy", "pod", "endpoint")[n % 3]
                t0 = time.monotonic()
                if kind == "policy":
                    name = f"bench{n}"
                    api.create(
                        {
                            "apiVersion": "networking.k8s.io/v1",
                            "kind": "NetworkPolicy",
                            "metadata": {"name": name, "namespace": "ns0"},
                            "spec": {
                                "podSelector": {},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": f"r{n}"}}}]}],
                            },
                        }
                    )  # fmt: skip
                    ck = cookie.make("policy", f"policy/ns0/{name}/isolation")
                    filt = (f"cookie={ck:#x}/{(1 << 48) - 1:#x}",)
                    wait_until(
                        lambda filt=filt: _dump(node, *filt).count("cookie=") > 0, 30, kind, 0.002
                    )
                elif kind == "pod":
                    # a peer of every "role: r{n}" policy in ns0 made above: from another node
                    ip = f"10.64.200.{n + 2}"
                    pod = copy.deepcopy(cluster.pod(5000 + n, 7, ip, random.Random(n), 1))
                    pod["metadata"].update(
                        namespace="ns0", labels={"app": "x", "role": f"r{n - 1}"}
                    )
                    api.create(pod)
                    wait_until(
                        lambda ip=ip: f"nw_src={ip}" in _dump(node, "table=60"), 30, kind, 0.002
                    )
                else:
                    gone = eps.pop(0)
                    api.update(_slice(eps))
                    wait_until(
                        lambda gone=gone: f"dst={gone}:" not in _dump(node, "table=36"),
                        30,
                        kind,
                        0.002,
                    )
                samples[kind].append(time.monotonic() - t0)
                # the floor: one flow added by ovs-ofctl, seen by the same polling
                t1 = time.monotonic()
                node.ovs.ofctl(
                    "add-flow",
                    "br-int",
                    f"table=90,priority=1,cookie=0x77,reg9={n + 1},actions=drop",
                )
                wait_until(
                    lambda n=n: f"reg9={n + 1:#x}" in _dump(node, "table=90"), 30, "floor", 0.002
                )
                floor.append(time.monotonic() - t1)
                node.ovs.ofctl("del-flows", "br-int", "cookie=0x77/-1")
    finally:
        api.stop()
        if host:
            sh("ip", "link", "del", host, check=False)
    every = [x for v in samples.values() for x in v]
    s = summary(every)
    f = summary(floor)
    result = {
        "reaction_p50_ms": s["p50"] * 1000,
        "reaction_p99_ms": s["p99"] * 1000,
        "reaction_vs_floor_p50_ratio": s["p50"] / f["p50"],
        "raw": {
            "all_s": s,
            "by_kind_s": {k: summary(v) for k, v in samples.items() if v},
            "floor_ovs_ofctl_add_flow_s": f,
            "changes": CHANGES,
            "pods": PODS,
            "policies": POLICIES,
            "nodes": NODES,
        },
    }
    save("reaction", result)
    print(
        f"reaction: p50 {s['p50'] * 1000:.1f} ms, p99 {s['p99'] * 1000:.1f} ms over {len(every)} "
        f"changes (policy/pod/endpoint); floor (ovs-ofctl add-flow seen the same way) p50 "
        f"{f['p50'] * 1000:.1f} ms: ratio {result['reaction_vs_floor_p50_ratio']:.2f}"
    )
    return result


if __name__ == "__main__":
    run()
