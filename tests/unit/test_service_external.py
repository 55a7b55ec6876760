"""Issue 18 without a switch: parsing of the new Service fields (externalIPs, load balancer
ingress, loadBalancerClass, loadBalancerSourceRanges, internalTrafficPolicy,
trafficDistribution, allocateLoadBalancerNodePorts) and of EndpointSlice topology (nodeName,
zone, hints), Node readiness and zone, the golden text of the new flow kinds (OVS decodes
them to the same text when ovs-ofctl is installed), and the Service reconciler's external
addresses and log lines."""

from __future__ import annotations

import logging
import re
import types

import pytest

from flows.services import (
    MAX_LEARN_TIMEOUT,
    Endpoint,
    Service,
    ServiceError,
    ServicePort,
    endpoint_nodes,
    endpoints_from_pods,
    endpoints_from_slices,
    parse_service,
    service_flows,
)
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.k8s import ModelError, parse
from ovsctl.k8s.render import to_dict
from ovsctl.openflow import encode as ofconv
from tests.ofparse import HAVE_OVS_OFCTL, assert_ovs_decodes_as_text

HTTP = (("http", 8080, "TCP"),)
EP_A = Endpoint("10.244.0.2", HTTP, node_name="node-a")  # on this node (LOCAL_CIDR)
EP_B = Endpoint("10.244.1.3", HTTP, node_name="node-b")
LOCAL_CIDR = "10.244.0.0/24"
LB = "172.30.0.200"


def web(**kw) -> Service:
    kw.setdefault("ports", (ServicePort("http", 80, "TCP", 8080),))
    return Service("default", "web", kw.pop("cluster_ip", "10.96.0.10"), selector=None, **kw)


def svc_obj(status=None, **spec) -> dict:
    obj = {
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}], **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ingress(*entries) -> dict:
    return {"loadBalancer": {"ingress": list(entries)}}


# -- parsing -------------------------------------------------------------------------------


def test_parse_the_new_fields():
    svc = parse_service(
        svc_obj(
            ingress({"ip": "172.30.0.200"}, {"ip": "172.30.0.200"}, {"ip": "172.30.0.201"}),
            type="LoadBalancer",
            externalIPs=["192.168.60.5", "192.168.60.5"],
            loadBalancerClass="ovsctl.io/lb",
            loadBalancerSourceRanges=["172.30.0.1/24", " 10.0.0.0/8", "fd00:172::/48"],
            internalTrafficPolicy="Local",
            externalTrafficPolicy="Local",
            trafficDistribution="PreferClose",
            allocateLoadBalancerNodePorts=False,
        )
    )
    assert svc.lb_ingress == ("172.30.0.200", "172.30.0.201")
    assert svc.external_ips == ("192.168.60.5",)
    assert svc.external_addrs == ("172.30.0.200", "172.30.0.201", "192.168.60.5")
    assert svc.lb_class == "ovsctl.io/lb"
    assert svc.source_ranges == ("172.30.0.0/24", "10.0.0.0/8", "fd00:172::/48")
    assert svc.internal_local and svc.external_local
    assert svc.traffic_distribution == "PreferClose"
    assert svc.allocate_lb_node_ports is False
    assert svc.notes == ()


def test_parse_defaults_of_the_new_fields():
    svc = parse_service(svc_obj())
    assert (svc.external_ips, svc.lb_ingress, svc.source_ranges) == ((), (), ())
    assert svc.lb_class is None and svc.traffic_distribution is None
    assert not svc.internal_local and not svc.external_local
    assert svc.allocate_lb_node_ports is True
    assert svc.notes == ()


