"""NetworkPolicy audit log and the node tools in a 2-node lab: a policy annotated
ovsctl.io/audit: "true" logs the connections it allows and drops (policy, rule, 5-tuple,
verdict) on the destination pod's node; a flood of new connections is logged at most at the
rate limit (the policy's own switch meter, then its own token bucket in the agent), another
audited policy's connections are still logged meanwhile, and the agent keeps answering CNI;
`lab flows --policy/--pod/--diff` and `lab node-status` show the same. ClusterNetworkPolicies
annotated the same way log their rules too (namespace cn: an audited Admin Deny and an audited
Baseline Accept), naming the policy, tier, rule and action. No sleeps: every wait polls for
something observable (a line, a flow counter, an agent counter)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import yaml

from ovsctl.lab import kubelet
from tests.helpers import REPO, in_ns, uid, wait_for

RATE = 100  # the agents' audit_rate (the default)

CONNECT = """
import socket, sys
host, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", sport))
s.settimeout(float(sys.argv[4]))
try:
    s.connect((host, port))
    print("open")
except OSError:
    print("blocked")
"""

# Raw TCP SYNs, each from another source port (a new connection attempt each), at `rate` a
# second for `secs` seconds; prints how many were sent and how long it took.
FLOOD = """
import socket, struct, sys, time
src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
rate, secs = int(sys.argv[4]), float(sys.argv[5])
S, D = socket.inet_aton(src), socket.inet_aton(dst)

def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < secs:
    due = int((time.monotonic() - t0) * rate)
    while sent < due:
        sport = 10000 + sent % 50000
        hdr = struct.pack("!HHIIBBHHH", sport, dport, sent * 7919, 0, 0x50, 0x02, 64240, 0, 0)
        c = csum(S + D + struct.pack("!BBH", 0, 6, len(hdr)) + hdr)
        sock.sendto(hdr[:16] + struct.pack("!H", c) + hdr[18:], (dst, 0))
        sent += 1
    time.sleep(0.002)
print(sent, time.monotonic() - t0)
"""


def pod(name: str, node: str, app: str, namespace: str = "au") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ],
        },
    }


GUARD = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "guard", "namespace": "au", "annotations": {"ovsctl.io/audit": "true"}},
    "spec": {
        "podSelector": {"matchLabels": {"app": "srv"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"app": "ok"}}}],
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        ],
    },
}
# audited too, its own budget: only "ok" may reach "db"
GUARD2 = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "guard2", "namespace": "au", "annotations": {"ovsctl.io/audit": "true"}},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "ok"}}}]}],
    },
}
# not audited: isolates "ok" (on node1); nothing of it may reach an audit log
QUIET = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "quiet", "namespace": "au"},
    "spec": {"podSelector": {"matchLabels": {"app": "ok"}}, "policyTypes": ["Ingress"]},
}


def cn_cnp(name: str, tier: str, rule: dict) -> dict:
    """An audited ClusterNetworkPolicy on namespace cn's "web" pod, one ingress rule."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, "annotations": {"ovsctl.io/audit": "true"}},
        "spec": {
            "tier": tier,
            "priority": 10,
            "subject": {
                "pods": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cn"}},
                    "podSelector": {"matchLabels": {"app": "web"}},
                }
            },
            "ingress": [rule],
        },
    }


CN = {"matchLabels": {"kubernetes.io/metadata.name": "cn"}}
CN_DENY = cn_cnp(
    "cn-deny",
    "Admin",
    {
        "name": "from-bad",
        "action": "Deny",
        "from": [
            {"pods": {"namespaceSelector": CN, "podSelector": {"matchLabels": {"app": "bad"}}}}
        ],
    },
)
CN_BASE = cn_cnp(
    "cn-base", "Baseline", {"name": "cn-in", "action": "Accept", "from": [{"namespaces": CN}]}
)


@pytest.fixture(scope="module")
def lab(make_lab):
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "au"}},
        pod("srv", "node0", "srv"),
        pod("bad", "node0", "bad"),
        pod("db", "node0", "db"),
        pod("ok", "node1", "ok"),
        GUARD,
        GUARD2,
        QUIET,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cn"}},
        pod("cweb", "node1", "web", "cn"),
        pod("cbad", "node1", "bad", "cn"),
        pod("cgood", "node1", "good", "cn"),
        CN_DENY,
        CN_BASE,
    ]
    return make_lab(2, yaml.safe_dump_all(docs))


