"""OVSDB access through the OVS Python IDL: the bridge and its ports.

One IDL connection per agent; a lock serialises transactions, and a background thread keeps
the IDL replica current (echo replies, reconnects). Every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ovs.poller imports eventlet, which warns on import
    import ovs.db.idl
    import ovs.db.schema
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.vlog

log = logging.getLogger(__name__)

# Debian's python3-openvswitch (a dependency of openvswitch-switch) ships the C JSON parser
# that the PyPI wheel of `ovs` lacks. The IDL parses every message from ovsdb-server with it
# when it is there: 0.014 ms against 0.32 ms in pure Python for a 0.9 kB update, several per
# CNI ADD and every one at start.
SYSTEM_OVS = "/usr/lib/python3/dist-packages/ovs"


def use_c_json(where: str = SYSTEM_OVS) -> str:
    """Have `ovs.json` parse with the C parser: its own if it has one, else the system
    package's, the first `_json<suffix>` there (one per extension suffix of this interpreter)
    that loads and parses a sample as the json module does. Returns the parser in use, "C" or
    "PYTHON" (nothing changes on any failure). It switches a process-wide setting: call it
    before any OVSDB connection exists, as json_parser() does."""
    import importlib.machinery
    import importlib.util
    import json

    import ovs
    import ovs.json

    if ovs.json.PARSER == ovs.json.PARSER_C:
        return ovs.json.PARSER
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(where, "_json" + suffix)
        if not os.path.exists(path):
            continue
        try:
            loader = importlib.machinery.ExtensionFileLoader("ovs._json", path)
            spec = importlib.util.spec_from_file_location("ovs._json", path, loader=loader)
            mod = importlib.util.module_from_spec(spec)
            loader.exec_module(mod)
            sample = '{"a": [1, -2.5, "\\u00e9x", true, null, {"b": ["set", []]}], "c": 1e3}'
            p = mod.Parser(check_trailer=True)
            p.feed(sample)
            if p.finish() != json.loads(sample):
                raise ValueError("it parses a sample differently from the json module")
        except Exception as e:  # noqa: BLE001 - the next suffix, or the Python parser
            log.info("OVSDB: %s not usable (%s)", path, e)
            continue
        ovs._json = mod
        ovs.json.ovs = ovs  # ovs.json binds the name only when its own import succeeded
        ovs.json.PARSER = ovs.json.PARSER_C
        break
    return ovs.json.PARSER


_parser: str | None = None
_parser_lock = threading.Lock()


def json_parser() -> str:
    """The JSON parser of every OVSDB connection in this process, chosen (use_c_json) and
    logged at the first call, before the first connection, and never switched after."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = use_c_json()
            log.info("OVSDB: JSON parsed by the %s parser", _parser)
        return _parser


# The columns the agent reads or writes, and no others: every column in the replica is JSON
# to parse (in Python) on each update, and ovs-vswitchd rewrites Interface statistics and
# status for every port every few seconds and on every port it adds.
COLUMNS = {
    "Open_vSwitch": ["bridges", "other_config", "next_cfg", "cur_cfg"],
    "Bridge": [
        "name", "ports", "datapath_type", "fail_mode", "protocols", "other_config",
        "external_ids", "controller", "datapath_id",
    ],
    "Port": ["name", "interfaces"],
    "Interface": [
        "name", "type", "ofport", "ofport_request", "error", "external_ids", "options",
        "mtu_request",
    ],
    "Controller": ["target", "max_backoff", "inactivity_probe", "connection_mode"],
}  # fmt: skip
TABLES = tuple(COLUMNS)


class OVSDBError(RuntimeError):
    pass


def _fetch_schema(remote: str, timeout: float) -> ovs.db.idl.SchemaHelper:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), timeout * 1000)
        if err:
            last = f"cannot connect to {remote}: {err}"
            time.sleep(0.1)
            continue
        rpc = ovs.jsonrpc.Connection(stream)
        err, reply = rpc.transact_block(
            ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
        )
        rpc.close()
        if err or reply.error:
            last = f"get_schema from {remote} failed: {err or reply.error}"
            time.sleep(0.1)
            continue
        helper = ovs.db.idl.SchemaHelper(schema_json=reply.result)
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        return helper
    raise OVSDBError(last or f"timed out connecting to {remote}")


