"""The pure parts of `ovsctl trace` for IPv6 and dual-stack (issue 16): which address a name
resolves to, and the packet spec handed to ofproto/trace (the switch itself is exercised in
tests/integration/test_ipv6_pipeline.py)."""

from __future__ import annotations

import pytest

from ovsctl.tools.trace import NodeView, Packet, TraceError, Tracer, resolve

CLUSTER = {
    "node": "n1",
    "node_ip": "192.168.50.10",
    "gateway": {"ip": "10.244.0.1", "mac": "0a:58:0a:f4:00:01", "ofport": 2},
    "tunnel_ofport": 1,
    "nodes": [
        {"name": "n1", "ip": "192.168.50.10", "pod_cidr": "10.244.0.0/24",
         "ips": ["192.168.50.10"], "pod_cidrs": ["10.244.0.0/24", "fd00:10:244::/64"]},
        {"name": "n2", "ip": "192.168.50.11", "pod_cidr": "10.244.1.0/24",
         "ips": ["192.168.50.11"], "pod_cidrs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    ],
    "pods": [
        {"namespace": "t", "name": "a", "node": "n1", "ip": "10.244.0.2",
         "ips": ["10.244.0.2", "fd00:10:244::2"], "ports": [], "labels": {}, "local": None},
        {"namespace": "t", "name": "six", "node": "n1", "ip": "fd00:10:244::7",
         "ips": ["fd00:10:244::7"], "ports": [], "labels": {}, "local": None},
        {"namespace": "t", "name": "four", "node": "n1", "ip": "10.244.0.8",
         "ips": ["10.244.0.8"], "ports": [], "labels": {}, "local": None},
    ],
    "services": [
        {"namespace": "t", "name": "web", "cluster_ip": "10.96.0.10",
         "cluster_ips": ["10.96.0.10", "fd00:10:96::a"], "type": "ClusterIP",
         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "node_port": None}]},
    ],
    "namespaces": [],
    "policies": [],
}  # fmt: skip
VIEW = NodeView(CLUSTER, {"owners": {}, "desired": []})


@pytest.mark.parametrize(
    "spec, version, ip, kind",
    [
        ("t/a", None, "10.244.0.2", "pod"),
        ("t/a", 4, "10.244.0.2", "pod"),
        ("t/a", 6, "fd00:10:244::2", "pod"),
        ("fd00:10:244::2", None, "fd00:10:244::2", "pod"),
        ("svc:t/web", 6, "fd00:10:96::a", "service"),
        ("fd00:10:96::a", None, "fd00:10:96::a", "service"),
        ("fd00:99::1", None, "fd00:99::1", "ip"),
        ("t/six", None, "fd00:10:244::7", "pod"),
    ],
)
def test_resolve_per_family(spec, version, ip, kind):
    end = resolve(spec, VIEW, version)
    assert (end.ip, end.kind) == (ip, kind)


def test_a_name_without_an_address_of_the_family_is_an_error_naming_it():
    with pytest.raises(TraceError, match="pod t/four has no IPv6 address"):
        resolve("t/four", VIEW, 6)
    with pytest.raises(TraceError, match="pod t/six has no IPv4 address"):
        resolve("t/six", VIEW, 4)


def test_the_node_of_an_ipv6_pod_address():
    assert VIEW.node_of_pod_ip("fd00:10:244:1::5") == "n2"
    assert VIEW.node_of_pod_ip("10.244.1.5") == "n2"
    assert VIEW.node_of_pod_ip("fd00:10:245::5") is None


def test_ipv6_packet_specs_for_ofproto_trace():
    tcp = Packet("tcp", "fd00:10:244::2", "fd00:10:244::3", 40000, 80, 3, "0a:58:0a:f4:00:02",
                 "0a:58:0a:f4:00:01")  # fmt: skip
    assert tcp.flow() == (
        "tcp6,in_port=3,dl_src=0a:58:0a:f4:00:02,dl_dst=0a:58:0a:f4:00:01,"
        "ipv6_src=fd00:10:244::2,ipv6_dst=fd00:10:244::3,nw_ttl=64,tcp_src=40000,tcp_dst=80,"
        "tcp_flags=syn"
    )
    assert tcp.describe() == "tcp [fd00:10:244::2]:40000 -> [fd00:10:244::3]:80"
    ping = Packet("icmp", "fd00:10:244::2", "fd00:10:244::3", None, None, 3, "x", "y")
    assert ping.flow().startswith("icmp6,") and ping.flow().endswith(
        "icmpv6_type=128,icmpv6_code=0"
    )
    udp = Packet(
        "udp", "fd00::2", "fd00::3", 1, 53, 1, "x", "y", tun_src="1.1.1.1", tun_dst="2.2.2.2"
    )
    assert "udp6,in_port=1,tun_src=1.1.1.1,tun_dst=2.2.2.2,tun_id=0," in udp.flow()
    v4 = Packet("icmp", "10.0.0.1", "10.0.0.2", None, None, 3, "x", "y")
    assert v4.flow().endswith("nw_ttl=64,icmp_type=8,icmp_code=0")


class NoSwitch:
    def trace(self, flow, ct):  # never reached: the ends are refused first
        raise AssertionError(flow)


@pytest.mark.parametrize(
    "src, dst, family, words",
    [
        ("t/a", "10.244.0.8", 6, "one IP family"),
        ("10.244.0.2", "fd00:10:244::7", None, "one IP family"),
        ("t/four", "t/six", None, "share no IP family"),
    ],
)
def test_ends_of_two_families_are_refused(src, dst, family, words):
    tracer = Tracer({"n1": VIEW}, {"n1": NoSwitch()})
    with pytest.raises(TraceError, match=words):
        tracer.trace(src, dst, "tcp", 80, family=family)
