"""`ovsctl lab …` subcommands."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ovsctl.tools.matrix import render_matrix

DEFAULT = os.environ.get("OVSCTL_LAB", "lab")


def add_parser(sub) -> None:
    lab = sub.add_parser(
        "lab",
        help="a multi-node cluster of network namespaces on this machine",
        description="Build and use an N-node ovsctl cluster out of network "
        "namespaces: real OVS (userspace datapath) and a real agent "
        "per node, pods plugged in through the CNI shim as kubelet "
        "would. Needs root.",
    )
    ls = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    ls.required = True

    def common(p):
        p.add_argument(
            "--name", default=DEFAULT, help=f"lab name (default {DEFAULT}; env OVSCTL_LAB)"
        )
        return p

    up = common(ls.add_parser("up", help="create the lab, or grow it to --nodes nodes"))
    up.add_argument(
        "--nodes", type=int, default=3, help="number of nodes, node0..nodeN-1 (default 3)"
    )
    up.add_argument(
        "--cluster-cidr",
        default="10.244.0.0/16",
        help="the pod network: one CIDR, or one per family for a dual-stack lab "
        "(e.g. 10.244.0.0/16,fd00:10:244::/56; one IPv6 CIDR: an IPv6-only lab). Node k gets "
        "the k-th subnet of each. A lab with IPv6 also numbers the underlay and the external "
        "host from fd00:172:30::/64; the tunnels stay IPv4 (default 10.244.0.0/16; only when "
        "the lab is created)",
    )
    up.add_argument(
        "--node-prefix",
        default=None,
        help="pod CIDR size per node, one per cluster CIDR, IPv4 first (e.g. 24,64; "
        "default /24 for IPv4, /64 for IPv6)",
    )
    up.add_argument(
        "-f", "--filename", action="append", default=[], help="YAML/JSON file or directory to apply"
    )
    up.add_argument(
        "--source",
        choices=["yaml", "api"],
        default="yaml",
        help="how agents get the cluster state: the YAML directory, or a Kubernetes API "
        "(list/watch) the lab serves from it (default yaml; only when the lab is created)",
    )
    up.set_defaults(func=_up)

    ap = common(
        ls.add_parser("apply", help="apply Kubernetes YAML/JSON (pods get a netns + CNI ADD)")
    )
    ap.add_argument("-f", "--filename", action="append", required=True)
    ap.set_defaults(func=_apply)

    de = common(ls.add_parser("delete", help="delete objects (pods get CNI DEL)"))
    de.add_argument("-f", "--filename", action="append", required=True)
    de.set_defaults(func=_delete)

    st = common(ls.add_parser("status", help="nodes, pods and agents' health"))
    st.add_argument(
        "--json",
        action="store_true",
        help='print it as JSON (pods: "ips" lists every address, IPv4 first; "ip" is the first)',
    )
    st.set_defaults(func=_status)

    ex = common(ls.add_parser("exec", help="run a command inside a pod: exec POD -- CMD..."))
    ex.add_argument("pod", help="namespace/name (default namespace: default)")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=_exec)

    pr = common(ls.add_parser("probe", help="every pod to every other pod on every declared port"))
    pr.add_argument("--json", action="store_true", help="print {key: reachable} as JSON")
    pr.add_argument("--timeout", type=float, default=2.0, help="seconds per probe (default 2)")
    pr.add_argument(
        "--family",
        type=int,
        choices=[4, 6],
        help="probe the pods' (and Services') addresses of this IP family; the keys are the "
        "same for both (default: 4 on a dual-stack lab, the only family on a single-stack one)",
    )
    pr.add_argument(
        "--services",
        action="store_true",
        help='also every pod to every Service port (keys "src->svc:ns/name:PORT/PROTO")',
    )
    pr.set_defaults(func=_probe)

    rd = common(
        ls.add_parser(
            "ready", help="set a pod's Ready condition (not ready: no new Service connections)"
        )
    )
    rd.add_argument("pod", help="namespace/name (default namespace: default)")
    rd.add_argument("ready", choices=["true", "false"])
    rd.set_defaults(func=_ready)

    rs = common(ls.add_parser("restart", help="restart a node's agent or ovs-vswitchd"))
    rs.add_argument("node")
    rs.add_argument("--component", choices=["agent", "ovs-vswitchd"], default="agent")
    rs.add_argument("--graceful", action="store_true", help="SIGTERM instead of kill -9")
    rs.add_argument(
        "--no-flow-restore-wait",
        action="store_true",
        help="ovs-vswitchd: do not set flow-restore-wait first (a crash)",
    )
    rs.set_defaults(func=_restart)

    fl = common(
        ls.add_parser(
            "flows",
            help="a node's br-int flows with table names and owners (`ovsctl flows` in the node)",
            description="`ovsctl flows` run inside the node's network namespace (where its "
            "agent answers): table names, owners named, counters; --diff exits 1 when the "
            "agent's desired flows and the installed ones differ (2: cannot compare).",
        )
    )
    fl.add_argument("node")
    fl.add_argument("--table", help="only this table (name or number)")
    fl.add_argument("--pod", metavar="NS/NAME", help="only the pod's flows and flows naming its IP")
    fl.add_argument(
        "--policy",
        metavar="NS/NAME|cnp/NAME",
        help="only the NetworkPolicy's flows, or with cnp/NAME the ClusterNetworkPolicy's",
    )
    fl.add_argument("--diff", action="store_true", help="desired (agent) vs installed")
    fl.add_argument("--json", action="store_true")
    fl.add_argument("--no-stats", action="store_true")
    fl.set_defaults(func=_flows)

    nst = common(
        ls.add_parser(
            "node-status",
            help="a node agent's status (`ovsctl status` in the node)",
            description="`ovsctl status` run inside the node's network namespace: bridge, "
            "OpenFlow, flows per table, pods, peers, last sync, IPAM, audit log. Exit 0 when "
            "the agent is ready, 1 when not, 2 when it cannot be reached.",
        )
    )
    nst.add_argument("node")
    nst.add_argument("--json", action="store_true")
    nst.set_defaults(func=_node_status)

    nd = common(
        ls.add_parser(
            "node",
            help="stop or start a node (it goes away: NotReady; it comes back: Ready)",
            description="stop: the node's agent is killed and its uplink goes down (it answers "
            "nothing on the underlay), its Node turns NotReady at once and the external host "
            "stops routing Service addresses to it; its pods stay, unreachable. start: uplink "
            "up, agent started, Node Ready once the agent answers, routes back.",
        )
    )
    nd.add_argument("action", choices=["stop", "start"])
    nd.add_argument("node")
    nd.set_defaults(func=_node)

    _add_trace_parsers(ls, common)

    dn = common(ls.add_parser("down", help="remove everything the lab made (idempotent)"))
    dn.set_defaults(func=_down)


def _lab(args):
    from ovsctl.lab.lab import Lab

    return Lab(args.name)


def _err(fn):
    def wrapped(args):
        from ovsctl.lab.lab import LabError

        if os.geteuid() != 0:
            print("ovsctl lab: needs root (network namespaces, OVS)", file=sys.stderr)
            return 2
        try:
            return fn(args) or 0
        except LabError as e:
            print(f"ovsctl lab: {e}", file=sys.stderr)
            return 1

    return wrapped


@_err
def _up(args):
    lab = _lab(args)
    lab.up(args.nodes, args.cluster_cidr, args.node_prefix, args.filename, source=args.source)
    print(
        f"lab {args.name} is up: `ovsctl lab status --name {args.name}`; remove it with "
        f"`ovsctl lab down --name {args.name}`"
    )


@_err
def _apply(args):
    _lab(args).apply(args.filename)


@_err
def _delete(args):
    _lab(args).delete(args.filename)


@_err
def _status(args):
    st = _lab(args).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    port = st["external"]["port"]
    ext = " ".join(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in st["external"]["ips"])
    print(f"lab {st['name']}   external host {ext}")
    if not st["nodes"] or len(st["nodes"][0]["podCIDRs"]) == 1:
        print(f"{'NODE':<8} {'IP':<14} {'POD CIDR':<16} HEALTHY")
        for n in st["nodes"]:
            h = "yes" if n["healthy"] else "stopped" if n.get("stopped") else "NO"
            print(f"{n['name']:<8} {n['ip']:<14} {n['podCIDR']:<16} {h}")
    else:  # dual-stack: both addresses and both pod CIDRs
        print(f"{'NODE':<8} {'IPS':<34} {'POD CIDRS':<40} HEALTHY")
        for n in st["nodes"]:
            h = "yes" if n["healthy"] else "stopped" if n.get("stopped") else "NO"
            ips, cidrs = ",".join(n["ips"]), ",".join(n["podCIDRs"])
            print(f"{n['name']:<8} {ips:<34} {cidrs:<40} {h}")
    print(f"\n{'POD':<28} {'NODE':<8} IP")
    for p in st["pods"]:
        print(f"{p['namespace'] + '/' + p['name']:<28} {p['node']:<8} {','.join(p['ips'])}")
    return 0 if all(n["healthy"] for n in st["nodes"]) else 1


@_err
def _exec(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("ovsctl lab exec: give a command after --", file=sys.stderr)
        return 2
    ns = _lab(args).pod_netns(args.pod)
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])


@_err
def _probe(args):
    res = _lab(args).probe(args.timeout, services=args.services, family=args.family)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(render_matrix(res))
    return 0


@_err
def _ready(args):
    _lab(args).set_ready(args.pod, args.ready == "true")


@_err
def _restart(args):
    _lab(args).restart(
        args.node,
        args.component,
        flow_restore_wait=not args.no_flow_restore_wait,
        kill=not args.graceful,
    )


def in_node(lab, node: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """`python -m ovsctl.cli ARGV` inside the node's network namespace, with the node's OVS run
    directory and its agent's unix socket ($OVSCTL_AGENT); output goes where ours goes unless
    `kw` says otherwise (capture_output=True, ...)."""
    info = lab.meta()["nodes"].get(node)
    if info is None:
        from ovsctl.lab.lab import LabError

        raise LabError(f"no node {node} in lab {lab.name}")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OVS_RUNDIR=lab.ovs(node).rundir, OVSCTL_AGENT=lab.api_socket(node))
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = ["ip", "netns", "exec", info["netns"], sys.executable, "-m", "ovsctl.cli", *argv]
    return subprocess.run(cmd, env=env, **kw)


@_err
def _node(args):
    lab = _lab(args)
    (lab.node_stop if args.action == "stop" else lab.node_start)(args.node)


@_err
def _flows(args):
    argv = ["flows"]
    for flag in ("table", "pod", "policy"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    argv += [f"--{f.replace('_', '-')}" for f in ("diff", "json", "no_stats") if getattr(args, f)]
    return in_node(_lab(args), args.node, argv).returncode


@_err
def _node_status(args):
    return in_node(_lab(args), args.node, ["status"] + (["--json"] if args.json else [])).returncode


@_err
def _down(args):
    _lab(args).down()


# -- trace / reachability (ovsctl/tools/trace/) -----------------------------------------------------


def _add_trace_parsers(ls, common) -> None:
    tr = common(
        ls.add_parser(
            "trace",
            help="trace a packet through the lab's pipelines (ofproto/trace, follows the tunnel)",
            description="`ovsctl trace` across the lab: starts on the source pod's node "
            "(--node for an IP source, which enters from that node's host), follows conntrack "
            "recirculations, a Service's DNAT, and the tunnel to the destination's node with "
            "the packet as the source node rewrote it. Prints every table by name with the "
            "owner of the matched flow, the verdict, the policy that isolated the pod and that "
            "no rule allowed it (or the rule that allowed it), the ClusterNetworkPolicy rule "
            "that decided (tier, policy, priority, rule, action; an Admin Pass named with the "
            "NetworkPolicy verdict after it), and the policies' intent, disagreements flagged.",
        )
    )
    tr.add_argument(
        "src",
        metavar="SRC",
        help="pod NS/NAME, an IP, or ext: the external host (DST then a LoadBalancer ingress "
        "address or external IP, or a Service with one; it enters the node the external "
        "host routes it to, or --node, from the gateway port)",
    )
    tr.add_argument("dst", metavar="DST", help="pod NS/NAME, svc:NS/NAME (or NS/NAME) or an IP")
    tr.add_argument("--proto", choices=["tcp", "udp", "icmp"], default="tcp")
    tr.add_argument("--dport", type=int, help="default: the first port of --proto of DST")
    tr.add_argument("--sport", type=int, default=40000, help="source port (default 40000)")
    tr.add_argument("--node", help="where an IP source enters (default: the destination's node)")
    tr.add_argument(
        "--family",
        type=int,
        choices=[4, 6],
        help="which address of a dual-stack pod or Service to trace (default: the family of "
        "an IP given as SRC or DST, else IPv4 when both ends have one)",
    )
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--raw", action="store_true", help="also print ofproto/trace's own output")
    tr.set_defaults(func=_trace)

    ra = common(
        ls.add_parser(
            "reachability",
            help="the probe matrix computed by tracing (no packet sent), next to the intent",
            description="Every pod to every other pod on every declared TCP/UDP port, traced "
            "through the live pipelines of every node (ofproto/trace; no packet is sent), side "
            "by side with what the policies intend, differences flagged, and the tier that "
            "decided each pair (A Admin, N NetworkPolicy, B Baseline, . default). --json "
            "prints exactly `ovsctl lab probe --json`'s shape (the traced matrix); --json "
            "--tiers the whole report (traced, intended, differences, tiers). Exit status 1 "
            "when the traced and the intended matrices differ.",
        )
    )
    ra.add_argument("--namespace", "-n", help="only pairs with an end in NAMESPACE")
    ra.add_argument(
        "--family",
        type=int,
        choices=[4, 6],
        help="trace between the pods' addresses of this IP family; the keys are the same for "
        "both (default: the lab's first family, IPv4 on a dual-stack lab)",
    )
    ra.add_argument("--json", action="store_true")
    ra.add_argument(
        "--tiers",
        action="store_true",
        help="with --json: the whole report, with each pair's deciding tier",
    )
    ra.set_defaults(func=_reachability)


@_err
def _trace(args):
    from ovsctl.tools import trace

    lab = _lab(args)
    tracer = lab.tracer()
    try:
        src, dst, node = args.src, args.dst, args.node
        if src == "ext":  # from the external host to a LoadBalancer address or external IP
            src, dst, node = lab.external_trace_ends(tracer, dst, node, args.family)
        t = tracer.trace(
            src, dst, args.proto, args.dport, args.sport, node=node, family=args.family,
        )  # fmt: skip
        if args.json:
            print(json.dumps(t.to_dict(), indent=2))
        else:
            print(trace.render(t, tracer, raw=args.raw))
    except trace.TraceError as e:
        print(f"ovsctl lab trace: {e}", file=sys.stderr)
        return 2
    finally:
        tracer.close()
    return 0


@_err
def _reachability(args):
    from ovsctl.tools import trace

    rep = _lab(args).reachability_report(args.namespace, family=args.family)
    if args.json and args.tiers:
        print(json.dumps(rep, indent=2))
    elif args.json:
        print(json.dumps(rep["traced"], indent=2))
    else:
        print(
            trace.render_reachability(
                rep["traced"], rep["intended"], rep["differences"], tiers=rep["tiers"]
            )
        )
    return 1 if rep["differences"] else 0
