"""Agent configuration of addresses (issue 16): pod_cidrs / cluster_cidrs / node_ips beside the
single keys they extend, one per family, IPv4 first, and clear errors naming the key."""

from __future__ import annotations

import argparse

import pytest

from ovsctl import config
from ovsctl.config import AgentConfig, ConfigError, from_mapping


def load(**data) -> AgentConfig:
    return from_mapping(data).validate()


def test_single_stack_keys_mean_what_they_always_did():
    cfg = load(pod_cidr="10.244.1.7/24")
    assert cfg.pod_cidr == "10.244.1.0/24" and cfg.pod_cidrs == ["10.244.1.0/24"]
    assert cfg.cluster_cidr == "10.244.0.0/16" and cfg.cluster_cidrs == ["10.244.0.0/16"]
    assert cfg.node_ips == []
    assert load(pod_cidr="10.244.1.0/24", node_ip="172.30.0.10").node_ips == ["172.30.0.10"]


def test_dual_stack_lists_in_any_order_come_ipv4_first():
    cfg = load(
        pod_cidrs=["fd00:10:244:1::/64", "10.244.1.0/24"],
        cluster_cidrs="fd00:10:244::/56, 10.244.0.0/16",
        node_ip="172.30.0.11",
        node_ips="fd00:172:30::11",
    )
    assert cfg.pod_cidrs == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert cfg.pod_cidr == "10.244.1.0/24"
    assert cfg.cluster_cidrs == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert cfg.cluster_cidr == "10.244.0.0/16"
    assert cfg.node_ips == ["172.30.0.11", "fd00:172:30::11"] and cfg.node_ip == "172.30.0.11"
    # the single keys may be given too when they agree
    same = load(
        pod_cidr="10.244.1.0/24",
        pod_cidrs=["10.244.1.0/24", "fd00:10:244:1::/64"],
        cluster_cidr="fd00:10:244::/56",
        cluster_cidrs=["10.244.0.0/16", "fd00:10:244::/56"],
    )
    assert same.pod_cidrs == cfg.pod_cidrs and same.cluster_cidrs == cfg.cluster_cidrs


def test_ipv6_only():
    cfg = load(pod_cidrs="fd00:10:244:1::/64", cluster_cidrs="fd00:10:244::/56")
    assert cfg.pod_cidr == "fd00:10:244:1::/64" and cfg.cluster_cidr == "fd00:10:244::/56"
    assert load(pod_cidr="fd00:10:244:1::/64", cluster_cidr="fd00:10:244::/56").pod_cidrs == [
        "fd00:10:244:1::/64"
    ]


@pytest.mark.parametrize(
    "data, words",
    [
        (
            {"pod_cidr": "10.244.2.0/24", "pod_cidrs": "10.244.1.0/24,fd00::/64"},
            "pod_cidr 10.244.2.0/24 and pod_cidrs 10.244.1.0/24, fd00::/64 disagree",
        ),
        ({"pod_cidrs": "10.244.1.0/24,10.244.2.0/24"}, "pod_cidrs: at most one IPv4 and one"),
        ({"pod_cidrs": "10.244.1.0/24,nonsense"}, "pod_cidrs: 'nonsense' is not a CIDR"),
        ({"pod_cidrs": "fd00:1::/127", "cluster_cidr": "fd00::/16"}, "fd00:1::/127 is too small"),
        ({"pod_cidrs": "10.244.1.0/31"}, "10.244.1.0/31 is too small (at most /30)"),
        ({"pod_cidrs": 5}, "pod_cidrs: expected list"),
        ({"pod_cidrs": ["10.244.1.0/24", 6]}, "pod_cidrs: expected list"),
        (
            {"pod_cidrs": "10.244.1.0/24,fd00:10:244:1::/64"},
            "pod CIDR fd00:10:244:1::/64 is IPv6 but cluster_cidrs has no IPv6 CIDR",
        ),
        (
            {
                "pod_cidr": "10.1.0.0/24",
                "cluster_cidr": "10.1.0.0/16",
                "cluster_cidrs": "10.2.0.0/16",
            },
            "cluster_cidr 10.1.0.0/16 and cluster_cidrs 10.2.0.0/16 disagree",
        ),
        (
            {"pod_cidr": "10.1.0.0/24", "node_ip": "10.0.0.1", "node_ips": "10.0.0.2,fd00::2"},
            "node_ip 10.0.0.1 and node_ips 10.0.0.2, fd00::2 disagree",
        ),
        ({"pod_cidr": "10.1.0.0/24", "node_ips": "fd00::2,fd00::3"}, "node_ips: at most one"),
        ({"pod_cidr": "10.1.0.0/24", "node_ips": "x"}, "node_ips: 'x' is not an IP address"),
        ({"pod_cidr": "10.1.0.0/24", "node_ip": "fd00::1"}, "node_ip: 'fd00::1' is not an IPv4"),
    ],
)
def test_bad_address_settings_are_clear_errors(data, words):
    with pytest.raises(ConfigError) as e:
        load(**data)
    assert words in str(e.value), str(e.value)


