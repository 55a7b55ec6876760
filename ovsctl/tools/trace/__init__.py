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

from .cli import lab_tracer, main_reachability, main_trace, node_tracer
from .parse import (
    CT_NEW,
    CT_PASSES,
    CT_REPLY,
    DEFAULT_SPORT,
    MAX_HOPS,
    PROTOS,
    NotFoundError,
    Pass,
    Step,
    TraceError,
    UnreachableError,
    flow_fields,
    parse,
)
from .reach import differences, lab_matrix, node_matrix, render_reachability
from .switch import Appctl, ctl_path
from .text import intent_text, render
from .tracer import Hop, Trace, Tracer
from .view import End, NodeView, Packet, default_port, fetch, policy_owner, resolve

__all__ = [
    "DEFAULT_SPORT",
    "CT_NEW",
    "CT_REPLY",
    "CT_PASSES",
    "MAX_HOPS",
    "PROTOS",
    "TraceError",
    "NotFoundError",
    "UnreachableError",
    "Step",
    "Pass",
    "parse",
    "flow_fields",
    "ctl_path",
    "Appctl",
    "fetch",
    "NodeView",
    "policy_owner",
    "End",
    "resolve",
    "default_port",
    "Packet",
    "Hop",
    "Trace",
    "Tracer",
    "render",
    "intent_text",
    "lab_matrix",
    "node_matrix",
    "differences",
    "render_reachability",
    "node_tracer",
    "lab_tracer",
    "main_trace",
    "main_reachability",
]
