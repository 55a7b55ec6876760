"""The agent's start holds the cyclic garbage collector off and releases it frozen."""

from __future__ import annotations

import gc

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
