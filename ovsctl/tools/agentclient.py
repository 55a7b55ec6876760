"""Reading the local agent's views (/status, /flows, /cluster) for the CLI tools.

The agent serves them on its unix socket (`api_socket`, /run/ovsctl/agent.sock, mode 0600:
root only); its TCP port 9476 (`metrics_port`) has only /metrics, /healthz and /readyz, which
every pod can reach. The tools ask /run/ovsctl/agent.sock unless told otherwise: `--agent`
or the environment variable OVSCTL_AGENT, either a socket path (`/run/ovsctl/agent.sock`),
`unix:PATH`, or an http:// URL (for an agent endpoint that is HTTP, e.g. its /metrics).
A unix socket is a file: in the netns lab every node's socket is reachable from the host.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request

DEFAULT_SOCKET = "/run/ovsctl/agent.sock"


class AgentUnreachable(RuntimeError):
    pass


def default_url() -> str:
    return os.environ.get("OVSCTL_AGENT") or DEFAULT_SOCKET


def socket_path(url: str) -> str | None:
    """The unix socket path `url` names (`unix:PATH`, or a path), or None for an http URL."""
    if url.startswith("unix:"):
        return url[len("unix:") :]
    if "://" in url:
        return None
    return url


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        self.sock = s


def get_raw(path: str, url: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET url+path: (status, body); AgentUnreachable when there is no answer."""
    base = (url or default_url()).rstrip("/")
    sock = socket_path(base)
    where = f"unix:{sock} {path}" if sock is not None else f"{base}{path}"
    try:
        if sock is not None:
            conn = _UnixConnection(sock, timeout)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()
        try:
            with urllib.request.urlopen(base + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
    except PermissionError as e:
        raise AgentUnreachable(f"{where}: {e.strerror} (the agent's socket is root's)") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise AgentUnreachable(f"{where}: {reason}") from None


def get(path: str, url: str | None = None, timeout: float = 10.0):
    """GET url+path as JSON; AgentUnreachable when there is no answer or no JSON."""
    status, body = get_raw(path, url, timeout)
    base = (url or default_url()).rstrip("/")
    sock = socket_path(base)
    where = f"unix:{sock} {path}" if sock is not None else f"{base}{path}"
    if status != 200:
        first = body.decode("utf-8", "replace").strip().splitlines()[:1]
        raise AgentUnreachable(f"{where}: HTTP {status}" + (f" ({first[0]})" if first else ""))
    try:
        return json.loads(body.decode())
    except ValueError as e:
        raise AgentUnreachable(f"{where}: not JSON: {e}") from None
