"""The answers the agent sends for a Service without endpoints (pure: bytes in, bytes out)."""

import struct

from os_ken.lib import addrconv
from os_ken.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, packet_utils, tcp, udp

from ovsctl.openflow.packetin import reject

POD_MAC, GW_MAC = "0a:58:0a:f4:00:02", "0a:58:0a:f4:00:01"


def frame(l4, proto, payload=b""):
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=GW_MAC, src=POD_MAC))
    p.add_protocol(ipv4.ipv4(src="10.244.0.2", dst="10.96.0.12", proto=proto))
    p.add_protocol(l4)
    if payload:
        p.add_protocol(payload)
    p.serialize()
    return bytes(p.data)


def test_a_syn_gets_a_rst_ack_from_the_service_address():
    out = packet.Packet(
        reject(frame(tcp.tcp(src_port=40000, dst_port=80, seq=1000, bits=tcp.TCP_SYN), 6))
    )
    eth, ip, t = (
        out.get_protocol(ethernet.ethernet),
        out.get_protocol(ipv4.ipv4),
        out.get_protocol(tcp.tcp),
    )
    assert (eth.src, eth.dst) == (GW_MAC, POD_MAC)
    assert (ip.src, ip.dst) == ("10.96.0.12", "10.244.0.2")
    assert (t.src_port, t.dst_port, t.ack) == (80, 40000, 1001)
    assert t.bits == tcp.TCP_RST | tcp.TCP_ACK


def test_udp_gets_icmp_port_unreachable_quoting_the_datagram():
    data = frame(udp.udp(src_port=40000, dst_port=53), 17, b"query")
    out = packet.Packet(reject(data))
    ip, ic = out.get_protocol(ipv4.ipv4), out.get_protocol(icmp.icmp)
    assert (ip.src, ip.dst, ip.proto) == ("10.96.0.12", "10.244.0.2", 1)
    assert (ic.type, ic.code) == (3, 3)
    assert ic.data.data == data[14 : 14 + 20 + 8]  # the original IP header + 8 bytes


def test_a_rst_or_non_ip_is_never_answered():
    assert reject(frame(tcp.tcp(src_port=1, dst_port=80, bits=tcp.TCP_RST), 6)) is None
    arp_like = bytes(6) + bytes(6) + b"\x08\x06" + bytes(28)
    assert reject(arp_like) is None


# -- IPv6 ------------------------------------------------------------------------------------

CLIENT6, SVC6 = "fd00:10:244::2", "fd00:10:96::c"


def frame6(l4, nxt, payload=b"", dst=SVC6):
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=GW_MAC, src=POD_MAC, ethertype=0x86DD))
    p.add_protocol(ipv6.ipv6(src=CLIENT6, dst=dst, nxt=nxt))
    p.add_protocol(l4)
    if payload:
        p.add_protocol(payload)
    p.serialize()
    return bytes(p.data)


def _l4_checksum_ok(ip6: ipv6.ipv6, l4: bytes) -> bool:
    """The IPv6 pseudo-header checksum (RFC 8200 8.1) over the L4 bytes as sent sums to 0."""
    pseudo = (
        addrconv.ipv6.text_to_bin(ip6.src)
        + addrconv.ipv6.text_to_bin(ip6.dst)
        + struct.pack("!I3xB", len(l4), ip6.nxt)
    )
    return packet_utils.checksum(pseudo + l4) == 0


def test_an_ipv6_syn_gets_a_rst_ack_with_a_correct_checksum():
    syn = frame6(tcp.tcp(src_port=40000, dst_port=80, seq=7000, bits=tcp.TCP_SYN), 6)
    answer = reject(syn)
    out = packet.Packet(answer)
    eth, ip6, t = (
        out.get_protocol(ethernet.ethernet),
        out.get_protocol(ipv6.ipv6),
        out.get_protocol(tcp.tcp),
    )
    assert (eth.src, eth.dst, eth.ethertype) == (GW_MAC, POD_MAC, 0x86DD)
    assert (ip6.src, ip6.dst, ip6.nxt, ip6.hop_limit) == (SVC6, CLIENT6, 6, 64)
    assert (t.src_port, t.dst_port, t.ack) == (80, 40000, 7001)
    assert t.bits == tcp.TCP_RST | tcp.TCP_ACK
    assert ip6.payload_length == len(answer) - 14 - 40 == 20
    assert _l4_checksum_ok(ip6, answer[54:])
    assert not _l4_checksum_ok(ip6, answer[54:-1] + bytes([answer[-1] ^ 1])), "check can fail"


def test_an_ipv6_segment_with_data_is_acked_past_its_payload_even_when_truncated():
    seg = frame6(
        tcp.tcp(src_port=40000, dst_port=80, seq=100, bits=tcp.TCP_ACK | tcp.TCP_PSH), 6, b"x" * 300
    )
    for data in (seg, seg[:128]):  # the switch sends only the first 256 bytes (or fewer)
        t = packet.Packet(reject(data)).get_protocol(tcp.tcp)
        assert t.ack == 400


def test_ipv6_udp_gets_icmpv6_port_unreachable_quoting_the_datagram():
    data = frame6(udp.udp(src_port=40000, dst_port=53), 17, b"query")
    answer = reject(data)
    out = packet.Packet(answer)
    ip6, ic = out.get_protocol(ipv6.ipv6), out.get_protocol(icmpv6.icmpv6)
    assert (ip6.src, ip6.dst, ip6.nxt) == (SVC6, CLIENT6, 58)
    assert (ic.type_, ic.code) == (1, 4)  # destination unreachable, port unreachable
    # 4 unused bytes, then the whole invoking packet (it fits in 1280 bytes)
    assert ic.data == bytes(4) + data[14:]
    assert _l4_checksum_ok(ip6, answer[54:])
    # os-ken checks the checksum it parses too
    assert ic.csum == packet_utils.checksum_ip(
        ip6, len(answer) - 54, answer[54:56] + b"\0\0" + answer[58:]
    )


def test_ipv6_quotes_at_most_what_fits_in_the_minimum_mtu():
    data = frame6(udp.udp(src_port=40000, dst_port=53), 17, b"q" * 1400)
    answer = reject(data)
    assert len(answer) - 14 == 1280
    assert packet.Packet(answer).get_protocol(icmpv6.icmpv6).data == bytes(4) + data[14 : 14 + 1232]


def test_ipv6_multicast_rst_and_other_protocols_are_never_answered():
    assert reject(frame6(udp.udp(src_port=1, dst_port=53), 17, dst="ff02::1")) is None
    assert reject(frame6(tcp.tcp(src_port=1, dst_port=80, bits=tcp.TCP_RST), 6)) is None
    echo = icmpv6.icmpv6(type_=icmpv6.ICMPV6_ECHO_REQUEST, data=icmpv6.echo(id_=1, seq=1))
    assert reject(frame6(echo, 58)) is None
