"""The NetworkPolicy audit log: one line per connection an audited policy allows or drops.

A NetworkPolicy annotated `ovsctl.io/audit: "true"` gets flows that send the first packet of
each new connection to the agent (`controller(max_len=128,meter_id=M)`, M the policy's own
meter; see flows/policy.py):
a copy from its allow flows (the packet goes on) and the packet itself from its isolation
drops. The packet-in carries the cookie of the flow that matched, so the agent knows the rule
(cookie owner `policy/NS/NAME/ingress/0`) or the isolation (`policy/NS/NAME/isolation`), and
its table says the verdict (IngressRule/EgressRule: allow; IngressDefault/EgressDefault: drop).

Three limits keep a flood from hurting the agent: the switch's meter drops packet-ins beyond
`audit_rate` a second before they reach the agent, the agent's own token bucket (same rate)
drops what still comes, and the same connection (policy, rule, verdict, 5-tuple) is logged
once per DEDUP_SECONDS (a refused TCP client retransmits its SYN; each is a "new" packet).
Lines are written by a thread of their own from a bounded queue, so the OpenFlow thread never
waits on the disk.

    2026-11-23T05:00:00Z policy=ns/name rule=ingress/0 verdict=allow proto=tcp src=10.244.0.2:40000 dst=10.244.1.3:80

A ClusterNetworkPolicy annotated the same way gets the same flows in its tier's tables
(flows/tiers.py: Accept and Pass rules send a copy, Deny rules the packet itself). Its cookie
owner is `cnp/NAME/DIR/I`; the rule's tier, name and action come from the agent's parsed
policies (`cnp_rule_of()` over the reconciler's cache), never from the table: Accept is
logged as `verdict=allow`, Deny as `verdict=drop`, Pass as `verdict=pass` (handed on: the
next tier decides).

    2026-11-23T05:00:00Z policy=cnp/deny-y tier=Admin rule=ingress/0 name=from-y action=Deny verdict=drop proto=tcp src=10.244.1.3:40000 dst=10.244.0.2:80

IPv6 packets give the same line, the addresses compressed and, with a port, in brackets
(`src=[fd00:10:244:1::2]:40000`); ICMPv6 is `proto=icmp6` with its type and code.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable

from os_ken.lib.packet import ethernet, ipv4, ipv6, vlan

from flows import cookie as ck
from flows import owners, tables

log = logging.getLogger(__name__)
audit_log = logging.getLogger("ovsctl.audit")  # every line also goes here (INFO)

DEDUP_SECONDS = 10.0
DEDUP_MAX = 4096  # connections remembered for de-duplication
QUEUE_MAX = 10000
BUCKETS_MAX = 4096  # audited policies with a budget remembered (least recently logged go)
LOG_MODE = 0o640

VERDICT = {
    "IngressRule": ("ingress", "allow"),
    "EgressRule": ("egress", "allow"),
    "IngressDefault": ("ingress", "drop"),
    "EgressDefault": ("egress", "drop"),
}
# ClusterNetworkPolicy tier tables: the direction their flows judge
CNP_TABLES = {name: direction for (_tier, direction), name in tables.TIER_TABLES.items()}
# an Admin Pass hands the connection to NetworkPolicy and Baseline (which may still drop it),
# a Baseline Pass to the default (allowed): "pass" says only what this rule did
CNP_VERDICT = {"Accept": "allow", "Pass": "pass", "Deny": "drop"}
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 58: "icmp6"}
# IPv6 extension headers walked to the transport header: hop-by-hop, routing, destination
# options (8-octet units after the first 8), fragment (8 octets); AH (4-octet units)
IPV6_EXT = {0, 43, 60}
IPV6_FRAGMENT, IPV6_AH = 44, 51


# ---- pure parts --------------------------------------------------------------------------------


def describe(
    owner_key: str | None, table_id: int, cnp_rule: Callable[[str], dict | None] | None = None
) -> tuple | None:
    """(policy "NS/NAME", rule "ingress/0" or "ingress/isolation", verdict) for the owner key
    of the flow that sent the packet up and its table; for a ClusterNetworkPolicy rule
    (policy "cnp/NAME", rule, verdict, its details: {"tier", "rule_name", "action"} from
    `cnp_rule(owner_key)`). None when it is not an audit flow, or the rule is not known."""
    table = tables.name_of(table_id)
    owner = owners.try_parse(owner_key)
    if isinstance(owner, owners.ClusterPolicyRule):
        info = cnp_rule(owner.key) if cnp_rule is not None else None
        if CNP_TABLES.get(table) != owner.direction or not info:
            return None
        verdict = CNP_VERDICT.get(info.get("action"))
        if verdict is None:
            return None
        return f"cnp/{owner.name}", f"{owner.direction}/{owner.index}", verdict, info
    where = VERDICT.get(table)
    if where is None:
        return None
    direction, verdict = where
    if isinstance(owner, owners.PolicyIsolation):
        return owner.policy, f"{direction}/isolation", verdict
    if isinstance(owner, owners.PolicyRule):
        return owner.policy, f"{owner.direction}/{owner.index}", verdict
    return None


def cnp_rule_of(cache: Iterable[tuple], key: str) -> dict | None:
    """The tier, priority, rule name and action of ClusterNetworkPolicy rule owner `key` from
    the reconciler's cache values ((object, ClusterPolicy or None, base, owners)); None when
    no installed policy has that rule."""
    owner = owners.try_parse(key)
    if not isinstance(owner, owners.ClusterPolicyRule):
        return None
    for entry in cache:
        pol = entry[1]
        if pol is None or pol.name != owner.name:
            continue
        rules = pol.rules(owner.direction)
        if owner.index >= len(rules):
            return None
        rule = rules[owner.index]
        return {
            "tier": pol.tier,
            "priority": pol.priority,
            "rule_name": rule.name,
            "action": rule.action,
        }
    return None


def five_tuple(frame: bytes) -> dict | None:
    """proto, src, dst (and sport/dport for TCP/UDP/SCTP, type/code for ICMP and ICMPv6) of an
    Ethernet frame carrying IPv4 or IPv6 (802.1Q tags skipped); None for anything else or a
    truncated frame.

    os-ken parses the Ethernet, VLAN and IPv4 headers; of the transport header only its first
    bytes are read (ports, ICMP type and code): os-ken's own TCP/ICMP parsers want the whole
    header, and a packet-in cut at max_len, or a short one, still names its ports."""
    try:
        _eth, cls, rest = ethernet.ethernet.parser(bytes(frame))
        while cls in (vlan.vlan, vlan.svlan):
            _tag, cls, rest = cls.parser(rest)
        if cls is ipv6.ipv6:
            return _five_tuple6(rest)
        if cls is not ipv4.ipv4:
            return None
        ip, _, _ = ipv4.ipv4.parser(rest)
    except (struct.error, ValueError):
        return None
    if ip.version != 4:
        return None
    out = {"proto": PROTO_NAMES.get(ip.proto, str(ip.proto)), "src": ip.src, "dst": ip.dst}
    l4 = rest[ip.header_length * 4 :]  # not cut at total_length, as os-ken's payload is
    if ip.offset == 0 and ip.proto in (6, 17, 132) and len(l4) >= 4:
        out["sport"], out["dport"] = int.from_bytes(l4[0:2]), int.from_bytes(l4[2:4])
    elif ip.offset == 0 and ip.proto == 1 and len(l4) >= 2:
        out["type"], out["code"] = l4[0], l4[1]
    return out


def _five_tuple6(pkt: bytes) -> dict | None:
    """The IPv6 part of five_tuple: the fixed header read by hand (os-ken's parser wants every
    extension header whole), extension headers walked to the transport header; a later
    fragment names no ports."""
    if len(pkt) < 40 or pkt[0] >> 4 != 6:
        return None
    nxt = pkt[6]
    out = {
        "src": str(ipaddress.IPv6Address(pkt[8:24])),
        "dst": str(ipaddress.IPv6Address(pkt[24:40])),
    }
    off, first = 40, True
    for _ in range(8):  # a bounded walk: a looping chain is no transport header
        if nxt in IPV6_EXT or nxt == IPV6_AH:
            if len(pkt) < off + 2:
                return None
            unit = 4 if nxt == IPV6_AH else 8
            nxt, off = pkt[off], off + (pkt[off + 1] + (2 if nxt == IPV6_AH else 1)) * unit
        elif nxt == IPV6_FRAGMENT:
            if len(pkt) < off + 8:
                return None
            first = int.from_bytes(pkt[off + 2 : off + 4]) >> 3 == 0
            nxt, off = pkt[off], off + 8
        else:
            break
    else:
        return None
    out = {"proto": PROTO_NAMES.get(nxt, str(nxt)), **out}
    l4 = pkt[off:]
    if first and nxt in (6, 17, 132) and len(l4) >= 4:
        out["sport"], out["dport"] = int.from_bytes(l4[0:2]), int.from_bytes(l4[2:4])
    elif first and nxt == 58 and len(l4) >= 2:
        out["type"], out["code"] = l4[0], l4[1]
    return out


def _with_port(addr: str, port: int) -> str:
    """10.0.0.1:80, [fd00::1]:80."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def format_line(
    t: float, policy: str, rule: str, verdict: str, tup: dict, cnp: dict | None = None
) -> str:
    """2026-11-23T05:00:00Z policy=ns/name rule=ingress/0 verdict=allow proto=tcp
    src=10.244.0.2:40000 dst=10.244.1.3:80 (one line; ICMP: type= code= after the addresses;
    IPv6 with a port: src=[fd00::2]:40000). A ClusterNetworkPolicy rule (`cnp`: its tier,
    rule_name and action): policy=cnp/NAME tier=Admin rule=ingress/0 name=RULE action=Deny
    verdict=drop ... (name= only for a named rule, quoted when it holds a space, = or ")."""
    src, dst = tup["src"], tup["dst"]
    if "sport" in tup:
        src, dst = _with_port(src, tup["sport"]), _with_port(dst, tup["dport"])
    tier = named = action = ""
    if cnp is not None:
        tier, action = f" tier={cnp['tier']}", f" action={cnp['action']}"
        if cnp.get("rule_name"):
            named = f" name={_word(cnp['rule_name'])}"
    line = (
        f"{timestamp(t)} policy={policy}{tier} rule={rule}{named}{action} verdict={verdict} "
        f"proto={tup['proto']} src={src} dst={dst}"
    )
    if "type" in tup:
        line += f" type={tup['type']} code={tup['code']}"
    return line


