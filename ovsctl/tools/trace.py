"""`ovsctl trace` and `ovsctl reachability`: what br-int does with a packet, asked of the
switch itself (`ofproto/trace`, no packet is sent), explained with table names and the owners
of the flows it matched, and put next to what the NetworkPolicies intend (`ovsctl/intent.py`).

A trace is a list of *hops*, one per node the packet crosses. Each hop is one `ofproto/trace`
call; OVS prints the pipeline pass by pass (a `ct(table=…)` action recirculates, and
`--ct-next` says which conntrack state the next pass sees; OVS 3.x also simulates the NAT of
`ct(nat(dst=…))`, so a Service's DNAT to the endpoint the multipath hash picked is followed).
A hop that ends in the tunnel continues on the node whose IP is the tunnel destination, with
the packet as the source node rewrote it (MACs, tun_src/tun_dst, addresses after DNAT) —
when that node's switch is at hand (the lab); otherwise the trace says where it continues.

Names come from the agent (`/cluster`: pods with their local ofport and MAC, the gateway, the
tunnel port, nodes, Services, policies; `/flows`: owner id -> owner key, so a cookie names the
policy rule or the isolation it belongs to).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass, field

import netaddr

from flows import cookie as cookies
from flows import intent as intents
from flows import owners, tables
from flows.model import VIRTUAL_ROUTER_MAC, mac_from_ip
from ovsctl.tools import agentclient

DEFAULT_AGENT = agentclient.DEFAULT_SOCKET
DEFAULT_SPORT = 40000
CT_NEW = "trk,new"
CT_REPLY = "trk,est,rpl"
CT_PASSES = 4  # --ct-next given this many times: more than any path here recirculates
MAX_HOPS = 4
PROTOS = ("tcp", "udp", "icmp")


class TraceError(RuntimeError):
    pass


# -- ofproto/trace output ----------------------------------------------------------------------


@dataclass
class Step:
    """One flow table lookup as ofproto/trace prints it."""

    bridge: str
    table_id: int
    match: str  # the matched flow's match ("" for a catch-all)
    priority: int | None  # None: no flow matched
    cookie: int | None
    actions: list[str] = field(default_factory=list)  # lines under it, "->" notes included
    depth: int = 0  # >0: inside a resubmit
    owner: str | None = None  # the owner key of the matched flow (filled in from the agent)

    @property
    def table(self) -> str:
        return tables.name_of(self.table_id)

    @property
    def is_miss(self) -> bool:
        return self.priority == 0 and not self.match

    def _acts(self) -> list[str]:
        return [a for a in self.actions if not a.startswith(("->", ">>"))]

    @property
    def goto(self) -> int | None:
        for a in self._acts():
            m = re.match(r"goto_table:(\d+)$", a)
            if m:
                return int(m.group(1))
        return None

    @property
    def recirc_table(self) -> int | None:
        for a in self._acts():
            m = re.match(r"ct\((?:[^()]|\([^()]*\))*?\btable=(\d+)", a)
            if m:
                return int(m.group(1))
        return None

    @property
    def outputs(self) -> list[int]:
        out = []
        for a in self.actions:
            m = re.match(r"-> output port is (\d+)$", a)
            if m:
                out.append(int(m.group(1)))
        return out

    @property
    def in_port_output(self) -> bool:
        return "IN_PORT" in self._acts() or "in_port" in self._acts()

    @property
    def to_controller(self) -> bool:
        return any(a.lower().startswith("controller") for a in self._acts())

    @property
    def drops(self) -> bool:
        """The packet ends here without output (OVS prints "drop" for an empty action list)."""
        acts = self._acts()
        return (
            self.goto is None
            and self.recirc_table is None
            and not self.outputs
            and not self.in_port_output
            and not self.to_controller
            and not any(a.startswith(("resubmit", "output", "NORMAL")) for a in acts)
        )

    def action_text(self) -> str:
        """The actions, without what OVS prints inside ct() (its nested "nat"/"drop")."""
        shown: list[str] = []
        for a in self._acts():
            if shown and shown[-1].startswith("ct(") and (a == "drop" or a.startswith("nat")):
                continue
            shown.append(a)
        return ", ".join(shown)


@dataclass
class Pass:
    """One pass through the pipeline: the first, or one resumed after a recirculation."""

    flow: str = ""
    bridge: str = ""  # the traced bridge (the first one printed; others follow patch/tunnel)
    recirc_id: str | None = None
    ct_state: str | None = None  # what conntrack said, for a resumed pass
    nat_from: str = ""  # OVS's simulated NAT: the fields before ...
    nat_to: str = ""  # ... and after
    resumed_at: int | None = None
    steps: list[Step] = field(default_factory=list)
    final_flow: str = ""
    megaflow: str = ""
    datapath_actions: str = ""

    def own(self) -> list[Step]:
        """The traced bridge's lookups (resubmits included)."""
        return [s for s in self.steps if s.bridge == self.bridge]

    def top(self) -> list[Step]:
        """The traced bridge's lookups in pipeline order, without those inside a resubmit."""
        return [s for s in self.own() if s.depth == 0]


_TABLE_LINE = re.compile(r"^(?P<indent> *)(?P<table>\d+)\. (?P<rest>.*)$")
_RULE = re.compile(
    r"^(?:(?P<match>.*?),? )?priority (?P<prio>\d+)(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$"
)
_BRIDGE = re.compile(r'^bridge\("(?P<name>[^"]+)"\)')
_RECIRC = re.compile(r"^recirc\((?P<id>0x[0-9a-f]+)\)")
_CT_STATE = re.compile(r"ct_state=(?P<state>[a-z|]+)")