def test_flags_take_comma_lists():
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    args = parser.parse_args(
        ["--pod-cidrs", "10.244.1.0/24,fd00:10:244:1::/64", "--cluster-cidrs",
         "10.244.0.0/16,fd00:10:244::/56"]
    )  # fmt: skip
    cfg = config.from_args(args)
    assert cfg.pod_cidrs == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert "comma-separated" in parser.format_help()


def test_periodic_relist_is_off_unless_asked_for():
    assert load(pod_cidr="10.244.1.0/24").resync_period == 0
    assert load(pod_cidr="10.244.1.0/24", resync_period=600).resync_period == 600
    with pytest.raises(ConfigError, match="resync_period: must be 0 \\(never\\) or positive"):
        load(pod_cidr="10.244.1.0/24", resync_period=-1)


def test_no_pod_cidr_at_all_is_refused_without_a_source():
    with pytest.raises(ConfigError, match="pod_cidr is required"):
        load()


class _Source:
    """A cluster state source whose snapshot is given: start() hands it over at once."""

    def __init__(self, objs):
        self.objs = objs

    def start(self, on_events):
        import types

        on_events([types.SimpleNamespace(type="ADDED", obj=o) for o in self.objs])

    def wait_synced(self, timeout):
        return True

    def synced(self):
        return True

    def stop(self):
        pass


def _node(name, cidrs, ips):
    from ovsctl.k8s import model

    return model.parse(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)},
            "status": {"addresses": [{"type": "InternalIP", "address": a} for a in ips]},
        }
    )


def test_the_node_object_gives_the_pod_cidrs_and_addresses_per_family():
    from ovsctl.agent.agent import Agent
    from ovsctl.agent.cluster import Cluster
    from ovsctl.agent.reconcile import SkipLog

    me = _node("n1", ["10.244.1.0/24", "fd00:10:244:1::/64"], ["172.30.0.11", "fd00:172:30::11"])
    state = Cluster(_Source([me]), "n1", SkipLog())
    cidrs, node_ip, ips = state.start([], "", [])
    assert cidrs == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert node_ip == "172.30.0.11" and ips == ["172.30.0.11", "fd00:172:30::11"]
    # configured values win per family; the Node fills the others
    state = Cluster(_Source([me]), "n1", SkipLog())
    assert state.start([], "172.30.9.9", ["fd00:172:30::99"])[1:] == (
        "172.30.9.9",
        ["172.30.0.11", "fd00:172:30::99"],
    )
    agent = Agent(load(pod_cidr="10.244.1.0/24", node_ip="172.30.9.9"))
    assert agent._per_family(cidrs, ["172.30.0.11", "fd00:172:30::11"]) == (
        ("10.244.1.0/24", "fd00:10:244:1::/64"),
        ("172.30.9.9", "fd00:172:30::11"),
    )
    # an IPv4-only node keeps no IPv6 address (its flows stay as they were)
    assert agent._per_family(["10.244.1.0/24"], ["172.30.9.9", "fd00:172:30::11"]) == (
        ("10.244.1.0/24",),
        ("172.30.9.9",),
    )
    # the single-stack call is as it always was
    state = Cluster(_Source([me]), "n1", SkipLog())
    assert state.start("", "") == ("10.244.1.0/24", "172.30.0.11")
