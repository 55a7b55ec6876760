"""`ovsctl ui`: the read-only HTTP server of the page, its assets and the JSON API.

GET and HEAD only (anything else: 405); binds 127.0.0.1 unless told otherwise; which Host
names and origins it answers and how much it does at once: ovsctl/ui/guard.py. Static files
come from ovsctl/ui/static/ and never from outside it. Every error is JSON {"error": "..."}
(http.server's own too); every reply carries a Content-Security-Policy and nosniff. A request
is logged at DEBUG, start and stop at INFO.
"""

from __future__ import annotations

import http.server
import json
import logging
import mimetypes
import os
import re
import signal
import socket
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET

from .api import API, PROTOS
from .data import BadRequest, NotFound, UIError
from .guard import (
    CSP,
    MAX_CONNECTIONS,
    Busy,
    Shared,
    busy_reply,
    check_host,
    check_origin,
    host_name,  # noqa: F401 - part of this module's interface (tests)
    is_loopback,
)

log = logging.getLogger("ovsctl.ui")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_LISTEN = "127.0.0.1:8476"
SVG_CACHE = 64
SVG_NS = "http://www.w3.org/2000/svg"
_NUMBER = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() takes '²' and '٣'

# route -> allowed parameters
PARAMS = {
    "/api/nodes": (),
    "/api/pipeline": ("node", "owner"),
    "/api/flows": ("node", "table", "owner", "offset", "limit"),
    "/api/owners": ("node",),
    "/api/matrix": ("ns", "probe"),
    "/api/trace": ("src", "dst", "proto", "dport", "sport", "family"),
    "/api/topology": (),
    "/svg/pipeline": ("node", "owner"),
    "/svg/trace": ("src", "dst", "proto", "dport", "sport", "family"),
    "/svg/topology": (),
}


