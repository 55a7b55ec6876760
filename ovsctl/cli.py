"""The `ovsctl` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ovsctl import __version__
from ovsctl.tools.agentclient import DEFAULT_SOCKET, default_url


def _agent(args) -> int:
    from ovsctl.agent import gctune

    gctune.hold()  # no cyclic GC while the start builds the agent's state; Agent.start releases
    from ovsctl import config

    try:
        cfg = config.from_args(args)
    except config.ConfigError as e:
        print(f"ovsctl agent: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("pyroute2", "os_ken"):  # their debug output drowns ours
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    from ovsctl.agent.agent import Agent

    source = None
    if cfg.source == "yaml":
        from ovsctl.k8s.source import YAMLDirSource

        source = YAMLDirSource(cfg.cluster_state)
    elif cfg.source == "api":
        from ovsctl.k8s.apisource import APISource

        try:
            source = APISource(
                host=cfg.api_server or None,
                token_file=cfg.api_token_file or None,
                ca_file=cfg.api_ca or None,
                kubeconfig=cfg.kubeconfig or None,
                resync_period=cfg.resync_period,
            )
        except Exception as e:  # noqa: BLE001 - no usable kubeconfig / in-cluster config
            print(f"ovsctl agent: cannot configure the Kubernetes API client: {e}", file=sys.stderr)
            return 2
    agent = Agent(cfg, source)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        agent.start()
    except Exception as e:  # noqa: BLE001 - say why and exit non-zero
        logging.getLogger("ovsctl").error(
            "agent failed to start: %s", e, exc_info=cfg.log_level.lower() == "debug"
        )
        return 1
    logging.getLogger("ovsctl").info("agent running (pid file none; stop with SIGTERM)")
    stop.wait()
    logging.getLogger("ovsctl").info("stopping; flows stay on the switch")
    agent.stop()
    logging.getLogger("ovsctl").info("agent stopped")
    logging.shutdown()
    # os-ken's listener thread stays in accept() and is not a daemon thread: exit now rather
    # than wait for it (the pod would otherwise sit out its grace period until SIGKILL)
    os._exit(0)


def _flows(args) -> int:
    from ovsctl.tools import flowview

    return flowview.main(args)


def _status(args) -> int:
    from ovsctl.tools import statusview

    return statusview.main(args)


def _trace(args) -> int:
    from ovsctl.tools import trace

    return trace.main_trace(args)


def _reachability(args) -> int:
    from ovsctl.tools import trace

    return trace.main_reachability(args)


def node_flags(p) -> None:
    """--agent, --ovs-rundir, --bridge (and --json): where one node's views and switch are."""
    p.add_argument(
        "--agent",
        metavar="SOCKET",
        default=default_url(),
        help="the agent's unix socket (PATH or unix:PATH; an http:// URL also works), "
        f"for /cluster and /flows (default $OVSCTL_AGENT or {DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--ovs-rundir",
        default=os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"),
        help="OVS run directory holding ovs-vswitchd's control socket "
        "(default $OVS_RUNDIR or /var/run/openvswitch)",
    )
    p.add_argument("--bridge", default="br-int", help="the bridge (default br-int)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _ui(args) -> int:
    from ovsctl.ui import server

    return server.main(args)


def _add_ui_parser(sub) -> None:
    """`ovsctl ui` (ovsctl/ui/, docs/ui.md)."""
    u = sub.add_parser(
        "ui",
        help="a local, read-only web page: the pipeline, reachability, traces, topology",
        description="Serve a read-only web page (and its JSON API under /api/) of one node or "
        "every node of a lab: the pipeline's tables with live counters, their flows with "
        "owners, the reachability matrix, traces drawn across nodes, the topology. Binds "
        "127.0.0.1:8476 unless --listen says otherwise; answers GET only; every asset ships "
        "with the package. See docs/ui.md.",
    )
    u.add_argument(
        "--lab",
        metavar="NAME",
        help="every node of this lab (ovsctl lab up); without it, the one node that --agent, "
        "--ovs-rundir and --bridge name",
    )
    u.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8476",
        help="address to serve on (default %(default)s; another host than a loopback one "
        "opens the views of every pod and policy to whoever reaches it)",
    )
    u.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        help="a name the page may be opened by (the Host header), besides loopback names and "
        "(on a non-loopback --listen) IP addresses; repeatable. Other names are refused "
        "(DNS rebinding)",
    )
    u.add_argument(
        "--agent",
        metavar="SOCKET",
        help="the one node's agent: its unix socket (PATH or unix:PATH, or an http:// URL), "
        f"for /cluster, /flows and /status (default $OVSCTL_AGENT or {DEFAULT_SOCKET}); "
        "not with --lab",
    )
    u.add_argument(
        "--ovs-rundir",
        metavar="DIR",
        help="the one node's OVS run directory (its bridge's .mgmt socket and ovs-vswitchd's "
        "control socket; default $OVS_RUNDIR or /var/run/openvswitch); not with --lab",
    )
    u.add_argument(
        "--bridge", metavar="NAME", help="the one node's bridge (default br-int); not with --lab"
    )
    u.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (debug: every request; default info)",
    )
    u.set_defaults(func=_ui)


