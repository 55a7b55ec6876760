"""Attack and observation tools for tests/e2e/test_security_overlay.py, standard library only,
run inside a pod's (or node's) network namespace with `ip netns exec NS python3 seckit.py ...`.

    listen [--udp4 PORT] [--udp6 PORT] [--sniff IFACE]
        prints "ready", then one line per datagram: "udp4 SRC PAYLOAD" / "udp6 SRC PAYLOAD",
        and with --sniff one line "wire TOKEN" for every frame on IFACE that carries a marker
        (OVSCTLSEC-...), whatever the kernel then does with it (a tagged frame, a frame for
        an address it does not have).
    send-udp4 DST PORT PAYLOAD            a plain UDP datagram
    send-udp6 DST PORT PAYLOAD            a plain UDP datagram over IPv6
    vxlan4 NODE_IP DST_MAC SRC_MAC SRC_IP DST_IP DPORT PAYLOAD
        a VXLAN packet (VNI 0) to NODE_IP:4789 through an ordinary UDP socket, carrying an
        Ethernet/IPv4/UDP frame with any inner source address
    vxlan6 NODE_IP DST_MAC SRC_MAC SRC_IP6 DST_IP6 DPORT PAYLOAD      the same, inner IPv6
    frame IFACE DST_MAC SRC_MAC SRC_IP DST_IP DPORT PAYLOAD [--vid N]
        an Ethernet/IPv4/UDP frame written with an AF_PACKET socket, 802.1Q-tagged with --vid
    frame6 IFACE DST_MAC SRC_MAC SRC_IP6 DST_IP6 DPORT PAYLOAD
        the same, Ethernet/IPv6/UDP (any source address: a spoofed global or link-local one)
    na IFACE DST_MAC SRC_MAC SRC_IP6 DST_IP6 TARGET PAYLOAD
        a Neighbor Advertisement (Override, Solicited) saying TARGET is at SRC_MAC
    ra IFACE DST_MAC SRC_MAC SRC_IP6 DST_IP6 PREFIX PAYLOAD
        a Router Advertisement (lifetime 1800 s) announcing PREFIX/64, source link-layer SRC_MAC
    The ND messages carry PAYLOAD (the marker) in an extra option of an unassigned type, which
    receivers ignore; hop limit 255 as ND requires.
"""

import argparse
import re
import socket
import struct
import sys
import threading

