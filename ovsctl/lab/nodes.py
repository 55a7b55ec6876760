"""The lab's nodes: underlay, external host, API server, each node's OVS and agent; restarts;
and `down`."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import time

import netaddr

from ovsctl.lab import kubelet
from ovsctl.lab.base import (
    API_PORT,
    EXTERNAL_IP,
    EXTERNAL_IP6,
    EXTERNAL_PORT,
    PROVISION,
    RESPONDER,
    UNDERLAY,
    UNDERLAY6,
    LabError,
    _alive,
    _stop_pid,
    _wait,
    _zombie,
    in_ns,
    netns_list,
    parse_cidrs,
    parse_prefixes,
    sh,
    spawn,
    uplink,
)
from ovsctl.lab.lbaddr import LB_POOL, LB_POOL6


class LabNodes:
    """Bringing the nodes up, restarting their agents and switches, and taking it all down
    (a part of `Lab`)."""

    # -- up -------------------------------------------------------------------------------------

    def up(
        self,
        nodes: int,
        cluster_cidr: str = "10.244.0.0/16",
        node_prefix: int | str | None = None,
        files: list[str] | None = None,
        log=print,
        source: str = "yaml",
    ) -> dict:
        """Create the lab (or grow it to `nodes` nodes). `cluster_cidr` is one CIDR or one per
        family ("10.244.0.0/16,fd00:10:244::/56": dual-stack; one IPv6 CIDR: IPv6-only);
        node k gets the k-th subnet of each, of `node_prefix` ("24,64"; default /24 and /64)."""
        if nodes < 1 or nodes > 200:
            raise LabError("--nodes must be between 1 and 200")
        if source not in ("yaml", "api"):
            raise LabError("--source must be yaml or api")
        cidrs = parse_cidrs(cluster_cidr)
        prefixes = parse_prefixes(node_prefix, cidrs)
        with self.locked():
            if self.exists():
                meta = self.meta()
            else:
                meta = {
                    "name": self.name,
                    "cluster_cidr": ",".join(cidrs),
                    "node_prefix": prefixes[0] if len(prefixes) == 1 else prefixes,
                    "nodes": {},
                    "external": {},
                    "source": source,
                }
                os.makedirs(self.cluster_dir, exist_ok=True)
                self._underlay(meta, log)
                if source == "api":
                    self._api_server(meta, log)
                self.save_meta(meta)
            cidrs = parse_cidrs(meta["cluster_cidr"])
            prefixes = parse_prefixes(meta["node_prefix"], cidrs)
            for c, p in zip(cidrs, prefixes, strict=True):
                room = 2 ** min(p - netaddr.IPNetwork(c).prefixlen, 30)
                if nodes > room:
                    raise LabError(f"{nodes} nodes do not fit: {c} has {room} subnets of /{p}")
            new = []
            for k in range(len(meta["nodes"]), nodes):
                name = f"node{k}"
                pod_cidrs = [
                    str(next(itertools.islice(netaddr.IPNetwork(c).subnet(p), k, None)))
                    for c, p in zip(cidrs, prefixes, strict=True)
                ]
                meta["nodes"][name] = self._node(name, k, pod_cidrs, log)
                self.save_meta(meta)
                new.append(name)
            for name in new:
                self._start_agent(name, meta["nodes"][name])
            self.save_meta(meta)
            for name in new:
                _wait(
                    lambda n=name: self._agent_ready(n),
                    60,
                    f"agent on {name} ({self._log_path(name)})",
                )
                info = meta["nodes"][name]
                log(
                    f"node {name}: {' '.join(info.get('ips', [info['ip']]))} pods "
                    f"{' '.join(info.get('podCIDRs', [info['podCIDR']]))} ready"
                )
        if files:
            self.apply(files, log=log)
        return meta

    @staticmethod
    def families(meta: dict) -> list[int]:
        """The lab's pod IP families, in order (4 first): [4], [6] or [4, 6]."""
        return [netaddr.IPNetwork(c).version for c in parse_cidrs(meta["cluster_cidr"])]

    def _warm_underlay(self, meta: dict) -> None:
        """Tell every node's userspace datapath the MAC of every other tunnel endpoint. It
        would otherwise learn it by sending ARP when the first tunnelled packet needs it, and
        drop that packet."""
        macs = {}
        for name, info in meta["nodes"].items():
            out = in_ns(info["netns"], "ip", "-j", "link", "show", "br-phy").stdout
            macs[name] = json.loads(out)[0]["address"]
        for name in meta["nodes"]:
            ovs = self.ovs(name)
            for other, oinfo in meta["nodes"].items():
                if other != name:
                    ovs.appctl("tnl/neigh/set", "br-phy", oinfo["ip"], macs[other])

    def _underlay(self, meta: dict, log) -> None:
        ul, ext = self.ns("ul"), self.ns("ext")
        for ns in (ul, ext):
            sh("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ul, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(ul, "ip", "link", "set", "br0", "up")
        uplink(self.ns("ul"), ext, "ext", f"{EXTERNAL_IP}/{UNDERLAY.prefixlen}")
        ext_ips = [EXTERNAL_IP]
        self._ext_hashing(ext)
        if 6 in self.families(meta):
            in_ns(
                ext,
                "ip",
                "addr",
                "add",
                f"{EXTERNAL_IP6}/{UNDERLAY6.prefixlen}",
                "dev",
                "eth0",
                "nodad",
            )
            ext_ips.append(EXTERNAL_IP6)
        pid = spawn(
            ext,
            [
                sys.executable,
                RESPONDER,
                "--tag",
                self.dir,
                "--tcp",
                str(EXTERNAL_PORT),
                "--udp",
                str(EXTERNAL_PORT),
            ],
            os.path.join(self.dir, "external.log"),
        )
        meta["external"] = {
            "netns": ext,
            "ip": EXTERNAL_IP,
            "ips": ext_ips,
            "port": EXTERNAL_PORT,
            "pid": pid,
        }
        nets = f"{UNDERLAY} {UNDERLAY6}" if len(ext_ips) > 1 else f"{UNDERLAY}"
        log(f"underlay {nets} in netns {ul}; external host {' '.join(ext_ips)} in netns {ext}")

    def _api_server(self, meta: dict, log) -> None:
        """The lab's Kubernetes API (list/watch), on the external host, serving the state
        directory: the agents then watch it through their Kubernetes API source."""
        pid = spawn(
            meta["external"]["netns"],
            [
                sys.executable,
                "-m",
                "ovsctl.lab.apiserver",
                "--tag",
                self.dir,
                "--state",
                self.cluster_dir,
                "--listen",
                f"{EXTERNAL_IP}:{API_PORT}",
            ],
            os.path.join(self.dir, "apiserver.log"),
        )
        meta["api"] = {"url": f"http://{EXTERNAL_IP}:{API_PORT}", "pid": pid}
        log(f"Kubernetes API (list/watch of the state directory) at {meta['api']['url']}")

    def _node(self, name: str, k: int, pod_cidrs: list[str], log) -> dict:
        ns = self.ns(name)
        ip = str(UNDERLAY[10 + k])
        ips = [ip]  # the IPv4 one is the tunnel endpoint in every lab
        if any(netaddr.IPNetwork(c).version == 6 for c in pod_cidrs):
            ips.append(str(UNDERLAY6[10 + k]))
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        uplink(self.ns("ul"), ns, name, None)
        ovs = self.ovs(name)
        ovs.start()
        # br-phy holds the uplink and the node IP: userspace tunnelling needs the tunnel
        # endpoint address on an OVS bridge.
        ovs.vsctl(
            "--may-exist",
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            "fail_mode=standalone",
        )
        ovs.vsctl("--may-exist", "add-port", "br-phy", "eth0")
        _wait(
            lambda: in_ns(ns, "ip", "link", "show", "br-phy", check=False).returncode == 0,
            10,
            "br-phy",
        )
        in_ns(ns, "ethtool", "-K", "br-phy", "tx", "off", check=False)
        in_ns(ns, "ip", "addr", "add", f"{ip}/{UNDERLAY.prefixlen}", "dev", "br-phy")
        for ip6 in ips[1:]:
            in_ns(ns, "ip", "addr", "add", f"{ip6}/{UNDERLAY6.prefixlen}", "dev", "br-phy", "nodad")
        in_ns(ns, "ip", "link", "set", "br-phy", "up")
        self._provision(name, ips, pod_cidrs)
        log(f"node {name}: netns {ns}, OVS in {ovs.rundir}")
        return {
            "name": name,
            "ip": ip,
            "ips": ips,
            "podCIDR": pod_cidrs[0],
            "podCIDRs": pod_cidrs,
            "netns": ns,
        }

    def _log_path(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "agent.log")

    def socket(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "cni.sock")

    def api_socket(self, node: str) -> str:
        """The node agent's unix socket for /status /flows /cluster (root only, 0600)."""
        return os.path.join(self.node_dir(node), "agent.sock")

    def audit_log(self, node: str) -> str:
        """The node agent's NetworkPolicy audit log (policies annotated ovsctl.io/audit)."""
        return os.path.join(self.node_dir(node), "audit.log")

    def _provision(self, node: str, ips: list[str] | str, pod_cidrs: list[str] | str) -> None:
        """The Node object (into the state) and the agent's agent.yaml, written by the
        provisioning script the Vagrant lab runs on its VMs, so every lab run tests it. A
        dual-stack node gets both InternalIPs and both pod CIDRs (comma-separated, IPv4 first)."""
        ips = [ips] if isinstance(ips, str) else ips
        pod_cidrs = [pod_cidrs] if isinstance(pod_cidrs, str) else pod_cidrs
        meta, d, ovs = self.meta(), self.node_dir(node), self.ovs(node)
        flags = ["--name", node, "--node-ip", ",".join(ips), "--pod-cidr", ",".join(pod_cidrs)]
        flags += ["--cluster-cidr", meta["cluster_cidr"], "--cluster-state", self.cluster_dir]
        flags += ["--out", d, "--datapath", "netdev", "--ovsdb", ovs.remote]
        flags += ["--ovs-rundir", ovs.rundir, "--cni-socket", self.socket(node)]
        flags += ["--state-dir", os.path.join(d, "state"), "--log-level", "info"]
        if meta.get("source") == "api":
            flags += ["--source", "api", "--api-server", meta["api"]["url"]]
        # ovsctl's own LoadBalancer pool (loadBalancerClass ovsctl.io/lb), alike on every node;
        # $OVSCTL_LAB_LB_POOL overrides it ("": none)
        pool = ",".join([LB_POOL] + ([LB_POOL6] if len(ips) > 1 else []))
        pool = os.environ.get("OVSCTL_LAB_LB_POOL", pool)
        flags += ["--lb-pool", pool] if pool else []
        sh("bash", PROVISION, "node", *flags)

    def _start_agent(self, node: str, info: dict) -> None:
        ovs = self.ovs(node)
        path = os.path.join(self.node_dir(node), "agent.yaml")  # from _provision
        info["agent_pid"] = spawn(
            info["netns"],
            [sys.executable, "-m", "ovsctl.cli", "agent", "--config", path]
            + ["--audit-log", self.audit_log(node)]  # one NetworkPolicy audit log per node
            + ["--api-socket", self.api_socket(node)],  # and one view socket
            self._log_path(node),
            env={"OVS_RUNDIR": ovs.rundir},
        )

    def _agent_ready(self, node: str) -> bool:
        env = kubelet.cni_env("STATUS", "", "", "")
        conf = json.dumps(kubelet.netconf(self.socket(node), "1.1.0"))
        return kubelet.run(env, conf, timeout=10).returncode == 0

    # -- agents and OVS: restarts -----------------------------------------------------------------

    def restart(
        self,
        node: str,
        component: str = "agent",
        flow_restore_wait: bool = True,
        kill: bool = True,
        log=print,
    ) -> None:
        with self.locked():
            meta = self.meta()
            info = meta["nodes"].get(node)
            if info is None:
                raise LabError(f"no node {node} in lab {self.name}")
            if component == "agent":
                _stop_pid(
                    info.get("agent_pid"), "ovsctl.cli", signal.SIGKILL if kill else signal.SIGTERM
                )
                self._start_agent(node, info)
                self.save_meta(meta)
                _wait(lambda: self._agent_ready(node), 60, f"agent on {node}")
            elif component == "ovs-vswitchd":
                ovs = self.ovs(node)
                ovs.stop_daemon("ovs-vswitchd", signal.SIGKILL if kill else signal.SIGTERM)
                if flow_restore_wait:  # as `ovs-ctl restart` does, before the new daemon starts
                    ovs.vsctl(
                        "--no-wait",
                        "set",
                        "Open_vSwitch",
                        ".",
                        "other_config:flow-restore-wait=true",
                    )
                ovs.start_vswitchd()
                _wait(
                    lambda: (
                        in_ns(info["netns"], "ip", "link", "show", "br-phy", check=False).returncode
                        == 0
                    ),
                    10,
                    "br-phy after the restart",
                )
                in_ns(info["netns"], "ethtool", "-K", "br-phy", "tx", "off", check=False)
                in_ns(info["netns"], "ip", "link", "set", "br-phy", "up")
                self._warm_underlay(meta)
            elif component == "ovsdb-server":
                ovs = self.ovs(node)
                ovs.stop_daemon("ovsdb-server", signal.SIGKILL if kill else signal.SIGTERM)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ovs.sock)  # a killed server leaves its socket behind
                ovs.start_ovsdb()  # same database file: bridges and ports are all still there
            else:
                raise LabError(
                    f"unknown component {component!r} (agent, ovs-vswitchd or ovsdb-server)"
                )
            log(f"{node}: {component} restarted")

    def stop_api(self) -> None:
        """Stop the lab's API server (`--source api`): the agents lose their state source and
        keep what they have; changes to the state directory reach nobody until start_api()."""
        with self.locked():
            meta = self.meta()
            if "api" not in meta:
                raise LabError(
                    f"lab {self.name} has no API server (it was made with --source yaml)"
                )
            _stop_pid(meta["api"].get("pid"), "ovsctl.lab.apiserver")
            meta["api"]["pid"] = None
            self.save_meta(meta)

    def start_api(self) -> None:
        """Start the lab's API server again (a no-op if it runs). A new server's
        resourceVersions are above the old one's and older ones count as compacted, so the
        agents' watches get 410 Gone and relist, as after a real API server's restart."""
        with self.locked():
            meta = self.meta()
            if "api" not in meta:
                raise LabError(
                    f"lab {self.name} has no API server (it was made with --source yaml)"
                )
            if _alive(meta["api"].get("pid"), "ovsctl.lab.apiserver"):
                return
            self._api_server(meta, log=lambda *_: None)
            self.save_meta(meta)
            probe = f"import socket; socket.create_connection(('{EXTERNAL_IP}', {API_PORT}), 1)"
            _wait(
                lambda: (
                    in_ns(self.ns("ext"), sys.executable, "-c", probe, check=False).returncode == 0
                ),
                30,
                "the lab's API server",
            )

    def flush_conntrack(self) -> None:
        """Forget every tracked connection and every cached datapath flow on every node, so
        that the next probe's connections are all new and are translated from the current
        OpenFlow tables (policy changes apply to new connections only)."""
        for name in self.meta()["nodes"]:
            ovs = self.ovs(name)
            ovs.appctl("dpctl/flush-conntrack")
            ovs.appctl("revalidator/purge")

    # -- down -------------------------------------------------------------------------------------

    def down(self, log=print) -> None:
        """Remove everything the lab made; works from any state (also after a crash)."""
        markers = [
            (self.dir + "/").encode(),
            (self.dir + "\0").encode(),
            f"ip\0netns\0exec\0{self.name}.".encode(),
        ]
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        cmd = fh.read()
                except OSError:
                    continue
                if any(m in cmd for m in markers):
                    pids.append(int(entry))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_zombie(p) is False for p in pids):
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Responders and agents were started through `ip netns exec LAB.*`; OVS daemons carry
        # the lab directory in their arguments. Namespaces go last.
        removed = [ns for ns in netns_list() if ns.startswith(self.name + ".")]
        for ns in removed:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        log(f"lab {self.name}: stopped {len(pids)} processes, removed {len(removed)} namespaces")
