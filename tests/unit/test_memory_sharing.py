"""What keeps an agent at 50,000 pods small: model objects and the View's pod entries have no
per-object __dict__, and pods of one template share their labels and ports."""

from __future__ import annotations

from flows.family import ordered
from flows.policy import PodInfo
from ovsctl.agent.reconcile.viewindex import _pod_info
from ovsctl.k8s import model


def _pod(name: str, ip: str, ip6: str = "") -> model.Pod:
    ips = [{"ip": ip}] + ([{"ip": ip6}] if ip6 else [])
    return model.parse(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web", "t": "1"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}],
            },
            "status": {"podIP": ip, "podIPs": ips, "phase": "Running"},
        }
    )


def test_pods_of_one_template_share_labels_and_ports_in_the_view():
    a, b = _pod("a", "10.0.0.1"), _pod("b", "10.0.0.2")
    assert a.labels is b.labels
    ia, ib = _pod_info(a), _pod_info(b)
    assert ia.labels == (("app", "web"), ("t", "1")) and ia.labels is ib.labels
    assert ia.ports == (("http", 80, "TCP"),) and ia.ports is ib.ports
    assert (ia.ip, ia.ips, ib.ip) == ("10.0.0.1", ("10.0.0.1",), "10.0.0.2")


def test_pod_addresses_one_string_each_and_no_instance_dicts():
    p = _pod("a", "10.0.0.1", "fd00::1")
    assert p.ips == ("10.0.0.1", "fd00::1") and p.ips[0] is p.ip
    info = _pod_info(p)
    assert info.ips is p.ips  # already IPv4 first: no second tuple
    assert ordered(("fd00::1", "10.0.0.1")) == ("10.0.0.1", "fd00::1")
    for obj in (p, p.ports[0], info, model.parse({"apiVersion": "v1", "kind": "Node",
                                                  "metadata": {"name": "n1"}})):  # fmt: skip
        assert not hasattr(obj, "__dict__"), type(obj).__name__
    assert PodInfo("ns", "x", (), "10.0.0.9") == PodInfo("ns", "x", (), "10.0.0.9")
