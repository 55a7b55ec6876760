"""The agent's incremental policy/Service caches (agent/reconcile/) give exactly what a full
recomputation gives, after every step of a random sequence of pod, attachment, namespace,
policy and Service changes (mirrors tests/unit/test_incremental.py, one level up: the
reconciler's caches instead of flows/incremental.py alone)."""

from __future__ import annotations

import copy
import random
import types

import pytest

from flows import netpol, policy
from ovsctl.agent.pods import Attachment, PodStore
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.changes import Objects
from ovsctl.agent.reconcile.policy import PolicyReconciler
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.k8s import model
from tests.netpol_reference import random_case
from tests.unit.test_incremental import NS, pod_dict

CIDR = "10.0.0.0/24"
LABELS = [{"app": "a"}, {"app": "b"}, {"app": "a", "tier": "t"}, {}]


def _obj(d: dict, kind: str, api: str = "v1"):
    return model.parse({"apiVersion": api, "kind": kind, **d})


def _svc(name: str, ns: str, app: str, ip: str):
    return _obj(
        {
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "selector": {"app": app}, "ports": [{"port": 80}]},
        },
        "Service",
    )


def _reconciler(cluster: dict, store: PodStore) -> PolicyReconciler:
    skip = SkipLog()
    return PolicyReconciler(cluster, store, ServiceReconciler(cluster, CIDR, skip), skip)


def _full(cluster: dict, store: PodStore, slots: dict) -> dict:
    fresh = _reconciler(cluster, store)
    fresh.slots = dict(slots)  # the same slot numbers: flows compare exactly
    return {o: f for o, f in fresh.owners().items() if f}


def _attach(store: PodStore, pod, n: int) -> None:
    """Pod `pod` attached on this node (its addresses as IPAM gave them)."""
    att = Attachment(
        f"c{n}", "eth0", pod.namespace, pod.name, "", "/x", f"ovs{n}", pod.ip, "0a:58:00:00:00:01"
    )
    att.ips = tuple(pod.ips)
    att.ofport = n + 10
    store.put(att)


def _dual(d: dict, on: bool) -> dict:
    """The pod dict dual-stack (status.podIPs with an IPv6 twin of its IPv4 address)."""
    if on:
        ip = d["status"]["podIP"]
        d["status"]["podIPs"] = [{"ip": ip}, {"ip": "fd00::" + ip.replace(".", ":")}]
    return d


