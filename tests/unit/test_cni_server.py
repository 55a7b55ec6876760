"""The agent's CNI socket takes a burst of connections (kubelet starting many pods at once)
while it is busy: a shim's connect has a timeout, so a full listen backlog fails it at once
with EAGAIN (CNI code 11) rather than waiting."""

from __future__ import annotations

import socket

from ovsctl.agent.cniserver import CNIServer

# socketserver's own backlog: a Unix socket then queues 6 connections (backlog + 1)
OLD_BACKLOG = 5


def _burst() -> int:
    """200 connections, or as many as the kernel lets any listener queue (net.core.somaxconn
    caps every backlog; a Unix socket queues one more than its backlog)."""
    with open("/proc/sys/net/core/somaxconn") as fh:
        return min(200, int(fh.read()) - 1)


def test_a_burst_of_connections_waits_in_the_backlog(tmp_path):
    n = _burst()
    assert n > OLD_BACKLOG + 1, (
        f"net.core.somaxconn allows {n + 1}: raise it to tell the backlogs apart"
    )
    server = CNIServer(str(tmp_path / "agent.sock"), lambda req: None)  # listening, not accepting
    clients = []
    try:
        for _ in range(n):  # the accept thread is busy: every connection waits in the queue
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(c)
            c.settimeout(5)  # as the shim does: a full backlog would fail connect() with EAGAIN
            c.connect(server.path)
        assert len(clients) == n
    finally:
        for c in clients:
            c.close()
        server.server_close()
