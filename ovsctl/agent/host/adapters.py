"""The small host interfaces the CNI code and the pod store reach the host through (Antrea's
cniserver split): an interface configurator (veth pairs) and an OVS port manager. The agent's
composition root passes these in; unit tests pass in-memory fakes (tests/fakes/host.py)."""

from __future__ import annotations

import re
import socket

from ovsctl.agent.host import netlink
from ovsctl.agent.host.ovsdb import OVSDB

HOST_IF_RE = re.compile(r"^ovs[0-9a-f]{11}$")


class Interfaces:
    """Pod interfaces on this host: the veth pair, its pod side configured in the netns."""

    @staticmethod
    def host_ifname(container_id: str, ifname: str) -> str:
        return netlink.host_ifname(container_id, ifname)

    def create(self, host_if: str, netns: str, ifname: str, **kw) -> tuple[str, bool]:
        """Returns the host side's MAC and whether the pod got its default route."""
        return netlink.create_pod_interface(host_if, netns, ifname, **kw)

    def delete(self, name: str) -> bool:
        return netlink.delete_link(name)

    def exists(self, name: str) -> bool:
        return netlink.link_exists(name)

    def mac(self, name: str) -> str | None:
        return netlink.link_mac(name)

    def pod_interface(self, netns: str, ifname: str) -> dict | None:
        return netlink.pod_interface(netns, ifname)

    def orphans(self, known: set[str]) -> list[str]:
        """Host veths named like ours that no attachment knows."""
        # the names alone: a netlink dump decodes every attribute of every link (70 ms at
        # the agent's start with 100 pods)
        names = [name for _, name in socket.if_nameindex()]
        return [n for n in names if n and HOST_IF_RE.match(n) and n not in known]


class Ports:
    """The ports of one bridge in OVSDB."""

    def __init__(self, ovsdb: OVSDB, bridge: str):
        self.ovsdb, self.bridge = ovsdb, bridge

    def add(self, name: str, external_ids: dict, wait_ofport: float) -> int:
        return self.ovsdb.add_port(
            self.bridge, name, external_ids=external_ids, wait_ofport=wait_ofport
        )

    def delete(self, name: str) -> bool:
        return self.ovsdb.del_port(self.bridge, name)

    def port(self, name: str) -> dict | None:
        return self.ovsdb.port(self.bridge, name)

    def ports(self) -> list[dict]:
        return self.ovsdb.ports(self.bridge)
