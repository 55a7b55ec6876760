"""The OpenFlow channel's own logic without a switch: the datapath ID check, the asynchronous
message configuration a service connection needs, no thread left per connection, and the
deprecated listener settings. (The real switch: tests/integration/test_openflow_channel.py.)"""

from __future__ import annotations

import socket
import struct
import threading

from os_ken.controller.handler import MAIN_DISPATCHER
from os_ken.ofproto import ofproto_v1_4

from ovsctl import config
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow.channel import Channel, ChannelDatapath
from ovsctl.openflow.osken_compat import UnixSocket


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return UnixSocket(socket.AF_UNIX, socket.SOCK_STREAM, 0, a.detach()), b


def _dp(expected: int | None, presented: int):
    ours, peer = _pair()
    accepted = []
    dp = ChannelDatapath(ours, "unix:/test.mgmt", expected, accepted.append)
    dp.set_version(ofproto_v1_4.OFP_VERSION)
    dp.id = presented  # what the features reply said
    return dp, peer, accepted


def _queued_types(dp) -> list[int]:
    out = []
    while not dp.send_q.empty():
        buf, _close = dp.send_q.get_nowait()
        out.append(struct.unpack_from("!BB", buf)[1])
    return out


def test_another_datapath_id_is_refused_before_the_app_sees_it():
    dp, peer, accepted = _dp(0xAA, 0xBB)
    dp.set_state(MAIN_DISPATCHER)
    assert dp.state != MAIN_DISPATCHER and not dp.accepted and accepted == []
    assert "datapath ID 00000000000000bb, expected 00000000000000aa" in dp.refused
    assert _queued_types(dp) == []  # nothing was sent to it
    peer.settimeout(5)
    assert peer.recv(10) == b""  # and it was hung up on


def test_the_bridges_datapath_id_is_accepted_and_asks_for_packet_ins_first():
    dp, _peer, accepted = _dp(0xAA, 0xAA)
    dp.set_state(MAIN_DISPATCHER)
    assert dp.state == MAIN_DISPATCHER and dp.accepted and accepted == [dp]
    # OFPT_SET_CONFIG (miss_send_len) and OFPT_SET_ASYNC, before any flow
    assert _queued_types(dp) == [ofproto_v1_4.OFPT_SET_CONFIG, ofproto_v1_4.OFPT_SET_ASYNC]


def test_a_served_connection_leaves_no_thread_behind():
    before = {t.ident for t in threading.enumerate()}
    for _ in range(20):
        dp, peer, _ = _dp(None, 1)
        peer.close()  # the switch goes away
        dp.serve()  # returns: EOF
        assert not dp.is_active
    wait = [t for t in threading.enumerate() if t.ident not in before and t.name == "of-send"]
    assert wait == []


def test_health_names_the_reason_after_the_grace_period(tmp_path):
    ch = Channel(str(tmp_path / "br-int.mgmt"), 0xAA)
    assert ch.health(0) is None  # not started
    ch.start()
    try:
        ch.down_since -= 100
        why = ch.health(15)
        assert why and "no OpenFlow connection to unix:" in why
    finally:
        ch.stop()
    assert ch.health(15) == f"OpenFlow channel to {ch.target} stopped (the agent is stopping)"
    # a thread that ended without being stopped has died
    dead = Channel(str(tmp_path / "other.mgmt"))
    dead.thread = threading.Thread(target=lambda: None)
    dead.thread.start()
    dead.thread.join()
    assert dead.health(15) == f"OpenFlow channel thread to {dead.target} has died"


def test_round_zero_is_deleted_by_feature_so_learned_flows_stay():
    from flows import cookie as ck

    dp, _peer, _ = _dp(None, 1)
    m = ofconv.delete_round_feature(dp, 0, ck.FEATURES["pod"])
    assert m.cookie == ck.FEATURES["pod"] << ck.FEATURE_SHIFT
    assert m.cookie_mask == ck.ROUND_MASK | ck.FEATURE_MASK
    assert m.command == dp.ofproto.OFPFC_DELETE and m.table_id == dp.ofproto.OFPTT_ALL


def test_listener_settings_are_deprecated_but_still_load():
    cfg = config.from_mapping(
        {"of_listen_host": "127.0.0.1", "of_listen_port": 6653, "pod_cidr": "10.244.0.0/24"}
    ).validate()
    warnings = cfg.deprecated()
    assert len(warnings) == 2 and all("ignored" in w and "br-int.mgmt" in w for w in warnings)
    assert config.AgentConfig(pod_cidr="10.244.0.0/24").validate().deprecated() == []
