"""ClusterNetworkPolicy on a dual-stack lab whose agents read the Kubernetes API (`lab up
--source api`): the tiers on both families, egress to IPv4 and IPv6 networks (0.0.0.0/0, ::/0)
and to both addresses of every node, and a pod relabel moving a pod in and out of a `pods`
subject. Same pods and helpers as tests/e2e/test_cnp.py (which runs the tiers' scenarios on an
IPv4 lab reading the YAML state directory); whole matrices against tests/cnp_reference.py."""

from __future__ import annotations

import json
import time

import pytest

from tests import cnp_reference as ref
from tests.e2e.test_cnp import (
    ALL_NS,
    EXT_PORT,
    NAMESPACES,
    NODE_PORT,
    PODS,
    all_open,
    applied,
    cli_apply,
    cluster_yaml,
    cnp,
    converge_egress,
    diff,
    expected,
    make_world,
    namespaces,
    netpol,
    nss,
    pod_doc,
    priority_flip,
    write_list,
)

CIDRS = "10.244.0.0/16,fd00:10:244::/56"


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(2, cluster_yaml(), cluster_cidr=CIDRS, node_prefix="24,64", source="api")


@pytest.fixture(scope="module")
def world(lab):
    yield from make_world(lab, NAMESPACES, PODS)


def converge_both(world, want4: dict, want6: dict, timeout: float = 20.0, why: str = "") -> None:
    """Both families' whole matrices become the expected ones."""
    lab = world["lab"]
    deadline = time.monotonic() + timeout
    while True:
        lab.flush_conntrack()
        got4, got6 = lab.probe(timeout=1.0, family=4), lab.probe(timeout=1.0, family=6)
        if (got4, got6) == (want4, want6):
            return
        if time.monotonic() > deadline:
            assert got4 == want4, why + "IPv4: " + diff(got4, want4)
            assert got6 == want6, why + "IPv6: " + diff(got6, want6)
        time.sleep(0.2)


def all_targets(world) -> list[tuple[str, int, str]]:
    """Both addresses of the external host (TCP and UDP) and of every node (TCP)."""
    out = [(ip, EXT_PORT, proto) for ip in world["externals"] for proto in ("TCP", "UDP")]
    return out + [(ip, NODE_PORT, "TCP") for ips in world["node_ips"].values() for ip in ips]


def test_tiers_on_both_families(world, tmp_path):
    """An Admin Deny of y -> x over x's NetworkPolicy allowing all, a Baseline Deny of x -> z:
    the same verdicts over IPv4 and IPv6."""
    objs = [
        netpol("allow-all", "x", {"podSelector": {}, "ingress": [{}]}),
        cnp("deny-y-to-x", "Admin", 10, {"namespaces": nss("x")},
            ingress=[{"action": "Deny", "from": [{"namespaces": nss("y")}]}]),
        cnp("baseline-x-to-z", "Baseline", 10, {"namespaces": nss("z")},
            ingress=[{"action": "Deny", "from": [{"namespaces": nss("x")}]}]),
    ]  # fmt: skip
    want4 = expected(world, objs[:1], objs[1:], family=4)
    want6 = expected(world, objs[:1], objs[1:], family=6)
    points = {"y/a->x/a:80/TCP": False, "z/b->x/a:53/UDP": True, "x/a->z/b:81/TCP": False,
              "y/a->z/b:81/TCP": True}  # fmt: skip
    for want in (want4, want6):
        assert {k: want[k] for k in points} == points, "the reference disagrees"
    with applied(world["lab"], tmp_path, objs):
        converge_both(world, want4, want6)


