"""NetworkPolicy audit, without a switch: the annotation, the audited policy flows (and their
OpenFlow encoding, checked by OVS's own decoder), the meter, the audit line and its limits
(token bucket, repeats), and the controller's dispatch of packet-ins by cookie feature."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import struct
import subprocess
import types

# os-ken needs app_manager imported before its controller/ofproto modules (circular import).
import os_ken.base.app_manager  # noqa: F401
import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_4, ofproto_v1_4_parser

from flows import cookie, netpol, policy
from flows.flow import FlowError, Goto, MeteredController, flow
from flows.policy import AUDIT_DROP_PRIO, AUDIT_METER_BASE, PRIO_BASE, PodInfo, View
from ovsctl.agent import audit
from ovsctl.agent.audit import AuditLog, TokenBucket
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow import osken_compat
from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync

OFP, PARSER = ofproto_v1_4, ofproto_v1_4_parser
ROUND = 3


def pol(annotations: dict | None = None, spec: dict | None = None) -> netpol.Policy:
    meta = {"name": "web", "namespace": "x"}
    if annotations is not None:
        meta["annotations"] = annotations
    return netpol.parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": spec
            or {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "fe"}}}],
                        "ports": [{"port": 80}],
                    },
                    {},  # everyone, every port: single-clause allows
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
            },
        }
    )


def view() -> View:
    def pod(name, ip, app, local=True):
        return PodInfo("x", name, (("app", app),), ip, (), local)

    return View(
        {"x": {"kubernetes.io/metadata.name": "x"}},
        [pod("w1", "10.244.0.2", "web"), pod("f1", "10.244.1.5", "fe", local=False)],
    )


def slots(owner: str) -> int:
    return {"isolation": 0, "0": 1, "1": 2}.get(owner.rsplit("/", 1)[1], 3) + (
        10 if "/egress/" in owner else 0
    )


# ---- the annotation and the flows ---------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations, audited",
    [
        (None, False),
        ({}, False),
        ({"ovsctl.io/audit": "true"}, True),
        ({"ovsctl.io/audit": "True"}, True),
        ({"ovsctl.io/audit": "false"}, False),
        ({"ovsctl.io/audit": "yes"}, False),
        ({"other": "true"}, False),
    ],
)
def test_the_annotation_turns_audit_on(annotations, audited):
    assert pol(annotations).audit is audited


# the policy's own audit meter: its isolation owner has slot 0 in these tests
AUDIT = MeteredController(AUDIT_METER_BASE, policy.AUDIT_MAX_LEN)
METER = f"meter_id={AUDIT_METER_BASE}"


def test_metered_controller_text_and_checks():
    assert MeteredController(1).text() == "controller(meter_id=1)"
    assert MeteredController(7, 128).text() == "controller(max_len=128,meter_id=7)"
    assert AUDIT.text() == f"controller(max_len=128,{METER})"
    f = flow("IngressRule", 1005, {"protocol": "ip", "conj_id": 512}, (AUDIT, Goto("L2Forwarding")))
    assert f.actions_text() == f"controller(max_len=128,{METER}),goto_table:70"
    for bad in (MeteredController(0), MeteredController(1, 0), MeteredController(0xFFFF0001)):
        with pytest.raises(FlowError):
            flow("IngressDefault", 5, {"protocol": "ip"}, (bad,))


def test_audited_flows_differ_only_in_the_copy_to_the_agent_and_the_drop():
    plain = policy.policy_flows(pol(), view(), slots)
    audited = policy.policy_flows(pol({"ovsctl.io/audit": "true"}), view(), slots)
    assert plain.keys() == audited.keys()
    for owner in plain:
        want = set()
        for f in plain[owner]:
            if f.table in ("IngressDefault", "EgressDefault"):
                assert f.actions == () and f.priority == PRIO_BASE + slots(owner)
                want.add(flow(f.table, AUDIT_DROP_PRIO, dict(f.match), (AUDIT,), f.cookie))
            elif f.actions and isinstance(f.actions[-1], Goto):  # conj_id and direct allows
                want.add(flow(f.table, f.priority, dict(f.match), (AUDIT, *f.actions), f.cookie))
            else:  # conjunction clauses cannot carry other actions
                want.add(f)
        assert set(audited[owner]) == want, owner
    texts = {f.text() for fs in audited.values() for f in fs}
    ing = cookie.make("policy", "policy/x/web/ingress/1")
    iso = cookie.make("policy", "policy/x/web/isolation")
    assert (
        f"cookie={ing:#x}, table=60, priority=1002,ip,nw_dst=10.244.0.2 "
        f"actions=controller(max_len=128,{METER}),goto_table:70" in texts
    )
    assert (
        f"cookie={iso:#x}, table=65, priority=65000,ip,nw_dst=10.244.0.2 "
        f"actions=controller(max_len=128,{METER})" in texts
    )
    assert (
        f"cookie={iso:#x}, table=45, priority=65000,ip,nw_src=10.244.0.2 "
        f"actions=controller(max_len=128,{METER})" in texts
    )


def test_each_audited_policy_has_its_own_meter():
    """One shared meter let a flood that one policy logs hide another's connections."""
    other = netpol.parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "db",
                "namespace": "x",
                "annotations": {"ovsctl.io/audit": "true"},
            },
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
    )
    given: dict[str, int] = {}

    def slot_of(owner: str) -> int:
        return given.setdefault(owner, len(given))

    meters = {}
    for p in (pol({"ovsctl.io/audit": "true"}), other):
        flows = policy.policy_flows(p, view(), slot_of)
        meters[p.key] = {
            a.meter_id
            for fs in flows.values()
            for f in fs
            for a in f.actions
            if isinstance(a, MeteredController)
        }
    assert all(len(m) == 1 for m in meters.values()), meters
    assert meters["x/web"] != meters["x/db"]
    assert all(policy.is_audit_meter(m) for ms in meters.values() for m in ms)


