"""Reading the API server's responses: the watched resources, the request errors, GET requests
whose streams can be aborted, newline-delimited watch streams (:class:`LineSplitter`) and the
decoding of watch events and objects."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ovsctl.k8s.model import ACCEPTED_KINDS, KINDS, ModelError, Object, parse
from ovsctl.k8s.source import Key

log = logging.getLogger("ovsctl.k8s.apisource")  # one logger for all of the API source

MAX_OBJECT_BYTES = 16 << 20  # one watch event (one object) at most; longer ones are dropped
_READ = 65536


@dataclass(frozen=True)
class Resource:
    """One watched kind: its apiVersion and its cluster-wide collection path."""

    kind: str
    api_version: str
    plural: str
    namespaced: bool
    # the manifest of the CustomResourceDefinition that serves the kind ("" for a built-in
    # kind): a cluster may not have it installed, and the other kinds must not wait for it
    crd: str = ""

    @property
    def path(self) -> str:
        if "/" in self.api_version:  # a named group: /apis/<group>/<version>/<plural>
            return f"/apis/{self.api_version}/{self.plural}"
        return f"/api/{self.api_version}/{self.plural}"  # the core group


_PLURALS = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "NetworkPolicy": "networkpolicies",
    "ClusterNetworkPolicy": "clusternetworkpolicies",
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Pod": "pods",
}

# The kinds served by a CustomResourceDefinition, and the manifest (in this repository) that
# installs it; the watcher names it when the API server does not serve the kind.
CRD_MANIFESTS = {
    "ClusterNetworkPolicy": "manifests/05-clusternetworkpolicy-crd.yaml",
}

# In model.ACCEPTED_KINDS order (namespaces and nodes first, pods last).
RESOURCES: dict[str, Resource] = {
    kind: Resource(
        kind,
        KINDS[kind].api_version,
        _PLURALS[kind],
        KINDS[kind].namespaced,
        CRD_MANIFESTS.get(kind, ""),
    )
    for kind in ACCEPTED_KINDS
}


# --------------------------------------------------------------------------- errors


class _Gone(Exception):
    """HTTP 410 / ERROR event code 410: our resourceVersion is too old; relist."""


class _TooLarge(_Gone):
    """A watch event longer than max_object_bytes was dropped: relist (the event is lost)."""


class _Stopped(Exception):
    """The source is stopping."""


class _RequestError(Exception):
    """A failed request or a broken stream; retried with backoff. ``status`` is the HTTP
    status of a refused request (None when there was no HTTP answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Unserved(Exception):
    """A CRD kind's collection is not served (HTTP 404: the CRD is not installed) or not
    readable (HTTP 403: the agent's ClusterRole does not grant it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _WatchFailed(Exception):
    """The watch stream broke after it had connected; resume from rv."""

    def __init__(self, rv: str, reason: str, progressed: bool):
        super().__init__(reason)
        self.rv = rv
        self.reason = reason
        self.progressed = progressed  # it delivered something before it broke


# --------------------------------------------------------------------------- requests


class Requests:
    """GET requests through an :class:`ApiClient`, raw JSON bodies; the open responses are kept
    so that :meth:`stop` (from another thread) can abort the reads blocked on them."""

    def __init__(self, api, request_timeout: float, stopping: threading.Event):
        self.api = api
        self.request_timeout = request_timeout
        self._stop = stopping
        self._responses: set = set()  # open urllib3 responses, closed by stop()
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Set the stop event and abort every open response (unblocking its reader)."""
        with self._lock:
            self._stop.set()
            responses = list(self._responses)
        for resp in responses:
            _abort(resp)

    def get(self, path: str, params: list[tuple[str, Any]], read_timeout: float):
        """Start a GET; returns the urllib3 response (status 200, body not read yet), registered
        so stop() can abort it. The caller must pass it to done()."""
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
        with self._lock:
            self._responses.add(resp)
            stopping = self._stop.is_set()
        if stopping:
            self.done(resp)
            raise _Stopped
        if resp.status != 200:
            try:
                text = resp.read(decode_content=True)[:2000]
            except Exception:  # noqa: BLE001
                text = b""
            finally:
                self.done(resp)
            message = _status_message(text)
            if resp.status == 410:
                raise _Gone(f"GET {path}: HTTP 410 Gone: {message}")
            raise _RequestError(
                f"GET {path}: HTTP {resp.status} {resp.reason}: {message}", resp.status
            )
        return resp

    def done(self, resp, reuse: bool = False) -> None:
        with self._lock:
            self._responses.discard(resp)
        try:
            if not reuse:
                resp.close()  # a watch may be half-read: never give that connection back
            resp.release_conn()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------- decoding


def parse_object(
    res: Resource, raw: Any, errors: dict[Key, str]
) -> tuple[Object | None, Key | None, str | None]:
    """(object, key, None) or, for a malformed object, (None, key-if-known, error). errors holds
    the kind's logged parse errors by key: each distinct one is logged once."""
    kind = res.kind
    if isinstance(raw, dict):
        # list items (and some watch events) leave kind/apiVersion off
        if not raw.get("kind"):
            raw = {**raw, "kind": kind}
        if not raw.get("apiVersion"):
            raw = {**raw, "apiVersion": res.api_version}
    key = raw_key(res, raw)
    try:
        obj = parse(raw)
        if obj.key[0] != kind:
            raise ModelError(f"a {obj.key[0]} in the {kind} collection", ref=str(obj.key))
    except Exception as e:  # noqa: BLE001 - ModelError, or anything odd in the dict
        err = str(e) if isinstance(e, ModelError) else repr(e)
        if key is None or errors.get(key) != err:
            log.error("%s: skipping a malformed object: %s", kind, err)
            if key is not None:
                errors[key] = err
        return None, key, err
    if errors.pop(obj.key, None) is not None:
        log.info("%s %s parses again", kind, show_key(obj.key))
    return obj, obj.key, None


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


def raw_key(res: Resource, raw: Any) -> Key | None:
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


def show_key(key: Key) -> str:
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


def decode_event(line: bytes, rv: str) -> tuple[str, dict, str]:
    """(type, object, resourceVersion) of one watch event line (the resourceVersion is the
    object's, else rv). Raises _Gone for an ERROR event with code 410 (relist), _RequestError for
    other ERROR events and for a garbled line (an event may have been lost: reconnect)."""
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
    if etype == "ERROR":
        code = raw.get("code")
        message = raw.get("message") or raw.get("reason") or "?"
        if code == 410:
            raise _Gone(f"watch from resourceVersion {rv}: 410 Gone: {message}")
        raise _RequestError(f"watch ERROR event (code {code}): {message}")
    return etype, raw, new_rv


def forget_parse_errors(
    kind: str, errors: dict[Key, str], seen: Mapping[Key, str], objects: Mapping[Key, Object]
) -> None:
    """After a list: forget the logged parse errors of objects that are gone or parse again."""
    for key in list(errors):
        if key not in seen:
            if key in objects:
                log.info("%s %s parses again", kind, show_key(key))
            del errors[key]
