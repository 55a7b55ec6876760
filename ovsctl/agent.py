"""The node agent: owns br-int, serves CNI requests, keeps the flows in sync.

Start-up order matters for "no window without flows": the pods already plugged into br-int are
read back from OVSDB first, so the first round the controller installs is complete.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass

import netaddr

from flows import pipeline
from flows.model import NodeNet, PodPort, mac_from_ip
from ovsctl import netlink
from ovsctl.cniserver import (
    ERR_CHECK_FAILED,
    ERR_INTERNAL,
    ERR_IPAM_EXHAUSTED,
    CNIError,
    CNIServer,
)
from ovsctl.config import AgentConfig
from ovsctl.flowsync import FlowSync
from ovsctl.ipam import IPAM, IPAMError, IPAMExhausted
from ovsctl.openflow import Controller, NotConnected, SyncError
from ovsctl.ovsdb import OVSDB, OVSDBError

log = logging.getLogger(__name__)

OWNER_KEY = "ovsctl-owner"  # external_ids marker on every port the agent made
HOST_IF_RE = re.compile(r"^ovs[0-9a-f]{11}$")


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

    @property
    def key(self) -> str:
        return f"{self.container_id}/{self.ifname}"

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
        )

    def pod_port(self) -> PodPort:
        return PodPort(self.key, self.ofport, self.ip, self.mac, self.namespace, self.name)


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        net = netaddr.IPNetwork(cfg.pod_cidr)
        self.prefixlen = net.prefixlen
        self.node = NodeNet.for_cidr(cfg.pod_cidr, cfg.gateway_ofport)
        self.sync = FlowSync()
        self.ipam = IPAM(cfg.pod_cidr, os.path.join(cfg.state_dir, "ipam"))
        self.pods: dict[str, Attachment] = {}
        self._pods_lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.ovsdb: OVSDB | None = None
        self.controller: Controller | None = None
        self.server: CNIServer | None = None
        self.started = time.time()

    # -- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        log.info(
            "agent for node %s: pod CIDR %s, bridge %s (%s datapath)",
            cfg.node_name,
            cfg.pod_cidr,
            cfg.bridge,
            cfg.datapath_type,
        )
        self.ovsdb = OVSDB(cfg.ovsdb, timeout=cfg.cni_timeout)
        self.ovsdb.ensure_bridge(
            cfg.bridge,
            datapath_type=cfg.datapath_type,
            controller=f"tcp:{cfg.of_listen_host}:{cfg.of_listen_port}",
            external_ids={"ovsctl-node": cfg.node_name},
        )
        gw_ofport = self.ovsdb.add_port(
            cfg.bridge,
            cfg.gateway_name,
            type="internal",
            ofport_request=cfg.gateway_ofport,
            external_ids={OWNER_KEY: "gateway"},
        )
        if gw_ofport != cfg.gateway_ofport:
            log.warning(
                "gateway got ofport %d, not the requested %d", gw_ofport, cfg.gateway_ofport
            )
            self.node = NodeNet.for_cidr(cfg.pod_cidr, gw_ofport)
        netlink.setup_gateway(
            cfg.gateway_name,
            self.node.gw_ip,
            self.prefixlen,
            self.node.gw_mac,
            cfg.mtu,
            tx_off=cfg.datapath_type == "netdev",
        )
        log.info(
            "gateway %s: %s/%d (%s), ofport %d",
            cfg.gateway_name,
            self.node.gw_ip,
            self.prefixlen,
            self.node.gw_mac,
            self.node.gw_ofport,
        )
        self.sync.set_owner(pipeline.pipeline_owner(), pipeline.node_flows(self.node))
        self._restore_pods()
        self.controller = Controller(
            self.sync,
            cfg.state_dir,
            listen_host=cfg.of_listen_host,
            listen_port=cfg.of_listen_port,
            timeout=cfg.cni_timeout,
            on_synced=self._on_synced,
        )
        self.controller.start()
        self.server = CNIServer(cfg.cni_socket, self.dispatch)
        self.server.start()

    def _on_synced(self, seconds: float, count: int) -> None:
        if self.ovsdb is not None and self.controller.last_sync.get("kind") == "full":
            self.ovsdb.set_flow_restore_wait(False)

    def _restore_pods(self) -> None:
        """Rebuild attachments from OVSDB; drop what a crash left half-made."""
        ports = self.ovsdb.ports(self.cfg.bridge)
        for port in ports:
            att = Attachment.from_port(port)
            if att is None:
                continue
            att.host_mac = netlink.link_mac(att.host_if) or ""
            self.pods[att.key] = att
            if att.ofport > 0:
                self.sync.set_owner(
                    pipeline.pod_owner(att.pod_port()),
                    pipeline.pod_flows(self.node, att.pod_port()),
                )
            else:
                log.warning(
                    "pod %s/%s (%s): its interface is gone (ofport %s); kept until DEL/GC",
                    att.namespace,
                    att.name,
                    att.key,
                    att.ofport,
                )
        known_ips = {a.ip for a in self.pods.values()}
        known_ifs = {a.host_if for a in self.pods.values()}
        for alloc in self.ipam.allocations():
            if alloc.ip not in known_ips:
                log.info(
                    "releasing %s of %s/%s: no port was ever plugged (interrupted ADD)",
                    alloc.ip,
                    alloc.container_id,
                    alloc.ifname,
                )
                self.ipam.release(alloc.container_id, alloc.ifname)
        for name in self._orphan_veths(known_ifs):
            log.info("deleting orphan veth %s (interrupted ADD)", name)
            netlink.delete_link(name)
        log.info("restored %d pod attachments from OVSDB", len(self.pods))

    @staticmethod
    def _orphan_veths(known: set[str]) -> list[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        return [n for n in names if n and HOST_IF_RE.match(n) and n not in known]

    def stop(self) -> None:
        if self.server:
            self.server.stop()
        if self.ovsdb:
            self.ovsdb.close()

    # -- CNI ------------------------------------------------------------------------------------

    def dispatch(self, req: dict):
        cmd = req.get("command")
        handler = {
            "ADD": self.cni_add,
            "DEL": self.cni_del,
            "CHECK": self.cni_check,
            "STATUS": self.cni_status,
            "GC": self.cni_gc,
        }.get(cmd)
        if handler is None:
            raise CNIError(4, f"unknown command {cmd!r}")
        t0 = time.monotonic()
        result = handler(req)
        args = req.get("args") or {}
        log.info(
            "CNI %s %s pod %s/%s ok (%.1f ms)",
            cmd,
            req.get("containerID", ""),
            args.get("K8S_POD_NAMESPACE", "-"),
            args.get("K8S_POD_NAME", "-"),
            (time.monotonic() - t0) * 1000,
        )
        return result

    def _lock_for(self, key: str) -> threading.Lock:
        with self._pods_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _result(self, att: Attachment) -> dict:
        gw = self.node.gw_ip
        return {
            "interfaces": [
                {"name": att.host_if, "mac": att.host_mac},
                {"name": att.ifname, "mac": att.mac, "sandbox": att.netns},
            ],
            "ips": [{"address": f"{att.ip}/{self.prefixlen}", "gateway": gw, "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": gw}],
            "dns": {},
        }

    @staticmethod
    def _ids(req: dict) -> tuple[str, str, str, dict]:
        cid, ifname, netns = (
            req.get("containerID") or "",
            req.get("ifname") or "",
            req.get("netns") or "",
        )
        args = req.get("args") or {}
        if not cid or not ifname:
            raise CNIError(4, "containerID and ifname are required")
        return cid, ifname, netns, args

    def cni_add(self, req: dict) -> dict:
        cid, ifname, netns, args = self._ids(req)
        if not netns:
            raise CNIError(4, "CNI_NETNS is required for ADD")
        if not os.path.exists(netns):
            raise CNIError(3, f"network namespace {netns} does not exist")
        key = f"{cid}/{ifname}"
        with self._lock_for(key):
            existing = self.pods.get(key)
            if existing is not None and existing.ofport > 0:
                log.info("ADD for %s again: returning the existing attachment", key)
                return self._result(existing)
            if existing is not None:
                self._teardown(existing)
            return self._add(cid, ifname, netns, args)

    def _add(self, cid: str, ifname: str, netns: str, args: dict) -> dict:
        cfg = self.cfg
        ns, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        undo: list = []
        try:
            try:
                alloc = self.ipam.allocate(cid, ifname, {"namespace": ns, "name": name})
            except IPAMExhausted as e:
                raise CNIError(ERR_IPAM_EXHAUSTED, str(e)) from None
            undo.append(lambda: self.ipam.release(cid, ifname))
            att = Attachment(
                cid,
                ifname,
                ns,
                name,
                args.get("K8S_POD_UID", ""),
                netns,
                netlink.host_ifname(cid, ifname),
                alloc.ip,
                mac_from_ip(alloc.ip),
            )
            att.host_mac = netlink.create_pod_interface(
                att.host_if,
                netns,
                ifname,
                mac=att.mac,
                ip=att.ip,
                prefixlen=self.prefixlen,
                gateway=self.node.gw_ip,
                mtu=cfg.mtu,
                tx_off=cfg.datapath_type == "netdev",
            )
            undo.append(lambda: netlink.delete_link(att.host_if))
            undo.append(lambda: self.ovsdb.del_port(cfg.bridge, att.host_if))
            att.ofport = self.ovsdb.add_port(
                cfg.bridge,
                att.host_if,
                external_ids=att.external_ids(),
                wait_ofport=cfg.cni_timeout,
            )
            owner = pipeline.pod_owner(att.pod_port())
            undo.append(lambda: self._remove_flows(owner))
            with self._pods_lock:
                self.pods[att.key] = att
            undo.append(lambda: self.pods.pop(att.key, None))
            self.controller.update(
                owner, pipeline.pod_flows(self.node, att.pod_port()), timeout=cfg.cni_timeout
            )
            log.info(
                "pod %s/%s (%s): %s %s on ofport %d via %s",
                ns,
                name,
                att.key,
                att.ip,
                att.mac,
                att.ofport,
                att.host_if,
            )
            return self._result(att)
        except BaseException as e:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception as ue:  # noqa: BLE001 - keep undoing the rest
                    log.warning("rollback step failed for %s/%s: %s", cid, ifname, ue)
            raise _as_cni_error(e) from None

    def _remove_flows(self, owner: str) -> None:
        try:
            self.controller.remove(owner, timeout=self.cfg.cni_timeout)
        except NotConnected:
            # Desired state no longer has them; the next round (on reconnect) drops them.
            log.warning("switch not connected: flows of %s will go with the next round", owner)

    def _teardown(self, att: Attachment) -> None:
        """Remove an attachment: flows first, then port, veth, and last the IP."""
        self._remove_flows(pipeline.pod_owner(att.pod_port()))
        self.ovsdb.del_port(self.cfg.bridge, att.host_if)
        netlink.delete_link(att.host_if)
        self.ipam.release(att.container_id, att.ifname)
        with self._pods_lock:
            self.pods.pop(att.key, None)
        log.info("pod %s/%s (%s): removed, %s released", att.namespace, att.name, att.key, att.ip)

    def cni_del(self, req: dict):
        cid, ifname, _netns, _args = self._ids(req)
        key = f"{cid}/{ifname}"
        with self._lock_for(key):
            att = self.pods.get(key)
            try:
                if att is not None:
                    self._teardown(att)
                else:
                    # Unknown to us (already deleted, or a crash in the middle): clean by name.
                    host_if = netlink.host_ifname(cid, ifname)
                    self.ovsdb.del_port(self.cfg.bridge, host_if)
                    netlink.delete_link(host_if)
                    self.ipam.release(cid, ifname)
            except BaseException as e:
                raise _as_cni_error(e) from None
        with self._pods_lock:
            self._key_locks.pop(key, None)
        return None

    def cni_check(self, req: dict):
        cid, ifname, netns, _args = self._ids(req)
        key = f"{cid}/{ifname}"
        att = self.pods.get(key)
        if att is None:
            raise CNIError(3, f"no attachment {key} on this node")
        problems = []
        port = self.ovsdb.port(self.cfg.bridge, att.host_if)
        if port is None:
            problems.append(f"OVS port {att.host_if} is missing")
        elif port["ofport"] <= 0:
            problems.append(
                f"OVS port {att.host_if} has no ofport ({port['error'] or 'interface gone'})"
            )
        if not netlink.link_exists(att.host_if):
            problems.append(f"host veth {att.host_if} is missing")
        alloc = self.ipam.get(cid, ifname)
        if alloc is None or alloc.ip != att.ip:
            problems.append(f"IPAM does not hold {att.ip} for {key}")
        try:
            iface = netlink.pod_interface(netns or att.netns, ifname)
        except netlink.NetlinkFailure as e:
            iface = None
            problems.append(str(e))
        if iface is None:
            if not problems or "namespace" not in problems[-1]:
                problems.append(f"{ifname} is missing in {netns or att.netns}")
        else:
            want = f"{att.ip}/{self.prefixlen}"
            if want not in iface["addresses"]:
                problems.append(f"{ifname} lacks {want} (has {iface['addresses']})")
            if iface["mac"] != att.mac:
                problems.append(f"{ifname} MAC is {iface['mac']}, expected {att.mac}")
        prev = (req.get("config") or {}).get("prevResult")
        if isinstance(prev, dict):
            addrs = {ip.get("address") for ip in prev.get("ips", []) if isinstance(ip, dict)}
            if addrs and f"{att.ip}/{self.prefixlen}" not in addrs:
                problems.append(f"prevResult has {sorted(addrs)}, the pod has {att.ip}")
        owner = pipeline.pod_owner(att.pod_port())
        missing = [f for f in self.sync.owner_flows(owner) if self.sync.installed.get(f.key) != f]
        if missing or not self.sync.owner_flows(owner):
            problems.append(f"{len(missing)} of the pod's flows are not installed")
        if problems:
            raise CNIError(ERR_CHECK_FAILED, f"attachment {key} is broken", "; ".join(problems))
        return None

    def cni_status(self, req: dict):
        if self.controller is None or not self.controller.ready.is_set():
            raise CNIError(50, "the agent is not connected to its switch yet")
        return None

    def cni_gc(self, req: dict):
        cfg_ = req.get("config") or {}
        valid_list = cfg_.get("cni.dev/valid-attachments")
        if not isinstance(valid_list, list):
            raise CNIError(7, "GC needs cni.dev/valid-attachments (a list)")
        valid = set()
        for v in valid_list:
            if not isinstance(v, dict) or "containerID" not in v or "ifname" not in v:
                raise CNIError(7, "each valid attachment needs containerID and ifname")
            valid.add((v["containerID"], v["ifname"]))
        live_ips = set()
        for att in list(self.pods.values()):
            if (att.container_id, att.ifname) in valid:
                continue
            with self._lock_for(att.key):
                port = self.ovsdb.port(self.cfg.bridge, att.host_if)
                if port and port["ofport"] > 0 and netlink.link_exists(att.host_if):
                    live_ips.add(att.ip)
                    log.warning(
                        "GC: %s (%s/%s, %s) is not in the runtime's list but its port is "
                        "live; keeping it",
                        att.key,
                        att.namespace,
                        att.name,
                        att.ip,
                    )
                    continue
                log.info("GC: removing stale attachment %s (%s)", att.key, att.ip)
                self._teardown(att)
        live_ips |= {a.ip for a in self.pods.values()}
        for alloc in self.ipam.gc(valid, live_ips):
            log.info("GC: released %s of %s/%s", alloc.ip, alloc.container_id, alloc.ifname)
        return None

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        used, cap = self.ipam.usage()
        return {
            "node": self.cfg.node_name,
            "bridge": self.cfg.bridge,
            "connected": bool(self.controller and self.controller.ready.is_set()),
            "round": self.controller.round if self.controller else 0,
            "last_sync": self.controller.last_sync if self.controller else {},
            "pods": [asdict(a) for a in self.pods.values()],
            "ipam": {"cidr": self.cfg.pod_cidr, "used": used, "capacity": cap},
            "flows_desired": len(self.sync.desired()),
            "uptime_s": round(time.time() - self.started, 1),
        }


def _as_cni_error(e: BaseException) -> CNIError:
    if isinstance(e, CNIError):
        return e
    if isinstance(e, NotConnected):
        return CNIError(11, "the agent is not connected to its switch", str(e))
    if isinstance(e, SyncError):
        return CNIError(11, "installing the pod's flows failed", str(e))
    if isinstance(e, OVSDBError):
        return CNIError(ERR_INTERNAL, "OVSDB operation failed", str(e))
    if isinstance(e, netlink.NetlinkFailure):
        return CNIError(ERR_INTERNAL, "interface setup failed", str(e))
    if isinstance(e, IPAMError):
        return CNIError(ERR_INTERNAL, "IPAM failed", str(e))
    return CNIError(ERR_INTERNAL, "unexpected agent failure", repr(e))
