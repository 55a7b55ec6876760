"""A round (resync after a (re)connection) and the changes staged while it is being installed.

Until the round is in, `ready` is clear and a change staged with wait=False (a pod's DEL, an
ADD's rollback, GC) only changes the desired state: the round must carry it. The round sends
the whole desired set, then the difference of what changed meanwhile ("late"); a change staged
while that difference was on its way, or between the last look and `ready`, used to be sent by
nobody: its flows stayed on the switch for good (the churn stress test found flows of deleted
pods after the agent's restart). The switch here is a dict that the bundles change."""

from __future__ import annotations

import threading

from flows import pipeline
from flows.model import NodeNet, PodPort
from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync

NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2)


class FakeDp:
    closed = False

    def close(self):
        self.closed = True


def pod(i: int) -> tuple[str, frozenset]:
    port = PodPort(f"c{i}/eth0", 10 + i, f"10.244.0.{10 + i}", f"0a:58:0a:f4:00:{10 + i:02x}")
    return pipeline.pod_owner(port), pipeline.pod_flows(NODE, port)


class Switch:
    """The flows on the switch, changed by each bundle; `during[n]` runs while the n-th bundle
    of the round is on its way (as another thread's CNI request would)."""

    def __init__(self, ctl: Controller):
        self.flows: dict = {}
        self.bundles = 0
        self.during: dict[int, object] = {}
        ctl.wire.dump = lambda dp, timeout: []
        ctl.wire.bundle = self.bundle

    def bundle(self, dp, mods, timeout):
        self.bundles += 1
        if self.bundles in self.during:
            self.during[self.bundles]()
        for kind, f, _rnd in mods:
            if kind == "add":
                self.flows[f.key] = f
            else:
                self.flows.pop(f.key, None)


def in_another_thread(fn) -> None:
    """Run `fn` as another CNI request would, and wait for it (a stage with wait=False and no
    switch ready returns at once)."""
    t = threading.Thread(target=fn)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a change staged during the round blocked"


def _controller(tmp_path, pods: int):
    ctl = Controller(FlowSync(), str(tmp_path), timeout=1.0)
    ctl.sync.set_owner("pipeline", pipeline.node_flows(NODE))
    owners = dict(pod(i) for i in range(pods))
    for owner, flows in owners.items():
        ctl.sync.set_owner(owner, flows)
    dp = FakeDp()
    ctl.dp = dp
    return ctl, dp, Switch(ctl), list(owners)


def delete(ctl: Controller, owner: str):
    return lambda: in_another_thread(lambda: ctl.apply({owner: frozenset()}, wait=False))


def test_a_change_staged_while_the_late_difference_is_sent_reaches_the_switch(tmp_path):
    ctl, dp, switch, (a, b) = _controller(tmp_path, 2)
    switch.during[1] = delete(ctl, a)  # during the round: the late difference carries it
    switch.during[2] = delete(ctl, b)  # during the late difference: nobody sent it
    ctl.resync(dp)
    assert switch.flows == ctl.sync.desired(), "flows of a deleted pod are left on the switch"
    assert ctl.ready.is_set() and switch.bundles == 3
    assert set(switch.flows.values()) == set(pipeline.node_flows(NODE))
    assert not ctl.sync.plan(None)


def test_changes_keep_coming_while_the_round_is_installed(tmp_path):
    ctl, dp, switch, owners = _controller(tmp_path, 4)
    for n, owner in enumerate(owners, start=1):
        switch.during[n] = delete(ctl, owner)
    ctl.resync(dp)
    assert set(switch.flows.values()) == set(pipeline.node_flows(NODE)), "flows are left"
    assert ctl.ready.is_set() and switch.bundles == 5  # the round, then one per change


def test_a_change_staged_after_the_round_is_pushed_by_its_stager(tmp_path):
    ctl, dp, switch, (a,) = _controller(tmp_path, 1)
    ctl.resync(dp)
    ctl.apply({a: frozenset()}, wait=False)
    assert set(switch.flows.values()) == set(pipeline.node_flows(NODE))
