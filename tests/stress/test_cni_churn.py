"""200 pods added (and most deleted again) in parallel through the shim, each in its own netns,
while the agent is killed with SIGKILL twice and restarted as its DaemonSet would restart it.

Kubelet's part is played faithfully: a failed ADD is followed by a DEL of that sandbox (retried
until it succeeds) and a new sandbox (new netns, new container ID) is tried, with backoff; a DEL
is retried until it succeeds. Afterwards: no address was ever held by two pods at once, and one
CNI GC (with cni.dev/valid-attachments) leaves nothing of any deleted pod or abandoned sandbox:
no veth, no OVS port, no flow, no IPAM allocation. The pods that stay keep theirs and work."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import netaddr

from flows import cookie
from ovsctl.agent.host import netlink
from tests.helpers import in_ns, netns_add, netns_del, uid
from tests.stress.conftest import cni, ipam_allocations, pod_cookie_owners, pod_ports, pod_veths

PODS = 200
KEEP_EVERY = 4  # every 4th pod stays (50 pods); the others are deleted again
WORKERS = 8
KILL_AT = (60, 130)  # kill -9 the agent when this many ADDs have succeeded
OP_DEADLINE = 90.0  # kubelet-style retries of one pod's ADD or DEL, bounded


class Kubelet:
    """The runtime side: sandboxes (netns + container ID), ADD/DEL with retries, and a log of
    every call with its start and end times."""

    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.added = threading.Condition(self.lock)  # notified on every successful ADD
        self.adds_ok = 0
        self.calls: list[dict] = []  # every CNI call: cmd, cid, t0, t1, rc, code
        self.holders: list[dict] = []  # every successful ADD: cid, ip, added, del_started
        self.live: dict[str, dict] = {}  # cid -> holder, for pods that stay
        self.netns: set[str] = set()

    def call(self, cmd: str, sb: dict) -> tuple[bool, dict | None]:
        t0 = time.monotonic()
        p = cni(self.node, cmd, sb["cid"], sb["path"], pod=sb["pod"], pod_uid=sb["uid"])
        t1 = time.monotonic()
        out = json.loads(p.stdout) if p.stdout.strip() else None
        assert "Traceback" not in p.stdout + p.stderr, p.stderr
        with self.lock:
            self.calls.append(
                {
                    "cmd": cmd,
                    "cid": sb["cid"],
                    "t0": t0,
                    "t1": t1,
                    "rc": p.returncode,
                    "code": None if p.returncode == 0 else (out or {}).get("code"),
                }
            )
        return p.returncode == 0, out

    def sandbox(self, i: int, attempt: int) -> dict:
        name = f"{self.node.ns}-s{i}x{attempt}"
        with self.lock:
            self.netns.add(name)
        return {
            "ns": name,
            "path": netns_add(name),
            "cid": f"st{i}x{attempt}{uid(10)}",
            "pod": f"stress/p{i}",
            "uid": str(uuid.uuid4()),
        }

    def remove_sandbox(self, sb: dict, holder: dict | None) -> None:
        """DEL until it succeeds (an unreachable agent answers 11: retry), then the netns goes."""
        deadline = time.monotonic() + OP_DEADLINE
        backoff = 0.1
        first = None
        while True:
            t = time.monotonic()
            first = first or t
            if holder is not None and holder["del_started"] is None:
                holder["del_started"] = t
            ok, out = self.call("DEL", sb)
            if ok:
                break
            assert out and out.get("code") == 11, f"DEL {sb['cid']} failed: {out}"
            assert time.monotonic() < deadline, f"DEL {sb['cid']} still failing: {out}"
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        netns_del(sb["ns"])
        with self.lock:
            self.netns.discard(sb["ns"])

    def pod(self, i: int) -> None:
        deadline = time.monotonic() + OP_DEADLINE
        backoff = 0.1
        attempt = 0
        while True:
            attempt += 1
            sb = self.sandbox(i, attempt)
            ok, out = self.call("ADD", sb)
            if ok:
                break
            # containerd: a failed ADD tears the sandbox down (DEL), kubelet makes a new one
            self.remove_sandbox(sb, None)
            assert time.monotonic() < deadline, f"pod {i}: ADD still failing: {out}"
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        holder = {
            "cid": sb["cid"],
            "ip": out["ips"][0]["address"].split("/")[0],
            "added": time.monotonic(),
            "del_started": None,
            "sb": sb,
        }
        with self.lock:
            self.holders.append(holder)
            self.adds_ok += 1
            self.added.notify_all()
        if i % KEEP_EVERY == 0:
            with self.lock:
                self.live[sb["cid"]] = holder
            return
        self.remove_sandbox(sb, holder)


def flows_left_report(node, kl: Kubelet, cids: list[str]) -> str:
    """Why the flows of deleted pods are left: each such container ID with its CNI calls (as
    the test saw them) and the agent log's lines about it, the agent's rounds and restarts for
    context; the whole agent log is kept (the node's directory goes with the node)."""
    kept = f"/tmp/ovsctl-churn-agent-{node.id}.log"
    try:
        shutil.copyfile(node.agent_log, kept)
        with open(node.agent_log) as fh:
            lines = fh.readlines()
    except OSError as e:
        kept, lines = f"(agent log not kept: {e})", []
    out = [f"flows of {len(cids)} deleted pods are left; agent log kept in {kept}"]
    context = (  # the agent's starts, connections and rounds
        "agent for node",
        "restored ",
        " connected (",
        " disconnected;",
        "switch holds",
        "staged during it",
        " installed: ",
    )
    out += ["-- rounds and restarts:"] + [
        "   " + ln.rstrip() for ln in lines if any(c in ln for c in context)
    ]
    wall = time.time() - time.monotonic()  # the test's times as the agent log's clock

    def at(t: float) -> str:
        ms = int((wall + t) % 1 * 1000)
        return time.strftime("%H:%M:%S", time.localtime(wall + t)) + f",{ms:03d}"

    for cid in cids:
        out.append(f"-- {cid}:")
        for c in kl.calls:
            if c["cid"] == cid:
                out.append(
                    f"   test: {c['cmd']} {at(c['t0'])}..{at(c['t1'])} "
                    f"rc {c['rc']} code {c['code']}"
                )
        out += ["   " + ln.rstrip() for ln in lines if cid in ln]
    return "\n".join(out)


def test_parallel_add_del_with_the_agent_killed_twice(node, request):
    kl = Kubelet(node)

    def cleanup():
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for h in list(kl.live.values()):
                pool.submit(cni, node, "DEL", h["cid"], h["sb"]["path"], pod=h["sb"]["pod"])
            for name in list(kl.netns):
                pool.submit(netns_del, name)

    request.addfinalizer(cleanup)
    ports_before, veths_before = pod_ports(node), pod_veths(node)
    allocs_before = ipam_allocations(node)
    kills: list[float] = []
    stop = threading.Event()

    def killer():
        for at in KILL_AT:
            with kl.added:
                kl.added.wait_for(lambda a=at: kl.adds_ok >= a or stop.is_set())
            if stop.is_set():
                return
            node.kill_agent()  # SIGKILL
            t = time.monotonic()
            node.start_agent()  # as the DaemonSet would; waits until it answers STATUS
            kills.append(time.monotonic() - t)

    t0 = time.monotonic()
    k = threading.Thread(target=killer, name="killer")
    k.start()
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for f in [pool.submit(kl.pod, i) for i in range(PODS)]:
                f.result()
    finally:
        with kl.added:
            stop.set()
            kl.added.notify_all()
        k.join()
    took = time.monotonic() - t0
    assert len(kills) == 2, "the agent was not killed twice"
    assert len(kl.holders) == PODS

    # -- no address was ever held by two pods at once ----------------------------------------
    # A pod holds its address from its ADD's success until its DEL starts (DEL is retried until
    # it succeeds, so the address may only be reused after the runtime began that pod's DEL).
    by_ip: dict[str, list[dict]] = {}
    for h in kl.holders:
        by_ip.setdefault(h["ip"], []).append(h)
    reused = 0
    for ip, hs in by_ip.items():
        hs.sort(key=lambda h: h["added"])
        for a, b in zip(hs, hs[1:], strict=False):
            reused += 1
            assert a["del_started"] is not None and a["del_started"] < b["added"], (
                f"{ip} handed to {b['cid']} while {a['cid']} still held it"
            )
    assert reused > 0, "no address was reused: the test did not exercise reuse"
    net = netaddr.IPNetwork(node.pod_cidr)
    assert all(netaddr.IPAddress(ip) in net for ip in by_ip)
    failed_adds = [c for c in kl.calls if c["cmd"] == "ADD" and c["rc"] != 0]
    assert failed_adds, "no ADD failed: the kills did not hit any request"
    # The only failure kubelet should see is "try again later" while the agent is down.
    assert {c["code"] for c in failed_adds} <= {11}, sorted({c["code"] for c in failed_adds})

    # -- one GC with the pods that stay: nothing else is left ---------------------------------
    valid = [{"containerID": cid, "ifname": "eth0"} for cid in kl.live]
    r = cni(node, "GC", "", "", conf=node.netconf("1.1.0", **{"cni.dev/valid-attachments": valid}))
    assert r.returncode == 0, r.stdout
    live_ifs = {netlink.host_ifname(cid, "eth0") for cid in kl.live}
    dead_cids = {c["cid"] for c in kl.calls} - set(kl.live)
    dead_ifs = {netlink.host_ifname(cid, "eth0") for cid in dead_cids}
    assert pod_ports(node) - ports_before == live_ifs, "OVS ports of deleted pods are left"
    assert pod_veths(node) - veths_before == live_ifs, "veths of deleted pods are left"
    assert not dead_ifs & pod_veths(node)
    allocs = ipam_allocations(node)
    assert {c: ip for c, ip in allocs.items() if c not in allocs_before} == {
        cid: h["ip"] for cid, h in kl.live.items()
    }, "IPAM allocations of deleted pods are left (or a live pod lost its address)"
    owners = pod_cookie_owners(node)
    dead_owners = {cookie.owner_id(f"pod/{cid}/eth0"): cid for cid in dead_cids}
    live_owners = {cookie.owner_id(f"pod/{cid}/eth0") for cid in kl.live}
    assert not owners & dead_owners.keys(), flows_left_report(
        node, kl, sorted(dead_owners[o] for o in owners & dead_owners.keys())
    )
    assert live_owners <= owners, "a live pod lost its flows"

    # -- the pods that stay still work --------------------------------------------------------
    a, b = list(kl.live.values())[:2]
    assert (
        in_ns(a["sb"]["ns"], "ping", "-n", "-c", "1", "-W", "2", b["ip"], check=False).returncode
        == 0
    )
    adds = sorted(c["t1"] - c["t0"] for c in kl.calls if c["cmd"] == "ADD" and c["rc"] == 0)
    print(
        f"\nchurn: {PODS} pods ({len(kl.live)} kept), {len(kl.calls)} CNI calls, "
        f"{len(failed_adds)} failed ADDs, {reused} address reuses, agent down "
        f"{', '.join(f'{k:.1f}s' for k in kills)}, ADD median {adds[len(adds) // 2]:.2f}s "
        f"p95 {adds[int(len(adds) * 0.95)]:.2f}s, {took:.1f}s in all"
    )