def _add_trace_parsers(sub) -> None:
    """`ovsctl trace` and `ovsctl reachability` (ovsctl/tools/trace/, docs/tools.md)."""

    t = sub.add_parser(
        "trace",
        help="follow a packet through br-int table by table (ofproto/trace, nothing sent)",
        description="Trace the first packet of a new connection from SRC to DST through this "
        "node's br-int with ofproto/trace (no packet is sent): the tables it visits, by name, "
        "with the owner of every flow it matched; conntrack recirculations and a Service's "
        "DNAT are followed. Prints the verdict (delivered, dropped, rejected) and, when a "
        "NetworkPolicy decided, which policy isolated the pod and that no rule allowed it, or "
        "which rule allowed it; when a ClusterNetworkPolicy rule decided, its tier (Admin, "
        "Baseline), policy, priority, rule index and name and action (Accept, Deny, Pass; an "
        "Admin Pass and the NetworkPolicy verdict after it both named); and what the policies "
        "intend, with any disagreement in verdict or tier flagged. A packet that leaves through the "
        "tunnel continues on another node: the trace says which (`ovsctl lab trace` follows "
        "it). SRC and DST: a pod (NS/NAME, or NAME in namespace default), a Service "
        "(NS/NAME when no pod has that name, or svc:NS/NAME) or an IP. SRC must be a pod on "
        "this node, or any IP (it enters from the host, through the gateway); a pod on "
        "another node is traced from where its packet arrives here, the tunnel.",
    )
    t.add_argument("src", metavar="SRC", help="source: pod NS/NAME or an IP")
    t.add_argument("dst", metavar="DST", help="destination: pod NS/NAME, svc:NS/NAME or an IP")
    t.add_argument("--proto", choices=["tcp", "udp", "icmp"], default="tcp", help="default tcp")
    t.add_argument(
        "--dport",
        type=int,
        help="destination port (default: the Service's first port of --proto, or the pod's "
        "first declared container port of --proto)",
    )
    t.add_argument(
        "--sport",
        type=int,
        default=40000,
        help="source port (default %(default)s; a Service's endpoint is picked by a hash of "
        "the 5-tuple, so it can change the endpoint)",
    )
    t.add_argument(
        "--family",
        type=int,
        choices=[4, 6],
        help="IP family of a dual-stack pod's or Service's address to trace (default: that of an "
        "address given as SRC or DST, else IPv4 when both ends have one, else IPv6)",
    )
    t.add_argument("--raw", action="store_true", help="also print ofproto/trace's own output")
    node_flags(t)
    t.set_defaults(func=_trace)

    r = sub.add_parser(
        "reachability",
        help="pod x pod matrix traced through the live pipeline, next to the policies' intent",
        description="For every pod pair with an end on this node, on every declared TCP/UDP "
        "container port of the destination, trace a new connection through this node's br-int "
        "(ofproto/trace, no packet is sent) and evaluate what the policies intend; "
        "print both matrices (as `ovsctl lab probe` does), the tier that decided each pair "
        "(A ClusterNetworkPolicy Admin, N NetworkPolicy, B Baseline, . default) and flag every "
        "difference. A pair "
        "with its other end on another node is traced for this node's half (egress up to the "
        "tunnel, or ingress from the tunnel) and compared with that half of the intent. "
        'JSON: {"node", "traced", "intended", "scope", "differences", "tiers"}; keys as '
        '`ovsctl lab probe --json`; with --family, also "family". Exit status 1 when there are '
        "differences.",
    )
    r.add_argument(
        "--namespace", "-n", help="only pairs with the source or the destination in NAMESPACE"
    )
    r.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        help="trace and evaluate between the pods' addresses of this IP family (pods without "
        "one are left out; the keys stay the same); default: each pod's first address (IPv4 "
        "on a dual-stack cluster), the output of before",
    )
    node_flags(r)
    r.set_defaults(func=_reachability)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovsctl",
        description="Open vSwitch network plugin for Kubernetes: node agent and tools.",
    )
    p.add_argument("--version", action="version", version=f"ovsctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from ovsctl import config

    a = sub.add_parser(
        "agent",
        help="run the node agent (OpenFlow controller + CNI server)",
        description="Run the node agent: programs br-int over OpenFlow and serves "
        "CNI requests from the ovsctl-cni shim on a unix socket. "
        "Settings come from --config (YAML/JSON), then flags.",
    )
    a.add_argument("--config", "-c", metavar="FILE", help="YAML or JSON file of settings")
    config.add_flags(a)
    a.set_defaults(func=_agent)

    f = sub.add_parser(
        "flows",
        help="dump br-int's flows with table names and cookie owners",
        description="Dump the flows on the bridge with table names instead of "
        "numbers, the owner decoded from each cookie and named through the local agent "
        "(pod:NS/NAME, policy:NS/NAME/ingress/0, 'cnp NAME ingress rule 0 (Admin: Deny)', "
        "service:NS/NAME, ...; a hex id when the "
        "agent is unreachable) and packet/byte counters. --diff compares the agent's "
        "desired flows with the installed ones instead: exit 0 and no output when in sync, "
        "1 when they differ, 2 when they cannot be compared.",
    )
    f.add_argument("--bridge", default="br-int", help="bridge to dump (default br-int)")
    f.add_argument("--table", help="only this table (name or number)")
    f.add_argument(
        "--pod",
        metavar="NS/NAME",
        help="only the pod's own flows and the flows naming its IP (policy rules, Services)",
    )
    f.add_argument(
        "--policy",
        metavar="NS/NAME|cnp/NAME",
        help="only the NetworkPolicy's flows (rules, isolation), or with cnp/NAME the "
        "ClusterNetworkPolicy's (its rules in the Admin or Baseline tables)",
    )
    f.add_argument(
        "--diff",
        action="store_true",
        help="desired (agent) vs installed: '-' missing, '+' unexpected, '~' changed",
    )
    f.add_argument("--json", action="store_true", help="print JSON")
    f.add_argument("--no-stats", action="store_true", help="omit packet/byte counters")
    f.add_argument(
        "--agent",
        metavar="SOCKET",
        help="the agent's unix socket (PATH or unix:PATH; an http:// URL also works; "
        f"default $OVSCTL_AGENT or {DEFAULT_SOCKET})",
    )
    f.set_defaults(func=_flows)

    st = sub.add_parser(
        "status",
        help="the local agent's status: bridge, OpenFlow, flows, pods, peers, sync, IPAM",
        description="Ask the local agent (its /status endpoint) for its status: bridge, "
        "OpenFlow connection and round, desired flows per table, pods, tunnel and peer "
        "nodes, the last flow sync and its duration, IPAM usage and the audit log. "
        "Exit 0 when the agent is ready, 1 when it is not, 2 when it cannot be reached.",
    )
    st.add_argument("--json", action="store_true", help="print the agent's JSON as is")
    st.add_argument(
        "--agent",
        metavar="SOCKET",
        help="the agent's unix socket (PATH or unix:PATH; an http:// URL also works; "
        f"default $OVSCTL_AGENT or {DEFAULT_SOCKET})",
    )
    st.set_defaults(func=_status)

    _add_trace_parsers(sub)
    _add_ui_parser(sub)

    from ovsctl.lab import cli as lab_cli

    lab_cli.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
