"""`make demo`: a 3-node lab (each node a network namespace with its own OVS and ovsctl
agent, a VXLAN overlay between them), nine sample pods in three namespaces plugged in through
the CNI shim as kubelet would, a Service in front of the backend pods, then the lab's status, the probe matrix and one node's flow
tables. Everything is removed at the end unless --keep is given."""

from __future__ import annotations

import argparse
import os
import sys

from ovsctl.lab.cli import in_node
from ovsctl.lab.lab import Lab, LabError
from ovsctl.tools.matrix import render_matrix

HERE = os.path.dirname(os.path.abspath(__file__))
UI_URL = "http://127.0.0.1:8476/"  # `ovsctl ui`'s default --listen
_EX = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples")
EXAMPLES = [os.path.join(_EX, "pods.yaml"), os.path.join(_EX, "services.yaml")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ovsctl.lab.demo", description=__doc__)
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    ap.add_argument("--name", default="demo", help="lab name (default demo)")
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces, OVS)", file=sys.stderr)
        return 2
    lab = Lab(args.name)
    if lab.exists():
        print(f"== a lab named {args.name} exists; removing it first")
        lab.down()
    ok = False
    try:
        print(
            f"== ovsctl lab up --name {args.name} --nodes {args.nodes} "
            "-f examples/pods.yaml -f examples/services.yaml"
        )
        lab.up(args.nodes, files=EXAMPLES, log=lambda m: print("   " + m))
        st = lab.status()
        print("\n== ovsctl lab status")
        for n in st["nodes"]:
            print(f"   {n['name']:<6} {n['ip']:<13} pods {n['podCIDR']:<15} healthy={n['healthy']}")
        for p in st["pods"]:
            print(f"   {p['namespace'] + '/' + p['name']:<14} on {p['node']:<6} {p['ip']}")
        print("\n== ovsctl lab probe   (every pod to every other pod, TCP 80 and UDP 53)")
        res = lab.probe()
        print("\n".join("   " + line for line in render_matrix(res).splitlines()))
        print(
            "\n== ovsctl lab flows node0   (br-int of node0, tables by name, owners from cookies)"
        )
        sys.stdout.flush()
        in_node(lab, "node0", ["flows"])  # in node0's netns, where its agent names the owners
        ok = all(res.values()) and all(n["healthy"] for n in st["nodes"])
        print(f"\n== {'all pods reach each other across nodes' if ok else 'SOME PROBES FAILED'}")
    except LabError as e:
        print(f"demo failed: {e}", file=sys.stderr)
    finally:
        if args.keep:
            print(
                f"\nthe lab is still up: ovsctl lab status --name {args.name}; "
                f"ovsctl lab exec --name {args.name} frontend/f1 -- ping 10.244.1.2; "
                f"ovsctl lab trace --name {args.name} frontend/f1 svc:backend/web; "
                f"remove it with: ovsctl lab down --name {args.name}"
            )
            print(f"open it in a browser: .venv/bin/ovsctl ui --lab {args.name}  (then {UI_URL})")
        else:
            lab.down(log=lambda m: print("== " + m))
            print(
                "\nto see the lab in a browser: .venv/bin/python -m ovsctl.lab.demo --keep, then "
                f".venv/bin/ovsctl ui --lab {args.name}  (then {UI_URL})"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
