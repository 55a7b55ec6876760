"""ClusterNetworkPolicy in the lab: real OVS (userspace datapath), real network namespaces, real
packets. Two nodes; namespaces x, y, z with pods a and b each. Pod a declares http=TCP 80,
alt=TCP 81, dns=UDP 53; pod b declares web=TCP 80, http=TCP 81, dns=UDP 53 (so the named port
"http" is 80 on a and 81 on b). Every scenario applies its objects with `ovsctl lab apply -f`
(as an operator does), probes the whole matrix (every pod to every other pod on every declared
port; for egress scenarios also every pod to the external host and to every node) and compares
it with the matrix the independent reference evaluator (tests/cnp_reference.py) computes, after
checking the scenario's point (a few hand-written verdicts) against that reference; then it
deletes them with `ovsctl lab delete -f`, also on failure."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ovsctl.lab.base import RESPONDER, spawn
from tests import cnp_reference as ref
from tests.e2e.test_netpol import converge, diff, netpol
from tests.helpers import REPO, wait_for

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b")
PORTS = {
    "a": [("http", 80, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP")],
    "b": [("web", 80, "TCP"), ("http", 81, "TCP"), ("dns", 53, "UDP")],
}
NODE_PORT = 7070  # a responder this module starts in every node's netns (TCP)
EXT_PORT = 8080  # the lab's external host answers on TCP and UDP 8080


# -- objects --------------------------------------------------------------------------------


def ns_doc(ns: str, extra: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"ns": ns, **(extra or {})}},
    }


def pod_doc(ns: str, name: str, ips: list[str] = (), node: str | None = None, labels=None) -> dict:
    ports = [{"name": n, "containerPort": p, "protocol": pr} for n, p, pr in PORTS[name]]
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"pod": name}},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": ports}]},
    }
    if node:
        doc["spec"]["nodeName"] = node
    if ips:
        doc["status"] = {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
    return doc


def cnp(name: str, tier: str, priority: int, subject: dict, ingress=None, egress=None) -> dict:
    spec = {"tier": tier, "priority": priority, "subject": subject}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def nss(*names: str) -> dict:
    """A namespace selector for these namespaces (by the label every namespace carries)."""
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}
        ]
    }


ALL_NS = {"namespaces": {}}


# -- the lab --------------------------------------------------------------------------------


def cluster_yaml() -> str:
    docs = []
    for ns in NAMESPACES:
        docs += [ns_doc(ns)] + [pod_doc(ns, p) for p in PODS]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, cluster_yaml())


@pytest.fixture(scope="module")
def world(lab):
    yield from make_world(lab, NAMESPACES, PODS)


def make_world(lab, spaces, pod_names):
    """(A fixture's generator.) The lab's pods and nodes in Kubernetes shape for the reference
    (every address of every family), and a responder on TCP NODE_PORT in every node's netns
    (so pods can probe node addresses), stopped after."""
    st = lab.status()
    where = {f"{p['namespace']}/{p['name']}": p for p in st["pods"]}
    assert len({p["node"] for p in st["pods"]}) == 2, "pods must spread over both nodes"
    meta = lab.meta()
    pids = [
        spawn(
            meta["nodes"][n["name"]]["netns"],
            [sys.executable, RESPONDER, "--tag", lab.dir, "--tcp", str(NODE_PORT)],
            os.path.join(lab.dir, f"node-responder-{n['name']}.log"),
        )
        for n in st["nodes"]
    ]
    keys = [f"{ns}/{p}" for ns in spaces for p in pod_names]
    w = {
        "lab": lab,
        "spaces": spaces,
        "labels": {ns: {} for ns in spaces},  # extra namespace labels (relabel tests)
        "pods": [pod_doc(*k.split("/"), where[k]["ips"], where[k]["node"]) for k in keys],
        "nodes": [  # the lab's Node objects, as the agents read them
            yaml.safe_load(Path(lab.cluster_dir, f"Node-{n['name']}.yaml").read_text())
            for n in st["nodes"]
        ],
        "node_of": {k: where[k]["node"] for k in keys},
        "ip_of": {k: where[k]["ip"] for k in keys},
        "node_ip": {n["name"]: n["ip"] for n in st["nodes"]},
        "node_ips": {n["name"]: n["ips"] for n in st["nodes"]},
        "external": st["external"]["ip"],
        "externals": st["external"]["ips"],
    }
    try:
        # every node's responder answers (from its own node's pods, which always may reach it)
        for n in st["nodes"]:
            pod = next(k for k, v in w["node_of"].items() if v == n["name"])
            target = [(ip, NODE_PORT, "TCP") for ip in n["ips"]]
            wait_for(lambda p=pod, t=target: all(probe_targets(w, p, t).values()), 10, 0.05,
                     f"the responder on {n['name']}")  # fmt: skip
        yield w
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)


def namespaces(world) -> list[dict]:
    return [{"metadata": ns_doc(ns, world["labels"][ns])["metadata"]} for ns in world["spaces"]]


def lab_cli(lab, *args: str) -> subprocess.CompletedProcess:
    """`ovsctl lab COMMAND --name LAB ARGS...`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ovsctl.cli", "lab", args[0], "--name", lab.name, *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def write_list(path, objs: list[dict]) -> str:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objs}))
    return str(path)


def cli_apply(lab, path: str) -> subprocess.CompletedProcess:
    res = lab_cli(lab, "apply", "-f", path)
    assert res.returncode == 0, res.stderr
    return res


@contextlib.contextmanager
def applied(lab, tmp_path, objs: list[dict], name: str = "objects"):
    """The objects applied (one `kind: List` file) for the duration; deleted after, also on
    failure."""
    path = write_list(tmp_path / f"{name}.yaml", objs)
    cli_apply(lab, path)
    try:
        yield path
    finally:
        res = lab_cli(lab, "delete", "-f", path)
        assert res.returncode == 0, res.stderr


# -- probing --------------------------------------------------------------------------------


def expected(world, policies=(), cnps=(), family: int | None = None) -> dict[str, bool]:
    return ref.evaluate(
        namespaces(world), world["pods"], list(policies), list(cnps), world["nodes"], family
    )


def check(world, want: dict, points: dict[str, bool]) -> None:
    """The scenario's point, written by hand, agrees with the reference; then the datapath."""
    assert {k: want[k] for k in points} == points, "the reference disagrees with the scenario"
    assert not all(want.values()), "a matrix with nothing blocked cannot tell a policy apart"
    got = converge(world["lab"], want)
    assert got == want, diff(got, want)


def probe_targets(world, pod: str, targets, want=None, timeout: float = 1.0) -> dict:
    """Probes from `pod` to (ip, port, proto) targets: {"ns/pod->IP:PORT/PROTO": bool}."""
    lab = world["lab"]
    todo = [
        {
            "key": f"{pod}->{ipaddress.ip_address(ip)}:{port}/{proto}",
            "ip": ip,
            "port": port,
            "proto": proto,
        }
        for ip, port, proto in targets
    ]
    got = lab._run_prober(lab.pod_netns(pod), todo, timeout, pod)
    if want is not None:
        assert all(v == want for v in got.values()), got
    return got


def egress_targets(world) -> list[tuple[str, int, str]]:
    return [(world["external"], EXT_PORT, "TCP"), (world["external"], EXT_PORT, "UDP")] + [
        (ip, NODE_PORT, "TCP") for ip in world["node_ip"].values()
    ]


def converge_egress(world, want: dict, targets=None, timeout: float = 20.0) -> dict:
    """Probe every pod to every (ip, port, proto) of `targets` (default egress_targets) until
    the matrix equals `want`; the last matrix."""
    targets = egress_targets(world) if targets is None else targets
    lab, pods = world["lab"], sorted(world["ip_of"])
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        while True:
            lab.flush_conntrack()
            got = {}
            for part in pool.map(lambda pod: probe_targets(world, pod, targets), pods):
                got.update(part)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.2)