def test_hostname_only_and_proxy_ingress_are_noted_not_programmed():
    svc = parse_service(
        svc_obj(
            ingress(
                {"hostname": "lb.example.com"},
                {"ip": "172.30.0.9", "ipMode": "Proxy"},
                {"ip": "172.30.0.10", "ipMode": "VIP"},
            ),
            type="LoadBalancer",
        )
    )
    assert svc.lb_ingress == ("172.30.0.10",)
    assert len(svc.notes) == 2
    assert "status.loadBalancer.ingress[0]: hostname 'lb.example.com'" in svc.notes[0]
    assert "Service shop/web" in svc.notes[0]
    assert "ingress[1]: ip 172.30.0.9 has ipMode Proxy" in svc.notes[1]


def test_unknown_traffic_distribution_is_noted_and_ignored():
    svc = parse_service(svc_obj(trafficDistribution="PreferMars"))
    assert svc.traffic_distribution is None
    (note,) = svc.notes
    assert "Service shop/web: spec.trafficDistribution 'PreferMars'" in note and "ignored" in note


def test_addresses_of_a_family_the_service_lacks_are_noted():
    svc = parse_service(svc_obj(ingress({"ip": "fd00::c8"}), type="LoadBalancer",
                                externalIPs=["fd00::9", "192.168.60.5"]))  # fmt: skip
    assert svc.external_addrs == ("192.168.60.5",)
    assert len(svc.notes) == 2 and all("not of the Service's IP families" in n for n in svc.notes)


def test_affinity_timeout_beyond_the_cap_is_noted():
    svc = parse_service(
        svc_obj(
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}},
        )
    )
    assert svc.affinity_timeout == 86400
    (note,) = svc.notes
    assert "spec.sessionAffinityConfig.clientIP.timeoutSeconds 86400 is capped at 65535" in note
    capped = parse_service(
        svc_obj(
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 65535}},
        )
    )
    assert capped.notes == ()


@pytest.mark.parametrize(
    "spec, status, field",
    [
        ({"externalIPs": "1.2.3.4"}, None, "spec.externalIPs"),
        ({"externalIPs": ["1.2.3.4", "nope"]}, None, "spec.externalIPs[1]"),
        ({}, {"loadBalancer": {"ingress": [{"ip": "300.1.1.1"}]}}, "status.loadBalancer.ingress[0].ip"),
        ({}, {"loadBalancer": {"ingress": ["172.30.0.1"]}}, "status.loadBalancer.ingress[0]"),
        ({}, {"loadBalancer": {"ingress": {"ip": "1.2.3.4"}}}, "status.loadBalancer.ingress"),
        ({}, {"loadBalancer": "x"}, "status.loadBalancer"),
        ({}, ingress({"ip": "1.2.3.4", "ipMode": "Direct"}), "status.loadBalancer.ingress[0].ipMode"),
        ({"loadBalancerClass": ""}, None, "spec.loadBalancerClass"),
        ({"loadBalancerClass": 7}, None, "spec.loadBalancerClass"),
        ({"loadBalancerSourceRanges": ["10.0.0.0/33"]}, None, "spec.loadBalancerSourceRanges[0]"),
        ({"loadBalancerSourceRanges": ["10.0.0.0/8", "10.0.0.1"]}, None, "spec.loadBalancerSourceRanges[1]"),
        ({"loadBalancerSourceRanges": [8]}, None, "spec.loadBalancerSourceRanges[0]"),
        ({"loadBalancerSourceRanges": "10.0.0.0/8"}, None, "spec.loadBalancerSourceRanges"),
        ({"internalTrafficPolicy": "Node"}, None, "spec.internalTrafficPolicy"),
        ({"externalTrafficPolicy": "local"}, None, "spec.externalTrafficPolicy"),
        ({"allocateLoadBalancerNodePorts": "no"}, None, "spec.allocateLoadBalancerNodePorts"),
    ],
)  # fmt: skip
def test_invalid_fields_name_the_service_and_the_field(spec, status, field):
    with pytest.raises(ServiceError) as e:
        parse_service(svc_obj(status, type="LoadBalancer", **spec))
    assert str(e.value).startswith(f"Service shop/web: {field}"), e.value


