"""Flow programming: a cold start of an agent whose cluster state holds 1,000 pods (100 on this
node) on 50 nodes and 200 NetworkPolicies — the time until the switch holds every flow —
against `ovs-ofctl --bundle add-flows` of exactly the same flow set from a file (the switch's
own ingest rate); the median of 3 of each. The agent's modules are byte-compiled first, as in
its image. And flow growth: the desired flow count at (P pods,
R rules) and (2P, 2R), computed by the pure pipeline code for the cluster and for the same
cluster twice over (twice the namespaces, pods and policies; ratio; linear growth is 2.0); then
the same with 50 ClusterNetworkPolicies added (bench/cluster.py's mix, doubled with the
cluster): their own flow count beside the NetworkPolicies' and its growth ratio.
`python -m bench.flows growth` computes the growth figures alone (no root).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time

import yaml

from bench import cluster
from bench.common import BenchNode, save, sh, wait_until

NODES, PODS, LOCAL, POLICIES = 50, 1000, 100, 200
CNPS = 50  # ClusterNetworkPolicies added for the flow growth with tiers
RUNS = 3  # cold starts and reference loads; medians are reported


# ---- flow growth (pure) -------------------------------------------------------------------


def desired_count(
    pods: int, local: int, n_nodes: int, n_policies: int, copies: int = 1, n_cnps: int = 0
) -> dict[str, int]:
    """Node 0's desired flows: "total", and of them "np" (NetworkPolicy rules' flows) and
    "cnp" (ClusterNetworkPolicy rules' flows, computed as the agent does: tiers'
    base_priorities over every policy, then policy_flows per policy)."""
    from flows import cnp, netpol, pipeline, policy, tiers
    from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
    from ovsctl.k8s import model

    node = NodeNet.for_cidr("10.64.0.0/24", gw_ofport=2, node_ip=cluster.node_ip(0))
    overlay = Overlay(1, "10.64.0.0/10")
    flows = set(pipeline.node_flows(node, overlay))
    node_docs = cluster.nodes(n_nodes)
    for n in [model.parse(d) for d in node_docs][1:]:
        flows |= pipeline.remote_node_flows(
            node, overlay, RemoteNode(n.name, n.pod_cidr, n.internal_ip)
        )
    docs = cluster.workload(pods, local, n_nodes, n_policies, copies, n_cnps)
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
    nodes = {
        d["metadata"]["name"]: (
            tuple(sorted(d["metadata"]["labels"].items())),
            tuple(a["address"] for a in d["status"]["addresses"]),
        )
        for d in node_docs
    }
    view = policy.View(ns_labels, infos, nodes)
    slots: dict[str, int] = {}

    def slot_of(owner: str) -> int:
        return slots.setdefault(owner, len(slots))

    np_flows: set = set()
    for d in docs:
        if d["kind"] == "NetworkPolicy":
            for fl in policy.policy_flows(netpol.parse(d), view, slot_of).values():
                np_flows |= fl
    parsed = [cnp.parse(d) for d in docs if d["kind"] == "ClusterNetworkPolicy"]
    bases = tiers.base_priorities(parsed)
    cnp_flows: set = set()
    for pol in parsed:
        for fl in tiers.policy_flows(pol, view, slot_of, bases[pol.name]).values():
            cnp_flows |= fl
    flows |= np_flows | cnp_flows
    return {"total": len(flows), "np": len(np_flows), "cnp": len(cnp_flows)}


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


def _byte_compile() -> None:
    """The agent's own modules byte-compiled first, as `pip install` leaves them in the agent's
    image (Containerfile): in an environment with PYTHONDONTWRITEBYTECODE set, a checkout's
    agent would otherwise compile ovsctl and flows from source at every start (0.1 s here)."""
    import flows as flows_pkg
    import ovsctl

    for pkg in (ovsctl, flows_pkg):
        sh(sys.executable, "-m", "compileall", "-q", os.path.dirname(pkg.__file__))


def cold_start() -> dict:
    _byte_compile()
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


def growth() -> dict:
    """Flow growth without and with ClusterNetworkPolicies, pure (no switch, no root)."""
    small = desired_count(PODS, LOCAL, NODES, POLICIES)
    large = desired_count(PODS, LOCAL, NODES, POLICIES, copies=2)
    c_small = desired_count(PODS, LOCAL, NODES, POLICIES, n_cnps=CNPS)
    c_large = desired_count(PODS, LOCAL, NODES, POLICIES, copies=2, n_cnps=CNPS)
    if c_small["np"] != small["np"] or c_small["total"] != small["total"] + c_small["cnp"]:
        raise RuntimeError(f"ClusterNetworkPolicies changed the other flows: {small} {c_small}")
    out = {
        "flow_growth_ratio": large["total"] / small["total"],
        "cnp_flows": c_small["cnp"],
        "cnp_flows_growth_ratio": c_large["cnp"] / c_small["cnp"],
        "np_flows": small["np"],
        "cnp_vs_np_flows_ratio": c_small["cnp"] / small["np"],
        "flow_growth_ratio_cnp50": c_large["total"] / c_small["total"],
        "raw": {
            "flows_at_P_R": small["total"],
            "flows_at_2P_2R": large["total"],
            "np_flows_at_P_R": small["np"],
            "np_flows_at_2P_2R": large["np"],
            "cnp_flows_at_P_R": c_small["cnp"],
            "cnp_flows_at_2P_2R": c_large["cnp"],
            "flows_with_cnps_at_P_R": c_small["total"],
            "flows_with_cnps_at_2P_2R": c_large["total"],
            "cnps": CNPS,
        },
    }
    r = out["raw"]
    print(
        f"flow growth: {r['flows_at_P_R']} -> {r['flows_at_2P_2R']} flows for 2x pods and "
        f"rules: ratio {out['flow_growth_ratio']:.2f}; NetworkPolicy flows {r['np_flows_at_P_R']}"
        f" -> {r['np_flows_at_2P_2R']}; with {CNPS} ClusterNetworkPolicies (x2 with the "
        f"cluster): their flows {r['cnp_flows_at_P_R']} -> {r['cnp_flows_at_2P_2R']} ratio "
        f"{out['cnp_flows_growth_ratio']:.2f} ({out['cnp_vs_np_flows_ratio']:.2f} x the "
        f"NetworkPolicy flows of {POLICIES} policies), all flows {r['flows_with_cnps_at_P_R']}"
        f" -> {r['flows_with_cnps_at_2P_2R']} ratio {out['flow_growth_ratio_cnp50']:.2f}"
    )
    return out


def run() -> dict:
    g = growth()
    cs = cold_start()
    small, large = g["raw"]["flows_at_P_R"], g["raw"]["flows_at_2P_2R"]
    result = {
        "flow_sync_ratio": cs["ovsctl_install_s"] / cs["reference_bundle_add_flows_s"],
        "cold_start_ratio": cs["ovsctl_cold_start_total_s"] / cs["reference_bundle_add_flows_s"],
        **{k: v for k, v in g.items() if k != "raw"},
        "raw": {
            **cs,
            **g["raw"],
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
    import sys

    growth() if sys.argv[1:] == ["growth"] else run()
