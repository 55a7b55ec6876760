"""A small Kubernetes API server for tests and the lab: list + watch of seven kinds, over HTTP.

The unit tests drive it directly (:class:`FakeAPI`); `ovsctl lab up --source api` runs it as
a process that mirrors the lab's YAML state directory (``python -m ovsctl.lab.apiserver
--state DIR --listen HOST:PORT``), so the agents watch the same state through the API watcher.

It speaks the wire format a client sees from the real API server, for the cluster-wide
collections of Nodes, Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies (cluster-scoped,
as its CustomResourceDefinition declares), Services and EndpointSlices:

- ``GET <path>``: a JSON list (``{"kind": "PodList", "metadata": {"resourceVersion": ..},
  "items": [..]}``, items without kind/apiVersion, as the real server sends them), paged with
  ``limit`` + ``continue`` (a continuation is served from the snapshot of its first page).
- ``GET <path>?watch=true&resourceVersion=RV``: a chunked stream of one-line JSON events
  (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR). Events after RV are replayed from the history, then
  live ones follow. An RV older than the last :meth:`FakeAPI.compact` gets an ERROR event
  carrying a Status with code 410 (or an HTTP 410 with ``gone_as_http=True``). Without RV (or
  RV "0") the current objects come first as ADDED. ``timeoutSeconds`` ends the stream cleanly;
  ``allowWatchBookmarks`` enables BOOKMARKs (sent by :meth:`FakeAPI.bookmark`).
- ``fieldSelector`` (``a.b=v``, ``a.b==v``, ``a.b!=v``, comma-separated) on lists and watches;
  an object that stops (starts) matching reaches a watch as DELETED (ADDED), as it does for real.
- ``GET /version``.

The test side: :meth:`create`, :meth:`update`, :meth:`apply`, :meth:`delete` (each bumps the
global resourceVersion and records the event), :meth:`compact` (forget the history),
:meth:`drop_watches` (close every open watch abruptly: no terminating chunk),
:meth:`end_watches` (end them cleanly),
:meth:`bookmark`, :meth:`watch_error`, ``watches_available`` (False: watches get HTTP 503),
``watch_seconds_cap`` (end every watch early, cleanly), :meth:`unserve` / :meth:`serve` (a
kind's collection answers 404, as without its CRD, or 403, as without RBAC, until served
again), and ``requests`` (every request as ``(path, query dict)``). Standard library only.
"""

from __future__ import annotations

import base64
import copy
import json
import queue
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# kind -> (apiVersion, cluster-wide path, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Node": ("v1", "/api/v1/nodes", False),
    "Namespace": ("v1", "/api/v1/namespaces", False),
    "Pod": ("v1", "/api/v1/pods", True),
    "NetworkPolicy": ("networking.k8s.io/v1", "/apis/networking.k8s.io/v1/networkpolicies", True),
    "ClusterNetworkPolicy": (
        "policy.networking.k8s.io/v1alpha2",
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies",
        False,
    ),
    "Service": ("v1", "/api/v1/services", True),
    "EndpointSlice": ("discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices", True),
}
_BY_PATH = {path: kind for kind, (_, path, _) in KINDS.items()}

