"""Talking to ovs-vswitchd: its control socket and ofproto/trace over unixctl."""

from __future__ import annotations

import json
import os
import socket
import threading

from .parse import TraceError, UnreachableError


def ctl_path(rundir: str) -> str:
    """The ovs-vswitchd control socket in an OVS run directory (the lab names it
    ovs-vswitchd.ctl; a packaged OVS uses ovs-vswitchd.<pid>.ctl)."""
    plain = os.path.join(rundir, "ovs-vswitchd.ctl")
    if os.path.exists(plain):
        return plain
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        raise UnreachableError(
            f"no ovs-vswitchd control socket in {rundir} (set --ovs-rundir)"
        ) from None
    return os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")


class Appctl:
    """One connection to ovs-vswitchd's unixctl socket, kept open: `ovs-appctl` without a
    process per call (a trace takes well under a millisecond this way)."""

    def __init__(self, path: str, bridge: str = "br-int", timeout: float = 10.0):
        self.path, self.bridge, self.timeout = path, bridge, timeout
        self._sock: socket.socket | None = None
        self._buf = ""
        self._id = 0
        self._lock = threading.Lock()
        self._dec = json.JSONDecoder()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise UnreachableError(f"cannot reach ovs-vswitchd at {self.path}: {e}") from None
            self._sock, self._buf = s, ""
        return self._sock

    def call(self, method: str, *params: str) -> str:
        with self._lock:
            sock = self._connect()
            self._id += 1
            req = {"method": method, "params": list(params), "id": self._id}
            try:
                sock.sendall(json.dumps(req).encode())
                reply = self._read(sock)
            except OSError as e:
                self.close()
                raise UnreachableError(f"{method} on {self.path}: {e}") from None
        if reply.get("error"):
            raise TraceError(str(reply["error"]).strip())
        return reply.get("result") or ""

    def _read(self, sock) -> dict:
        while True:
            buf = self._buf.lstrip()
            if buf:
                try:
                    obj, end = self._dec.raw_decode(buf)
                except json.JSONDecodeError:
                    pass
                else:
                    self._buf = buf[end:]
                    return obj
            data = sock.recv(1 << 16)
            if not data:
                raise OSError("connection closed")
            self._buf += data.decode()

    def trace(self, flow: str, ct_next: list[str]) -> str:
        args = [self.bridge, flow]
        for st in ct_next:
            args += ["--ct-next", st]
        return self.call("ofproto/trace", *args)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
