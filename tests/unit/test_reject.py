"""The answers the agent sends for a Service without endpoints (pure: bytes in, bytes out)."""

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp

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
