"""Keeping Python's cyclic garbage collector out of the agent's reaction time.

The agent holds many long-lived objects (cluster objects, flows, caches): at 1,000 pods a full
collection walks them all for 100-230 ms, and it starts whenever allocation counts say so, in
the middle of reacting to a change. So after each batch of work the agent *settles*: the young
generations are collected (cheap: only what was made since the last settle) and what survives
is frozen (`gc.freeze`: out of every later collection's sight). Frozen objects that die later
are still freed by reference counting; only garbage *cycles* among them would be kept, so every
`full_every` seconds a settle starts with a full collection of everything instead.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

_held = False
_timed_out = False  # the hold ended by its limit: the start's own release still freezes
_generation = 0  # which hold a timer belongs to (a stale timer never ends a later hold)
_timer: threading.Timer | None = None
_hold_lock = threading.Lock()
HOLD_LIMIT = 20.0  # seconds: a start that waits longer (the API server, the Node's podCIDR)
# gets its collector back meanwhile


def hold(limit: float = HOLD_LIMIT) -> None:
    """Start-up: no cyclic collection until release(), and never for more than `limit`
    seconds. The agent's start makes most of what it will hold (the cluster's objects, the
    policy view, every flow), and the collector, started by allocation counts, walked that
    growing heap again and again: a third of the first computation at 1,000 pods. A start that
    waits (for the API server's first snapshot, for the Node's podCIDR) makes garbage all the
    while (retries, exceptions), so the hold ends by itself after `limit`. The `ovsctl agent`
    command calls this first thing."""
    global _held, _generation, _timer, _timed_out
    with _hold_lock:
        if not gc.isenabled():
            return
        gc.disable()
        _held, _timed_out = True, False
        _generation += 1
        why = f"the start took over {limit:g} s"
        _timer = threading.Timer(limit, release, kwargs={"why": why, "generation": _generation})
        _timer.daemon = True
        _timer.start()


def release(why: str = "", generation: int | None = None) -> None:
    """The end of the start: what it made is frozen (out of later collections' sight, as after
    a settle; the periodic full collection unfreezes and walks it, and frees any cycle the
    start left) and collection resumes. Nothing if hold() did not disable it. `generation`:
    the hold's own timer (its limit passed); the start's release after that still freezes
    what the start made."""
    global _held, _timer, _timed_out
    with _hold_lock:
        if generation is not None:  # the timer
            if not _held or generation != _generation:
                return
            _timed_out = True
        elif not _held:
            if _timed_out:
                _timed_out = False
                gc.freeze()
            return
        _held = False
        if _timer is not None and generation is None:
            _timer.cancel()
        _timer = None
        gc.freeze()
        gc.enable()
    if why:
        log.info("cyclic GC back on: %s", why)


def held() -> bool:
    return _held


class GCPolicy:
    def __init__(self, full_every: float = 300.0):
        self.full_every = full_every
        self._last_full = time.monotonic()
        self._lock = threading.Lock()

    def settle(self) -> None:
        """Call after a batch of work, outside any lock that requests wait on. A settle
        already under way in another thread counts for this one too."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            t0 = time.monotonic()
            if t0 - self._last_full >= self.full_every:
                gc.unfreeze()
                found = gc.collect()
                self._last_full = time.monotonic()
                log.debug(
                    "full garbage collection: %d unreachable in %.1f ms",
                    found,
                    (self._last_full - t0) * 1000,
                )
            else:
                gc.collect(1)
            gc.freeze()
        finally:
            self._lock.release()
