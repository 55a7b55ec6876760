"""Which external addresses a Service may take (flows/service_guard.py) and what the agent's
Service reconciler does with the verdict: refused addresses get neither frontends nor host
routes (CVE-2020-8554 and worse), the first Service to claim an address:port:protocol keeps
it on every node, a Service whose flows collide with themselves is skipped while the others
install, and one owner the flow sync refuses never stops the round."""

from __future__ import annotations

import logging
import random

import pytest

from flows import service_guard, services
from flows.model import HAIRPIN_IP, NODEPORT_IP6
from flows.service_guard import EXTERNAL_IPS, LB_INGRESS, Facts, refusal, screen
from flows.services import Endpoint, Service, ServicePort
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.policy import PolicyReconciler
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.k8s.objects import Node
from ovsctl.openflow.sync import FlowSync
from tests.fakes.oftable import FakeOFTable, tcp
from tests.unit.test_fake_pipeline_lb import GW, OVERLAY, A, B, C, flows_of
from tests.unit.test_service_external import Obj, view

FACTS = Facts(
    pod_cidrs=("10.244.0.0/16", "fd00:10:244::/56"),
    cluster_ips=frozenset({"10.96.0.10", "fd00:10:96::a"}),
    node_addrs=frozenset({"192.168.50.11", "203.0.113.7", "fd00:192:168:50::11"}),
)