def test_slice_topology_and_hints():
    skipped: list[str] = []
    eps = endpoints_from_slices(
        [
            {
                "metadata": {"name": "web-1"},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {
                        "addresses": ["10.244.0.2"],
                        "nodeName": "node-a",
                        "zone": "zone-a",
                        "hints": {
                            "forZones": [{"name": "zone-a"}, {"name": "zone-b"}],
                            "forNodes": [{"name": "node-a"}],
                        },
                    },
                    {"addresses": ["10.244.1.3"], "nodeName": 5, "hints": {"forZones": [{}]}},
                    {"addresses": ["10.244.1.4"], "hints": "zone-a"},
                ],
            }
        ],
        skipped,
    )
    assert eps[0] == Endpoint(
        "10.244.0.2", HTTP, node_name="node-a", zone="zone-a",
        for_zones=("zone-a", "zone-b"), for_nodes=("node-a",),
    )  # fmt: skip
    # what is not as the API says is left out, the endpoint kept
    assert eps[1] == Endpoint("10.244.1.3", HTTP) and eps[2] == Endpoint("10.244.1.4", HTTP)
    assert skipped == [
        "EndpointSlice web-1.endpoints[1].nodeName 5: not a string, ignored",
        "EndpointSlice web-1.endpoints[1].hints.forZones: every entry needs a name, ignored",
        "EndpointSlice web-1.endpoints[2].hints: not an object, ignored",
    ]


def test_endpoints_from_pods_know_their_node_and_zone():
    pod = types.SimpleNamespace(
        namespace="default", name="p", ip="10.244.1.3", ips=("10.244.1.3",), ready=True,
        terminating=False, label_dict=lambda: {"app": "web"}, named_port=lambda *a: None,
    )  # fmt: skip
    svc = Service("default", "web", "10.96.0.10", (ServicePort("http", 80, "TCP", 8080),),
                  (("app", "web"),))  # fmt: skip
    (ep,) = endpoints_from_pods(svc, [pod], {("default", "p"): "node-b"}, {"node-b": "zone-b"})
    assert (ep.node_name, ep.zone) == ("node-b", "zone-b")
    (ep,) = endpoints_from_pods(svc, [pod])
    assert (ep.node_name, ep.zone) == ("", "")


def test_endpoint_nodes_are_the_nodes_of_ready_endpoints():
    eps = [
        Endpoint("10.244.0.2", HTTP, node_name="node-a"),
        Endpoint("10.244.1.3", HTTP, ready=False, node_name="node-b"),
        Endpoint("10.244.2.3", HTTP),
        Endpoint("10.244.3.3", HTTP, node_name="node-c"),
    ]
    assert endpoint_nodes(eps) == {"node-a", "node-c"}


def node_obj(**status) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": status,
    }


@pytest.mark.parametrize(
    "conditions, ready",
    [
        (None, True),
        ([], True),
        ([{"type": "MemoryPressure", "status": "False"}], True),
        ([{"type": "Ready", "status": "True"}], True),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
    ],
)
def test_node_ready_and_zone(conditions, ready):
    node = parse(node_obj(**({} if conditions is None else {"conditions": conditions})))
    assert node.ready is ready and node.zone == "zone-a"
    assert parse(to_dict(node)) == node


@pytest.mark.parametrize(
    "conditions, path",
    [
        ("Ready", "status.conditions"),
        ([{"type": "Ready", "status": "Yes"}], "status.conditions[0].status"),
        ([{"type": "Ready"}], "status.conditions[0].status"),
        ([{"status": "True"}], "status.conditions[0].type"),
    ],
)
def test_bad_node_conditions_name_the_field(conditions, path):
    with pytest.raises(ModelError) as e:
        parse(node_obj(conditions=conditions))
    assert path in str(e.value) and "Node n1" in str(e.value)


# -- golden ----------------------------------------------------------------------------------