def test_audited_drop_priority_is_above_every_policy_slot():
    assert AUDIT_DROP_PRIO > PRIO_BASE + policy.MAX_SLOTS - 1
    assert AUDIT_DROP_PRIO <= 0xFFFF


# ---- OpenFlow encoding ----------------------------------------------------------------------------


@pytest.fixture
def dp():
    return types.SimpleNamespace(ofproto=OFP, ofproto_parser=PARSER, id=0x1)


def wire(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def parse_back(dp, data: bytes):
    version, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    return ofproto_parser.msg(dp, version, msg_type, length, xid, data)


def audited_flows():
    out = policy.policy_flows(pol({"ovsctl.io/audit": "true"}), view(), slots)
    return sorted(set().union(*out.values()), key=lambda f: (f.table_id, -f.priority, f.match))


def test_audited_flows_serialise_and_parse_back(dp):
    osken_compat.register_extensions()
    for f in audited_flows():
        add = ofconv.flow_add(dp, f, ROUND)
        back = parse_back(dp, wire(add))
        assert str(back.instructions) == str(add.instructions)
        for inst in back.instructions:
            for a in getattr(inst, "actions", []):
                if type(a).__name__ == "NXActionController2":
                    assert (a.max_len, a.meter_id) == (128, AUDIT_METER_BASE)


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
def test_ovs_decodes_the_audited_flows_as_their_text(dp):
    flows = audited_flows()
    assert any(isinstance(a, MeteredController) for f in flows for a in f.actions)
    data = b"".join(wire(ofconv.flow_add(dp, f, ROUND)) for f in flows)
    out = subprocess.run(
        ["ovs-ofctl", "ofp-parse", "-"], input=data, capture_output=True, check=True, timeout=10
    ).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == len(flows)
    for f, line in zip(flows, lines, strict=True):
        assert f" {f.match_text()} " in line, line
        assert line.endswith(f" actions={f.actions_text()}"), line


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
def test_meter_mod_is_a_packets_per_second_drop_band(dp):
    add = ofconv.meter_mod(dp, AUDIT_METER_BASE, 100, 100)
    mod = ofconv.meter_mod(dp, AUDIT_METER_BASE, 50, 50, modify=True)
    out = subprocess.run(
        ["ovs-ofctl", "ofp-parse", "-"],
        input=wire(add) + wire(mod),
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout.decode()
    text = " ".join(out.split())
    assert "ADD meter=65536 pktps burst stats bands= type=drop rate=100 burst_size=100" in text, (
        text
    )
    assert "MOD meter=65536 pktps burst stats bands= type=drop rate=50 burst_size=50" in text, text


# ---- packets and lines --------------------------------------------------------------------------


def frame(proto: int, src: str, dst: str, l4: bytes, vlan: bool = False, frag: int = 0) -> bytes:
    eth = b"\x0a\x58\x0a\xf4\x00\x03" + b"\x0a\x58\x0a\xf4\x00\x02"
    if vlan:
        eth += b"\x81\x00\x00\x05"
    eth += b"\x08\x00"
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(l4),
        1,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return eth + ip + l4


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)


def test_five_tuple():
    assert audit.five_tuple(frame(6, "10.244.0.2", "10.244.1.3", tcp(40000, 80))) == {
        "proto": "tcp",
        "src": "10.244.0.2",
        "dst": "10.244.1.3",
        "sport": 40000,
        "dport": 80,
    }
    udp = struct.pack("!HHHH", 5353, 53, 8, 0)
    assert audit.five_tuple(frame(17, "10.0.0.1", "10.0.0.2", udp, vlan=True))["dport"] == 53
    icmp = frame(1, "10.0.0.1", "10.0.0.2", b"\x08\x00\x00\x00")
    assert audit.five_tuple(icmp) == {
        "proto": "icmp",
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "type": 8,
        "code": 0,
    }
    later_fragment = audit.five_tuple(frame(6, "10.0.0.1", "10.0.0.2", tcp(1, 2), frag=0x10))
    assert "sport" not in later_fragment
    assert audit.five_tuple(frame(132, "10.0.0.1", "10.0.0.2", tcp(7, 9)))["proto"] == "sctp"
    assert audit.five_tuple(b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28) is None  # ARP
    assert audit.five_tuple(b"\x00" * 10) is None
    assert audit.five_tuple(frame(6, "10.0.0.1", "10.0.0.2", tcp(1, 2))[:30]) is None


def test_describe_names_policy_rule_and_verdict():
    assert audit.describe("policy/x/web/ingress/0", 60) == ("x/web", "ingress/0", "allow")
    assert audit.describe("policy/x/web/egress/3", 40) == ("x/web", "egress/3", "allow")
    assert audit.describe("policy/x/web/isolation", 65) == ("x/web", "ingress/isolation", "drop")
    assert audit.describe("policy/x/web/isolation", 45) == ("x/web", "egress/isolation", "drop")
    assert audit.describe("service/x/web", 35) is None
    assert audit.describe("policy/x/web/ingress/0", 35) is None  # not a policy table
    assert audit.describe(None, 60) is None


def test_the_line_format():
    t = 1795410000.9  # 2026-11-23T05:00:00Z
    tup = {"proto": "tcp", "src": "10.244.0.2", "dst": "10.244.1.3", "sport": 40000, "dport": 80}
    assert (
        audit.format_line(t, "ns/name", "ingress/0", "allow", tup)
        == "2026-11-23T05:00:00Z policy=ns/name rule=ingress/0 verdict=allow proto=tcp "
        "src=10.244.0.2:40000 dst=10.244.1.3:80"
    )
    icmp = {"proto": "icmp", "src": "10.0.0.1", "dst": "10.0.0.2", "type": 8, "code": 0}
    assert (
        audit.format_line(t, "a/b", "egress/isolation", "drop", icmp)
        == "2026-11-23T05:00:00Z policy=a/b rule=egress/isolation verdict=drop proto=icmp "
        "src=10.0.0.1 dst=10.0.0.2 type=8 code=0"
    )


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_token_bucket():
    c = Clock()
    b = TokenBucket(10, 10, c)
    assert sum(b.take() for _ in range(100)) == 10  # the burst
    c.t += 0.5
    assert sum(b.take() for _ in range(100)) == 5
    c.t += 100
    assert sum(b.take() for _ in range(100)) == 10  # never more than the burst saved up


def log_for(tmp_path, rate=5, clock=None):
    owners = ["policy/x/web/ingress/0", "policy/x/web/isolation", "pod/abc/eth0"]
    return AuditLog(
        str(tmp_path / "sub" / "audit.log"), rate, lambda: owners, clock=clock or Clock()
    )


def cookie_of(key: str, rnd: int = 9) -> int:
    return cookie.with_round(cookie.make("policy", key), rnd)


def test_audit_log_lines_repeats_rate_limit_and_the_file(tmp_path):
    c = Clock()
    log = log_for(tmp_path, rate=5, clock=c)
    log.wall = lambda: 1795410000.0
    allow = frame(6, "10.244.1.5", "10.244.0.2", tcp(40000, 80))
    line = log.packet_in(cookie_of("policy/x/web/ingress/0"), 60, allow)
    assert line == (
        "2026-11-23T05:00:00Z policy=x/web rule=ingress/0 verdict=allow proto=tcp "
        "src=10.244.1.5:40000 dst=10.244.0.2:80"
    )
    # the same connection again (a retransmitted SYN) within DEDUP_SECONDS: counted, not logged
    assert log.packet_in(cookie_of("policy/x/web/ingress/0"), 60, allow) is None
    assert log.counts["repeats"] == 1
    drop = frame(6, "10.244.1.5", "10.244.0.2", tcp(40001, 81))
    dropped = log.packet_in(cookie_of("policy/x/web/isolation"), 65, drop)
    assert "policy=x/web rule=ingress/isolation verdict=drop" in dropped
    # unknown owner ids (a policy gone meanwhile) and non-IP frames are counted only
    assert log.packet_in(cookie_of("policy/x/gone/ingress/0"), 60, allow) is None
    assert log.counts["unknown"] == 1
    # rate limit: the policy's 5 tokens at start, 3 taken above (a repeat costs one too; an
    # unknown owner has no policy and no budget)
    results = [
        log.packet_in(
            cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(p, 80))
        )
        for p in range(1000, 1010)
    ]
    assert sum(r is not None for r in results) == 2
    assert log.counts["rate_limited"] == 8
    c.t += 1.0  # one second later: rate more
    results = [
        log.packet_in(
            cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(p, 80))
        )
        for p in range(2000, 2010)
    ]
    assert sum(r is not None for r in results) == 5
    # the writer thread writes them, in order, to the file (its directory made)
    log.start()
    log.stop()
    lines = (tmp_path / "sub" / "audit.log").read_text().splitlines()
    assert len(lines) == log.counts["lines"] == 9
    assert lines[0] == line
    assert log.status()["lines"] == 9 and log.status()["rate"] == 5


