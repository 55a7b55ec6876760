"""`ovsctl ui`: the read-only HTTP server of the page, its assets and the JSON API.

GET and HEAD only (anything else: 405); binds 127.0.0.1 unless told otherwise; while it listens
on a loopback address it answers only requests whose Host is a loopback name (a web page
elsewhere cannot reach it by DNS rebinding). Static files come from ovsctl/ui/static/ and never
from outside it. Every error is JSON {"error": "..."}; a request is logged at DEBUG, start and
stop at INFO.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import mimetypes
import os
import signal
import socket
import sys
import threading
import urllib.parse

from .api import API, PROTOS
from .data import BadRequest, NotFound, UIError

log = logging.getLogger("ovsctl.ui")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_LISTEN = "127.0.0.1:8476"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
SVG_CACHE = 64

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
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: the port must be a number 0..65535")
    return host, int(port)


def host_name(header: str) -> str:
    """The name in a Host header, without the port: '[::1]:8476' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header if header.count(":") > 1 else header.partition(":")[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if not v.isdigit() or not lo <= int(v) <= hi:
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
    # what http.server itself answers (a malformed request line, headers too long): JSON too
    error_content_type = "application/json"
    error_message_format = '{"error": "%(code)d %(message)s"}'
    api: API  # set on the subclass the server makes
    loopback_only = True
    svg_cache: dict
    svg_lock: threading.Lock

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

    def _not_allowed(self):
        self._send_json(405, {"error": f"{self.command} not allowed: read-only (GET only)"},
                        extra={"Allow": "GET, HEAD"})  # fmt: skip

    # -- answering -------------------------------------------------------------------------------

    def _send(self, status: int, ctype: str, data: bytes, body: bool = True, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
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
            if self.loopback_only:
                if host_name(self.headers.get("Host") or "") not in LOOPBACK_NAMES:
                    self._send_json(403, {"error": "Host must be a loopback name"}, body)
                    return
            url = urllib.parse.urlsplit(self.path)
            ctype, data = self._route(url.path, url.query)
            self._send(200, ctype, data, body)
        except UIError as e:
            self._send_json(e.status, {"error": str(e)}, body)
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
            return api.matrix(p.get("ns") or None, probe == "1")
        if path == "/api/trace":
            return api.trace(**trace_args(p))
        return api.topology()

    def _svg(self, what: str, p: dict) -> str:
        try:
            from ovsctl.ui import draw
        except ImportError as e:
            raise Unavailable(f"drawing is not available here ({e})") from None
        if what == "pipeline":
            doc = self._api("/api/pipeline", p)
            key = (
                doc["node"],
                tuple((t["id"], t["hit"], t["drop_flows"] > 0) for t in doc["tables"]),
                tuple((e["from"], e["to"], e["kind"]) for e in doc["edges"]),
            )
            with self.svg_lock:
                hit = self.svg_cache.get(key)
            if hit is not None:
                return hit
            svg = _draw(draw, "pipeline_svg", doc)
            with self.svg_lock:
                if len(self.svg_cache) >= SVG_CACHE:
                    self.svg_cache.pop(next(iter(self.svg_cache)))
                self.svg_cache[key] = svg
            return svg
        if what == "trace":
            return _draw(draw, "trace_svg", self._api("/api/trace", p))
        return _draw(draw, "topology_svg", self._api("/api/topology", p))


def _draw(draw, fn: str, doc: dict) -> str:
    f = getattr(draw, fn, None)
    if f is None:
        raise Unavailable(f"drawing is not available here (ovsctl.ui.draw has no {fn})")
    try:
        return f(doc)
    except (OSError, RuntimeError, ValueError) as e:  # e.g. Graphviz's dot missing or failing
        log.warning("%s failed: %s", fn, e)
        raise Unavailable(f"drawing failed: {e}") from None


def make_server(api: API, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A server for `api` on host:port (port 0: any free port; see .server_address)."""
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "api": api,
            "loopback_only": is_loopback(host),
            "svg_cache": {},
            "svg_lock": threading.Lock(),
        },
    )
    cls = http.server.ThreadingHTTPServer
    if ":" in host:
        cls = type("V6Server", (cls,), {"address_family": socket.AF_INET6})
    srv = cls((host, port), handler)
    srv.daemon_threads = True
    return srv


def main(args) -> int:
    """`ovsctl ui`: serve until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        host, port = parse_listen(args.listen)
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
            api = API.for_node(args.agent, args.ovs_rundir, args.bridge)
        srv = make_server(api, host, port)
    except OSError as e:
        print(f"ovsctl ui: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return 2
    h, p = srv.server_address[:2]
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    what = f"lab {args.lab}" if args.lab else f"node {', '.join(api.sources)}"
    if not is_loopback(host):
        log.warning(
            "listening on %s, not only this machine: anyone who reaches it can read the "
            "cluster's pods, policies and flows",
            host,
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