_DROP = object()  # queued to a watch: close the connection abruptly
_END = object()  # queued to a watch: end the stream cleanly


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _field(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class _Selector:
    """A field selector: terms ``path=value``, ``path==value``, ``path!=value``."""

    def __init__(self, text: str):
        self.terms: list[tuple[str, bool, str]] = []
        for term in filter(None, (t.strip() for t in text.split(","))):
            if "!=" in term:
                path, value = term.split("!=", 1)
                self.terms.append((path, False, value))
            else:
                path, value = term.replace("==", "=").split("=", 1)
                self.terms.append((path, True, value))

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        for path, equal, value in self.terms:
            v = _field(obj, path)
            v = "" if v is None else str(v)
            if (v == value) != equal:
                return False
        return True


class _Watch:
    def __init__(self, kind: str, selector: _Selector, bookmarks: bool):
        self.kind = kind
        self.selector = selector
        self.bookmarks = bookmarks
        self.queue: queue.Queue = queue.Queue()

    def offer(self, etype: str, obj: dict, old: dict | None) -> None:
        """Queue the event as this watch sees it through its selector."""
        now, before = self.selector.matches(obj), self.selector.matches(old)
        if etype == "DELETED":
            if before or now:
                self.queue.put({"type": "DELETED", "object": obj})
        elif now and not before and old is not None:
            self.queue.put({"type": "ADDED", "object": obj})  # started matching
        elif before and not now:
            self.queue.put({"type": "DELETED", "object": obj})  # stopped matching
        elif now:
            self.queue.put({"type": etype, "object": obj})


class FakeAPI:
    """The fake API server. Use as a context manager, or call start() and stop()."""

    def __init__(self, *, gone_as_http: bool = False, first_rv: int = 100):
        self.gone_as_http = gone_as_http
        self.watches_available = True
        self.watch_seconds_cap: float | None = None  # end every watch after this long (cleanly)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.unserved: dict[str, int] = {}  # kind -> the HTTP status its collection answers
        self._lock = threading.Lock()
        self._rv = first_rv
        self._compacted = 0  # watches from a resourceVersion below this get 410
        self._objects: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in KINDS}
        self._history: list[tuple[int, str, str, dict, dict | None]] = []
        self._watches: set[_Watch] = set()
        self._pages: dict[str, tuple[int, list[dict]]] = {}  # continue token -> snapshot
        self._server: ThreadingHTTPServer | None = None
        self.scheme = "http"
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None
    ) -> FakeAPI:
        """Serve on host:port; with `tls` (certificate file, key file) over HTTPS."""
        server = ThreadingHTTPServer((host, port), _Handler)
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        server.daemon_threads = True
        server.api = self  # type: ignore[attr-defined]
        server.handle_error = lambda request, address: None  # dropped clients are normal here
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._lock:
            for w in self._watches:
                w.queue.put(_DROP)
            self._watches.clear()
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    # ---------------------------------------------------------------- the test API

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def create(self, obj: dict) -> dict:
        return self._write(obj, must_exist=False)

    def update(self, obj: dict) -> dict:
        return self._write(obj, must_exist=True)

    def apply(self, obj: dict, *, silent: bool = False) -> dict:
        """Create or update. silent=True changes the object (and the resourceVersion) without
        telling any watch and without history: a lost event, which only a relist repairs."""
        return self._write(obj, must_exist=None, silent=silent)

    def delete(self, kind: str, name: str, namespace: str = "") -> dict:
        with self._lock:
            key = self._key(kind, namespace, name)
            old = self._objects[kind].pop(key)
            self._rv += 1
            obj = copy.deepcopy(old)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._record(kind, "DELETED", obj, old)
            return copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str = "") -> dict | None:
        with self._lock:
            obj = self._objects[kind].get(self._key(kind, namespace, name))
            return copy.deepcopy(obj)

    def objects(self, kind: str | None = None) -> list[dict]:
        """Copies of the stored objects (of one kind, or all), with kind and apiVersion."""
        with self._lock:
            kinds = [kind] if kind else list(KINDS)
            return [copy.deepcopy(o) for k in kinds for _, o in sorted(self._objects[k].items())]

    def compact(self) -> int:
        """Forget the history: watches from an older resourceVersion now get 410 Gone."""
        with self._lock:
            self._history.clear()
            self._compacted = self._rv
            self._pages.clear()  # continue tokens expire too
            return self._rv

    def end_watches(self) -> int:
        """End every open watch cleanly (as at timeoutSeconds); return how many."""
        with self._lock:
            n = len(self._watches)
            for w in self._watches:
                w.queue.put(_END)
            self._watches.clear()
            return n

    def drop_watches(self) -> int:
        """Close every open watch abruptly (no terminating chunk); return how many."""
        with self._lock:
            n = len(self._watches)
            for w in self._watches:
                w.queue.put(_DROP)
            self._watches.clear()
            return n

    def bookmark(self, kinds=None) -> int:
        """Send a BOOKMARK at the current resourceVersion to the watches that allow them."""
        with self._lock:
            n = 0
            for w in self._watches:
                if w.bookmarks and (kinds is None or w.kind in kinds):
                    api_version = KINDS[w.kind][0]
                    obj = {
                        "kind": w.kind,
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(self._rv)},
                    }
                    w.queue.put({"type": "BOOKMARK", "object": obj})
                    n += 1
            return n

    def watch_error(self, code: int, kinds=None, message: str = "injected error") -> int:
        """Send an ERROR event with a Status of this code to open watches, then end them."""
        with self._lock:
            hit = [w for w in self._watches if kinds is None or w.kind in kinds]
            for w in hit:
                status = _status(code, "Expired" if code == 410 else "InternalError", message)
                w.queue.put({"type": "ERROR", "object": status})
                w.queue.put(_END)
                self._watches.discard(w)
            return len(hit)

    def unserve(self, kind: str, status: int = 404) -> None:
        """The kind's collection answers `status` from now on and its open watches end: 404 as
        when its CRD is deleted (which deletes its objects, without watch events), 403 as when
        the client's RBAC no longer grants it (its objects stay)."""
        with self._lock:
            self.unserved[kind] = status
            if status == 404:
                self._objects[kind].clear()
                self._rv += 1
            for w in [w for w in self._watches if w.kind == kind]:
                w.queue.put(_END)
                self._watches.discard(w)

    def serve(self, kind: str) -> None:
        """Serve the kind again (its CRD installed, its RBAC granted)."""
        with self._lock:
            self.unserved.pop(kind, None)

    def open_watches(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for w in self._watches if kind is None or w.kind == kind)

    def watch_requests(self, kind: str) -> list[dict[str, str]]:
        """The query parameters of every watch request made for kind."""
        path = KINDS[kind][1]
        return [q for p, q in list(self.requests) if p == path and _is_watch(q)]

    def list_requests(self, kind: str) -> list[dict[str, str]]:
        path = KINDS[kind][1]
        return [q for p, q in list(self.requests) if p == path and not _is_watch(q)]

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _key(kind: str, namespace: str, name: str) -> tuple[str, str]:
        return ((namespace or "default") if KINDS[kind][2] else "", name)

    def _write(self, obj: dict, must_exist: bool | None, silent: bool = False) -> dict:
        kind = obj["kind"]
        api_version, _, namespaced = KINDS[kind]
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", api_version)
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta["namespace"] = meta.get("namespace") or "default"  # as the real server does
        key = self._key(kind, meta.get("namespace", ""), meta["name"])
        with self._lock:
            old = self._objects[kind].get(key)
            if must_exist is True and old is None:
                raise KeyError(f"{kind} {key} does not exist")
            if must_exist is False and old is not None:
                raise KeyError(f"{kind} {key} already exists")
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[kind][key] = obj
            if not silent:
                self._record(kind, "ADDED" if old is None else "MODIFIED", obj, old)
            return copy.deepcopy(obj)

    def _record(self, kind: str, etype: str, obj: dict, old: dict | None) -> None:
        # with self._lock held
        snap = copy.deepcopy(obj)
        self._history.append((self._rv, kind, etype, snap, old))
        for w in self._watches:
            if w.kind == kind:
                w.offer(etype, snap, old)

    def _list(self, kind: str, query: dict[str, str]) -> dict:
        api_version = KINDS[kind][0]
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self._lock:
            if token:
                if token not in self._pages:
                    return _status(410, "Expired", "the provided continue parameter is too old")
                rv, items = self._pages.pop(token)
            else:
                sel = _Selector(query.get("fieldSelector", ""))
                rv = self._rv
                items = [
                    copy.deepcopy(o)
                    for _, o in sorted(self._objects[kind].items())
                    if sel.matches(o)
                ]
            meta: dict = {"resourceVersion": str(rv)}
            if limit and len(items) > limit:
                items, rest = items[:limit], items[limit:]
                new_token = base64.b64encode(f"{kind}:{rv}:{len(rest)}".encode()).decode()
                self._pages[new_token] = (rv, rest)
                meta["continue"] = new_token
        for item in items:  # list items come without kind and apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": items}

    def _open_watch(self, kind: str, query: dict[str, str]) -> _Watch | dict:
        """Register a watch and queue its replay; or a Status (410) if rv is too old."""
        rv_text = query.get("resourceVersion", "")
        sel = _Selector(query.get("fieldSelector", ""))
        w = _Watch(kind, sel, query.get("allowWatchBookmarks") in ("1", "true"))
        with self._lock:
            if rv_text in ("", "0"):
                for _, o in sorted(self._objects[kind].items()):
                    if sel.matches(o):
                        w.queue.put({"type": "ADDED", "object": copy.deepcopy(o)})
            else:
                rv = int(rv_text)
                if rv < self._compacted:
                    return _status(
                        410,
                        "Expired",
                        f"too old resource version: {rv} ({self._compacted})",
                    )
                for erv, ekind, etype, obj, old in self._history:
                    if erv > rv and ekind == kind:
                        w.offer(etype, obj, old)
            self._watches.add(w)
        return w

    def _close_watch(self, w: _Watch) -> None:
        with self._lock:
            self._watches.discard(w)


