"""Unit tests for ovsctl.flowsync: desired flows per owner, diffed against the switch."""

import dataclasses

import pytest

from flows import cookie, pipeline
from flows.flow import Output, SetField, any_table_flow, flow
from flows.model import NodeNet, Overlay, PodPort, RemoteNode, mac_from_ip
from ovsctl.openflow.sync import FlowSync, Plan

NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2)


def pod(key: str, ofport: int, ip: str) -> PodPort:
    return PodPort(key, ofport, ip, mac_from_ip(ip))


POD_A = pod("aaaa/eth0", 3, "10.244.0.2")
POD_B = pod("bbbb/eth0", 4, "10.244.0.3")


def owner(p: PodPort) -> str:
    return pipeline.pod_owner(p)


def synced(*pods: PodPort) -> FlowSync:
    """A FlowSync whose node and pods are desired and already on the switch."""
    s = FlowSync()
    s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE))
    for p in pods:
        s.set_owner(owner(p), pipeline.pod_flows(NODE, p))
    s.applied(s.plan())
    assert not s.plan()
    return s


class FakeSwitch:
    """What a switch does with a plan: delete_strict (only while the cookie matches), then add
    (replacing whatever has the same table, priority and match)."""

    def __init__(self) -> None:
        self.flows: dict[tuple, object] = {}
        self.messages = 0

    def apply(self, plan: Plan) -> None:
        for f in plan.delete:
            self.messages += 1
            have = self.flows.get(f.key)
            if have is not None and have.cookie == f.cookie:
                del self.flows[f.key]
        for f in plan.add:
            self.messages += 1
            self.flows[f.key] = f


def sync(s: FlowSync, sw: FakeSwitch, keys=None) -> Plan:
    p = s.plan(keys)
    sw.apply(p)
    s.applied(p)
    return p


# ---- round trip -----------------------------------------------------------------------------


def test_set_owner_plan_applied_round_trip():
    s = FlowSync()
    node = pipeline.node_flows(NODE)
    pods = pipeline.pod_flows(NODE, POD_A) | pipeline.pod_flows(NODE, POD_B)
    touched = s.set_owner(pipeline.pipeline_owner(), node)
    assert touched == {f.key for f in node}
    touched |= s.set_owner(owner(POD_A), pipeline.pod_flows(NODE, POD_A))
    touched |= s.set_owner(owner(POD_B), pipeline.pod_flows(NODE, POD_B))

    p = s.plan()
    assert set(p.add) == node | pods
    assert len(p.add) == len(node | pods)  # nothing twice
    assert p.delete == []
    assert s.plan(touched).add == p.add  # planning just the touched keys gives the same

    s.applied(p)
    after = s.plan()
    assert not after
    assert len(after) == 0
    assert after == Plan()
    assert s.installed == {f.key: f for f in node | pods}
    assert s.desired() == s.installed


def test_plan_is_not_applied_until_applied_is_called():
    s = FlowSync()
    s.set_owner(owner(POD_A), pipeline.pod_flows(NODE, POD_A))
    assert s.plan() == s.plan()
    assert s.installed == {}


def test_owner_flows_reads_back_and_unknown_owner_is_empty():
    s = synced(POD_A)
    assert s.owner_flows(owner(POD_A)) == pipeline.pod_flows(NODE, POD_A)
    assert s.owner_flows("pod/nobody") == frozenset()


# ---- removal --------------------------------------------------------------------------------


def test_removing_an_owner_deletes_exactly_its_flows():
    s = synced(POD_A, POD_B)
    b_flows = pipeline.pod_flows(NODE, POD_B)
    touched = s.remove_owner(owner(POD_B))
    assert touched == {f.key for f in b_flows}

    p = s.plan()
    assert p.add == []
    assert set(p.delete) == b_flows
    assert len(p.delete) == len(b_flows)
    assert s.plan(touched) == p

    s.applied(p)
    assert not s.plan()
    assert set(s.installed.values()) == pipeline.node_flows(NODE) | pipeline.pod_flows(NODE, POD_A)
    assert owner(POD_B) not in s.owners


