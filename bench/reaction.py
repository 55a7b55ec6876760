"""Reaction time: from a change in the state source to the datapath enforcing it, p50/p99 over
50 changes of three kinds — a NetworkPolicy added, a pod added on another node that a policy
selects as a peer, an endpoint removed from a Service — with the agent watching a Kubernetes
API (list/watch, the lab's server) that holds 1,000 pods on 50 nodes and 200 policies.

"Enforcing" is observed on the switch: the moment the flow that carries the change is installed
(or removed), as OVS reports it to an OpenFlow 1.4 flow monitor (`ovs-ofctl monitor br-int
watch:`, running throughout); each change is then checked in a dump. The reference in the same
run is the switch itself: the time from starting one `ovs-ofctl add-flow` to the monitor seeing
that flow (process start included: the floor of any tool-driven change).

A second run, against the same cluster with 50 ClusterNetworkPolicies added (bench/cluster.py's
mix), cycles through the same three kinds and a fourth: a ClusterNetworkPolicy added in the
Admin tier, alternately last (priority 1000) and first (priority 0: every other Admin policy's
flows move to lower flow priorities), until its rule's first flow is on the switch. The ratio
compares the three kinds' p50 with and without the ClusterNetworkPolicies.
"""

from __future__ import annotations

import copy
import os
import random
import re
import time

from bench import cluster
from bench.common import BenchNode, FlowMonitor, in_ns, save, sh, summary, uid, wait_until

NODES, PODS, LOCAL, POLICIES, CHANGES = 50, 1000, 100, 200, 50
CNPS = 50  # the second run's ClusterNetworkPolicies (bench/cluster.py's mix)
KINDS = ("policy", "pod", "endpoint")
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


def _proc(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds user+system) of a process."""
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settled(node: BenchNode) -> int | None:
    """The flow count once it stayed the same for a second, else None."""
    a = node.flow_count()
    time.sleep(1.0)
    b = node.flow_count()
    return b if a == b else None


def _dump(node: BenchNode, *filt: str) -> str:
    return node.ovs.ofctl("dump-flows", "--no-stats", "br-int", *filt)


def _cookie_filter(ck: int) -> str:
    return f"cookie={ck:#x}/{(1 << 48) - 1:#x}"  # any round


def _owned(line: str, ck: int, event: str) -> bool:
    """A monitor event line of `event` for a flow whose cookie (round aside) is `ck`."""
    m = re.search(r"cookie=(0x[0-9a-f]+)", line)
    return (
        f"event={event}" in line and m is not None and int(m.group(1), 16) & ((1 << 48) - 1) == ck
    )


def _bucket_of(dump: str, ip: str) -> str:
    """The reg3 (endpoint bucket) match of the flow that DNATs to `ip`."""
    for line in dump.splitlines():
        if f"dst={ip}:" in line:
            m = re.search(r"reg3=0x[0-9a-f]+/0x[0-9a-f]+|reg3=0/0x[0-9a-f]+", line)
            if m:
                return m.group(0)
    raise RuntimeError(f"no endpoint flow for {ip} in:\n{dump}")


def _policy(name: str, role: str) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ns0"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": role}}}]}],
        },
    }


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


def _cluster_policy(n: int) -> dict:
    """A ClusterNetworkPolicy made by change n: ns0 closed to team t1, in the Admin tier either
    first (priority 0: every other Admin policy's flows move down) or last (priority 1000)."""
    return {
        "apiVersion": cluster.CNP_API,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"bench{n}"},
        "spec": {
            "tier": "Admin",
            "priority": 0 if n % 8 == 3 else 1000,
            "subject": {"namespaces": {"matchLabels": {cluster.NS_NAME: "ns0"}}},
            "ingress": [
                {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "t1"}}}]}
            ],
        },
    }


