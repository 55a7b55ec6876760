"""Shared pieces of the benchmarks: statistics, a private OVS + agent in a namespace, the CNI
shim invoked exactly as kubelet does, and result files."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from ovsctl.util import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
VENV_BIN = os.path.dirname(sys.executable)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), p in 0..100."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def sh(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... failed: {(p.stderr.strip() or p.stdout.strip())[-2000:]}")
    return p


def in_ns(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def uid(n: int = 6) -> str:
    return uuid.uuid4().hex[:n]


def wait_until(cond, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def save(name: str, result: dict) -> str:
    """Write results/NAME.json (the latest figures of that benchmark)."""
    os.makedirs(RESULTS, exist_ok=True)
    result = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result,
    }
    path = os.path.join(RESULTS, f"{name}.json")
    atomic_write(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


class BenchNode:
    """A network namespace with its own OVS (userspace datapath) and an ovsctl agent, as the
    integration tests and the lab run them. `extra` are more agent flags."""

    def __init__(self, pod_cidr: str = "10.244.0.0/24", extra: list[str] | None = None):
        import tempfile

        from ovsctl.lab.ovsproc import OVS

        self.id = uid()
        self.ns = f"ovb{self.id}"
        self.dir = tempfile.mkdtemp(prefix=f"ovb{self.id}-", dir="/tmp")
        self.pod_cidr = pod_cidr
        self.ovs = OVS(os.path.join(self.dir, "ovs"), netns=self.ns)
        self.sock = os.path.join(self.dir, "cni.sock")
        self.state = os.path.join(self.dir, "state")
        self.log = os.path.join(self.dir, "agent.log")
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.netns: list[str] = []

    def __enter__(self) -> BenchNode:
        sh("ip", "netns", "add", self.ns)
        in_ns(self.ns, "ip", "link", "set", "lo", "up")
        self.ovs.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_agent()
        self.ovs.stop()
        for ns in self.netns:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "del", self.ns, check=False)
        import shutil

        if os.environ.get("BENCH_KEEP_LOGS") and os.path.exists(self.log):
            kept = f"/tmp/ovsctl-bench-{self.id}-agent.log"
            shutil.copy(self.log, kept)
            print(f"agent log kept: {kept}")
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_agent(self, wait: bool = True) -> float:
        """Start the agent; with wait, return seconds until it answers CNI STATUS."""
        cmd = [
            "ip", "netns", "exec", self.ns, os.path.join(VENV_BIN, "ovsctl"), "agent",
            "--datapath-type", "netdev", "--node-name", self.ns, "--ovsdb", self.ovs.remote,
            "--cni-socket", self.sock, "--state-dir", self.state, "--log-level", "info",
            "--ovs-rundir", self.ovs.rundir,
        ]  # fmt: skip
        if "--pod-cidr" not in self.extra and "--cluster-state" not in self.extra:
            cmd += ["--pod-cidr", self.pod_cidr]
        cmd += self.extra
        t0 = time.monotonic()
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, OVS_RUNDIR=self.ovs.rundir),
            )
        if wait:
            wait_until(self.ready, 60, f"agent ready ({self.log})", interval=0.02)
        return time.monotonic() - t0

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited {self.proc.returncode}; see {self.log}")
        return self.cni("STATUS", "", "").returncode == 0

    def stop_agent(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def pod_netns(self) -> str:
        name = f"{self.ns}-p{uid(8)}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return f"/var/run/netns/{name}"

    def cni(self, command: str, cid: str, netns: str, pod: str = "default/pod"):
        from ovsctl.lab import kubelet

        ns, name = pod.split("/")
        env = kubelet.cni_env(command, cid, netns, "eth0", namespace=ns, name=name)
        return kubelet.run(env, json.dumps(kubelet.netconf(self.sock, "1.1.0")))

    def add_local_pods(self, n: int, namespaces: int) -> None:
        """CNI ADD of pods pod0..pod{n-1} (in ns{i % namespaces}), as the benchmarks' cluster
        (bench/cluster.py) names this node's pods."""
        for i in range(n):
            r = self.cni("ADD", f"c{i}", self.pod_netns(), pod=f"ns{i % namespaces}/pod{i}")
            if r.returncode != 0:
                raise RuntimeError(f"ADD pod{i}: {r.stdout}")

    def flow_count(self) -> int:
        out = self.ovs.ofctl("dump-aggregate", "br-int")
        return int(out.split("flow_count=")[1].split()[0])


class FlowMonitor:
    """The switch's own account of when a flow changed: `ovs-ofctl monitor br-int watch:`
    (an OpenFlow 1.4 flow monitor) run for the whole benchmark, each event line stamped as it
    arrives (ovs-ofctl prints the events on stderr, unbuffered; both streams are read). `wait(pred, since)` returns the stamp of the first event line after `since` that
    `pred` accepts."""

    def __init__(self, node: BenchNode, bridge: str = "br-int"):
        import threading

        self._cmd = [
            *(["ip", "netns", "exec", node.ns] if node.ns else []),
            "ovs-ofctl", "-O", "OpenFlow14", "monitor", bridge, "watch:!initial",
        ]  # fmt: skip
        self._env = node.ovs.env
        self._events: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> FlowMonitor:
        self._proc = subprocess.Popen(
            self._cmd, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._thread.start()
        # the monitor is in place once its (empty) initial reply is out
        self.wait(lambda line: "FLOW_MONITOR reply" in line, 0.0, 10, header=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def _read(self) -> None:
        for raw in self._proc.stdout:
            t = time.monotonic()
            with self._cv:
                self._events.append((t, raw.decode(errors="replace").rstrip()))
                self._cv.notify_all()

    def wait(self, pred, since: float, timeout: float = 30, header: bool = False) -> float:
        deadline = time.monotonic() + timeout
        i = 0
        with self._cv:
            while True:
                while i < len(self._events):
                    t, line = self._events[i]
                    i += 1
                    if t >= since and (header or "event=" in line) and pred(line):
                        return t
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc and self._proc.poll() is not None):
                    if os.environ.get("BENCH_KEEP_LOGS"):
                        with open("/tmp/ovsctl-bench-monitor.log", "w") as f:
                            f.writelines(f"{t:.3f} {line}\n" for t, line in self._events)
                    last = "\n".join(line for _, line in self._events[-6:])
                    raise TimeoutError(
                        f"no flow event matched within {timeout}s; the last ones:\n{last}"
                    )
                self._cv.wait(left)
