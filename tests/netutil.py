"""Tiny traffic tools run inside pod namespaces by the tests (stdlib only).

python3 netutil.py serve PORT           accept TCP connections; reply with the peer address
                                        and the number of bytes received, until killed
python3 netutil.py send HOST PORT N     send N bytes, print the server's reply (exit 1 on error)
"""

import socket
import sys


def serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    print("listening", flush=True)
    while True:
        conn, peer = srv.accept()
        with conn:
            conn.settimeout(20)
            total = 0
            try:
                while True:
                    b = conn.recv(1 << 16)
                    if not b:
                        break
                    total += len(b)
                conn.sendall(f"{peer[0]} {total}\n".encode())
            except OSError:
                pass


def send(host: str, port: int, n: int) -> int:
    with socket.create_connection((host, port), timeout=5) as c:
        c.settimeout(20)
        chunk = b"x" * 65536
        left = n
        while left > 0:
            c.sendall(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            b = c.recv(1024)
            if not b:
                break
            reply += b
    print(reply.decode().strip())
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
