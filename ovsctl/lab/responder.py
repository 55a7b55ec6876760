"""A pod's stand-in application in the lab (standard library only, started inside the pod's
network namespace): on each TCP port it accepts connections and answers with a line
"PEER_IP OWN_IP"; on each UDP port it answers each datagram with the same line. Tests use the answer to check that
source IPs arrive unchanged.

    python3 responder.py --tcp 80 --tcp 8080 --udp 53
"""

import argparse
import socket
import threading


def tcp(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
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
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer_ip, 9))
        return s.getsockname()[0]


def udp(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _data, peer = s.recvfrom(2048)
        s.sendto(f"{peer[0]} {server_ip(peer[0])}\n".encode(), peer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--tag", help="ignored: lets the lab find the processes it started")
    args = ap.parse_args()
    threads = [threading.Thread(target=tcp, args=(p,), daemon=True) for p in args.tcp]
    threads += [threading.Thread(target=udp, args=(p,), daemon=True) for p in args.udp]
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