# fmt: off
# LoadBalancer (externalTrafficPolicy Cluster) with loadBalancerSourceRanges 172.30.0.0/24, on
# the node of 10.244.0.2: what the ingress address adds besides the ClusterIP's flows.
GOLDEN_LB_CLUSTER_RANGES = {
    "cookie=0x541c337e7a4, table=35, priority=190,tcp,nw_dst=172.30.0.200,tp_dst=80 actions=drop",
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_src=172.30.0.0/24,nw_dst=172.30.0.200,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=35, priority=210,tcp,reg0=0x1/0xf,nw_src=172.30.0.0/24,nw_dst=172.30.0.200,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0/0xffff,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
    "cookie=0x541c337e7a4, table=36, priority=200,tcp,reg3=0x1/0xffff,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080))",
    "cookie=0x541c337e7a4, table=36, priority=220,tcp,reg0=0x1/0xf,reg3=0/0xffff,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080),exec(set_field:0x1->ct_mark))",
    "cookie=0x541c337e7a4, table=36, priority=220,tcp,reg0=0x1/0xf,reg3=0x1/0xffff,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080),exec(set_field:0x1->ct_mark))",
}

# externalTrafficPolicy Local: from the gateway only the local endpoint, no ct_mark (no SNAT)
GOLDEN_LB_LOCAL_GATEWAY = {
    "cookie=0x541c337e7a4, table=35, priority=210,tcp,reg0=0x1/0xf,nw_dst=172.30.0.200,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,1,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=220,tcp,reg0=0x1/0xf,reg3=0/0xffff,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
}

# externalTrafficPolicy Local, from the node itself (source: its gateway address): every
# endpoint, as from a pod, above the gateway's frontend (issue 18 review, P2-12)
GOLDEN_LB_LOCAL_HOST = {
    "cookie=0x541c337e7a4, table=35, priority=215,tcp,reg0=0x1/0xf,nw_src=10.244.0.1,nw_dst=172.30.0.200,tp_dst=80 actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG3[0..15]),goto_table:36",
    "cookie=0x541c337e7a4, table=36, priority=225,tcp,reg0=0x1/0xf,reg3=0/0xffff,nw_src=10.244.0.1,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
    "cookie=0x541c337e7a4, table=36, priority=225,tcp,reg0=0x1/0xf,reg3=0x1/0xffff,nw_src=10.244.0.1,nw_dst=172.30.0.200,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=10.244.1.3:8080))",
}

# externalTrafficPolicy Local on a node without a local endpoint: from the gateway dropped
GOLDEN_LB_LOCAL_NONE_HERE = {
    "cookie=0x541c337e7a4, table=35, priority=210,tcp,reg0=0x1/0xf,nw_dst=172.30.0.200,tp_dst=80 actions=drop",
}

# an external IPv6 address with affinity, from the gateway: the remembered endpoint (230)
GOLDEN_EXTERNAL_AFFINITY_V6 = {
    "cookie=0x541c337e7a4, table=36, priority=230,tcp6,reg0=0x21/0x2f,reg5=0x1f90/0xffff,reg8=0xfd000010,reg9=0x2440000,reg10=0,reg11=0x2,ipv6_dst=fd00:172:30::c8,tp_dst=80 actions=ct(commit,table=37,zone=65000,nat(dst=[fd00:10:244::2]:8080),exec(set_field:0x1->ct_mark))",
}

# internalTrafficPolicy Local without a local endpoint: the ClusterIP refuses
GOLDEN_ITP_LOCAL_NONE = {
    "cookie=0x541c337e7a4, table=35, priority=200,tcp,nw_dst=10.96.0.10,tp_dst=80 actions=controller(max_len=256,meter_id=2)",
}
# fmt: on


def texts(flows, keep=lambda t: True) -> set[str]:
    return {f.text() for f in flows if keep(f.text())}


