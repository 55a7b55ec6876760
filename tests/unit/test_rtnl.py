"""The CNI path's rtnetlink client (ovsctl/agent/host/rtnl.py): the requests it builds, decoded
back field by field, and how it matches the kernel's answers to its requests (a scripted socket
stands in for the kernel; the real one is exercised by the CNI integration tests), and how
ovsctl/agent/host/netlink.py words a refused request in the CNI error."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from ovsctl.agent.host import netlink, rtnl


def _decode(msg: bytes, head: struct.Struct) -> tuple[tuple, dict[int, bytes]]:
    return head.unpack_from(msg), rtnl._attrs(msg, head.size)


def test_veth_request_names_both_ends_and_puts_the_peer_in_the_namespace():
    what, kind, flags, body = rtnl.veth(
        "ovsabc", "0e:01:02:03:04:05", 1400, "eth0", "0a:58:0a:f4:00:05", 7
    )
    assert (kind, flags) == (rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
    assert "ovsabc" in what
    _, attrs = _decode(body, rtnl._IFINFO)
    assert attrs[rtnl.IFLA_IFNAME] == b"ovsabc\0"
    assert struct.unpack("=I", attrs[rtnl.IFLA_MTU]) == (1400,)
    assert attrs[rtnl.IFLA_ADDRESS] == bytes.fromhex("0e0102030405")
    info = rtnl._attrs(attrs[rtnl.IFLA_LINKINFO], 0)
    assert info[rtnl.IFLA_INFO_KIND] == b"veth\0"
    peer = rtnl._attrs(info[rtnl.IFLA_INFO_DATA], 0)[rtnl.VETH_INFO_PEER]
    _, pattrs = _decode(peer, rtnl._IFINFO)
    assert pattrs[rtnl.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", pattrs[rtnl.IFLA_NET_NS_FD]) == (7,)
    assert pattrs[rtnl.IFLA_ADDRESS] == bytes.fromhex("0a580af40005")


def test_addresses_ipv4_with_its_local_address_ipv6_with_the_flags_given():
    _, kind, _, body = rtnl.addr_add(3, "10.244.0.5", 24)
    (fam, plen, flags, _scope, idx), attrs = _decode(body, rtnl._IFADDR)
    assert (kind, fam, plen, flags, idx) == (rtnl.RTM_NEWADDR, socket.AF_INET, 24, 0, 3)
    assert attrs[rtnl.IFA_ADDRESS] == attrs[rtnl.IFA_LOCAL] == socket.inet_aton("10.244.0.5")
    _, _, _, body = rtnl.addr_add(3, "fd00::5", 64, 0x02)
    (fam, plen, flags, _scope, idx), attrs = _decode(body, rtnl._IFADDR)
    assert (fam, plen, flags) == (socket.AF_INET6, 64, 0x02)
    assert attrs == {rtnl.IFA_ADDRESS: socket.inet_pton(socket.AF_INET6, "fd00::5")}


def test_default_route_via_the_gateway_in_the_main_table():
    _, kind, _, body = rtnl.default_route_add("fd00::1", 4)
    (fam, dst_len, _s, _t, table, proto, _sc, rtype, _f), attrs = _decode(body, rtnl._RTMSG)
    assert (kind, fam, dst_len, table, rtype) == (
        rtnl.RTM_NEWROUTE,
        socket.AF_INET6,
        0,
        rtnl.RT_TABLE_MAIN,
        rtnl.RTN_UNICAST,
    )
    assert proto == rtnl.RTPROT_BOOT
    assert attrs[rtnl.RTA_GATEWAY] == socket.inet_pton(socket.AF_INET6, "fd00::1")
    assert struct.unpack("=I", attrs[rtnl.RTA_OIF]) == (4,)


def test_link_up_and_delete_by_name():
    _, kind, _, body = rtnl.link_up(9, "eth0")
    assert kind == rtnl.RTM_NEWLINK
    assert rtnl._IFINFO.unpack_from(body) == (0, 0, 9, rtnl.IFF_UP, rtnl.IFF_UP)
    _, kind, _, body = rtnl.link_del("ovsabc")
    (_, _, idx, _, _), attrs = _decode(body, rtnl._IFINFO)
    assert (kind, idx, attrs[rtnl.IFLA_IFNAME]) == (rtnl.RTM_DELLINK, 0, b"ovsabc\0")


class Kernel:
    """A socket that records what is sent and answers with scripted replies, each a function
    of the sequence numbers of the last send."""

    def __init__(self, script):
        self.script, self.sent, self.pending = list(script), [], []

    def send(self, data: bytes) -> int:
        seqs, off = [], 0
        while off < len(data):
            n, _kind, flags, seq, _ = rtnl._HDR.unpack_from(data, off)
            seqs.append((seq, flags))
            off += n
        self.sent.append(seqs)
        self.pending += self.script.pop(0)(seqs)
        return len(data)

    def recv(self, _n: int) -> bytes:
        return self.pending.pop(0)

    def close(self):
        pass


def _msg(kind: int, seq: int, payload: bytes) -> bytes:
    return rtnl._HDR.pack(rtnl._HDR.size + len(payload), kind, 0, seq, 0) + payload


def _ack(seq: int, err: int = 0) -> bytes:
    return _msg(rtnl.NLMSG_ERROR, seq, struct.pack("=i", -err) + b"\0" * 16)


def _nl(script) -> tuple[rtnl.Rtnl, Kernel]:
    nl = rtnl.Rtnl.__new__(rtnl.Rtnl)
    nl.seq, nl.lock = 0, __import__("threading").Lock()
    nl.sock = Kernel(script)
    return nl, nl.sock


def test_batched_requests_go_in_one_send_each_acked_and_the_first_failure_is_named():
    # a stale answer (an earlier, abandoned request) first; acks out of order, in two reads
    nl, kernel = _nl(
        [lambda s: [_ack(999) + _ack(s[1][0], errno.EEXIST), _ack(s[0][0]) + _ack(s[2][0])]]
    )
    reqs = (rtnl.link_up(2, "eth0"), rtnl.addr_add(2, "10.0.0.5", 24), rtnl.link_up(1, "lo"))
    assert nl.call(*reqs) == [0, errno.EEXIST, 0]
    assert len(kernel.sent) == 1 and len(kernel.sent[0]) == 3
    assert all(flags & rtnl.NLM_F_ACK for _, flags in kernel.sent[0])
    nl, _ = _nl([lambda s: [_ack(s[0][0]) + _ack(s[1][0], errno.EEXIST) + _ack(s[2][0])]])
    with pytest.raises(rtnl.RtnlError) as e:
        nl.do(*reqs)
    assert e.value.errno == errno.EEXIST
    assert "adding 10.0.0.5/24" in str(e.value)


def _route(table: int, dst_len: int, gateway: bytes | None = None, attr_table=None) -> bytes:
    body = rtnl._RTMSG.pack(socket.AF_INET, dst_len, 0, 0, table, 3, 0, 1, 0)
    if gateway:
        body += rtnl._attr(rtnl.RTA_GATEWAY, gateway)
    if attr_table is not None:
        body += rtnl._u32(rtnl.RTA_TABLE, attr_table)
    return body


@pytest.mark.parametrize(
    ("routes", "gateway_only", "want"),
    [
        ([_route(255, 0), _route(254, 24)], False, False),  # local table, a prefix route
        ([_route(254, 24), _route(254, 0)], False, True),
        ([_route(254, 0)], True, False),  # no gateway
        ([_route(254, 0, b"\x0a\0\0\x01")], True, True),
        ([_route(252, 0, attr_table=1000)], False, False),  # RTA_TABLE overrides the header
        ([_route(252, 0, attr_table=254)], False, True),
    ],
)
def test_default_route_looks_at_the_main_table_only(routes, gateway_only, want):
    def answer(seqs):
        seq = seqs[0][0]
        multi = b"".join(_msg(rtnl.RTM_NEWROUTE, seq, r) for r in routes)
        return [
            _msg(rtnl.RTM_NEWROUTE, seq + 7, routes[0]) + multi,
            _msg(rtnl.NLMSG_DONE, seq, b"\0" * 4),
        ]

    nl, kernel = _nl([answer])
    assert nl.default_route(socket.AF_INET, gateway_only) is want
    assert kernel.sent[0][0][1] & rtnl.NLM_F_DUMP == rtnl.NLM_F_DUMP


def test_a_refused_dump_raises():
    nl, _ = _nl([lambda s: [_ack(s[0][0], errno.EPERM)]])
    with pytest.raises(rtnl.RtnlError) as e:
        nl.default_route(socket.AF_INET, False)
    assert e.value.errno == errno.EPERM


def test_an_error_names_the_request_once_without_the_errno_prefix():
    nl, _ = _nl([lambda s: [_ack(s[0][0], errno.EEXIST)]])
    with pytest.raises(rtnl.RtnlError) as e:
        nl.do(rtnl.addr_add(2, "10.0.0.5", 24))
    assert (e.value.errno, e.value.strerror) == (errno.EEXIST, "File exists")
    assert e.value.request == "adding 10.0.0.5/24"
    assert str(e.value) == "adding 10.0.0.5/24: File exists"


# What a CNI ADD/DEL reports (it reaches kubelet as the CNI error): each step's failure said
# once. The kernel is scripted; nothing on the machine is changed.


def _host(monkeypatch, script) -> Kernel:
    nl, kernel = _nl(script)
    monkeypatch.setattr(rtnl, "host", lambda: nl)
    return kernel


def _add(tmp_path, host_if="ovs0fix19", ifname="eth0"):
    netns = tmp_path / "netns"  # opened (and closed) only: the scripted kernel refuses first
    netns.write_bytes(b"")
    kw = dict(mac="0a:58:0a:00:00:05", ip="10.0.0.5", prefixlen=24, gateway="10.0.0.1")
    return netlink.create_pod_interface(host_if, str(netns), ifname, mtu=1400, tx_off=False, **kw)


def test_a_refused_veth_is_reported_once(monkeypatch, tmp_path):
    _host(monkeypatch, [lambda s: [_ack(s[0][0], errno.EPERM)]])
    with pytest.raises(netlink.NetlinkFailure) as e:
        _add(tmp_path)
    assert str(e.value) == "creating veth ovs0fix19: Operation not permitted"


def test_a_host_end_that_cannot_come_up_is_reported_once_and_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(netlink, "quiet_host_side", lambda name: None)
    kernel = _host(
        monkeypatch,
        [
            lambda s: [_ack(s[0][0])],  # the veth
            lambda s: [_ack(s[0][0], errno.ENETDOWN)],  # up
            lambda s: [_ack(s[0][0])],  # deleted again
        ],
    )
    with pytest.raises(netlink.NetlinkFailure) as e:
        _add(tmp_path, host_if="lo")  # an interface every namespace has, for if_nametoindex
    assert str(e.value) == "bringing up host end lo: Network is down"
    assert len(kernel.sent) == 3


def test_a_refused_delete_is_reported_once(monkeypatch):
    _host(monkeypatch, [lambda s: [_ack(s[0][0], errno.EPERM)]])
    with pytest.raises(netlink.NetlinkFailure) as e:
        netlink.delete_link("ovs0fix19")
    assert str(e.value) == "deleting ovs0fix19: Operation not permitted"


def test_a_refused_request_of_the_pod_side_batch_is_named_once(monkeypatch):
    nl, _ = _nl(
        [lambda s: [_ack(s[0][0]), _ack(s[1][0], errno.EEXIST)] + [_ack(x) for x, _ in s[2:]]]
    )
    monkeypatch.setattr(rtnl, "Rtnl", lambda: nl)
    with pytest.raises(netlink.NetlinkFailure) as e:
        netlink._configure_pod_side("lo", [("10.0.0.5", 24, "10.0.0.1")], False)
    assert str(e.value) == (
        "configuring lo in the pod's namespace: adding 10.0.0.5/24: File exists"
    )