@pytest.mark.parametrize(
    "addr, why",
    [
        ("10.244.3.9", "inside the pod CIDRs"),
        ("fd00:10:244:2::9", "inside the pod CIDRs"),
        ("10.96.0.10", "a Service's ClusterIP"),
        ("fd00:10:96::a", "a Service's ClusterIP"),
        ("192.168.50.11", "a Node's address"),
        ("203.0.113.7", "a Node's address"),  # an ExternalIP of status.addresses
        ("fd00:192:168:50::11", "a Node's address"),
        (HAIRPIN_IP, "ovsctl reserves"),
        (NODEPORT_IP6, "ovsctl reserves"),
        ("fd00:ffff::1:2", "ovsctl reserves"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("224.0.0.5", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
    ],
)
def test_refused_addresses_of_each_kind(addr, why):
    for field in (EXTERNAL_IPS, LB_INGRESS):
        assert why in (refusal(addr, field, FACTS) or "")


def test_ordinary_addresses_are_accepted():
    for addr in ("192.168.60.5", "172.30.0.200", "fd00:172:30::c8"):
        assert refusal(addr, EXTERNAL_IPS, FACTS) is None


def test_allowlist_applies_to_external_ips_only():
    facts = Facts(**{**FACTS.__dict__, "allowed": ("192.168.60.0/24", "fd00:60::/64")})
    assert refusal("192.168.60.5", EXTERNAL_IPS, facts) is None
    assert refusal("fd00:60::5", EXTERNAL_IPS, facts) is None
    assert "outside external_ip_cidrs" in refusal("192.168.61.5", EXTERNAL_IPS, facts)
    assert "outside external_ip_cidrs" in refusal("fd00:61::5", EXTERNAL_IPS, facts)
    assert refusal("172.30.0.200", LB_INGRESS, facts) is None  # the LB controller's
    # the allowlist never lets in what is refused anyway
    wide = Facts(**{**FACTS.__dict__, "allowed": ("0.0.0.0/0",)})
    assert refusal("10.244.3.9", EXTERNAL_IPS, wide) == "inside the pod CIDRs"


def svc(name: str, *ext, ns: str = "shop", port: int = 80, **kw) -> Service:
    kw.setdefault("ports", (ServicePort("http", port, "TCP", 8080),))
    return Service(ns, name, kw.pop("cip", "10.96.0.20"), selector=None, external_ips=ext, **kw)


def test_tie_oldest_wins_then_name_whatever_the_order():
    old = (svc("zz", "192.168.60.5"), "2026-01-01T00:00:00Z")
    new = (svc("aa", "192.168.60.5"), "2026-02-01T00:00:00Z")
    twin = (svc("bb", "192.168.60.5"), "2026-02-01T00:00:00Z")
    other_port = (svc("cc", "192.168.60.5", port=443), "2026-03-01T00:00:00Z")
    undated = (svc("ab", "192.168.60.5"), "")
    everyone = [old, new, twin, other_port, undated]
    first = screen(everyone, FACTS)
    for _ in range(10):
        random.shuffle(everyone)
        assert screen(everyone, FACTS) == first
    assert set(first) == {"shop/aa", "shop/bb", "shop/ab"}  # cc's port 443 is its own
    assert first["shop/aa"].lost == (("192.168.60.5", 80, "TCP", "shop/zz"),)
    assert first["shop/aa"].lost_frontends == {("192.168.60.5", 80, "TCP")}
    # same timestamp: namespace/name decides
    assert screen([new, twin], FACTS)["shop/bb"].lost[0][3] == "shop/aa"
    assert "shop/aa" not in screen([new, twin], FACTS)
    # a Service with a timestamp beats one without
    assert screen([undated, twin], FACTS)["shop/ab"].lost[0][3] == "shop/bb"


def test_udp_and_tcp_on_one_port_are_different_claims():
    tcp_ = (svc("a", "192.168.60.5"), "2026-01-01T00:00:00Z")
    udp_ = (svc("b", "192.168.60.5", ports=(ServicePort("d", 80, "UDP", 53),)), "2026-02-01")
    assert screen([tcp_, udp_], FACTS) == {}


def test_a_refused_address_claims_nothing():
    # the older Service's externalIP is outside the allowlist: the newer one, whose load
    # balancer ingress it is, keeps it
    facts = Facts(**{**FACTS.__dict__, "allowed": ("192.168.60.0/24",)})
    old = (svc("old", "198.51.100.5"), "2026-01-01T00:00:00Z")
    new = (svc("new", type="LoadBalancer", lb_ingress=("198.51.100.5",)), "2026-02-01T00:00:00Z")
    v = screen([old, new], facts)
    assert set(v) == {"shop/old"} and not v["shop/old"].lost
    assert v["shop/old"].refused == (
        (EXTERNAL_IPS, "198.51.100.5", "outside external_ip_cidrs (192.168.60.0/24)"),
    )
    applied = service_guard.apply(old[0], v["shop/old"])
    assert applied.external_ips == () and applied.cluster_ip == "10.96.0.20"


# -- the reconciler ----------------------------------------------------------------------------

LOCAL = "10.244.0.0/24"


def obj(name, ext=(), cip="10.96.0.30", created="", ingress=(), **spec) -> Obj:
    meta = {"namespace": "shop", "name": name}
    if created:
        meta["creationTimestamp"] = created
    body = {
        "metadata": meta,
        "spec": {
            "clusterIP": cip,
            "ports": [{"name": "http", "port": 80}],
            "externalIPs": list(ext),
            **spec,
        },
    }
    if ingress:
        body["spec"]["type"] = "LoadBalancer"
        body["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in ingress]}}
    return Obj(body)


def slice_obj(svc_name: str, *ips) -> Obj:
    return Obj(
        {
            "metadata": {
                "name": f"{svc_name}-1",
                "labels": {"kubernetes.io/service-name": svc_name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip]} for ip in ips],
        }
    )


def cluster_of(*objs, slices=(), nodes=()) -> dict:
    out = {("Service", "shop", o.body["metadata"]["name"]): o for o in objs}
    out |= {("EndpointSlice", "shop", s.body["metadata"]["name"]): s for s in slices}
    out |= {("Node", "", n.name): n for n in nodes}
    return out


def dsts(flows) -> set[str]:
    return {dict(f.match).get("nw_dst") for f in flows if f.table == "ServiceLB"} - {None}


NODES = (
    Node("node-a", pod_cidr="10.244.0.0/24", internal_ip="192.168.50.10"),
    Node("node-b", pod_cidr="10.244.1.0/24", internal_ip="192.168.50.11",
         addresses=("192.168.50.11", "203.0.113.7")),
)  # fmt: skip


def test_reconciler_refuses_and_does_not_route_and_logs_once(caplog):
    c = cluster_of(
        obj("nodeip", ["192.168.50.11", "192.168.60.5"]),
        obj("extip", ["203.0.113.7"], cip="10.96.0.31"),
        obj("podip", ["10.244.1.9"], cip="10.96.0.32"),
        obj("cip", ["10.96.0.30"], cip="10.96.0.33"),  # another Service's ClusterIP
        obj("lb", ingress=["169.254.169.250", "172.30.0.200"], cip="10.96.0.34"),
        obj("ok", ["192.168.60.6"], cip="10.96.0.35"),
        slices=[slice_obj("nodeip", "10.244.0.2")],
        nodes=NODES,
    )
    rec = ServiceReconciler(c, LOCAL, SkipLog(), node_name="node-a")
    with caplog.at_level(logging.ERROR):
        owners, _ = rec.owners(view())
        rec.owners(view())
        rec.owners(view(), everything=False)
    assert rec.external_addrs == {"192.168.60.5", "192.168.60.6", "172.30.0.200"}
    every = set().union(*owners.values())
    assert dsts(every) & {"192.168.50.11", "203.0.113.7", "10.244.1.9", "169.254.169.250"} == set()
    assert {"192.168.60.5", "10.96.0.30"} <= dsts(owners["service/shop/nodeip"] | set())
    logged = [r.getMessage() for r in caplog.records]
    for line in (
        "Service shop/nodeip: spec.externalIPs 192.168.50.11 refused (a Node's address)",
        "Service shop/extip: spec.externalIPs 203.0.113.7 refused (a Node's address)",
        "Service shop/podip: spec.externalIPs 10.244.1.9 refused (inside the pod CIDRs)",
        "Service shop/cip: spec.externalIPs 10.96.0.30 refused (a Service's ClusterIP)",
        "Service shop/lb: status.loadBalancer.ingress 169.254.169.250 refused (an address "
        "ovsctl reserves",
    ):
        assert sum(m.startswith(line) for m in logged) == 1, (line, logged)


def test_reconciler_allowlist_from_config():
    c = cluster_of(obj("in", ["192.168.60.5"]), obj("out", ["198.51.100.5"], cip="10.96.0.31"))
    rec = ServiceReconciler(c, LOCAL, SkipLog(), node_name="node-a")
    rec.external_ip_cidrs = ("192.168.60.0/24",)
    rec.owners(view())
    assert rec.external_addrs == {"192.168.60.5"}
    rec.external_ip_cidrs = ()
    rec.owners(view())
    assert rec.external_addrs == {"192.168.60.5", "198.51.100.5"}


def test_reconciler_cluster_cidrs_from_config_cover_nodes_it_does_not_know():
    c = cluster_of(obj("x", ["10.244.77.5"]))
    rec = ServiceReconciler(c, LOCAL, SkipLog())
    rec.owners(view())
    assert rec.external_addrs == {"10.244.77.5"}  # no Node, no config: nothing says it's pods'
    rec.cluster_cidrs = ("10.244.0.0/16",)
    rec.owners(view())
    assert rec.external_addrs == frozenset()


@pytest.mark.parametrize("order", [0, 1])
def test_reconciler_tie_winner_stable_loser_logged(order, caplog):
    older = obj("zeta", ["192.168.60.5"], cip="10.96.0.40", created="2026-01-01T00:00:00Z")
    newer = obj("alpha", ["192.168.60.5"], cip="10.96.0.41", created="2026-02-01T00:00:00Z")
    pair = [older, newer] if order == 0 else [newer, older]
    slices = [slice_obj("zeta", "10.244.0.2"), slice_obj("alpha", "10.244.0.3")]
    rec = ServiceReconciler(cluster_of(*pair, slices=slices), LOCAL, SkipLog())
    with caplog.at_level(logging.ERROR):
        owners, _ = rec.owners(view())
        rec.owners(view())
    assert "192.168.60.5" in dsts(owners["service/shop/zeta"])
    assert "192.168.60.5" not in dsts(owners["service/shop/alpha"])
    assert "10.96.0.41" in dsts(owners["service/shop/alpha"])  # the loser keeps its ClusterIP
    assert rec.external_addrs == {"192.168.60.5"}
    logged = [r.getMessage() for r in caplog.records if "already Service" in r.getMessage()]
    assert logged == [
        "Service shop/alpha: 192.168.60.5:80/TCP is already Service shop/zeta's (created "
        "first): this Service's frontend for it is not programmed"
    ]
    # the winner goes away: the other takes the address over
    del rec.cluster[("Service", "shop", "zeta")]
    owners, _ = rec.owners(view(), everything=False)
    assert "192.168.60.5" in dsts(owners["service/shop/alpha"])


def test_duplicate_key_service_is_skipped_and_the_others_install(monkeypatch, caplog):
    # the guard would refuse the trigger (its own ClusterIP as externalIP); without it the
    # flows collide (internalTrafficPolicy Local: the ClusterIP's endpoints differ from the
    # external frontend's) and the Service alone is left out
    monkeypatch.setattr(service_guard, "screen", lambda pairs, facts: {})
    bad = obj("bad", ["10.96.0.50"], cip="10.96.0.50", internalTrafficPolicy="Local")
    good = obj("good", ["192.168.60.5"], cip="10.96.0.51")
    slices = [slice_obj("bad", "10.244.0.2", "10.244.1.2"), slice_obj("good", "10.244.0.3")]
    rec = ServiceReconciler(cluster_of(bad, good, slices=slices), LOCAL, SkipLog())
    with caplog.at_level(logging.ERROR):
        owners, _ = rec.owners(view())
    assert "service/shop/bad" not in owners and owners["service/shop/good"]
    assert any(
        "Service shop/bad: two different flows with the same match" in r.getMessage()
        for r in caplog.records
    )
    sync = FlowSync()
    for owner, flows in owners.items():
        sync.set_owner(owner, flows)  # raises if a colliding owner slipped through


def test_own_cluster_ip_as_external_ip_is_refused_and_the_service_installs():
    bad = obj("bad", ["10.96.0.50"], cip="10.96.0.50", internalTrafficPolicy="Local")
    slices = [slice_obj("bad", "10.244.0.2", "10.244.1.2")]
    rec = ServiceReconciler(cluster_of(bad, slices=slices), LOCAL, SkipLog())
    owners, _ = rec.owners(view())
    assert dsts(owners["service/shop/bad"]) == {"10.96.0.50"}
    assert rec.external_addrs == frozenset()


def test_policy_round_stages_the_others_when_one_owner_is_refused(caplog):
    s = Service("shop", "x", "10.96.0.50", (ServicePort("http", 80, "TCP", 8080),), None,
                external_ips=("10.96.0.50",), internal_local=True)  # fmt: skip
    h = (("http", 8080, "TCP"),)
    colliding = services.service_flows(s, [Endpoint("10.244.0.2", h), Endpoint("10.244.1.2", h)],
                                       LOCAL)  # fmt: skip
    fine = services.service_flows(svc("y", "192.168.60.5"), [Endpoint("10.244.0.3", h)], LOCAL)
    skip = SkipLog()
    cluster: dict = {}
    pol = PolicyReconciler(cluster, None, ServiceReconciler(cluster, LOCAL, skip), skip)
    sync = FlowSync()
    with caplog.at_level(logging.ERROR):
        pol._stage({"service/shop/x": colliding, "service/shop/y": fine}, sync.set_owner)
    assert sync.owners == {"service/shop/y": fine}
    assert any("service/shop/x: not programmed" in r.getMessage() for r in caplog.records)


# -- on the fake switch: a pod's connection to another pod is not hijacked ------------------


def test_pod_to_pod_is_not_hijacked_by_an_external_ip_claiming_the_pod():
    """A Service claims pod B's address and port as an externalIP, with pod C as its
    endpoint: pod A's connection to B:8080 must still reach B (without the guard it reaches C:
    the test's control)."""
    hijack = obj("hijack", [B.ip], cip="10.96.0.60", ports=[{"name": "http", "port": 8080}])
    c = cluster_of(hijack, slices=[slice_obj("hijack", C.ip)], nodes=NODES)
    rec = ServiceReconciler(c, ("10.244.0.0/24", "fd00:10:244::/64"), SkipLog(),
                            pod_cidrs=("10.244.0.0/24", "fd00:10:244::/64"))  # fmt: skip
    owners, _ = rec.owners(view())

    def to_b(flows):
        sw = FakeOFTable(flows_of(flows), tunnel_ports={OVERLAY.tun_ofport})
        res = sw.run(tcp(A.ofport, A.mac, GW, A.ip, B.ip, 41000, 8080))
        (port,) = res.output_ports
        return port, res.out(port).ip_dst

    assert B.ip not in rec.external_addrs
    assert to_b(owners["service/shop/hijack"]) == (B.ofport, B.ip)
    # control: the same Service's flows without the guard take A's connection to C
    unguarded = services.parse_service(hijack.body)
    eps = [Endpoint(C.ip, (("http", 8080, "TCP"),))]
    assert to_b(services.service_flows(unguarded, eps, LOCAL)) == (C.ofport, C.ip)


def test_config_external_ip_cidrs():
    from ovsctl.config import ConfigError, from_mapping

    cfg = from_mapping(
        {"pod_cidr": "10.244.0.0/24", "external_ip_cidrs": "192.168.60.7/24, fd00:60::/64"}
    )
    assert cfg.validate().external_ip_cidrs == ["192.168.60.0/24", "fd00:60::/64"]
    assert from_mapping({"pod_cidr": "10.244.0.0/24"}).validate().external_ip_cidrs == []
    with pytest.raises(ConfigError, match="external_ip_cidrs: 'nope' is not a CIDR"):
        from_mapping({"pod_cidr": "10.244.0.0/24", "external_ip_cidrs": ["nope"]}).validate()


@pytest.mark.parametrize("tracked", [False, True], ids=["dict", "Objects"])
def test_incremental_a_node_taking_the_address_refuses_it_without_a_service_event(tracked):
    from ovsctl.agent.reconcile.changes import Objects

    c = cluster_of(obj("x", ["192.168.60.9"]), slices=[slice_obj("x", "10.244.0.2")])
    c = Objects(c) if tracked else c
    rec = ServiceReconciler(c, LOCAL, SkipLog())
    owners, _ = rec.owners(view())
    assert "192.168.60.9" in dsts(owners["service/shop/x"])
    c[("Node", "", "node-c")] = Node("node-c", internal_ip="192.168.60.9")
    owners, _ = rec.owners(view(), everything=False)
    assert "192.168.60.9" not in dsts(owners["service/shop/x"])
    assert rec.external_addrs == frozenset()
    del c[("Node", "", "node-c")]
    owners, _ = rec.owners(view(), everything=False)
    assert "192.168.60.9" in dsts(owners["service/shop/x"])
    assert rec.external_addrs == {"192.168.60.9"}