def lb(**kw) -> Service:
    return web(type="LoadBalancer", lb_ingress=(LB,), **kw)


def test_lb_cluster_with_source_ranges_golden():
    flows = service_flows(lb(source_ranges=("172.30.0.0/24",)), [EP_A, EP_B], LOCAL_CIDR)
    assert texts(flows, lambda t: LB in t) == GOLDEN_LB_CLUSTER_RANGES


def test_lb_local_golden():
    flows = service_flows(lb(external_local=True), [EP_A, EP_B], LOCAL_CIDR)
    outside = lambda t: "reg0=0x1/0xf" in t and "nw_src=10.244.0.1" not in t  # noqa: E731
    assert texts(flows, outside) == GOLDEN_LB_LOCAL_GATEWAY
    # the node's own processes (source: the gateway's address) are in-cluster clients
    assert texts(flows, lambda t: "nw_src=10.244.0.1" in t) == GOLDEN_LB_LOCAL_HOST
    elsewhere = service_flows(lb(external_local=True), [EP_B], LOCAL_CIDR)
    assert texts(elsewhere, outside) == GOLDEN_LB_LOCAL_NONE_HERE


def test_external_ipv6_affinity_golden():
    svc = web(
        cluster_ip="fd00:10:96::a",
        type="LoadBalancer",
        lb_ingress=("fd00:172:30::c8",),
        affinity_timeout=600,
    )
    flows = service_flows(svc, [Endpoint("fd00:10:244::2", HTTP)], "fd00:10:244::/64")
    assert texts(flows, lambda t: "priority=230" in t) == GOLDEN_EXTERNAL_AFFINITY_V6


def test_itp_local_golden():
    flows = service_flows(web(internal_local=True), [EP_B], LOCAL_CIDR, "node-a", "zone-a")
    assert texts(flows) == GOLDEN_ITP_LOCAL_NONE


def test_old_call_form_still_works_and_is_unchanged_for_old_services():
    old = service_flows(web(), [EP_A, EP_B], LOCAL_CIDR)
    assert old == service_flows(web(), [EP_A, EP_B], LOCAL_CIDR, "node-a", "zone-a")
    assert old == service_flows(web(), [EP_A, EP_B], LOCAL_CIDR, node_name="x", zone="y")


def golden_flows() -> list:
    svc6 = web(cluster_ip="fd00:10:96::a", type="LoadBalancer", lb_ingress=("fd00:172:30::c8",),
               affinity_timeout=600)  # fmt: skip
    out = (
        service_flows(lb(source_ranges=("172.30.0.0/24",)), [EP_A, EP_B], LOCAL_CIDR)
        | service_flows(lb(external_local=True), [EP_A, EP_B], LOCAL_CIDR)
        | service_flows(lb(external_local=True), [EP_B], LOCAL_CIDR)
        | service_flows(svc6, [Endpoint("fd00:10:244::2", HTTP)], "fd00:10:244::/64")
        | service_flows(web(internal_local=True), [EP_B], LOCAL_CIDR)
    )
    return sorted(out, key=lambda f: (f.table_id, -f.priority, f.text()))


@pytest.mark.skipif(not HAVE_OVS_OFCTL, reason="ovs-ofctl not installed")
def test_ovs_decodes_the_new_flow_kinds_as_their_text():
    flows = golden_flows()
    ofconv.check_encodable(flows)
    assert_ovs_decodes_as_text(flows)


# -- the reconciler ------------------------------------------------------------------------


class Obj:
    """A cluster object as the agent's cluster dict holds it (Generic-like)."""

    def __init__(self, body):
        self.body = body

    def obj(self):
        return self.body

    def __eq__(self, other):
        return isinstance(other, Obj) and other.body == self.body

    def __hash__(self):
        return 0


