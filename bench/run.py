"""`make bench`: run every benchmark (or those named), write bench/results/*.json and
bench/results/summary.json, print the table that README.md keeps.

    python -m bench.run [cni cri flood flows reaction datapath scale ui]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

from bench.common import RESULTS
from ovsctl.util import atomic_write

ORDER = ("cni", "cri", "flood", "flows", "reaction", "datapath", "scale", "ui")

# key -> (what, goal, how to read it)
KEYS = {
    "cni_add_p50_ratio": ("CNI ADD p50, ours / bridge+host-local", "<= 1.0"),
    "cni_add_p99_ratio": ("CNI ADD p99, ours / bridge+host-local", ""),
    "cni_concurrent10_ratio": ("10 concurrent ADDs, wall time ratio", "<= 1.5"),
    "cri_run_p50_ratio": ("containerd RunPodSandbox p50, ours / bridge+host-local", "<= 1.0"),
    "cni_add_flood_p50_ratio": ("CNI ADD p50 under a packet-in flood / without", "<= 2.0"),
    "flow_sync_ratio": ("flows installed, agent / ovs-ofctl --bundle", "<= 1.5"),
    "cold_start_ratio": ("agent start to all flows / ovs-ofctl --bundle", ""),
    "flow_growth_ratio": ("flows at (2P, 2R) / (P, R)", "<= 2.1"),
    "cnp_flows": ("ClusterNetworkPolicy flows, 50 CNPs at (P, R)", ""),
    "cnp_vs_np_flows_ratio": ("those / the 200 NetworkPolicies' flows", ""),
    "cnp_flows_growth_ratio": ("CNP flows at (2P, 2 x 50 CNPs) / (P, 50)", "<= 2.1"),
    "reaction_p99_ms": ("state change to datapath, p99 (ms)", "< 100"),
    "reaction_p50_ms": ("state change to datapath, p50 (ms)", ""),
    "reaction_p99_ms_cnp50": ("the same with 50 CNPs, CNP adds too, p99 (ms)", "< 100"),
    "reaction_cnp50_ratio": ("p50 of the same kinds, with 50 CNPs / without", ""),
    "reaction_cnp_add_p50_ms": ("a CNP added to its flows on the switch, p50 (ms)", ""),
    "datapath_ratio": ("iperf3 pod-pod across nodes / NORMAL bridges", ">= 0.9"),
    "datapath_ratio_v6": ("iperf3 pod-pod across nodes over IPv6 / NORMAL bridges", ">= 0.9"),
    "agent_rss_mb": ("agent RSS at 10k pods / 5k policies (MiB)", ""),
    "agent_rss_vs_idle_ratio": ("agent RSS loaded / idle", ""),
    "reaction_p99_ms_5k": ("reaction p99 at 5k pods / 1k policies / 50 nodes (ms)", ""),
    "reaction_p99_ms_50k": ("reaction p99 at 50k pods / 10k policies / 500 nodes (ms)", "< 100"),
    "reaction_scale_ratio": ("reaction p99 at 50k pods / at 5k pods", "<= 1.5"),
    "agent_rss_mb_50k": ("agent RSS at 50k pods / 10k policies (MiB)", "<= 250"),
    "cpu_ms_per_event_5k": ("agent CPU per change at 5k pods (ms)", ""),
    "cpu_ms_per_event_50k": ("agent CPU per change at 50k pods (ms)", ""),
    "ui_render_s": (
        "ovsctl ui: 20 tables / 30k flows, navigation to drawn with counters (s)",
        "< 2",
    ),
    "ui_render_ratio": ("that / Chromium showing the same bridge's dump-flows text", ""),
    "ui_flows_s": ("ovsctl ui: click on the 12k-flow table to its flows listed (s)", ""),
    "ui_api_pipeline_s": ("ovsctl ui: /api/pipeline, 20 tables / 30k flows, dump expired (s)", ""),
    "ui_api_pipeline_ratio": ("that / ovs-ofctl dump-flows of the same bridge", ""),
}


def table(summary: dict) -> str:
    lines = ["| figure | value | goal | what |", "|---|---:|---|---|"]
    for key, (what, goal) in KEYS.items():
        if key in summary:
            v = summary[key]
            shown = str(v) if isinstance(v, int) else f"{v:.2f}"
            lines.append(f"| `{key}` | {shown} | {goal} | {what} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    ap.add_argument("only", nargs="*", choices=[*ORDER, []], help="benchmarks to run (default all)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root (network namespaces, OVS)", file=sys.stderr)
        return 2
    path = os.path.join(RESULTS, "summary.json")
    summary = {}
    if os.path.exists(path):
        with open(path) as fh:
            summary = json.load(fh)
    failed = []
    for name in args.only or ORDER:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            res = importlib.import_module(f"bench.{name}").run()
        except Exception as e:  # noqa: BLE001 - report, go on with the others
            print(f"{name} failed: {e}", file=sys.stderr)
            failed.append(name)
            continue
        summary.update({k: v for k, v in res.items() if k != "raw" and isinstance(v, int | float)})
        print(f"   ({time.monotonic() - t0:.0f} s)")
    summary["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print()
    print(table(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