# -- scenarios ------------------------------------------------------------------------------


def test_admin_deny_overrides_a_network_policy_allow(world, tmp_path):
    """x allows every ingress by NetworkPolicy; an Admin Deny from y still drops y -> x (one
    `kind: List` holding both)."""
    objs = [
        netpol("allow-all", "x", {"podSelector": {}, "ingress": [{}]}),
        cnp("deny-y-to-x", "Admin", 10, {"namespaces": nss("x")},
            ingress=[{"name": "from-y", "action": "Deny", "from": [{"namespaces": nss("y")}]}]),
    ]  # fmt: skip
    want = expected(world, objs[:1], objs[1:])
    with applied(world["lab"], tmp_path, objs):
        check(world, want, {"y/a->x/a:80/TCP": False, "y/b->x/b:53/UDP": False,
                            "z/a->x/a:80/TCP": True, "x/b->x/a:81/TCP": True,
                            "x/a->y/a:80/TCP": True})  # fmt: skip
        res = lab_cli(world["lab"], "probe", "--json", "--timeout", "1")
        assert res.returncode == 0, res.stderr
        got = yaml.safe_load(res.stdout)
        assert got == want, "lab probe --json: " + diff(got, want)


def test_admin_accept_overrides_a_network_policy_deny(world, tmp_path):
    """x denies every ingress by NetworkPolicy; an Admin Accept lets z in on TCP 80 only."""
    objs = [
        netpol("deny-all", "x", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        cnp("accept-z-80", "Admin", 10, {"namespaces": nss("x")},
            ingress=[{"action": "Accept", "from": [{"namespaces": nss("z")}],
                      "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]),
    ]  # fmt: skip
    want = expected(world, objs[:1], objs[1:])
    with applied(world["lab"], tmp_path, objs):
        check(world, want, {"z/a->x/a:80/TCP": True, "z/b->x/b:80/TCP": True,
                            "z/a->x/a:81/TCP": False, "z/a->x/b:53/UDP": False,
                            "y/a->x/a:80/TCP": False, "x/b->x/a:80/TCP": False})  # fmt: skip


def test_admin_pass_hands_over_to_network_policy_then_baseline(world, tmp_path):
    """An Admin Pass of y's traffic (before an Admin Deny of it) hands the decision to x's
    NetworkPolicy (which allows y/a only) and, where no NetworkPolicy selects (y, z), to a
    Baseline Deny of y. Also `lab reachability` (traced, nothing sent) agrees."""
    objs = [
        cnp("pass-y", "Admin", 5, ALL_NS,
            ingress=[{"action": "Pass", "from": [{"namespaces": nss("y")}]}]),
        cnp("deny-y", "Admin", 10, ALL_NS,
            ingress=[{"action": "Deny", "from": [{"namespaces": nss("y")}]}]),
        cnp("baseline-deny-y", "Baseline", 10, ALL_NS,
            ingress=[{"action": "Deny", "from": [{"namespaces": nss("y")}]}]),
        netpol("from-y-a", "x", {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}},
             "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    ]  # fmt: skip
    want = expected(world, objs[3:], objs[:3])
    with applied(world["lab"], tmp_path, objs):
        check(world, want, {"y/a->x/a:80/TCP": True, "y/a->x/b:53/UDP": True,
                            "y/b->x/a:80/TCP": False, "z/a->x/a:80/TCP": False,
                            "y/a->z/a:80/TCP": False, "y/a->y/b:80/TCP": False,
                            "x/a->z/b:81/TCP": True, "z/a->y/a:53/UDP": True})  # fmt: skip
        res = lab_cli(world["lab"], "reachability", "--json")
        assert res.returncode == 0, res.stderr
        traced = yaml.safe_load(res.stdout)
        traced = traced.get("traced", traced)
        assert traced == want, "lab reachability: " + diff(traced, want)


def test_baseline_deny_only_where_no_network_policy_selects(world, tmp_path):
    """A Baseline Deny of all ingress everywhere: y's NetworkPolicy (from x) and z/a's (from
    anywhere) decide for the pods they select; the others (x, z/b) get the Baseline Deny."""
    objs = [
        cnp("baseline-deny-all", "Baseline", 50, ALL_NS,
            ingress=[{"action": "Deny", "from": [ALL_NS]}]),
        netpol("from-x", "y", {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
        netpol("z-a-open", "z", {"podSelector": {"matchLabels": {"pod": "a"}},
                                 "ingress": [{}]}),
    ]  # fmt: skip
    want = expected(world, objs[1:], objs[:1])
    with applied(world["lab"], tmp_path, objs):
        check(world, want, {"x/a->y/b:81/TCP": True, "z/a->y/a:80/TCP": False,
                            "y/a->z/a:80/TCP": True, "x/b->z/a:53/UDP": True,
                            "y/a->z/b:80/TCP": False, "z/a->x/a:80/TCP": False,
                            "x/a->x/b:80/TCP": False})  # fmt: skip


POLLER = r"""
import socket, sys, time
ip, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        with socket.create_connection((ip, port), timeout=0.1) as s:
            s.settimeout(0.5)
            if s.recv(64):
                print(time.monotonic(), flush=True)
                sys.exit(0)
    except OSError:
        time.sleep(0.005)
print("timeout", flush=True)
sys.exit(1)
"""


def test_priority_change_flips_a_verdict(world, tmp_path, record_property):
    """An Admin Deny of y -> x at priority 20 wins over an Admin Accept at 30; re-applying the
    Deny (same name) at priority 40 lets the Accept decide. A poller in y/a connects to x/a
    every few ms: the time from `lab apply` returning to the first new connection accepted is
    the datapath's reaction time (agents reading the YAML state directory)."""
    priority_flip(world, tmp_path, record_property, "YAML source")


def priority_flip(world, tmp_path, record_property, what: str) -> None:
    lab = world["lab"]

    def deny(priority):
        return cnp("flip-deny", "Admin", priority, {"namespaces": nss("x")},
                   ingress=[{"action": "Deny", "from": [ALL_NS]}])  # fmt: skip

    accept = cnp("flip-accept", "Admin", 30, {"namespaces": nss("x")},
                 ingress=[{"action": "Accept", "from": [{"namespaces": nss("y")}]}])  # fmt: skip
    before = expected(world, (), [deny(20), accept])
    after = expected(world, (), [deny(40), accept])
    point = "y/a->x/a:80/TCP"
    assert before[point] is False and after[point] is True
    with applied(lab, tmp_path, [deny(20), accept], "first"):
        check(world, before, {point: False, "z/a->x/a:80/TCP": False})
        poller = subprocess.Popen(
            ["ip", "netns", "exec", lab.pod_netns("y/a"), sys.executable, "-c", POLLER,
             world["ip_of"]["x/a"], "80", "30"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert poller.stdout.readline().strip() == "ready"
            started = time.monotonic()
            cli_apply(lab, write_list(tmp_path / "second.yaml", [deny(40)]))
            returned = time.monotonic()
            out, _ = poller.communicate(timeout=40)
        finally:
            if poller.poll() is None:
                poller.kill()
                poller.wait()
        assert poller.returncode == 0, f"y/a never reached x/a after the change: {out}"
        flipped = float(out.split()[-1])
        assert flipped > started, "the poller got through before the change"
        reaction, total = flipped - returned, flipped - started
        record_property("reaction_after_apply_s", round(reaction, 3))
        record_property("reaction_from_apply_start_s", round(total, 3))
        print(f"\npriority change ({what}): apply took {returned - started:.3f} s; new connections "
              f"follow {reaction:.3f} s after it returned ({total:.3f} s from its start)")  # fmt: skip
        got = converge(lab, after)
        assert got == after, diff(got, after)


def test_named_ports_ingress_and_egress(world, tmp_path):
    """destinationNamedPort "http" resolves per destination pod (80 on a, 81 on b): y reaches x
    only on it; z/a's egress reaches only "dns" (UDP 53) on any pod."""
    objs = [
        cnp("x-http-from-y", "Admin", 10, {"namespaces": nss("x")}, ingress=[
            {"action": "Accept", "from": [{"namespaces": nss("y")}],
             "protocols": [{"destinationNamedPort": "http"}]},
            {"action": "Deny", "from": [ALL_NS]}]),
        cnp("z-a-dns-only", "Admin", 11,
            {"pods": {"namespaceSelector": nss("z"), "podSelector": {"matchLabels": {"pod": "a"}}}},
            egress=[{"action": "Accept", "to": [ALL_NS],
                     "protocols": [{"destinationNamedPort": "dns"}]},
                    {"action": "Deny", "to": [ALL_NS]}]),
    ]  # fmt: skip
    want = expected(world, (), objs)
    with applied(world["lab"], tmp_path, objs):
        check(world, want, {"y/a->x/a:80/TCP": True, "y/a->x/a:81/TCP": False,
                            "y/b->x/b:81/TCP": True, "y/b->x/b:80/TCP": False,
                            "y/a->x/b:53/UDP": False, "x/a->x/b:81/TCP": False,
                            "z/a->y/a:53/UDP": True, "z/a->y/a:80/TCP": False,
                            "z/b->y/a:80/TCP": True})  # fmt: skip


def test_egress_to_networks_and_nodes(world, tmp_path):
    """x: pod traffic Passes first; then the external host on TCP 8080 is accepted and
    0.0.0.0/0 denied (the external host's UDP, the nodes). y: every node denied. z: node1
    denied, picked by its kubernetes.io/hostname label. The Admin tier sees a pod's own node
    too (only NetworkPolicy and Baseline cannot block it). Pods still reach each other."""
    ext = world["external"]
    objs = [
        cnp("x-egress", "Admin", 10, {"namespaces": nss("x")}, egress=[
            {"name": "pods-pass", "action": "Pass", "to": [ALL_NS]},
            {"name": "external-web", "action": "Accept", "to": [{"networks": [f"{ext}/32"]}],
             "protocols": [{"tcp": {"destinationPort": {"number": EXT_PORT}}}]},
            {"name": "rest", "action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]),
        cnp("y-no-nodes", "Admin", 20, {"namespaces": nss("y")},
            egress=[{"action": "Deny", "to": [{"nodes": {}}]}]),
        cnp("z-not-node1", "Admin", 30, {"namespaces": nss("z")}, egress=[{"action": "Deny",
            "to": [{"nodes": {"matchLabels": {"kubernetes.io/hostname": "node1"}}}]}]),
    ]  # fmt: skip
    want_pods = expected(world, (), objs)
    assert all(want_pods.values()), "pod traffic is passed (x) or not selected (y, z)"
    want = ref.evaluate_egress(
        namespaces(world), world["pods"], [], objs, world["nodes"], egress_targets(world)
    )
    own = {pod: world["node_ip"][node] for pod, node in world["node_of"].items()}
    node1 = world["node_ip"]["node1"]
    points = {}
    for pod, expect_udp in (("x/a", False), ("y/a", True), ("z/a", True), ("z/b", True)):
        other = next(ip for ip in world["node_ip"].values() if ip != own[pod])
        points[f"{pod}->{ext}:{EXT_PORT}/TCP"] = True
        points[f"{pod}->{ext}:{EXT_PORT}/UDP"] = expect_udp
        points[f"{pod}->{own[pod]}:{NODE_PORT}/TCP"] = pod.startswith("z/") and own[pod] != node1
        points[f"{pod}->{other}:{NODE_PORT}/TCP"] = pod.startswith("z/") and other != node1
    assert {k: want[k] for k in points} == points, "the reference disagrees with the scenario"
    with applied(world["lab"], tmp_path, objs):
        got = converge_egress(world, want)
        assert got == want, diff(got, want)
        got = converge(world["lab"], want_pods)
        assert got == want_pods, diff(got, want_pods)


def all_open(world, cnps, when: str) -> None:
    """The policies select no pod: the reference and the datapath allow everything."""
    want = expected(world, (), cnps)
    assert all(want.values()), f"{when}: the reference blocks something"
    got = converge(world["lab"], want)
    assert got == want, f"{when}: " + diff(got, want)


def test_namespace_relabel_moves_it_in_and_out_of_a_subject(world, tmp_path):
    """A quarantine policy selects namespaces labelled quarantine=yes (none at first): z gets
    the label (isolated both ways), then loses it (open again)."""
    lab = world["lab"]
    objs = [cnp("quarantine", "Admin", 10, {"namespaces": {"matchLabels": {"quarantine": "yes"}}},
                ingress=[{"action": "Deny", "from": [ALL_NS]}],
                egress=[{"action": "Deny", "to": [ALL_NS]}])]  # fmt: skip
    relabel = tmp_path / "relabel.yaml"
    with applied(lab, tmp_path, objs):
        try:
            all_open(world, objs, "before the relabel")

            world["labels"]["z"] = {"quarantine": "yes"}
            cli_apply(lab, write_list(relabel, [ns_doc("z", world["labels"]["z"])]))
            want = expected(world, (), objs)
            check(world, want, {"z/a->z/b:80/TCP": False, "x/a->z/a:80/TCP": False,
                                "z/b->y/a:53/UDP": False, "x/a->y/b:81/TCP": True})  # fmt: skip

            world["labels"]["z"] = {}
            cli_apply(lab, write_list(relabel, [ns_doc("z")]))
            all_open(world, objs, "after the label is gone")
        finally:
            world["labels"]["z"] = {}
            cli_apply(lab, write_list(relabel, [ns_doc("z")]))


def agent_lines(lab, node: str, text: str) -> list[str]:
    with open(lab._log_path(node)) as fh:
        return [ln for ln in fh.read().splitlines() if text in ln]


def test_an_invalid_policy_is_refused_and_a_valid_one_beside_it_works(world, tmp_path):
    """tier "Middle": refused, naming the object and the field, nothing of it installed (its
    Deny of everything into y would show); the valid policy applied with it is enforced."""
    lab = world["lab"]
    bad = cnp("e2e-middle", "Middle", 10, {"namespaces": nss("y")},
              ingress=[{"action": "Deny", "from": [ALL_NS]}])  # fmt: skip
    good = cnp("e2e-valid", "Admin", 10, {"namespaces": nss("x")},
               ingress=[{"action": "Deny", "from": [{"namespaces": nss("z")}]}])  # fmt: skip
    path = write_list(tmp_path / "both.yaml", [bad, good])
    res = lab_cli(lab, "apply", "-f", path)
    try:
        # `lab apply` takes it (it checks no spec, docs/lab.md); every agent refuses it
        assert res.returncode == 0, res.stderr
        for node in lab.meta()["nodes"]:
            found = wait_for(
                lambda n=node: agent_lines(lab, n, "ClusterNetworkPolicy e2e-middle"),
                20, 0.2, f"{node}'s agent refusing e2e-middle",
            )  # fmt: skip
            assert all("spec.tier" in ln for ln in found), found
        want = expected(world, (), [good])
        check(world, want, {"z/a->x/a:80/TCP": False, "y/a->x/a:80/TCP": True,
                            "z/a->y/a:80/TCP": True, "x/a->y/b:80/TCP": True})  # fmt: skip
    finally:
        res = lab_cli(lab, "delete", "-f", path)
        assert res.returncode == 0, res.stderr


HOLDER = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(10)
print("greeting", s.recv(64).decode().strip(), flush=True)
sys.stdin.readline()
s.sendall(b"x" * 100000)
s.shutdown(socket.SHUT_WR)
print("count", s.recv(64).decode().strip(), flush=True)
"""


def test_an_established_connection_outlives_an_admin_deny(world, tmp_path):
    """Stateful, as docs/pipeline.md says: a connection y/a -> x/a accepted before an Admin
    Deny of y -> x keeps working (100 kB sent, the count comes back) while new connections
    from y/a to x/a are dropped."""
    lab = world["lab"]
    holder = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod_netns("y/a"), sys.executable, "-c", HOLDER,
         world["ip_of"]["x/a"], "80"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    objs = [cnp("e2e-deny-y", "Admin", 10, {"namespaces": nss("x")},
                ingress=[{"action": "Deny", "from": [{"namespaces": nss("y")}]}])]  # fmt: skip
    try:
        assert holder.stdout.readline().startswith("greeting "), "no connection before"
        with applied(lab, tmp_path, objs):
            deadline = time.monotonic() + 20
            target = [(world["ip_of"]["x/a"], 80, "TCP")]
            while any(probe_targets(world, "y/a", target, timeout=0.5).values()):
                assert time.monotonic() < deadline, "new connections are still accepted"
            out, _ = holder.communicate("go\n", timeout=30)
            assert "count 100000" in out, f"the established connection broke: {out!r}"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


EXAMPLES = os.path.join(REPO, "examples")


def test_the_example_policies_do_what_they_say(make_lab, tmp_path):
    """examples/cluster-network-policies.yaml on examples/pods.yaml (a lab of its own): the
    whole matrix is the reference's, and says what the file's comments say."""
    with open(os.path.join(EXAMPLES, "pods.yaml")) as fh:
        items = yaml.safe_load(fh)["items"]
    with open(os.path.join(EXAMPLES, "cluster-network-policies.yaml")) as fh:
        cnps = yaml.safe_load(fh)["items"]
    lab = make_lab(2, yaml.safe_dump_all(items))
    where = {(p["namespace"], p["name"]): p for p in lab.status()["pods"]}
    for pod in (o for o in items if o["kind"] == "Pod"):
        at = where[(pod["metadata"]["namespace"], pod["metadata"]["name"])]
        pod["spec"]["nodeName"], pod["status"] = at["node"], {"podIP": at["ip"]}
    spaces = [o for o in items if o["kind"] == "Namespace"]
    pods = [o for o in items if o["kind"] == "Pod"]
    want = ref.evaluate(spaces, pods, [], cnps)
    points = {
        "backend/b1->data/d1:80/TCP": True,
        "backend/b1->data/d1:53/UDP": False,
        "frontend/f1->data/d2:80/TCP": False,
        "data/d1->data/d2:80/TCP": False,
        "frontend/f2->backend/b1:80/TCP": True,
        "frontend/f2->backend/b1:53/UDP": False,
        "backend/b2->backend/b3:53/UDP": True,
        "data/d3->backend/b1:80/TCP": False,
        "data/d3->frontend/f1:53/UDP": True,
    }
    assert {k: want[k] for k in points} == points, "the reference disagrees with the comments"
    res = lab_cli(lab, "apply", "-f", os.path.join(EXAMPLES, "cluster-network-policies.yaml"))
    assert res.returncode == 0, res.stderr
    got = converge(lab, want)
    assert got == want, diff(got, want)