class Unavailable(UIError):
    status = 503


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen {text!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not _NUMBER.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: the port must be a number 0..65535")
    return host, int(port)


def params(route: str, query: str) -> dict[str, str]:
    """The query's parameters (each at most once, each one the route knows); BadRequest."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise BadRequest(f"malformed query string {query!r}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in PARAMS[route]:
            known = ", ".join(PARAMS[route]) or "none"
            raise BadRequest(f"unknown parameter {k!r} for {route} (known: {known})")
        if k in out:
            raise BadRequest(f"parameter {k!r} given twice")
        out[k] = v
    return out


def int_param(p: dict, name: str, lo: int, hi: int, default=None):
    if name not in p or p[name] == "":
        return default
    v = p[name]
    if not _NUMBER.fullmatch(v) or not lo <= int(v) <= hi:
        raise BadRequest(f"{name}={v!r}: give a number {lo}..{hi}")
    return int(v)


def trace_args(p: dict) -> dict:
    if not p.get("src") or not p.get("dst"):
        raise BadRequest("give src= and dst= (a pod NS/NAME, a Service svc:NS/NAME, or an IP)")
    proto = p.get("proto") or "tcp"
    if proto not in PROTOS:
        raise BadRequest(f"proto={proto!r}: one of {', '.join(PROTOS)}")
    family = p.get("family") or None
    if family not in (None, "4", "6"):
        raise BadRequest(f"family={family!r}: 4 or 6")
    return {
        "src": p["src"],
        "dst": p["dst"],
        "proto": proto,
        "dport": int_param(p, "dport", 1, 65535),
        "sport": int_param(p, "sport", 1, 65535),
        "family": int(family) if family else None,
    }


def static_path(rel: str, root: str = STATIC) -> str:
    """The file under `root` that `rel` names; NotFound for anything else (a directory, a
    path out of it by '..', an absolute path or a symlink)."""
    root = os.path.realpath(root)
    if "\0" in rel or rel.startswith("/") or "\\" in rel:
        raise NotFound(f"no file {rel!r}")
    path = os.path.realpath(os.path.join(root, rel))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise NotFound(f"no file {rel!r}")
    return path


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "ovsctl-ui"
    sys_version = ""  # the Server header names no Python version
    timeout = 30  # a connection that sends nothing for this long is closed
    api: API  # set on the subclass the server makes
    bound = "127.0.0.1"  # the address it listens on
    allow_hosts: frozenset = frozenset()  # --allow-host
    svg_cache: dict
    svg_lock: threading.Lock
    shared: Shared  # traces shared by the requests that ask for them; the heavy slots

    def log_message(self, fmt, *args):  # noqa: D102 - each request at DEBUG
        log.debug("%s %s", self.address_string(), fmt % args)

    # -- methods ---------------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802
        self._serve(body=True)

    def do_HEAD(self):  # noqa: N802
        self._serve(body=False)

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # POST, PUT, DELETE, PATCH, OPTIONS, anything: read-only
            return self._not_allowed
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        """What http.server itself answers (a malformed request line, headers too long): JSON
        built by json.dumps (the message may hold any character), with the headers of every
        reply."""
        short = self.responses.get(code, ("error",))[0]
        self.log_error("code %d, message %s", code, message or short)
        self.close_connection = True
        data = json.dumps({"error": f"{code} {message or short}"}).encode()
        body = self.command != "HEAD" and code >= 200 and code not in (204, 304)
        self._send(code, "application/json", data, body, {"Connection": "close"})

    def _not_allowed(self):
        self._send_json(405, {"error": f"{self.command} not allowed: read-only (GET only)"},
                        extra={"Allow": "GET, HEAD"})  # fmt: skip

    # -- answering -------------------------------------------------------------------------------

    def _send(self, status: int, ctype: str, data: bytes, body: bool = True, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send_json(self, status: int, doc, body: bool = True, extra=None):
        data = json.dumps(doc, separators=(",", ":")).encode()
        self._send(status, "application/json", data, body, extra)

    def _serve(self, body: bool):
        try:
            host = self.headers.get("Host") or ""
            check_host(host, self.bound, self.allow_hosts)
            url = urllib.parse.urlsplit(self.path)
            if url.path.startswith(("/api/", "/svg/")):
                check_origin(self.headers, host)
            ctype, data = self._route(url.path, url.query)
            self._send(200, ctype, data, body)
        except UIError as e:
            extra = {"Retry-After": "2"} if isinstance(e, Busy) else None
            self._send_json(e.status, {"error": str(e)}, body, extra)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away: %s", self.path)
        except Exception as e:  # noqa: BLE001 - a bug is a 500 and a log line, never a traceback out
            log.exception("internal error on %s", self.path)
            self._send_json(500, {"error": f"internal error: {type(e).__name__}: {e}"}, body)

    def _route(self, path: str, query: str) -> tuple[str, bytes]:
        if path in ("/", "/index.html"):
            return self._file("index.html")
        if path.startswith("/static/"):
            return self._file(urllib.parse.unquote(path[len("/static/") :]))
        if path not in PARAMS:
            raise NotFound(f"no such path {path!r}")
        p = params(path, query)
        if path.startswith("/svg/"):
            return "image/svg+xml", self._svg(path[len("/svg/") :], p).encode()
        return "application/json", json.dumps(self._api(path, p)).encode()

    def _file(self, rel: str) -> tuple[str, bytes]:
        path = static_path(rel)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            ctype += "; charset=utf-8"
        with open(path, "rb") as fh:
            return ctype, fh.read()

    def _api(self, path: str, p: dict):
        api = self.api
        if path == "/api/nodes":
            return api.nodes()
        if path == "/api/pipeline":
            return api.pipeline(p.get("node"), p.get("owner") or None)
        if path == "/api/flows":
            table = int_param(p, "table", 0, 254)
            if table is None:
                raise BadRequest("give table= (a table id, as /api/pipeline lists them)")
            return api.flows(
                p.get("node"),
                table,
                p.get("owner") or None,
                int_param(p, "offset", 0, 10**9, 0),
                int_param(p, "limit", 0, 10**9, 500),
            )
        if path == "/api/owners":
            return api.owners(p.get("node"))
        if path == "/api/matrix":
            probe = p.get("probe", "0")
            if probe not in ("", "0", "1"):
                raise BadRequest(f"probe={probe!r}: 0 or 1")
            return self.shared.run(lambda: api.matrix(p.get("ns") or None, probe == "1"))
        if path == "/api/trace":
            args = trace_args(p)
            return self.shared.get(tuple(sorted(args.items())), lambda: api.trace(**args))
        return api.topology()

    def _svg(self, what: str, p: dict) -> str:
        try:
            from ovsctl.ui import draw
        except ImportError as e:
            raise Unavailable(f"drawing is not available here ({e})") from None
        if what == "pipeline":
            doc = self._api("/api/pipeline", p)
            key = layout_key(doc)
            with self.svg_lock:
                hit = self.svg_cache.get(key)
            if hit is not None:
                return with_counts(hit, doc, draw.count)
            svg = _draw(draw, "pipeline_svg", doc)
            with self.svg_lock:
                if len(self.svg_cache) >= SVG_CACHE:
                    self.svg_cache.pop(next(iter(self.svg_cache)))
                self.svg_cache[key] = svg
            return svg
        if what == "trace":
            return _draw(draw, "trace_svg", self._api("/api/trace", p))
        return _draw(draw, "topology_svg", self._api("/api/topology", p))


def layout_key(doc: dict) -> tuple:
    """What a pipeline drawing is laid out from: the node, its tables (with the marks drawn
    into them: drop, hit), edges and exits. The counters are not in it: a drawing taken from
    the cache gets the document's counters written in (with_counts)."""
    return (
        doc["node"],
        tuple((t["id"], t["name"], t["hit"], t["drop_flows"] > 0) for t in doc["tables"]),
        tuple((e["from"], e["to"], e["kind"]) for e in doc["edges"]),
        tuple((x["table"], x["to"]) for x in doc.get("exits") or ()),
    )


def with_counts(svg: str, doc: dict, count) -> str:
    """A cached pipeline drawing with the counters of `doc` in its `table-<id>-flows` and
    `table-<id>-packets` texts (as draw writes them, `count` the short form)."""
    texts = {}
    for t in doc["tables"]:
        texts[f"table-{t['id']}-flows"] = f"{count(t['flows'])} flows"
        texts[f"table-{t['id']}-packets"] = f"{count(t['packets'])} pkts"
    ET.register_namespace("", SVG_NS)
    root = ET.fromstring(svg)
    for el in root.iter(f"{{{SVG_NS}}}text"):
        text = texts.get(el.get("id", ""))
        if text is not None:
            el.text = text
    return ET.tostring(root, encoding="unicode")


def _draw(draw, fn: str, doc: dict) -> str:
    f = getattr(draw, fn, None)
    if f is None:
        raise Unavailable(f"drawing is not available here (ovsctl.ui.draw has no {fn})")
    try:
        return f(doc)
    # e.g. Graphviz's dot missing or failing; ET.ParseError (a SyntaxError) for SVG it can't read
    except (OSError, RuntimeError, ValueError, SyntaxError) as e:
        log.warning("%s failed: %s", fn, e)
        raise Unavailable(f"drawing failed: {e}") from None


class Server(http.server.ThreadingHTTPServer):
    """A thread per request, at most `slots` of them: one more is answered 503 at once."""

    daemon_threads = True
    max_connections = MAX_CONNECTIONS

    def server_activate(self):
        self.slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            log.warning(
                "busy: %d requests at once; refused %s", self.max_connections, client_address
            )
            try:
                request.sendall(busy_reply())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(
    api: API, host: str, port: int, allow_hosts=(), max_connections: int = MAX_CONNECTIONS
) -> Server:
    """A server for `api` on host:port (port 0: any free port; see .server_address).
    `allow_hosts`: more names the Host header may give (--allow-host)."""
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "api": api,
            "bound": host,
            "allow_hosts": frozenset(h.lower() for h in allow_hosts),
            "svg_cache": {},
            "svg_lock": threading.Lock(),
            "shared": Shared(),
        },
    )
    attrs = {"max_connections": max_connections}
    if ":" in host:
        attrs["address_family"] = socket.AF_INET6
    return type("BoundServer", (Server,), attrs)((host, port), handler)


