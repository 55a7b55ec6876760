"""The `ovsctl` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ovsctl import __version__


def _agent(args) -> int:
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
    from ovsctl.agent import Agent

    source = None
    if cfg.source == "yaml":
        from ovsctl.k8s.source import YAMLDirSource

        source = YAMLDirSource(cfg.cluster_state)
    elif cfg.source == "api":
        from ovsctl.k8s.apisource import APISource

        try:
            source = APISource(
                host=cfg.api_server or None,
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
    return 0


def _flows(args) -> int:
    from ovsctl import flowdump

    return flowdump.main(args)


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
        "numbers and the owner decoded from each cookie.",
    )
    f.add_argument("--bridge", default="br-int", help="bridge to dump (default br-int)")
    f.add_argument("--table", help="only this table (name or number)")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.add_argument("--no-stats", action="store_true", help="omit packet/byte counters")
    f.set_defaults(func=_flows)

    from ovsctl.lab import cli as lab_cli

    lab_cli.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