def _slice(name: str, svc: str, ips: list[str]):
    return _obj(
        {
            "metadata": {
                "name": name,
                "namespace": "x",
                "labels": {"kubernetes.io/service-name": svc},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        },
        "EndpointSlice",
        "discovery.k8s.io/v1",
    )


# tracked: the agent's cluster dict, which records the keys written (changes.Objects); a plain
# dict makes the reconcilers find the changes by comparing (the same answer, walking)
@pytest.mark.parametrize("tracked", [False, True], ids=["dict", "tracked"])
@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
@pytest.mark.parametrize("seed", range(40))
def test_incremental_caches_equal_a_full_recomputation(seed, dual, tracked):
    rng = random.Random(seed)
    dicts = [
        _dual(pod_dict(ns, f"p{i}", rng.choice(LABELS), f"10.0.{j}.{i + 2}"), dual)
        for j, ns in enumerate(("x", "y", "z"))
        for i in range(3)
    ]
    cluster: dict = Objects() if tracked else {}
    store = PodStore()
    for n in NS:
        o = _obj(copy.deepcopy(n), "Namespace")
        cluster[o.key] = o
    bodies: dict = {}  # each Pod's dict, to change it
    for i, d in enumerate(dicts):
        o = _obj(copy.deepcopy(d), "Pod")
        cluster[o.key], bodies[o.key] = o, d
        if i % 3 == 0:  # one pod of each namespace on this node from the start
            _attach(store, o, 100 + i)
    pols = [_obj(p, "NetworkPolicy", "networking.k8s.io/v1") for p in random_case(seed, NS, dicts)]
    for p in pols:
        cluster[p.key] = p
    for i, app in enumerate(("a", "b")):
        s = _svc(f"s{app}", "x", app, f"10.96.0.{i + 10}")
        cluster[s.key] = s
    inc = _reconciler(cluster, store)
    state: dict = {}

    def step() -> None:
        for owner, flows in inc.owners().items():
            if flows:
                state[owner] = flows
            else:
                state.pop(owner, None)
        assert state == _full(cluster, store, inc.slots), f"seed {seed}: caches went stale"

    def change(n: int, kind: str) -> None:
        pods = [k for k in cluster if k[0] == "Pod"]
        if kind in ("labels", "ip") and pods:
            d = copy.deepcopy(bodies[rng.choice(pods)])
            if kind == "labels":
                d["metadata"]["labels"] = rng.choice(LABELS)
            else:
                d["status"]["podIP"] = f"10.0.5.{n + 2}"
                d["status"].pop("podIPs", None)
                _dual(d, dual)
            o = _obj(d, "Pod")
            cluster[o.key], bodies[o.key] = o, d
        elif kind == "gone" and pods:
            cluster.pop(rng.choice(pods))
        elif kind == "new":
            d = _dual(
                pod_dict(rng.choice("xyz"), f"n{n}", rng.choice(LABELS), f"10.0.6.{n + 2}"), dual
            )
            o = _obj(d, "Pod")
            cluster[o.key], bodies[o.key] = o, d
        elif kind == "local" and pods:
            _attach(store, cluster[rng.choice(pods)], n)
        elif kind == "unplug" and store.pods:
            store.forget(rng.choice(sorted(store.pods)))
        elif kind == "ns":
            d = copy.deepcopy(rng.choice(NS))
            d["metadata"]["labels"] = {"team": rng.choice(["red", "blue", "green"])}
            o = _obj(d, "Namespace")
            cluster[o.key] = o
        elif kind == "policy":
            have = [k for k in cluster if k[0] == "NetworkPolicy"]
            if have and rng.random() < 0.5:
                cluster.pop(rng.choice(have))
            else:
                p = rng.choice(pols)
                cluster[p.key] = p
        elif kind == "svc":
            if ("Service", "x", "sa") in cluster:
                cluster.pop(("Service", "x", "sa"))
            else:
                s = _svc("sa", "x", "a", "10.96.0.10")
                cluster[s.key] = s
        elif kind == "slice":  # sb's endpoints from a slice, changed, or from its selector
            if ("EndpointSlice", "x", "sb-1") in cluster and rng.random() < 0.3:
                cluster.pop(("EndpointSlice", "x", "sb-1"))
            else:
                ips = rng.sample([f"10.0.{j}.{i + 2}" for j in range(3) for i in range(3)], 2)
                o = _slice("sb-1", "sb", ips)
                cluster[o.key] = o

    step()
    kinds = ["labels", "ip", "gone", "new", "local", "unplug", "ns", "policy", "svc", "slice"]
    for n in range(12):
        # one change, or several seen by one computation (as one event batch is)
        for kind in rng.choices(kinds, k=rng.choice([1, 1, 3])):
            change(n, kind)
        step()


def test_services_return_node_port_rules_and_only_the_host_writes_them():
    cluster: dict = {}
    svc = _obj(
        {
            "metadata": {"name": "np", "namespace": "x"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.7",
                "selector": {"app": "a"},
                "ports": [{"port": 80, "nodePort": 30080}],
            },
        },
        "Service",
    )
    cluster[svc.key] = svc
    written: list[set] = []
    rec = _reconciler(cluster, PodStore())
    rec.on_node_ports = written.append
    owners = rec.owners()  # a computation alone writes nothing
    assert "service/x/np" in owners and written == []
    assert rec.node_ports and all(30080 in entry for entry in rec.node_ports)
    rec.sync = types.SimpleNamespace(set_owner=lambda o, f: set())
    rec.apply(push=False)
    assert written == [rec.node_ports]


def test_dual_stack_pods_feed_both_addresses():
    """Remote pods give every address of status.podIPs, local attachments every address IPAM
    gave them: the policy's flows hold both families."""
    cluster: dict = {}
    store = PodStore()
    for n in NS:
        o = _obj(copy.deepcopy(n), "Namespace")
        cluster[o.key] = o
    for name, ip4, ip6 in (("a", "10.0.0.2", "fd00::2"), ("b", "10.0.1.2", "fd00:0:0:1::2")):
        d = pod_dict("x", name, {"app": name}, ip4)
        d["status"]["podIPs"] = [{"ip": ip4}, {"ip": ip6}]
        o = _obj(d, "Pod")
        cluster[o.key] = o
    pol = _obj(
        {
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
            },
        },
        "NetworkPolicy",
        "networking.k8s.io/v1",
    )
    cluster[pol.key] = pol
    att = Attachment("c1", "eth0", "x", "a", "", "/x", "ovs1", "10.0.0.2", "0a:58:00:00:00:01")
    att.ips = ("fd00::2", "10.0.0.2")  # as IPAM recorded them (any order: IPv4 comes first)
    att.ofport = 5
    store.put(att)
    rec = _reconciler(cluster, store)
    view = rec.view()
    assert {p.name: p.addrs for p in view.pods} == {
        "a": ("10.0.0.2", "fd00::2"),
        "b": ("10.0.1.2", "fd00:0:0:1::2"),
    }
    # the flows of that view (rec.owners() also checks that they encode: the encoder's part)
    parsed = netpol.parse(pol.obj())
    texts = sorted(
        str(f) for fs in policy.policy_flows(parsed, view, rec.slot).values() for f in fs
    )
    assert any("ipv6_src=fd00:0:0:1::2 actions=conjunction" in t for t in texts), texts
    assert any("ipv6_dst=fd00::2 actions=conjunction" in t for t in texts), texts
    assert "[IngressDefault] priority=1000,ipv6,ipv6_dst=fd00::2 actions=drop" in texts
    assert "[IngressDefault] priority=1000,ip,nw_dst=10.0.0.2 actions=drop" in texts
    # and they encode: the reconciler programs them (nothing skipped)
    owned = rec.owners()
    assert rec.skip.seen == {}, rec.skip.seen
    assert "[IngressDefault] priority=1000,ipv6,ipv6_dst=fd00::2 actions=drop" in {
        str(f) for f in owned["policy/x/p/isolation"]
    }
