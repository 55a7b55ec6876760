"""`ovsctl lab`: an N-node cluster out of network namespaces on this machine.

Layout of a lab named LAB (everything it makes carries the name, so several labs coexist and
`down` finds all of it even after a crash):

    netns LAB.ul            the underlay: a Linux bridge joining every node's uplink
    netns LAB.ext           an "external" host outside the cluster (a responder on :8080)
    netns LAB.nodeK         node K: its own ovsdb-server + ovs-vswitchd (userspace datapath,
                            own OVS_RUNDIR), br-phy holding the uplink and the node IP, br-int
                            programmed by its own ovsctl agent
    netns LAB.p.NS.NAME     one per pod, plugged in through the CNI shim as kubelet would
    /run/ovsctl-lab/LAB/    lab.json, pods.json, cluster/ (the YAML state every agent watches),
                            nodes/nodeK/ (OVS run dir, agent config, log, state, CNI socket)

The lab plays the control plane and kubelet: it writes Node objects, schedules pods
(round-robin when spec.nodeName is empty), calls the shim with CNI_* + stdin, starts a
responder on each declared containerPort and writes the pod (with its IP) into the state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import netaddr
import yaml

from ovsctl.k8s import model
from ovsctl.lab import kubelet
from ovsctl.lab.ovsproc import OVS
from ovsctl.util import atomic_write, wait_until

ROOT = os.environ.get("OVSCTL_LAB_ROOT", "/run/ovsctl-lab")
UNDERLAY = netaddr.IPNetwork("172.30.0.0/24")
EXTERNAL_IP = "172.30.0.2"
API_PORT = 6443  # the lab's Kubernetes API (`lab up --source api`), on the external host
SERVICE_CIDR = netaddr.IPNetwork("10.96.0.0/16")  # where the lab allocates missing ClusterIPs
EXTERNAL_PORT = 8080
HERE = os.path.dirname(os.path.abspath(__file__))
RESPONDER = os.path.join(HERE, "responder.py")
PROBER = os.path.join(HERE, "prober.py")
PROVISION = os.path.join(HERE, "provision.sh")  # shared with the Vagrant lab (vagrant/)


class LabError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True, timeout: float = 30, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(p.stderr or p.stdout).strip()}")
    return p


def in_ns(
    ns: str, *cmd: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int | None, marker: str) -> bool:
    """Is `pid` still the process we started (its command line mentions `marker`)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker.encode() in fh.read()
    except OSError:
        return False


def _stop_pid(pid: int | None, marker: str, sig=signal.SIGTERM, timeout: float = 5) -> None:
    if not _alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait(cond, timeout: float, what: str):
    return wait_until(cond, timeout, what, error=LabError)


