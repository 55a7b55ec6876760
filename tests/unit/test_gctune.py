"""The agent's start holds the cyclic garbage collector off and releases it frozen."""

from __future__ import annotations

import gc
import time

import pytest

from ovsctl.agent import gctune


def test_hold_then_release_freezes_what_the_start_made_and_collects_again():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        gctune.hold()
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]  # what a start builds
        gctune.release()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
        gctune.release()  # once only
        assert gc.isenabled()
    finally:
        gctune.release()
        gc.enable()
        gc.unfreeze()


def test_release_without_hold_leaves_a_disabled_collector_alone():
    gc.disable()
    try:
        gctune.release()
        assert not gc.isenabled()
        gctune.hold()  # already off: not ours to turn back on
        gctune.release()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_hold_ends_by_itself_after_its_limit():
    """A start that waits (API server, podCIDR) gets its collector back."""
    assert gc.isenabled()
    try:
        gctune.hold(limit=0.05)
        assert not gc.isenabled() and gctune.held()
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled() and not gctune.held()
    finally:
        gctune.release()
        gc.enable()
        gc.unfreeze()


def test_a_failed_agent_start_gives_the_collector_back():
    from ovsctl.agent.agent import Agent

    class Boom(Exception):
        pass

    def fail():
        raise Boom

    agent = Agent.__new__(Agent)  # only start() is exercised
    agent._start = fail
    try:
        gctune.hold()
        with pytest.raises(Boom):
            agent.start()
        assert gc.isenabled()
    finally:
        gctune.release()
        gc.enable()
        gc.unfreeze()


def test_a_stale_timer_never_ends_a_later_hold_and_a_late_release_still_freezes():
    assert gc.isenabled()
    try:
        gctune.hold(limit=0.05)
        gctune.release()  # the start ended early: its timer is cancelled
        gctune.hold(limit=30)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # well past the first hold's limit
            assert gctune.held() and not gc.isenabled()
            time.sleep(0.01)
        gctune.release()
        # a hold that ran out: the start's own release still freezes what it made after
        gctune.hold(limit=0.01)
        deadline = time.monotonic() + 10
        while gctune.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled() and not gctune.held()
        frozen = gc.get_freeze_count()
        made = [[i] for i in range(1000)]
        gctune.release()
        assert gc.get_freeze_count() >= frozen + len(made)
    finally:
        gctune.release()
        gc.enable()
        gc.unfreeze()
