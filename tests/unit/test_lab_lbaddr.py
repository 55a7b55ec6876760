"""The lab's external allocator and cloud load balancer (ovsctl/lab/lbaddr.py): pure."""

import pytest

from ovsctl.lab import lbaddr
from ovsctl.lab.base import LabError


def svc(name="web", ns="default", lb_class=None, status=None, ext_ips=None, etp=None, **spec):
    body = {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]},
    }
    body["spec"].update(spec)
    if lb_class:
        body["spec"]["loadBalancerClass"] = lb_class
    if ext_ips:
        body["spec"]["externalIPs"] = ext_ips
    if etp:
        body["spec"]["externalTrafficPolicy"] = etp
    if status:
        body["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in status]}}
    return body


def test_lowest_free_then_kept_on_reapply_and_freed():
    a = svc("a")
    assert lbaddr.fill_ingress(a, {}, set(), "Service default/a")
    assert lbaddr.ingress_ips(a) == ["172.30.0.200"]
    b = svc("b")
    lbaddr.fill_ingress(b, {}, {"172.30.0.200"}, "Service default/b")
    assert lbaddr.ingress_ips(b) == ["172.30.0.201"]
    # b re-applied (no status in the manifest) keeps its own even when a lower one is free
    b2 = svc("b")
    assert lbaddr.fill_ingress(b2, b, set(), "Service default/b")
    assert lbaddr.ingress_ips(b2) == ["172.30.0.201"]
    # a deleted: its address is the lowest free again
    c = svc("c")
    lbaddr.fill_ingress(c, {}, {"172.30.0.201"}, "Service default/c")
    assert lbaddr.ingress_ips(c) == ["172.30.0.200"]


def test_left_alone_class_given_status_and_other_types():
    mine = svc("p", lb_class=lbaddr.LB_CLASS)
    assert not lbaddr.fill_ingress(mine, {}, set(), "r")
    assert lbaddr.ingress_ips(mine) == []
    # the agents' status survives a re-apply of the spec (as the API server keeps status)
    stored = svc("p", lb_class=lbaddr.LB_CLASS, status=["172.30.0.177"])
    again = svc("p", lb_class=lbaddr.LB_CLASS)
    assert lbaddr.fill_ingress(again, stored, set(), "r")
    assert lbaddr.ingress_ips(again) == ["172.30.0.177"]
    given = svc("g", status=["192.0.2.9"])
    assert not lbaddr.fill_ingress(given, {}, set(), "r")
    assert lbaddr.ingress_ips(given) == ["192.0.2.9"]
    plain = svc("n", type="NodePort")
    assert not lbaddr.fill_ingress(plain, {}, set(), "r")
    assert "status" not in plain


def test_range_exhausted_names_service_and_field():
    used = {str(a) for a in lbaddr.LB_RANGE}
    with pytest.raises(LabError, match=r"Service default/x: status.loadBalancer.ingress"):
        lbaddr.fill_ingress(svc("x"), {}, used, "Service default/x")


def test_pool_apart_from_range():
    import netaddr

    assert not set(netaddr.IPNetwork(lbaddr.LB_POOL)) & set(lbaddr.LB_RANGE)
    assert netaddr.IPNetwork(lbaddr.LB_POOL) in netaddr.IPNetwork("172.30.0.0/24")


NODES = {
    "node0": ["172.30.0.10", "fd00:172:30::a"],
    "node1": ["172.30.0.11", "fd00:172:30::b"],
    "node2": ["172.30.0.12", "fd00:172:30::c"],
}


def pod(name, node, labels, ready=True, ns="default"):
    return {
        "namespace": ns,
        "name": name,
        "node": node,
        "ip": "10.244.0.5",
        "labels": labels,
        "ready": ready,
    }


def test_routes_ecmp_over_up_nodes_and_local_endpoints():
    cluster = svc("c", status=["172.30.0.200"], ext_ips=["192.0.2.10", "2001:db8::10"])
    local = svc("l", status=["172.30.0.201"], etp="Local")
    announced = svc("p", lb_class=lbaddr.LB_CLASS, status=["172.30.0.177"])
    pods = {
        "default/l1": pod("l1", "node1", {"app": "l"}),
        "default/l2": pod("l2", "node2", {"app": "l"}, ready=False),
        "other/l3": pod("l3", "node0", {"app": "l"}, ns="other"),
    }
    r = lbaddr.ext_routes([cluster, local, announced], pods, NODES, {"node2"})
    assert r == {
        "172.30.0.200": ["172.30.0.10", "172.30.0.11"],
        "192.0.2.10": ["172.30.0.10", "172.30.0.11"],
        "2001:db8::10": ["fd00:172:30::a", "fd00:172:30::b"],
        "172.30.0.201": ["172.30.0.11"],
    }
    # no ready local endpoint anywhere: every node that is up (they drop it)
    r = lbaddr.ext_routes([local], {}, NODES, set())
    assert r == {"172.30.0.201": ["172.30.0.10", "172.30.0.11", "172.30.0.12"]}


def test_route_commands_and_parse():
    have = lbaddr.parse_routes(
        [
            {
                "dst": "172.30.0.200",
                "nexthops": [{"gateway": "172.30.0.11"}, {"gateway": "172.30.0.10"}],
            },
            {"dst": "172.30.0.209", "gateway": "172.30.0.10"},
        ]
    )
    assert have == {"172.30.0.200": ["172.30.0.10", "172.30.0.11"], "172.30.0.209": ["172.30.0.10"]}
    want = {"172.30.0.200": ["172.30.0.10", "172.30.0.11"], "2001:db8::1": ["fd00:172:30::a"]}
    assert lbaddr.route_commands(want, have) == [
        ["route", "del", "172.30.0.209/32", "proto", lbaddr.PROTO],
        ["route", "replace", "2001:db8::1/128", "proto", lbaddr.PROTO, "via", "fd00:172:30::a"],
    ]
    cmds = lbaddr.route_commands({"172.30.0.202": ["172.30.0.10", "172.30.0.12"]}, {})
    assert cmds == [
        ["route", "replace", "172.30.0.202/32", "proto", lbaddr.PROTO]
        + ["nexthop", "via", "172.30.0.10", "nexthop", "via", "172.30.0.12"]
    ]


def test_api_mirror_keeps_status_and_stores_written_status(tmp_path):
    """The lab's API server: a spec update keeps the status a client wrote (as the real server
    does), and a written status reaches the state directory (the lab's storage)."""
    import yaml as y

    from ovsctl.k8s import model
    from ovsctl.k8s.source import Event
    from ovsctl.lab.apiserver import FakeAPI, mirror, store_status

    body = svc("p", lb_class=lbaddr.LB_CLASS)
    body.update(apiVersion="v1", kind="Service")
    api = FakeAPI()
    mirror(api, [Event("ADDED", model.parse(body))])
    obj = api.get("Service", "p", "default")
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.176"}]}}
    api.update(obj)
    mirror(api, [Event("MODIFIED", model.parse(body))])  # re-applied without status
    assert api.get("Service", "p", "default")["status"] == obj["status"]
    f = tmp_path / "Service-default.p.yaml"
    f.write_text(y.safe_dump(body))
    store_status(str(tmp_path), api.get("Service", "p", "default"))
    assert lbaddr.ingress_ips(y.safe_load(f.read_text())) == ["172.30.0.176"]
    store_status(str(tmp_path), {"metadata": {"namespace": "default", "name": "gone"}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Service-default.p.yaml"]
