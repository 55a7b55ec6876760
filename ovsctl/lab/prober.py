"""Runs inside a source pod's network namespace (standard library only): reads a JSON list of
targets on stdin, [{"key": ..., "ip": ..., "port": N, "proto": "TCP"|"UDP"}] (IPv4 or IPv6
addresses), probes them all
in parallel and prints {"key": true/false, ...}. TCP: the connection is accepted; UDP: the
responder's echo arrives. A probe that gets no answer within the timeout is false.

    python3 prober.py --timeout 2 < targets.json
"""

import argparse
import json
import socket
import sys
import threading
import time


def probe(t: dict, timeout: float) -> bool:
    try:
        if t["proto"].upper() == "UDP":
            # UDP has no retransmission of its own: resend every 0.25 s until the deadline.
            deadline = time.monotonic() + timeout
            fam = socket.AF_INET6 if ":" in t["ip"] else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    s.sendto(b"probe", (t["ip"], t["port"]))
                    s.settimeout(min(0.25, left))
                    try:
                        data, _ = s.recvfrom(2048)
                        return bool(data)
                    except TimeoutError:
                        continue
        with socket.create_connection((t["ip"], t["port"]), timeout=timeout) as s:
            s.settimeout(timeout)
            return bool(s.recv(64))
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    targets = json.load(sys.stdin)
    out = {}

    def run(t):
        out[t["key"]] = probe(t, args.timeout)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