def parse(text: str) -> list[Pass]:
    """ofproto/trace output -> its passes, each with the tables it visited."""
    passes: list[Pass] = []
    cur: Pass | None = None
    pending = Pass()  # header info of the next resumed pass
    bridge = ""
    step: Step | None = None
    at_depth: dict[int, Step] = {}  # the last step printed at each resubmit depth
    in_header = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("====="):
            in_header = not in_header
            if in_header:
                pending = Pass()
            continue
        if in_header:
            s = line.strip()
            m = _RECIRC.match(s)
            if m:
                pending.recirc_id = m.group("id")
                st = _CT_STATE.search(s)
                pending.ct_state = st.group("state") if st else None
            elif s.startswith("Initial flow:"):
                pending.nat_from = s.split(":", 1)[1].strip()
            elif s.startswith("Modified flow:"):
                pending.nat_to = s.split(":", 1)[1].strip()
            continue
        if line.startswith("Flow: "):
            cur = pending
            cur.flow = line[len("Flow: ") :].strip()
            pending = Pass()
            passes.append(cur)
            bridge, step, at_depth = "", None, {}
            continue
        if cur is None:
            continue
        if line.startswith("Final flow: "):
            cur.final_flow = line.split(": ", 1)[1].strip()
            step = None
            continue
        if line.startswith("Megaflow: "):
            cur.megaflow = line.split(": ", 1)[1].strip()
            continue
        if line.startswith("Datapath actions: "):
            cur.datapath_actions = line.split(": ", 1)[1].strip()
            continue
        m = _BRIDGE.match(line)
        if m:
            bridge, step, at_depth = m.group("name"), None, {}
            cur.bridge = cur.bridge or bridge
            continue
        if not line.strip() or set(line.strip()) == {"-"}:
            continue
        m = _TABLE_LINE.match(line)
        if m:
            rest = m.group("rest").strip()
            # OVS indents a table line 8 more per resubmit level (" 0.", "10.", "    33.", …)
            depth = (len(m.group("indent")) + 4) // 8
            r = _RULE.match(rest)
            if r:
                step = Step(
                    bridge,
                    int(m.group("table")),
                    (r.group("match") or "").strip(),
                    int(r.group("prio")),
                    int(r.group("cookie"), 16) if r.group("cookie") else None,
                    depth=depth,
                )
            else:  # "No match." and the like
                step = Step(bridge, int(m.group("table")), rest, None, None, depth=depth)
            cur.steps.append(step)
            at_depth = {d: st for d, st in at_depth.items() if d < depth}
            at_depth[depth] = step
            continue
        s = line.strip()
        if step is None:
            m2 = re.match(r"Resuming from table (\d+)", s)
            if m2:
                cur.resumed_at = int(m2.group(1))
            continue
        # action lines sit 4 deeper than their table line: 4, 12, 20, … by resubmit level; the
        # outer step's actions continue after a nested lookup at the outer indentation
        indent = len(line) - len(line.lstrip(" "))
        owner = at_depth.get(max(0, (indent - 4) // 8), step)
        owner.actions.append(s)
    return passes


def flow_fields(flow: str) -> dict[str, str]:
    """'tcp,in_port=4,nw_src=…' -> {'tcp': '', 'in_port': '4', 'nw_src': '…'}."""
    out = {}
    for item in flow.split(","):
        item = item.strip()
        if not item:
            continue
        k, _, v = item.partition("=")
        out[k] = v
    return out


# -- talking to ovs-vswitchd (unixctl JSON-RPC) -------------------------------------------------


def ctl_path(rundir: str) -> str:
    """The ovs-vswitchd control socket in an OVS run directory (the lab names it
    ovs-vswitchd.ctl; a packaged OVS uses ovs-vswitchd.<pid>.ctl)."""
    plain = os.path.join(rundir, "ovs-vswitchd.ctl")
    if os.path.exists(plain):
        return plain
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        raise TraceError(f"no ovs-vswitchd control socket in {rundir} (set --ovs-rundir)") from None
    return os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")


class Appctl:
    """One connection to ovs-vswitchd's unixctl socket, kept open: `ovs-appctl` without a
    process per call (a trace takes well under a millisecond this way)."""

    def __init__(self, path: str, bridge: str = "br-int", timeout: float = 10.0):
        self.path, self.bridge, self.timeout = path, bridge, timeout
        self._sock: socket.socket | None = None
        self._buf = ""
        self._id = 0
        self._lock = threading.Lock()
        self._dec = json.JSONDecoder()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise TraceError(f"cannot reach ovs-vswitchd at {self.path}: {e}") from None
            self._sock, self._buf = s, ""
        return self._sock

    def call(self, method: str, *params: str) -> str:
        with self._lock:
            sock = self._connect()
            self._id += 1
            req = {"method": method, "params": list(params), "id": self._id}
            try:
                sock.sendall(json.dumps(req).encode())
                reply = self._read(sock)
            except OSError as e:
                self.close()
                raise TraceError(f"{method} on {self.path}: {e}") from None
        if reply.get("error"):
            raise TraceError(str(reply["error"]).strip())
        return reply.get("result") or ""

    def _read(self, sock) -> dict:
        while True:
            buf = self._buf.lstrip()
            if buf:
                try:
                    obj, end = self._dec.raw_decode(buf)
                except json.JSONDecodeError:
                    pass
                else:
                    self._buf = buf[end:]
                    return obj
            data = sock.recv(1 << 16)
            if not data:
                raise OSError("connection closed")
            self._buf += data.decode()

    def trace(self, flow: str, ct_next: list[str]) -> str:
        args = [self.bridge, flow]
        for st in ct_next:
            args += ["--ct-next", st]
        return self.call("ofproto/trace", *args)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# -- the agent's views ---------------------------------------------------------------------------


def fetch(path: str, agent: str | None = None, timeout: float = 10) -> dict:
    """GET a JSON view (/cluster, /flows) of an agent: `agent` is its unix socket (a path or
    `unix:PATH`, default $OVSCTL_AGENT or /run/ovsctl/agent.sock) or an http:// URL."""
    try:
        return agentclient.get(path, agent, timeout)
    except agentclient.AgentUnreachable as e:
        raise TraceError(f"cannot read {path} from the agent: {e}") from None


class NodeView:
    """One node as its agent sees it: /cluster and /flows."""

    def __init__(self, cluster: dict, flows: dict):
        self.cluster, self.flows = cluster, flows
        self.name: str = cluster["node"]
        self.node_ip: str = cluster.get("node_ip") or ""
        self.gateway: dict = cluster.get("gateway") or {}
        self.tunnel_ofport: int | None = cluster.get("tunnel_ofport")
        self.pods: list[dict] = [p for p in cluster.get("pods") or [] if p.get("ip")]
        self.local = {(p["namespace"], p["name"]): p for p in self.pods if p.get("local")}
        self.owners = {int(k, 16): v for k, v in (flows.get("owners") or {}).items()}
        self.pod_by_owner = {
            owners.Pod(*p["local"]["key"].rsplit("/", 1)).key: p for p in self.local.values()
        }
        self.nodes = {n["name"]: n for n in cluster.get("nodes") or []}

    @property
    def pod_cidr(self) -> str:
        n = self.nodes.get(self.name) or {}
        return n.get("pod_cidr") or ""

    def port_name(self, ofport: int) -> str:
        if ofport == self.gateway.get("ofport"):
            return "gateway"
        if ofport == self.tunnel_ofport:
            return "tunnel"
        for p in self.local.values():
            if p["local"]["ofport"] == ofport:
                return f"pod {p['namespace']}/{p['name']}"
        return f"port {ofport}"

    def local_pod_at(self, ofport: int) -> dict | None:
        return next((p for p in self.local.values() if p["local"]["ofport"] == ofport), None)

    def local_pod_ip(self, ip: str) -> dict | None:
        return next((p for p in self.local.values() if p["ip"] == ip), None)

    def node_by_ip(self, ip: str) -> str | None:
        return next((n for n, v in self.nodes.items() if v.get("ip") == ip), None)

    def node_of_pod_ip(self, ip: str) -> str | None:
        for n, v in self.nodes.items():
            if v.get("pod_cidr") and netaddr.IPAddress(ip) in netaddr.IPNetwork(v["pod_cidr"]):
                return n
        return None

    def owner_key(self, ck: int | None) -> str | None:
        if ck is None:
            return None
        oid = ck & cookies.OWNER_MASK
        return self.owners.get(oid) or (
            f"{cookies.decode(ck)['feature']}:{oid:#x}" if oid else None
        )

    def owner_label(self, key: str | None) -> str:
        """A readable owner: 'pod y/a', 'policy x/deny isolation', 'policy x/p ingress rule 0'."""
        if not key:
            return ""
        if key in self.pod_by_owner:
            p = self.pod_by_owner[key]
            return f"pod {p['namespace']}/{p['name']}"
        owner = owners.try_parse(key)
        if owner is not None:
            return owner.label()
        kind, _, rest = key.partition(":")  # FEATURE:0xID: a key only the agent knew
        return f"{kind} {rest}" if rest else kind

    def isolating(self, table: str, ip: str) -> list[str]:
        """Policies whose isolation drop for `ip` sits in IngressDefault/EgressDefault."""
        field_ = "nw_dst" if table == "IngressDefault" else "nw_src"
        out = set()
        for f in self.flows.get("desired") or []:
            if f["table"] != table:  # drops, or an audited policy's controller() instead
                continue
            if f"{field_}={ip}" not in f["match"].split(","):
                continue
            pol = policy_owner(f["owner"])
            if pol and pol["kind"] == "isolation":
                out.add(pol["policy"])
        return sorted(out)


def policy_owner(key: str) -> dict | None:
    """'policy/NS/NAME/ingress/IDX' or 'policy/NS/NAME/isolation' -> its parts (the shape the
    trace verdicts carry), through flows/owners.py."""
    owner = owners.try_parse(key)
    if isinstance(owner, owners.PolicyIsolation):
        return {"policy": owner.policy, "kind": "isolation"}
    if isinstance(owner, owners.PolicyRule):
        return {
            "policy": owner.policy,
            "kind": "rule",
            "direction": owner.direction,
            "rule": owner.index,
        }
    return None


# -- what to trace ------------------------------------------------------------------------------


@dataclass
class End:
    """A source or destination: a pod, a Service, or a plain IP."""

    kind: str  # "pod", "service", "ip"
    ip: str
    label: str
    pod: dict | None = None
    service: dict | None = None

    @property
    def node(self) -> str | None:
        return self.pod.get("node") if self.pod else None


def resolve(spec: str, view: NodeView) -> End:
    """'ns/name' (a pod, else a Service), 'svc:ns/name' or 'service/ns/name', a bare name (in
    namespace default), or an IP (a pod's or a ClusterIP counts as that pod or Service)."""
    svcs = view.cluster.get("services") or []
    want_svc = False
    s = spec
    for prefix in ("svc:", "svc/", "service/", "services/"):
        if s.startswith(prefix) and s.count("/") >= (2 if prefix.endswith("/") else 1):
            s, want_svc = s[len(prefix) :], True
            break
    try:
        ip = str(netaddr.IPAddress(s))
    except (netaddr.AddrFormatError, ValueError):
        ip = None
    if ip is not None:
        for p in view.pods:
            if p["ip"] == ip:
                return End("pod", ip, f"{p['namespace']}/{p['name']}", pod=p)
        for sv in svcs:
            if sv.get("cluster_ip") == ip:
                return End("service", ip, f"svc:{sv['namespace']}/{sv['name']}", service=sv)
        return End("ip", ip, ip)
    ns, _, name = s.rpartition("/")
    ns = ns or "default"
    if not want_svc:
        for p in view.pods:
            if (p["namespace"], p["name"]) == (ns, name):
                return End("pod", p["ip"], f"{ns}/{name}", pod=p)
    for sv in svcs:
        if (sv["namespace"], sv["name"]) == (ns, name):
            if not sv.get("cluster_ip"):
                raise TraceError(f"Service {ns}/{name} has no ClusterIP")
            return End("service", sv["cluster_ip"], f"svc:{ns}/{name}", service=sv)
    what = "Service" if want_svc else "pod or Service"
    raise TraceError(f"no {what} {ns}/{name} (and {spec!r} is not an IP address)")


def default_port(dst: End, proto: str) -> int | None:
    if proto == "icmp":
        return None
    if dst.kind == "service":
        for p in dst.service.get("ports") or []:
            if p["protocol"].lower() == proto:
                return p["port"]
        raise TraceError(f"{dst.label} has no {proto.upper()} port")
    if dst.kind == "pod":
        for _n, port, pr in dst.pod.get("ports") or []:
            if pr.lower() == proto:
                return port
    raise TraceError(f"{dst.label} declares no {proto.upper()} port: give --dport")


@dataclass
class Packet:
    proto: str
    nw_src: str
    nw_dst: str
    sport: int | None
    dport: int | None
    in_port: int
    dl_src: str
    dl_dst: str
    ttl: int = 64
    tun_src: str | None = None
    tun_dst: str | None = None

    def flow(self) -> str:
        f = [self.proto, f"in_port={self.in_port}"]
        if self.tun_dst:
            f += [f"tun_src={self.tun_src}", f"tun_dst={self.tun_dst}", "tun_id=0"]
        f += [
            f"dl_src={self.dl_src}",
            f"dl_dst={self.dl_dst}",
            f"nw_src={self.nw_src}",
            f"nw_dst={self.nw_dst}",
            f"nw_ttl={self.ttl}",
        ]
        if self.proto == "icmp":
            f += ["icmp_type=8", "icmp_code=0"]
        else:
            f += [f"{self.proto}_src={self.sport}", f"{self.proto}_dst={self.dport}"]
            if self.proto == "tcp":
                f.append("tcp_flags=syn")
        return ",".join(f)

    def describe(self) -> str:
        if self.proto == "icmp":
            return f"icmp {self.nw_src} -> {self.nw_dst} (echo request)"
        return f"{self.proto} {self.nw_src}:{self.sport} -> {self.nw_dst}:{self.dport}"


# -- tracing -------------------------------------------------------------------------------------


@dataclass
class Hop:
    node: str
    packet: Packet
    entered: str  # how the packet enters br-int here
    ct: str
    raw: str
    passes: list[Pass]
    outcome: dict = field(default_factory=dict)


@dataclass
class Trace:
    src: End
    dst: End
    proto: str
    dport: int | None
    sport: int | None
    hops: list[Hop] = field(default_factory=list)
    verdict: str = ""  # delivered, dropped, rejected
    to: str = ""  # where a delivered packet went
    reason: str = ""
    node: str = ""  # where the verdict happened
    table: str | None = None
    policy: str | None = None  # the policy whose flow decided a drop
    isolated_by: list[str] = field(default_factory=list)
    direction: str | None = None
    allowed_by: list[dict] = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # "egress"/"ingress" -> what the trace showed
    service: dict | None = None
    continues: dict | None = None  # the tunnel, when the next node is not at hand
    half: str | None = None  # "egress"/"ingress": only this node's half of the path was traced
    delivered_pod: str | None = None
    intent: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Delivered to the destination pod (or, for a Service, to the endpoint pod), or sent on
        through the tunnel towards it when the next node cannot be traced from here."""
        if self.verdict != "delivered":
            return False
        if self.continues is not None:
            return True
        want = self.service["endpoint_pod"] if self.service else self.dst.label
        return self.dst.kind == "ip" or self.delivered_pod == want

    def agrees(self) -> bool | None:
        """Does the traced verdict match the intent? None when there is nothing to compare. A
        half trace (up to the tunnel, or from it) is compared with that half of the intent."""
        if self.intent is None or self.verdict == "rejected":
            return None
        if self.half:
            return self.intent[self.half]["allowed"] == self.reached
        return self.intent["allowed"] == self.reached

    def to_dict(self) -> dict:
        return {
            "src": self.src.label,
            "dst": self.dst.label,
            "proto": self.proto,
            "dport": self.dport,
            "sport": self.sport,
            "verdict": self.verdict,
            "to": self.to,
            "reason": self.reason,
            "node": self.node,
            "table": self.table,
            "policy": self.policy,
            "direction": self.direction,
            "isolated_by": self.isolated_by,
            "allowed_by": self.allowed_by,
            "egress": self.checks.get("egress"),
            "ingress": self.checks.get("ingress"),
            "service": self.service,
            "continues": self.continues,
            "half": self.half,
            "intent": self.intent,
            "agrees_with_intent": self.agrees(),
            "notes": self.notes,
            "hops": [
                {
                    "node": h.node,
                    "flow": h.packet.flow(),
                    "entered": h.entered,
                    "ct_next": h.ct,
                    "outcome": h.outcome,
                    "passes": [
                        {
                            "flow": p.flow,
                            "ct_state": p.ct_state,
                            "nat": {"from": p.nat_from, "to": p.nat_to} if p.nat_to else None,
                            "steps": [
                                {
                                    "table_id": s.table_id,
                                    "table": s.table,
                                    "priority": s.priority,
                                    "match": s.match,
                                    "cookie": None if s.cookie is None else f"{s.cookie:#x}",
                                    "owner": s.owner,
                                    "actions": s.actions,
                                    "depth": s.depth,
                                }
                                for s in p.own()
                            ],
                        }
                        for p in h.passes
                    ],
                }
                for h in self.hops
            ],
        }


class Tracer:
    """Traces over the nodes at hand: `views` (NodeView per node) and `runners` (an object with
    .trace(flow, ct_next) -> ofproto/trace text, per node). With one node (a real node), a hop
    that leaves through the tunnel ends the trace with "continues on node X"."""

    def __init__(self, views: dict[str, NodeView], runners: dict):
        if not views:
            raise TraceError("no node to trace on")
        self.views, self.runners = views, runners
        self.any = next(iter(views.values()))
        self.intents = intents.Intents(self.any.cluster)

    def close(self) -> None:
        for r in self.runners.values():
            close = getattr(r, "close", None)
            if close:
                close()

    # -- one hop -----------------------------------------------------------------------------

    def hop(self, node: str, pkt: Packet, entered: str, ct: str) -> Hop:
        view = self.views[node]
        flow = pkt.flow()
        raw = self.runners[node].trace(flow, [ct] * CT_PASSES)
        passes = parse(raw)
        if not passes:
            raise TraceError(f"unexpected ofproto/trace output on {node}: {raw[:200]!r}")
        for p in passes:
            for s in p.steps:
                if s.bridge == p.bridge:
                    s.owner = view.owner_key(s.cookie)
        h = Hop(node, pkt, entered, ct, raw, passes)
        h.outcome = self._outcome(view, h)
        return h

    def _outcome(self, view: NodeView, h: Hop) -> dict:
        last = h.passes[-1]
        steps = last.top()
        outs = [o for s in last.own() for o in s.outputs]
        if not outs and any(s.in_port_output for s in steps):
            outs = [h.packet.in_port]
        final = flow_fields(last.final_flow) if last.final_flow != "unchanged" else {}
        if outs:
            port = outs[-1]
            name = view.port_name(port)
            out = {"kind": "output", "port": port, "to": name}
            if name == "tunnel":
                tun_dst = final.get("tun_dst", "")
                out.update(tun_dst=tun_dst, next_node=view.node_by_ip(tun_dst))
            return out
        s = steps[-1] if steps else None
        if s is None:
            return {"kind": "drop", "table": None}
        out = {
            "kind": "drop",
            "table": s.table,
            "table_id": s.table_id,
            "priority": s.priority,
            "match": s.match,
            "owner": view.owner_key(s.cookie),
        }
        if s.to_controller and s.goto is None:
            if s.table in ("IngressDefault", "EgressDefault"):
                out["audited"] = True  # an audited policy's drop: to the agent, logged, no further
            else:
                out["kind"] = "controller"  # a Service without endpoints: the agent rejects
        return out

    # -- a whole path --------------------------------------------------------------------------

    def trace(
        self,
        src: str | End,
        dst: str | End,
        proto: str = "tcp",
        dport: int | None = None,
        sport: int | None = DEFAULT_SPORT,
        node: str | None = None,
        ct: str = CT_NEW,
    ) -> Trace:
        proto = proto.lower()
        if proto not in PROTOS:
            raise TraceError(f"--proto must be one of {', '.join(PROTOS)}")
        src = src if isinstance(src, End) else resolve(src, self.any)
        dst = dst if isinstance(dst, End) else resolve(dst, self.any)
        if src.kind == "service":
            raise TraceError(f"a Service ({src.label}) cannot be a source")
        if dport is None:
            dport = default_port(dst, proto)
        if proto == "icmp":
            dport = sport = None
        t = Trace(src, dst, proto, dport, sport)
        start, pkt, entered = self._first(t, node)
        cur_node = start
        for _ in range(MAX_HOPS):
            h = self.hop(cur_node, pkt, entered, ct)
            t.hops.append(h)
            oc = h.outcome
            if oc["kind"] != "output" or oc["to"] != "tunnel":
                break
            nxt = oc.get("next_node")
            if nxt not in self.views or nxt not in self.runners:
                t.continues = {"node": nxt, "tun_dst": oc.get("tun_dst")}
                t.half = "egress"
                break
            pkt, entered = self._through_tunnel(h, nxt), f"tunnel from {cur_node}"
            cur_node = nxt
        self._explain(t)
        return t

    def _first(self, t: Trace, node: str | None) -> tuple[str, Packet, str]:
        src, dst = t.src, t.dst
        if src.kind == "pod":
            home = src.node
            if home in self.views:
                view = self.views[home]
                loc = view.local.get((src.pod["namespace"], src.pod["name"]))
                if loc is None:
                    raise TraceError(f"{src.label} is not plugged in on {home} (yet)")
                dl_dst = view.gateway["mac"]
                if dst.kind == "pod" and (dst.pod["namespace"], dst.pod["name"]) in view.local:
                    dl_dst = view.local[(dst.pod["namespace"], dst.pod["name"])]["local"]["mac"]
                pkt = Packet(
                    t.proto,
                    src.ip,
                    dst.ip,
                    t.sport,
                    t.dport,
                    loc["local"]["ofport"],
                    loc["local"]["mac"],
                    dl_dst,
                )
                return home, pkt, f"pod {src.label}"
            # the source's node is not at hand: trace what arrives here through the tunnel
            here = node or next(iter(self.views))
            view = self.views[here]
            if dst.kind != "pod" or dst.node != here:
                raise TraceError(
                    f"{src.label} is on node {home}: run the trace there (this is {here})"
                )
            src_node = view.nodes.get(home) or {}
            if not src_node.get("ip") or view.tunnel_ofport is None:
                raise TraceError(f"node {home} of {src.label} is unknown here")
            t.notes.append(
                f"{src.label} is on node {home}: its part is not traced here; this is what "
                f"arrives from the tunnel (its egress policy is checked on {home})"
            )
            t.half = "ingress"
            pkt = Packet(
                t.proto,
                src.ip,
                dst.ip,
                t.sport,
                t.dport,
                view.tunnel_ofport,
                _gw_mac(src_node["pod_cidr"]),
                view.gateway["mac"],
                tun_src=src_node["ip"],
                tun_dst=view.node_ip,
            )
            return here, pkt, f"tunnel from {home}"
        # a plain IP: the host (or something routed through it) sends into the gateway port
        here = node
        if here is None:
            here = dst.node if dst.kind == "pod" and dst.node in self.views else None
        here = here or next(iter(self.views))
        if here not in self.views:
            raise TraceError(f"no node {here} here")
        view = self.views[here]
        if dst.kind == "pod" and (dst.pod["namespace"], dst.pod["name"]) in view.local:
            dl_dst = view.local[(dst.pod["namespace"], dst.pod["name"])]["local"]["mac"]
        elif view.node_of_pod_ip(dst.ip):
            dl_dst = VIRTUAL_ROUTER_MAC
        else:
            dl_dst = view.gateway["mac"]
        pkt = Packet(
            t.proto,
            src.ip,
            dst.ip,
            t.sport,
            t.dport,
            view.gateway["ofport"],
            view.gateway["mac"],
            dl_dst,
        )
        return here, pkt, f"gateway (host of {here})"

    def _through_tunnel(self, h: Hop, nxt: str) -> Packet:
        """The packet as the next node receives it: fields from the last pass's final flow."""
        final = flow_fields(h.passes[-1].final_flow)
        flow = flow_fields(h.passes[-1].flow)
        get = lambda k: final.get(k) or flow.get(k)  # noqa: E731
        view = self.views[nxt]
        p = h.packet
        port = lambda k: int(get(k)) if get(k) else None  # noqa: E731
        return Packet(
            p.proto,
            get("nw_src"),
            get("nw_dst"),
            port("tp_src"),
            port("tp_dst"),
            view.tunnel_ofport,
            get("dl_src"),
            get("dl_dst"),
            int(get("nw_ttl") or p.ttl),
            tun_src=self.views[h.node].node_ip,
            tun_dst=h.outcome.get("tun_dst") or view.node_ip,
        )

    # -- what it means -----------------------------------------------------------------------

    def _explain(self, t: Trace) -> None:
        last = t.hops[-1]
        oc = last.outcome
        t.node = last.node
        # a Service: the DNAT OVS simulated
        for h in t.hops:
            for i, p in enumerate(h.passes):
                if p.nat_to and i > 0:
                    lb = next(
                        (
                            s
                            for s in h.passes[i - 1].top()
                            if s.table == "EndpointDNAT" and s.recirc_table is not None
                        ),
                        None,
                    )
                    if lb is None:
                        continue
                    nf = flow_fields(p.nat_to)
                    ep_ip, ep_port = nf.get("nw_dst"), nf.get("tp_dst")
                    ep = next((q for q in self.views[h.node].pods if q["ip"] == ep_ip), None)
                    t.service = {
                        "service": t.dst.label,
                        "frontend": f"{t.dst.ip}:{t.dport}",
                        "endpoint": f"{ep_ip}:{ep_port}",
                        "endpoint_pod": f"{ep['namespace']}/{ep['name']}" if ep else None,
                        "node": h.node,
                    }
        # rule tables: who allowed what, per direction
        t.checks = {
            "egress": self._check(t, "egress"),
            "ingress": self._check(t, "ingress"),
        }
        for d in ("egress", "ingress"):
            t.allowed_by += t.checks[d].get("allowed_by") or []
        if oc["kind"] == "output":
            t.verdict = "delivered"
            if oc["to"] == "tunnel":
                nxt = oc.get("next_node") or "?"
                t.to = f"the tunnel to {nxt} ({oc.get('tun_dst')})"
                t.reason = f"continues on node {nxt} (tunnel to {oc.get('tun_dst')})"
            elif oc["to"] == "gateway":
                t.to = f"gateway of {last.node} (the host; leaves the cluster masqueraded)"
                t.reason = "sent to the host"
            else:
                t.to = f"{oc['to']} on {last.node} (port {oc['port']})"
                t.reason = "no policy stopped it"
                if oc["to"].startswith("pod "):
                    t.delivered_pod = oc["to"][4:]
        elif oc["kind"] == "controller":
            t.verdict = "rejected"
            t.table = oc["table"]
            t.reason = (
                f"{t.dst.label}:{t.dport} has no ready endpoint: the agent answers with a TCP "
                "reset / ICMP port unreachable"
            )
        else:
            t.verdict = "dropped"
            t.table = oc.get("table")
            pol = policy_owner(oc.get("owner") or "")
            if t.table in ("IngressDefault", "EgressDefault") and pol:
                d = "ingress" if t.table == "IngressDefault" else "egress"
                chk = t.checks[d]
                t.direction = d
                t.policy = pol["policy"]
                t.isolated_by = chk.get("isolated_by") or [pol["policy"]]
                others = [p for p in t.isolated_by if p != t.policy]
                t.reason = (
                    f"{chk.get('pod')} is isolated for {d} by NetworkPolicy {t.policy}"
                    + (f" (and {', '.join(others)})" if others else "")
                    + " and no rule allowed it"
                )
                if oc.get("audited"):
                    t.notes.append(f"{t.policy} is audited: the agent logs this drop")
            else:
                doc = tables.BY_NAME[t.table].doc if t.table in tables.BY_NAME else ""
                t.reason = f"dropped in table {t.table}" + (f": {doc}" if doc else "")
                if oc.get("priority") == 0 and t.table == "L2Forwarding":
                    t.reason += " (no port for this destination MAC)"
        for d in ("egress", "ingress"):
            if t.verdict != "delivered" and t.checks[d].get("status") == "not-checked":
                t.checks[d] = {"status": "not-reached"}
        # what the policies intend (for a Service: towards the endpoint the trace picked)
        src_i = self.intents.pod(t.src.label) if t.src.kind == "pod" else t.src.ip
        if t.dst.kind != "service":
            dst_i = self.intents.pod(t.dst.label) if t.dst.kind == "pod" else t.dst.ip
            port = t.dport
        elif t.service:
            ep_ip, _, ep_port = t.service["endpoint"].partition(":")
            dst_i = self.intents.pod(t.service["endpoint_pod"] or "") or ep_ip
            port = int(ep_port) if ep_port.isdigit() else None
        else:
            dst_i = None  # no endpoint picked: nothing to evaluate
        if src_i is not None and dst_i is not None:
            t.intent = self.intents.evaluate(src_i, dst_i, port, t.proto).to_dict()

    def _check(self, t: Trace, direction: str) -> dict:
        """What the rule tables of `direction` did, on the node that enforces it (the source's
        node for egress, the destination's for ingress)."""
        rule_t = "EgressRule" if direction == "egress" else "IngressRule"
        dflt_t = "EgressDefault" if direction == "egress" else "IngressDefault"
        for h in t.hops:
            view = self.views[h.node]
            for p in h.passes:
                fl = flow_fields(p.flow)
                ip = fl.get("nw_src") if direction == "egress" else fl.get("nw_dst")
                steps = p.top()
                names = [s.table for s in steps]
                if rule_t not in names:
                    continue
                pod = view.local_pod_ip(ip or "")
                if pod is None:
                    continue  # this pod is not on this node: its policy is enforced elsewhere
                who = f"{pod['namespace']}/{pod['name']}"
                out = {"pod": who, "node": h.node, "isolated_by": view.isolating(dflt_t, ip)}
                rule = steps[names.index(rule_t)]
                key = view.owner_key(rule.cookie) or ""
                pol = policy_owner(key)
                if pol and pol["kind"] == "rule":
                    out["status"] = "allowed"
                    out["allowed_by"] = [
                        {
                            "policy": pol["policy"],
                            "direction": pol["direction"],
                            "rule": pol["rule"],
                            "node": h.node,
                        }
                    ]
                elif not rule.is_miss:
                    out["status"] = "always-allowed"
                    out["by"] = f"{rule.match} ({view.owner_label(key)})"
                elif dflt_t in names:
                    d = steps[names.index(dflt_t)]
                    stops = d.drops or (d.to_controller and d.goto is None)
                    out["status"] = "dropped" if stops and not d.is_miss else "not-isolated"
                    if out["status"] == "not-isolated" and out["isolated_by"]:
                        out["status"] = "passed"  # isolated, yet the default table let it by
                return out
        return {"status": "not-checked"}


def _gw_mac(pod_cidr: str) -> str:
    net = netaddr.IPNetwork(pod_cidr)
    return mac_from_ip(str(netaddr.IPAddress(net.first + 1)))


# -- text -----------------------------------------------------------------------------------------


def render(t: Trace, tracer: Tracer, raw: bool = False) -> str:
    lines = []
    what = f"{t.proto}/{t.dport}" if t.dport else t.proto
    lines.append(
        f"trace {t.src.label} -> {t.dst.label} {what} (a new connection; no packet is sent)"
    )
    for n in t.notes:
        lines.append(f"note: {n}")
    for h in t.hops:
        view = tracer.views[h.node]
        lines.append("")
        lines.append(
            f"node {h.node}: {h.packet.describe()}, in_port {h.packet.in_port} ({h.entered})"
        )
        bridge = getattr(tracer.runners.get(h.node), "bridge", "br-int")
        lines.append(f"  ofproto/trace {bridge} '{h.packet.flow()}'")
        for i, p in enumerate(h.passes):
            if i > 0:
                lines.append(f"  -- recirculated: conntrack state {p.ct_state or '?'}")
                if p.nat_to:
                    lines.append(f"  -- NAT: {p.nat_from}  =>  {p.nat_to}")
            for s in p.own():
                ind = "    " * s.depth
                owner = view.owner_label(view.owner_key(s.cookie))
                head = f"  {ind}{s.table_id:>3} {s.table:<16}"
                if s.is_miss:
                    lines.append(f"{head} (miss) {s.action_text()}")
                    continue
                match = s.match or "(any)"
                lines.append(f"{head} {match}, priority {s.priority}  [{owner}]")
                acts = s.action_text()
                if acts:
                    lines.append(f"  {ind}{'':20} {acts}")
                for a in s.actions:
                    if a.startswith("-> output") or a.startswith("-> tunneling to"):
                        lines.append(f"  {ind}{'':20} {a}")
        oc = h.outcome
        if oc["kind"] == "output" and oc["to"] == "tunnel":
            lines.append(
                f"  => out to the tunnel: node {oc.get('next_node')} ({oc.get('tun_dst')})"
            )
        if raw:
            lines.append("")
            lines += ["  | " + x for x in h.raw.splitlines()]
    lines.append("")
    head = t.verdict.upper()
    if t.verdict == "delivered":
        lines.append(f"verdict: {head} to {t.to}")
        if t.continues:
            lines.append(
                f"  continues on node {t.continues['node']} (tunnel to {t.continues['tun_dst']}); "
                f"trace the rest there"
            )
    elif t.verdict == "dropped":
        lines.append(f"verdict: {head} on {t.node} in table {t.table}: {t.reason}")
    else:
        lines.append(f"verdict: {head} on {t.node} ({t.table}): {t.reason}")
    if t.service:
        sv = t.service
        lines.append(
            f"  Service {sv['service']} {sv['frontend']}: DNAT to endpoint {sv['endpoint']}"
            f" ({sv['endpoint_pod'] or 'not a pod'}), picked on {sv['node']} by the ServiceLB hash"
            f" of this packet (source port {t.sport})"
        )
    for d in ("egress", "ingress"):
        c = t.checks.get(d) or {}
        lines.append(f"  {d:<7} {_check_text(d, c)}")
    if t.intent is not None:
        lines.append(f"  intent  {intent_text(t.intent)}")
        if t.agrees() is False:
            lines.append("  !! the switch and the policies' intent DISAGREE")
    return "\n".join(lines)


def intent_text(it: dict) -> str:
    parts = []
    for d in ("egress", "ingress"):
        x = it[d]
        if not x["pod"]:
            continue
        if x.get("always"):
            parts.append(f"{d} of {x['pod']}: {x['always']}")
        elif not x["isolated_by"]:
            parts.append(f"{d} of {x['pod']}: not isolated")
        elif x["allowed_by"]:
            r = x["allowed_by"][0]
            parts.append(f"{d} of {x['pod']}: {r['policy']} {d} rule {r['rule']}")
        else:
            parts.append(f"{d} of {x['pod']}: isolated by {', '.join(x['isolated_by'])}, no rule")
    verdict = "the policies allow it" if it["allowed"] else "the policies deny it"
    return verdict + (f" ({'; '.join(parts)})" if parts else "")


def _check_text(direction: str, c: dict) -> str:
    st = c.get("status")
    iso = ", ".join(c.get("isolated_by") or [])
    if st == "allowed":
        r = c["allowed_by"][0]
        return (
            f"{c['pod']}: allowed by NetworkPolicy {r['policy']} {direction} rule {r['rule']}"
            + (f" (isolated by {iso})" if iso else "")
        )
    if st == "dropped":
        return f"{c['pod']}: isolated by {iso or '?'}; no rule allowed it"
    if st == "not-isolated":
        return f"{c['pod']}: not isolated"
    if st == "always-allowed":
        return f"{c['pod']}: always allowed: {c.get('by')}"
    if st == "passed":
        return f"{c['pod']}: passed the {direction} tables (isolated by {iso})"
    if st == "not-reached":
        return "not reached (the packet stopped before)"
    return "not checked here (not a pod, or its node is not at hand)"


# -- reachability ----------------------------------------------------------------------------------


def lab_matrix(tracer: Tracer, namespace: str | None = None) -> tuple[dict, dict, dict]:
    """Every pod to every other pod on every declared TCP/UDP port, traced through every node
    (all nodes at hand): ({key: reachable}, {key: intended}, {key: Trace})."""
    pods = tracer.intents.pods
    traced, intended, traces = {}, {}, {}
    ends = {p["namespace"] + "/" + p["name"]: p for p in tracer.any.pods}
    for src, dst, port, proto in intents.pairs(pods, namespace):
        key = intents.probe_key(src, dst, port, proto)
        s = End("pod", src.ip, src.key, pod=ends[src.key])
        d = End("pod", dst.ip, dst.key, pod=ends[dst.key])
        t = tracer.trace(s, d, proto.lower(), port)
        traces[key] = t
        traced[key] = t.reached
        intended[key] = tracer.intents.evaluate(src, dst, port, proto).allowed
    return traced, intended, traces


def node_matrix(tracer: Tracer, node: str, namespace: str | None = None) -> dict:
    """On one node: pairs with a local end. Local -> local is traced whole; local -> remote up
    to the tunnel (the egress half, enforced here); remote -> local from the tunnel on (the
    ingress half). Each half is compared with the same half of the intent."""
    view = tracer.views[node]
    pods = tracer.intents.pods
    ends = {p["namespace"] + "/" + p["name"]: p for p in view.pods}
    local = {f"{ns}/{n}" for ns, n in view.local}
    traced, intended, scope = {}, {}, {}
    for src, dst, port, proto in intents.pairs(pods, namespace):
        s_local, d_local = src.key in local, dst.key in local
        if not (s_local or d_local):
            continue
        key = intents.probe_key(src, dst, port, proto)
        s = End("pod", src.ip, src.key, pod=ends[src.key])
        d = End("pod", dst.ip, dst.key, pod=ends[dst.key])
        t = tracer.trace(s, d, proto.lower(), port, node=node)
        it = tracer.intents.evaluate(src, dst, port, proto)
        traced[key] = t.reached
        if s_local and d_local:
            scope[key], intended[key] = "full", it.allowed
        elif s_local:
            scope[key], intended[key] = "egress", it.egress.allowed
        else:
            scope[key], intended[key] = "ingress", it.ingress.allowed
    diffs = [
        {"key": k, "traced": traced[k], "intended": intended[k], "scope": scope[k]}
        for k in traced
        if traced[k] != intended[k]
    ]
    return {
        "node": node,
        "traced": traced,
        "intended": intended,
        "scope": scope,
        "differences": diffs,
    }


def differences(traced: dict, intended: dict) -> list[dict]:
    return [
        {"key": k, "traced": traced[k], "intended": intended.get(k)}
        for k in traced
        if traced[k] != intended.get(k)
    ]


def render_reachability(traced: dict, intended: dict, diffs: list[dict], scope=None) -> str:
    from ovsctl.tools.matrix import render_matrix

    out = ["traced (ofproto/trace of every pair through the live pipelines, no packet sent):"]
    out.append(render_matrix(traced) if traced else "(no pairs)")
    out.append("")
    out.append("intended (NetworkPolicy semantics from the cluster state):")
    out.append(render_matrix(intended) if intended else "(no pairs)")
    out.append("")
    if not diffs:
        out.append("differences: none — the switch does what the policies say")
    else:
        out.append(f"differences ({len(diffs)}):")
        for d in diffs:
            sc = f" [{d['scope']} half]" if d.get("scope") and d["scope"] != "full" else ""
            out.append(
                f"  !! {d['key']}{sc}: traced {'allowed' if d['traced'] else 'blocked'}, "
                f"intended {'allowed' if d['intended'] else 'blocked'}"
            )
    if scope and any(v != "full" for v in scope.values()):
        out.append(
            "\n(pairs with one end on another node are traced for this node's half: egress of "
            "a local source up to the tunnel, ingress of a local destination from the tunnel)"
        )
    return "\n".join(out)


# -- the node command ----------------------------------------------------------------------------


def node_tracer(agent: str, rundir: str, bridge: str = "br-int") -> Tracer:
    cluster = fetch("/cluster", agent)
    flows = fetch("/flows", agent)
    view = NodeView(cluster, flows)
    return Tracer({view.name: view}, {view.name: Appctl(ctl_path(rundir), bridge)})


def lab_tracer(lab) -> Tracer:
    """Every node of a lab: each agent's views (read inside the node's netns) and a unixctl
    connection to each node's ovs-vswitchd."""
    from concurrent.futures import ThreadPoolExecutor

    meta = lab.meta()
    nodes = sorted(meta["nodes"], key=lambda n: (len(n), n))  # node0 … node10

    def views(n):  # the agents' unix sockets are files: no need to enter the node's netns
        sock = lab.api_socket(n)
        return NodeView(fetch("/cluster", sock), fetch("/flows", sock))

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        vs = list(pool.map(views, nodes))
    return Tracer(
        {n: v for n, v in zip(nodes, vs, strict=True)},
        {n: Appctl(os.path.join(lab.ovs(n).rundir, "ovs-vswitchd.ctl")) for n in nodes},
    )


def main_trace(args) -> int:
    try:
        tracer = node_tracer(args.agent, args.ovs_rundir, args.bridge)
        try:
            t = tracer.trace(args.src, args.dst, args.proto, args.dport, args.sport)
            if args.json:
                print(json.dumps(t.to_dict(), indent=2))
            else:
                print(render(t, tracer, raw=args.raw))
        finally:
            tracer.close()
    except TraceError as e:
        print(f"ovsctl trace: {e}", file=sys.stderr)
        return 2
    return 0


def main_reachability(args) -> int:
    try:
        tracer = node_tracer(args.agent, args.ovs_rundir, args.bridge)
        try:
            res = node_matrix(tracer, tracer.any.name, args.namespace)
        finally:
            tracer.close()
    except TraceError as e:
        print(f"ovsctl reachability: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"node {res['node']}")
        print(render_reachability(res["traced"], res["intended"], res["differences"], res["scope"]))
    return 1 if res["differences"] else 0
