"""Cluster state from the Kubernetes API: list + watch, delivered as typed source events.

:class:`APISource` implements the :class:`ovsctl.k8s.source.Source` protocol for the kinds the
agent consumes (Namespaces, Nodes, NetworkPolicies, ClusterNetworkPolicies, Services,
EndpointSlices, Pods), so nothing above it knows whether the state comes from the API server or
a YAML directory (DESIGN.md, principle 7).

How it works
------------
- One **watcher thread per kind** runs the usual informer loop: list (paged, ``limit`` +
  ``continue``) and then watch from the list's ``resourceVersion``, with
  ``allowWatchBookmarks=true`` and a server-side ``timeoutSeconds`` so watches roll over. The
  resourceVersion of every event and every BOOKMARK is remembered, so a new watch resumes
  exactly where the last one stopped.
- **410 Gone** (an HTTP 410, or a watch ERROR event whose Status has code 410: the
  resourceVersion is older than the server's history) makes the watcher relist; the new list
  replaces the kind's objects and only the real differences are emitted.
- **Any other failure** (refused or dropped connection, timeouts, HTTP 5xx/4xx, a garbled line)
  is retried with capped exponential backoff (``backoff_initial`` doubling to ``backoff_max``,
  reset after a successful request), resuming the watch from the last resourceVersion; a list
  that failed is simply tried again.
- No periodic relist by default: a watch resumed from its resourceVersion misses no event
  (the server replays every change after it, or answers 410 and the kind is relisted), and a
  relist of every kind by every agent is a read of the whole cluster (docs/scale.md: at 500
  nodes, every 5 minutes, more than all the watch traffic). ``resync_period`` > 0 relists
  each kind that often anyway (only real differences are emitted).
- A kind served by a **CustomResourceDefinition** (ClusterNetworkPolicy) may be missing: when
  its list gets HTTP 404 (the CRD is not installed) or 403 (the ClusterRole does not grant it),
  the watcher logs it once, naming the manifest to apply, counts the kind as listed with no
  objects (so the other kinds' initial snapshot does not wait for it; after a 404 its known
  objects are removed, as deleting a CRD deletes them; after a 403 they are kept), and lists it
  again every ``crd_retry`` seconds: installing the CRD later takes effect without a restart.
- Requests go through the official client's :class:`kubernetes.client.ApiClient` (its
  configuration, TLS and auth, bearer-token refresh included) but the bodies are read as raw
  JSON, so the dicts go straight to :func:`ovsctl.k8s.model.parse` (list items lack ``kind`` and
  ``apiVersion``; they are filled in).
- Watcher threads parse objects and hand them to **one dispatcher thread**
  (:class:`ovsctl.k8s.dispatch.Dispatcher`), which owns the view,
  applies whatever has queued up as one batch, and calls the handler with the net difference
  (:func:`ovsctl.k8s.source.diff_states` over the touched keys, sorted). So handler calls never
  overlap, an event whose model object did not change (a pod's unrelated status field, a
  resourceVersion bump) is not delivered, and ADDED+DELETED within one batch cancel out. The
  first handler call (the initial snapshot, all ADDED) happens once every kind has listed once.

Malformed objects
-----------------
An object that :func:`~ovsctl.k8s.model.parse` rejects is logged (once per distinct error) and
skipped; the watcher carries on. Like the YAML source, a known object whose new version does not
parse keeps its last good version (also across relists) until it parses again or is deleted.

Pods
----
By default **all pods of the cluster are watched**: a node agent needs not only its own pods but
the labels and IPs of every pod that a NetworkPolicy or Service may select. ``pod_field_selector``
(e.g. ``"spec.nodeName=node-1"``) narrows the pod list/watch on the server side, for consumers
that only care about one node's pods; the agent must not set it.

Counters (plain dicts, by kind, for metrics): ``events_total`` counts the ADDED/MODIFIED/DELETED
watch events received from the API server, ``relists_total`` the lists after the first one (410
relists and resyncs), ``resource_version`` holds each kind's current resourceVersion.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ovsctl.k8s.apiclient import TokenFile, make_api_client
from ovsctl.k8s.dispatch import STOP, Changed, Dispatcher, Listed
from ovsctl.k8s.model import ACCEPTED_KINDS, Object
from ovsctl.k8s.source import Handler, Key
from ovsctl.k8s.watchstream import (
    MAX_OBJECT_BYTES,
    RESOURCES,
    LineSplitter,
    Requests,
    Resource,
    _Gone,
    _lines,
    _RequestError,
    _Stopped,
    _TooLarge,
    _Unserved,
    _WatchFailed,
    decode_event,
    forget_parse_errors,
    parse_object,
    raw_key,
)

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

__all__ = [
    "RESOURCES",
    "APISource",
    "LineSplitter",
    "Resource",
    "TokenFile",
    "_TooLarge",
    "make_api_client",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the source


class APISource:
    """Cluster state from the Kubernetes API server (list + watch). See the module docstring.

    Pass an ``api_client`` (an :class:`kubernetes.client.ApiClient`), or the arguments of
    :func:`make_api_client` (``host``/``token``, ``in_cluster``, ``kubeconfig``/``context``).

    Tuning: ``resync_period`` (s, 0 = never) between full relists; ``watch_timeout`` (s) the
    server-side timeoutSeconds of a watch; ``backoff_initial``/``backoff_max`` (s) for
    reconnects; ``page_size`` items per list page (0 = unpaged); ``request_timeout`` (s) the
    connect timeout and the read timeout of lists (a watch's read timeout is its
    timeoutSeconds plus this). ``kinds`` restricts the watched kinds (default: all of them).
    ``crd_retry`` (s) between lists of a CRD kind that the server does not serve.
    ``max_object_bytes`` bounds one watch event: a longer line is dropped unread (never held
    in memory), logged with its size, and the kind is relisted.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient | None = None,
        *,
        host: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        kinds: Iterable[str] = ACCEPTED_KINDS,
        pod_field_selector: str = "",
        resync_period: float = 0.0,
        watch_timeout: int = 300,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        page_size: int = 500,
        request_timeout: float = 30.0,
        max_object_bytes: int = MAX_OBJECT_BYTES,
        crd_retry: float = 60.0,
    ):
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in RESOURCES]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {ACCEPTED_KINDS}, got {kinds}")
        self.resources = [RESOURCES[k] for k in ACCEPTED_KINDS if k in kinds]
        self._own_client = api_client is None
        self.api = api_client or make_api_client(
            host=host,
            token=token,
            token_file=token_file,
            ca_file=ca_file,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
            pool_size=2 * len(self.resources) + 2,
        )
        self.pod_field_selector = pod_field_selector
        self.resync_period = resync_period
        self.watch_timeout = max(1, int(watch_timeout))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.page_size = page_size
        self.request_timeout = request_timeout
        self.max_object_bytes = max_object_bytes
        self.crd_retry = crd_retry

        # counters and state for metrics and tests (each kind's entries written by its watcher)
        self.events_total: dict[str, int] = {r.kind: 0 for r in self.resources}
        self.relists_total: dict[str, int] = {r.kind: 0 for r in self.resources}
        self.resource_version: dict[str, str] = {r.kind: "" for r in self.resources}
        # CRD kinds the server does not serve now: kind -> the HTTP status (404 or 403)
        self.unserved: dict[str, int] = {}

        self._stop = threading.Event()
        self._dispatch = Dispatcher([r.kind for r in self.resources], self._stop)
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._http = Requests(self.api, request_timeout, self._stop)
        self._parse_errors: dict[str, dict[Key, str]] = {r.kind: {} for r in self.resources}

    # ------------------------------------------------------------------ Source interface

    def start(self, handler: Handler) -> None:
        if self._dispatcher is not None:
            raise RuntimeError("APISource already started")
        log.info(
            "kubernetes API source: watching %s at %s (resync %s, watch timeout %ss%s)",
            ", ".join(r.kind for r in self.resources),
            self.api.configuration.host,
            f"every {self.resync_period}s" if self.resync_period else "off",
            self.watch_timeout,
            f", pods with fieldSelector {self.pod_field_selector}"
            if self.pod_field_selector
            else "",
        )
        self._dispatcher = threading.Thread(
            target=self._dispatch.run, args=(handler,), name="k8s-api-dispatch", daemon=True
        )
        self._dispatcher.start()
        for res in self.resources:
            t = threading.Thread(
                target=self._watch_loop, args=(res,), name=f"k8s-api-watch:{res.kind}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        log.info("kubernetes API source: stopping")
        self._http.stop()  # unblocks the watchers waiting in a read
        self._dispatch.put(STOP)
        me = threading.current_thread()
        deadline = time.monotonic() + 5.0
        for t in [*self._threads, self._dispatcher]:
            if t is not None and t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():  # a request stuck in connect(), or a slow handler
                    log.warning("kubernetes API source: thread %s still busy after stop", t.name)
        if self._own_client:
            try:
                self.api.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the API client failed", exc_info=True)

    def synced(self) -> bool:
        return self._dispatch.synced()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._dispatch.wait_synced(timeout)

    def objects(self) -> dict[Key, Object]:
        return self._dispatch.objects()

    # ------------------------------------------------------------------ HTTP

    # ------------------------------------------------------------------ the watcher of one kind

    def _watch_loop(self, res: Resource) -> None:
        kind = res.kind
        rv = ""  # "" = must (re)list
        listed_once = False
        next_resync = math.inf
        backoff = self.backoff_initial
        while not self._stop.is_set():
            try:
                if rv and time.monotonic() >= next_resync:
                    log.info("%s: periodic resync: relisting", kind)
                    rv = ""
                if not rv:
                    rv = self._list(res)
                    if listed_once:
                        self.relists_total[kind] += 1
                    listed_once = True
                    backoff = self.backoff_initial
                    if self.resync_period:
                        next_resync = time.monotonic() + self.resync_period
                rv = self._watch(res, rv, next_resync)
                backoff = self.backoff_initial  # the watch ran to its timeout: all is well
                continue
            except _Stopped:
                break
            except _Unserved as e:
                rv = ""
                self._on_unserved(res, e, listed_once)
                self._stop.wait(self.crd_retry)
                continue
            except _Gone as e:
                if rv:  # the watch's resourceVersion is too old: relist at once
                    log.warning("%s: %s: relisting", kind, e)
                    rv = ""
                    continue
                reason = str(e)  # a list's continue token expired: list again, after a pause
            except _WatchFailed as e:
                rv = e.rv  # resume from the newest resourceVersion the broken watch gave us
                if e.progressed:
                    backoff = self.backoff_initial
                reason = f"watch failed: {e.reason}"
            except Exception as e:  # noqa: BLE001 - the watcher must survive anything
                if self._stop.is_set():
                    break
                if not isinstance(e, _RequestError):
                    log.exception("%s: unexpected error", kind)
                reason = str(e)
            log.warning(
                "%s: %s; %s in %.2fs",
                kind,
                reason,
                f"resuming the watch from resourceVersion {rv}" if rv else "listing again",
                backoff,
            )
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max)
        log.debug("%s: watcher stopped", kind)

    def _on_unserved(self, res: Resource, e: _Unserved, listed_once: bool) -> None:
        """A CRD kind is not served (404) or not readable (403): log it once per change, and
        count the kind as listed (empty, or its last objects after a 403) until it is."""
        kind = res.kind
        keep = e.status == 403 and listed_once  # RBAC changed under us: keep what we know
        if self.unserved.get(kind) != e.status:
            known = self._dispatch.count(kind)
            if e.status == 404:
                why = f"its CustomResourceDefinition is not installed (kubectl apply -f {res.crd})"
            else:
                why = (
                    f"the agent's ClusterRole does not grant list/watch on {res.plural} "
                    "(kubectl apply -f manifests/01-rbac.yaml)"
                )
            log.warning(
                "%s: %s: %s; %s; the other kinds are watched as usual; listing it again every %ss",
                kind,
                e,
                why,
                f"keeping the last {known} {kind} object(s)"
                if keep
                else f"no {kind} objects until then",
                self.crd_retry,
            )
        else:
            log.debug("%s: still not served: %s", kind, e)
        self.unserved[kind] = e.status
        self.resource_version[kind] = ""
        if not keep:
            self._dispatch.put(Listed(kind, {}, set()))

    def _get(self, res: Resource, params: list[tuple[str, Any]], read_timeout: float):
        """A GET of res's collection; a CRD kind's 404/403 raises _Unserved."""
        try:
            return self._http.get(res.path, params, read_timeout)
        except _RequestError as e:
            if res.crd and e.status in (403, 404):
                raise _Unserved(e.status, str(e)) from None
            raise

    def _selector(self, res: Resource) -> list[tuple[str, str]]:
        if res.kind == "Pod" and self.pod_field_selector:
            return [("fieldSelector", self.pod_field_selector)]
        return []

    def _list(self, res: Resource) -> str:
        """List every object of the kind (all pages); hand them to the dispatcher; return the
        list's resourceVersion."""
        kind = res.kind
        objects: dict[Key, Object] = {}
        bad: set[Key] = set()
        seen_errors: dict[Key, str] = {}
        count = pages = 0
        cont = ""
        rv = ""
        while True:
            params: list[tuple[str, Any]] = self._selector(res)
            if self.page_size:
                params.append(("limit", self.page_size))
            if cont:
                params.append(("continue", cont))
            resp = self._get(res, params, self.request_timeout)
            try:
                data = resp.read(decode_content=True)
            except Exception as e:  # noqa: BLE001
                self._http.done(resp)
                raise _RequestError(f"list {kind}: reading the response: {e}") from e
            self._http.done(resp, reuse=True)
            try:
                body = json.loads(data)
                items = body.get("items") or []
                meta = body.get("metadata") or {}
            except (ValueError, AttributeError) as e:
                raise _RequestError(f"list {kind}: not a JSON list: {e}") from e
            pages += 1
            for item in items:
                count += 1
                obj, key, err = parse_object(res, item, self._parse_errors[kind])
                if obj is not None:
                    objects[obj.key] = obj
                elif key is not None:
                    bad.add(key)
                    seen_errors[key] = err or ""
            rv = str(meta.get("resourceVersion") or "")
            cont = meta.get("continue") or ""
            if not cont:
                break
        if not rv:
            raise _RequestError(f"list {kind}: the list has no metadata.resourceVersion")
        forget_parse_errors(kind, self._parse_errors[kind], seen_errors, objects)
        log.info(
            "%s: listed %d object(s) in %d page(s) at resourceVersion %s%s",
            kind,
            count,
            pages,
            rv,
            f" ({len(bad)} malformed, skipped)" if bad else "",
        )
        self._dispatch.put(Listed(kind, objects, bad))
        self.resource_version[kind] = rv
        if self.unserved.pop(kind, None) is not None:
            log.info("%s: served now: watching it", kind)
        return rv

    def _watch(self, res: Resource, rv: str, next_resync: float) -> str:
        """Watch the kind from rv until the server ends the watch (timeoutSeconds). Returns the
        newest resourceVersion seen. Raises _Gone (relist), _WatchFailed (the stream broke after
        it had connected), _RequestError (could not connect), _Stopped."""
        kind = res.kind
        timeout = self.watch_timeout
        if next_resync != math.inf:  # end the watch in time for the resync
            timeout = max(1, min(timeout, math.ceil(next_resync - time.monotonic())))
        params: list[tuple[str, Any]] = [
            *self._selector(res),
            ("watch", "true"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout),
        ]
        log.debug("%s: watch from resourceVersion %s (timeout %ds)", kind, rv, timeout)
        started = time.monotonic()
        resp = self._get(res, params, timeout + self.request_timeout)
        events = 0
        try:
            for line in _lines(resp, self.max_object_bytes):
                if not line.strip():
                    continue
                rv = self._on_line(res, line, rv)
                events += 1
        except (_Gone, _Stopped):
            raise
        except Exception as e:  # noqa: BLE001 - dropped connection, garbled stream, ...
            if self._stop.is_set():
                raise _Stopped from None
            raise _WatchFailed(rv, f"{type(e).__name__}: {e}", events > 0) from e
        finally:
            self._http.done(resp)
        if self._stop.is_set():
            raise _Stopped
        if not events and time.monotonic() - started < timeout / 2:
            # ended cleanly, but long before its timeout and with nothing in it (a proxy or a
            # server shutting down): retry with backoff rather than in a tight loop
            raise _WatchFailed(rv, "the server ended the watch early", False)
        log.debug("%s: watch ended after %d line(s) at resourceVersion %s", kind, events, rv)
        return rv

    def _on_line(self, res: Resource, line: bytes, rv: str) -> str:
        """Handle one watch event line; return the new resourceVersion."""
        kind = res.kind
        etype, raw, new_rv = decode_event(line, rv)
        if etype == "BOOKMARK":
            log.debug("%s: bookmark at resourceVersion %s", kind, new_rv)
            self.resource_version[kind] = new_rv
            return new_rv
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring a watch event of unknown type %r", kind, etype)
            return rv
        self.events_total[kind] += 1
        if etype == "DELETED":
            key = raw_key(res, raw)
            if key is not None:
                self._dispatch.put(Changed(kind, etype, key, None))
                self._parse_errors[kind].pop(key, None)
        else:
            obj, key, _ = parse_object(res, raw, self._parse_errors[kind])
            if key is not None:
                self._dispatch.put(Changed(kind, etype, key, obj))
        self.resource_version[kind] = new_rv
        return new_rv