def test_egress_to_networks_and_nodes_of_both_families(world, tmp_path):
    """x: pod traffic Passes; the external host's two addresses are accepted on TCP 8080;
    0.0.0.0/0 and ::/0 are denied (the external host's UDP, the other node's two addresses).
    y: ::/0 denied only (its IPv4 unaffected; no pod reached over IPv6 either). z: every node
    denied (both of its addresses), its own node too: the Admin tier sees it."""
    ext4, ext6 = world["externals"]
    objs = [
        cnp("x-egress", "Admin", 10, {"namespaces": nss("x")}, egress=[
            {"name": "pods", "action": "Pass", "to": [ALL_NS]},
            {"name": "external-web", "action": "Accept",
             "to": [{"networks": [f"{ext4}/32", f"{ext6}/128"]}],
             "protocols": [{"tcp": {"destinationPort": {"number": EXT_PORT}}}]},
            {"name": "rest", "action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]}]),
        cnp("y-no-ipv6", "Admin", 20, {"namespaces": nss("y")},
            egress=[{"action": "Deny", "to": [{"networks": ["::/0"]}]}]),
        cnp("z-no-nodes", "Admin", 30, {"namespaces": nss("z")},
            egress=[{"action": "Deny", "to": [{"nodes": {}}]}]),
    ]  # fmt: skip
    targets = all_targets(world)
    want = ref.evaluate_egress(namespaces(world), world["pods"], [], objs, world["nodes"], targets)
    own = world["node_ips"][world["node_of"]["z/a"]]
    other = next(ips for ips in world["node_ips"].values() if ips != own)
    points = {
        f"x/a->{ext6}:{EXT_PORT}/TCP": True, f"x/a->{ext6}:{EXT_PORT}/UDP": False,
        f"x/b->{ext4}:{EXT_PORT}/UDP": False, f"y/a->{ext4}:{EXT_PORT}/UDP": True,
        f"y/a->{ext6}:{EXT_PORT}/TCP": False, f"z/a->{ext6}:{EXT_PORT}/UDP": True,
        f"z/a->{own[1]}:{NODE_PORT}/TCP": False, f"z/a->{other[0]}:{NODE_PORT}/TCP": False,
        f"z/a->{other[1]}:{NODE_PORT}/TCP": False,
    }  # fmt: skip
    assert {k: want[k] for k in points} == points, "the reference disagrees with the scenario"
    pods4 = expected(world, (), objs, family=4)
    pods6 = expected(world, (), objs, family=6)
    assert all(pods4.values()), "IPv4 pod traffic is passed (x) or not selected (y, z)"
    # ::/0 holds the pods' IPv6 addresses too: y reaches no pod over IPv6 (x Passes first)
    assert all(v == (not k.startswith("y/")) for k, v in pods6.items()), pods6
    lab = world["lab"]
    with applied(lab, tmp_path, objs):
        got = converge_egress(world, want, targets)
        assert got == want, diff(got, want)
        converge_both(world, pods4, pods6)


def test_pod_relabel_moves_a_pod_in_and_out_of_a_subject(world, tmp_path):
    """A policy isolating pods labelled role=locked (none at first): y/b gets the label (no
    pod reaches it, on either family), then loses it."""
    lab = world["lab"]
    objs = [cnp("locked-pods", "Admin", 10,
                {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "locked"}}}},
                ingress=[{"action": "Deny", "from": [ALL_NS]}])]  # fmt: skip
    idx = next(i for i, p in enumerate(world["pods"]) if p["metadata"]["namespace"] == "y"
               and p["metadata"]["name"] == "b")  # fmt: skip
    original = world["pods"][idx]
    relabel = tmp_path / "relabel.yaml"

    def label(labels: dict) -> None:
        world["pods"][idx] = {**original, "metadata": {**original["metadata"], "labels": labels}}
        cli_apply(lab, write_list(relabel, [pod_doc("y", "b", labels=labels)]))

    with applied(lab, tmp_path, objs):
        try:
            all_open(world, objs, "before the relabel")

            label({"pod": "b", "role": "locked"})
            want4, want6 = (expected(world, (), objs, family=f) for f in (4, 6))
            assert want4["x/a->y/b:80/TCP"] is False and want4["y/b->x/a:80/TCP"] is True
            assert want4["y/a->y/b:53/UDP"] is False and want4["x/a->y/a:80/TCP"] is True
            converge_both(world, want4, want6)

            label({"pod": "b"})
            all_open(world, objs, "after the label is gone")
        finally:
            world["pods"][idx] = original
            cli_apply(lab, write_list(relabel, [pod_doc("y", "b")]))


def test_priority_change_reaction_with_the_api_source(world, tmp_path, record_property):
    """As tests/e2e/test_cnp.py's priority flip, with the agents watching the lab's API server:
    the reaction time of a watch event."""
    priority_flip(world, tmp_path, record_property, "API source")


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_the_reference(world, tmp_path, seed):
    """tests/cnp_reference.random_case: NetworkPolicies and ClusterNetworkPolicies of both
    tiers over these pods, nodes and external addresses (odd seeds also with unsupported
    peers, whose rules fail closed); pods over both families and pods to every external and
    node address, against the reference."""
    targets = all_targets(world)
    spaces = namespaces(world)
    nps, cnps = ref.random_case(
        seed, spaces, world["pods"], world["nodes"], targets, unknown_peers=seed % 2 == 1
    )
    want4, want6 = (expected(world, nps, cnps, family=f) for f in (4, 6))
    want = ref.evaluate_egress(spaces, world["pods"], nps, cnps, world["nodes"], targets)
    why = f"seed {seed}: {json.dumps(nps + cnps)}\n"
    with applied(world["lab"], tmp_path, nps + cnps, f"random{seed}"):
        got = converge_egress(world, want, targets)
        assert got == want, why + diff(got, want)
        converge_both(world, want4, want6, why=why)


def test_equal_priorities_tie_by_name_and_survive_restarts(world, tmp_path):
    """Two Admin policies at priority 0 (the lowest number): "a-deny" (deny all into x) comes
    before "b-accept" (accept y into x) by name; a Baseline policy at 1000 (the highest) denies
    z -> y. The matrix holds after node1's agent is killed and restarted, and after node0's
    ovs-vswitchd is (flows restored by the agent)."""
    lab = world["lab"]
    objs = [
        cnp("b-accept", "Admin", 0, {"namespaces": nss("x")},
            ingress=[{"action": "Accept", "from": [{"namespaces": nss("y")}]}]),
        cnp("a-deny", "Admin", 0, {"namespaces": nss("x")},
            ingress=[{"action": "Deny", "from": [ALL_NS]}]),
        cnp("baseline-last", "Baseline", 1000, {"namespaces": nss("y")},
            ingress=[{"action": "Deny", "from": [{"namespaces": nss("z")}]}]),
    ]  # fmt: skip
    want4, want6 = (expected(world, (), objs, family=f) for f in (4, 6))
    points = {"y/a->x/a:80/TCP": False, "x/b->x/a:80/TCP": False, "z/a->y/b:53/UDP": False,
              "x/a->y/b:53/UDP": True}  # fmt: skip
    assert {k: want4[k] for k in points} == points, "the reference disagrees with the scenario"
    with applied(lab, tmp_path, objs):
        converge_both(world, want4, want6)
        lab.restart("node1", "agent", log=lambda *_: None)
        converge_both(world, want4, want6, why="after node1's agent restarted: ")
        lab.restart("node0", "ovs-vswitchd", log=lambda *_: None)
        converge_both(world, want4, want6, why="after node0's ovs-vswitchd restarted: ")