def _measure(
    cnps: list[dict],
    kinds: tuple[str, ...],
    size: tuple[int, int, int, int] = (NODES, PODS, LOCAL, POLICIES),
    stats: dict | None = None,
    changes: int = CHANGES,
) -> tuple[dict[str, list[float]], list[float]]:
    """`changes` changes cycling through `kinds` against a cluster of `size` (nodes, pods, pods
    on this node, policies) that also holds `cnps`: the samples per kind and the floor
    (ovs-ofctl add-flow) measured after each. `stats`, if given, gets the agent's CPU seconds
    over the changes, its RSS after them and the set-up times (bench/scale.py)."""
    from flows import cookie
    from ovsctl.lab.apiserver import FakeAPI

    n_nodes, n_pods, local, n_policies = size
    t_setup = time.monotonic()
    api = FakeAPI()
    docs = (
        cluster.nodes(n_nodes)
        + cluster.namespaces(n_pods)
        + cluster.pods(n_pods, local, n_nodes)
        + cluster.policies(n_policies, n_pods)
        + cnps
    )
    remote_ips = [d["status"]["podIP"] for d in docs if d["kind"] == "Pod" and "status" in d]
    endpoints = remote_ips[: changes + 5]
    for d in [*docs, SERVICE, _slice(endpoints)]:
        api.create(d)
    host = None
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    floor: list[float] = []
    try:
        with BenchNode() as node:
            host = _link(node)
            api.start(HOST_IP, 0)
            node.extra = [
                "--source", "api", "--api-server", api.url, "--node-name", "node0",
                "--cluster-cidr", "10.64.0.0/10",
            ]  # fmt: skip
            t_agent = time.monotonic()
            node.start_agent(wait=False)
            wait_until(node.ready, 900, f"agent ready ({node.log})", interval=0.05)
            node.add_local_pods(local, cluster.n_namespaces(n_pods))
            if stats is not None:  # the initial computation done before the first change
                wait_until(lambda: _settled(node), 900, "flows to settle", 0.5)
                stats["seconds_to_ready"] = time.monotonic() - t_agent
                stats["seconds_setup"] = time.monotonic() - t_setup
                cpu0 = _proc(node.proc.pid)[1]
            eps = list(endpoints)
            with FlowMonitor(node) as mon:
                for n in range(changes):
                    kind = kinds[n % len(kinds)]
                    t0 = time.monotonic()
                    if kind == "cnp":
                        api.create(_cluster_policy(n))
                        ck = cookie.make("cnp", f"cnp/bench{n}/ingress/0")
                        seen = mon.wait(lambda ln, ck=ck: _owned(ln, ck, "ADDED"), t0)
                        assert _dump(node, _cookie_filter(ck)).count("cookie=") > 0
                    elif kind == "policy":
                        name = f"bench{n}"
                        api.create(_policy(name, f"r{n}"))
                        ck = cookie.make("policy", f"policy/ns0/{name}/isolation")
                        seen = mon.wait(lambda ln, ck=ck: _owned(ln, ck, "ADDED"), t0)
                        assert _dump(node, _cookie_filter(ck)).count("cookie=") > 0
                    elif kind == "pod":
                        # a peer of the "role: r{n-1}" policy made just before, on another node
                        # (an address and a name no pod of the cluster has)
                        ip = f"10.{64 if n_nodes <= 200 else 127}.200.{n + 2}"
                        i = max(5000, n_pods) + n
                        pod = copy.deepcopy(cluster.pod(i, 7, ip, random.Random(n), 1))
                        pod["metadata"].update(
                            namespace="ns0", labels={"app": "x", "role": f"r{n - 1}"}
                        )
                        api.create(pod)
                        ck = cookie.make("policy", f"policy/ns0/bench{n - 1}/ingress/0")
                        seen = mon.wait(
                            lambda ln, ck=ck, ip=ip: (
                                _owned(ln, ck, "ADDED") and f"nw_src={ip}" in ln
                            ),
                            t0,
                        )
                        assert f"nw_src={ip}" in _dump(node, _cookie_filter(ck))
                    else:
                        # the endpoint's flow (its reg3 bucket) is replaced or deleted
                        gone = eps[0]
                        bucket = _bucket_of(_dump(node, "table=36"), gone)
                        t0 = time.monotonic()
                        api.update(_slice(eps[1:]))
                        eps.pop(0)
                        seen = mon.wait(
                            lambda ln, gone=gone, bucket=bucket: (
                                "table=36" in ln
                                and f"{bucket}," in ln
                                and ("event=DELETED" in ln or f"dst={gone}:" not in ln)
                            ),
                            t0,
                        )
                        assert f"dst={gone}:" not in _dump(node, "table=36")
                    samples[kind].append(seen - t0)
                    # the floor: one flow added by ovs-ofctl, seen by the same monitor
                    t1 = time.monotonic()
                    node.ovs.ofctl(
                        "add-flow",
                        "br-int",
                        f"table=90,priority=1,cookie=0x77,reg9={n + 1},actions=drop",
                    )
                    floor.append(
                        mon.wait(lambda ln, n=n: f"reg9={n + 1:#x}" in ln and "ADDED" in ln, t1)
                        - t1
                    )
                    node.ovs.ofctl("del-flows", "br-int", "cookie=0x77/-1")
            if stats is not None:
                rss, cpu1 = _proc(node.proc.pid)
                stats.update(rss_mb=rss, cpu_s_per_event=(cpu1 - cpu0) / changes)
    finally:
        api.stop()
        if host:
            sh("ip", "link", "del", host, check=False)
    return samples, floor