class Lab:
    def __init__(self, name: str = "lab"):
        if not name.replace("-", "").isalnum() or len(name) > 12:
            raise LabError(f"lab name {name!r}: use up to 12 letters, digits or '-'")
        self.name = name
        self.dir = os.path.join(ROOT, name)
        self.cluster_dir = os.path.join(self.dir, "cluster")
        self.meta_path = os.path.join(self.dir, "lab.json")
        self.pods_path = os.path.join(self.dir, "pods.json")

    # -- bookkeeping ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, ".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def exists(self) -> bool:
        return os.path.exists(self.meta_path)

    def meta(self) -> dict:
        try:
            with open(self.meta_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise LabError(
                f"no lab named {self.name!r} (start one with: ovsctl lab up --name {self.name})"
            ) from None

    def save_meta(self, meta: dict) -> None:
        atomic_write(self.meta_path, json.dumps(meta, indent=2))

    def pods(self) -> dict:
        try:
            with open(self.pods_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def save_pods(self, pods: dict) -> None:
        atomic_write(self.pods_path, json.dumps(pods, indent=2))

    def ns(self, what: str) -> str:
        return f"{self.name}.{what}"

    def node_dir(self, node: str) -> str:
        return os.path.join(self.dir, "nodes", node)

    def ovs(self, node: str) -> OVS:
        return OVS(os.path.join(self.node_dir(node), "ovs"), netns=self.ns(node))

    def write_object(self, obj) -> None:
        kind, ns, name = obj.key
        fname = f"{kind}-{ns + '.' if ns else ''}{name}.yaml"
        atomic_write(os.path.join(self.cluster_dir, fname), yaml.safe_dump(model.to_dict(obj)))

    def remove_object(self, key: tuple) -> None:
        kind, ns, name = key
        fname = f"{kind}-{ns + '.' if ns else ''}{name}.yaml"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.cluster_dir, fname))

    # -- up -------------------------------------------------------------------------------------

    def up(
        self,
        nodes: int,
        cluster_cidr: str = "10.244.0.0/16",
        node_prefix: int = 24,
        files: list[str] | None = None,
        log=print,
        source: str = "yaml",
    ) -> dict:
        if nodes < 1 or nodes > 200:
            raise LabError("--nodes must be between 1 and 200")
        if source not in ("yaml", "api"):
            raise LabError("--source must be yaml or api")
        with self.locked():
            if self.exists():
                meta = self.meta()
            else:
                meta = {
                    "name": self.name,
                    "cluster_cidr": cluster_cidr,
                    "node_prefix": node_prefix,
                    "nodes": {},
                    "external": {},
                    "source": source,
                }
                os.makedirs(self.cluster_dir, exist_ok=True)
                self._underlay(meta, log)
                if source == "api":
                    self._api_server(meta, log)
                self.save_meta(meta)
            subnets = list(netaddr.IPNetwork(meta["cluster_cidr"]).subnet(meta["node_prefix"]))
            new = []
            for k in range(len(meta["nodes"]), nodes):
                name = f"node{k}"
                meta["nodes"][name] = self._node(name, k, str(subnets[k]), log)
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
                log(
                    f"node {name}: {meta['nodes'][name]['ip']} pods {meta['nodes'][name]['podCIDR']} ready"
                )
        if files:
            self.apply(files, log=log)
        return meta

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
        self._uplink(ext, "ext", f"{EXTERNAL_IP}/{UNDERLAY.prefixlen}")
        pid = self._spawn(
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
        meta["external"] = {"netns": ext, "ip": EXTERNAL_IP, "port": EXTERNAL_PORT, "pid": pid}
        log(f"underlay {UNDERLAY} in netns {ul}; external host {EXTERNAL_IP} in netns {ext}")

    def _api_server(self, meta: dict, log) -> None:
        """The lab's Kubernetes API (list/watch), on the external host, serving the state
        directory: the agents then watch it through their Kubernetes API source."""
        pid = self._spawn(
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

    def _uplink(self, ns: str, peer: str, addr: str | None, ifname: str = "eth0") -> None:
        """A veth from `ns` (ifname) to the underlay bridge; checksum offload off on both
        ends, since the userspace datapath does not complete partial checksums."""
        ul = self.ns("ul")
        tmp = f"v{uuid.uuid4().hex[:10]}"
        in_ns(ul, "ip", "link", "add", peer, "type", "veth", "peer", "name", tmp)
        in_ns(ul, "ip", "link", "set", tmp, "netns", ns)
        in_ns(ns, "ip", "link", "set", tmp, "name", ifname)
        in_ns(ul, "ip", "link", "set", peer, "master", "br0", "up")
        in_ns(ul, "ethtool", "-K", peer, "tx", "off", check=False)
        in_ns(ns, "ethtool", "-K", ifname, "tx", "off", check=False)
        if addr:
            in_ns(ns, "ip", "addr", "add", addr, "dev", ifname)
        in_ns(ns, "ip", "link", "set", ifname, "up")

    def _node(self, name: str, k: int, pod_cidr: str, log) -> dict:
        ns = self.ns(name)
        ip = str(UNDERLAY[10 + k])
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        self._uplink(ns, name, None)
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
        in_ns(ns, "ip", "link", "set", "br-phy", "up")
        self._provision(name, ip, pod_cidr)
        log(f"node {name}: netns {ns}, OVS in {ovs.rundir}")
        return {"name": name, "ip": ip, "podCIDR": pod_cidr, "netns": ns}

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

    def _provision(self, node: str, ip: str, pod_cidr: str) -> None:
        """The Node object (into the state) and the agent's agent.yaml, written by the
        provisioning script the Vagrant lab runs on its VMs, so every lab run tests it."""
        meta, d, ovs = self.meta(), self.node_dir(node), self.ovs(node)
        flags = ["--name", node, "--node-ip", ip, "--pod-cidr", pod_cidr]
        flags += ["--cluster-cidr", meta["cluster_cidr"], "--cluster-state", self.cluster_dir]
        flags += ["--out", d, "--datapath", "netdev", "--ovsdb", ovs.remote]
        flags += ["--ovs-rundir", ovs.rundir, "--cni-socket", self.socket(node)]
        flags += ["--state-dir", os.path.join(d, "state"), "--log-level", "info"]
        if meta.get("source") == "api":
            flags += ["--source", "api", "--api-server", meta["api"]["url"]]
        sh("bash", PROVISION, "node", *flags)

    def _start_agent(self, node: str, info: dict) -> None:
        ovs = self.ovs(node)
        path = os.path.join(self.node_dir(node), "agent.yaml")  # from _provision
        info["agent_pid"] = self._spawn(
            info["netns"],
            [sys.executable, "-m", "ovsctl.cli", "agent", "--config", path]
            + ["--audit-log", self.audit_log(node)]  # one NetworkPolicy audit log per node
            + ["--api-socket", self.api_socket(node)],  # and one view socket
            self._log_path(node),
            env={"OVS_RUNDIR": ovs.rundir},
        )

    def _spawn(self, ns: str, cmd: list[str], log_path: str, env: dict | None = None) -> int:
        """Start a long-running process in `ns`, detached, output to log_path; returns its PID."""
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(os.path.dirname(HERE)), full_env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        with open(log_path, "a") as log:
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=full_env,
            )
        return p.pid

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

    # -- apply / delete ---------------------------------------------------------------------------

    def apply(self, files: list[str], log=print) -> list:
        objs = self._load(files)
        with self.locked():
            meta = self.meta()
            pods = self.pods()
            for obj in objs:
                if obj.key[0] == "Node":
                    raise LabError(
                        f"Node {obj.name}: the lab makes nodes; use `ovsctl lab up --nodes`"
                    )
            # namespaces first, pods last: policies and services are in place before pods start
            order = {"Namespace": 0, "NetworkPolicy": 1, "Service": 2, "EndpointSlice": 3, "Pod": 4}
            todo = sorted(objs, key=lambda o: order.get(o.key[0], 9))
            pod_objs = [o for o in todo if o.key[0] == "Pod"]
            for obj in todo:
                if obj.key[0] == "Service":
                    obj = self._allocate(obj)
                if obj.key[0] != "Pod":
                    self.write_object(obj)
                    log(f"{obj.key[0].lower()}/{obj.name} applied")
            names = sorted(meta["nodes"])
            placed = []
            for obj in pod_objs:
                pkey = f"{obj.namespace}/{obj.name}"
                if pkey in pods:
                    if pods[pkey]["labels"] != dict(obj.labels):
                        pods[pkey]["labels"] = dict(obj.labels)
                        self._write_pod(obj, pods[pkey])
                        log(f"pod/{pkey} labels updated")
                    continue
                node = obj.node_name or names[sum(1 for p in pods.values()) % len(names)]
                if node not in meta["nodes"]:
                    raise LabError(
                        f"Pod {pkey}: spec.nodeName {node} is not a lab node ({', '.join(names)})"
                    )
                pods[pkey] = {
                    "namespace": obj.namespace,
                    "name": obj.name,
                    "node": node,
                    "netns": self.ns(f"p.{obj.namespace}.{obj.name}"),
                    "labels": dict(obj.labels),
                    "ports": [[p.name, p.port, p.protocol] for p in obj.ports],
                }
                placed.append((obj, pods[pkey]))
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda op: self._start_pod(*op), placed))
            failed = [r for r in results if isinstance(r, Exception)]
            for (obj, rec), r in zip(placed, results, strict=True):
                if isinstance(r, Exception):
                    pods.pop(f"{obj.namespace}/{obj.name}", None)
                else:
                    log(f"pod/{obj.namespace}/{obj.name} on {rec['node']}: {rec['ip']}")
            self.save_pods(pods)
            if placed:
                self._warm_underlay(meta)  # new ports made the switches forget their neighbours
            if failed:
                raise LabError("; ".join(str(e) for e in failed))
        return objs

    def _write_pod(self, obj, rec: dict) -> None:
        body = model.to_dict(obj)
        body.setdefault("spec", {})["nodeName"] = rec["node"]
        body["metadata"]["labels"] = rec["labels"]
        if rec.get("ip"):
            ready = "True" if rec.get("ready", True) else "False"
            body["status"] = {
                "podIP": rec["ip"],
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
            }
        self.write_object(model.parse(body))

    def set_ready(self, pod: str, ready: bool, log=print) -> None:
        """Flip a pod's Ready condition (as a failing readiness probe would): Services stop
        (or start again) sending new connections to it."""
        if "/" not in pod:
            pod = f"default/{pod}"
        with self.locked():
            pods = self.pods()
            rec = pods.get(pod)
            if rec is None:
                raise LabError(f"no pod {pod} in lab {self.name}")
            rec["ready"] = ready
            ns, name = pod.split("/", 1)
            fname = os.path.join(self.cluster_dir, f"Pod-{ns}.{name}.yaml")
            with open(fname) as fh:
                self._write_pod(model.parse(yaml.safe_load(fh)), rec)
            self.save_pods(pods)
        log(f"pod/{pod} {'ready' if ready else 'not ready'}")

    def _allocate(self, obj):
        """The control plane's part for a Service: a ClusterIP (from SERVICE_CIDR) and node
        ports (30000-32767) where the manifest has none; a re-applied Service keeps its own."""
        body = obj.obj()
        spec = body.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return obj
        used_ips, used_ports, mine = set(), set(), {}
        for f in os.listdir(self.cluster_dir):
            if not f.startswith("Service-"):
                continue
            with open(os.path.join(self.cluster_dir, f)) as fh:
                other = yaml.safe_load(fh) or {}
            ospec, ometa = other.get("spec") or {}, other.get("metadata") or {}
            if (ometa.get("namespace"), ometa.get("name")) == (obj.namespace, obj.name):
                mine = ospec
                continue
            used_ips.add(ospec.get("clusterIP"))
            used_ports |= {p.get("nodePort") for p in ospec.get("ports") or []}
        changed = False
        if spec.get("clusterIP") in (None, ""):
            ip = mine.get("clusterIP")
            if ip in (None, "", "None") or ip in used_ips:
                ip = next(str(a) for a in SERVICE_CIDR.iter_hosts() if str(a) not in used_ips)
            spec["clusterIP"] = ip
            changed = True
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            mine_ports = {
                (p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
                for p in mine.get("ports") or []
            }
            for p in spec.get("ports") or []:
                if p.get("nodePort"):
                    used_ports.add(p["nodePort"])
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    port = mine_ports.get((p.get("port"), p.get("protocol") or "TCP"))
                    if not port or port in used_ports:
                        port = next(n for n in range(30000, 32768) if n not in used_ports)
                    p["nodePort"] = port
                    used_ports.add(port)
                    changed = True
        return model.parse(body) if changed else obj

    def _start_pod(self, obj, rec: dict):
        """Kubelet's part for one pod: netns, CNI ADD, the responder, the pod in the state."""
        ns = rec["netns"]
        try:
            sh("ip", "netns", "add", ns)
            self._write_pod(obj, rec)  # the API has the pod (and its labels) before kubelet runs it
            rec["cid"] = uuid.uuid4().hex
            res = kubelet.add(
                self.socket(rec["node"]),
                rec["cid"],
                f"/var/run/netns/{ns}",
                obj.namespace,
                obj.name,
            )
            rec["ip"] = res["ips"][0]["address"].split("/")[0]
            args = []
            for _name, port, proto in rec["ports"]:
                args += [f"--{proto.lower()}", str(port)] if proto in ("TCP", "UDP") else []
            rec["pid"] = self._spawn(
                ns,
                [sys.executable, RESPONDER, "--tag", self.dir, *args],
                os.path.join(self.dir, "pods", f"{obj.namespace}.{obj.name}.log"),
            )
            self._write_pod(obj, rec)
            return rec
        except Exception as e:  # noqa: BLE001 - undo this pod, report it
            self._stop_pod(rec)
            return LabError(f"pod {obj.namespace}/{obj.name}: {e}")

    def _stop_pod(self, rec: dict) -> None:
        self.remove_object(("Pod", rec["namespace"], rec["name"]))
        _stop_pid(rec.get("pid"), "responder.py")
        if rec.get("cid"):
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                kubelet.delete(
                    self.socket(rec["node"]),
                    rec["cid"],
                    f"/var/run/netns/{rec['netns']}",
                    rec["namespace"],
                    rec["name"],
                )
        sh("ip", "netns", "del", rec["netns"], check=False)

    def delete(self, files: list[str], log=print) -> None:
        objs = self._load(files)
        with self.locked():
            pods = self.pods()
            for obj in objs:
                kind = obj.key[0]
                if kind == "Pod":
                    rec = pods.pop(f"{obj.namespace}/{obj.name}", None)
                    if rec is None:
                        log(f"pod/{obj.namespace}/{obj.name} not found")
                        continue
                    self.remove_object(obj.key)
                    self._stop_pod(rec)
                    self.save_pods(pods)
                    log(f"pod/{obj.namespace}/{obj.name} deleted (CNI DEL on {rec['node']})")
                else:
                    self.remove_object(obj.key)
                    log(f"{kind.lower()}/{obj.name} deleted")

    @staticmethod
    def _load(files: list[str]) -> list:
        objs = []
        for f in files:
            if not os.path.exists(f):
                raise LabError(f"{f}: no such file or directory")
            try:
                objs += [model.parse(d) for d in model.load_documents(f)]
            except (model.ModelError, ValueError) as e:
                raise LabError(f"{f}: {e}") from None
        return objs

    # -- status / exec / probe ---------------------------------------------------------------------

    def status(self) -> dict:
        meta = self.meta()
        nodes = []
        for name, info in sorted(meta["nodes"].items(), key=lambda kv: int(kv[0][4:])):
            healthy = _alive(info.get("agent_pid"), "ovsctl.cli") and self._agent_ready(name)
            nodes.append(
                {"name": name, "ip": info["ip"], "podCIDR": info["podCIDR"], "healthy": healthy}
            )
        pods = [
            {"namespace": r["namespace"], "name": r["name"], "node": r["node"], "ip": r["ip"]}
            for _k, r in sorted(self.pods().items())
        ]
        return {
            "name": self.name,
            "nodes": nodes,
            "pods": pods,
            "external": {"ip": meta["external"].get("ip"), "port": meta["external"].get("port")},
            "source": meta.get("source", "yaml"),
        }

    def pod_netns(self, pod: str) -> str:
        if "/" not in pod:
            pod = f"default/{pod}"
        rec = self.pods().get(pod)
        if rec is None:
            raise LabError(f"no pod {pod} in lab {self.name}")
        return rec["netns"]

    def services(self) -> list[dict]:
        """The Service objects in the lab's state: {namespace, name, clusterIP, ports}."""
        out = []
        for f in sorted(os.listdir(self.cluster_dir)):
            if not f.startswith("Service-"):
                continue
            with open(os.path.join(self.cluster_dir, f)) as fh:
                body = yaml.safe_load(fh) or {}
            spec, meta = body.get("spec") or {}, body.get("metadata") or {}
            if spec.get("clusterIP") in (None, "", "None"):
                continue
            out.append(
                {
                    "namespace": meta.get("namespace", "default"),
                    "name": meta.get("name"),
                    "clusterIP": spec["clusterIP"],
                    "ports": [
                        (int(p["port"]), p.get("protocol") or "TCP")
                        for p in spec.get("ports") or []
                    ],
                }
            )
        return out

    def probe(self, timeout: float = 2.0, services: bool = False) -> dict[str, bool]:
        """Every pod to every other pod on every declared port; with services=True also every
        pod to every Service port (keys "src->svc:ns/name:PORT/PROTO")."""
        pods = self.pods()
        svc_targets = []
        if services:
            for svc in self.services():
                for port, proto in svc["ports"]:
                    if proto in ("TCP", "UDP"):
                        svc_targets.append(
                            (f"svc:{svc['namespace']}/{svc['name']}", svc["clusterIP"], port, proto)
                        )
        targets = []
        for dst in pods.values():
            for _name, port, proto in dst["ports"]:
                if proto in ("TCP", "UDP"):
                    targets.append((dst, port, proto))

        def run(src):
            todo = [
                {
                    "key": f"{src['namespace']}/{src['name']}->{d['namespace']}/{d['name']}:{port}/{proto}",
                    "ip": d["ip"],
                    "port": port,
                    "proto": proto,
                }
                for d, port, proto in targets
                if d is not src
            ] + [
                {
                    "key": f"{src['namespace']}/{src['name']}->{name}:{port}/{proto}",
                    "ip": ip,
                    "port": port,
                    "proto": proto,
                }
                for name, ip, port, proto in svc_targets
            ]
            if not todo:
                return {}
            p = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    src["netns"],
                    sys.executable,
                    PROBER,
                    "--timeout",
                    str(timeout),
                ],
                input=json.dumps(todo),
                capture_output=True,
                text=True,
                timeout=timeout * 3 + 30,
            )
            if p.returncode != 0:
                raise LabError(
                    f"probe from {src['namespace']}/{src['name']} failed: {p.stderr.strip()}"
                )
            return json.loads(p.stdout)

        out: dict[str, bool] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(pods))) as pool:
            for part in pool.map(run, pods.values()):
                out.update(part)
        return dict(sorted(out.items()))

    # -- trace / reachability (ovsctl/trace.py: ofproto/trace on every node, nothing sent) -------

    def tracer(self):
        """A Tracer over every node: each agent's /cluster and /flows, each ovs-vswitchd."""
        from ovsctl.tools import trace

        try:
            return trace.lab_tracer(self)
        except trace.TraceError as e:
            raise LabError(str(e)) from None

    def trace(self, src: str, dst: str, proto: str = "tcp", dport=None, sport=40000, node=None):
        """Trace SRC -> DST starting on the source pod's node (or `node`, for an IP source),
        following the tunnel to the destination's node: a `trace.Trace` (see .to_dict())."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        try:
            return tracer.trace(src, dst, proto, dport, sport, node=node)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()

    def reachability_report(self, namespace: str | None = None) -> dict:
        """{"traced", "intended", "differences"}: every pod to every other pod on every declared
        TCP/UDP port, traced through the live pipelines (keys as probe's)."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        try:
            traced, intended, _ = trace.lab_matrix(tracer, namespace)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()
        return {
            "traced": traced,
            "intended": intended,
            "differences": trace.differences(traced, intended),
        }

    def reachability(self, namespace: str | None = None) -> dict[str, bool]:
        """What `probe()` would find, without sending a packet: exactly probe's shape."""
        return self.reachability_report(namespace)["traced"]

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


def _zombie(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return None
