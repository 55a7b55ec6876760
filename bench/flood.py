"""CNI ADD under a packet-in flood: p50 of ADD on a node while one of its pods floods a Service
without endpoints (every such packet goes up to the agent, which answers it with a refusal),
against p50 of ADD on the same node without the flood, in the same run, taking turns in rounds.

What stops the flood is the switch's meter on the reject path (flows/services.py, 100 packets/s)
and the agent's own token bucket after it; tests/stress/test_lab_faults.py checks that as counts
(the meter drops, the agent gets no more than the meter passes, every ADD succeeds). This is the
cost in latency, a ratio that only means something on a quiet machine: goal <= 2.0.

The ADDs are run as kubelet runs them (the shim, CNI_* environment, the config on stdin), one
after the other, in a 1-node lab (its own OVS and agent in a network namespace).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from bench.common import in_ns, save, sh, summary, uid, wait_until

ADDS = 10  # per round and condition
ROUNDS = 3
VOID_IP, VOID_PORT = "10.96.0.77", 9999
OBJECTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: x, labels: {{team: x}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: x1, namespace: x, labels: {{app: x}}}}
spec:
  nodeName: node0
  containers:
  - name: app
    image: busybox
    ports:
    - {{name: dns, containerPort: 53, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata: {{name: void, namespace: x}}
spec:
  clusterIP: {VOID_IP}
  selector: {{app: nobody}}
  ports:
  - {{name: u, port: {VOID_PORT}, protocol: UDP}}
"""

FLOOD = """
import signal, socket, sys
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, payload, n = (sys.argv[1], int(sys.argv[2])), b"x" * 64, 0
while not stop:
    for _ in range(256):
        try:
            s.sendto(payload, dst)
        except OSError:
            pass
    n += 256
print(n, flush=True)
"""

METRICS = """
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9476/metrics", timeout=5).read().decode())
"""


def _metric(lab, name: str) -> float:
    text = in_ns(lab.meta()["nodes"]["node0"]["netns"], sys.executable, "-c", METRICS).stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def _meter(lab) -> dict[str, int]:
    from flows.services import REJECT_METER

    out = lab.ovs("node0").ofctl("meter-stats", "br-int", f"meter={REJECT_METER}")
    m = re.search(
        rf"meter:{REJECT_METER}\b.*?packet_in_count:(\d+).*?\b0: packet_count:(\d+)", out, re.S
    )
    if not m:
        raise RuntimeError(f"no stats of meter {REJECT_METER}:\n{out}")
    return {"packets": int(m.group(1)), "dropped": int(m.group(2))}


def _adds(lab, tag: str, made: list) -> list[float]:
    from ovsctl.lab import kubelet

    out = []
    for i in range(ADDS):
        pns = f"{lab.name}.p.{tag}{i}"
        sh("ip", "netns", "add", pns)
        path = f"/var/run/netns/{pns}"
        made.append((pns, path, f"{tag}{i}{uid(10)}"))
        t0 = time.monotonic()
        kubelet.add(lab.socket("node0"), made[-1][2], path, "bench", pns)
        out.append(time.monotonic() - t0)
    return out


def _remove(lab, made: list) -> None:
    from ovsctl.lab import kubelet

    while made:
        pns, path, cid = made.pop()
        kubelet.delete(lab.socket("node0"), cid, path, "bench", pns)
        sh("ip", "netns", "del", pns, check=False)


def run() -> dict:
    from ovsctl.lab.lab import Lab

    lab = Lab(f"bf{uid(4)}")
    tmp = tempfile.mkdtemp(prefix="ovbflood-")
    f = os.path.join(tmp, "objects.yaml")
    with open(f, "w") as fh:
        fh.write(OBJECTS)
    quiet: list[float] = []
    loaded: list[float] = []
    sent = 0
    made: list = []
    flood_s = 0.0
    try:
        lab.up(1, files=[f], log=lambda *_: None)
        flooder = lab.pod_netns("x/x1")
        try:
            _adds(lab, "w", made)  # warm-up, not counted
        finally:
            _remove(lab, made)
        pins0, meter0 = _metric(lab, "ovsctl_packet_in_total"), _meter(lab)
        sync_sum = sync_n = 0.0  # flow syncs during the flooded ADDs
        for r in range(ROUNDS):
            try:
                quiet += _adds(lab, f"q{r}x", made)
            finally:
                _remove(lab, made)
            flood = subprocess.Popen(
                ["ip", "netns", "exec", flooder, sys.executable, "-c", FLOOD]
                + [VOID_IP, str(VOID_PORT)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                t0 = time.monotonic()
                before = _meter(lab)["dropped"]
                wait_until(lambda b=before: _meter(lab)["dropped"] > b, 30, "the flood", 0.1)
                sync0 = [_metric(lab, f"ovsctl_flow_sync_seconds_{k}") for k in ("sum", "count")]
                loaded += _adds(lab, f"f{r}x", made)
                sync_sum += _metric(lab, "ovsctl_flow_sync_seconds_sum") - sync0[0]
                sync_n += _metric(lab, "ovsctl_flow_sync_seconds_count") - sync0[1]
                flood_s += time.monotonic() - t0
            finally:
                flood.terminate()
                sent += int(flood.communicate(timeout=30)[0].strip() or 0)
                _remove(lab, made)
        pins = _metric(lab, "ovsctl_packet_in_total") - pins0
        meter = {k: v - meter0[k] for k, v in _meter(lab).items()}
    finally:
        lab.down(log=lambda *_: None)
        sh("rm", "-rf", tmp, check=False)
    q, fl = summary(quiet), summary(loaded)
    result = {
        "cni_add_flood_p50_ratio": fl["p50"] / q["p50"],
        "raw": {
            "add_s_without_flood": q,
            "add_s_with_flood": fl,
            "adds_per_round": ADDS,
            "rounds": ROUNDS,
            "flood_packets_sent": sent,
            "flood_seconds": flood_s,
            "reject_meter": meter,
            "packet_ins_to_agent": pins,
            "packet_ins_per_s_to_agent": pins / flood_s if flood_s else 0.0,
            # the agent's own account (ovsctl_flow_sync_seconds) of the flow updates made
            # during the flooded ADDs
            "flow_sync_mean_s_with_flood": sync_sum / sync_n if sync_n else 0.0,
            "flow_syncs_with_flood": sync_n,
        },
    }
    save("flood", result)
    print(
        f"CNI ADD p50 {fl['p50'] * 1000:.1f} ms under a packet-in flood vs "
        f"{q['p50'] * 1000:.1f} ms without (ratio {result['cni_add_flood_p50_ratio']:.2f}); "
        f"flood {sent} packets in {flood_s:.1f}s, the reject meter dropped {meter['dropped']} and "
        f"passed {meter['packets'] - meter['dropped']}, {pins:.0f} packet-ins reached the agent "
        f"(~{result['raw']['packet_ins_per_s_to_agent']:.0f}/s); under the flood a flow sync "
        f"took {result['raw']['flow_sync_mean_s_with_flood'] * 1000:.1f} ms on average "
        f"({sync_n:.0f} syncs)"
    )
    return result


if __name__ == "__main__":
    run()
