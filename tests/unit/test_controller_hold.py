"""The first round waits for the agent's desired flows: a switch may connect to a held
controller (so its reconnect backoff runs during the agent's start), but resync starts only
on release(), and only for the connection that is still current."""

import threading

from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync


def _held(tmp_path):
    ctl = Controller(FlowSync(), str(tmp_path), hold=True)
    calls: list = []
    ctl.resync = calls.append  # what would talk to the switch
    return ctl, calls


def test_a_held_controller_resyncs_only_after_release(tmp_path):
    ctl, calls = _held(tmp_path)
    dp = object()
    ctl.dp = dp
    t = threading.Thread(target=ctl._resync_safely, args=(dp,))
    t.start()
    t.join(0.3)
    assert t.is_alive() and calls == []  # held
    ctl.release()
    t.join(5)
    assert not t.is_alive() and calls == [dp]


def test_a_connection_replaced_while_held_gets_no_round(tmp_path):
    ctl, calls = _held(tmp_path)
    old, new = object(), object()
    ctl.dp = old
    t_old = threading.Thread(target=ctl._resync_safely, args=(old,))
    t_old.start()
    ctl.dp = new  # the switch reconnected meanwhile
    t_new = threading.Thread(target=ctl._resync_safely, args=(new,))
    t_new.start()
    ctl.release()
    t_old.join(5)
    t_new.join(5)
    assert calls == [new]


def test_not_held_by_default(tmp_path):
    ctl = Controller(FlowSync(), str(tmp_path))
    calls: list = []
    ctl.resync = calls.append
    dp = object()
    ctl.dp = dp
    ctl._resync_safely(dp)  # returns at once
    assert calls == [dp]
