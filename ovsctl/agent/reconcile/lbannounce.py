"""External Service addresses on this node: routes into br-int for every one, the
announcement (proxy ARP / NDP and a gratuitous announcement on take-over) of the addresses of
ovsctl's pool this node holds, and the pool allocation (written to the Services' status by
the one writer agent, or, with a source that cannot be written, used as computed).

`update` runs after each Service/policy computation, under the policy lock (the host sees the
sets in order); Node events reach it through the same path at once, so a Node that goes
NotReady or away moves its addresses within the event's handling. Every host change is
reconciled (idempotent; a failure is logged and retried on the next update), and one address
or Service that fails never stops the others. The pure parts are in lbpool.py."""

from __future__ import annotations

import logging
import threading

import netaddr

from flows import services
from ovsctl.agent import LOGGER
from ovsctl.agent.host import announce as host
from ovsctl.agent.host.hostnet import HostNetError
from ovsctl.agent.reconcile import lbpool

log = logging.getLogger(LOGGER)


class LBAnnouncer:
    """`pool`: lbpool.parse_pool's ranges; `write_status(namespace, name, ingress)`: writes
    status.loadBalancer.ingress (None: the source cannot be written; then the computed
    allocation is used by the flows as it is: `assignments`)."""

    def __init__(self, cluster: dict, node_name: str, pool=(), write_status=None):
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
        self._wake = threading.Condition()
        self._dirty = False
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- the allocation -------------------------------------------------------------------

    def lb_services(self) -> list[lbpool.LBService]:
        out = []
        for key, obj in list(self.cluster.items()):
            if key[0] == "Service":
                try:
                    out.append(lbpool.lb_service(obj.obj()))
                except Exception as e:  # noqa: BLE001 - one Service never stops the others
                    log.warning("Service %s/%s: left out of the LB pool allocation: %s",
                                key[1], key[2], e)  # fmt: skip
        return out

    def assignments(self) -> dict[str, tuple[str, ...]]:
        """The ServiceReconciler's hook (before each computation): with a source that cannot be
        written, the computed allocation ("namespace/name" -> addresses) is the Services'
        ingress; with one that can, {} (the status the writer wrote arrives as an event)."""
        if not self.pool:
            return {}
        alloc = lbpool.allocate(self.lb_services(), self.pool)
        self.allocation = alloc
        return alloc if self.write_status is None else {}

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

    def update(self, external_addrs, parsed: dict) -> None:
        """After a computation: the routes, the holders, this node's announcements, and a
        wake-up for the writer. Never raises (logged)."""
        try:
            self._routes(set(external_addrs) - self.own_ips)
        except Exception as e:  # noqa: BLE001 - the announcement goes on
            log.error("external address routes not reconciled (retried on the next change): %s", e)
        ready = self.ready_nodes()
        self.holders = lbpool.holders(self.announced(parsed), ready)
        self._announce({a for a, h in self.holders.items() if h == self.node_name})
        if self.write_status is not None and lbpool.writer(ready) == self.node_name:
            with self._wake:
                self._dirty = True
                self._wake.notify()

    def writer_node(self) -> str | None:
        """The node whose agent writes the allocation (None: nothing is written)."""
        if self.write_status is None or not self.pool:
            return None
        return lbpool.writer(self.ready_nodes())

    def ready_nodes(self) -> dict[str, set[int]]:
        """Each Ready node's address families (a node without addresses: both)."""
        out = {}
        for key, obj in list(self.cluster.items()):
            if key[0] == "Node" and obj.ready:
                out[obj.name] = {netaddr.IPAddress(a).version for a in obj.internal_ips} or {4, 6}
        return out

    @staticmethod
    def announced(parsed: dict) -> list[tuple[str, set | None]]:
        """(address, eligible endpoint nodes or None) of every ingress address of a
        Service of the class ovsctl.io/lb (the first Service, by name, for an address two
        Services claim)."""
        out, seen = [], set()
        for key in sorted(parsed):
            svc, eps = parsed[key]
            if svc.type != "LoadBalancer" or svc.lb_class != lbpool.LB_CLASS:
                continue
            nodes = services.endpoint_nodes(eps) if svc.external_local else None
            for addr in svc.lb_ingress:
                if addr not in seen:
                    seen.add(addr)
                    out.append((addr, nodes))
        return out

    def _routes(self, want: set[str]) -> None:
        if self.gateway_if is None or want == self.routed:
            return
        self.routed = host.sync_external_routes(self.gateway_if, self.gw_mac, want)

    def _announce(self, mine: set[str]) -> None:
        if not self.ifaces:
            return
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
        """Write what the status of each Service should gain or lose; returns the failures."""
        failed = 0
        for key, ingress in sorted(lbpool.status_patches(self.lb_services(), self.pool).items()):
            ns, name = key.split("/", 1)
            try:
                self.write_status(ns, name, ingress)
                log.info("Service %s: status.loadBalancer.ingress set to [%s]", key,
                         ", ".join(ingress))  # fmt: skip
            except Exception as e:  # noqa: BLE001 - logged, retried; never crashes the agent
                failed += 1
                log.warning("Service %s: status.loadBalancer.ingress not written (retried): %s",
                            key, e)  # fmt: skip
        return failed
