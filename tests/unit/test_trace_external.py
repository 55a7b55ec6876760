"""`trace` from outside the cluster (#18): an address that is a Service's LoadBalancer ingress
or external IP, in the agent's /cluster view, resolves to that Service."""

from __future__ import annotations

import copy

from ovsctl.tools.trace import NodeView, resolve
from tests.unit.test_trace_ipv6 import CLUSTER


def view(**svc_fields) -> NodeView:
    c = copy.deepcopy(CLUSTER)
    c["services"][0].update(svc_fields)
    return NodeView(c, {"owners": {}, "desired": []})


def test_lb_ingress_and_external_ips_resolve_to_the_service():
    v = view(type="LoadBalancer", lb_ingress=["172.30.0.200"], external_ips=["192.0.2.50"])
    for addr in ("172.30.0.200", "192.0.2.50"):
        end = resolve(addr, v)
        assert (end.kind, end.ip, end.label) == ("service", addr, "svc:t/web")
    assert resolve("192.0.2.51", v).kind == "ip"


def test_an_older_agent_without_the_fields_leaves_a_plain_ip():
    assert resolve("172.30.0.200", view()).kind == "ip"
