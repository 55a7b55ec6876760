"""`ovsctl status` of a dual-stack node (issue 16): every address of the node and its pods,
each pod CIDR's IPAM figures, each peer's pod CIDRs; an IPv4-only status renders as before."""

from __future__ import annotations

from ovsctl.tools import statusview

DUAL = {
    "node": "node0",
    "node_ip": "172.30.0.10",
    "node_ips": ["172.30.0.10", "fd00:172:30::10"],
    "pod_cidrs": ["10.244.0.0/24", "fd00:10:244::/64"],
    "bridge": "br-int",
    "ready": "ok",
    "openflow": {"connected": True, "listen": "unix:/x", "round": 1, "reconnects": 1},
    "pods": [
        {
            "namespace": "default",
            "name": "pa",
            "ip": "10.244.0.2",
            "ips": ["10.244.0.2", "fd00:10:244::2"],
            "mac": "0a:58:0a:f4:00:02",
            "ofport": 3,
            "host_if": "ovs1234567890a",
        }
    ],
    "peers": [
        {
            "node": "node1",
            "node_ip": "172.30.0.11",
            "pod_cidr": "10.244.1.0/24",
            "pod_cidrs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        }
    ],
    "ipam": {
        "cidr": "10.244.0.0/24",
        "used": 1,
        "capacity": 253,
        "cidrs": [
            {"cidr": "10.244.0.0/24", "used": 1, "capacity": 253},
            {"cidr": "fd00:10:244::/64", "used": 1, "capacity": 18446744073709551613},
        ],
    },
}


def test_dual_stack_status_render():
    out = statusview.render(DUAL, now=1000.0)
    assert "node      node0 (172.30.0.10, fd00:172:30::10)   ready: ok" in out
    assert "ipam      10.244.0.0/24: 1 of 253 used\n" in out
    assert "\n          fd00:10:244::/64: 1 of 18446744073709551613 used\n" in out
    assert "172.30.0.11     10.244.1.0/24, fd00:10:244:1::/64" in out
    assert "default/pa                     10.244.0.2, fd00:10:244::2 0a:58:0a:f4:00:02" in out


def test_ipv4_only_status_render_is_as_before():
    v4 = {
        **DUAL,
        "node_ips": ["172.30.0.10"],
        "pod_cidrs": ["10.244.0.0/24"],
        "pods": [{**DUAL["pods"][0], "ips": ["10.244.0.2"]}],
        "peers": [{**DUAL["peers"][0], "pod_cidrs": ["10.244.1.0/24"]}],
        "ipam": {**DUAL["ipam"], "cidrs": DUAL["ipam"]["cidrs"][:1]},
    }
    old = {  # what an older agent sends (no lists): the same text
        **v4,
        "node_ips": None,
        "pods": [{k: v for k, v in v4["pods"][0].items() if k != "ips"}],
        "peers": [{k: v for k, v in v4["peers"][0].items() if k != "pod_cidrs"}],
        "ipam": {k: v for k, v in v4["ipam"].items() if k != "cidrs"},
    }
    assert statusview.render(v4, now=1000.0) == statusview.render(old, now=1000.0)
    out = statusview.render(v4, now=1000.0)
    assert "node      node0 (172.30.0.10)   ready: ok" in out
    assert "  default/pa                     10.244.0.2      0a:58:0a:f4:00:02  ofport 3" in out


def test_metrics_give_each_pod_cidrs_addresses(tmp_path):
    import types

    from ovsctl.agent.ipam import IPAM
    from ovsctl.agent.metrics import Metrics
    from ovsctl.openflow.sync import FlowSync

    ipam = IPAM(("10.244.0.0/24", "fd00:10:244::/120"), str(tmp_path))
    ipam.allocate("c1", "eth0")
    agent = types.SimpleNamespace(
        sync=FlowSync(), controller=None, source=None, events_total={}, ipam=ipam, pods={}
    )
    text = Metrics(agent).render().decode()
    assert 'ovsctl_ipam_addresses{state="used"} 1.0' in text
    assert 'ovsctl_ipam_addresses{state="free"} 252.0' in text
    assert 'ovsctl_ipam_cidr_addresses{cidr="10.244.0.0/24",state="used"} 1.0' in text
    assert 'ovsctl_ipam_cidr_addresses{cidr="fd00:10:244::/120",state="free"} 252.0' in text
