"""The API source's dispatcher: one thread that owns the view of every watched kind.

The watcher threads of :class:`ovsctl.k8s.apisource.APISource` put :class:`Listed` and
:class:`Changed` messages; the dispatcher applies whatever has queued up as one batch and calls
the handler with the net difference (:func:`ovsctl.k8s.source.diff_states` over the touched
keys, sorted). So handler calls never overlap, an event whose model object did not change is
not delivered, and ADDED+DELETED within one batch cancel out. The first handler call (the
initial snapshot, all ADDED) happens once every kind has listed once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ovsctl.k8s.model import Object
from ovsctl.k8s.source import Event, Handler, Key, diff_states
from ovsctl.k8s.watchstream import show_key

log = logging.getLogger("ovsctl.k8s.apisource")  # one logger for all of the API source


@dataclass
class Listed:
    """A watcher (re)listed its kind: these are all of its objects."""

    kind: str
    objects: dict[Key, Object]
    bad: set[Key]  # keys whose current version did not parse: keep their last good version


@dataclass
class Changed:
    """One watch event. obj is None for a DELETED, or for a version that did not parse."""

    kind: str
    type: str
    key: Key
    obj: Object | None


STOP = object()  # put() it to end run()


class Dispatcher:
    """The stores of the watched kinds and the thread that updates them (:meth:`run`)."""

    def __init__(self, kinds: Iterable[str], stopping: threading.Event):
        self._stores: dict[str, dict[Key, Object]] = {k: {} for k in kinds}
        self._lock = threading.Lock()  # guards _stores (written by run() only)
        self._queue: queue.Queue = queue.Queue()
        self._stop = stopping
        self._synced = threading.Event()
        self._handler: Handler | None = None

    def put(self, message) -> None:
        """A message from a watcher: Listed, Changed, or STOP."""
        self._queue.put(message)

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def objects(self) -> dict[Key, Object]:
        with self._lock:
            out: dict[Key, Object] = {}
            for store in self._stores.values():
                out.update(store)
            return out

    def count(self, kind: str) -> int:
        """How many objects of kind the view holds."""
        with self._lock:
            return len(self._stores.get(kind, {}))

    def run(self, handler: Handler) -> None:
        """The dispatcher thread: until STOP (or the stop event)."""
        self._handler = handler
        listed: set[str] = set()
        all_kinds = set(self._stores)
        while True:
            batch = [self._queue.get()]
            while True:  # take whatever else has queued up: one handler call for all of it
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(m is STOP for m in batch) or self._stop.is_set():
                return
            try:
                events = self._apply(batch, listed)
                if not self._synced.is_set():
                    if listed < all_kinds:
                        continue  # the initial snapshot waits for every kind's first list
                    events = diff_states({}, self.objects())
                    log.info("initial snapshot: %d object(s)", len(events))
                    self._deliver(events)
                    self._synced.set()
                elif events:
                    self._deliver(events)
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                log.exception("kubernetes API source: dispatching a batch failed")

    def _apply(self, batch: list, listed: set[str]) -> list[Event]:
        """Apply a batch of messages to the stores; return the net events, sorted."""
        before: dict[Key, Object | None] = {}  # the value of every touched key before the batch
        with self._lock:
            for m in batch:
                store = self._stores[m.kind]
                if isinstance(m, Listed):
                    listed.add(m.kind)
                    new = dict(m.objects)
                    for key in m.bad:  # a malformed version keeps the last good one
                        if key in store and key not in new:
                            new[key] = store[key]
                    for key in store.keys() | new.keys():
                        before.setdefault(key, store.get(key))
                    self._stores[m.kind] = new
                else:
                    before.setdefault(m.key, store.get(m.key))
                    if m.type == "DELETED":
                        store.pop(m.key, None)
                    elif m.obj is not None:
                        store[m.key] = m.obj
                    # else: a version that did not parse; keep the last good one
            old = {k: v for k, v in before.items() if v is not None}
            new_view = {k: self._stores[k[0]][k] for k in before if k in self._stores[k[0]]}
        return diff_states(old, new_view)

    def _deliver(self, events: list[Event]) -> None:
        if self._stop.is_set():
            return
        if events:
            log.debug(
                "delivering %d event(s): %s",
                len(events),
                ", ".join(f"{e.type} {e.key[0]} {show_key(e.key)}" for e in events[:10])
                + (", ..." if len(events) > 10 else ""),
            )
        try:
            assert self._handler is not None
            self._handler(events)
        except Exception:  # noqa: BLE001 - a handler bug must not stop the source
            log.exception(
                "kubernetes API source: handler failed on %d event(s); they count as delivered",
                len(events),
            )
