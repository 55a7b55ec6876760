"""Cluster-state sources: the interface, and the YAML-directory source.

A source delivers typed events (:class:`Event` carrying model objects from
:mod:`ovsctl.k8s.model`) to one handler. The first call of the handler is the initial snapshot
(every object as ADDED, possibly an empty list); later calls carry only real changes. The
Kubernetes API watcher implements the same :class:`Source` protocol, so nothing above a source
knows which one is in use (DESIGN.md, principle 7).

:class:`YAMLDirSource` watches a directory of manifests by polling ``stat`` (cheap for
thousands of files), re-parses only the files that changed, and diffs the union of all files'
objects by key and value. A file that fails to parse keeps its last good objects.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ovsctl.k8s.model import (
    KIND_RANK,
    MANIFEST_SUFFIXES,
    ModelError,
    Object,
    objects_from_text,
)

__all__ = [
    "ADDED",
    "DELETED",
    "EVENT_TYPES",
    "MODIFIED",
    "Event",
    "Handler",
    "Source",
    "YAMLDirSource",
    "apply_events",
    "diff_states",
    "sort_events",
]

log = logging.getLogger(__name__)

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
EVENT_TYPES = (ADDED, MODIFIED, DELETED)

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Event:
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    obj: Object  # a model object; for DELETED the last known version

    def __post_init__(self):
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {self.type!r}")

    @property
    def key(self) -> Key:
        return self.obj.key


Handler = Callable[[list[Event]], None]


class Source(Protocol):
    """What every cluster-state source provides (YAML directory, Kubernetes API watcher)."""

    def start(self, handler: Handler) -> None:
        """Begin delivering events to handler, from the source's own thread. The first call is
        the initial snapshot as ADDED events (possibly an empty list); later calls carry only
        changes. Events within a call are ordered by :func:`sort_events`."""
        ...

    def stop(self) -> None:
        """Stop delivering events; returns once the source's thread has ended."""
        ...

    def synced(self) -> bool:
        """True once the initial snapshot was delivered."""
        ...

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until synced() or timeout; return synced()."""
        ...

    def objects(self) -> dict[Key, Object]:
        """A copy of the current view by key (already updated when the handler runs)."""
        ...


# --------------------------------------------------------------------------- helpers


def _order(e: Event) -> tuple:
    rank = KIND_RANK.get(e.obj.key[0], len(KIND_RANK))
    if e.type == DELETED:
        return (0, -rank, e.obj.key)
    return (1, rank, e.obj.key)


def sort_events(events: Iterable[Event]) -> list[Event]:
    """The deterministic order of a batch: deletions first, dependents before what they depend
    on (pods before namespaces and nodes); then additions and modifications, namespaces and
    nodes first, pods last (model.ACCEPTED_KINDS order). Within a kind, by key."""
    return sorted(events, key=_order)


def diff_states(old: Mapping[Key, Object], new: Mapping[Key, Object]) -> list[Event]:
    """The events that turn state old into state new (by key and value), sorted."""
    events = []
    for key, obj in new.items():
        prev = old.get(key)
        if prev is None:
            events.append(Event(ADDED, obj))
        elif prev != obj:
            events.append(Event(MODIFIED, obj))
    for key, obj in old.items():
        if key not in new:
            events.append(Event(DELETED, obj))
    return sort_events(events)


def apply_events(store: dict, events: Iterable[Event]) -> None:
    """Update a key -> object dict with events (ADDED/MODIFIED set, DELETED removes)."""
    for e in events:
        if e.type == DELETED:
            store.pop(e.obj.key, None)
        elif e.type in (ADDED, MODIFIED):
            store[e.obj.key] = e.obj
        else:
            raise ValueError(f"unknown event type {e.type!r}")


# --------------------------------------------------------------------------- YAML directory

# A file whose ctime is this close to the moment we read it may have been rewritten within the
# same timestamp tick without its stat changing (same size and inode: an in-place write). Such
# "racy" files are re-read (and re-parsed only if their bytes differ) until we have read them
# once comfortably after their last change. Git's index has the same problem and cure.
_RACY_NS = 1_000_000_000


@dataclass
class _File:
    sig: tuple  # (mtime_ns, ctime_ns, size, ino, dev)
    read_ns: int  # wall-clock time of the last read
    data: bytes | None  # content of the last read (None: never read successfully)
    objects: list[Object] = field(default_factory=list)  # last good objects
    error: str | None = None  # the current parse error, if any


def _sig(st: os.stat_result) -> tuple:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


def _ctime_ns(st: os.stat_result) -> int:
    return st.st_ctime_ns


class YAMLDirSource:
    """Cluster state from a directory of Kubernetes manifests (YAML or JSON), watched by polling.

    The state is the union of the objects of every *.yaml, *.yml and *.json file directly in the
    directory (hidden files skipped, so write temporaries as ``.name`` and rename them into
    place). A key defined in several files: the last file in sorted order wins (a warning is
    logged). A file that fails to parse is logged and keeps its last good objects until fixed;
    a deleted file removes its objects. The directory is created if missing; if it vanishes
    later, the last state is kept (logged) until it is back.
    """

    def __init__(self, path: str, poll_interval: float = 0.2):
        self.path = path
        self.poll_interval = poll_interval
        self._files: dict[str, _File] = {}  # by file name
        self._pending: dict[str, tuple] = {}  # file -> signature seen once
        self._view: dict[Key, Object] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._handler: Handler | None = None
        self._dir_error: str | None = None
        self._duplicates: set[tuple[Key, tuple[str, ...]]] = set()

    # ---- Source interface

    def start(self, handler: Handler) -> None:
        if self._thread is not None:
            raise RuntimeError("YAMLDirSource already started")
        os.makedirs(self.path, exist_ok=True)
        self._handler = handler
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"yaml-source:{self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def objects(self) -> dict[Key, Object]:
        with self._lock:
            return dict(self._view)

    # ---- the polling thread

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                changed = self._scan()
                if first or changed:
                    self._publish(first)
                    first = False
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("yaml source %s: poll failed", self.path)
            self._stop.wait(self.poll_interval)

    def _scan(self) -> bool:
        """Stat every manifest; re-read and re-parse the changed ones. True if any file's
        objects (or the set of files) changed."""
        try:
            entries = self._list()
        except OSError as e:
            msg = f"{e.strerror or e}"
            if msg != self._dir_error:
                log.error(
                    "yaml source %s: cannot list directory: %s (keeping the last state)",
                    self.path,
                    msg,
                )
                self._dir_error = msg
            return False
        if self._dir_error is not None:
            log.info("yaml source %s: directory readable again", self.path)
            self._dir_error = None

        changed = False
        for name in set(self._files) - set(entries):
            log.info("yaml source %s: %s removed", self.path, name)
            del self._files[name]
            changed = True
        for name, st in entries.items():
            rec = self._files.get(name)
            sig = _sig(st)
            if rec is not None and rec.sig == sig and rec.read_ns - _ctime_ns(st) >= _RACY_NS:
                continue  # unchanged, and last read well after its last change
            if rec is not None and rec.sig != sig and time.time_ns() - _ctime_ns(st) < _RACY_NS:
                # A known file just changed: a writer may be half-way (an in-place rewrite
                # reads as empty or cut short, which would look like deletions). Take it once
                # two polls in a row see the same file.
                if self._pending.get(name) != sig:
                    self._pending[name] = sig
                    continue
            self._pending.pop(name, None)
            changed |= self._refresh(name, sig, rec)
        return changed

    def _list(self) -> dict[str, os.stat_result]:
        out = {}
        with os.scandir(self.path) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(MANIFEST_SUFFIXES):
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue  # vanished between listing and stat (or a dangling symlink)
                if stat.S_ISREG(st.st_mode):
                    out[e.name] = st
        return out

    def _refresh(self, name: str, sig: tuple, rec: _File | None) -> bool:
        """Re-read one file; re-parse if its bytes changed. True if its objects changed."""
        filename = os.path.join(self.path, name)
        read_ns = time.time_ns()
        try:
            with open(filename, "rb") as f:
                data = f.read()
                after = _sig(os.fstat(f.fileno()))
        except FileNotFoundError:
            return False  # gone: the next listing drops it
        except OSError as e:
            # retried when its stat changes (e.g. chmod); logged once per distinct error
            is_new = rec is None
            if rec is None:
                rec = self._files[name] = _File(sig=sig, read_ns=read_ns, data=None)
            rec.sig, rec.read_ns = sig, read_ns
            msg = f"cannot read: {e.strerror or e}"
            if msg != rec.error:
                log.error("yaml source: %s: %s (keeping its last good objects)", filename, msg)
            rec.error = msg
            rec.data = None
            return is_new
        if after != sig:
            # changed while (or after) we listed it: a writer is busy. Take this content, but
            # record the old signature so the next poll reads it again.
            read_ns = 0
        if rec is None:
            rec = self._files[name] = _File(sig=sig, read_ns=read_ns, data=None)
            is_new = True
        else:
            rec.sig, rec.read_ns = sig, read_ns
            is_new = False
        if rec.data == data:
            return is_new
        rec.data = data
        try:
            objects = objects_from_text(data, filename)
        except ModelError as e:
            if str(e) != rec.error:
                log.error("yaml source: %s (keeping the last good objects of that file)", e)
            rec.error = str(e)
            return is_new
        except Exception as e:  # noqa: BLE001 - e.g. a YAML construct we cannot represent
            log.error(
                "yaml source: %s: cannot parse: %r (keeping its last good objects)", filename, e
            )
            rec.error = repr(e)
            return is_new
        if rec.error is not None:
            log.info("yaml source: %s parses again", filename)
            rec.error = None
        if objects == rec.objects:
            return is_new
        rec.objects = objects
        return True

    def _union(self) -> dict[Key, Object]:
        state: dict[Key, Object] = {}
        where: dict[Key, list[str]] = {}
        for name in sorted(self._files):
            for obj in self._files[name].objects:
                state[obj.key] = obj  # last file (and last document) wins
                where.setdefault(obj.key, []).append(name)
        dups = {(k, tuple(files)) for k, files in where.items() if len(files) > 1}
        for key, files in sorted(dups - self._duplicates):
            kind, ns, n = key
            log.warning(
                "yaml source %s: %s %s defined %d times (in %s); the one in %s wins",
                self.path,
                kind,
                f"{ns}/{n}" if ns else n,
                len(files),
                ", ".join(files),
                files[-1],
            )
        self._duplicates = dups
        return state

    def _publish(self, initial: bool) -> None:
        new = self._union()
        with self._lock:
            events = diff_states(self._view, new)
            self._view = new
        if not events and not initial:
            return
        try:
            assert self._handler is not None
            self._handler(events)
        except Exception:  # noqa: BLE001 - a handler bug must not stop the source
            log.exception(
                "yaml source %s: handler failed on %d event(s); they count as delivered",
                self.path,
                len(events),
            )
        finally:
            if initial:
                self._synced.set()
