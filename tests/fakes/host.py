"""In-memory host adapters (Antrea's cniserver split): the agent's CNI code and pod store reach
the host through an interface configurator and an OVS port manager (ovsctl/agent/host/
adapters.py); these fakes stand in for them, plus a controller that records what is staged
and pushed, so the agent's logic is unit-tested without root.

Each fake takes `fail`: a set of operation names that raise (a test makes each step fail in
turn)."""

from __future__ import annotations

import hashlib
import threading

from flows.model import NodeNet
from ovsctl.agent.host.netlink import NetlinkFailure
from ovsctl.agent.host.ovsdb import OVSDBError
from ovsctl.openflow.controller import SyncError
from ovsctl.openflow.sync import FlowSync


class FakeInterfaces:
    """Veth pairs by host-side name: {host_if: {"netns", "ifname", "mac", "ip", "prefixlen"}}."""

    def __init__(self, fail=()):
        self.links: dict[str, dict] = {}
        self.fail = set(fail)
        self.calls: list[tuple] = []

    def _check(self, op: str) -> None:
        self.calls.append((op,))
        if op in self.fail:
            raise NetlinkFailure(f"fake {op} failed")

    @staticmethod
    def host_ifname(container_id: str, ifname: str) -> str:
        return "ovs" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:11]

    def create(
        self, host_if, netns, ifname, *, mac, ip, prefixlen, gateway, mtu, tx_off=False, more=(),
        during=None,
    ):  # fmt: skip
        self._check("create")
        if during is not None:  # the host end is up (as netlink's): the caller plugs it now
            self.links[host_if] = {"netns": netns, "ifname": ifname, "mac": mac, "ip": ip}
            try:
                during()
                self._check("configure")  # the pod end, set up meanwhile, failed
            except BaseException:
                self.links.pop(host_if, None)  # the pair goes (as netlink's create)
                raise
        self.links[host_if] = {
            "netns": netns, "ifname": ifname, "mac": mac, "ip": ip, "prefixlen": prefixlen,
            "more": [(a, p) for a, p, _gw in more],
            "gateways6": [gw for a, _p, gw in ((ip, prefixlen, gateway), *more) if ":" in a],
        }  # fmt: skip
        if more:
            return "02:00:00:00:00:01", (True,) * (1 + len(more))
        return "02:00:00:00:00:01", True

    def delete(self, name: str) -> bool:
        self._check("delete")
        return self.links.pop(name, None) is not None

    def exists(self, name: str) -> bool:
        return name in self.links

    def mac(self, name: str) -> str | None:
        return "02:00:00:00:00:01" if name in self.links else None

    def pod_interface(self, netns: str, ifname: str) -> dict | None:
        for link in self.links.values():
            if link["netns"] == netns and link["ifname"] == ifname:
                addrs = [(link["ip"], link["prefixlen"]), *link.get("more", [])]
                return {
                    "addresses": [f"{a}/{p}" for a, p in addrs],
                    "mac": link["mac"],
                    "gateways6": list(link.get("gateways6", [])),
                }
        return None

    def orphans(self, known: set[str]) -> list[str]:
        return [n for n in self.links if n not in known]


class FakePorts:
    """One bridge's ports: {name: {"name", "ofport", "external_ids", "error"}}."""

    def __init__(self, fail=()):
        self.by_name: dict[str, dict] = {}
        self.fail = set(fail)
        self._next = 10

    def add(self, name: str, external_ids: dict, wait_ofport: float) -> int:
        if "add" in self.fail:
            raise OVSDBError(f"fake add_port {name} failed")
        self._next += 1
        self.by_name[name] = {
            "name": name, "ofport": self._next, "external_ids": dict(external_ids), "error": None,
        }  # fmt: skip
        return self._next

    def delete(self, name: str) -> bool:
        if "delete" in self.fail:
            raise OVSDBError(f"fake del_port {name} failed")
        return self.by_name.pop(name, None) is not None

    def port(self, name: str) -> dict | None:
        return self.by_name.get(name)

    def ports(self) -> list[dict]:
        return list(self.by_name.values())


class FakeController:
    """Controller.stage/push/update over a real FlowSync; records every staged owner dict
    and every push; a push "installs" what it sends (CHECK reads sync.installed)."""

    def __init__(self, sync: FlowSync | None = None, fail=()):
        self.sync = sync or FlowSync()
        self.fail = set(fail)
        self.staged: list[dict] = []
        self.pushed: list[set] = []
        self.ready = threading.Event()
        self.ready.set()

    def stage(self, owners: dict) -> set:
        self.staged.append(dict(owners))
        keys: set = set()
        for owner, flows in owners.items():
            keys |= self.sync.set_owner(owner, flows)
        return keys

    def push(self, keys: set, timeout=None, wait: bool = True) -> int:
        if "push" in self.fail:
            raise SyncError("fake bundle refused")
        self.pushed.append(set(keys))
        plan = self.sync.plan(keys)
        self.sync.applied(plan)
        return len(plan.add) + len(plan.delete)

    def apply(self, owners: dict, timeout=None, wait: bool = True) -> int:
        return self.push(self.stage(owners), timeout, wait)


class FakeNodeHost:
    """What the CNI code reads of node.NodeHost: the NodeNet."""

    def __init__(
        self, pod_cidr="10.244.0.0/24", gw_ofport: int = 2, node_ip: str = "", node_ips=()
    ):
        """`pod_cidr`: one CIDR, or one per family (dual-stack)."""
        cidrs = (pod_cidr,) if isinstance(pod_cidr, str) else tuple(pod_cidr)
        ips = tuple(node_ips) or ((node_ip,) if node_ip else ())
        self.net = NodeNet.for_cidrs(cidrs, gw_ofport, ips)
        self.overlay = None
