"""The controller: keeps br-int's flows equal to the desired set, per owner.

Every flow change goes one way: owners' desired flows change in the FlowSync (`stage`), the
difference becomes one OpenFlow 1.4 bundle (atomic, ordered) followed by a barrier
(`_send_flow_msgs`), and the controller waits, with a deadline, for the barrier reply before
saying the flows are in. `apply(owners)` is stage + push; `Wire.send` is the one function
that writes to the switch (bundles, meter mods and flow stats requests alike).

On every (re)connection it starts a new round: it reads which flows the switch holds, then in
one bundle installs every desired flow under the new round and deletes every flow it did not
install in that round (older rounds, and anything else but learned sessionAffinity flows), so
forwarding never stops and nothing stale or foreign survives.

The os-ken app shell is ovsctl.openflow.app, packet-ins are routed by ovsctl.openflow.packetin,
and the connection (ovsctl.openflow.channel) is a client of the bridge's root-only management
socket: nothing listens, and only the bridge's own datapath ID is accepted.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable

from flows import cookie as ck
from flows.flow import MeteredController
from ovsctl.openflow import app as ofapp
from ovsctl.openflow import encode as ofconv
from ovsctl.openflow.channel import Channel
from ovsctl.openflow.osken_compat import next_xid
from ovsctl.openflow.packetin import PacketIns
from ovsctl.openflow.sync import FlowSync, Plan
from ovsctl.util import atomic_write

log = logging.getLogger(__name__)


class SyncError(RuntimeError):
    pass


class NotConnected(SyncError):
    pass


SEND_BATCH_BYTES = 1 << 16  # messages go to os-ken's send queue in writes of about this size
# /healthz fails once the switch has been unreachable (or refused) this long
HEALTH_GRACE = 15.0


class _Pending:
    """Replies to one exchange with the switch, keyed by xid."""

    def __init__(self, dp=None):
        self.dp = dp
        self.xids: set[int] = set()
        self.last_xid = 0
        self.errors: list = []
        self.replies: list = []
        self.done = threading.Event()


class Wire:
    """Exchanges with the switch: sends messages, matches replies and errors to them by xid."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}
        self._plock = threading.Lock()

    # -- replies (os-ken's thread: never block here) ------------------------------------------

    def disconnected(self, dp) -> None:
        """Fail only this connection's exchanges, not a newer one's."""
        with self._plock:
            for x, p in list(self._pending.items()):
                if p.dp is dp:
                    p.errors.append("switch disconnected")
                    p.done.set()
                    del self._pending[x]

    def on_reply(self, msg, final: bool) -> None:
        with self._plock:
            p = self._pending.get(msg.xid)
        if p is None:
            return
        p.replies.append(msg)
        if final and msg.xid == p.last_xid:
            with self._plock:
                for x in p.xids:
                    self._pending.pop(x, None)
            p.done.set()

    def on_error(self, msg) -> None:
        with self._plock:
            p = self._pending.get(msg.xid)
        if p is None:
            log.error(
                "OpenFlow error from switch (xid %s): type=%s code=%s", msg.xid, msg.type, msg.code
            )
            return
        p.errors.append(f"OpenFlow error type={msg.type} code={msg.code} (xid {msg.xid})")

    # -- sending ------------------------------------------------------------------------------

    def send(self, dp, items, timeout: float) -> _Pending:
        """THE function that writes to the switch. Send (bytes, xid) items as they come — in
        writes of about SEND_BATCH_BYTES, so the switch takes in the first messages while
        later ones are still being encoded — and wait for the reply to the last item's xid
        (a barrier or a stats request), or an error to any xid."""
        p = _Pending(dp)
        batch: list[bytes] = []
        batch_xids: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal batch, batch_xids, size
            with self._plock:  # before sending: an error may come back at once
                for x in batch_xids:
                    self._pending[x] = p
            if not dp.send(b"".join(batch)):
                raise NotConnected("switch connection closed while sending")
            batch, batch_xids, size = [], [], 0

        try:
            for buf, xid in items:
                p.xids.add(xid)
                p.last_xid = xid  # only barrier and stats replies count: the last comes last
                batch.append(buf)
                batch_xids.append(xid)
                size += len(buf)
                if size >= SEND_BATCH_BYTES:
                    flush()
            if batch:
                flush()
            if not p.done.wait(timeout):
                raise SyncError(f"no reply from the switch within {timeout:.1f}s")
        finally:
            with self._plock:
                for x in p.xids:
                    self._pending.pop(x, None)
        if p.errors:
            raise SyncError("; ".join(p.errors))
        return p

    def request(self, dp, msgs: list, timeout: float) -> _Pending:
        """Send os-ken messages; wait for the last one's (last) reply or an error."""
        items = []
        for m in msgs:
            if m.xid is None:
                dp.set_xid(m)
            m.serialize()
            items.append((bytes(m.buf), m.xid))
        return self.send(dp, items, timeout)

    def bundle(self, dp, mods: list, timeout: float) -> None:
        """One atomic, ordered bundle of `mods` and a barrier. A mod is ("add" | "delete",
        Flow, round) — encoded straight to bytes (ofconv.flow_mod_wire) — or an os-ken
        message (delete_round)."""
        parser, ofp = dp.ofproto_parser, dp.ofproto
        bid = int.from_bytes(os.urandom(4), "big")
        flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
        opener = parser.OFPBundleCtrlMsg(dp, bid, ofp.OFPBCT_OPEN_REQUEST, flags, [])
        dp.set_xid(opener)
        opener.serialize()

        def items():
            yield bytes(opener.buf), opener.xid
            for m in mods:
                xid = next_xid(dp)
                if isinstance(m, tuple):
                    kind, f, rnd = m
                    inner = ofconv.flow_mod_wire(dp, f, rnd, xid, delete=kind == "delete")
                else:
                    m.set_xid(xid)
                    m.serialize()
                    inner = bytes(m.buf)
                yield ofconv.bundle_add_wire(dp, bid, flags, inner), xid
            for m in (
                parser.OFPBundleCtrlMsg(dp, bid, ofp.OFPBCT_COMMIT_REQUEST, flags, []),
                parser.OFPBarrierRequest(dp),  # its reply: everything before it is done
            ):
                dp.set_xid(m)
                m.serialize()
                yield bytes(m.buf), m.xid

        self.send(dp, items(), timeout)

    def dump(self, dp, timeout: float) -> list:
        """Flow stats of every flow on the switch (os-ken OFPFlowStats objects)."""
        parser, ofp = dp.ofproto_parser, dp.ofproto
        req = parser.OFPFlowStatsRequest(
            dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
        )
        p = self.request(dp, [req], timeout)
        return [s for r in p.replies for s in r.body]


