"""Cluster state from the Kubernetes API: list + watch, delivered as typed source events.

:class:`APISource` implements the :class:`ovsctl.k8s.source.Source` protocol for the six kinds
the agent consumes (Namespaces, Nodes, NetworkPolicies, Services, EndpointSlices, Pods), so
nothing above it knows whether the state comes from the API server or a YAML directory
(DESIGN.md, principle 7).

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
- Every ``resync_period`` seconds each kind is relisted anyway (a full resync; again only real
  differences are emitted).
- Requests go through the official client's :class:`kubernetes.client.ApiClient` (its
  configuration, TLS and auth, bearer-token refresh included) but the bodies are read as raw
  JSON, so the dicts go straight to :func:`ovsctl.k8s.model.parse` (list items lack ``kind`` and
  ``apiVersion``; they are filled in).
- Watcher threads parse objects and hand them to **one dispatcher thread**, which owns the view,
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
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from ovsctl.k8s.model import ACCEPTED_KINDS, KINDS, ModelError, Object, parse
from ovsctl.k8s.source import Event, Handler, Key, diff_states

__all__ = ["RESOURCES", "APISource", "Resource", "make_api_client"]

log = logging.getLogger(__name__)

MAX_OBJECT_BYTES = 16 << 20  # one watch event (one object) at most; longer ones are dropped
_READ = 65536


@dataclass(frozen=True)
class Resource:
    """One watched kind: its apiVersion and its cluster-wide collection path."""

    kind: str
    api_version: str
    plural: str
    namespaced: bool

    @property
    def path(self) -> str:
        if "/" in self.api_version:  # a named group: /apis/<group>/<version>/<plural>
            return f"/apis/{self.api_version}/{self.plural}"
        return f"/api/{self.api_version}/{self.plural}"  # the core group


_PLURALS = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "NetworkPolicy": "networkpolicies",
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Pod": "pods",
}

# In model.ACCEPTED_KINDS order (namespaces and nodes first, pods last).
RESOURCES: dict[str, Resource] = {
    kind: Resource(kind, KINDS[kind].api_version, _PLURALS[kind], KINDS[kind].namespaced)
    for kind in ACCEPTED_KINDS
}


def make_api_client(
    *,
    host: str | None = None,
    token: str | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
    pool_size: int = 16,
) -> k8s_client.ApiClient:
    """An :class:`ApiClient` from one of three configurations:

    - ``host`` (e.g. ``https://10.0.0.1:6443``, ``http://127.0.0.1:8001`` for ``kubectl
      proxy``, or a test server), with an optional bearer ``token`` or ``token_file`` (read
      again when the file changes, and at least every minute: projected service account
      tokens rotate) and an optional ``ca_file`` (the CA bundle that signs the server's
      certificate; default: the system's CAs);
    - ``in_cluster=True``: the pod's service account (``load_incluster_config``);
    - ``kubeconfig``: a kubeconfig file (``""`` for the default ``~/.kube/config`` or
      ``$KUBECONFIG``), with an optional ``context`` (``load_kube_config``).

    With none of them: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else the default
    kubeconfig.
    """
    cfg = k8s_client.Configuration()
    if host:
        cfg.host = host.rstrip("/")
        if token_file:
            tf = TokenFile(token_file)
            cfg.api_key = {"authorization": f"Bearer {tf.read()}"}
            cfg.refresh_api_key_hook = tf.refresh
        elif token:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        if ca_file:
            cfg.ssl_ca_cert = ca_file
        how = f"host {cfg.host}" + (f", CA {ca_file}" if ca_file else "")
        how += f", token from {token_file}" if token_file else ""
    else:
        if in_cluster is None and kubeconfig is None:
            in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=cfg)
            how = "in-cluster service account"
        else:
            k8s_config.load_kube_config(
                config_file=kubeconfig or None, context=context, client_configuration=cfg
            )
            how = f"kubeconfig {kubeconfig or '(default)'}" + (
                f" context {context}" if context else ""
            )
    # every watcher keeps one connection open; leave room for the lists beside them
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, pool_size)
    log.info("kubernetes API client: %s -> %s", how, cfg.host)
    return k8s_client.ApiClient(cfg)


class TokenFile:
    """A bearer token kept in a file: read again when the file changes (another inode, mtime
    or size: a projected token is swapped in atomically) or `every` seconds have passed. A
    file that cannot be read keeps the last token (logged once until it reads again)."""

    def __init__(self, path: str, every: float = 60.0, clock=time.monotonic):
        self.path, self.every, self.clock = path, every, clock
        self.token = ""
        self._sig: tuple | None = None
        self._at = -math.inf
        self._failing = False
        self._lock = threading.Lock()  # every watcher thread refreshes before its requests

    def read(self) -> str:
        with open(self.path) as fh:
            token = fh.read().strip()
        if not token:
            raise ValueError(f"token file {self.path} is empty")
        st = os.stat(self.path)
        self._sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._at = self.clock()
        self.token = token
        return token

    def refresh(self, cfg) -> None:
        """Configuration.refresh_api_key_hook: called before every request (from every
        watcher's thread: one at a time, so a vanished file is logged once, not per thread)."""
        with self._lock:
            try:
                st = os.stat(self.path)
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                if sig != self._sig or self.clock() - self._at >= self.every:
                    old = self.token
                    self.read()
                    if self.token != old:
                        log.info("kubernetes API client: token re-read from %s", self.path)
                self._failing = False
            except (OSError, ValueError) as e:
                if not self._failing:
                    log.warning("kubernetes API client: keeping the last token: %s", e)
                    self._failing = True
            token = self.token
        cfg.api_key = {**cfg.api_key, "authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- errors


class _Gone(Exception):
    """HTTP 410 / ERROR event code 410: our resourceVersion is too old; relist."""


class _TooLarge(_Gone):
    """A watch event longer than max_object_bytes was dropped: relist (the event is lost)."""


class _Stopped(Exception):
    """The source is stopping."""


class _RequestError(Exception):
    """A failed request or a broken stream; retried with backoff."""


class _WatchFailed(Exception):
    """The watch stream broke after it had connected; resume from rv."""

    def __init__(self, rv: str, reason: str, progressed: bool):
        super().__init__(reason)
        self.rv = rv
        self.reason = reason
        self.progressed = progressed  # it delivered something before it broke


# --------------------------------------------------------------------------- dispatcher messages


@dataclass
class _Listed:
    """A watcher (re)listed its kind: these are all of its objects."""

    kind: str
    objects: dict[Key, Object]
    bad: set[Key]  # keys whose current version did not parse: keep their last good version


@dataclass
class _Changed:
    """One watch event. obj is None for a DELETED, or for a version that did not parse."""

    kind: str
    type: str
    key: Key
    obj: Object | None


_STOP = object()


# --------------------------------------------------------------------------- the source


class APISource:
    """Cluster state from the Kubernetes API server (list + watch). See the module docstring.

    Pass an ``api_client`` (an :class:`kubernetes.client.ApiClient`), or the arguments of
    :func:`make_api_client` (``host``/``token``, ``in_cluster``, ``kubeconfig``/``context``).

    Tuning: ``resync_period`` (s, 0 = never) between full relists; ``watch_timeout`` (s) the
    server-side timeoutSeconds of a watch; ``backoff_initial``/``backoff_max`` (s) for
    reconnects; ``page_size`` items per list page (0 = unpaged); ``request_timeout`` (s) the
    connect timeout and the read timeout of lists (a watch's read timeout is its
    timeoutSeconds plus this). ``kinds`` restricts the watched kinds (default: all six).
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
        resync_period: float = 300.0,
        watch_timeout: int = 300,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        page_size: int = 500,
        request_timeout: float = 30.0,
        max_object_bytes: int = MAX_OBJECT_BYTES,
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

        # counters and state for metrics and tests (each kind's entries written by its watcher)
        self.events_total: dict[str, int] = {r.kind: 0 for r in self.resources}
        self.relists_total: dict[str, int] = {r.kind: 0 for r in self.resources}
        self.resource_version: dict[str, str] = {r.kind: "" for r in self.resources}

        self._stores: dict[str, dict[Key, Object]] = {r.kind: {} for r in self.resources}
        self._lock = threading.Lock()  # guards _stores (written by the dispatcher only)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._handler: Handler | None = None
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._responses: set = set()  # open urllib3 responses, closed by stop()
        self._resp_lock = threading.Lock()
        self._parse_errors: dict[str, dict[Key, str]] = {r.kind: {} for r in self.resources}

    # ------------------------------------------------------------------ Source interface

    def start(self, handler: Handler) -> None:
        if self._dispatcher is not None:
            raise RuntimeError("APISource already started")
        self._handler = handler
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
            target=self._dispatch_loop, name="k8s-api-dispatch", daemon=True
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
        with self._resp_lock:
            self._stop.set()
            responses = list(self._responses)
        for resp in responses:  # unblock watchers waiting in a read
            _abort(resp)
        self._queue.put(_STOP)
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
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def objects(self) -> dict[Key, Object]:
        with self._lock:
            out: dict[Key, Object] = {}
            for store in self._stores.values():
                out.update(store)
            return out

    # ------------------------------------------------------------------ HTTP

    def _get(self, path: str, params: list[tuple[str, Any]], read_timeout: float):
        """Start a GET; returns the urllib3 response (status 200, body not read yet), registered
        so stop() can abort it. The caller must pass it to _done()."""
        method, url, headers, body, post = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            rest = self.api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                post_params=post,
                _request_timeout=(self.request_timeout, read_timeout),
            )
        except Exception as e:  # noqa: BLE001 - urllib3/socket/ssl errors alike
            raise _RequestError(f"GET {path}: {e}") from e
        resp = rest.response
        with self._resp_lock:
            self._responses.add(resp)
            stopping = self._stop.is_set()
        if stopping:
            self._done(resp)
            raise _Stopped
        if resp.status != 200:
            try:
                text = resp.read(decode_content=True)[:2000]
            except Exception:  # noqa: BLE001
                text = b""
            finally:
                self._done(resp)
            message = _status_message(text)
            if resp.status == 410:
                raise _Gone(f"GET {path}: HTTP 410 Gone: {message}")
            raise _RequestError(f"GET {path}: HTTP {resp.status} {resp.reason}: {message}")
        return resp

    def _done(self, resp, reuse: bool = False) -> None:
        with self._resp_lock:
            self._responses.discard(resp)
        try:
            if not reuse:
                resp.close()  # a watch may be half-read: never give that connection back
            resp.release_conn()
        except Exception:  # noqa: BLE001
            pass

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
            resp = self._get(res.path, params, self.request_timeout)
            try:
                data = resp.read(decode_content=True)
            except Exception as e:  # noqa: BLE001
                self._done(resp)
                raise _RequestError(f"list {kind}: reading the response: {e}") from e
            self._done(resp, reuse=True)
            try:
                body = json.loads(data)
                items = body.get("items") or []
                meta = body.get("metadata") or {}
            except (ValueError, AttributeError) as e:
                raise _RequestError(f"list {kind}: not a JSON list: {e}") from e
            pages += 1
            for item in items:
                count += 1
                obj, key, err = self._parse(res, item)
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
        # forget logged parse errors of objects that are gone or parse again
        errors = self._parse_errors[kind]
        for key in list(errors):
            if key not in seen_errors:
                if key in objects:
                    log.info("%s %s parses again", kind, _show_key(key))
                del errors[key]
        log.info(
            "%s: listed %d object(s) in %d page(s) at resourceVersion %s%s",
            kind,
            count,
            pages,
            rv,
            f" ({len(bad)} malformed, skipped)" if bad else "",
        )
        self._queue.put(_Listed(kind, objects, bad))
        self.resource_version[kind] = rv
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
        resp = self._get(res.path, params, timeout + self.request_timeout)
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
            self._done(resp)
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
        try:
            ev = json.loads(line)
            etype = ev["type"]
            raw = ev["object"]
            if not isinstance(raw, dict):
                raise TypeError("object is not a mapping")
        except (ValueError, KeyError, TypeError) as e:
            # we may have lost an event: reconnect from the last good resourceVersion
            raise _RequestError(f"garbled watch event {line[:200]!r}: {e}") from None
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        new_rv = str(meta.get("resourceVersion") or "") or rv
        if etype == "BOOKMARK":
            log.debug("%s: bookmark at resourceVersion %s", kind, new_rv)
            self.resource_version[kind] = new_rv
            return new_rv
        if etype == "ERROR":
            code = raw.get("code")
            message = raw.get("message") or raw.get("reason") or "?"
            if code == 410:
                raise _Gone(f"watch from resourceVersion {rv}: 410 Gone: {message}")
            raise _RequestError(f"watch ERROR event (code {code}): {message}")
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring a watch event of unknown type %r", kind, etype)
            return rv
        self.events_total[kind] += 1
        if etype == "DELETED":
            key = _raw_key(res, raw)
            if key is not None:
                self._queue.put(_Changed(kind, etype, key, None))
                self._parse_errors[kind].pop(key, None)
        else:
            obj, key, _ = self._parse(res, raw)
            if key is not None:
                self._queue.put(_Changed(kind, etype, key, obj))
        self.resource_version[kind] = new_rv
        return new_rv

    def _parse(self, res: Resource, raw: Any) -> tuple[Object | None, Key | None, str | None]:
        """(object, key, None) or, for a malformed object, (None, key-if-known, error)."""
        kind = res.kind
        if isinstance(raw, dict):
            # list items (and some watch events) leave kind/apiVersion off
            if not raw.get("kind"):
                raw = {**raw, "kind": kind}
            if not raw.get("apiVersion"):
                raw = {**raw, "apiVersion": res.api_version}
        key = _raw_key(res, raw)
        try:
            obj = parse(raw)
            if obj.key[0] != kind:
                raise ModelError(f"a {obj.key[0]} in the {kind} collection", ref=str(obj.key))
        except Exception as e:  # noqa: BLE001 - ModelError, or anything odd in the dict
            err = str(e) if isinstance(e, ModelError) else repr(e)
            errors = self._parse_errors[kind]
            if key is None or errors.get(key) != err:
                log.error("%s: skipping a malformed object: %s", kind, err)
                if key is not None:
                    errors[key] = err
            return None, key, err
        if self._parse_errors[kind].pop(obj.key, None) is not None:
            log.info("%s %s parses again", kind, _show_key(obj.key))
        return obj, obj.key, None

    # ------------------------------------------------------------------ the dispatcher

    def _dispatch_loop(self) -> None:
        listed: set[str] = set()
        all_kinds = {r.kind for r in self.resources}
        while True:
            batch = [self._queue.get()]
            while True:  # take whatever else has queued up: one handler call for all of it
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(m is _STOP for m in batch) or self._stop.is_set():
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
                if isinstance(m, _Listed):
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
                ", ".join(f"{e.type} {e.key[0]} {_show_key(e.key)}" for e in events[:10])
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


# --------------------------------------------------------------------------- helpers


class LineSplitter:
    """Newline-delimited lines from a stream of chunks, in linear time: the pieces of an
    unfinished line are kept in a list and joined once, when its newline arrives. A line longer
    than `max_line` bytes is not kept: its pieces are dropped as they come and `feed` raises
    :class:`_TooLarge` naming its size once its newline (or the end) arrives. `peak` is the
    most bytes ever held for an unfinished line."""

    def __init__(self, max_line: int = 0):
        self.max_line = max_line  # 0 = unbounded
        self._parts: list[bytes] = []
        self.pending = 0  # bytes of the unfinished line held in _parts
        self.dropping = 0  # > 0: bytes of an oversized line seen so far (none of them kept)
        self.peak = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._add(chunk[start:])
                return out
            self._add(chunk[start:nl])
            start = nl + 1
            if self.dropping:
                size, self.dropping = self.dropping, 0
                raise _TooLarge(self._too_large(size))
            out.append(b"".join(self._parts))
            self._parts, self.pending = [], 0

    def end(self) -> list[bytes]:
        """The stream ended: the last line if it had no newline."""
        if self.dropping:
            size, self.dropping = self.dropping, 0
            raise _TooLarge(self._too_large(size))
        last = b"".join(self._parts)
        self._parts, self.pending = [], 0
        return [last] if last.strip() else []

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        if self.dropping:
            self.dropping += len(piece)
            return
        if self.max_line and self.pending + len(piece) > self.max_line:
            self.dropping = self.pending + len(piece)
            self._parts, self.pending = [], 0
            return
        self._parts.append(piece)
        self.pending += len(piece)
        self.peak = max(self.peak, self.pending)

    def _too_large(self, size: int) -> str:
        return f"dropped a watch event of {size} bytes (the limit is {self.max_line} bytes)"


def _lines(resp, max_line: int = 0) -> Iterator[bytes]:
    """The newline-delimited lines of a streaming response, as they arrive (reads of at most
    64 KiB; a line longer than max_line raises _TooLarge)."""
    if resp.chunked and resp.supports_chunked_reads():
        chunks: Iterable[bytes] = resp.read_chunked(_READ, decode_content=True)
    else:

        def _read1() -> Iterator[bytes]:
            while True:
                data = resp.read1(_READ)
                if not data:
                    return
                yield data

        chunks = _read1()
    split = LineSplitter(max_line)
    for chunk in chunks:
        yield from split.feed(chunk)
    yield from split.end()


def _abort(resp) -> None:
    """Unblock a thread reading resp (from another thread)."""
    try:
        resp.shutdown()  # shuts the socket's read side: a blocked read returns at once
    except Exception:  # noqa: BLE001 - already released or closed
        pass
    try:
        resp.close()
    except Exception:  # noqa: BLE001
        pass


def _raw_key(res: Resource, raw: Any) -> Key | None:
    """The model key of a raw object, or None if it has no usable name."""
    if not isinstance(raw, Mapping):
        return None
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    ns = ""
    if res.namespaced:
        ns = meta.get("namespace") or "default"
        if not isinstance(ns, str):
            return None
    return (res.kind, ns, name)


def _show_key(key: Key) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


def _status_message(text: bytes) -> str:
    """The message of a Status object body, or the text itself."""
    try:
        status = json.loads(text)
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    except ValueError:
        pass
    return text.decode("utf-8", "replace").strip()[:300] or "(no body)"