def test_each_policy_has_its_own_logging_budget(tmp_path):
    c = Clock()
    owners = ["policy/x/web/isolation", "policy/x/db/ingress/0"]
    log = AuditLog("", 5, lambda: owners, clock=c)
    flood = [
        log.packet_in(
            cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(p, 80))
        )
        for p in range(1000, 1100)
    ]
    assert sum(r is not None for r in flood) == 5  # x/web's budget is spent ...
    line = log.packet_in(
        cookie_of("policy/x/db/ingress/0"), 60, frame(6, "10.244.1.5", "10.244.0.3", tcp(5, 5432))
    )
    assert line is not None and "policy=x/db rule=ingress/0 verdict=allow" in line  # ... not db's


def test_audit_log_reopens_a_rotated_file(tmp_path):
    log = log_for(tmp_path, rate=100)
    path = tmp_path / "sub" / "audit.log"
    log.start()
    log.packet_in(
        cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(1, 80))
    )
    log.stop()
    path.rename(tmp_path / "sub" / "audit.log.1")
    log.start()
    log.packet_in(
        cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(2, 80))
    )
    log.stop()
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "sub" / "audit.log.1").read_text().splitlines()) == 1


def test_audit_log_is_0640_new_rotated_and_inherited(tmp_path):
    """Who talked to whom is for root and the log's group: the file is made 0640 whatever the
    umask lets through, a file an older agent left 0644 is narrowed, and so is a new file after
    rotation; the directory it makes is 0750."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "sub" / "audit.log"
        log = log_for(tmp_path, rate=100)
        for port in (1, 2):
            log.start()
            log.packet_in(
                cookie_of("policy/x/web/isolation"),
                65,
                frame(6, "1.1.1.1", "10.244.0.2", tcp(port, 80)),
            )
            log.stop()
            assert stat.S_IMODE(path.stat().st_mode) == 0o640
            path.rename(tmp_path / "sub" / f"audit.log.{port}")  # rotated: a new file next
        assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o750
        path.write_text("")
        path.chmod(0o644)  # as an older agent made it
        log.start()
        log.packet_in(
            cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(3, 80))
        )
        log.stop()
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert len(path.read_text().splitlines()) == 1
    finally:
        os.umask(old_umask)


def test_an_unwritable_log_still_goes_to_the_logger(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    log = AuditLog(str(tmp_path / "file" / "audit.log"), 10, lambda: ["policy/x/web/isolation"])
    log.start()
    with caplog.at_level("INFO", logger="ovsctl.audit"):
        log.packet_in(
            cookie_of("policy/x/web/isolation"), 65, frame(6, "1.1.1.1", "10.244.0.2", tcp(1, 80))
        )
        log.stop()
    assert any("verdict=drop" in r.getMessage() for r in caplog.records if r.name == "ovsctl.audit")
    assert log.counts["write_errors"] == 1


# ---- the controller's dispatch --------------------------------------------------------------------


def test_packet_ins_go_to_the_audit_log_or_the_rejecter_by_cookie_feature(tmp_path, monkeypatch):
    ctl = Controller(FlowSync(), str(tmp_path))
    got = []
    ctl.on_audit = lambda c, t, d: got.append((c, t, d))
    rejected = []
    monkeypatch.setattr("ovsctl.openflow.packetin.reject", lambda data: rejected.append(data))
    data = frame(6, "1.1.1.1", "10.244.0.2", tcp(1, 80))
    msg = types.SimpleNamespace(
        cookie=cookie_of("policy/x/web/isolation"), table_id=65, data=bytearray(data), match={}
    )
    ctl.on_packet_in(msg)
    assert got == [(msg.cookie, 65, data)] and not rejected
    assert ctl.packet_ins["audit"] == 1
    svc = types.SimpleNamespace(
        cookie=cookie.with_round(cookie.make("service", "service/x/web"), 2),
        table_id=35,
        data=data,
        match={"in_port": 3},
    )
    ctl.on_packet_in(svc)
    assert rejected == [data] and len(got) == 1


# -- IPv6 (issue 16) -----------------------------------------------------------------------------


def frame6(
    nxt: int, src: str, dst: str, payload: bytes, vlan: bool = False, ext: bytes = b""
) -> bytes:
    """An Ethernet frame with an IPv6 header (next header `nxt`), then `ext` (extension
    headers the caller chains), then `payload`."""
    eth = b"\x0a\x58\x0a\xf4\x00\x03" + b"\x0a\x58\x0a\xf4\x00\x02"
    if vlan:
        eth += b"\x81\x00\x00\x05"
    eth += b"\x86\xdd"
    ip = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(ext) + len(payload),
        nxt,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return eth + ip + ext + payload


def test_five_tuple_ipv6():
    assert audit.five_tuple(frame6(6, "fd00:10:244:1::5", "fd00:10:244::2", tcp(40000, 80))) == {
        "proto": "tcp",
        "src": "fd00:10:244:1::5",
        "dst": "fd00:10:244::2",
        "sport": 40000,
        "dport": 80,
    }
    udp = struct.pack("!HHHH", 5353, 53, 8, 0)
    assert audit.five_tuple(frame6(17, "fd00::1", "fd00::2", udp, vlan=True))["dport"] == 53
    assert audit.five_tuple(frame6(132, "fd00::1", "fd00::2", tcp(7, 9)))["proto"] == "sctp"
    assert audit.five_tuple(frame6(58, "fd00::1", "fd00::2", b"\x80\x00\x00\x00")) == {
        "proto": "icmp6",
        "src": "fd00::1",
        "dst": "fd00::2",
        "type": 128,
        "code": 0,
    }
    # extension headers are walked: hop-by-hop (8 octets) then destination options (16)
    ext = bytes([60, 0]) + b"\x00" * 6 + bytes([6, 1]) + b"\x00" * 14
    assert (
        audit.five_tuple(frame6(0, "fd00::1", "fd00::2", tcp(1234, 443), ext=ext))["dport"] == 443
    )
    # a first fragment names its ports, a later one does not
    first = bytes([6, 0, 0, 0]) + b"\x00\x00\x00\x01"
    later = bytes([6, 0, 0, 0x10]) + b"\x00\x00\x00\x01"
    assert audit.five_tuple(frame6(44, "fd00::1", "fd00::2", tcp(1, 2), ext=first))["sport"] == 1
    tup = audit.five_tuple(frame6(44, "fd00::1", "fd00::2", tcp(1, 2), ext=later))
    assert tup == {"proto": "tcp", "src": "fd00::1", "dst": "fd00::2"}
    # truncated: in the fixed header, in an extension header
    assert audit.five_tuple(frame6(6, "fd00::1", "fd00::2", tcp(1, 2))[:50]) is None
    assert audit.five_tuple(frame6(0, "fd00::1", "fd00::2", b"", ext=b"\x06")) is None
    # a chain of extension headers that never ends is no transport header
    loop = (bytes([0, 0]) + b"\x00" * 6) * 9
    assert audit.five_tuple(frame6(0, "fd00::1", "fd00::2", b"", ext=loop)) is None


def test_the_line_format_ipv6():
    t = 1795410000.9
    tup = {"proto": "tcp", "src": "fd00:10:244::2", "dst": "fd00:10:244:1::3", "sport": 40000,
           "dport": 80}  # fmt: skip
    assert (
        audit.format_line(t, "ns/name", "ingress/0", "allow", tup)
        == "2026-11-23T05:00:00Z policy=ns/name rule=ingress/0 verdict=allow proto=tcp "
        "src=[fd00:10:244::2]:40000 dst=[fd00:10:244:1::3]:80"
    )
    icmp6 = {"proto": "icmp6", "src": "fd00::1", "dst": "fd00::2", "type": 128, "code": 0}
    assert (
        audit.format_line(t, "a/b", "egress/isolation", "drop", icmp6)
        == "2026-11-23T05:00:00Z policy=a/b rule=egress/isolation verdict=drop proto=icmp6 "
        "src=fd00::1 dst=fd00::2 type=128 code=0"
    )


def test_audit_log_lines_for_ipv6_packets(tmp_path):
    log = log_for(tmp_path, rate=5, clock=Clock())
    log.wall = lambda: 1795410000.0
    pkt = frame6(6, "fd00:10:244:1::5", "fd00:10:244::2", tcp(40000, 80))
    assert log.packet_in(cookie_of("policy/x/web/ingress/0"), 60, pkt) == (
        "2026-11-23T05:00:00Z policy=x/web rule=ingress/0 verdict=allow proto=tcp "
        "src=[fd00:10:244:1::5]:40000 dst=[fd00:10:244::2]:80"
    )
    assert log.packet_in(cookie_of("policy/x/web/ingress/0"), 60, pkt) is None  # a repeat
    drop = frame6(17, "fd00:10:244:1::5", "fd00:10:244::2", struct.pack("!HHHH", 9, 53, 8, 0))
    line = log.packet_in(cookie_of("policy/x/web/isolation"), 65, drop)
    assert "verdict=drop proto=udp src=[fd00:10:244:1::5]:9 dst=[fd00:10:244::2]:53" in line