class Controller:
    """Keeps br-int's flows equal to the desired set in `sync`."""

    def __init__(
        self,
        sync: FlowSync,
        state_dir: str,
        *,
        target: str = "",
        datapath_id: int | None = None,
        timeout: float = 10.0,
        on_synced: Callable[[float, int], None] | None = None,
        before_resync: Callable[[], None] | None = None,
        hold: bool = False,
    ):
        self.sync = sync
        self.state_dir = state_dir
        # the bridge's management socket (<ovs_rundir>/<bridge>.mgmt): the agent connects to
        # it; nothing listens. Only a switch with this datapath ID is accepted.
        self.channel = Channel(target, datapath_id)
        self.health_grace = HEALTH_GRACE
        self.timeout = timeout
        self.on_synced = on_synced
        self.before_resync = before_resync
        self.dp = None
        self.round = 0
        # hold: the switch may connect (its reconnect backoff runs meanwhile), but the first
        # round waits for release(), when the desired flows are complete
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self.ready = threading.Event()  # connected and the current round is fully installed
        self._send_lock = threading.RLock()
        self.wire = Wire()
        self.reconnects = 0
        # packet-ins by cookie feature: NetworkPolicy audit copies go to on_audit(cookie,
        # table_id, data) (its own rate limit); the rest get a reject answer
        self.packet_in = PacketIns()
        self.last_sync: dict = {}
        # meters put on the switch before every round: (meter id, packets/s)
        self.meters: list[tuple[int, int]] = []
        # the rate (packets/s) of a meter that flows name (controller(meter_id=)), or None for
        # one that is not the agent's: such meters are put on the switch before the first flow
        # that names them (an audited policy's own meter)
        self.meter_rate: Callable[[int], int | None] = lambda meter_id: None
        self._meters_on: set[int] = set()  # on the switch of the current connection
        self.meter_ok: bool | None = None  # None: not tried yet

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return self.channel.target

    @property
    def on_audit(self) -> Callable[[int, int, bytes], object] | None:
        return self.packet_in.on_audit

    @on_audit.setter
    def on_audit(self, fn: Callable[[int, int, bytes], object] | None) -> None:
        self.packet_in.on_audit = fn

    @property
    def packet_ins(self) -> collections.Counter:
        """Packet-ins by outcome (audit, rejected, rate_limited, unanswerable)."""
        return self.packet_in.counts

    def start(self) -> None:
        """Start os-ken's apps (ovsctl.openflow.app) and the channel thread that connects to
        the switch."""
        ofapp.start(self)
        self.channel.start()

    def stop(self) -> None:
        self.channel.stop()

    def health(self) -> str | None:
        """None while the OpenFlow machinery works (for /healthz); else why not. Readiness
        (synced flows) is `ready`."""
        return self.channel.health(self.health_grace)

    # -- events from the app (os-ken's thread: never block here) ---------------------------------

    def on_connect(self, dp) -> None:
        log.info("switch %016x connected (%s)", dp.id, dp.address)
        self.reconnects += 1
        self.dp = dp
        self.ready.clear()
        threading.Thread(
            target=self._resync_safely, args=(dp,), name="of-resync", daemon=True
        ).start()

    def on_disconnect(self, dp) -> None:
        if self.dp is dp:
            log.warning(
                "switch %016x disconnected; flows stay, will replay on reconnect", dp.id or 0
            )
            self.dp = None
            self.ready.clear()
        self.wire.disconnected(dp)

    def on_reply(self, msg, final: bool) -> None:
        self.wire.on_reply(msg, final)

    def on_error(self, msg) -> None:
        self.wire.on_error(msg)

    def on_packet_in(self, msg) -> None:
        self.packet_in.route(msg)

    # -- rounds ---------------------------------------------------------------------------------

    def _next_round(self) -> int:
        """Take the next round number (persisted, so it also moves on across restarts)."""
        path = os.path.join(self.state_dir, "round")
        try:
            with open(path) as fh:
                rnd = int(fh.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            rnd = 0
        rnd = rnd % ck.MAX_ROUND + 1
        atomic_write(path, f"{rnd}\n")
        return rnd

    def release(self) -> None:
        """The desired flows are complete: a connected switch gets its round now."""
        self._released.set()

    def _resync_safely(self, dp) -> None:
        self._released.wait()
        if self.dp is not dp:
            return  # this connection went while the round was held; a newer one has its own
        try:
            self.resync(dp)
        except Exception as e:  # noqa: BLE001 - a failed resync is retried on the next connect
            log.error("resync with switch failed: %s; reconnecting", e)
            if self.dp is dp:
                dp.close()

    def resync(self, dp) -> None:
        """Install the whole desired set under a new round and delete every flow the agent
        did not install in it: older rounds, and flows of round 0 (the agent never installs
        round 0) — all but the ones the switch learned for sessionAffinity (feature
        "affinity"), which are state, not configuration."""
        with self._send_lock:
            t0 = time.monotonic()
            if self.before_resync:
                self.before_resync()
            held = self.wire.dump(dp, self.timeout)
            present = {(s.cookie & ck.ROUND_MASK) >> ck.ROUND_SHIFT for s in held}
            log.info("switch holds %d flows of rounds %s", len(held), sorted(present) or "none")
            rnd = self._next_round()
            while rnd in present:  # never reuse a round the switch still holds
                rnd = self._next_round()
            stale = sorted(present - {rnd, 0})
            foreign = collections.Counter(  # round 0 by feature, learned affinity flows kept
                (s.cookie & ck.FEATURE_MASK) >> ck.FEATURE_SHIFT
                for s in held
                if not s.cookie & ck.ROUND_MASK
                and (s.cookie & ck.FEATURE_MASK) >> ck.FEATURE_SHIFT != ck.FEATURES["affinity"]
            )
            if foreign:
                log.warning(
                    "switch holds %d flows of round 0 that are not learned affinity flows "
                    "(features %s): not ours, deleting them",
                    sum(foreign.values()),
                    sorted(ck.FEATURE_NAMES.get(f, f"unknown({f})") for f in foreign),
                )
            self._meters_on = set()
            for meter in self.meters:
                self._put_meter(dp, *meter)
            t_plan = time.monotonic()
            with self.sync.lock:
                version = self.sync.version
                plan = self.sync.full_plan()
            cleanup = [ofconv.delete_round(dp, r) for r in stale]
            cleanup += [ofconv.delete_round_feature(dp, 0, f) for f in sorted(foreign)]
            t_send = time.monotonic()
            n = len(plan) + len(cleanup)
            self._send_flow_msgs(dp, plan, rnd, max(self.timeout, n / 2000), cleanup)
            t_done = time.monotonic()
            self.round = rnd
            self.sync.reset_installed({f.key: f for f in plan.add})
            late_n = self._send_late(dp, rnd, version)
            took = time.monotonic() - t0
            self.last_sync = {
                "kind": "full",
                "round": rnd,
                "flows": len(plan.add),
                "deleted_rounds": stale,
                "deleted_foreign": sum(foreign.values()),
                "seconds": round(took, 4),
                "at": time.time(),
            }
            log.info(
                "round %d installed: %d flows, old rounds %s and %d foreign flows deleted, "
                "in %.3fs (switch read and meters %.3fs, plan %.3fs, bundle to barrier reply "
                "%.3fs); %d changes staged meanwhile sent after it",
                rnd,
                len(plan.add),
                stale or "none",
                sum(foreign.values()),
                took,
                t_plan - t0,
                t_send - t_plan,
                t_done - t_send,
                late_n,
            )
        if self.on_synced:
            self.on_synced(took, len(plan.add))

    def _send_late(self, dp, rnd: int, version: int) -> int:
        """After a round's bundle: send what changed in the desired flows since `version`
        (when the round's plan was taken), again and again until nothing changed during a
        send, and only then set `ready` — under the sync's lock, in the same step as the last
        look. Until `ready`, a change staged with wait=False (a DEL, an ADD's rollback, GC)
        only changes the desired state and counts on the round to carry it; after it, whoever
        staged a change pushes it. So no change falls between the two: one staged while the
        difference was on its way, or between the last look and `ready`, used to stay on the
        switch until the next round (flows of deleted pods, after an agent restart). Returns
        how many flow changes were sent."""
        sent = 0
        while True:
            with self.sync.lock:
                if self.sync.version == version:
                    if self.dp is dp:
                        self.ready.set()
                    return sent
                version = self.sync.version
                late = self.sync.plan(None)
            if late:
                log.debug("round %d: sending %d changes staged during it", rnd, len(late))
                self._send_flow_msgs(dp, late, rnd, self.timeout)
                self.sync.applied(late)
                sent += len(late)

    def _ensure_meters(self, dp, flows) -> None:
        """Put on the switch every meter of the agent's that these flows name and that is not
        there yet (OVS takes a flow naming a missing meter, and never meters it)."""
        named = {a.meter_id for f in flows for a in f.actions if isinstance(a, MeteredController)}
        for meter_id in sorted(named - self._meters_on):
            rate = self.meter_rate(meter_id)
            if rate is not None:
                self._put_meter(dp, meter_id, rate)

    def _put_meter(self, dp, meter_id: int, rate: int) -> None:
        """Add the meter (or change its rate). A switch without meters still gets the flows:
        OVS accepts controller(meter_id=) for a missing meter, and the agent's own token bucket
        still limits what it logs."""
        parser = dp.ofproto_parser
        for modify in (False, True):  # add; if it exists already (same switch), modify
            try:
                mm = ofconv.meter_mod(dp, meter_id, rate, rate, modify=modify)
                self.wire.request(dp, [mm, parser.OFPBarrierRequest(dp)], self.timeout)
                self.meter_ok = True
                self._meters_on.add(meter_id)
                return
            except NotConnected:
                raise
            except SyncError as e:
                err = e
        self.meter_ok = False
        log.warning("meter %d (%d packets/s) not installed: %s", meter_id, rate, err)

    # -- the one path for flow changes ---------------------------------------------------------

    def _send_flow_msgs(self, dp, plan: Plan, rnd: int, timeout: float, extra=()) -> int:
        """Every flow change goes to the switch here: the meters `plan` names first, then one
        bundle — deletes, adds (round `rnd`), then `extra` os-ken messages — and a barrier.
        Returns the number of flow-mods."""
        self._ensure_meters(dp, plan.add)
        mods: list = [("delete", f, rnd) for f in plan.delete]
        mods += [("add", f, rnd) for f in plan.add]
        mods += list(extra)
        self.wire.bundle(dp, mods, timeout)
        return len(mods)

    def apply(self, owners: dict, timeout: float | None = None, wait: bool = True) -> int:
        """Make each owner's flows exactly `owners[owner]` on the switch, in one bundle;
        returns how many flow-mods were sent. Returns only once the switch has them (bundle +
        barrier), or raises. With wait=False and no switch ready, only the desired state
        changes (the next round installs it)."""
        return self.push(self.stage(owners), timeout, wait)

    def stage(self, owners: dict) -> set[tuple]:
        """Change owners' desired flows without sending; returns the keys to push()."""
        keys: set = set()
        for owner, flows in owners.items():
            keys |= self.sync.set_owner(owner, flows)
        return keys

    def push(self, keys: set[tuple], timeout: float | None = None, wait: bool = True) -> int:
        """Send what `keys` need (see stage); with wait=False and no switch, nothing (the
        next round carries it)."""
        # not ready: the round under way (or the next) carries the change; the round sets
        # `ready` only once it has seen every change staged before that (_send_late)
        if not keys or (not wait and not self.ready.is_set()):
            return 0
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        while True:
            if not self.ready.wait(max(0.0, deadline - time.monotonic())):
                raise NotConnected(f"switch not connected or not synced within {timeout:.1f}s")
            with self._send_lock:
                dp = self.dp
                if dp is None or not self.ready.is_set():
                    continue
                plan: Plan = self.sync.plan(keys)
                if not plan:
                    return 0
                t0 = time.monotonic()
                rnd = self.round
                try:
                    n = self._send_flow_msgs(dp, plan, rnd, max(0.1, deadline - time.monotonic()))
                except SyncError:
                    # Unknown what the switch holds now: start a new round on a fresh connection.
                    self.ready.clear()
                    if self.dp is dp:
                        dp.close()
                    raise
                self.sync.applied(plan)
                took = time.monotonic() - t0
                self.last_sync = {
                    "kind": "incremental",
                    "round": rnd,
                    "flows": n,
                    "seconds": round(took, 4),
                    "at": time.time(),
                }
                if self.on_synced:
                    self.on_synced(took, n)
                return n
