"""Unit tests for flows/services.py: Service parsing, endpoints, and the ServiceLB /
EndpointDNAT flows, with no switch.

The golden strings are what `ovs-ofctl -O OpenFlow15 dump-flows --no-stats br-int` prints for
these flows (leading space stripped), as in tests/unit/test_flows.py: `Flow.text()`. Note that
ovs-ofctl prints multipath's n_links (max_link + 1), and that the NodePort (Cluster) DNAT marks
the connection with SNAT_MARK for the pipeline's HairpinSNAT / ConntrackState flows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import netaddr
import pytest

from flows import cookie, regs, services
from flows.flow import CT, Learn, Multipath, Resubmit, flow
from flows.model import NODEPORT_IP, NODEPORT_LOCAL_IP, SNAT_MARK
from flows.policy import PodInfo
from flows.services import (
    DEFAULT_AFFINITY_TIMEOUT,
    Endpoint,
    Service,
    ServiceError,
    ServicePort,
    endpoints_from_pods,
    endpoints_from_slices,
    node_port_entries,
    parse_service,
    service_flows,
    usable,
)

HTTP = (("http", 8080, "TCP"),)
EP_A = Endpoint("10.244.0.2", HTTP)  # on this node (LOCAL_CIDR)
EP_B = Endpoint("10.244.1.3", HTTP)  # on another node
LOCAL_CIDR = "10.244.0.0/24"


def web(**kw) -> Service:
    """default/web, ClusterIP 10.96.0.10, port http 80 -> 8080 (nodePort 30080 if a NodePort)."""
    kw.setdefault("ports", (ServicePort("http", 80, "TCP", 8080, 30080),))
    return Service("default", "web", kw.pop("cluster_ip", "10.96.0.10"), selector=None, **kw)


def texts(flows) -> set[str]:
    return {f.text() for f in flows}


def svc_obj(ns="shop", name="web", **spec) -> dict:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}], **spec},
    }


# -- parse_service ---------------------------------------------------------------------------


def test_parse_defaults():
    svc = parse_service(svc_obj(selector={"app": "web", "tier": "front"}))
    assert svc.namespace == "shop" and svc.name == "web" and svc.key == "shop/web"
    assert svc.type == "ClusterIP"
    assert svc.cluster_ip == "10.96.0.10"
    assert svc.affinity_timeout is None
    assert svc.external_local is False
    assert svc.selector == (("app", "web"), ("tier", "front"))
    assert svc.ports == (ServicePort("http", 80, "TCP", 80, None),)
    assert not svc.has_node_ports


def test_parse_namespace_defaults_and_no_selector():
    svc = parse_service({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.96.0.1"}})
    assert svc.namespace == "default" and svc.ports == () and svc.selector is None
    assert parse_service(svc_obj(selector={})).selector is None


@pytest.mark.parametrize(
    "port, want",
    [
        ({"targetPort": "web"}, "web"),
        ({"targetPort": 8080}, 8080),
        ({"targetPort": "8080"}, 8080),
        ({}, 80),
    ],
    ids=["named", "numeric", "numeric-string", "unset"],
)
def test_parse_target_port(port, want):
    svc = parse_service(svc_obj(ports=[{"name": "http", "port": 80, **port}]))
    assert svc.ports[0].target_port == want


@pytest.mark.parametrize("proto", ["TCP", "UDP", "SCTP"])
def test_parse_protocols(proto):
    assert parse_service(svc_obj(ports=[{"port": 53, "protocol": proto}])).ports[0].protocol == (
        proto
    )
    assert parse_service(svc_obj(ports=[{"port": 53}])).ports[0].protocol == "TCP"


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol"),
        ({"ports": [{"port": 80, "protocol": "tcp"}]}, "spec.ports[0].protocol"),
        ({"ports": [{"port": 80}, {"name": "x"}]}, "spec.ports[1].port"),
        ({"ports": ["80"]}, "spec.ports[0].port"),
        ({"ports": [{"port": "http"}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 80.0}]}, "spec.ports[0].port"),
        ({"ports": [{"port": True}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 65536}]}, "spec.ports[0].port"),
        ({"type": "NodePort", "ports": [{"port": 80, "nodePort": "x"}]}, "spec.ports[0].nodePort"),
        (
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]},
            "spec.ports[0].nodePort",
        ),
        (
            {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": -1}]},
            "spec.ports[0].nodePort",
        ),
        ({"type": "Headless"}, "spec.type"),
        ({"sessionAffinity": "Cookie"}, "spec.sessionAffinity"),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
            },
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        ),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
            },
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        ),
    ],
)
def test_parse_errors_name_service_and_field(spec, field):
    with pytest.raises(ServiceError) as e:
        parse_service(svc_obj(**spec))
    assert "Service shop/web" in str(e.value)
    assert field in str(e.value)


def test_parse_headless_and_external_name_have_no_cluster_ip():
    assert parse_service(svc_obj(clusterIP="None")).cluster_ip is None
    assert parse_service(svc_obj(clusterIP="")).cluster_ip is None
    assert parse_service(svc_obj(clusterIP=None)).cluster_ip is None
    ext = parse_service(svc_obj(type="ExternalName", externalName="db.example.com"))
    assert ext.type == "ExternalName" and ext.cluster_ip is None
    assert service_flows(ext, [EP_A]) == frozenset()


def test_parse_node_port_only_for_node_port_types():
    ports = [{"name": "http", "port": 80, "nodePort": 30080}]
    assert parse_service(svc_obj(ports=ports)).ports[0].node_port is None
    # ignored even when it would be invalid
    bad = [{"port": 80, "nodePort": "nope"}]
    assert parse_service(svc_obj(ports=bad)).ports[0].node_port is None
    for stype in ("NodePort", "LoadBalancer"):
        svc = parse_service(svc_obj(type=stype, ports=ports))
        assert svc.ports[0].node_port == 30080 and svc.has_node_ports
    # nodePort 0 / unset: not allocated
    svc = parse_service(svc_obj(type="NodePort", ports=[{"port": 80, "nodePort": 0}]))
    assert svc.ports[0].node_port is None


def test_parse_session_affinity():
    svc = parse_service(svc_obj(sessionAffinity="ClientIP"))
    assert svc.affinity_timeout == DEFAULT_AFFINITY_TIMEOUT == 10800
    for t in (1, 600, 86400):
        cfg = {"clientIP": {"timeoutSeconds": t}}
        svc = parse_service(svc_obj(sessionAffinity="ClientIP", sessionAffinityConfig=cfg))
        assert svc.affinity_timeout == t
    for none in ("None", "", None):
        assert parse_service(svc_obj(sessionAffinity=none)).affinity_timeout is None


def test_parse_external_traffic_policy():
    ports = [{"port": 80, "nodePort": 30080}]
    assert parse_service(
        svc_obj(type="NodePort", ports=ports, externalTrafficPolicy="Local")
    ).external_local
    assert not parse_service(
        svc_obj(type="NodePort", ports=ports, externalTrafficPolicy="Cluster")
    ).external_local


# -- endpoints -------------------------------------------------------------------------------


def test_endpoints_from_slices_conditions():
    ports = [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    slices = [
        {
            "ports": ports,
            "endpoints": [
                {"addresses": ["10.244.0.2"]},  # no conditions: ready
                {"addresses": ["10.244.0.3"], "conditions": {"ready": True}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": False}},
                {
                    "addresses": ["10.244.0.5"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                },
                {
                    "addresses": ["10.244.0.6"],
                    "conditions": {"ready": True, "terminating": True},
                },
                {
                    "addresses": ["10.244.0.7", "10.244.0.8"],
                    "conditions": {"serving": False},
                },
            ],
        },
        {"ports": [{"port": 9090}], "endpoints": [{"addresses": ["10.244.1.2"]}]},
        {"endpoints": [{"addresses": ["10.244.1.3"]}]},
    ]
    eps = endpoints_from_slices(slices)
    want_ports = (("http", 8080, "TCP"), ("dns", 53, "UDP"))
    assert eps == [
        Endpoint("10.244.0.2", want_ports, ready=True, serving=True, terminating=False),
        Endpoint("10.244.0.3", want_ports, ready=True, serving=True, terminating=False),
        Endpoint("10.244.0.4", want_ports, ready=False, serving=False, terminating=False),
        Endpoint("10.244.0.5", want_ports, ready=False, serving=True, terminating=True),
        Endpoint("10.244.0.6", want_ports, ready=False, serving=True, terminating=True),
        Endpoint("10.244.0.7", want_ports, ready=True, serving=False, terminating=False),
        Endpoint("10.244.0.8", want_ports, ready=True, serving=False, terminating=False),
        Endpoint("10.244.1.2", (("", 9090, "TCP"),)),
        Endpoint("10.244.1.3", ()),
    ]
    assert endpoints_from_slices([]) == []
    assert endpoints_from_slices([{"ports": ports}]) == []


def pod(name, ip, labels=(("app", "web"),), ports=(), ns="default", ready=True, term=False):
    return PodInfo(ns, name, labels, ip, ports, ready=ready, terminating=term)


def test_endpoints_from_pods():
    svc = Service(
        "default",
        "web",
        "10.96.0.10",
        (
            ServicePort("http", 80, "TCP", "web"),
            ServicePort("metrics", 9100, "TCP", 9100),
            ServicePort("dns", 53, "UDP", "dns"),
        ),
        selector=(("app", "web"),),
    )
    pods = [
        pod("a", "10.244.0.2", ports=(("web", 8080, "TCP"), ("dns", 5353, "UDP"))),
        pod("b", "10.244.0.3", ports=(("web", 9090, "TCP"), ("dns", 5353, "TCP"))),
        pod("c", "10.244.0.4", labels=(("app", "web"), ("x", "y")), ready=False),
        pod("d", "10.244.0.5", ports=(("web", 8080, "TCP"),), term=True),
        pod("e", "10.244.0.6", ready=False, term=True),
        pod("other-ns", "10.244.0.7", ns="kube-system"),
        pod("other-labels", "10.244.0.8", labels=(("app", "db"),)),
        pod("no-labels", "10.244.0.9", labels=()),
        pod("no-ip", ""),
    ]
    assert endpoints_from_pods(svc, pods) == [
        Endpoint(
            "10.244.0.2",
            (("http", 8080, "TCP"), ("metrics", 9100, "TCP"), ("dns", 5353, "UDP")),
            ready=True,
            serving=True,
            terminating=False,
        ),
        # its "dns" port is TCP: the UDP Service port does not resolve
        Endpoint("10.244.0.3", (("http", 9090, "TCP"), ("metrics", 9100, "TCP"))),
        Endpoint("10.244.0.4", (("metrics", 9100, "TCP"),), ready=False, serving=False),
        Endpoint(
            "10.244.0.5",
            (("http", 8080, "TCP"), ("metrics", 9100, "TCP")),
            ready=False,
            serving=True,
            terminating=True,
        ),
        Endpoint(
            "10.244.0.6", (("metrics", 9100, "TCP"),), ready=False, serving=False, terminating=True
        ),
    ]


def test_endpoints_from_pods_without_selector():
    assert endpoints_from_pods(web(), [pod("a", "10.244.0.2")]) == []


def test_endpoints_from_pods_selector_needs_every_label():
    svc = web(ports=(ServicePort("", 80, "TCP", 80),))
    svc = Service(svc.namespace, svc.name, svc.cluster_ip, svc.ports, (("a", "1"), ("b", "2")))
    pods = [
        pod("both", "10.244.0.2", labels=(("a", "1"), ("b", "2"), ("c", "3"))),
        pod("one", "10.244.0.3", labels=(("a", "1"),)),
        pod("wrong", "10.244.0.4", labels=(("a", "1"), ("b", "3"))),
    ]
    assert [e.ip for e in endpoints_from_pods(svc, pods)] == ["10.244.0.2"]


def test_usable():
    ready = Endpoint("10.0.0.1", HTTP)
    not_ready = Endpoint("10.0.0.2", HTTP, ready=False, serving=False)
    draining = Endpoint("10.0.0.3", HTTP, ready=False, serving=True, terminating=True)
    gone = Endpoint("10.0.0.4", HTTP, ready=False, serving=False, terminating=True)
    unready_serving = Endpoint("10.0.0.5", HTTP, ready=False, serving=True)
    assert usable([not_ready, ready, draining, gone]) == [ready]
    assert usable([not_ready, draining, gone, unready_serving]) == [draining]
    assert usable([not_ready, gone, unready_serving]) == []
    assert usable([]) == []


# -- service_flows: golden -------------------------------------------------------------------

# fmt: off
GOLDEN_CLUSTER_IP = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0x1/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080))",
}

# NodePort, externalTrafficPolicy Cluster: what the node-port frontend adds.
GOLDEN_NODE_PORT = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=169.254.169.250,tp_dst=30080 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=169.254.169.250,tp_dst=30080 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080),exec(set_field:0x1->ct_mark))",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0x1/0xffff,nw_dst=169.254.169.250,tp_dst=30080 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080),exec(set_field:0x1->ct_mark))",
}

# NodePort, externalTrafficPolicy Local, on the node of 10.244.0.2: only that endpoint.
GOLDEN_NODE_PORT_LOCAL = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=169.254.169.251,tp_dst=30080 actions=multipath(symmetric_l4,0,hrw,1,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=169.254.169.251,tp_dst=30080 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
}

GOLDEN_AFFINITY = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=80 actions=resubmit(,33),multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=learn(table=33,idle_timeout=600,priority=200,delete_learned,cookie=0x63ea57a6028,eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],load:0xaf40002->NXM_NX_REG4[],load:0x1f90->NXM_NX_REG5[0..15],load:0x1->NXM_NX_REG0[5]),ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0x1/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=learn(table=33,idle_timeout=600,priority=200,delete_learned,cookie=0x61e60d697da,eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],load:0xaf40103->NXM_NX_REG4[],load:0x1f90->NXM_NX_REG5[0..15],load:0x1->NXM_NX_REG0[5]),ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080))",
    "cookie=0x541c337e7a4, table=36, priority=210,tcp,reg0=0x20/0x20,reg4=0xaf40002,reg5=0x1f90/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
    "cookie=0x541c337e7a4, table=36, priority=210,tcp,reg0=0x20/0x20,reg4=0xaf40103,reg5=0x1f90/0xffff,nw_dst=10.96.0.10,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080))",
}

GOLDEN_UDP = {
    "cookie=0x509f0600a15, table=35, priority=200,udp,nw_dst=10.96.0.53,tp_dst=53 actions=multipath(symmetric_l3l4+udp,0,hrw,1,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x509f0600a15, table=36, priority=200,udp,reg3=0/0xffff,nw_dst=10.96.0.53,tp_dst=53 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.7:53))",
}
# fmt: on


def test_cluster_ip_golden():
    assert texts(service_flows(web(), [EP_A, EP_B])) == GOLDEN_CLUSTER_IP


def test_cluster_ip_ignores_node_ports_and_local_cidr():
    assert texts(service_flows(web(), [EP_A, EP_B], LOCAL_CIDR)) == GOLDEN_CLUSTER_IP
    assert texts(service_flows(web(external_local=True), [EP_A, EP_B])) == GOLDEN_CLUSTER_IP


def test_udp_golden():
    svc = Service("default", "dns", "10.96.0.53", (ServicePort("dns", 53, "UDP", 53),), None)
    eps = [Endpoint("10.244.0.7", (("dns", 53, "UDP"),))]
    assert texts(service_flows(svc, eps)) == GOLDEN_UDP


def test_sctp_hashes_with_symmetric_l4():
    svc = web(ports=(ServicePort("s", 80, "SCTP", 80),))
    eps = [Endpoint("10.244.0.2", (("s", 80, "SCTP"),))]
    (lb,) = [f for f in service_flows(svc, eps) if f.table == "ServiceLB"]
    assert lb.text().startswith("cookie=0x541c337e7a4, table=35, priority=200,sctp,")
    assert "multipath(symmetric_l4,0,hrw,1,0,NXM_NX_REG3[0..15])" in lb.text()


def test_no_endpoints_sends_every_frontend_to_the_controller():
    # metered (meter 2, which the agent installs): a flood of them cannot swamp the agent
    assert services.REJECT.text() == "controller(max_len=256,meter_id=2)"
    svc = web(type="NodePort")
    not_ready = Endpoint("10.244.0.2", HTTP, ready=False, serving=False)
    for eps in ([], [not_ready]):
        assert texts(service_flows(svc, eps)) == {
            "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=80 actions=controller(max_len=256,meter_id=2)",
            "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=169.254.169.250,tp_dst=30080 actions=controller(max_len=256,meter_id=2)",
        }


def test_node_port_cluster_golden():
    flows = service_flows(web(type="NodePort"), [EP_A, EP_B], LOCAL_CIDR)
    assert texts(flows) == GOLDEN_CLUSTER_IP | GOLDEN_NODE_PORT
    marked = [a for f in flows for a in f.actions if isinstance(a, CT) and a.mark is not None]
    assert marked and all(a.mark == SNAT_MARK for a in marked)
    # only the node-port frontend marks: ClusterIP connections keep their source
    assert {dict(f.match)["nw_dst"] for f in flows if "ct_mark" in f.actions_text()} == {
        NODEPORT_IP
    }


def test_load_balancer_has_node_ports_too():
    flows = service_flows(web(type="LoadBalancer"), [EP_A, EP_B])
    assert texts(flows) == GOLDEN_CLUSTER_IP | GOLDEN_NODE_PORT


def test_node_port_local_uses_local_endpoints_only():
    svc = web(type="NodePort", external_local=True)
    assert (
        texts(service_flows(svc, [EP_A, EP_B], LOCAL_CIDR))
        == GOLDEN_CLUSTER_IP | GOLDEN_NODE_PORT_LOCAL
    )
    # never marked for SNAT: the client's IP is kept
    for f in service_flows(svc, [EP_A, EP_B], LOCAL_CIDR):
        assert all(a.mark is None for a in f.actions if isinstance(a, CT))


def test_node_port_local_with_endpoints_elsewhere_drops():
    svc = web(type="NodePort", external_local=True)
    drop = "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=169.254.169.251,tp_dst=30080 actions=drop"
    assert texts(service_flows(svc, [EP_A, EP_B], "10.244.7.0/24")) == GOLDEN_CLUSTER_IP | {drop}
    # no local_cidr known: nothing is local
    assert texts(service_flows(svc, [EP_A, EP_B])) == GOLDEN_CLUSTER_IP | {drop}


def test_node_port_local_without_endpoints_rejects():
    svc = web(type="NodePort", external_local=True)
    assert texts(service_flows(svc, [], LOCAL_CIDR)) == {
        "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=80 actions=controller(max_len=256,meter_id=2)",
        "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=169.254.169.251,tp_dst=30080 actions=controller(max_len=256,meter_id=2)",
    }


def test_session_affinity_golden():
    assert texts(service_flows(web(affinity_timeout=600), [EP_A, EP_B])) == GOLDEN_AFFINITY


def learns(flows) -> dict[tuple[str, str], Learn]:
    """(frontend ip, endpoint ip) -> the Learn of its index flow."""
    out = {}
    for f in flows:
        for a in f.actions:
            if isinstance(a, Learn):
                nat = next(x for x in f.actions if isinstance(x, CT)).nat
                out[(dict(f.match)["nw_dst"], nat.split("=")[1].split(":")[0])] = a
    return out


def test_session_affinity_flows():
    svc = web(type="NodePort", affinity_timeout=DEFAULT_AFFINITY_TIMEOUT)
    flows = service_flows(svc, [EP_A, EP_B])
    for f in flows:
        if f.table == "ServiceLB":
            assert isinstance(f.actions[0], Resubmit)
            assert f.actions_text().startswith("resubmit(,33),multipath(")
    got = learns(flows)
    assert set(got) == {
        (fe, ep) for fe in ("10.96.0.10", NODEPORT_IP) for ep in ("10.244.0.2", "10.244.1.3")
    }
    # one learned cookie per (frontend, endpoint), of the affinity feature
    cookies = [a.cookie for a in got.values()]
    assert len(set(cookies)) == len(cookies)
    assert {cookie.decode(c)["feature"] for c in cookies} == {"affinity"}
    assert {a.idle_timeout for a in got.values()} == {10800}
    assert {a.table for a in got.values()} == {"SessionAffinity"}
    # stable: the same inputs give the same cookies
    again = learns(service_flows(svc, [EP_B, EP_A]))
    assert {k: a.cookie for k, a in again.items()} == {k: a.cookie for k, a in got.items()}
    # an endpoint's affinity cookie does not depend on the other endpoints
    alone = learns(service_flows(svc, [EP_A]))
    assert alone[("10.96.0.10", "10.244.0.2")].cookie == got[("10.96.0.10", "10.244.0.2")].cookie
    # the remembered-endpoint flows
    hits = {f.match_text() for f in flows if f.priority == 210}
    assert hits == {
        f"priority=210,tcp,reg0=0x20/0x20,reg4={int(netaddr.IPAddress(ip)):#x},reg5=0x1f90/0xffff,nw_dst={fe},tp_dst={port}"
        for fe, port in (("10.96.0.10", 80), (NODEPORT_IP, 30080))
        for ip in ("10.244.0.2", "10.244.1.3")
    }
    assert all(f.table == "EndpointDNAT" for f in flows if f.priority == 210)


def test_session_affinity_learns_udp_and_sctp_ports():
    for proto, nxm, n in (("UDP", "NXM_OF_UDP_DST[]", 17), ("SCTP", "OXM_OF_SCTP_DST[]", 132)):
        svc = web(ports=(ServicePort("p", 53, proto, 5353),), affinity_timeout=30)
        eps = [Endpoint("10.244.0.2", (("p", 5353, proto),))]
        (learn,) = learns(service_flows(svc, eps)).values()
        assert f"nw_proto={n},NXM_OF_IP_SRC[],NXM_OF_IP_DST[],{nxm}," in learn.text()
        assert "idle_timeout=30," in learn.text()


def test_cookies_decode():
    svc = web(type="NodePort", affinity_timeout=60)
    flows = service_flows(svc, [EP_A, EP_B])
    want = cookie.make("service", "service/default/web")
    for f in flows:
        assert f.cookie == want
        d = cookie.decode(f.cookie)
        assert d["feature"] == "service" and d["round"] == 0 and d["owner"] != 0
    other = service_flows(Service("default", "api", "10.96.0.11", svc.ports, None), [EP_A])
    assert {f.cookie for f in other} != {want}


def test_endpoint_order_does_not_matter():
    eps = [Endpoint(f"10.244.{i % 3}.{i + 2}", HTTP) for i in range(9)]
    for svc in (
        web(),
        web(type="NodePort", affinity_timeout=100),
        web(type="NodePort", external_local=True),
    ):
        want = service_flows(svc, eps, LOCAL_CIDR)
        rnd = random.Random(7)
        for _ in range(10):
            shuffled = eps[:]
            rnd.shuffle(shuffled)
            assert service_flows(svc, shuffled, LOCAL_CIDR) == want


def test_duplicate_endpoints_are_one_backend():
    dup = Endpoint("10.244.0.2", HTTP, ready=True)
    flows = service_flows(web(), [EP_A, dup, EP_B, EP_B])
    assert texts(flows) == GOLDEN_CLUSTER_IP


def test_port_missing_on_endpoint_is_not_its_backend():
    svc = web(
        ports=(ServicePort("http", 80, "TCP", 8080), ServicePort("metrics", 9100, "TCP", "m"))
    )
    full = Endpoint("10.244.0.2", (("http", 8080, "TCP"), ("metrics", 9101, "TCP")))
    http_only = Endpoint("10.244.1.3", HTTP)
    wrong_proto = Endpoint("10.244.1.4", (("metrics", 9101, "UDP"),))
    flows = service_flows(svc, [full, http_only, wrong_proto])
    metrics = {f.text() for f in flows if "tp_dst=9100" in f.text()}
    assert metrics == {
        "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=9100 actions=multipath(symmetric_l4,0,hrw,1,0,NXM_NX_REG3[0..15]),goto_table:36",
        "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=10.96.0.10,tp_dst=9100 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:9101))",
    }
    assert {f.text() for f in flows if "tp_dst=80 " in f.text() and f.table == "ServiceLB"} == {
        next(t for t in GOLDEN_CLUSTER_IP if "table=35" in t)
    }


def test_named_target_port_resolves_per_pod():
    svc = Service(
        "default",
        "web",
        "10.96.0.10",
        (ServicePort("http", 80, "TCP", "web"),),
        (("app", "web"),),
    )
    pods = [
        pod("a", "10.244.0.2", ports=(("web", 8080, "TCP"),)),
        pod("b", "10.244.1.3", ports=(("web", 9090, "TCP"),)),
        pod("c", "10.244.1.4"),  # no such port: not a backend
    ]
    dnat = {
        a.nat
        for f in service_flows(svc, endpoints_from_pods(svc, pods))
        for a in f.actions
        if isinstance(a, CT)
    }
    assert dnat == {"dst=10.244.0.2:8080", "dst=10.244.1.3:9090"}


def test_terminating_endpoints_serve_only_when_none_is_ready():
    draining = Endpoint("10.244.0.9", HTTP, ready=False, serving=True, terminating=True)
    assert texts(service_flows(web(), [EP_A, EP_B, draining])) == GOLDEN_CLUSTER_IP
    nat = {a.nat for f in service_flows(web(), [draining]) for a in f.actions if isinstance(a, CT)}
    assert nat == {"dst=10.244.0.9:8080"}


# -- node_port_entries -----------------------------------------------------------------------


def test_node_port_entries():
    ports = (
        ServicePort("http", 80, "TCP", 8080, 30080),
        ServicePort("dns", 53, "UDP", 53, 30053),
        ServicePort("none", 81, "TCP", 81),
    )
    assert node_port_entries(web(ports=ports, type="NodePort")) == {
        ("tcp", 30080, NODEPORT_IP),
        ("udp", 30053, NODEPORT_IP),
    }
    assert node_port_entries(web(ports=ports, type="LoadBalancer", external_local=True)) == {
        ("tcp", 30080, NODEPORT_LOCAL_IP),
        ("udp", 30053, NODEPORT_LOCAL_IP),
    }
    assert node_port_entries(web(ports=ports)) == set()
    assert node_port_entries(web(ports=ports, type="ExternalName")) == set()


# -- random services -------------------------------------------------------------------------


def random_case(rnd: random.Random) -> tuple[Service, list[Endpoint], str]:
    protos = ("TCP", "UDP", "SCTP")
    stype = rnd.choice(("ClusterIP", "NodePort", "LoadBalancer"))
    ports, used, node_ports = [], set(), rnd.sample(range(30000, 30100), 4)
    for i in range(rnd.randint(1, 4)):
        port, proto = rnd.choice((53, 80, 443, 8080)), rnd.choice(protos)
        if (port, proto) in used:
            continue
        used.add((port, proto))
        node_port = node_ports[i] if stype != "ClusterIP" and rnd.random() < 0.8 else None
        ports.append(ServicePort(f"p{i}", port, proto, rnd.choice((80, 8080, 9000)), node_port))
    svc = Service(
        "ns",
        f"svc{rnd.randint(0, 3)}",
        rnd.choice(("10.96.0.10", "10.96.3.4", None)),
        tuple(ports),
        None,
        type=stype,
        external_local=rnd.random() < 0.4,
        affinity_timeout=rnd.choice((None, 1, 10800, 86400)),
    )
    eps = []
    for _ in range(rnd.randint(0, 8)):
        ep_ports = tuple(
            (sp.name, rnd.choice((sp.target_port, 7000)), sp.protocol)
            for sp in ports
            if rnd.random() < 0.8
        )
        terminating = rnd.random() < 0.2
        ready = not terminating and rnd.random() < 0.8
        eps.append(
            Endpoint(
                f"10.244.{rnd.randint(0, 2)}.{rnd.randint(2, 6)}",
                ep_ports,
                ready=ready,
                serving=ready or rnd.random() < 0.5,
                terminating=terminating,
            )
        )
    return svc, eps, rnd.choice((LOCAL_CIDR, "10.244.1.0/24"))


@pytest.mark.parametrize("seed", range(300))
def test_random_services(seed):
    rnd = random.Random(seed)
    svc, eps, local_cidr = random_case(rnd)
    flows = service_flows(svc, eps, local_cidr)

    # building went through flow(): every flow is valid, and rebuilding it is the identity
    for f in flows:
        assert flow(f.table, f.priority, dict(f.match), f.actions, f.cookie) == f
        assert cookie.decode(f.cookie)["feature"] == "service"

    # no two flows of the Service on the same switch key
    assert len({f.key for f in flows}) == len(flows)

    # one ServiceLB flow per frontend; every EndpointDNAT index in range of its multipath
    n_links = {}
    for f in flows:
        if f.table == "ServiceLB":
            m = dict(f.match)
            mp = [a for a in f.actions if isinstance(a, Multipath)]
            n_links[(m["protocol"], m["nw_dst"], m["tp_dst"])] = mp[0].n_links if mp else 0
    frontends = {(sp.protocol.lower(), svc.cluster_ip, str(sp.port)) for sp in svc.ports}
    frontends = {fe for fe in frontends if fe[1]}
    if svc.type != "ClusterIP":
        np_ip = NODEPORT_LOCAL_IP if svc.external_local else NODEPORT_IP
        frontends |= {
            (sp.protocol.lower(), np_ip, str(sp.node_port)) for sp in svc.ports if sp.node_port
        }
    assert set(n_links) == frontends
    seen: dict[tuple, set[int]] = {}
    endpoint_reg, _ = regs.ENDPOINT.match(0)
    for f in flows:
        if f.table != "EndpointDNAT":
            continue
        m = dict(f.match)
        fe = (m["protocol"], m["nw_dst"], m["tp_dst"])
        assert n_links[fe] > 0
        if f.priority == 200:
            idx = int(m[endpoint_reg].split("/")[0], 16)
            assert idx < n_links[fe]
            seen.setdefault(fe, set()).add(idx)
        else:
            assert f.priority == 210 and svc.affinity_timeout
    # every index of every multipath has its DNAT flow
    assert seen == {fe: set(range(n)) for fe, n in n_links.items() if n}

    # the endpoints' order does not matter
    shuffled = eps[:]
    rnd.shuffle(shuffled)
    assert service_flows(svc, shuffled, local_cidr) == flows


# -- known bugs ------------------------------------------------------------------------------


def test_affinity_timeout_fits_learn_idle_timeout():
    cfg = {"clientIP": {"timeoutSeconds": 86400}}
    svc = parse_service(svc_obj(sessionAffinity="ClientIP", sessionAffinityConfig=cfg))
    flows = service_flows(svc, [Endpoint("10.244.0.2", (("http", 80, "TCP"),))])
    (learn,) = learns(flows).values()
    assert learn.idle_timeout <= 0xFFFF


def test_node_port_local_drains_to_local_terminating_endpoint():
    svc = web(type="NodePort", external_local=True)
    local_draining = Endpoint("10.244.0.2", HTTP, ready=False, serving=True, terminating=True)
    flows = service_flows(svc, [local_draining, EP_B], LOCAL_CIDR)
    local = {f.actions_text() for f in flows if dict(f.match)["nw_dst"] == NODEPORT_LOCAL_IP}
    assert "actions=drop" not in {f"actions={t}" for t in local}
    assert any("nat(dst=10.244.0.2:8080)" in t for t in local)


def test_null_target_port_defaults_to_port():
    obj = svc_obj(selector={"app": "web"}, ports=[{"port": 80, "targetPort": None}])
    assert parse_service(obj).ports[0].target_port == 80


# -- IPv6 and dual-stack (issue 16) ----------------------------------------------------------

CIP6 = "fd00:10:96::a"
EP6_A = Endpoint("fd00:10:244::2", HTTP)  # on this node
EP6_B = Endpoint("fd00:10:244:1::3", HTTP)  # on another node
LOCAL_CIDRS = (LOCAL_CIDR, "fd00:10:244::/64")


def dual(**spec) -> dict:
    base = {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", CIP6],
        "ipFamilies": ["IPv4", "IPv6"],
        "ipFamilyPolicy": "RequireDualStack",
    }
    return svc_obj(**{**base, **spec})


def test_parse_dual_stack():
    svc = parse_service(dual())
    assert svc.cluster_ip == "10.96.0.10"
    assert svc.cluster_ips == ("10.96.0.10", CIP6)
    assert svc.ip_family_policy == "RequireDualStack"
    assert [str(f) for f in svc.families] == ["IPv4", "IPv6"]
    six_first = parse_service(
        dual(clusterIP=CIP6, clusterIPs=[CIP6, "10.96.0.10"], ipFamilies=["IPv6", "IPv4"])
    )
    assert six_first.cluster_ip == CIP6 and six_first.cluster_ips == (CIP6, "10.96.0.10")


def test_parse_ipv6_single_stack_and_defaults():
    six = parse_service(svc_obj(clusterIP="fd00:10:96:0::A", ipFamilies=["IPv6"]))
    assert six.cluster_ips == (CIP6,) and six.ip_family_policy == "SingleStack"
    # clusterIPs alone (clusterIP is its first); the policy follows the addresses when unset
    only_ips = parse_service(svc_obj(clusterIP=None, clusterIPs=[CIP6, "10.96.0.10"]))
    assert only_ips.cluster_ip == CIP6 and only_ips.ip_family_policy == "RequireDualStack"
    # PreferDualStack on a single-stack cluster has one address
    prefer = parse_service(svc_obj(ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"]))
    assert prefer.cluster_ips == ("10.96.0.10",)
    # an IPv4 Service as before: one address, nothing else needed
    assert parse_service(svc_obj()).cluster_ips == ("10.96.0.10",)
    headless = parse_service(svc_obj(clusterIP="None", clusterIPs=["None"], ipFamilies=["IPv6"]))
    assert headless.cluster_ip is None and headless.cluster_ips == ()


@pytest.mark.parametrize(
    "spec,field",
    [
        ({"ipFamilyPolicy": "DualStack"}, "spec.ipFamilyPolicy"),
        ({"ipFamilies": ["IPv5"]}, r"spec.ipFamilies\[0\]"),
        ({"ipFamilies": ["IPv4", "IPv4"]}, "spec.ipFamilies lists IPv4 twice"),
        ({"ipFamilies": "IPv4"}, "spec.ipFamilies"),
        ({"ipFamilies": ["IPv6"]}, r"spec.clusterIPs\[0\] 10.96.0.10 is not of spec.ipFamilies"),
        ({"clusterIPs": ["10.96.0.11"]}, r"spec.clusterIPs\[0\] 10.96.0.11 is not spec.clusterIP"),
        ({"clusterIPs": ["10.96.0.10", "10.96.0.11"]}, "both IPv4"),
        ({"clusterIPs": ["10.96.0.10", "fd00::1", "fd00::2"]}, "at most 2"),
        ({"clusterIPs": ["10.96.0.10", "banana"]}, r"spec.clusterIPs\[1\] 'banana'"),
        ({"clusterIPs": "10.96.0.10"}, "spec.clusterIPs must be a list"),
        (
            {"clusterIPs": ["10.96.0.10", CIP6], "ipFamilyPolicy": "SingleStack"},
            "SingleStack with two families",
        ),
        ({"ipFamilyPolicy": "RequireDualStack"}, "RequireDualStack needs two spec.clusterIPs"),
        (
            {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"},
            "spec.ipFamilies has 2 families but spec.clusterIPs 1",
        ),
        (
            {"clusterIPs": ["10.96.0.10", CIP6], "ipFamilies": ["IPv6", "IPv4"]},
            r"spec.clusterIPs\[0\] 10.96.0.10 is not of spec.ipFamilies\[0\] IPv6",
        ),
        ({"clusterIP": "None", "clusterIPs": ["None", CIP6]}, "headless"),
    ],
)
def test_parse_bad_family_combinations_name_service_and_field(spec, field):
    with pytest.raises(ServiceError, match=rf"^Service shop/web: .*{field}"):
        parse_service(svc_obj(**spec))


def test_endpoint_slices_of_ipv6():
    six = {
        "metadata": {"name": "web-v6"},
        "addressType": "IPv6",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["FD00:10:244::2"]},
            {"addresses": ["fd00:10:244:1::3"], "conditions": {"ready": False}},
            {"addresses": ["10.244.0.9"]},  # not of the slice's family
        ],
    }
    skipped: list[str] = []
    eps = endpoints_from_slices([six], skipped)
    assert [(e.ip, e.ready) for e in eps] == [("fd00:10:244::2", True), ("fd00:10:244:1::3", False)]
    assert skipped == ["EndpointSlice web-v6.endpoints[2]: '10.244.0.9' is not an IPv6 address"]


@dataclass(frozen=True)
class DualPod(PodInfo):
    ips: tuple[str, ...] = ()


def test_endpoints_from_pods_use_the_address_of_each_cluster_ip_family():
    pods = [
        DualPod("default", "a", (("app", "web"),), "10.244.0.2", ips=("10.244.0.2", EP6_A.ip)),
        DualPod("default", "b", (("app", "web"),), "10.244.0.3", ips=("10.244.0.3",)),  # v4 only
    ]
    sel = (("app", "web"),)
    ports = (ServicePort("http", 80, "TCP", 8080),)
    dual_svc = Service("default", "w", "10.96.0.10", ports, sel, cluster_ips=("10.96.0.10", CIP6))
    assert [e.ip for e in endpoints_from_pods(dual_svc, pods)] == [
        "10.244.0.2",
        EP6_A.ip,
        "10.244.0.3",
    ]
    six = Service("default", "w", CIP6, ports, sel)
    assert [e.ip for e in endpoints_from_pods(six, pods)] == [EP6_A.ip]
    four = Service("default", "w", "10.96.0.10", ports, sel)
    assert [e.ip for e in endpoints_from_pods(four, pods)] == ["10.244.0.2", "10.244.0.3"]


GOLDEN_V6 = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp6,ipv6_dst=fd00:10:96::a,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp6,reg3=0/0xffff,ipv6_dst=fd00:10:96::a,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=[fd00:10:244:1::3]:8080))",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp6,reg3=0x1/0xffff,ipv6_dst=fd00:10:96::a,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=[fd00:10:244::2]:8080))",
}


def test_dual_stack_golden_each_cluster_ip_to_its_own_family():
    svc = web(cluster_ips=("10.96.0.10", CIP6))
    got = texts(service_flows(svc, [EP_A, EP_B, EP6_A, EP6_B], LOCAL_CIDRS))
    v4 = texts(service_flows(web(), [EP_A, EP_B], LOCAL_CIDR))
    assert got == v4 | GOLDEN_V6  # the IPv4 flows exactly as an IPv4-only Service's


def test_ipv6_udp_and_sctp():
    for proto, l4, fields in (
        ("UDP", "udp6", "symmetric_l3l4+udp"),
        ("SCTP", "sctp6", "symmetric_l4"),
    ):
        ep = Endpoint(EP6_A.ip, (("dns", 5353, proto),))
        svc = web(cluster_ip=CIP6, ports=(ServicePort("dns", 53, proto, 5353),))
        got = texts(service_flows(svc, [ep]))
        assert any(f",{l4},ipv6_dst=fd00:10:96::a,tp_dst=53 " in t and fields in t for t in got)
        assert any("nat(dst=[fd00:10:244::2]:5353)" in t for t in got)


def test_ipv6_cluster_ip_without_ipv6_endpoints_rejects():
    svc = web(cluster_ips=("10.96.0.10", CIP6))
    got = texts(service_flows(svc, [EP_A]))
    assert (
        "cookie=0x541c337e7a4, table=35, priority=200,tcp6,ipv6_dst=fd00:10:96::a,tp_dst=80 "
        "actions=controller(max_len=256,meter_id=2)"
    ) in got
    assert any("nat(dst=10.244.0.2:8080)" in t for t in got)


def test_ipv6_node_ports_cluster_and_local():
    svc = web(type="NodePort", cluster_ips=("10.96.0.10", CIP6))
    got = service_flows(svc, [EP_A, EP_B, EP6_A, EP6_B], LOCAL_CIDRS)
    lb = {f.match_text() for f in got if f.table == "ServiceLB"}
    assert "priority=200,tcp6,ipv6_dst=fd00:ffff::a9fe:a9fa,tp_dst=30080" in lb
    assert "priority=200,tcp,nw_dst=169.254.169.250,tp_dst=30080" in lb
    marked = [f for f in got if "ipv6_dst=fd00:ffff::a9fe:a9fa" in f.text() and "ct(" in f.text()]
    assert len(marked) == 2 and all("set_field:0x1->ct_mark" in f.text() for f in marked)
    local = service_flows(
        web(type="NodePort", external_local=True, cluster_ips=("10.96.0.10", CIP6)),
        [EP_A, EP_B, EP6_A, EP6_B],
        LOCAL_CIDRS,
    )
    dnat6 = {f.actions_text() for f in local if "ipv6_dst=fd00:ffff::a9fe:a9fb" in f.text()}
    assert dnat6 == {
        "multipath(symmetric_l4,0,hrw,1,0,NXM_NX_REG3[0..15]),goto_table:36",
        "ct(commit,table=37,zone=65000,nat(dst=[fd00:10:244::2]:8080))",  # local only, no mark
    }
    # an IPv4-only node serves no IPv6 node port (and writes no ip6tables rule for it)
    v4_node = texts(service_flows(svc, [EP_A, EP_B, EP6_A, EP6_B], LOCAL_CIDR))
    assert not any("fd00:ffff::" in t for t in v4_node)
    assert any("nw_dst=169.254.169.250" in t for t in v4_node)


def test_node_port_entries_per_family():
    svc = web(type="NodePort", cluster_ips=("10.96.0.10", CIP6))
    assert node_port_entries(svc, LOCAL_CIDRS) == {
        ("tcp", 30080, NODEPORT_IP),
        ("tcp", 30080, "fd00:ffff::a9fe:a9fa"),
    }
    assert node_port_entries(svc, (LOCAL_CIDR,)) == {("tcp", 30080, NODEPORT_IP)}
    local6 = web(type="NodePort", external_local=True, cluster_ip=CIP6)
    assert node_port_entries(local6, LOCAL_CIDRS) == {("tcp", 30080, "fd00:ffff::a9fe:a9fb")}
    assert node_port_entries(web(type="NodePort")) == {("tcp", 30080, NODEPORT_IP)}


def test_ipv6_session_affinity_remembers_the_whole_address_in_xxreg2():
    svc = web(cluster_ip=CIP6, affinity_timeout=600)
    flows = service_flows(svc, [EP6_A, EP6_B])
    ls = [a for f in flows for a in f.actions if isinstance(a, Learn)]
    assert len(ls) == 2 and {a.version for a in ls} == {6}
    by_ep = {
        next(x for x in f.actions if isinstance(x, CT)).nat: f
        for f in flows
        if f.priority == 200 and f.table == "EndpointDNAT"
    }
    learn_b = next(a for a in by_ep["dst=[fd00:10:244:1::3]:8080"].actions if isinstance(a, Learn))
    assert learn_b.text() == (
        f"learn(table=33,idle_timeout=600,priority=200,delete_learned,cookie={learn_b.cookie:#x},"
        "eth_type=0x86dd,nw_proto=6,NXM_NX_IPV6_SRC[],NXM_NX_IPV6_DST[],NXM_OF_TCP_DST[],"
        "load:0xfd000010->NXM_NX_REG8[],load:0x2440001->NXM_NX_REG9[],load:0->NXM_NX_REG10[],"
        "load:0x3->NXM_NX_REG11[],load:0x1f90->NXM_NX_REG5[0..15],load:0x1->NXM_NX_REG0[5])"
    )
    hits = {f.match_text() for f in flows if f.priority == 210}
    # the two endpoints share their low 64 bits' pattern per node (::2 and ::3 on different
    # /64s): only the whole address tells them apart, which an index or the low word would not
    assert hits == {
        "priority=210,tcp6,reg0=0x20/0x20,reg5=0x1f90/0xffff,reg8=0xfd000010,reg9=0x2440000,reg10=0,reg11=0x2,ipv6_dst=fd00:10:96::a,tp_dst=80",
        "priority=210,tcp6,reg0=0x20/0x20,reg5=0x1f90/0xffff,reg8=0xfd000010,reg9=0x2440001,reg10=0,reg11=0x3,ipv6_dst=fd00:10:96::a,tp_dst=80",
    }
    # same-suffix endpoints on two nodes are still two remembered endpoints
    twins = [Endpoint("fd00:10:244::5", HTTP), Endpoint("fd00:10:244:1::5", HTTP)]
    assert len({f.match_text() for f in service_flows(svc, twins) if f.priority == 210}) == 2
    # cookies differ per (frontend, endpoint) and the IPv4 ones are unchanged
    assert len({a.cookie for a in ls}) == 2
    assert texts(service_flows(web(affinity_timeout=600), [EP_A, EP_B])) == GOLDEN_AFFINITY


def test_affinity_registers_for_ipv6_do_not_overlap_the_others():
    assert [f.reg for f in regs.AFFINITY_IP6] == [8, 9, 10, 11]
    used = {f.reg for f in regs.ALL.values() if f not in regs.AFFINITY_IP6}
    assert not used & {8, 9, 10, 11}