def test_removing_an_unknown_owner_is_a_no_op():
    s = synced(POD_A)
    assert s.remove_owner("pod/never-seen") == set()
    assert not s.plan()


def test_changing_an_owners_flows_plans_only_the_difference():
    s = synced(POD_A)
    moved = dataclasses.replace(POD_A, ofport=7)  # same pod, re-plugged on another port
    old, new = pipeline.pod_flows(NODE, POD_A), pipeline.pod_flows(NODE, moved)
    s.set_owner(owner(POD_A), new)
    p = s.plan()
    assert set(p.add) == new - old
    # Keys that no longer exist are deleted; keys that stay get their new flow by an add.
    assert set(p.delete) == {f for f in old if f.key not in {g.key for g in new}}
    unchanged = old & new
    assert unchanged  # the ARP answer and the L3 flow do not depend on the port
    assert not unchanged & (set(p.add) | set(p.delete))
    # The L2 flow keeps its key (the pod's MAC) and is replaced in place with the new port.
    (l2,) = [f for f in p.add if f.table == "L2Forwarding"]
    assert l2.actions[0] == SetField("reg2", "0x7")
    assert not [f for f in p.delete if f.table == "L2Forwarding"]


def test_learning_the_node_ip_adds_only_its_always_allowed_flows_and_its_vxlan_drop():
    s = synced(POD_A)
    with_ip = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2, node_ip="192.168.50.10")
    s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(with_ip))
    p = s.plan()
    assert p.delete == []
    assert [f.text() for f in p.add] == [
        "cookie=0x1e5bcd38d0b, table=40, priority=65000,ip,nw_dst=192.168.50.10 "
        "actions=goto_table:50",
        "cookie=0x1e5bcd38d0b, table=50, priority=220,udp,nw_dst=192.168.50.10,tp_dst=4789 "
        "actions=drop",
        "cookie=0x1e5bcd38d0b, table=58, priority=64999,ip,reg0=0x1/0xf,nw_src=192.168.50.10 "
        "actions=goto_table:70",
    ]


def test_a_remote_node_comes_and_goes_with_its_l2_flow():
    overlay = Overlay(tun_ofport=1, cluster_cidr="10.244.0.0/16")
    remote = RemoteNode("node-b", "10.244.1.0/24", "192.168.50.11")
    s, sw = FlowSync(), FakeSwitch()
    s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE, overlay))
    s.set_owner(owner(POD_A), pipeline.pod_flows(NODE, POD_A))
    sync(s, sw)
    before = dict(sw.flows)

    r_flows = pipeline.remote_node_flows(NODE, overlay, remote)
    touched = s.set_owner(pipeline.node_owner(remote), r_flows)
    p = sync(s, sw, touched)
    assert set(p.add) == r_flows and p.delete == []
    # its tunnel admission, its VXLAN-port drop, its routes and its gateway MAC
    assert sorted(f.table for f in r_flows) == [
        "Classifier",
        "L2Forwarding",
        "L3Forwarding",
        "L3Forwarding",
        "L3Forwarding",
    ]

    touched = s.remove_owner(pipeline.node_owner(remote))
    p = sync(s, sw, touched)
    assert set(p.delete) == r_flows and p.add == []
    assert sw.flows == before
    assert not s.plan()


# ---- two owners, one key --------------------------------------------------------------------


def _classifier(port: int, who: str, reg: str = "0x2/0xf"):
    return flow(
        "Classifier",
        200,
        {"in_port": port},
        (SetField("reg0", reg), Output(9)),
        cookie.make("pod", who),
    )