@pytest.fixture(scope="module")
def ips(lab):
    return {p["name"]: p["ip"] for p in lab.status()["pods"]}


def lab_cli(lab, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", *args[:1], "--name", lab.name, *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def audit_lines(lab, node: str) -> list[str]:
    try:
        with open(lab.audit_log(node)) as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


def connect(
    lab, src: str, host: str, sport: int, timeout: float = 1.0, namespace: str = "au"
) -> str:
    return in_ns(
        lab.pod_netns(f"{namespace}/{src}"),
        sys.executable,
        "-c",
        CONNECT,
        host,
        "80",
        str(sport),
        str(timeout),
    ).stdout.strip()


def flow_packets(lab, node: str, policy: str, table: str) -> int:
    p = lab_cli(lab, "flows", node, "--policy", policy, "--table", table, "--json")
    assert p.returncode == 0, p.stderr
    return sum(r["packets"] for r in json.loads(p.stdout))


def node_status(lab, node: str) -> dict:
    p = lab_cli(lab, "node-status", node, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_audit_logs_an_allowed_and_a_dropped_connection(lab, ips):
    srv = ips["srv"]
    sport = 40000 + int(uid(3), 16) % 5000
    assert wait_for(lambda: connect(lab, "ok", srv, sport) == "open", 20, what="ok -> srv open")
    allow = (
        f"policy=au/guard rule=ingress/0 verdict=allow proto=tcp "
        f"src={ips['ok']}:{sport} dst={srv}:80"
    )
    line = wait_for(
        lambda: next((x for x in audit_lines(lab, "node0") if x.endswith(allow)), None),
        5,
        what=f"audit line '{allow}'",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ " + re.escape(allow), line), line
    assert connect(lab, "bad", srv, sport + 1) == "blocked"
    drop = (
        f"policy=au/guard rule=ingress/isolation verdict=drop proto=tcp "
        f"src={ips['bad']}:{sport + 1} dst={srv}:80"
    )
    wait_for(
        lambda: any(x.endswith(drop) for x in audit_lines(lab, "node0")),
        5,
        what=f"audit line '{drop}'",
    )
    # a retransmitted SYN of the same connection is not logged twice
    assert sum(x.endswith(drop) for x in audit_lines(lab, "node0")) == 1
    # the non-audited policy drops silently: srv -> ok is blocked, no line anywhere. Its drop
    # flow's counter shows the packet was judged on node1; the agent saw no packet-in for it.
    drops_before = flow_packets(lab, "node1", "au/quiet", "IngressDefault")
    pins_before = node_status(lab, "node1")["audit"].get("packet_ins", 0)
    assert connect(lab, "srv", ips["ok"], sport + 2) == "blocked"
    wait_for(
        lambda: flow_packets(lab, "node1", "au/quiet", "IngressDefault") > drops_before,
        30,
        what="the quiet policy's drop counted on node1",
    )
    assert node_status(lab, "node1")["audit"].get("packet_ins", 0) == pins_before
    assert not any("au/quiet" in x for n in ("node0", "node1") for x in audit_lines(lab, n))
    assert not any(f"src={srv}:{sport + 2}" in x for x in audit_lines(lab, "node1"))


def test_flows_name_the_policy_and_pod_and_match_the_desired_state(lab, ips):
    for node in ("node0", "node1"):
        wait_for(
            lambda node=node: lab_cli(lab, "flows", node, "--diff").returncode == 0,
            15,
            what=f"{node}: flows --diff in sync",
        )
        assert lab_cli(lab, "flows", node, "--diff").stdout == ""
    p = lab_cli(lab, "flows", "node0", "--policy", "au/guard", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["owner_name"] for r in rows} == {
        "policy:au/guard/ingress/0",
        "policy:au/guard/isolation",
    }
    drops = [r for r in rows if r["table"] == "IngressDefault"]
    assert [r["match"] for r in drops] == [f"priority=65000,ip,nw_dst={ips['srv']}"]
    meter = re.fullmatch(r"controller\(max_len=128,meter_id=(\d+)\)", drops[0]["actions"])
    assert meter and int(meter[1]) >= 0x10000, drops  # the policy's own meter
    assert drops[0]["packets"] >= 1  # the blocked connection above
    assert any(
        r["table"] == "IngressRule"
        and r["actions"] == f"controller(max_len=128,meter_id={meter[1]}),goto_table:70"
        for r in rows
    )
    other = json.loads(lab_cli(lab, "flows", "node0", "--policy", "au/guard2", "--json").stdout)
    assert other and f"meter_id={meter[1]}" not in " ".join(r["actions"] for r in other)
    quiet = json.loads(lab_cli(lab, "flows", "node1", "--policy", "au/quiet", "--json").stdout)
    assert [(r["table"], r["actions"]) for r in quiet] == [("IngressDefault", "drop")]
    mine = json.loads(lab_cli(lab, "flows", "node0", "--pod", "au/srv", "--json").stdout)
    names = {r["owner_name"] for r in mine}
    assert {"pod:au/srv", "policy:au/guard/ingress/0", "policy:au/guard/isolation"} <= names
    assert "pod:au/bad" not in names
    st = node_status(lab, "node0")
    assert st["audit"]["meter"] is True and st["audit"]["rate"] == RATE
    assert st["audit"]["log"] == lab.audit_log("node0")
    assert [p["node"] for p in st["peers"]] == ["node1"]
    assert {(p["namespace"], p["name"]) for p in st["pods"]} == {
        ("au", "srv"),
        ("au", "bad"),
        ("au", "db"),
    }
    human = lab_cli(lab, "node-status", "node0")
    assert human.returncode == 0 and "ready: ok" in human.stdout


def test_a_flood_is_logged_at_its_policys_rate_and_hides_no_other_policy(lab, ips, tmp_path):
    srv, bad, db = ips["srv"], ips["bad"], ips["db"]
    before = len(audit_lines(lab, "node0"))
    pins_before = node_status(lab, "node0")["audit"].get("packet_ins", 0)
    statuses: list[bool] = []
    stop = threading.Event()
    late = tmp_path / "late.yaml"
    late.write_text(yaml.safe_dump(pod("late", "node0", "late")))
    during: dict = {"other": [], "added": False}
    errors: list[BaseException] = []

    def cni_status():
        env = kubelet.cni_env("STATUS", "", "", "")
        conf = json.dumps(kubelet.netconf(lab.socket("node0"), "1.1.0"))
        while not stop.is_set():
            statuses.append(kubelet.run(env, conf, timeout=30).returncode == 0)
            stop.wait(0.1)  # pacing, not synchronisation

    def while_flooding():
        """Once the flood reaches the agent: ok opens connections to db (another audited
        policy, guard2), and a pod is added on the flooded node."""
        try:
            wait_for(
                lambda: node_status(lab, "node0")["audit"].get("packet_ins", 0) > pins_before + 50,
                30,
                what="the flood reaching the agent",
            )
            for _ in range(3):
                sport = 20000 + int(uid(4), 16) % 20000
                during["other"].append((sport, connect(lab, "ok", db, sport, 5.0)))
            lab.apply([str(late)], log=lambda *_: None)
            during["added"] = True
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=cni_status), threading.Thread(target=while_flooding)]
    for t in threads:
        t.start()
    try:
        out = in_ns(
            lab.pod_netns("au/bad"),
            sys.executable,
            "-c",
            FLOOD,
            bad,
            srv,
            "80",
            "2000",
            "4",
            timeout=60,
        ).stdout.split()
    finally:
        threads[1].join(120)
        stop.set()
        threads[0].join(60)
    assert not errors, errors
    sent, secs = int(out[0]), float(out[1])
    assert sent >= 10 * RATE, out  # a flood: many times what one policy may log

    # guard2's connections during the flood were logged: the flood spent guard's budget only
    assert during["other"] and all(r == "open" for _sp, r in during["other"]), during
    for sport, _ in during["other"]:
        want = f"policy=au/guard2 rule=ingress/0 verdict=allow proto=tcp src={ips['ok']}:{sport}"
        wait_for(
            lambda want=want: any(want in x for x in audit_lines(lab, "node0")),
            30,
            what=f"'{want}' logged during guard's flood",
        )

    # a marker after the flood: once its line is written, every earlier packet-in has been
    # handled (one OpenFlow connection, one writer thread, in order)
    def marker() -> bool:
        sp = 50000 + int(uid(4), 16) % 10000
        connect(lab, "bad", srv, sp)
        return wait_for(
            lambda: any(f"src={bad}:{sp} " in x + " " for x in audit_lines(lab, "node0")),
            3,
            what="the marker",
        )

    wait_for(lambda: _try(marker), 60, what="a marker connection logged after the flood")
    new = [x for x in audit_lines(lab, "node0")[before:] if f"src={bad}:" in x]
    assert all("policy=au/guard rule=ingress/isolation verdict=drop" in x for x in new)
    bound = RATE * (secs + 2) + 50  # the meter and the token bucket: rate/s, plus their bursts
    assert RATE // 2 <= len(new) <= bound, (len(new), sent, secs)
    # the switch's meter did the limiting: most SYNs never reached the agent
    pins = node_status(lab, "node0")["audit"]["packet_ins"] - pins_before
    print(f"flood: {sent} SYNs in {secs:.2f}s, {pins} packet-ins, {len(new)} lines")
    assert pins <= bound + 3 * len(during["other"]) + 20, (pins, sent)
    # CNI answered all along, and a pod was added in the middle of the flood
    assert statuses and all(statuses), statuses.count(False)
    assert during["added"]
    assert connect(lab, "ok", srv, 45000 + int(uid(3), 16) % 5000) == "open"


def _try(fn) -> bool:
    try:
        return bool(fn())
    except AssertionError:
        return False


def test_audited_cluster_network_policies_log_their_rules(lab, ips):
    """(All three pods on node1: node0's pods are the other tests'.) An audited Admin Deny
    logs the drop, an audited Baseline Accept the connection it allows; each line names the ClusterNetworkPolicy, tier, rule index and name, action and
    verdict, once per connection."""
    web = ips["cweb"]
    sport = 45000 + int(uid(3), 16) % 5000
    assert wait_for(
        lambda: connect(lab, "cgood", web, sport, namespace="cn") == "open",
        20,
        what="cn/cgood -> cn/cweb open",
    )
    accept = (
        "policy=cnp/cn-base tier=Baseline rule=ingress/0 name=cn-in action=Accept "
        f"verdict=allow proto=tcp src={ips['cgood']}:{sport} dst={web}:80"
    )
    line = wait_for(
        lambda: next((x for x in audit_lines(lab, "node1") if x.endswith(accept)), None),
        5,
        what=f"audit line '{accept}'",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ " + re.escape(accept), line), line
    assert connect(lab, "cbad", web, sport + 1, namespace="cn") == "blocked"
    deny = (
        "policy=cnp/cn-deny tier=Admin rule=ingress/0 name=from-bad action=Deny "
        f"verdict=drop proto=tcp src={ips['cbad']}:{sport + 1} dst={web}:80"
    )
    wait_for(
        lambda: any(x.endswith(deny) for x in audit_lines(lab, "node1")),
        5,
        what=f"audit line '{deny}'",
    )
    # the retransmitted SYNs of the refused connection: one line
    assert sum(x.endswith(deny) for x in audit_lines(lab, "node1")) == 1
    # the Admin Deny decided before the Baseline: no Baseline line for cbad
    assert not any(
        f"src={ips['cbad']}:{sport + 1} " in x and "cn-base" in x for x in audit_lines(lab, "node1")
    )
    # each audited policy's flows name its own meter, and the agent put it on the switch
    meters = lab.ovs("node1").ofctl("dump-meters", "br-int")
    ids = []
    for name in ("cn-deny", "cn-base"):
        p = lab_cli(lab, "flows", "node1", "--policy", f"cnp/{name}", "--json")
        assert p.returncode == 0, p.stderr
        found = {
            m for r in json.loads(p.stdout) for m in re.findall(r"meter_id=(\d+)", r["actions"])
        }
        assert len(found) == 1, (name, found)
        ids += found
        assert f"meter={ids[-1]} pktps" in meters, meters
    assert ids[0] != ids[1]
