"""Flow programming: a cold start of an agent whose cluster state holds 1,000 pods (100 on this
node) on 50 nodes and 200 NetworkPolicies — the time until the switch holds every flow —
against `ovs-ofctl --bundle add-flows` of exactly the same flow set from a file (the switch's
own ingest rate); the median of 3 of each. And flow growth: the desired flow count at (P pods, R rules) and (2P, 2R),
computed by the pure pipeline code for the cluster and for the same cluster twice over (twice
the namespaces, pods and policies; ratio; linear growth is 2.0).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

import yaml

from bench import cluster
from bench.common import BenchNode, save, sh, wait_until

NODES, PODS, LOCAL, POLICIES = 50, 1000, 100, 200
RUNS = 3  # cold starts and reference loads; medians are reported


# ---- flow growth (pure) -------------------------------------------------------------------


def desired_count(pods: int, local: int, n_nodes: int, n_policies: int, copies: int = 1) -> int:
    from flows import netpol, pipeline, policy
    from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
    from ovsctl.k8s import model

    node = NodeNet.for_cidr("10.64.0.0/24", gw_ofport=2, node_ip=cluster.node_ip(0))
    overlay = Overlay(1, "10.64.0.0/10")
    flows = set(pipeline.node_flows(node, overlay))
    for n in [model.parse(d) for d in cluster.nodes(n_nodes)][1:]:
        flows |= pipeline.remote_node_flows(
            node, overlay, RemoteNode(n.name, n.pod_cidr, n.internal_ip)
        )
    docs = cluster.workload(pods, local, n_nodes, n_policies, copies)
    ns_labels = {
        d["metadata"]["name"]: {**d["metadata"]["labels"], "kubernetes.io/metadata.name": d["metadata"]["name"]}
        for d in docs
        if d["kind"] == "Namespace"
    }  # fmt: skip
    infos = []
    for i, d in enumerate(x for x in docs if x["kind"] == "Pod"):
        p = model.parse(d)
        ip = p.ip or f"10.64.{i // 250}.{i % 250 + 2}"
        is_local = p.ip is None
        if is_local:
            flows |= pipeline.pod_flows(node, PodPort(f"c{i}/eth0", 10 + i, ip, mac_from_ip(ip)))
        infos.append(
            policy.PodInfo(
                p.namespace,
                p.name,
                tuple(sorted(p.labels_dict().items())),
                ip,
                tuple((c.name, c.port, c.protocol) for c in p.ports),
                local=is_local,
            )
        )
    view = policy.View(ns_labels, infos)
    slots: dict[str, int] = {}
    for d in docs:
        if d["kind"] == "NetworkPolicy":
            pol = netpol.parse(d)
            for fl in policy.policy_flows(
                pol, view, lambda o: slots.setdefault(o, len(slots))
            ).values():
                flows |= fl
    return len(flows)


# ---- cold start against ovs-ofctl --bundle ----------------------------------------------------


def _state_dir() -> str:
    d = tempfile.mkdtemp(prefix="ovbstate-")
    docs = (
        cluster.nodes(NODES)
        + cluster.namespaces(PODS)
        + cluster.pods(PODS, LOCAL, NODES)
        + cluster.policies(POLICIES, PODS)
    )
    with open(os.path.join(d, "cluster.yaml"), "w") as fh:
        yaml.safe_dump_all(docs, fh)
    return d


ROUND_LINE = re.compile(r"round (\d+) installed: (\d+) flows, .* in ([0-9.]+)s")


def _rounds(log: str) -> list[tuple[int, float]]:
    with open(log) as fh:
        return [(int(n), float(secs)) for _, n, secs in ROUND_LINE.findall(fh.read())]


def cold_start() -> dict:
    state = _state_dir()
    extra = ["--cluster-state", state, "--node-name", "node0", "--cluster-cidr", "10.64.0.0/10"]
    with BenchNode(extra=extra) as node:
        node.start_agent()
        node.add_local_pods(LOCAL, cluster.n_namespaces(PODS))
        # the full flow set, once the agent has taken every pod in
        expected = wait_until(lambda: _stable(node), 60, "the flow count to settle", interval=0.5)
        node.stop_agent()
        installs, totals = [], []
        for _ in range(RUNS):
            node.ovs.ofctl("del-flows", "br-int")
            before = len(_rounds(node.log))
            t0 = time.monotonic()
            node.start_agent(wait=False)
            wait_until(lambda: node.flow_count() >= expected, 120, f"{expected} flows", 0.01)
            totals.append(time.monotonic() - t0)
            # the new connection's round (its log line comes just after the bundle's barrier)
            n_round, install = wait_until(
                lambda before=before: (_rounds(node.log)[before:] or [None])[0],
                30,
                "the round's log line",
                0.05,
            )
            installs.append(install)
            node.stop_agent()

        # the reference: the same flows from a file, in one bundle
        dump = node.ovs.ofctl("dump-flows", "--no-stats", "br-int")
        path = os.path.join(node.dir, "flows.txt")
        with open(path, "w") as fh:
            fh.write(dump)
        refs = []
        for _ in range(RUNS):
            node.ovs.ofctl("del-flows", "br-int")
            t0 = time.monotonic()
            node.ovs.ofctl("--bundle", "add-flows", "br-int", path)
            refs.append(time.monotonic() - t0)
            got = node.flow_count()
            if got != expected:
                raise RuntimeError(f"reference installed {got} flows, expected {expected}")
    sh("rm", "-rf", state, check=False)
    return {
        "flows": expected,
        "round_flows": n_round,
        "ovsctl_install_s": statistics.median(installs),
        "ovsctl_cold_start_total_s": statistics.median(totals),
        "reference_bundle_add_flows_s": statistics.median(refs),
        "runs": {
            "ovsctl_install_s": installs,
            "ovsctl_cold_start_total_s": totals,
            "reference_bundle_add_flows_s": refs,
        },
    }


def _stable(node: BenchNode) -> int | None:
    a = node.flow_count()
    time.sleep(1.0)
    b = node.flow_count()
    return b if a == b and b > 100 else None


def run() -> dict:
    small = desired_count(PODS, LOCAL, NODES, POLICIES)
    large = desired_count(PODS, LOCAL, NODES, POLICIES, copies=2)
    cs = cold_start()
    result = {
        "flow_sync_ratio": cs["ovsctl_install_s"] / cs["reference_bundle_add_flows_s"],
        "cold_start_ratio": cs["ovsctl_cold_start_total_s"] / cs["reference_bundle_add_flows_s"],
        "flow_growth_ratio": large / small,
        "raw": {
            **cs,
            "flows_at_P_R": small,
            "flows_at_2P_2R": large,
            "P": PODS,
            "R": POLICIES,
            "nodes": NODES,
            "local_pods": LOCAL,
        },
    }
    save("flows", result)
    print(
        f"flow programming: {cs['flows']} flows installed in {cs['ovsctl_install_s']:.3f}s "
        f"(agent start to all flows {cs['ovsctl_cold_start_total_s']:.2f}s) vs ovs-ofctl --bundle "
        f"{cs['reference_bundle_add_flows_s']:.3f}s: ratio {result['flow_sync_ratio']:.2f} "
        f"(cold start {result['cold_start_ratio']:.2f}); flow growth {small} -> {large} flows "
        f"for 2x pods and rules: ratio {result['flow_growth_ratio']:.2f}"
    )
    return result


if __name__ == "__main__":
    run()
