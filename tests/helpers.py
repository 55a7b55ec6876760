"""Shared test plumbing: unique names, network namespaces, a private OVS + agent per node,
calling the CNI shim exactly as kubelet does, and polling with deadlines (never sleeps)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from ovsctl.lab import kubelet
from ovsctl.lab.ovsproc import OVS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


def uid(n: int = 6) -> str:
    return uuid.uuid4().hex[:n]


def sh(
    *cmd: str, check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr or p.stdout}")
    return p


def in_ns(
    ns: str, *cmd: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def wait_for(cond, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll cond() until truthy; return its value or fail with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - keep polling, report the last failure
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def netns_add(name: str) -> str:
    sh("ip", "netns", "add", name)
    in_ns(name, "ip", "link", "set", "lo", "up")
    return f"/var/run/netns/{name}"


def netns_del(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Node:
    """One node: a netns with its own OVS (userspace datapath) and an ovsctl agent."""

    def __init__(self, pod_cidr: str = "10.244.0.0/24", name: str | None = None):
        self.id = uid()
        self.ns = name or f"ovt{self.id}"
        self.dir = tempfile.mkdtemp(prefix=f"ovt{self.id}-", dir="/tmp")
        self.pod_cidr = pod_cidr
        self.ovs = OVS(os.path.join(self.dir, "ovs"), netns=self.ns)
        self.sock = os.path.join(self.dir, "cni.sock")
        self.api_sock = os.path.join(self.dir, "agent.sock")  # /status /flows /cluster
        self.state = os.path.join(self.dir, "state")
        self.agent_log = os.path.join(self.dir, "agent.log")
        self.agent_proc: subprocess.Popen | None = None
        self.pods: list[str] = []
        self.agent_rundir: str | None = None  # the agent's --ovs-rundir; None: OVS's own

    def start(self) -> Node:
        netns_add(self.ns)
        self.ovs.start()
        self.start_agent()
        return self

    def agent_cmd(self) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.ns,
            os.path.join(VENV_BIN, "ovsctl"),
            "agent",
            "--pod-cidr",
            self.pod_cidr,
            "--datapath-type",
            "netdev",
            "--node-name",
            self.ns,
            "--ovsdb",
            self.ovs.remote,
            "--ovs-rundir",
            self.agent_rundir or self.ovs.rundir,
            "--cni-socket",
            self.sock,
            "--api-socket",
            self.api_sock,
            "--state-dir",
            self.state,
            "--log-level",
            "debug",
            "--cni-timeout",
            "10",
        ]

    def start_agent(self, wait: bool = True) -> None:
        log = open(self.agent_log, "a")  # noqa: SIM115 - kept open for the process
        env = dict(os.environ, OVS_RUNDIR=self.ovs.rundir)
        self.agent_proc = subprocess.Popen(
            self.agent_cmd(), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        if wait:
            wait_for(
                self._ready, 30, what=f"agent ready (log {self.agent_log}:\n{self.tail_log()})"
            )

    def _ready(self) -> bool:
        if self.agent_proc.poll() is not None:
            raise AssertionError(
                f"agent exited with {self.agent_proc.returncode}:\n{self.tail_log()}"
            )
        return self.cni("STATUS", "", "", "").returncode == 0

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        if self.agent_proc and self.agent_proc.poll() is None:
            # Our child: wait() reaps it. (kill_pid polls with signal 0, which a zombie child
            # still answers, so it always waited its whole 10 s timeout.)
            self.agent_proc.send_signal(sig)
            try:
                self.agent_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.agent_proc.kill()
                self.agent_proc.wait(timeout=10)

    def tail_log(self, n: int = 30) -> str:
        try:
            with open(self.agent_log) as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def netconf(self, version: str = "1.0.0", **extra) -> dict:
        return kubelet.netconf(self.sock, version, **extra)

    def cni(
        self,
        command: str,
        container_id: str,
        netns: str,
        ifname: str = "eth0",
        conf: dict | None = None,
        pod: str = "default/pod",
        version: str = "1.1.0",
        env_extra: dict | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run the shim as kubelet does: CNI_* environment and the network config on stdin."""
        ns, name = pod.split("/")
        env = kubelet.cni_env(command, container_id, netns, ifname, namespace=ns, name=name)
        env.update(env_extra or {})
        data = stdin if stdin is not None else json.dumps(conf or self.netconf(version))
        return kubelet.run(env, data)

    def add_pod(self, name: str, namespace: str = "default", version: str = "1.0.0") -> dict:
        pns = f"{self.ns}-{name}"
        path = netns_add(pns)
        self.pods.append(pns)
        cid = f"{self.id}{name}{uid(8)}"
        p = self.cni("ADD", cid, path, conf=self.netconf(version), pod=f"{namespace}/{name}")
        assert p.returncode == 0, f"ADD {name} failed: {p.stdout} {p.stderr}\n{self.tail_log()}"
        res = json.loads(p.stdout)
        return {
            "name": name,
            "ns": pns,
            "netns": path,
            "cid": cid,
            "result": res,
            "ip": res["ips"][0]["address"].split("/")[0],
        }

    def stop(self) -> None:
        self.kill_agent(signal.SIGTERM)
        self.ovs.stop()
        for pns in self.pods:
            netns_del(pns)
        netns_del(self.ns)
        shutil.rmtree(self.dir, ignore_errors=True)
