"""The agent's CNI socket takes a burst of connections (kubelet starting many pods at once)
while it is busy: a shim's connect has a timeout, so a full listen backlog fails it at once
with EAGAIN (CNI code 11) rather than waiting."""

from __future__ import annotations

import socket

from ovsctl.agent.cniserver import CNIServer


def test_a_burst_of_connections_waits_in_the_backlog(tmp_path):
    server = CNIServer(str(tmp_path / "agent.sock"), lambda req: None)  # listening, not accepting
    clients = []
    try:
        for _ in range(200):  # the accept thread is busy: every connection waits in the queue
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(c)
            c.settimeout(5)  # as the shim does: a full backlog would fail connect() with EAGAIN
            c.connect(server.path)
        assert len(clients) == 200
    finally:
        for c in clients:
            c.close()
        server.server_close()
