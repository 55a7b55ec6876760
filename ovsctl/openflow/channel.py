"""The OpenFlow channel: the agent connects, as a client, to OVS's management socket.

ovs-vswitchd listens on `<rundir>/<bridge>.mgmt` for every bridge (the socket `ovs-ofctl`
uses). Its directory is root's, so only root reaches it: no TCP listener for a local process
to dial into, no `Controller` row for a local process to answer in the agent's place. os-ken
only listens (or dials TCP), so this module does what os-ken's `datapath_connection_factory`
does for an accepted socket — wrap it in a `Datapath` and serve it — for a unix socket we open
ourselves, in one thread that reconnects with backoff (an OVS restart makes a new socket).

What differs from os-ken's own serve loop, and why:
- the peer must be root (or us), by SO_PEERCRED, and must present the bridge's datapath ID;
  any other connection is closed before the app sees it (it never becomes MAIN_DISPATCHER);
- a connection on the management socket is a *service* connection: OVS sends it no
  asynchronous messages (packet-ins: Service rejects, NetworkPolicy audit) until it sets a
  nonzero miss_send_len, so every accepted connection sends OFPT_SET_CONFIG and, to say which
  reasons it wants, OFPT_SET_ASYNC (OpenFlow 1.4), before any flow;
- with os-ken's native hub, `hub.kill` is a no-op and serve() joins a send thread blocked on
  its queue, so every closed connection kept two threads forever. The serve loop of
  osken_compat.JoinableServe wakes the send thread and joins it: a connection costs one thread
  while it lives, none after.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time

from os_ken.controller.handler import MAIN_DISPATCHER

from ovsctl.openflow import osken_compat
from ovsctl.openflow.osken_compat import UnixSocket

log = logging.getLogger(__name__)

UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the trailing NUL
MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0


def connect_unix(path: str, timeout: float = 5.0) -> socket.socket:
    """Connect to a unix stream socket (paths longer than sun_path through /proc/self/fd, as
    OVS itself does). Raises OSError."""
    s = UnixSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if len(os.fsencode(path)) <= UNIX_PATH_MAX:
            s.connect(path)
        else:
            dfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
            try:
                s.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            finally:
                os.close(dfd)
    except BaseException:
        s.close()
        raise
    return s


def peer_uid(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def async_config(dp) -> list:
    """What makes a service connection receive what a controller connection would: a nonzero
    miss_send_len (OVS sends a service connection no asynchronous message without one) and
    the asynchronous messages the agent handles (OpenFlow 1.4 SET_ASYNC; role EQUAL uses the
    master masks)."""
    p, o = dp.ofproto_parser, dp.ofproto
    packet_in = 0
    for reason in ("TABLE_MISS", "APPLY_ACTION", "ACTION_SET", "GROUP", "PACKET_OUT"):
        packet_in |= 1 << getattr(o, f"OFPR_{reason}")
    port_status = (1 << o.OFPPR_ADD) | (1 << o.OFPPR_DELETE) | (1 << o.OFPPR_MODIFY)
    return [
        p.OFPSetConfig(dp, 0, o.OFPCML_NO_BUFFER),
        p.OFPSetAsync(
            dp,
            [
                p.OFPAsyncConfigPropReasons(o.OFPACPT_PACKET_IN_MASTER, mask=packet_in),
                p.OFPAsyncConfigPropReasons(o.OFPACPT_PORT_STATUS_MASTER, mask=port_status),
            ],
        ),
    ]


class ChannelDatapath(osken_compat.JoinableServe):
    """os-ken's Datapath for a socket we connected, with the datapath ID check and a serve
    loop that leaves no thread behind."""

    def __init__(self, sock, address: str, expected_dpid: int | None, on_accept=None):
        # read by set_state(), which Datapath.__init__ already calls
        self.expected_dpid = expected_dpid
        self.on_accept = on_accept
        self.refused: str | None = None
        self.accepted = False
        super().__init__(sock, address)

    def set_state(self, state):
        if state == MAIN_DISPATCHER and not self.accepted:
            if self.expected_dpid is not None and self.id != self.expected_dpid:
                self.refused = (
                    f"refused the switch on {self.address}: datapath ID {self.id or 0:016x}, "
                    f"expected {self.expected_dpid:016x}"
                )
                log.error("%s", self.refused)
                self._shutdown()
                return  # never MAIN: the app never sees this switch
            for msg in async_config(self):
                self.send_msg(msg)
            self.accepted = True
            if self.on_accept is not None:
                self.on_accept(self)
        super().set_state(state)

    def _shutdown(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the receive loop at once
        except OSError:
            pass

    def close(self):
        super().close()  # DEAD_DISPATCHER (the app is told) and no more sends
        self._shutdown()


class Channel:
    """One thread: connect to `path`, serve the connection, reconnect with backoff."""

    def __init__(self, path: str, expected_dpid: int | None = None):
        self.path = path
        self.expected_dpid = expected_dpid
        self.thread: threading.Thread | None = None
        self.connections = 0  # connections accepted (right peer, right datapath ID)
        self.error: str | None = None  # why the last attempt failed; None while accepted
        self.down_since: float | None = time.monotonic()  # None while a connection is accepted
        self._dp: ChannelDatapath | None = None
        self._stop = threading.Event()

    @property
    def target(self) -> str:
        return f"unix:{self.path}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="of-channel", daemon=True)
        self.thread.start()
        log.info("OpenFlow: connecting to %s (no listener)", self.target)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        dp = self._dp
        if dp is not None:
            dp.close()
        if self.thread is not None:
            self.thread.join(timeout)

    def health(self, grace: float) -> str | None:
        """None while the channel works; else why not (for /healthz)."""
        if self.thread is None:
            return None  # not started yet
        if not self.thread.is_alive():
            if self._stop.is_set():
                return f"OpenFlow channel to {self.target} stopped (the agent is stopping)"
            return f"OpenFlow channel thread to {self.target} has died"
        since = self.down_since
        if since is not None and time.monotonic() - since > grace:
            why = self.error or "no connection"
            return f"no OpenFlow connection to {self.target} for {time.monotonic() - since:.0f}s: {why}"
        return None

    def _run(self) -> None:
        backoff = MIN_BACKOFF
        last_logged = None
        while not self._stop.is_set():
            accepted = self._attempt()
            if accepted:
                backoff = MIN_BACKOFF
            else:
                if self.error != last_logged:  # once per distinct failure, not every retry
                    log.warning("OpenFlow channel: %s; retrying", self.error)
                    last_logged = self.error
                backoff = min(backoff * 2, MAX_BACKOFF)
            self._stop.wait(backoff)

    def _attempt(self) -> bool:
        """One connection, served to its end; returns whether it was accepted."""
        try:
            sock = connect_unix(self.path)
        except OSError as e:
            self.error = f"cannot connect to {self.target}: {e.strerror or e}"
            return False
        try:
            pid, uid = peer_uid(sock)
            if uid not in (0, os.geteuid()):
                self.error = f"refused {self.target}: its listener (pid {pid}) runs as uid {uid}"
                log.error("%s", self.error)
                sock.close()
                return False
            dp = ChannelDatapath(sock, self.target, self.expected_dpid, self._accepted)
        except Exception as e:  # noqa: BLE001 - a failed set-up is one failed attempt
            sock.close()
            self.error = f"cannot set up the connection to {self.target}: {e}"
            return False
        self._dp = dp
        try:
            dp.serve()
        except Exception:  # noqa: BLE001 - a malformed message ends this connection only
            log.exception("OpenFlow connection to %s failed", self.target)
        finally:
            self._dp = None
            if dp.accepted:
                self.down_since = time.monotonic()
        if dp.refused:
            self.error = dp.refused
        elif dp.accepted:
            self.error = "the switch closed the connection"
        else:
            self.error = f"the connection to {self.target} ended during the handshake"
        return dp.accepted

    def _accepted(self, dp) -> None:
        self.connections += 1
        self.error = None
        self.down_since = None


__all__ = ["Channel", "ChannelDatapath", "connect_unix"]