def test_latest_claim_wins_and_removing_it_restores_the_other():
    s, sw = FlowSync(), FakeSwitch()
    old, new = _classifier(3, "pod/old"), _classifier(3, "pod/new", reg="0x1/0xf")
    assert old.key == new.key and old != new

    s.set_owner("pod/old", {old})
    sync(s, sw)
    s.set_owner("pod/new", {new})
    assert s.desired() == {new.key: new}
    p = sync(s, sw)
    assert (p.add, p.delete) == ([new], [])  # replaced in place, never a window without it
    assert sw.flows == {new.key: new}

    touched = s.remove_owner("pod/new")
    assert touched == {new.key}
    p = s.plan()
    assert (p.add, p.delete) == ([old], [])  # an add of the other, not a delete
    sync(s, sw)
    assert sw.flows == {old.key: old}

    s.remove_owner("pod/old")
    p = sync(s, sw)
    assert (p.add, p.delete) == ([], [old])
    assert sw.flows == {}


def test_removing_the_hidden_claim_leaves_the_switch_alone():
    s = FlowSync()
    old, new = _classifier(3, "pod/old"), _classifier(3, "pod/new", reg="0x1/0xf")
    s.set_owner("pod/old", {old})
    s.set_owner("pod/new", {new})
    s.applied(s.plan())
    touched = s.remove_owner("pod/old")
    assert s.plan(touched) == Plan()
    assert s.desired() == {new.key: new}


def test_ofport_reused_by_a_new_pod_survives_the_old_pods_removal():
    # Antrea #276/#430: OVS hands ofport 3 to a new pod while the old pod's flows still exist.
    s, sw = FlowSync(), FakeSwitch()
    s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE))
    old_pod = pod("old0/eth0", 3, "10.244.0.2")
    new_pod = pod("new0/eth0", 3, "10.244.0.9")
    old_flows = pipeline.pod_flows(NODE, old_pod)
    new_flows = pipeline.pod_flows(NODE, new_pod)
    shared = {f.key for f in old_flows} & {f.key for f in new_flows}
    assert shared == {
        ("Classifier", 200, (("in_port", "3"),)),
        ("Output", 210, (("reg2", "0x3"), ("in_port", "3"))),
    }

    s.set_owner(owner(old_pod), old_flows)
    sync(s, sw)
    s.set_owner(owner(new_pod), new_flows)
    p = sync(s, sw)
    assert p.delete == []
    assert set(p.add) == new_flows

    touched = s.remove_owner(owner(old_pod))
    p = sync(s, sw, touched)
    assert set(p.delete) == {f for f in old_flows if f.key not in shared}
    assert p.add == []  # the new pod's classifier flow is already the one installed
    want = pipeline.node_flows(NODE) | new_flows
    assert set(sw.flows.values()) == want
    assert set(s.installed.values()) == want
    assert not s.plan()


# ---- full plan and ordering -----------------------------------------------------------------


def test_full_plan_contains_everything_desired_even_when_installed():
    s = synced(POD_A, POD_B)
    s.set_owner("pod/hidden", {_classifier(POD_A.ofport, "pod/hidden")})  # now on top
    fp = s.full_plan()
    assert fp.delete == []
    assert set(fp.add) == set(s.desired().values())
    assert len(fp.add) == len(s.desired())
    assert _classifier(POD_A.ofport, "pod/hidden") in fp.add
    hidden_under = next(
        f
        for f in pipeline.pod_flows(NODE, POD_A)
        if f.key == ("Classifier", 200, (("in_port", "3"),))
    )
    assert hidden_under not in fp.add  # only the winner of a key is sent
    assert fp.add == sorted(fp.add, key=lambda f: (f.table_id, -f.priority, f.match))


def _order(flows):
    return [(f.table_id, f.priority) for f in flows]


