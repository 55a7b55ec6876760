"""The agent's CNI endpoint: one JSON request per connection on a unix socket (mode 0600).

The wire protocol is the shim's (docs/cni.md): the shim sends one JSON object and shuts down
its write side; we answer {"result": ...} or {"error": {"code", "msg", "details"}} and close.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time

log = logging.getLogger(__name__)

MAX_REQUEST = 4 << 20  # the shim refuses larger configs itself (cni-shim MAX_REQUEST_BYTES)
DRAIN_MAX = 64 << 20  # an oversized request is read (and dropped) up to this, then closed
ERR_INVALID_CONFIG = 7


class CNIError(Exception):
    """An error with a CNI code, returned to the runtime as the CNI error object."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self) -> dict:
        return {"code": self.code, "msg": self.msg, "details": self.details}


# Plugin-specific codes (the spec leaves 100+ to plugins); see docs/cni.md.
ERR_INTERNAL = 100
ERR_IPAM_EXHAUSTED = 101
ERR_CHECK_FAILED = 102
ERR_ADDRESS_UNAVAILABLE = 103  # a requested IP/MAC is malformed, outside the pod CIDR, reserved
ERR_ADDRESS_IN_USE = 104  # a requested IP is held by another attachment


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: CNIServer = self.server  # type: ignore[assignment]
        conn: socket.socket = self.request
        conn.settimeout(10)
        t0 = time.monotonic()
        chunks, size = [], 0
        try:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                chunks.append(b)
                size += len(b)
                if size > MAX_REQUEST:
                    chunks = []
                    size += _drain(conn, t0 + 10)
                    raise CNIError(
                        ERR_INVALID_CONFIG,
                        f"request too large: the limit is {MAX_REQUEST} bytes (4 MiB)",
                        f"received {size} bytes" + ("" if size <= DRAIN_MAX else " or more"),
                    )
                if b.endswith(b"\n"):
                    break
            try:
                req = json.loads(b"".join(chunks))
            except ValueError as e:
                raise CNIError(6, "request is not valid JSON", str(e)) from None
            if not isinstance(req, dict):
                raise CNIError(6, "request is not a JSON object")
            reply = {"result": server.dispatch(req)}
        except CNIError as e:
            reply = {"error": e.to_json()}
        except Exception as e:  # noqa: BLE001 - the runtime gets an error object, never silence
            log.exception("CNI request failed unexpectedly")
            reply = {"error": CNIError(ERR_INTERNAL, "internal agent error", repr(e)).to_json()}
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as e:
            log.warning("could not send CNI reply: %s", e)
        took = (time.monotonic() - t0) * 1000
        if server.after is not None:
            try:
                conn.shutdown(socket.SHUT_WR)  # the reply is complete: the shim reads EOF now
            except OSError:
                pass
            server.after()
        if "error" in reply:
            log.info(
                "CNI reply: error %s %s (%.1f ms)",
                reply["error"]["code"],
                reply["error"]["msg"],
                took,
            )


def _drain(conn: socket.socket, deadline: float) -> int:
    """Read and drop the rest of an oversized request (until its end, DRAIN_MAX bytes or the
    deadline), so the client is not cut off mid-send (EPIPE) and reads our error instead."""
    n = 0
    try:
        while n <= DRAIN_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            b = conn.recv(1 << 20)
            if not b:
                break
            n += len(b)
            if b.endswith(b"\n"):
                break
    except OSError:
        pass
    return n


class CNIServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    # Connections waiting to be accepted. socketserver's default of 5 is less than the ADDs
    # kubelet starts at once after a reboot: a shim's connect then fails with EAGAIN (its
    # socket has a timeout, so it does not wait for room) and the ADD with code 11.
    request_queue_size = 1024

    def __init__(self, path: str, dispatch, after=None):
        self.path = path
        self.dispatch = dispatch
        self.after = after  # called once a reply is sent (housekeeping off the CNI path)
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a previous agent
        old = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="cni-server", daemon=True)
        self._thread.start()
        log.info("CNI server listening on %s", self.path)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
