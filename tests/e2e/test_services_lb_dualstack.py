"""Services complete (#18) on a dual-stack lab, real packets from the external host over IPv6:
an external IP routed ECMP to the nodes' IPv6 underlay addresses, and ovsctl's own pool's IPv6
address (fd00:172:30::b0/124) answered by Neighbor Solicitation on the node network; the
`lab probe --services --json --family 6` keys."""

from __future__ import annotations

import json

import pytest
import yaml

from ovsctl.lab import lbaddr
from tests.e2e.test_services_lb import lab_cli

NS = "lbd"
OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    *[
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"w{k}", "namespace": NS, "labels": {"app": "web"}},
            "spec": {
                "nodeName": f"node{k}",
                "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}],
            },
        }
        for k in range(2)
    ],
    *[
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "type": "LoadBalancer",
                "ipFamilyPolicy": "PreferDualStack",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                **extra,
            },
        }
        for name, extra in (
            ("x", {"externalIPs": ["192.0.2.60", "2001:db8::60"]}),
            ("p", {"loadBalancerClass": lbaddr.LB_CLASS}),
        )
    ],
]


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(
        2,
        yaml.safe_dump_all(OBJECTS),
        source="api",
        cluster_cidr="10.244.0.0/16,fd00:10:244::/56",
    )


def test_ipv6_external_ip_and_pool_address_from_the_external_host(lab):
    from tests.helpers import wait_for

    routes = lab.ext_routes()
    assert routes["2001:db8::60"] == ["fd00:172:30::a", "fd00:172:30::b"]
    assert routes["192.0.2.60"] == ["172.30.0.10", "172.30.0.11"]

    def pool_v6():
        svc = next(s for s in lab.services() if s["name"] == "p")
        return [a for a in svc["loadBalancerIngress"] if ":" in a]

    v6 = wait_for(pool_v6, 30, what="the agents' IPv6 pool address")[0]
    assert v6.startswith("fd00:172:30::b")  # fd00:172:30::b0/124
    res = json.loads(lab_cli(lab, "probe", "--services", "--json", "--family", "6"))
    assert res[f"ext->svc:{NS}/x:80/TCP@2001:db8::60"] is True, res
    assert res[f"ext->svc:{NS}/p:80/TCP@{v6}"] is True, res
    assert not any("@192.0.2.60" in k for k in res)  # --family 6: the IPv6 addresses only