def test_plan_orders_by_table_then_priority_descending():
    s = FlowSync()
    s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE))
    s.set_owner(owner(POD_A), pipeline.pod_flows(NODE, POD_A))
    s.set_owner(owner(POD_B), pipeline.pod_flows(NODE, POD_B))
    p = s.plan()
    got = _order(p.add)
    assert got == sorted(got, key=lambda tp: (tp[0], -tp[1]))
    assert got[0] == (0, pipeline.PRIO_RESERVED_SRC) and got[-1] == (90, 0)  # Output is last
    s.applied(p)

    s.remove_owner(owner(POD_A))
    s.remove_owner(owner(POD_B))
    s.remove_owner(pipeline.pipeline_owner())
    d = s.plan().delete
    assert len(d) == len(p.add)
    assert _order(d) == got


def test_plan_order_small_example():
    s = FlowSync()
    mk = lambda t, prio: any_table_flow(t, prio, {"in_port": prio} if prio else {})  # noqa: E731
    s.set_owner("x", {mk("L2Forwarding", 0), mk("Classifier", 0), mk("L2Forwarding", 200)})
    s.set_owner("y", {mk("Classifier", 200), mk("SpoofGuard", 100)})
    assert _order(s.plan().add) == [(0, 200), (0, 0), (10, 100), (70, 200), (70, 0)]


# ---- idempotency ----------------------------------------------------------------------------


def test_setting_an_identical_set_touches_nothing():
    s = synced(POD_A)
    again = pipeline.pod_flows(NODE, POD_A)  # a fresh but equal frozenset
    assert s.set_owner(owner(POD_A), again) == set()
    assert s.set_owner(owner(POD_A), set(again)) == set()  # a plain set is fine too
    assert not s.plan()


def test_install_twice_is_idempotent():
    def everything(s: FlowSync) -> None:
        s.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE))
        for p in (POD_A, POD_B):
            s.set_owner(owner(p), pipeline.pod_flows(NODE, p))

    s, sw = FlowSync(), FakeSwitch()
    everything(s)
    first = sync(s, sw)
    # node (conntrack, NodePort SNAT, four ClusterNetworkPolicy tier tables, the forged
    # hairpin source's drop) + 2 pods
    assert len(first.add) == len(sw.flows) == 39 + 9 + 9
    snapshot, sent = dict(sw.flows), sw.messages

    everything(s)  # the same state recomputed from scratch
    second = sync(s, sw)
    assert not second
    assert sw.flows == snapshot and sw.messages == sent

    # An agent restart that learns what is on the switch also sends nothing.
    fresh = FlowSync()
    fresh.reset_installed(sw.flows)
    everything(fresh)
    assert not sync(fresh, sw)
    assert sw.messages == sent


def test_reset_installed_with_leftovers_plans_their_deletion():
    s = synced(POD_A, POD_B)
    on_switch = dict(s.installed)
    fresh = FlowSync()
    fresh.reset_installed(on_switch)
    fresh.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(NODE))
    fresh.set_owner(owner(POD_A), pipeline.pod_flows(NODE, POD_A))
    p = fresh.plan()
    assert p.add == []
    assert set(p.delete) == pipeline.pod_flows(NODE, POD_B)


# ---- regressions found by review --------------------------------------------------


def test_owner_with_two_flows_for_one_key_is_rejected_or_kept_consistent():
    a = flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:02"}, (Output(3),))
    b = flow("L2Forwarding", 200, {"dl_dst": "0a:58:0a:f4:00:02"}, (Output(4),))
    s = FlowSync()
    with pytest.raises(ValueError, match="same match"):
        s.set_owner("x", {a, b})  # an ambiguous set is rejected, and nothing changes
    assert s.desired() == {}


def test_version_counts_changes_of_the_desired_flows_only():
    s = FlowSync()
    v = s.version
    flows = pipeline.pod_flows(NODE, POD_A)
    s.set_owner("pod/a", flows)
    assert s.version == v + 1
    s.set_owner("pod/a", flows)  # the same again: nothing changed
    assert s.version == v + 1
    s.remove_owner("pod/a")
    assert s.version == v + 2
    s.remove_owner("pod/a")
    assert s.version == v + 2
