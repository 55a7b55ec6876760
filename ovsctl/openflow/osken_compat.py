"""Every place ovsctl works around os-ken, in one module.

Each workaround names the os-ken behaviour it exists for; tests/unit/test_osken_compat.py
asserts that behaviour is still upstream, so an os-ken upgrade that fixes (or changes) it
fails a test here instead of silently changing what the agent sends.

- IMPORT ORDER: `os_ken.controller.controller` cannot be imported first (it imports
  `os_ken.controller.handler`, which imports it back: ImportError). Importing this module
  imports `os_ken.base.app_manager` first, which breaks the circle; every ovsctl module that
  imports `os_ken.controller` imports this module before it.
- XID: os-ken hands out xids only by stamping a message (`Datapath.set_xid(msg)`); `next_xid`
  takes one for bytes we encode ourselves.
- NAT PADDING: `NXActionNAT` counts its padding to 8 bytes in its length but leaves the bytes
  out; harmless only when nothing follows it inside ct(). `padded_nat` writes them.
- CONTROLLER2 METER_ID: `NXActionController2` knows no meter_id property (NXAC2PT_METER_ID);
  without it controller(meter_id=N) cannot be encoded, and parsing such a flow back (the flow
  stats a new round reads) raises inside os-ken's receive loop. `register_extensions` teaches
  it, both ways.
- NO LISTENER: `OFPHandler.start` opens a TCP listener (OpenFlowController) and
  `AppManager.load_apps` pulls OFPHandler in as the provider of OpenFlow events.
  `ChannelHandler` is the same handshake app without the listener; `start_apps` instantiates
  apps without load_apps.
- UNIX SOCKET: `Datapath.__init__` sets TCP_NODELAY on its socket; `UnixSocket` ignores TCP
  options so a unix socket can be served.
- SERVE LOOP: `Datapath.serve` ends its send thread with `hub.kill`, a no-op with os-ken's
  native hub, then joins it: the thread waits on its queue forever, so every closed
  connection kept its threads. `JoinableServe.serve` wakes the send thread and joins it.
- GREEN DNS: ovsctl/__init__.py sets EVENTLET_NO_GREENDNS (eventlet, installed for os-ken,
  otherwise loads dnspython on import: a quarter of a second of every start, for nothing).
  It lives there because it must be set before anything imports eventlet.
"""

from __future__ import annotations

import inspect
import logging
import socket
import struct
import threading

import os_ken.base.app_manager  # noqa: F401 - IMPORT ORDER: before any os_ken.controller import
from os_ken.base import app_manager
from os_ken.controller import controller as osken_controller
from os_ken.controller.ofp_handler import OFPHandler

log = logging.getLogger(__name__)

SEND_JOIN_TIMEOUT = 10.0
NX_ACTION_HEADER = 10  # type, len, experimenter, subtype
NXAC2PT_METER_ID = 5  # controller(meter_id=N): OVS's NXAST_CONTROLLER2 property, a be32


# -- XID ---------------------------------------------------------------------------------------


class _IdHolder:
    xid = None

    def set_xid(self, xid: int) -> None:
        self.xid = xid


def next_xid(dp) -> int:
    """The datapath's next xid, as os-ken would give a message."""
    holder = _IdHolder()
    dp.set_xid(holder)
    return holder.xid


# -- NAT PADDING -------------------------------------------------------------------------------


def padded_nat(action):
    """Make an NXActionNAT write the padding its length counts."""
    body = action.serialize_body

    def serialize_body():
        data = body()
        return data + bytes(-(NX_ACTION_HEADER + len(data)) % 8)

    action.serialize_body = serialize_body
    return action


# -- CONTROLLER2 METER_ID ----------------------------------------------------------------------

_METER_PROP_DONE: set = set()


def controller2_prop_class(parser):
    """os-ken's NXActionController2Prop, a class local to the parser module's nicira code."""
    return inspect.getclosurevars(parser.NXActionController2.__init__).nonlocals[
        "NXActionController2Prop"
    ]


def controller2_meter_prop(parser) -> None:
    """Teach `parser`'s NXAST_CONTROLLER2 the meter_id property, both ways (idempotent)."""
    if parser in _METER_PROP_DONE:
        return
    prop = controller2_prop_class(parser)
    if NXAC2PT_METER_ID not in prop._TYPES:

        @prop.register_type(NXAC2PT_METER_ID)
        class _MeterId(prop):
            _arg_name = "meter_id"

            @classmethod
            def parser_prop(cls, buf, length):
                return struct.unpack_from("!I", buf, 0)[0], 4

            @classmethod
            def serialize_prop(cls, meter_id):
                return bytearray(struct.pack("!HHI", NXAC2PT_METER_ID, 8, meter_id))

    _METER_PROP_DONE.add(parser)


def register_extensions() -> None:
    """Called once before the switch connects (parsing flow stats needs the meter_id property)."""
    from os_ken.ofproto import ofproto_v1_3_parser, ofproto_v1_4_parser, ofproto_v1_5_parser

    for parser in (ofproto_v1_3_parser, ofproto_v1_4_parser, ofproto_v1_5_parser):
        controller2_meter_prop(parser)


# -- NO LISTENER -------------------------------------------------------------------------------


class ChannelHandler(OFPHandler):
    """os-ken's handshake app (hello, features, port descriptions, echo) — the `ofp_event`
    brick every Datapath reports to — without the TCP listener its start() would open."""

    def start(self):
        return app_manager.OSKenApp.start(self)  # the event loop only


def start_apps(apps: dict[str, type]) -> list:
    """Configure os-ken and instantiate `apps` ({module name: app class}) — not through
    load_apps(), which would pull in os_ken.controller.ofp_handler (the listener) as the
    provider of OpenFlow events. Returns the app instances."""
    from os_ken import cfg

    register_extensions()  # controller(meter_id=) both ways, before any flow stats
    cfg.CONF(args=[], project="os_ken")
    mgr = app_manager.AppManager.get_instance()
    mgr.applications_cls = dict(apps)
    contexts = mgr.create_contexts()
    mgr.instantiate_apps(**contexts)
    return list(mgr.applications.values())


# -- UNIX SOCKET -------------------------------------------------------------------------------


class UnixSocket(socket.socket):
    """Datapath sets TCP_NODELAY on its socket; a unix socket has no TCP options."""

    def setsockopt(self, level, optname, value, *rest):
        if level == socket.IPPROTO_TCP:
            return None
        return super().setsockopt(level, optname, value, *rest)


# -- SERVE LOOP --------------------------------------------------------------------------------


class JoinableServe(osken_controller.Datapath):
    """os-ken's Datapath with a serve loop that leaves no thread behind (and, as ovsctl's
    loop always did, no echo-request thread)."""

    def serve(self):
        send = threading.Thread(target=self._send_loop, name="of-send", daemon=True)
        send.start()
        self.send_msg(self.ofproto_parser.OFPHello(self))
        try:
            self._recv_loop()  # returns when the connection ends; closes the socket
        finally:
            self.close()
            self._wake_sender()
            send.join(SEND_JOIN_TIMEOUT)
            if send.is_alive():
                log.error("OpenFlow send thread did not stop within %ss", SEND_JOIN_TIMEOUT)
            self.is_active = False

    def _wake_sender(self) -> None:
        """The send loop may wait on an empty queue: give it an item that ends it."""
        if not self._send_q_sem.acquire(timeout=1.0):
            return  # the queue is full: the loop is busy failing on the closed socket
        q = self.send_q
        if q is None:
            self._send_q_sem.release()  # the loop has ended already
            return
        q.put((b"", True))
