"""MACs of IPv6 addresses (issue 16): on an IPv6-only cluster every node's gateway and pods get
their own MAC (the last four bytes alone gave every node's gateway fd00:10:244:k::1 the same
one, and the remote gateway's L2 flow then took the local gateway's traffic to the tunnel)."""

from __future__ import annotations

import netaddr
import pytest

from flows.model import NodeNet, RemoteNode, mac_from_ip


@pytest.mark.parametrize(
    "ip, mac",
    [
        ("fd00:10:244:1::5", "0a:58:ff:55:00:05"),
        ("fd00:10:244::1", "0a:58:ff:54:00:01"),
        ("fd00:10:244:2::1", "0a:58:ff:56:00:01"),
        ("10.244.1.5", "0a:58:0a:f4:01:05"),  # IPv4: its bytes, as always
    ],
)
def test_mac_from_ip(ip, mac):
    assert mac_from_ip(ip) == mac


def test_ipv6_only_nodes_gateways_and_pods_have_distinct_macs():
    cidrs = [f"fd00:10:244:{k:x}::/64" for k in range(64)]
    gws = [NodeNet.for_cidrs([c], 2).gw_mac for c in cidrs]
    assert len(set(gws)) == len(gws)
    assert RemoteNode("n1", cidrs[1], "172.30.0.11").gw_mac == gws[1]
    pods = {mac_from_ip(str(netaddr.IPNetwork(c)[h])) for c in cidrs for h in range(1, 300)}
    assert len(pods) == 64 * 299
