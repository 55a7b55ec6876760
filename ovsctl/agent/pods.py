"""The pods plugged into br-int: attachments, per-key locks, the ADDs in flight, and the
restore after a restart (attachments read back from OVSDB, IPAM and host veths reconciled)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from flows import pipeline
from flows.model import NodeNet, PodPort
from ovsctl.agent import LOGGER
from ovsctl.agent.host.adapters import HOST_IF_RE
from ovsctl.agent.ipam import IPAM, IPAMError

log = logging.getLogger(LOGGER)

OWNER_KEY = "ovsctl-owner"  # external_ids marker on every port the agent made
__all__ = ["HOST_IF_RE", "OWNER_KEY", "Attachment", "PodStore", "pod_ref", "restore_pods"]


def pod_ref(namespace: str, name: str, container_id: str = "") -> str:
    """How logs, status and flows name a pod: NS/NAME; a runtime that sends no namespace
    (podman) gives NAME alone; with no name either, the container ID."""
    if namespace and name:
        return f"{namespace}/{name}"
    return name or (f"container {container_id[:12]}" if container_id else "-")


@dataclass
class Attachment:
    """One pod interface plugged into br-int (what OVSDB external_ids record for it)."""

    container_id: str
    ifname: str
    namespace: str
    name: str
    uid: str
    netns: str
    host_if: str
    ip: str
    mac: str
    ofport: int = 0
    host_mac: str = ""
    network: str = ""  # the CNI network (config "name") it was made for; "" = not recorded
    default_route: bool = True  # whether ADD gave the pod its default route through this one
    # every address, one per family, IPv4 first (default: (ip,)); `ip` is the first
    ips: tuple[str, ...] = ()
    # dual-stack: whether ADD gave the pod its IPv6 default route (::/0) through this one
    default_route6: bool = True

    def __post_init__(self) -> None:
        if not self.ips:
            self.ips = (self.ip,) if self.ip else ()
        self.ips = tuple(self.ips)

    @property
    def key(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    @property
    def ref(self) -> str:
        return pod_ref(self.namespace, self.name, self.container_id)

    def external_ids(self) -> dict:
        return {
            OWNER_KEY: "pod",
            "container-id": self.container_id,
            "ifname": self.ifname,
            "pod-namespace": self.namespace,
            "pod-name": self.name,
            "pod-uid": self.uid,
            "netns": self.netns,
            "ip": self.ip,
            "attached-mac": self.mac,
            "cni-network": self.network,
            "default-route": "true" if self.default_route else "false",
            # dual-stack only (an IPv4-only port's record is as it always was)
            **(
                {
                    "ips": ",".join(self.ips),
                    "default-route6": "true" if self.default_route6 else "false",
                }
                if len(self.ips) > 1
                else {}
            ),
        }

    @classmethod
    def from_port(cls, port: dict) -> Attachment | None:
        ext = port["external_ids"]
        if ext.get(OWNER_KEY) != "pod":
            return None
        return cls(
            ext.get("container-id", ""),
            ext.get("ifname", ""),
            ext.get("pod-namespace", ""),
            ext.get("pod-name", ""),
            ext.get("pod-uid", ""),
            ext.get("netns", ""),
            port["name"],
            ext.get("ip", ""),
            ext.get("attached-mac", ""),
            port["ofport"],
            network=ext.get("cni-network", ""),
            default_route=ext.get("default-route", "true") != "false",
            ips=tuple(a for a in ext.get("ips", "").split(",") if a),
            default_route6=ext.get("default-route6", "true") != "false",
        )

    def pod_port(self) -> PodPort:
        return PodPort(
            self.key, self.ofport, self.ip, self.mac, self.namespace, self.name, self.ips
        )


class PodStore:
    """Attachments by key ("container-id/ifname"), one lock per key (never removed: see DEL),
    and the ADDs under way (GC must not free them)."""

    def __init__(self):
        self.pods: dict[str, Attachment] = {}
        self.lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.inflight: set[tuple[str, str]] = set()

    def lock_for(self, key: str) -> threading.Lock:
        with self.lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def put(self, att: Attachment) -> None:
        with self.lock:
            self.pods[att.key] = att

    def forget(self, key: str) -> None:
        with self.lock:
            self.pods.pop(key, None)

    def begin(self, cid: str, ifname: str) -> None:
        with self.lock:
            self.inflight.add((cid, ifname))

    def end(self, cid: str, ifname: str) -> None:
        with self.lock:
            self.inflight.discard((cid, ifname))

    def in_flight(self) -> set[tuple[str, str]]:
        with self.lock:
            return set(self.inflight)


def restore_pods(store: PodStore, ports, ifaces, ipam: IPAM, sync, node: NodeNet) -> None:
    """Rebuild attachments from OVSDB; drop what a crash left half-made."""
    for port in ports.ports():
        att = Attachment.from_port(port)
        if att is None:
            continue
        att.host_mac = ifaces.mac(att.host_if) or ""
        store.pods[att.key] = att
        if att.ofport > 0:
            sync.set_owner(
                pipeline.pod_owner(att.pod_port()), pipeline.pod_flows(node, att.pod_port())
            )
        else:
            log.warning(
                "pod %s (%s): its interface is gone (ofport %s); kept until DEL/GC",
                att.ref,
                att.key,
                att.ofport,
            )
    for att in store.pods.values():  # a live port keeps its address even if IPAM lost it
        if att.ip and ipam.get(att.container_id, att.ifname) is None:
            ips = ", ".join(att.ips)
            try:
                ipam.adopt(
                    list(att.ips),
                    att.container_id,
                    att.ifname,
                    {"namespace": att.namespace, "name": att.name},
                )
                log.warning("IPAM had no record of %s for %s; re-reserved it", ips, att.key)
            except IPAMError as e:
                log.error("cannot re-reserve %s for %s: %s", ips, att.key, e)
    known_ips = {ip for a in store.pods.values() for ip in a.ips}
    known_ifs = {a.host_if for a in store.pods.values()}
    for alloc in ipam.allocations():
        if known_ips.isdisjoint(alloc.ips):
            log.info(
                "releasing %s of %s/%s: no port was ever plugged (interrupted ADD)",
                ", ".join(alloc.ips),
                alloc.container_id,
                alloc.ifname,
            )
            ipam.release(alloc.container_id, alloc.ifname)
    for name in ifaces.orphans(known_ifs):
        log.info("deleting orphan veth %s (interrupted ADD)", name)
        ifaces.delete(name)
    log.info("restored %d pod attachments from OVSDB", len(store.pods))