def run() -> dict:
    samples, floor = _measure([], KINDS)
    with_cnps, floor_cnps = _measure(cluster.cluster_policies(CNPS, PODS), (*KINDS, "cnp"))
    every = [x for v in samples.values() for x in v]
    s, f = summary(every), summary(floor)
    # the same kinds with the ClusterNetworkPolicies present, and every change of that run
    same = summary([x for k in KINDS for x in with_cnps[k]])
    c_all = summary([x for v in with_cnps.values() for x in v])
    c_add = summary(with_cnps["cnp"])
    # alternately first in the Admin tier (every other Admin policy moves) and last
    first, last = summary(with_cnps["cnp"][0::2]), summary(with_cnps["cnp"][1::2])
    result = {
        "reaction_p50_ms": s["p50"] * 1000,
        "reaction_p99_ms": s["p99"] * 1000,
        "reaction_vs_floor_p50_ratio": s["p50"] / f["p50"],
        "reaction_p50_ms_cnp50": c_all["p50"] * 1000,
        "reaction_p99_ms_cnp50": c_all["p99"] * 1000,
        "reaction_cnp50_ratio": same["p50"] / s["p50"],
        "reaction_cnp_add_p50_ms": c_add["p50"] * 1000,
        "reaction_cnp_add_p99_ms": c_add["p99"] * 1000,
        "raw": {
            "all_s": s,
            "by_kind_s": {k: summary(v) for k, v in samples.items() if v},
            "floor_ovs_ofctl_add_flow_s": f,
            "cnp50": {
                "all_s": c_all,
                "policy_pod_endpoint_s": same,
                "by_kind_s": {k: summary(v) for k, v in with_cnps.items() if v},
                "cnp_added_first_s": first,
                "cnp_added_last_s": last,
                "floor_ovs_ofctl_add_flow_s": summary(floor_cnps),
                "cluster_network_policies": CNPS,
            },
            "changes": CHANGES,
            "pods": PODS,
            "policies": POLICIES,
            "nodes": NODES,
        },
    }
    save("reaction", result)
    ms = 1000
    print(
        f"reaction: p50 {s['p50'] * ms:.1f} ms, p99 {s['p99'] * ms:.1f} ms over {len(every)} "
        f"changes (policy/pod/endpoint); floor (ovs-ofctl add-flow seen the same way) p50 "
        f"{f['p50'] * ms:.1f} ms: ratio {result['reaction_vs_floor_p50_ratio']:.2f}\n"
        f"with {CNPS} ClusterNetworkPolicies: p50 {c_all['p50'] * ms:.1f} ms, p99 "
        f"{c_all['p99'] * ms:.1f} ms over {c_all['n']} changes (policy/pod/endpoint/cnp); the "
        f"same kinds p50 {same['p50'] * ms:.1f} ms, p99 {same['p99'] * ms:.1f} ms: ratio to "
        f"without {result['reaction_cnp50_ratio']:.2f}; a ClusterNetworkPolicy added p50 "
        f"{c_add['p50'] * ms:.1f} ms, p99 {c_add['p99'] * ms:.1f} ms (added last p50 "
        f"{last['p50'] * ms:.1f} ms, added first p50 {first['p50'] * ms:.1f} ms; floor p50 "
        f"{summary(floor_cnps)['p50'] * ms:.1f} ms)\n"
        f"by kind, without / with: "
        + ", ".join(
            f"{k} p50 {summary(samples[k])['p50'] * ms:.1f} / {summary(with_cnps[k])['p50'] * ms:.1f} ms"
            for k in KINDS
        )
    )
    return result


if __name__ == "__main__":
    run()
