"""CNI ADD/DEL/CHECK/STATUS/GC. ADD keeps an undo stack: a step that fails undoes every step
before it, so a failed ADD leaves nothing behind (no address, veth, port, attachment or flows).
The host is reached through small objects passed in (host/adapters.py; tests/fakes/host.py)."""

from __future__ import annotations

import logging
import os
import time

import netaddr

from flows import owners, pipeline
from flows.family import V6, family
from flows.model import mac_from_ip
from ovsctl.agent import LOGGER
from ovsctl.agent.cnireq import (
    ERR_INVALID_ARGS,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    ERR_UNKNOWN_CONTAINER,
    host_netns,
    ids,
    prev_result,
    requested_addrs,
)
from ovsctl.agent.cniserver import (
    ERR_ADDRESS_IN_USE,
    ERR_ADDRESS_UNAVAILABLE,
    ERR_CHECK_FAILED,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_IPAM_EXHAUSTED,
    CNIError,
)
from ovsctl.agent.host import netlink
from ovsctl.agent.host.ovsdb import OVSDBError
from ovsctl.agent.ipam import IPAMError, IPAMExhausted, IPAMInUse, IPAMUnavailable
from ovsctl.agent.pods import Attachment, PodStore, pod_ref
from ovsctl.openflow.controller import NotConnected, SyncError

log = logging.getLogger(LOGGER)