def _set(row, column: str, value) -> None:
    """Write a column only when it differs: every real write makes ovs-vswitchd reconfigure,
    which among other things forgets the userspace tunnel neighbours."""
    try:
        current = getattr(row, column)
    except AttributeError:  # a row inserted in this transaction
        current = None
    if isinstance(value, dict):
        same = current is not None and dict(current) == value
    elif isinstance(value, list):
        same = current is not None and list(current) == value
    else:
        same = current == value
    if not same:
        setattr(row, column, value)


def _dpid(text) -> int | None:
    """A datapath ID as OVS writes it (16 hex digits, or 0x-prefixed), or None."""
    if not isinstance(text, str):
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value if 0 < value < 1 << 64 else None


def _derived_dpid() -> int:
    """A datapath ID for a bridge that has none yet: random, as a locally administered MAC
    in the low 48 bits (what OVS derives its own from)."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFE) | 0x02
    return int.from_bytes(mac, "big")


class OVSDB:
    def __init__(self, remote: str, timeout: float = 10.0):
        self.remote = remote
        self.timeout = timeout
        self._lock = threading.RLock()
        self._by_name: dict[str, tuple[int, dict]] = {}
        json_parser()
        self.idl = ovs.db.idl.Idl(remote, _fetch_schema(remote, timeout))
        self._stop = threading.Event()
        self.on_change = None  # called (outside the lock) after the replica changed
        with self._lock:
            self._wait(
                lambda: self.idl.has_ever_connected() and self._root() is not None,
                timeout,
                "OVSDB initial sync",
            )
        self._thread = threading.Thread(target=self._keepalive, name="ovsdb-idl", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.idl.close()

    # -- IDL plumbing -------------------------------------------------------------------------

    def _keepalive(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                try:
                    seq = self.idl.change_seqno
                    self.idl.run()
                    changed = self.idl.change_seqno != seq
                except Exception:  # noqa: BLE001 - keep the replica alive whatever happens
                    log.exception("OVSDB IDL run failed")
                    changed = False
            if changed and self.on_change is not None:
                try:
                    self.on_change()
                except Exception:  # noqa: BLE001
                    log.exception("OVSDB change handler failed")

    def _wait(self, cond, timeout: float, what: str):
        """Run the IDL until cond() is truthy; returns its value. Caller holds the lock."""
        deadline = time.monotonic() + timeout
        while True:
            self.idl.run()
            val = cond()
            if val:
                return val
            left = deadline - time.monotonic()
            if left <= 0:
                raise OVSDBError(f"timed out after {timeout:.1f}s waiting for {what}")
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(int(min(left, 0.2) * 1000))
            poller.block()

    def _root(self):
        rows = self.idl.tables["Open_vSwitch"].rows
        return next(iter(rows.values()), None)

    def _transact(self, fn, what: str):
        """Run fn(txn) in a transaction, retrying TRY_AGAIN; returns fn's value."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while True:
                self.idl.run()
                txn = ovs.db.idl.Transaction(self.idl)
                txn.add_comment(f"ovsctl: {what}")
                try:
                    val = fn(txn)
                except BaseException:
                    txn.abort()  # an open transaction would block every later one
                    raise
                status = txn.commit_block()
                if status in (txn.SUCCESS, txn.UNCHANGED):
                    self.idl.run()
                    return val
                if status == txn.TRY_AGAIN and time.monotonic() < deadline:
                    self._wait(lambda: True, 0.05, "retry")
                    continue
                raise OVSDBError(
                    f"OVSDB transaction '{what}' failed: "
                    f"{txn.status_to_string(status)} {txn.get_error() or ''}".strip()
                )

    def _find(self, table: str, name: str):
        """The row of `table` with this name. Rows are indexed by name once per replica change
        (reading a column through the IDL converts it each time: a scan per lookup was ~6 ms
        of every CNI ADD at 100 ports)."""
        seq = self.idl.change_seqno
        hit = self._by_name.get(table)
        if hit is None or hit[0] != seq:
            hit = (seq, {row.name: row for row in self.idl.tables[table].rows.values()})
            self._by_name[table] = hit
        return hit[1].get(name)

    # -- queries ------------------------------------------------------------------------------

    def ports(self, bridge: str) -> list[dict]:
        """Ports on `bridge` (not the bridge's own internal port): name, type, ofport,
        external_ids, options. ofport is -1 when OVS cannot open the interface."""
        with self._lock:
            self.idl.run()
            br = self._find("Bridge", bridge)
            if br is None:
                return []
            out = []
            for port in br.ports:
                if port.name == bridge:
                    continue
                for iface in port.interfaces:
                    ofport = iface.ofport[0] if iface.ofport else 0
                    out.append(
                        {
                            "name": iface.name,
                            "type": iface.type,
                            "ofport": ofport,
                            "external_ids": dict(iface.external_ids),
                            "options": dict(iface.options),
                            "error": (iface.error[0] if iface.error else ""),
                        }
                    )
            return out

    def port(self, bridge: str, name: str) -> dict | None:
        return next((p for p in self.ports(bridge) if p["name"] == name), None)

    # -- changes ------------------------------------------------------------------------------

    def ensure_bridge(
        self,
        name: str,
        *,
        datapath_type: str,
        protocols=("OpenFlow13", "OpenFlow14", "OpenFlow15"),
        fail_mode: str = "secure",
        external_ids: dict | None = None,
        datapath_id: int | None = None,
    ) -> int:
        """Create or adopt the bridge and make its settings exactly ours; returns its datapath
        ID, pinned in other_config:datapath-id (so it never moves with the bridge's MAC).

        The bridge gets no Controller: the agent connects to the bridge's management socket
        instead. A controller target left from an older agent (tcp:127.0.0.1:6653) is removed —
        any local process could listen there — and, because OVS flushes every flow when a
        bridge's last controller goes, this waits until ovs-vswitchd has applied it, so that
        the flush comes before the agent's first round, not after."""
        pinned: list[int] = []
        removed: list[str] = []

        def fn(txn):
            pinned.clear()
            removed.clear()
            root = self._root()
            br = self._find("Bridge", name)
            if br is None:
                br = txn.insert(self.idl.tables["Bridge"])
                br.name = name
                port, iface = self._new_port(txn, name)
                iface.type = "internal"
                br.ports = [port]
                root.verify("bridges")
                root.bridges = list(root.bridges) + [br]
            _set(br, "datapath_type", datapath_type)
            _set(br, "fail_mode", [fail_mode])
            _set(br, "protocols", list(protocols))
            other = dict(getattr(br, "other_config", {}))
            other["disable-in-band"] = "true"
            dpid = datapath_id or _dpid(other.get("datapath-id"))
            if dpid is None:
                current = list(getattr(br, "datapath_id", []) or [])
                dpid = _dpid(current[0] if current else None) or _derived_dpid()
            other["datapath-id"] = f"{dpid:016x}"
            pinned.append(dpid)
            _set(br, "other_config", other)
            ext = dict(getattr(br, "external_ids", {}))
            ext.update(external_ids or {})
            _set(br, "external_ids", ext)
            current = list(getattr(br, "controller", []) or [])
            if current:
                removed.extend(c.target for c in current)
                br.controller = []
                root.increment("next_cfg")  # to wait below until ovs-vswitchd applied it
                removed.append(txn)

        self._transact(fn, f"ensure bridge {name}")
        if removed:
            txn = removed.pop()
            log.warning(
                "bridge %s: removed controller %s (the agent uses %s.mgmt now); OVS flushes "
                "the bridge's flows once, the agent's first round restores them",
                name,
                ", ".join(removed),
                name,
            )
            self._wait_applied(
                txn.get_increment_new_value(), f"ovs-vswitchd to drop the controller of {name}"
            )
        return pinned[0]

    def _wait_applied(self, cfg: int, what: str) -> None:
        """Wait (bounded) until ovs-vswitchd has applied configuration number `cfg`."""
        try:
            with self._lock:
                self._wait(lambda: (self._root().cur_cfg or 0) >= cfg, self.timeout, what)
        except OVSDBError as e:  # not running: it reads the new configuration when it starts
            log.warning("%s", e)

    def datapath_id(self, bridge: str) -> int | None:
        """The datapath ID ovs-vswitchd reports for the bridge (None until it has one)."""
        with self._lock:
            self.idl.run()
            br = self._find("Bridge", bridge)
            value = list(br.datapath_id) if br is not None else []
            return _dpid(value[0]) if value else None

    def flow_restore_wait(self) -> bool:
        with self._lock:
            self.idl.run()
            root = self._root()
            return root is not None and root.other_config.get("flow-restore-wait") == "true"

    def set_flow_restore_wait(self, on: bool) -> None:
        def fn(txn):
            root = self._root()
            other = dict(root.other_config)
            if on:
                other["flow-restore-wait"] = "true"
            else:
                other.pop("flow-restore-wait", None)
            root.other_config = other

        self._transact(fn, f"flow-restore-wait={'true' if on else 'false'}")

    def add_port(
        self,
        bridge: str,
        name: str,
        *,
        type: str = "",
        external_ids: dict | None = None,
        options: dict | None = None,
        ofport_request: int | None = None,
        mtu_request: int | None = None,
        wait_ofport: float | None = None,
    ) -> int:
        """Add (or update) a port; returns its ofport, waiting for it at most `wait_ofport`
        seconds (default: the connection timeout). Raises OVSDBError if OVS cannot open it.
        """
        cols = {"type": type, "external_ids": dict(external_ids or {})}
        cols["options"] = dict(options or {})
        if ofport_request is not None:
            cols["ofport_request"] = [ofport_request]
        if mtu_request is not None:
            cols["mtu_request"] = [mtu_request]
        self._put_port(bridge, name, cols)
        timeout = wait_ofport or self.timeout
        deadline = time.monotonic() + timeout
        while True:  # poll with the lock taken only briefly: other requests go on meanwhile
            with self._lock:
                self.idl.run()
                row = self._find("Interface", name)
                ofport = row.ofport[0] if row is not None and row.ofport else 0
                if ofport > 0:
                    return ofport
                if ofport == -1:
                    err = row.error[0] if row.error else "ofport -1"
                    raise OVSDBError(f"OVS cannot open port {name}: {err}")
                poller = ovs.poller.Poller()
                self.idl.wait(poller)  # wake as soon as the update with the ofport arrives
                poller.timer_wait(2)  # or after 2 ms (another thread may read it first)
            if time.monotonic() > deadline:
                raise OVSDBError(f"timed out after {timeout:.1f}s waiting for the ofport of {name}")
            poller.block()

    def _new_port(self, txn, name: str):
        """A new Port row with its one Interface (both named `name`), in `txn`."""
        iface = txn.insert(self.idl.tables["Interface"])
        iface.name = name
        port = txn.insert(self.idl.tables["Port"])
        port.name = name
        port.interfaces = [iface]
        return port, iface

    def _put_port(self, bridge: str, name: str, cols: dict) -> None:
        """One transaction that adds (or updates) port `name` on `bridge` with `cols`."""

        def fn(txn):
            br = self._find("Bridge", bridge)
            if br is None:
                raise OVSDBError(f"bridge {bridge} does not exist")
            iface = self._find("Interface", name)
            if iface is None:
                port, iface = self._new_port(txn, name)
                # a mutation ("insert" into the set), not the whole set rewritten: reading
                # and writing br.ports converts every port's row, ~1 ms of CPU at 100 pods
                br.addvalue("ports", port)
            for col, value in cols.items():
                _set(iface, col, value)

        self._transact(fn, f"add port {name}")

    def del_port(self, bridge: str, name: str) -> bool:
        """Remove a port if present; returns whether it was there."""
        found = []

        def fn(txn):
            br = self._find("Bridge", bridge)
            port = self._find("Port", name)
            if br is None or port is None:
                return
            found.append(True)
            br.delvalue("ports", port)  # a mutation, as in add_port

        self._transact(fn, f"delete port {name} from {bridge}")
        return bool(found)