def node_args(args) -> tuple[str, str, str]:
    """(agent, OVS run directory, bridge) of the one node; ValueError when they are given
    with --lab (a lab's nodes are found by the lab)."""
    given = [f for f, v in (("--agent", args.agent), ("--ovs-rundir", args.ovs_rundir),
                            ("--bridge", args.bridge)) if v is not None]  # fmt: skip
    if args.lab and given:
        raise ValueError(
            f"{' and '.join(given)} {'names' if len(given) == 1 else 'name'} one node; with "
            "--lab every node of the lab is read (give one or the other)"
        )
    from ovsctl.tools.agentclient import default_url

    return (
        args.agent or default_url(),
        args.ovs_rundir or os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"),
        args.bridge or "br-int",
    )


def main(args) -> int:
    """`ovsctl ui`: serve until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        host, port = parse_listen(args.listen)
        node = node_args(args)
    except ValueError as e:
        print(f"ovsctl ui: {e}", file=sys.stderr)
        return 2
    try:
        if args.lab:
            from ovsctl.lab.lab import LabError

            try:
                api = API.for_lab(args.lab)
            except LabError as e:
                print(f"ovsctl ui: {e}", file=sys.stderr)
                return 2
        else:
            api = API.for_node(*node)
        srv = make_server(api, host, port, args.allow_host or ())
    except OSError as e:
        print(f"ovsctl ui: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return 2
    h, p = srv.server_address[:2]
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    what = f"lab {args.lab}" if args.lab else f"node {', '.join(api.sources)}"
    if not is_loopback(host):
        log.warning(
            "listening on %s, not only this machine: anyone who reaches it can read the "
            "cluster's pods, policies and flows (Host names answered: its addresses, "
            "loopback names%s)",
            host,
            "".join(f", {h}" for h in args.allow_host or ()),
        )
    log.info("serving %s at %s (read-only; stop with Ctrl-C)", what, url)
    print(f"ovsctl ui: {what} at {url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, name="ui-http", daemon=True)
    t.start()
    stop.wait()
    log.info("stopping")
    srv.shutdown()
    srv.server_close()
    log.info("stopped")
    return 0
