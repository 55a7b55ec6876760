"""Packets the pipeline hands to the agent, routed by their flow's cookie feature: audit
copies of NetworkPolicy and ClusterNetworkPolicy flows go to the audit log; the rest get an answer — a TCP RST or an
ICMP / ICMPv6 port unreachable for a connection to a Service port without endpoints (what
kube-proxy's REJECT rule does)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from os_ken.lib.packet import ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp

from flows import cookie as ck

# RFC 4443 2.4(c): an ICMPv6 error carries as much of the invoking packet as fits in the minimum
# IPv6 MTU (1280) with its own IPv6 (40) and ICMPv6 (4 + 4 unused) headers
ICMP6_QUOTE = 1280 - 40 - 8


def reject(data: bytes) -> bytes | None:
    """The frame to send back to the sender of `data`, or None if there is nothing to answer:
    a TCP RST|ACK for TCP (never for a RST), an ICMP port unreachable (type 3 code 3) quoting
    the IPv4 header and 8 bytes for UDP over IPv4, an ICMPv6 destination unreachable,
    port unreachable (type 1 code 4) quoting what it has of the packet for UDP over IPv6;
    from the address the client sent to, so its stack matches it to the connection."""
    pkt = packet.Packet(data)
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        return None
    ip = pkt.get_protocol(ipv4.ipv4)
    ip6 = pkt.get_protocol(ipv6.ipv6) if ip is None else None
    if ip is None and ip6 is None:
        return None
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=eth.ethertype))
    t = pkt.get_protocol(tcp.tcp)
    if t is not None:
        if t.bits & tcp.TCP_RST:
            return None
        if ip is not None:
            out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=ip.proto, ttl=64))
            seq_len = len(pkt.protocols[-1]) if isinstance(pkt.protocols[-1], bytes) else 0
        else:
            out.add_protocol(ipv6.ipv6(src=ip6.dst, dst=ip6.src, nxt=6, hop_limit=64))
            # from the IPv6 header's length: the packet-in may carry only the headers
            seq_len = max(0, ip6.payload_length - t.offset * 4)
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
    elif ip6 is not None:
        if pkt.get_protocol(udp.udp) is None or ip6.dst.lower().startswith("ff"):
            return None  # UDP only (as for IPv4); never an error for a multicast packet
        out.add_protocol(ipv6.ipv6(src=ip6.dst, dst=ip6.src, nxt=58, hop_limit=64))
        out.add_protocol(
            icmpv6.icmpv6(
                type_=icmpv6.ICMPV6_DST_UNREACH,
                code=4,  # port unreachable
                data=bytes(4) + data[14 : 14 + ICMP6_QUOTE],  # 4 unused bytes, the quote
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


# flows whose packet-ins are audit copies: NetworkPolicy's and ClusterNetworkPolicy's
AUDIT_FEATURES = frozenset(ck.FEATURES[f] << ck.FEATURE_SHIFT for f in ("policy", "cnp"))


class PacketIns:
    """Routes packet-ins by their flow's cookie feature: NetworkPolicy and
    ClusterNetworkPolicy flows (features "policy", "cnp") send audit copies, to `on_audit(cookie, table_id, data)`; everything else asks
    for a reject answer (Service without endpoints), sent at most `rate` a second so a flood
    cannot load the agent."""

    def __init__(self, rate: float = 100.0):
        self.counts: collections.Counter = collections.Counter()  # by outcome
        self.rate = rate
        self.on_audit: Callable[[int, int, bytes], object] | None = None
        self._tokens = rate
        self._tokens_at = time.monotonic()

    def route(self, msg) -> None:
        if self.on_audit is not None and (msg.cookie & ck.FEATURE_MASK) in AUDIT_FEATURES:
            self.counts["audit"] += 1
            self.on_audit(msg.cookie, msg.table_id, bytes(msg.data))
            return
        self._reject(msg)

    def _reject(self, msg) -> None:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        if self._tokens < 1:
            self.counts["rate_limited"] += 1
            return
        self._tokens -= 1
        frame = reject(msg.data)
        in_port = msg.match.get("in_port")
        if frame is None or in_port is None:
            self.counts["unanswerable"] += 1
            return
        self.counts["rejected"] += 1
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(
            parser.OFPPacketOut(
                dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=ofp.OFPP_CONTROLLER,
                actions=[parser.OFPActionOutput(in_port, 0)],
                data=frame,
            )
        )
