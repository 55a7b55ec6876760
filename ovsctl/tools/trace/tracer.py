"""Tracing a packet hop by hop across the nodes, and the explanation of its verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from flows import intent as intents
from flows import tables
from flows.family import family as ip_family
from flows.flow import nat_target, split_nat_target
from flows.model import VIRTUAL_ROUTER_MAC, mac_from_ip

from .checks import check
from .parse import (
    CT_NEW,
    CT_PASSES,
    DEFAULT_SPORT,
    MAX_HOPS,
    PROTOS,
    NotFoundError,
    Pass,
    TraceError,
    UnreachableError,
    flow_fields,
    parse,
)
from .tiers import TIER_OF, check_tier, decision, describe, disagreements
from .view import (
    End,
    NodeView,
    Packet,
    default_port,
    family_of,
    pod_ips,
    policy_owner,
    resolve,
    service_ips,
)


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
    cluster_policy: dict | None = None  # the ClusterNetworkPolicy rule that dropped it
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
    tier_disagreements: list[str] = field(default_factory=list)  # switch vs intent, by tier

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
            "cluster_policy": self.cluster_policy,
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
            "tiers": {d: check_tier(self.checks.get(d) or {}) for d in ("egress", "ingress")},
            "tier_disagreements": self.tier_disagreements,
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
            raise UnreachableError(f"unexpected ofproto/trace output on {node}: {raw[:200]!r}")
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
        if s.table in TIER_OF:
            out["cnp"] = decision(view, s, h.node)
        if s.to_controller and s.goto is None:
            if s.table in ("IngressDefault", "EgressDefault", *TIER_OF):
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
        family: int | None = None,
    ) -> Trace:
        """`family` (4 or 6): which address of a dual-stack pod or Service to trace; by
        default the family of an address given as SRC or DST, else IPv4 (a single-stack IPv6
        pod or Service: its IPv6 address)."""
        proto = proto.lower()
        if proto not in PROTOS:
            raise TraceError(f"--proto must be one of {', '.join(PROTOS)}")
        if family not in (None, 4, 6):
            raise TraceError(f"--family must be 4 or 6, not {family!r}")
        given = {
            v
            for v in (
                None if isinstance(src, End) else family_of(src),
                None if isinstance(dst, End) else family_of(dst),
            )
            if v
        }
        if family is not None and given - {family} or len(given) > 1:
            raise TraceError("SRC and DST must be of one IP family (and of --family)")
        version = family or (given.pop() if given else None)
        if version is None and not (isinstance(src, End) and isinstance(dst, End)):
            # a name: its IPv4 address if the other end has one too, else both's IPv6
            version = self._common_family(src, dst)
        src = src if isinstance(src, End) else resolve(src, self.any, version)
        dst = dst if isinstance(dst, End) else resolve(dst, self.any, version)
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

    def _common_family(self, src, dst) -> int | None:
        """4 when both ends (named) have an IPv4 address, else 6 when both have IPv6."""
        ends = [e if isinstance(e, End) else resolve(e, self.any) for e in (src, dst)]
        fams = []
        for e in ends:
            if e.kind == "pod":
                addrs = pod_ips(e.pod)
            elif e.kind == "service":
                addrs = service_ips(e.service)
            else:
                addrs = [e.ip]
            fams.append({netaddr.IPAddress(a).version for a in addrs})
        both = fams[0] & fams[1]
        if not both:
            raise TraceError(f"{ends[0].label} and {ends[1].label} share no IP family")
        return 4 if 4 in both else 6

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
            raise NotFoundError(f"no node {here} here")
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
        v6 = p.ipv6
        return Packet(
            p.proto,
            get("ipv6_src" if v6 else "nw_src"),
            get("ipv6_dst" if v6 else "nw_dst"),
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
                    ep_ip = (nf.get("nw_dst") or nf.get("ipv6_dst") or "").strip("[]")
                    ep_port = nf.get("tp_dst")
                    ep = self.views[h.node].pod_by_ip(ep_ip)
                    t.service = {
                        "service": t.dst.label,
                        "frontend": nat_target(t.dst.ip, t.dport),
                        "endpoint": nat_target(ep_ip, ep_port),
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
            if oc.get("cnp"):
                self._cnp_drop(t, oc)
            elif t.table in ("IngressDefault", "EgressDefault") and pol:
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
                if chk.get("cnp_passed"):
                    t.reason += f", after {describe(chk['cnp_passed'])} passed it on"
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
            ep_ip, ep_port = split_nat_target(t.service["endpoint"])
            dst_i = self.intents.pod(t.service["endpoint_pod"] or "") or ep_ip
            port = int(ep_port) if ep_port.isdigit() else None
        else:
            dst_i = None  # no endpoint picked: nothing to evaluate
        if src_i is not None and dst_i is not None:
            # the family of the traced packet: an ipBlock is checked against that address
            fam = ip_family(t.src.ip).version if t.src.ip else None
            t.intent = self.intents.evaluate(src_i, dst_i, port, t.proto, fam).to_dict()
            t.tier_disagreements = disagreements(t.checks, t.intent, t.half)

    @staticmethod
    def _cnp_drop(t: Trace, oc: dict) -> None:
        """A ClusterNetworkPolicy Deny dropped it: name the rule (and an Admin Pass before a
        Baseline Deny)."""
        dec = oc["cnp"]
        t.cluster_policy = dec
        t.direction = dec["direction"]
        t.reason = f"dropped in {t.table} by {describe(dec)}"
        passed = (t.checks.get(dec["direction"]) or {}).get("cnp_passed")
        if passed and dec["tier"] == "Baseline":
            t.reason += f" (after {describe(passed)} passed it on)"
        if oc.get("audited"):
            t.notes.append(f"ClusterNetworkPolicy {dec['policy']} is audited: the agent logs it")

    def _check(self, t: Trace, direction: str) -> dict:
        """What the policy tables of `direction` did (checks.check)."""
        return check(self.views, t, direction)


def _gw_mac(pod_cidr: str) -> str:
    net = netaddr.IPNetwork(pod_cidr)
    return mac_from_ip(str(netaddr.IPAddress(net.first + 1)))
