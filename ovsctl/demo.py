"""`make demo`: one node in a network namespace with its own OVS (userspace datapath) and an
ovsctl agent, three pods plugged in through the CNI shim exactly as kubelet would, pings
between them and from the node, and the flow tables with names. Everything is removed at the
end unless --keep is given."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from ovsctl import flowdump, kubelet
from ovsctl.ovsproc import OVS


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ovsctl.demo", description=__doc__)
    ap.add_argument("--keep", action="store_true", help="leave the node and pods running")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces, OVS)", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:4]
    node_ns = f"demo{tag}-node"
    work = tempfile.mkdtemp(prefix=f"ovsctl-demo{tag}-")
    ovs = OVS(os.path.join(work, "ovs"), netns=node_ns)
    sock = os.path.join(work, "cni.sock")
    pods = [("default", "web"), ("default", "db"), ("shop", "cart")]
    made_ns = []
    agent = None
    try:
        print(f"== node {node_ns}: ovsdb-server + ovs-vswitchd (userspace datapath) in {work}")
        sh("ip", "netns", "add", node_ns)
        made_ns.append(node_ns)
        sh("ip", "netns", "exec", node_ns, "ip", "link", "set", "lo", "up")
        ovs.start()
        log = open(os.path.join(work, "agent.log"), "w")  # noqa: SIM115 - the agent's log
        agent = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                node_ns,
                sys.executable,
                "-m",
                "ovsctl.cli",
                "agent",
                "--pod-cidr",
                "10.244.0.0/24",
                "--datapath-type",
                "netdev",
                "--node-name",
                node_ns,
                "--ovsdb",
                ovs.remote,
                "--cni-socket",
                sock,
                "--state-dir",
                os.path.join(work, "state"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, OVS_RUNDIR=ovs.rundir),
        )
        deadline = time.monotonic() + 30
        status = kubelet.cni_env("STATUS", "", "", "")
        while (
            kubelet.run(
                status,
                f'{{"cniVersion":"1.1.0","name":"ovsctl","type":"ovsctl-cni","socket":"{sock}"}}',
            ).returncode
            != 0
        ):
            if agent.poll() is not None or time.monotonic() > deadline:
                print(open(os.path.join(work, "agent.log")).read(), file=sys.stderr)
                raise RuntimeError("the agent did not become ready")
            time.sleep(0.1)
        print(f"== agent ready (log: {work}/agent.log)")
        ips = {}
        for ns, name in pods:
            pns = f"demo{tag}-{name}"
            sh("ip", "netns", "add", pns)
            made_ns.append(pns)
            cid = uuid.uuid4().hex
            t0 = time.monotonic()
            res = kubelet.add(sock, cid, f"/var/run/netns/{pns}", ns, name)
            ips[f"{ns}/{name}"] = (pns, res["ips"][0]["address"].split("/")[0])
            print(
                f"   CNI ADD {ns}/{name:<5} -> {res['ips'][0]['address']:<15} "
                f"gw {res['ips'][0]['gateway']}  ({(time.monotonic() - t0) * 1000:.0f} ms)"
            )
        print("== pings (pod -> pod, node -> pod)")
        failures = 0
        for src, (sns, _) in ips.items():
            for dst, (_, dip) in ips.items():
                if src == dst:
                    continue
                ok = (
                    sh(
                        "ip", "netns", "exec", sns, "ping", "-c1", "-W1", dip, check=False
                    ).returncode
                    == 0
                )
                failures += not ok
                print(f"   {src:>12} -> {dst:<12} {dip:<12} {'ok' if ok else 'FAILED'}")
        for dst, (_, dip) in ips.items():
            ok = (
                sh(
                    "ip", "netns", "exec", node_ns, "ping", "-c1", "-W1", dip, check=False
                ).returncode
                == 0
            )
            failures += not ok
            print(f"   {'node':>12} -> {dst:<12} {dip:<12} {'ok' if ok else 'FAILED'}")
        print("== flow tables of br-int (ovsctl flows)")
        os.environ["OVS_RUNDIR"] = ovs.rundir
        flowdump.main(argparse.Namespace(bridge="br-int", table=None, json=False, no_stats=False))
        if args.keep:
            print(
                f"\nleft running: node netns {node_ns}, pods {' '.join(made_ns[1:])}; agent pid "
                f"{agent.pid}. Remove with: kill {agent.pid}; OVS_RUNDIR={ovs.rundir} "
                f"ovs-appctl -t {ovs.rundir}/ovs-vswitchd.ctl exit; OVS_RUNDIR={ovs.rundir} "
                f"ovs-appctl -t {ovs.rundir}/ovsdb-server.ctl exit; "
                + "; ".join(f"ip netns del {n}" for n in made_ns)
            )
            return 1 if failures else 0
        return 1 if failures else 0
    finally:
        if not args.keep:
            if agent and agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(10)
                except subprocess.TimeoutExpired:
                    agent.kill()
            ovs.stop()
            for ns in made_ns:
                sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(work, ignore_errors=True)
            print("== removed the demo node and pods")


if __name__ == "__main__":
    sys.exit(main())