def cluster_with(*svcs, slices=(), nodes=()) -> dict:
    out = {}
    for s in svcs:
        meta = s["metadata"]
        out[("Service", meta["namespace"], meta["name"])] = Obj(s)
    for sl in slices:
        out[("EndpointSlice", "shop", sl["metadata"]["name"])] = Obj(sl)
    for n in nodes:
        out[("Node", "", n.name)] = n
    return out


def slice_of(svc: str, *eps) -> dict:
    return {
        "metadata": {"name": f"{svc}-1", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": list(eps),
    }


def view():
    from flows.policy import View

    return View()


def test_reconciler_returns_external_addresses_and_logs_notes_once(caplog):
    a = svc_obj(ingress({"ip": LB}, {"hostname": "x.example"}), type="LoadBalancer",
                externalIPs=["192.168.60.5"], sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 80000}})  # fmt: skip
    b = svc_obj(externalIPs=["192.168.60.6"])
    b["metadata"]["name"] = "other"
    bad = svc_obj(externalIPs=["nope"])
    bad["metadata"]["name"] = "bad"
    cluster = cluster_with(a, b, bad)
    rec = ServiceReconciler(cluster, LOCAL_CIDR, SkipLog(), node_name="node-a")
    with caplog.at_level(logging.ERROR):
        owners, node_ports = rec.owners(view())
        rec.owners(view())
    assert rec.external_addrs == {LB, "192.168.60.5", "192.168.60.6"}
    assert set(rec.parsed) == {"shop/web", "shop/other"}
    logged = [r.getMessage() for r in caplog.records]
    assert sum("capped at 65535" in m for m in logged) == 1
    assert sum("hostname 'x.example'" in m for m in logged) == 1
    assert sum("Service shop/bad: spec.externalIPs[0]" in m for m in logged) == 1
    del cluster[("Service", "shop", "web")]
    rec.owners(view(), everything=False)
    assert rec.external_addrs == {"192.168.60.6"}


def test_reconciler_locality_by_node_name_and_zone_changes():
    from ovsctl.k8s.objects import Node

    s = svc_obj(trafficDistribution="PreferClose")
    sl = slice_of(
        "web",
        {"addresses": ["10.244.5.2"], "nodeName": "node-a", "zone": "zone-a"},
        {"addresses": ["10.244.6.2"], "nodeName": "node-b", "zone": "zone-b"},
    )
    here = Node("node-a", labels={"topology.kubernetes.io/zone": "zone-a"})
    cluster = cluster_with(s, slices=[sl], nodes=[here, Node("node-b")])
    rec = ServiceReconciler(cluster, LOCAL_CIDR, SkipLog(), node_name="node-a")

    def targets(owners):
        (flows,) = owners.values()
        return {m for f in flows for m in re.findall(r"nat\(dst=([0-9.]+)", f.text())}

    assert targets(rec.owners(view())[0]) == {"10.244.5.2"}
    # the node's zone label changes: the Service is recomputed without any Service event
    cluster[("Node", "", "node-a")] = Node("node-a", labels={"topology.kubernetes.io/zone": "z"})
    assert targets(rec.owners(view(), everything=False)[0]) == {"10.244.5.2", "10.244.6.2"}
    # internalTrafficPolicy Local: the endpoint whose nodeName is this node (not in its CIDR)
    s2 = svc_obj(internalTrafficPolicy="Local")
    cluster[("Service", "shop", "web")] = Obj(s2)
    assert targets(rec.owners(view(), everything=False)[0]) == {"10.244.5.2"}


def test_reconciler_caps_learns_idle_timeout():
    s = svc_obj(
        sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}}
    )
    sl = slice_of("web", {"addresses": ["10.244.0.2"]})
    rec = ServiceReconciler(cluster_with(s, slices=[sl]), LOCAL_CIDR, SkipLog())
    (flows,) = rec.owners(view())[0].values()
    learns = [a for f in flows for a in f.actions if type(a).__name__ == "Learn"]
    assert learns and all(a.idle_timeout == MAX_LEARN_TIMEOUT for a in learns)
