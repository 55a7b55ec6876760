"""Answers for packets the pipeline hands to the agent: a TCP RST or an ICMP port unreachable
for a connection to a Service port without endpoints (what kube-proxy's REJECT rule does)."""

from __future__ import annotations

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp


def reject(data: bytes) -> bytes | None:
    """The frame to send back to the sender of `data`, or None if there is nothing to answer."""
    pkt = packet.Packet(data)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=eth.ethertype))
    t = pkt.get_protocol(tcp.tcp)
    if t is not None:
        if t.bits & tcp.TCP_RST:
            return None
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=ip.proto, ttl=64))
        seq_len = len(pkt.protocols[-1]) if isinstance(pkt.protocols[-1], bytes) else 0
        syn_fin = 1 if t.bits & (tcp.TCP_SYN | tcp.TCP_FIN) else 0
        out.add_protocol(
            tcp.tcp(
                src_port=t.dst_port,
                dst_port=t.src_port,
                seq=0,
                ack=(t.seq + seq_len + syn_fin) & 0xFFFFFFFF,
                bits=tcp.TCP_RST | tcp.TCP_ACK,
                window_size=0,
            )
        )
    elif pkt.get_protocol(udp.udp) is not None:
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1, ttl=64))
        original = data[14 : 14 + ip.header_length * 4 + 8]
        out.add_protocol(
            icmp.icmp(
                type_=icmp.ICMP_DEST_UNREACH,
                code=icmp.ICMP_PORT_UNREACH_CODE,
                data=icmp.dest_unreach(data=original),
            )
        )
    else:
        return None
    out.serialize()
    return bytes(out.data)