def _is_watch(query: dict[str, str]) -> bool:
    return query.get("watch") in ("1", "true")


_SERVICE_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/services/([^/]+)")
_PATCH_LOCK = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked watch streams, keep-alive lists

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    @property
    def api(self) -> FakeAPI:
        return self.server.api  # type: ignore[attr-defined]

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PATCH(self):  # noqa: N802 - a merge patch of services/NAME/status only
        url = urlsplit(self.path)
        m = _SERVICE_PATH.fullmatch(url.path.removesuffix("/status"))
        length = int(self.headers.get("Content-Length") or 0)
        patch = json.loads(self.rfile.read(length) or b"{}")
        api = self.api
        api.requests.append((url.path, {"PATCH": "1"}))
        if not m or not url.path.endswith("/status"):
            self._json(405, _status(405, "MethodNotAllowed", "only services/NAME/status"))
            return
        with _PATCH_LOCK:  # (FakeAPI's own lock is taken by get and update)
            obj = api.get("Service", m[2], m[1])
            if obj is None:
                self._json(404, _status(404, "NotFound", f"services {m[2]} not found"))
                return
            rv = (patch.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"].get("resourceVersion"):
                self._json(409, _status(409, "Conflict", "the object has been modified"))
                return
            obj["status"] = {**(obj.get("status") or {}), **(patch.get("status") or {})}
            self._json(200, api.update(obj))

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        api = self.api
        api.requests.append((url.path, query))
        api.authorizations.append(self.headers.get("Authorization"))
        if url.path == "/version":
            self._json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fakeapi"})
            return
        one = _SERVICE_PATH.fullmatch(url.path)
        if one:  # one Service (the LB pool writer reads it before its status PATCH)
            obj = api.get("Service", one[2], one[1])
            self._json(200, obj) if obj else self._json(404, _status(404, "NotFound", "no"))
            return
        kind = _BY_PATH.get(url.path)
        unserved = api.unserved.get(kind) if kind else None
        if kind is None or unserved == 404:
            self._json(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
            return
        if unserved is not None:
            self._json(
                unserved,
                _status(unserved, "Forbidden", f"{url.path} is forbidden (HTTP {unserved})"),
            )
            return
        if not _is_watch(query):
            body = api._list(kind, query)
            self._json(body.get("code", 200) if body.get("kind") == "Status" else 200, body)
            return
        if not api.watches_available:
            self._json(503, _status(503, "ServiceUnavailable", "watches are switched off"))
            return
        w = api._open_watch(kind, query)
        if isinstance(w, dict):  # 410 Gone
            if api.gone_as_http:
                self._json(410, w)
                return
            self._start_stream()
            self._chunk({"type": "ERROR", "object": w})
            self._end_stream()
            return
        timeout = float(query.get("timeoutSeconds") or 1800)
        if api.watch_seconds_cap is not None:
            timeout = min(timeout, api.watch_seconds_cap)
        try:
            self._stream(w, timeout)
        finally:
            api._close_watch(w)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        """True if the client closed the connection (EOF is readable)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, w: _Watch, timeout: float) -> None:
        self._start_stream()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._end_stream()  # timeoutSeconds: a clean end
                return
            try:
                item = w.queue.get(timeout=min(remaining, 0.05))
            except queue.Empty:
                if self._client_gone():
                    return  # as the real server notices, so open_watches() counts true
                continue
            if item is _END:
                self._end_stream()
                return
            if item is _DROP:
                # abruptly: the client sees the chunked body cut short
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self._chunk(item)


# ---------------------------------------------------------------------------- the lab's server


def mirror(api: FakeAPI, events) -> None:
    """Apply YAML-source events to the server as the API would see the writes."""
    from ovsctl.k8s import model

    for ev in events:
        body = model.to_dict(ev.obj)
        kind, ns, name = ev.obj.key
        if ev.type == "DELETED":
            try:
                api.delete(kind, name, ns)
            except KeyError:
                pass
        else:
            if kind == "Service" and "status" not in body:
                # the API server keeps an object's status across an update of its spec (the
                # LoadBalancer ingress an agent wrote into it, say)
                old = api.get(kind, name, ns)
                if old and old.get("status"):
                    body["status"] = old["status"]
            api.apply(body)


def store_status(state: str, obj: dict) -> None:
    """Write a Service's status, as a client wrote it to the server, into its file in the
    state directory (the lab's storage), so the lab and `lab apply` see it too."""
    import os

    import yaml

    from ovsctl.util import atomic_write

    meta = obj.get("metadata") or {}
    path = os.path.join(state, f"Service-{meta.get('namespace')}.{meta.get('name')}.yaml")
    try:
        with open(path) as fh:
            body = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        return
    if body.get("status") != obj.get("status"):
        body["status"] = obj.get("status")
        atomic_write(path, yaml.safe_dump(body))


def main(argv=None) -> int:
    import argparse
    import logging
    import signal

    from ovsctl.k8s.source import YAMLDirSource

    ap = argparse.ArgumentParser(
        prog="python -m ovsctl.lab.apiserver",
        description="Serve a directory of Kubernetes YAML as a (list/watch only) Kubernetes API.",
    )
    ap.add_argument("--state", required=True, help="directory of Kubernetes YAML to serve")
    ap.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT (default %(default)s)")
    ap.add_argument("--tag", help="ignored: lets the lab find the processes it started")
    ap.add_argument(
        "--first-rv",
        type=int,
        help="first resourceVersion (default: microseconds since the epoch, so a restarted "
        "server's resourceVersions are above its predecessor's)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    api = FakeAPI(first_rv=args.first_rv or time.time_ns() // 1000)
    src = YAMLDirSource(args.state)
    src.start(lambda events: mirror(api, events))
    # Serve only the whole state, and treat every resourceVersion from before this start as
    # compacted: clients of a previous server get 410 Gone and relist, as after a restart of a
    # real API server (whose watch cache starts empty).
    src.wait_synced(60)
    api.compact()
    update = api.update

    def update_and_store(obj, *a, **kw):  # a status a client writes reaches the state directory
        out = update(obj, *a, **kw)
        if obj.get("kind") == "Service":
            try:
                store_status(args.state, out)
            except OSError as e:
                logging.getLogger("ovsctl.lab.apiserver").warning("storing status: %s", e)
        return out

    api.update = update_and_store
    api.start(host, int(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("ovsctl.lab.apiserver").info("serving %s on %s", args.state, api.url)
    stop.wait()
    src.stop()
    api.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