def _word(text: str) -> str:
    """A value as one word of the line: as it is, or JSON-quoted."""
    if text and not any(c.isspace() or c in '="' for c in text):
        return text
    return json.dumps(text)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst or rate, clock
        self.tokens, self.at = self.burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# ---- the log -----------------------------------------------------------------------------------


class AuditLog:
    """Turns audit packet-ins into log lines. `owners()` lists the policy owner keys the agent
    has (cookies carry only a 40-bit hash of them). `path` "" writes only to the logger."""

    def __init__(
        self,
        path: str,
        rate: int,
        owners: Callable[[], Iterable[str]],
        clock=time.monotonic,
        wall=time.time,
        cnp_rule: Callable[[str], dict | None] | None = None,
    ):
        self.path, self.rate = path, rate
        self.owners = owners
        # a ClusterNetworkPolicy rule owner key -> its tier, rule name and action (the agent's)
        self.cnp_rule = cnp_rule
        self.clock, self.wall = clock, wall
        # one budget per audited policy (as on the switch: a meter per policy), so a flood that
        # one policy logs cannot hide another policy's connections
        self.buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self.counts: collections.Counter = collections.Counter()
        self._ids: dict[int, str] = {}
        self._ids_at = -1e9
        self._seen: collections.OrderedDict = collections.OrderedDict()
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._fh = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._writer, name="audit-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict:
        return {"log": self.path, "rate": self.rate, **dict(self.counts)}

    def _owner_key(self, oid: int) -> str | None:
        key = self._ids.get(oid)
        if key is None and self.clock() - self._ids_at > 1.0:  # rebuild on a miss, <= 1/s
            self._ids = {ck.owner_id(k): k for k in list(self.owners())}
            self._ids_at = self.clock()
            key = self._ids.get(oid)
        return key

    def packet_in(self, cookie: int, table_id: int, data: bytes) -> str | None:
        """Handle one audit packet-in (OpenFlow thread: never blocks); returns the line queued,
        or None when it was rate-limited, a repeat, or not understood."""
        self.counts["packet_ins"] += 1
        what = describe(self._owner_key(cookie & ck.OWNER_MASK), table_id, self.cnp_rule)
        if what is not None and not self._bucket(what[0]).take():
            self.counts["rate_limited"] += 1
            return None
        tup = five_tuple(data) if what is not None else None
        if what is None or tup is None:
            self.counts["unknown"] += 1
            return None
        key = (*what[:3], tuple(sorted(tup.items())))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen < DEDUP_SECONDS:
            self.counts["repeats"] += 1
            return None
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > DEDUP_MAX:
            self._seen.popitem(last=False)
        line = format_line(self.wall(), *what[:3], tup, *what[3:])
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.counts["queue_full"] += 1
            return None
        self.counts["lines"] += 1
        return line

    def _bucket(self, policy: str) -> TokenBucket:
        b = self.buckets.get(policy)
        if b is None:
            b = self.buckets[policy] = TokenBucket(self.rate, self.rate, self.clock)
            while len(self.buckets) > BUCKETS_MAX:
                self.buckets.popitem(last=False)
        self.buckets.move_to_end(policy)
        return b

    def _writer(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                break
            audit_log.info("%s", line)
            if self.path:
                self._write(line)
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _write(self, line: str) -> None:
        """Append a line; reopen the file when it was moved away or removed (log rotation)."""
        try:
            if self._fh is not None:
                try:
                    moved = os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
                except FileNotFoundError:
                    moved = True
                if moved:
                    self._fh.close()
                    self._fh = None
            if self._fh is None:
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o750, exist_ok=True)
                # who talked to whom: for root and the log's group only (0640)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
                if os.fstat(fd).st_mode & 0o7777 & ~LOG_MODE:
                    os.fchmod(fd, LOG_MODE)  # a file an older agent made 0644
                self._fh = os.fdopen(fd, "a", buffering=1)
            self._fh.write(line + "\n")
        except OSError as e:
            self.counts["write_errors"] += 1
            if self.counts["write_errors"] == 1:
                log.error(
                    "audit log %s: %s (lines still go to the ovsctl.audit logger)", self.path, e
                )
            self._fh = None
