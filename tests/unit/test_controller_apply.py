"""The controller's one path for flow changes: apply/update/stage+push all end in one bundle
(deletes, then adds, under the current round) sent by _send_flow_msgs, and the flow sync
records it only once the switch has it."""

import pytest

from flows import pipeline
from flows.model import NodeNet
from ovsctl.openflow.controller import Controller, SyncError
from ovsctl.openflow.sync import FlowSync

NODE = NodeNet.for_cidr("10.244.0.0/24", gw_ofport=2)
FLOWS = pipeline.node_flows(NODE)


class FakeDp:
    closed = False

    def close(self):
        self.closed = True


def _ready(tmp_path, fail=False):
    ctl = Controller(FlowSync(), str(tmp_path), timeout=0.5)
    sent = []

    def bundle(dp, mods, timeout):
        if fail:
            raise SyncError("boom")
        sent.append(mods)

    ctl.wire.bundle = bundle
    ctl.dp = FakeDp()
    ctl.round = 7
    ctl.ready.set()
    return ctl, sent


def test_apply_sends_one_bundle_and_records_it(tmp_path):
    ctl, sent = _ready(tmp_path)
    assert ctl.apply({"pipeline": FLOWS}) == len(FLOWS)
    assert len(sent) == 1 and {m[0] for m in sent[0]} == {"add"}
    assert {m[2] for m in sent[0]} == {7}
    assert set(ctl.sync.installed.values()) == set(FLOWS)
    assert ctl.last_sync["kind"] == "incremental" and ctl.last_sync["flows"] == len(FLOWS)
    assert ctl.apply({"pipeline": FLOWS}) == 0 and len(sent) == 1  # nothing changed


def test_stage_push_and_update_take_the_same_path(tmp_path):
    ctl, sent = _ready(tmp_path)
    keys = ctl.stage({"pipeline": FLOWS})
    assert ctl.push(keys) == len(FLOWS)
    assert ctl.apply({"pipeline": frozenset()}, wait=False) == len(FLOWS)
    assert [m[0] for m in sent[1]] == ["delete"] * len(FLOWS)
    assert not ctl.sync.installed


def test_without_a_ready_switch_wait_false_only_changes_the_desired_state(tmp_path):
    ctl = Controller(FlowSync(), str(tmp_path), timeout=0.1)
    assert ctl.apply({"pipeline": FLOWS}, wait=False) == 0
    assert ctl.sync.owner_flows("pipeline") == FLOWS and not ctl.sync.installed


def test_a_failed_bundle_drops_the_connection_for_a_new_round(tmp_path):
    ctl, _ = _ready(tmp_path, fail=True)
    dp = ctl.dp
    with pytest.raises(SyncError):
        ctl.apply({"pipeline": FLOWS})
    assert dp.closed and not ctl.ready.is_set() and not ctl.sync.installed
