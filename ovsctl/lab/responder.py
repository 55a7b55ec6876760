"""A pod's stand-in application in the lab (standard library only, started inside the pod's
network namespace): on each TCP port it accepts connections and answers with a line
"PEER_IP OWN_IP"; on each UDP port it answers each datagram with the same line. Tests use the
answer to check that source IPs arrive unchanged. It listens on IPv4 and, where the namespace
has IPv6, on IPv6 (a socket per family, so an IPv4 peer reads as an IPv4 address).

    python3 responder.py --tcp 80 --tcp 8080 --udp 53
"""

import argparse
import socket
import threading


def _listener(kind: int, family: int, port: int) -> socket.socket | None:
    """A socket of `family` bound to every address on `port`; None where the family is
    unavailable (IPv6 disabled in the namespace)."""
    try:
        s = socket.socket(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::", port))
        else:
            s.bind(("0.0.0.0", port))
    except OSError:
        if family == socket.AF_INET:
            raise
        return None
    return s


def tcp(s: socket.socket) -> None:
    s.listen(128)
    while True:
        conn, peer = s.accept()
        threading.Thread(target=_serve, args=(conn, peer), daemon=True).start()


def _serve(conn: socket.socket, peer) -> None:
    with conn:
        try:
            conn.settimeout(30)
            conn.sendall(f"{peer[0]} {conn.getsockname()[0]}\n".encode())
            # drain whatever the client sends (bulk transfer tests), then report the count
            total = 0
            while True:
                b = conn.recv(1 << 16)
                if not b:
                    break
                total += len(b)
            conn.sendall(f"{total}\n".encode())
        except OSError:
            pass


def server_ip(peer_ip: str) -> str:
    """The address this pod answers from (the one a reply to `peer_ip` leaves with)."""
    fam = socket.AF_INET6 if ":" in peer_ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect((peer_ip, 9))
        return s.getsockname()[0]


def udp(s: socket.socket) -> None:
    while True:
        _data, peer = s.recvfrom(2048)
        s.sendto(f"{peer[0]} {server_ip(peer[0])}\n".encode(), peer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--tag", help="ignored: lets the lab find the processes it started")
    args = ap.parse_args()
    threads = []
    for fn, kind, ports in (
        (tcp, socket.SOCK_STREAM, args.tcp),
        (udp, socket.SOCK_DGRAM, args.udp),
    ):
        for p in ports:
            for family in (socket.AF_INET, socket.AF_INET6):
                s = _listener(kind, family, p)
                if s is not None:
                    threads.append(threading.Thread(target=fn, args=(s,), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
