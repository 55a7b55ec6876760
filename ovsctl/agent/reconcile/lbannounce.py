"""External Service addresses on this node: routes into br-int for every one, the
announcement (proxy ARP / NDP and a gratuitous announcement on take-over) of the addresses of
ovsctl's pool this node holds, and the pool allocation (written to the Services' status by
the one writer agent, or, with a source that cannot be written, used as computed).

`record` runs after each Service/policy computation, under the policy lock (so the snapshots
are taken in order); `apply` puts the latest snapshot on the host after the round's flows are
pushed (the agent calls it from the policy round's settle hook and after each full sync), so
an address is routed and announced only once its frontends are in the switch. `update` is
both at once. Node events reach it through the same path, so a Node that goes NotReady or
away moves its addresses within the event's handling. Every apply reconciles the routes,
neighbour entries and proxy entries against the kernel's (repairing what someone removed);
a failure is logged and retried on the next apply, and one address or Service that fails
never stops the others. The pure parts are in lbpool.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time

import netaddr

from flows import services
from ovsctl.agent import LOGGER
from ovsctl.agent.host import announce as host
from ovsctl.agent.host.hostnet import HostNetError
from ovsctl.agent.reconcile import lbpool
from ovsctl.agent.reconcile.changes import Changes
from ovsctl.k8s.apiclient import StatusConflict

log = logging.getLogger(LOGGER)


class LBAnnouncer:
    """`pool`: lbpool.parse_pool's ranges; `write_status(namespace, name, ingress, expect)`:
    writes status.loadBalancer.ingress if it is still `expect` (else raises; None: the
    source cannot be written; then the computed allocation is used by the flows as it is:
    `assignments`); `state_file`: where the held addresses are kept for the next start."""

    EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
    PENDING_FOR = 30.0  # seconds a written status is trusted before its event arrives

    def __init__(self, cluster: dict, node_name: str, pool=(), write_status=None,
                 state_file: str | None = None):  # fmt: skip
        self.cluster = cluster
        self.node_name = node_name
        self.pool = tuple(pool)
        self.write_status = write_status
        self.holders: dict[str, str | None] = {}  # announced address -> holder (views)
        self.routed: set[str] | None = None  # external addresses routed (None: not yet read)
        self.held: set[str] = set()  # addresses this node answers for
        self.allocation: dict[str, tuple[str, ...]] = {}
        # the host: set by attach() once the node's ports are plugged
        self.gateway_if: str | None = None
        self.gw_mac = ""
        self.own_ips: frozenset[str] = frozenset()
        self.ifaces: dict[int, str] = {}  # IP version -> node-network interface
        self._stale: set[str] = set()  # proxy entries of pool addresses found at start
        self.state_file = state_file  # the addresses held, for the next start to release
        self._latest: tuple | None = None  # (external addresses, parsed) of the last round
        self._host_lock = threading.Lock()
        self._noted: set[tuple[str, str]] = set()  # allocation notes logged once
        # the writer's own writes: "ns/name" -> (ingress written, when), until the event comes
        self._written: dict[str, tuple[tuple[str, ...], float]] = {}
        self._wake = threading.Condition()
        self._dirty = False
        self._stop = False
        self._thread: threading.Thread | None = None
        # the Nodes and Services, kept per changed key (every round asks for them: a walk of
        # the whole cluster per round would grow with the pods), with each Service's parse
        self._changes = Changes(cluster)
        self._index_lock = threading.Lock()
        self._nodes: dict[tuple, object] = {}
        self._svcs: dict[tuple, tuple] = {}  # key -> (object, LBService or None)

    # -- the allocation -------------------------------------------------------------------

    def _index(self) -> tuple[list, list]:
        """(Node objects, LBServices) as the cluster is now, updated for the changed keys
        only (any thread)."""
        with self._index_lock:
            for key in self._changes.take():
                if key[0] not in ("Node", "Service"):
                    continue
                obj = self.cluster.get(key)
                if obj is None:
                    self._nodes.pop(key, None)
                    self._svcs.pop(key, None)
                elif key[0] == "Node":
                    self._nodes[key] = obj
                else:
                    self._svcs[key] = (obj, self._parse(key, obj))
            svcs = [s for _, s in self._svcs.values() if s is not None]
            return list(self._nodes.values()), svcs

    @staticmethod
    def _parse(key: tuple, obj) -> lbpool.LBService | None:
        try:
            return lbpool.lb_service(obj.obj())
        except Exception as e:  # noqa: BLE001 - one Service never stops the others
            log.warning("Service %s/%s: left out of the LB pool allocation: %s", key[1], key[2], e)
            return None

    def lb_services(self) -> list[lbpool.LBService]:
        return self._index()[1]

    def assignments(self) -> dict[str, tuple[str, ...]]:
        """The ServiceReconciler's hook (before each computation): with a source that cannot be
        written, the computed allocation ("namespace/name" -> addresses) is the Services'
        ingress; with one that can, {} (the status the writer wrote arrives as an event)."""
        if not self.pool:
            return {}
        notes: list = []
        alloc = lbpool.allocate(self.lb_services(), self.pool, notes)
        self._log_notes(notes)
        self.allocation = alloc
        return alloc if self.write_status is None else {}

    def _log_notes(self, notes) -> None:
        for key, msg in notes:
            if (key, msg) not in self._noted:
                self._noted.add((key, msg))
                log.warning("Service %s: LB pool: %s", key, msg)
        if len(self._noted) > 10000:  # never grows without bound
            self._noted.clear()

    # -- the host ---------------------------------------------------------------------------

    def attach(self, gateway_if: str, gw_mac: str, own_ips, ifaces: dict[int, str]) -> None:
        """The node's ports are plugged: routes go to `gateway_if`; `ifaces` (IP version ->
        interface) answer for held addresses. Proxy entries of pool addresses left by an
        earlier run are released on the first update unless this node still holds them."""
        self.gateway_if, self.gw_mac = gateway_if, gw_mac
        self.own_ips = frozenset(str(netaddr.IPAddress(a)) for a in own_ips)
        self.ifaces = dict(ifaces)
        for ifname in set(self.ifaces.values()):
            try:
                self._stale |= {a for a in host.proxies(ifname) if lbpool.in_pool(self.pool, a)}
            except (HostNetError, OSError, ValueError) as e:
                log.error("proxy entries on %s not read: %s", ifname, e)
        # what an earlier run held, whatever the pool is now (it may have shrunk)
        self._stale |= self._read_state()
        if self.pool and self.ifaces.get(4) and host.proxy_arp_on(self.ifaces[4]):
            log.warning("LB pool: proxy_arp=1 on %s: the kernel answers ARP for every address "
                        "routed elsewhere, so every node answers for the pool's addresses "
                        "(set net.ipv4.conf.%s.proxy_arp=0)", self.ifaces[4], self.ifaces[4])  # fmt: skip

    def _read_state(self) -> set[str]:
        if not self.state_file:
            return set()
        try:
            with open(self.state_file) as fh:
                data = json.load(fh)
            return {str(netaddr.IPAddress(a)) for a in data.get("held", [])}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, TypeError, AttributeError, netaddr.AddrFormatError) as e:
            log.error("LB pool: state file %s not read (ignored): %s", self.state_file, e)
            return set()

    def _write_state(self) -> None:
        if not self.state_file:
            return
        tmp = f"{self.state_file}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump({"held": sorted(self.held | self._stale)}, fh)
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.error("LB pool: state file %s not written: %s", self.state_file, e)

    def update(self, external_addrs, parsed: dict) -> None:
        """`record` and `apply` at once."""
        self.record(external_addrs, parsed)
        self.apply()

    def record(self, external_addrs, parsed: dict) -> None:
        """After a computation (under the policy lock): keep its external addresses and
        Services for `apply`, and wake the writer. Cheap; never raises."""
        self._latest = (frozenset(external_addrs), parsed)
        if self.write_status is not None and lbpool.writer(self.ready_nodes()) == self.node_name:
            with self._wake:
                self._dirty = True
                self._wake.notify()

    def apply(self) -> None:
        """Put the latest recorded round on the host (after its flows are in the switch): the
        routes, the holders and this node's announcements, each checked against the kernel's
        and repaired. Never raises (logged)."""
        with self._host_lock:
            if self._latest is None:
                return
            external_addrs, parsed = self._latest
            try:
                self._routes(set(external_addrs) - self.own_ips)
            except Exception as e:  # noqa: BLE001 - the announcement goes on
                log.error("external address routes not reconciled (retried): %s", e)
            self.holders = lbpool.holders(self.announced(parsed), self.eligible_nodes())
            self._announce({a for a, h in self.holders.items() if h == self.node_name})

    def writer_node(self) -> str | None:
        """The node whose agent writes the allocation (None: nothing is written)."""
        if self.write_status is None or not self.pool:
            return None
        return lbpool.writer(self.ready_nodes())

    def ready_nodes(self) -> dict[str, set[int]]:
        """Each Ready node's families: those of its pod CIDRs (the families it routes into
        br-int), else of its InternalIPs, else both. A Ready Node is taken to run a working
        agent (nothing checks the agent itself: a Ready node whose agent is down still
        writes and holds; docs/pipeline.md)."""
        out = {}
        for obj in self._index()[0]:
            if obj.ready:
                addrs = obj.pod_cidrs or obj.internal_ips
                out[obj.name] = {netaddr.IPNetwork(a).version for a in addrs} or {4, 6}
        return out

    def eligible_nodes(self) -> dict[str, set[int]]:
        """The Ready nodes that may hold addresses: without the label
        node.kubernetes.io/exclude-from-external-load-balancers."""
        excluded = {o.name for o in self._index()[0] if self.EXCLUDE_LABEL in o.labels_dict()}
        return {n: vs for n, vs in self.ready_nodes().items() if n not in excluded}

    def announced(self, parsed: dict) -> list[tuple[str, set | None]]:
        """(address, eligible endpoint nodes or None) of the ingress addresses of the
        Services of the class ovsctl.io/lb that are inside the pool and that the allocation
        gives the Service (of two Services claiming one address, only the first claimant's:
        lbpool.allocate); anything else in a status is never answered for."""
        out, seen = [], set()
        for key in sorted(parsed):
            svc, eps = parsed[key]
            if svc.type != "LoadBalancer" or svc.lb_class != lbpool.LB_CLASS:
                continue
            mine = self.allocation.get(key, ())
            nodes = services.endpoint_nodes(eps) if svc.external_local else None
            for addr in svc.lb_ingress:
                if addr in seen or addr not in mine or not lbpool.in_pool(self.pool, addr):
                    continue
                seen.add(addr)
                out.append((addr, nodes))
        return out

    def _routes(self, want: set[str]) -> None:
        if self.gateway_if is None:
            return
        # every apply: the kernel's routes and neighbour entries are checked and repaired
        self.routed = host.sync_external_routes(self.gateway_if, self.gw_mac, want)

    def _announce(self, mine: set[str]) -> None:
        if not self.ifaces:
            return
        before = self.held | self._stale
        for addr in sorted(self.held - mine) + sorted(self._stale - mine - self.held):
            ifname = self.ifaces.get(netaddr.IPAddress(addr).version)
            try:
                if ifname:
                    host.del_proxy(ifname, addr)
                self.held.discard(addr)
                self._stale.discard(addr)
                log.info("LB address %s: released by %s (holder now %s)", addr, self.node_name,
                         self.holders.get(addr) or "nobody")  # fmt: skip
            except (HostNetError, OSError) as e:
                log.error("LB address %s: release failed (retried): %s", addr, e)
        for addr in sorted(mine - self.held):
            ifname = self.ifaces.get(netaddr.IPAddress(addr).version)
            if not ifname:
                log.error("LB address %s: this node has no interface of its family", addr)
                continue
            try:
                host.add_proxy(ifname, addr)
                self.held.add(addr)
                self._stale.discard(addr)
                host.announce(ifname, addr)
                log.info("LB address %s: taken over by %s, announced on %s", addr,
                         self.node_name, ifname)  # fmt: skip
            except (HostNetError, OSError) as e:
                log.error("LB address %s: take-over failed (retried): %s", addr, e)
        # repair: a held address whose proxy entry someone removed gets it back
        have: dict[str, set[str]] = {}
        for addr in sorted(self.held & mine):
            ifname = self.ifaces.get(netaddr.IPAddress(addr).version)
            try:
                if ifname and ifname not in have:
                    have[ifname] = host.proxies(ifname)
                if ifname and addr not in have[ifname]:
                    host.add_proxy(ifname, addr)
                    host.announce(ifname, addr)
                    log.warning("LB address %s: proxy entry on %s was gone: restored", addr, ifname)
            except (HostNetError, OSError, ValueError) as e:
                log.error("LB address %s: proxy entry not checked (retried): %s", addr, e)
        if self.held | self._stale != before:
            self._write_state()

    # -- the writer ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.write_status is None or not self.pool or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._writer, name="lb-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()

    def _writer(self) -> None:
        """While this node is the writer: write the status patches the pool wants; a failure
        (a conflict, the API down) is retried with backoff (up to 10 s) from fresh state."""
        backoff = 0.0
        while True:
            with self._wake:
                if not self._dirty and not self._stop:
                    self._wake.wait(timeout=backoff or None)
                if self._stop:
                    return
                self._dirty = False
            if lbpool.writer(self.ready_nodes()) != self.node_name:
                backoff = 0.0
                continue
            failed = self.write_once()
            backoff = min(10.0, max(0.5, backoff * 2)) if failed else 0.0

    def write_once(self) -> int:
        """Write what the status of each Service should gain or lose; returns the failures.
        Each write carries the status the decision was computed from (the cache's): the
        write is refused (StatusConflict) if the Service's status is not that any more, and
        the next round computes again from the newer state. A status this writer wrote is
        trusted until its event arrives (PENDING_FOR at most), so the next round neither
        writes it again nor gives its addresses to another Service."""
        svcs = self._with_written(self.lb_services())
        notes: list = []
        patches = lbpool.status_patches(svcs, self.pool, notes)
        self._log_notes(notes)
        expect = {s.key: s.ingress for s in svcs}
        failed = 0
        for key, ingress in sorted(patches.items()):
            ns, name = key.split("/", 1)
            try:
                self.write_status(ns, name, ingress, expect[key])
                self._written[key] = (ingress, time.monotonic())
                log.info("Service %s: status.loadBalancer.ingress set to [%s]", key,
                         ", ".join(ingress))  # fmt: skip
            except StatusConflict as e:
                # the cache is behind the API: the rest of this round was computed from it too
                self._written.pop(key, None)
                log.info("Service %s: status not written, recomputed once the cache has the "
                         "newer state: %s", key, e)  # fmt: skip
                return failed + 1
            except Exception as e:  # noqa: BLE001 - logged, retried; never crashes the agent
                failed += 1
                self._written.pop(key, None)
                log.warning("Service %s: status.loadBalancer.ingress not written (retried): %s",
                            key, e)  # fmt: skip
        return failed

    def _with_written(self, svcs: list) -> list:
        """The Services with the statuses this writer wrote and whose events have not come
        yet (forgotten once the cache shows them, the Service is gone, or PENDING_FOR)."""
        now = time.monotonic()
        by_key = {s.key: s for s in svcs}
        for key, (ingress, at) in list(self._written.items()):
            s = by_key.get(key)
            if s is None or s.ingress == ingress or now - at > self.PENDING_FOR:
                del self._written[key]
            else:
                by_key[key] = dataclasses.replace(s, ingress=ingress)
        return list(by_key.values())
