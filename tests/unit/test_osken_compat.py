"""Each os-ken workaround in ovsctl.openflow.osken_compat, and a check that the os-ken behaviour
it exists for is still upstream. When one of the `upstream_*` tests fails, os-ken changed
underneath us: re-read the workaround, then drop or adapt it (and this test)."""

from __future__ import annotations

import inspect
import os
import socket
import struct
import subprocess
import sys
import threading
import types

from os_ken.base import app_manager
from os_ken.controller import controller as osken_controller
from os_ken.controller.ofp_handler import OFPHandler
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_4, ofproto_v1_4_parser

from ovsctl.openflow import osken_compat


def run_py(code: str, **env) -> subprocess.CompletedProcess:
    """A fresh interpreter: nothing of ovsctl (or of this test session) imported."""
    full = {k: v for k, v in os.environ.items() if k != "EVENTLET_NO_GREENDNS"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60
    )


# -- IMPORT ORDER --------------------------------------------------------------------------------


def test_upstream_os_ken_controller_still_cannot_be_imported_first():
    r = run_py("import os_ken.controller.controller")
    assert r.returncode != 0 and "circular import" in r.stderr, r.stderr


def test_importing_osken_compat_first_breaks_the_circle():
    r = run_py("import ovsctl.openflow.osken_compat; import os_ken.controller.controller")
    assert r.returncode == 0, r.stderr


# -- XID -----------------------------------------------------------------------------------------


def test_upstream_datapath_gives_xids_only_by_stamping_a_message():
    assert not any("xid" in n and n != "set_xid" for n in vars(osken_controller.Datapath))
    dp = types.SimpleNamespace(xid=41, ofproto=ofproto_v1_4)
    holder = osken_compat._IdHolder()
    assert osken_controller.Datapath.set_xid(dp, holder) == 42 and holder.xid == 42


def test_next_xid_takes_the_datapaths_next_xid():
    dp = types.SimpleNamespace(xid=7, ofproto=ofproto_v1_4)
    dp.set_xid = lambda msg: osken_controller.Datapath.set_xid(dp, msg)
    assert [osken_compat.next_xid(dp), osken_compat.next_xid(dp)] == [8, 9]


# -- NAT PADDING ---------------------------------------------------------------------------------


def _nat():
    return ofproto_v1_4_parser.NXActionNAT(
        flags=2,
        range_ipv4_min="10.96.0.10",
        range_ipv4_max="10.96.0.10",
        range_proto_min=80,
        range_proto_max=80,
    )


def _written(action) -> tuple[int, int]:
    """(the length the action's header says, the bytes it wrote)"""
    buf = bytearray()
    action.serialize(buf, 0)
    return struct.unpack_from("!H", buf, 2)[0], len(buf)


def test_upstream_nat_still_leaves_out_the_padding_its_length_counts():
    said, wrote = _written(_nat())
    assert said % 8 == 0 and wrote < said, (said, wrote)


def test_padded_nat_writes_what_its_length_says():
    said, wrote = _written(osken_compat.padded_nat(_nat()))
    assert said == wrote and wrote % 8 == 0


# -- CONTROLLER2 METER_ID ------------------------------------------------------------------------


def test_upstream_controller2_still_lacks_the_meter_id_property():
    code = (
        "import ovsctl.openflow.osken_compat as c\n"
        "from os_ken.ofproto import ofproto_v1_4_parser as p\n"
        "prop = c.controller2_prop_class(p)\n"
        "assert c.NXAC2PT_METER_ID not in prop._TYPES, prop._TYPES\n"
        "buf = bytearray()\n"
        "try:\n"
        "    p.NXActionController2(max_len=128, meter_id=7).serialize(buf, 0)\n"
        "except Exception:\n"
        "    pass\n"
        "if bytes([0, c.NXAC2PT_METER_ID, 0, 8]) in bytes(buf):\n"
        "    raise SystemExit('os-ken encodes controller(meter_id=) by itself now')\n"
    )
    r = run_py(code)
    assert r.returncode == 0, r.stderr + r.stdout


def test_register_extensions_encodes_and_parses_meter_id():
    osken_compat.register_extensions()
    osken_compat.register_extensions()  # idempotent
    p = ofproto_v1_4_parser
    buf = bytearray()
    p.NXActionController2(max_len=128, meter_id=7).serialize(buf, 0)
    assert struct.pack("!HHI", osken_compat.NXAC2PT_METER_ID, 8, 7) in bytes(buf)
    back = p.OFPActionExperimenter.parser(bytes(buf), 0)
    assert back.meter_id == 7 and back.max_len == 128


# -- NO LISTENER ---------------------------------------------------------------------------------


def test_upstream_ofp_handler_still_listens_and_is_the_event_provider():
    assert "OpenFlowController" in inspect.getsource(OFPHandler.start)
    from os_ken.controller import ofp_event

    assert ofp_event._SERVICE_NAME == "os_ken.controller.ofp_handler"


def test_channel_handler_starts_the_event_loop_only():
    assert osken_compat.ChannelHandler.start is not OFPHandler.start
    assert "OpenFlowController" not in inspect.getsource(osken_compat.ChannelHandler)
    assert issubclass(osken_compat.ChannelHandler, OFPHandler)
    assert hasattr(app_manager.AppManager, "instantiate_apps")
    assert hasattr(app_manager.AppManager, "create_contexts")


# -- UNIX SOCKET ---------------------------------------------------------------------------------


def test_upstream_datapath_still_sets_tcp_nodelay():
    assert "TCP_NODELAY" in inspect.getsource(osken_controller.Datapath.__init__)


def test_unix_socket_ignores_tcp_options():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    s = osken_compat.UnixSocket(socket.AF_UNIX, socket.SOCK_STREAM, 0, a.detach())
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no OSError
    finally:
        s.close()
        b.close()


# -- SERVE LOOP ----------------------------------------------------------------------------------


def test_upstream_serve_still_kills_threads_with_a_noop():
    assert "hub.kill" in inspect.getsource(osken_controller.Datapath.serve)
    if hub.HUB_TYPE == "native":
        t = threading.Thread(target=threading.Event().wait, args=(0.5,), daemon=True)
        t.start()
        hub.kill(t)
        assert t.is_alive()  # kill did nothing


def test_joinable_serve_replaces_serve():
    assert osken_compat.JoinableServe.serve is not osken_controller.Datapath.serve
    src = inspect.getsource(osken_compat.JoinableServe.serve)
    assert "hub.kill" not in src and "_wake_sender" in src


# -- GREEN DNS -----------------------------------------------------------------------------------


def test_upstream_eventlet_still_loads_green_dns_unless_told_not_to():
    code = "import sys, eventlet; print('eventlet.support.greendns' in sys.modules)"
    assert run_py(code).stdout.strip() == "True"
    assert run_py(code, EVENTLET_NO_GREENDNS="yes").stdout.strip() == "False"


def test_ovsctl_sets_eventlet_no_greendns():
    r = run_py("import os, ovsctl; print(os.environ.get('EVENTLET_NO_GREENDNS'))")
    assert r.stdout.strip() == "yes", r.stderr
