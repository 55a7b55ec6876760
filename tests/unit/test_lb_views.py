"""Service addresses in the views: /cluster's services carry external_ips, lb_ingress,
lb_class and announced {address: holder}; /status lists every Service's addresses and the
LB pool; `ovsctl status` prints them (text and --json)."""

from __future__ import annotations

import json
import types

from flows.policy import View
from ovsctl.agent.reconcile import SkipLog, lbpool
from ovsctl.agent.reconcile.lbannounce import LBAnnouncer
from ovsctl.agent.reconcile.services import ServiceReconciler
from ovsctl.agent.views import Views
from ovsctl.k8s.model import parse
from ovsctl.tools import statusview
from tests.unit.test_lb_writer import node, service

POOL = lbpool.parse_pool(["172.30.0.192/30"])


def agent_with(*bodies):
    cluster = {}
    for body in bodies:
        obj = parse(body)
        cluster[obj.key] = obj
    lb = LBAnnouncer(cluster, "node1", POOL)
    svcs = ServiceReconciler(cluster, "10.244.0.0/24", SkipLog(), node_name="node1")
    svcs.lb_assignments = lb.assignments
    svcs.owners(View({}, [], {}))
    lb.update(svcs.external_addrs, svcs.parsed)  # no host attached: the holders only
    return types.SimpleNamespace(cluster=cluster, services=svcs, lb=lb)


def test_cluster_view_services_have_addresses_and_holders():
    ext = service("ext", cls=None, type_="ClusterIP")
    ext["spec"]["externalIPs"] = ["192.0.2.7"]
    a = agent_with(service("web"), service("cloud", cls="example.com/lb",
                   ingress=("203.0.113.1",)), ext, node("node1"), node("node2"))  # fmt: skip
    views = Views(a)
    by_name = {}
    parsed, holders = views._lb_state()
    for key, obj in a.cluster.items():
        if key[0] == "Service":
            svc = views._service(key, obj, parsed)
            by_name[svc.name] = views._addresses(svc, holders)
    web_holder = lbpool.holder("172.30.0.192", {"node1", "node2"})
    assert by_name["web"] == {"external_ips": [], "lb_ingress": ["172.30.0.192"],
                              "lb_class": "ovsctl.io/lb",
                              "announced": {"172.30.0.192": web_holder}}  # fmt: skip
    assert by_name["cloud"]["announced"] == {}  # someone else's class: not announced by us
    assert by_name["cloud"]["lb_ingress"] == ["203.0.113.1"]
    assert by_name["ext"]["external_ips"] == ["192.0.2.7"]
    rows = views.services_status()
    assert [r["name"] for r in rows] == ["default/cloud", "default/ext", "default/web"]
    text = statusview.render({"services": rows, "lb_pool": {"pool": ["172.30.0.192-172.30.0.195"],
                             "writer": None, "held": ["172.30.0.192"]}}, now=0)  # fmt: skip
    assert f"172.30.0.192 (held by {web_holder})" in text
    assert "lb pool   172.30.0.192-172.30.0.195; writer none; held here: 172.30.0.192" in text
    assert "lb [example.com/lb] 203.0.113.1" in text and "external 192.0.2.7" in text
    json.dumps(rows)  # --json prints /status as it is


def test_no_eligible_node_shows_no_holder():
    a = agent_with(service("web"), node("node1", ready=False))
    rows = Views(a).services_status()
    assert rows[0]["announced"] == {"172.30.0.192": None}
    assert "172.30.0.192 (no holder)" in statusview.render({"services": rows}, now=0)