class CNI:
    """The CNI commands over the pod store, IPAM, the interface configurator (`ifaces`), the
    OVS port manager (`ports`), the policy reconciler (to stage a pod's flows with the policy
    flows its arrival changes) and the controller."""

    def __init__(self, store: PodStore, ipam, ifaces, ports, policy, controller, sync, host,
                 cluster: dict, metrics=None, *, prefixlen: int = 24, mtu: int = 1500,
                 timeout: float = 10.0, datapath_type: str = "system"):  # fmt: skip
        self.store, self.ipam, self.ifaces, self.ports = store, ipam, ifaces, ports
        self.policy, self.controller, self.sync = policy, controller, sync
        self.host = host  # node.NodeHost (or anything with .net: the NodeNet)
        self.cluster = cluster
        self.metrics = metrics
        self.prefixlen, self.mtu, self.timeout = prefixlen, mtu, timeout
        self.datapath_type = datapath_type

    def dispatch(self, req: dict):
        cmd = req.get("command")
        t0 = time.monotonic()
        try:
            result = self._dispatch(req)
        except BaseException as e:
            err = as_cni_error(e) if isinstance(e, Exception) else None
            if self.metrics is not None:
                code = str(err.code) if err else "aborted"
                self.metrics.cni(str(cmd), code, time.monotonic() - t0)
            raise
        if self.metrics is not None:
            self.metrics.cni(str(cmd), "ok", time.monotonic() - t0)
        return result

    def _dispatch(self, req: dict):
        cmd = req.get("command")
        handler = {
            "ADD": self.cni_add,
            "DEL": self.cni_del,
            "CHECK": self.cni_check,
            "STATUS": self.cni_status,
            "GC": self.cni_gc,
        }.get(cmd)
        if handler is None:
            raise CNIError(ERR_INVALID_ARGS, f"unknown command {cmd!r}")
        t0 = time.monotonic()
        result = handler(req)
        args = req.get("args") or {}
        log.info(
            "CNI %s %s pod %s ok (%.1f ms)",
            cmd,
            req.get("containerID", "") or "-",
            pod_ref(args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")),
            (time.monotonic() - t0) * 1000,
        )
        return result

    def _plen(self, ip: str) -> int:
        """The prefix length of the pod CIDR `ip` is in (its family's)."""
        cidr = self.host.net.pod_cidr_of(family(ip))
        if not cidr or cidr == self.host.net.pod_cidr:
            return self.prefixlen
        return netaddr.IPNetwork(cidr).prefixlen

    def _gw(self, ip: str) -> str:
        return self.host.net.gw_ip_of(family(ip)) or self.host.net.gw_ip

    def _result(self, att: Attachment, prev: dict | None = None) -> dict:
        return cni_result(att, self._gw, self._plen, prev)

    def cni_add(self, req: dict) -> dict:
        cid, ifname, netns, args = ids(req)
        if not netns:
            raise CNIError(ERR_INVALID_ARGS, "CNI_NETNS is required for ADD")
        if not os.path.exists(netns):
            raise CNIError(ERR_UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
        if host_netns(netns):
            raise CNIError(
                ERR_INVALID_ARGS, f"{netns} is the node's own network namespace, not a pod's"
            )
        prev = prev_result(req)
        versions = tuple(f.version for f in self.host.net.families)
        want_ips, want_mac = requested_addrs(self.cluster, req, args, versions)
        network = (req.get("config") or {}).get("name") or ""
        if not isinstance(network, str):
            raise CNIError(ERR_INVALID_CONFIG, "the network name must be a string")
        key = f"{cid}/{ifname}"
        with self.store.lock_for(key):
            existing = self.store.pods.get(key)
            if (
                existing is not None
                and existing.ofport > 0
                and set(want_ips) <= set(existing.ips)
                and want_mac in (None, existing.mac)
            ):
                log.info("ADD for %s again: returning the existing attachment", key)
                return self._result(existing, prev)
            if existing is not None:
                self._teardown(existing)
            self.store.begin(cid, ifname)
            try:
                return self._add(cid, ifname, netns, args, network, want_ips, want_mac, prev)
            finally:
                self.store.end(cid, ifname)

    def _add(
        self,
        cid: str,
        ifname: str,
        netns: str,
        args: dict,
        network: str,
        want_ips: tuple[str, ...],
        want_mac: str | None,
        prev: dict | None,
    ) -> dict:
        ns, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        undo: list = []
        steps = [time.monotonic()]  # when each step ended: ipam, veth, OVS port, flows
        step = "IPAM"
        try:
            owner = {"namespace": ns, "name": name, "network": network}
            try:
                if want_ips:
                    alloc = self.ipam.reserve(list(want_ips), cid, ifname, owner)
                else:
                    alloc = self.ipam.allocate(cid, ifname, owner)
            except IPAMExhausted as e:
                raise CNIError(ERR_IPAM_EXHAUSTED, str(e)) from None
            except IPAMUnavailable as e:
                raise CNIError(ERR_ADDRESS_UNAVAILABLE, str(e)) from None
            except IPAMInUse as e:
                raise CNIError(ERR_ADDRESS_IN_USE, str(e)) from None
            undo.append(lambda: self.ipam.release(cid, ifname))
            steps.append(time.monotonic())
            att = Attachment(
                cid,
                ifname,
                ns,
                name,
                args.get("K8S_POD_UID", ""),
                netns,
                self.ifaces.host_ifname(cid, ifname),
                alloc.ip,
                want_mac or mac_from_ip(alloc.ip),
                network=network,
                ips=alloc.ips,
            )
            step = "veth"
            more = tuple((ip, self._plen(ip), self._gw(ip)) for ip in att.ips[1:])
            # The OVS port is added once the host end is up, while the pod end is configured
            # in its namespace (OVS opening the port and netlink overlap). Undone first, even
            # when the veth step fails after the port went in.
            undo.append(lambda: self.ports.delete(att.host_if))
            plugged: list[float] = []
            ids: list[dict] = []

            def plug():
                nonlocal step
                step = "OVS port"
                plugged.append(time.monotonic())
                ids.append(att.external_ids())  # default routes assumed: the usual case
                att.ofport = self.ports.add(
                    att.host_if, external_ids=ids[0], wait_ofport=self.timeout
                )
                plugged.append(time.monotonic())
                step = "veth"

            att.host_mac, routed = self.ifaces.create(
                att.host_if,
                netns,
                ifname,
                mac=att.mac,
                ip=att.ip,
                prefixlen=self._plen(att.ip),
                gateway=self._gw(att.ip),
                mtu=self.mtu,
                tx_off=self.datapath_type == "netdev",
                during=plug,
                **({"more": more} if more else {}),
            )
            if more:
                att.default_route, att.default_route6 = routed[0], routed[1]
            else:
                att.default_route = routed
            undo.append(lambda: self.ifaces.delete(att.host_if))
            if att.external_ids() != ids[0]:  # the pod had a default route (a 2nd interface)
                step = "OVS port"
                att.ofport = self.ports.add(
                    att.host_if, external_ids=att.external_ids(), wait_ofport=self.timeout
                )
            # veth: from the start to the host end up, and the pod end's wait after the port;
            # OVS port: its transaction and the wait for its ofport (overlapping the pod end)
            steps += [plugged[0], plugged[1]]
            steps.append(time.monotonic())
            step = "flows"
            owner = pipeline.pod_owner(att.pod_port())
            undo.append(lambda: self._remove_flows(owner))
            self.store.put(att)
            undo.append(lambda: self.store.forget(att.key))
            # the pod's own flows and its policy flows in one bundle
            keys = self.policy.stage_with(
                {owner: pipeline.pod_flows(self.host.net, att.pod_port())}
            )
            self.controller.push(keys, timeout=self.timeout)
            steps.append(time.monotonic())
            ms = [(b - a) * 1000 for a, b in zip(steps, steps[1:], strict=False)]
            log.info(
                "pod %s (%s): %s %s on ofport %d via %s%s (ipam %.1f ms, veth %.1f ms, "
                "OVS port %.1f ms while the pod end is set up, then %.1f ms, flows %.1f ms)",
                att.ref,
                att.key,
                " ".join(att.ips),
                att.mac,
                att.ofport,
                att.host_if,
                "" if att.default_route else " (no default route: the pod has one)",
                *ms,
            )
            return self._result(att, prev)
        except BaseException as e:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception as ue:  # noqa: BLE001 - keep undoing the rest
                    log.warning("rollback step failed for %s/%s: %s", cid, ifname, ue)
            raise as_cni_error(e, step) from None

    def _remove_flows(self, owner: str) -> None:
        """Remove a pod's flows, and its place in policy flows, in one bundle."""
        keys = self.policy.stage_with({owner: frozenset()})
        try:
            # Without a switch, the desired state is enough: the next round leaves them out.
            if keys and not self.controller.push(keys, timeout=self.timeout, wait=False):
                log.debug(
                    "flows of %s: nothing sent (none on the switch, or a round takes it)", owner
                )
        except NotConnected:
            # Desired state no longer has them; the next round (on reconnect) drops them.
            log.warning("switch not connected: flows of %s will go with the next round", owner)

    def _teardown(self, att: Attachment) -> None:
        """Remove an attachment: flows first, then port, veth, and last the IP."""
        self.store.forget(att.key)
        self._remove_flows(pipeline.pod_owner(att.pod_port()))
        self.ports.delete(att.host_if)
        self.ifaces.delete(att.host_if)
        self.ipam.release(att.container_id, att.ifname)
        self.store.forget(att.key)
        log.info("pod %s (%s): removed, %s released", att.ref, att.key, ", ".join(att.ips))

    def cni_del(self, req: dict):
        cid, ifname, _netns, _args = ids(req)
        key = f"{cid}/{ifname}"
        with self.store.lock_for(key):
            att = self.store.pods.get(key)
            step = "removing the attachment"
            try:
                if att is not None:
                    self._teardown(att)
                else:
                    # Unknown to us (already deleted, or a crash in the middle): clean by name.
                    # Its flows too, should any be desired still (nothing of ovsctl stages a
                    # pod's flows without its attachment; if something ever did, they would
                    # outlive the pod).
                    owner = owners.Pod(cid, ifname).key
                    if self.sync.owner_flows(owner):
                        log.warning("DEL %s: flows desired without an attachment: removed", key)
                        step = "flows"
                        self._remove_flows(owner)
                    host_if = self.ifaces.host_ifname(cid, ifname)
                    step = "OVS port"
                    self.ports.delete(host_if)
                    step = "veth"
                    self.ifaces.delete(host_if)
                    step = "IPAM"
                    self.ipam.release(cid, ifname)
            except BaseException as e:
                raise as_cni_error(e, step) from None
        return None

    def cni_check(self, req: dict):
        cid, ifname, netns, _args = ids(req)
        key = f"{cid}/{ifname}"
        att = self.store.pods.get(key)
        if att is None:
            raise CNIError(ERR_UNKNOWN_CONTAINER, f"no attachment {key} on this node")
        problems = []
        port = self.ports.port(att.host_if)
        if port is None:
            problems.append(f"OVS port {att.host_if} is missing")
        elif port["ofport"] <= 0:
            problems.append(
                f"OVS port {att.host_if} has no ofport ({port['error'] or 'interface gone'})"
            )
        if not self.ifaces.exists(att.host_if):
            problems.append(f"host veth {att.host_if} is missing")
        alloc = self.ipam.get(cid, ifname)
        for ip in att.ips:
            if alloc is None or ip not in alloc.ips:
                problems.append(f"IPAM does not hold {ip} for {key}")
        try:
            iface = self.ifaces.pod_interface(netns or att.netns, ifname)
        except netlink.NetlinkFailure as e:
            iface = None
            problems.append(str(e))
        if iface is None:
            if not problems or "namespace" not in problems[-1]:
                problems.append(f"{ifname} is missing in {netns or att.netns}")
        else:
            for ip in att.ips:
                want = f"{ip}/{self._plen(ip)}"
                if want not in iface["addresses"]:
                    problems.append(f"{ifname} lacks {want} (has {iface['addresses']})")
                if family(ip) is V6 and _routed(att, ip):
                    gw = self._gw(ip)
                    if gw not in iface.get("gateways6", [gw]):
                        problems.append(f"{ifname} has no IPv6 default route via {gw}")
            if iface["mac"] != att.mac:
                problems.append(f"{ifname} MAC is {iface['mac']}, expected {att.mac}")
        prev = prev_result(req)
        if prev is not None:
            addrs = {ip.get("address") for ip in prev.get("ips") or []}
            for ip in att.ips:
                if addrs and f"{ip}/{self._plen(ip)}" not in addrs:
                    problems.append(f"prevResult has {sorted(addrs)}, the pod has {ip}")
        owner = pipeline.pod_owner(att.pod_port())
        missing = [f for f in self.sync.owner_flows(owner) if self.sync.installed.get(f.key) != f]
        if missing or not self.sync.owner_flows(owner):
            problems.append(f"{len(missing)} of the pod's flows are not installed")
        if problems:
            raise CNIError(ERR_CHECK_FAILED, f"attachment {key} is broken", "; ".join(problems))
        return None

    def cni_status(self, req: dict):
        if self.controller is None or not self.controller.ready.is_set():
            raise CNIError(ERR_NOT_AVAILABLE, "the agent is not connected to its switch yet")
        return None

    def cni_gc(self, req: dict):
        """Remove what the runtime no longer knows, of this network only. An attachment is
        kept when it is in the runtime's list, belongs to another network (or its network was
        not recorded), is being added right now, or its port is live; each is logged."""
        network, valid = gc_request(req)
        inflight = self.store.in_flight()  # an ADD under way is not yet in the runtime's list
        live_ips = set()
        for att in list(self.store.pods.values()):
            why = None
            if (att.container_id, att.ifname) in valid:
                why = "in the runtime's list"
            elif att.network != network:
                why = (
                    f"it belongs to network {att.network!r}"
                    if att.network
                    else "its network was not recorded"
                )
            elif (att.container_id, att.ifname) in inflight:
                why = "its ADD is under way"
            if why is not None:
                log.info("GC %s: keeping %s (%s, %s): %s", network, att.key, att.ref, att.ip, why)
                continue
            with self.store.lock_for(att.key):
                if self.store.pods.get(att.key) is not att:
                    continue  # DEL'd (or replaced) meanwhile
                port = self.ports.port(att.host_if)
                if port and port["ofport"] > 0 and self.ifaces.exists(att.host_if):
                    live_ips.update(att.ips)
                    log.warning(
                        "GC %s: keeping %s (%s, %s): not in the runtime's list but its port "
                        "is live",
                        network,
                        att.key,
                        att.ref,
                        att.ip,
                    )
                    continue
                log.info("GC %s: removing stale attachment %s (%s)", network, att.key, att.ip)
                self._teardown(att)
        live_ips |= {ip for a in self.store.pods.values() for ip in a.ips}
        for alloc in self.ipam.gc(valid | inflight, live_ips, network=network):
            log.info(
                "GC %s: released %s of %s/%s",
                network,
                ", ".join(alloc.ips),
                alloc.container_id,
                alloc.ifname,
            )
        return None


def _routed(att: Attachment, ip: str) -> bool:
    """Whether ADD gave the pod its default route of `ip`'s family through this one."""
    return att.default_route if ip == att.ip else att.default_route6


def cni_result(att: Attachment, gw_of, plen_of, prev: dict | None = None) -> dict:
    """The CNI result of an attachment (`gw_of(ip)`, `plen_of(ip)`: the gateway and prefix
    length of the pod CIDR an address is in). Chained after other plugins, the previous
    result's interfaces, IPs, routes and DNS come first and are kept; ours are added (our IPs'
    interface index counts the interfaces before ours). A dual-stack pod's addresses and
    default routes come IPv4 first."""
    prev = prev or {}
    interfaces = list(prev.get("interfaces") or [])
    base = len(interfaces)
    interfaces += [
        {"name": att.host_if, "mac": att.host_mac},
        {"name": att.ifname, "mac": att.mac, "sandbox": att.netns},
    ]
    ips = list(prev.get("ips") or [])
    routes = list(prev.get("routes") or [])
    for ip in att.ips:
        gw = gw_of(ip)
        ips.append({"address": f"{ip}/{plen_of(ip)}", "gateway": gw, "interface": base + 1})
        if _routed(att, ip):
            routes.append({"dst": family(ip).any, "gw": gw})
    return {"interfaces": interfaces, "ips": ips, "routes": routes, "dns": prev.get("dns") or {}}


def gc_request(req: dict) -> tuple[str, set[tuple[str, str]]]:
    """(network name, {(containerID, ifname)} the runtime still has) of a GC request; a
    CNIError for a request without them."""
    cfg_ = req.get("config") or {}
    network = cfg_.get("name") or ""
    if not isinstance(network, str) or not network:
        raise CNIError(ERR_INVALID_CONFIG, "GC needs the network's name")
    valid_list = cfg_.get("cni.dev/valid-attachments")
    if not isinstance(valid_list, list):
        raise CNIError(ERR_INVALID_CONFIG, "GC needs cni.dev/valid-attachments (a list)")
    valid = set()
    for v in valid_list:
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("containerID"), str)
            or not isinstance(v.get("ifname"), str)
        ):
            raise CNIError(
                ERR_INVALID_CONFIG, "each valid attachment needs containerID and ifname (strings)"
            )
        valid.add((v["containerID"], v["ifname"]))
    return network, valid


def as_cni_error(e: BaseException, step: str = "") -> CNIError:
    """The CNI error for an exception; `step` (IPAM, veth, OVS port, flows, ...) names where
    it happened, so the runtime's message says which step failed."""
    if isinstance(e, CNIError):
        return e
    at = f"{step}: " if step else ""
    if isinstance(e, NotConnected):
        return CNIError(
            ERR_TRY_AGAIN_LATER, f"{at}the agent is not connected to its switch", str(e)
        )
    if isinstance(e, SyncError):
        return CNIError(ERR_TRY_AGAIN_LATER, f"{at}installing the pod's flows failed", str(e))
    if isinstance(e, OVSDBError):
        return CNIError(ERR_INTERNAL, f"{at}OVSDB operation failed", str(e))
    if isinstance(e, netlink.NetlinkFailure):
        return CNIError(ERR_INTERNAL, f"{at}interface setup failed", str(e))
    if isinstance(e, IPAMError):
        return CNIError(ERR_INTERNAL, f"{at}IPAM failed", str(e))
    return CNIError(ERR_INTERNAL, f"{at}unexpected agent failure", repr(e))