VXLAN_PORT = 4789
MARKER = re.compile(rb"OVSCTLSEC-[A-Za-z0-9_.-]+")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def udp_ipv4(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """IPv4 + UDP, both checksums right."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    ulen = 8 + len(data)
    pseudo = s + d + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + data
    uc = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", uc) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0x1414, 0, 64, 17, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def udp_ipv6(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """IPv6 + UDP (its checksum is mandatory over IPv6)."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    ulen = 8 + len(data)
    pseudo = s + d + struct.pack("!I3xB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + data
    uc = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", uc) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + s + d + udp


def icmp6(src: str, dst: str, body: bytes, hlim: int = 255) -> bytes:
    """IPv6 + ICMPv6 (`body` from the type on, its checksum field zero)."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    pseudo = s + d + struct.pack("!I3xB", len(body), 58)
    c = _csum(pseudo + body)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    return struct.pack("!IHBB", 6 << 28, len(body), 58, hlim) + s + d + body


def _nd_option(kind: int, data: bytes) -> bytes:
    """An ND option: type, length in 8-octet units, data padded."""
    n = -(-(len(data) + 2) // 8)
    return struct.pack("!BB", kind, n) + data + b"\0" * (n * 8 - 2 - len(data))


def neighbor_advert(src: str, dst: str, target: str, mac: str, mark: bytes) -> bytes:
    body = struct.pack("!BBHI", 136, 0, 0, 0x60000000)  # Solicited | Override
    body += socket.inet_pton(socket.AF_INET6, target)
    body += _nd_option(2, _mac(mac)) + _nd_option(253, mark)  # target link-layer address
    return icmp6(src, dst, body)


def router_advert(src: str, dst: str, prefix: str, mac: str, mark: bytes) -> bytes:
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    pi = struct.pack("!BBIII", 64, 0xC0, 86400, 14400, 0)  # /64, on-link + autonomous
    pi += socket.inet_pton(socket.AF_INET6, prefix)
    body += _nd_option(1, _mac(mac)) + struct.pack("!BB", 3, 4) + pi + _nd_option(253, mark)
    return icmp6(src, dst, body)


def ethernet(dst: str, src: str, ethertype: int, payload: bytes, vid: int | None = None) -> bytes:
    tag = b"" if vid is None else struct.pack("!HH", 0x8100, vid & 0x0FFF)
    return _mac(dst) + _mac(src) + tag + struct.pack("!H", ethertype) + payload


def vxlan(frame: bytes, vni: int = 0) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def _send_vxlan(node_ip: str, frame: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(vxlan(frame), (node_ip, VXLAN_PORT))


def listen(args) -> None:
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def udp(fam: int, port: int, tag: str) -> socket.socket:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))

        def loop():
            while True:
                data, peer = s.recvfrom(4096)
                say(f"{tag} {peer[0]} {data.decode(errors='replace').strip()}")

        threading.Thread(target=loop, daemon=True).start()
        return s

    keep = []
    if args.udp4:
        keep.append(udp(socket.AF_INET, args.udp4, "udp4"))
    if args.udp6:
        keep.append(udp(socket.AF_INET6, args.udp6, "udp6"))
    if args.sniff:
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        raw.bind((args.sniff, 0))
        keep.append(raw)

        def sniff():
            while True:
                frame, addr = raw.recvfrom(65535)
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                for m in MARKER.findall(frame):
                    say(f"wire {m.decode()}")

        threading.Thread(target=sniff, daemon=True).start()
    say("ready")
    threading.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("listen")
    p.add_argument("--udp4", type=int)
    p.add_argument("--udp6", type=int)
    p.add_argument("--sniff")
    for name in ("send-udp4", "send-udp6"):
        p = sub.add_parser(name)
        p.add_argument("dst")
        p.add_argument("port", type=int)
        p.add_argument("payload")
    for name in ("vxlan4", "vxlan6"):
        p = sub.add_parser(name)
        for a in ("node_ip", "dst_mac", "src_mac", "src", "dst"):
            p.add_argument(a)
        p.add_argument("dport", type=int)
        p.add_argument("payload")
    p = sub.add_parser("frame6")
    for a in ("iface", "dst_mac", "src_mac", "src", "dst"):
        p.add_argument(a)
    p.add_argument("dport", type=int)
    p.add_argument("payload")
    for name, last in (("na", "target"), ("ra", "prefix")):
        p = sub.add_parser(name)
        for a in ("iface", "dst_mac", "src_mac", "src", "dst", last, "payload"):
            p.add_argument(a)
    p = sub.add_parser("frame")
    for a in ("iface", "dst_mac", "src_mac", "src", "dst"):
        p.add_argument(a)
    p.add_argument("dport", type=int)
    p.add_argument("payload")
    p.add_argument("--vid", type=int)
    args = ap.parse_args()

    if args.cmd == "listen":
        listen(args)
    elif args.cmd in ("send-udp4", "send-udp6"):
        fam = socket.AF_INET if args.cmd == "send-udp4" else socket.AF_INET6
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.sendto(args.payload.encode(), (args.dst, args.port))
    elif args.cmd == "vxlan4":
        ip = udp_ipv4(args.src, args.dst, 40000, args.dport, args.payload.encode())
        _send_vxlan(args.node_ip, ethernet(args.dst_mac, args.src_mac, 0x0800, ip))
    elif args.cmd == "vxlan6":
        ip = udp_ipv6(args.src, args.dst, 40000, args.dport, args.payload.encode())
        _send_vxlan(args.node_ip, ethernet(args.dst_mac, args.src_mac, 0x86DD, ip))
    elif args.cmd in ("frame6", "na", "ra"):
        mark = args.payload.encode()
        if args.cmd == "frame6":
            ip = udp_ipv6(args.src, args.dst, 40000, args.dport, mark)
        elif args.cmd == "na":
            ip = neighbor_advert(args.src, args.dst, args.target, args.src_mac, mark)
        else:
            ip = router_advert(args.src, args.dst, args.prefix, args.src_mac, mark)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((args.iface, 0))
            s.send(ethernet(args.dst_mac, args.src_mac, 0x86DD, ip))
    elif args.cmd == "frame":
        ip = udp_ipv4(args.src, args.dst, 40000, args.dport, args.payload.encode())
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((args.iface, 0))
            s.send(ethernet(args.dst_mac, args.src_mac, 0x0800, ip, args.vid))


if __name__ == "__main__":
    main()
