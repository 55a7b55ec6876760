"""The pipeline as a graph, from a node's installed flows (pure: rows in, documents out).

Rows are `ovsctl.tools.flowdump.dump` rows named by `flowview.name_rows` (owner_key,
owner_name) and given a UI owner (`owner_of`). Tables come in pipeline order, named from
flows/tables.py; edges are read from the flows' actions (`goto_table:T`, `resubmit(,T)`,
`ct(...,table=T)`); exits are where a flow's packet leaves the pipeline. What a flow's actions
say is worked out once per distinct action text (`action_info`, memoised), so a refresh of a
large pipeline costs the counters only.
"""

from __future__ import annotations

import re
from functools import lru_cache

from flows import owners, tables
from ovsctl.tools import flowview

KINDS = ("pod", "policy", "cnp", "service", "node", "pipeline", "unknown")
MAX_LIMIT = 5000

_RESUBMIT = re.compile(r"resubmit\((?:[^,()]*),(\d+)\)$")
_OUTPUT_PORT = re.compile(r"output:(\d+)$")


def split_actions(text: str) -> list[str]:
    """An action list at its top-level commas (those inside parentheses belong to the action:
    `ct(commit,table=70,nat(dst=10.0.0.1:80))`, `learn(...)`); OVS prints an empty list as
    `drop`."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if text[start:]:
        out.append(text[start:])
    return [a.strip() for a in out if a.strip()]


def _ct_table(action: str) -> int | None:
    """`ct(commit,table=70,zone=1,nat(...))` -> 70 (only ct's own options, not nat's)."""
    if not action.startswith("ct(") or not action.endswith(")"):
        return None
    for opt in split_actions(action[3:-1]):
        if opt.startswith("table="):
            try:
                return int(opt[len("table=") :])
            except ValueError:
                return None
    return None


@lru_cache(maxsize=65536)
def action_info(actions: str, gateway: int | None = None, tunnel: int | None = None) -> tuple:
    """(edges, exits, drop) of one flow's actions: edges ((table, kind), ...) with kind goto,
    resubmit or ct; exits (kind, ...) among output, gateway, tunnel, controller, drop; drop
    True when the flow drops (`drop`, an empty action list). `gateway`/`tunnel`: the node's
    ofports of those, to tell its outputs apart."""
    items = split_actions(actions)
    if not items or items == ["drop"]:
        return (), ("drop",), True
    edges, exits = [], []
    for a in items:
        if a.startswith("goto_table:"):
            edges.append((int(a[len("goto_table:") :]), "goto"))
        elif a.startswith("resubmit"):
            m = _RESUBMIT.match(a)
            if m:
                edges.append((int(m.group(1)), "resubmit"))
        elif a.startswith("ct("):
            t = _ct_table(a)
            if t is not None:
                edges.append((t, "ct"))
        elif a.lower().startswith("controller"):
            exits.append("controller")
        elif a.endswith("->tun_dst") and a.startswith("set_field:"):
            exits.append("tunnel")
        elif a in ("IN_PORT", "in_port", "NORMAL", "LOCAL") or a.startswith("output:"):
            m = _OUTPUT_PORT.match(a)
            port = int(m.group(1)) if m else None
            if port is not None and port == gateway:
                exits.append("gateway")
            elif port is not None and port == tunnel:
                exits.append("tunnel")
            else:
                exits.append("output")
    return tuple(dict.fromkeys(edges)), tuple(dict.fromkeys(exits)), False


def table_name(table_id: int) -> str:
    return tables.name_of(table_id, "table{}")


# ---- owners ------------------------------------------------------------------------------------


def owner_of(key: str | None, feature: str, oid: int, text: str, pods: dict[str, dict]) -> dict:
    """The UI owner of a flow: {"id", "kind", "name", "text"}. `key` the owner key the agent
    gave the cookie (None: unknown), `pods` flowview.pod_index (attachment key -> pod),
    `text` what `ovsctl flows` prints for it. A policy's rules and isolation are one owner
    (policy/NS/NAME), as are a ClusterNetworkPolicy's rules (cnp/NAME) and a pod's
    attachments (pod/NS/NAME)."""
    owner = owners.try_parse(key) if key else None
    if isinstance(owner, owners.Pod):
        p = pods.get(key)
        if p and p.get("name"):
            name = f"{p['namespace']}/{p['name']}" if p["namespace"] else p["name"]
            return {"id": f"pod/{name}", "kind": "pod", "name": name, "text": text}
        return {"id": f"pod/{owner.container_id}", "kind": "pod", "name": key, "text": text}
    if isinstance(owner, (owners.PolicyRule, owners.PolicyIsolation)):
        return {
            "id": f"policy/{owner.policy}",
            "kind": "policy",
            "name": owner.policy,
            "text": text,
        }
    if isinstance(owner, owners.ClusterPolicyRule):
        return {"id": f"cnp/{owner.name}", "kind": "cnp", "name": owner.name, "text": text}
    if isinstance(owner, owners.Service):
        name = f"{owner.namespace}/{owner.name}"
        return {"id": f"service/{name}", "kind": "service", "name": name, "text": text}
    if isinstance(owner, owners.Node):
        return {"id": f"node/{owner.name}", "kind": "node", "name": owner.name, "text": text}
    if isinstance(owner, owners.Pipeline):
        return {"id": "pipeline", "kind": "pipeline", "name": "pipeline", "text": text}
    name = f"{feature}:{oid:#x}" if oid else feature
    return {"id": f"unknown/{name}", "kind": "unknown", "name": name, "text": text}


class OwnerFilter:
    """Which flows an owner touches: its own (by UI owner id) and those `ovsctl flows` selects
    for it (flowview.select): for a pod, every flow whose match or actions name one of its
    addresses (policy clauses, a Service's DNAT to it); for a policy or a
    ClusterNetworkPolicy, its flows by owner id too when the agent is down (no owner keys)."""

    def __init__(self, owner_id: str, pod_ips: list[str] | tuple = ()):
        self.id = owner_id
        self.pod_ips = {ip for ip in pod_ips if ip}

    def select(self, rows: list[dict]) -> list[dict]:
        """The rows the owner touches, in order."""
        kind, _, name = self.id.partition("/")
        more: list[dict] = []
        if kind == "pod" and self.pod_ips:
            more = flowview.select(rows, pod_keys=set(), pod_ips=self.pod_ips)
        elif kind == "policy":
            ns, pol = flowview.split_ref(name)
            ids = flowview.policy_owner_ids(ns, pol)
            more = flowview.select(rows, policy=(ns, pol), policy_ids=ids)
        elif kind == "cnp":
            ids = set(flowview.cluster_policy_owners(name))
            more = flowview.select(rows, policy=("cnp", name), policy_ids=ids)
        chosen = {id(r) for r in more}
        return [r for r in rows if r["ui_owner"]["id"] == self.id or id(r) in chosen]


def check_owner(owner_id: str) -> str:
    """An owner id as /api/owners lists them (kind/...), or ValueError."""
    kind = owner_id.split("/", 1)[0]
    if kind not in KINDS or (kind != "pipeline" and "/" not in owner_id):
        raise ValueError(
            f"owner {owner_id!r}: give KIND/NAME (pod/NS/NAME, policy/NS/NAME, cnp/NAME, "
            "service/NS/NAME, node/NAME) or pipeline"
        )
    return owner_id


# ---- documents ---------------------------------------------------------------------------------


def pipeline_doc(
    node: str,
    rows: list[dict],
    now: float,
    ports: dict | None = None,
    match=None,
) -> dict:
    """The /api/pipeline document of one node's rows. `ports` {"gateway": ofport, "tunnel":
    ofport}; `match` an OwnerFilter (tables it touches get hit=true)."""
    ports = ports or {}
    chosen = {id(r) for r in match.select(rows)} if match is not None else set()
    gw, tun = ports.get("gateway"), ports.get("tunnel")
    per: dict[int, dict] = {}
    edges: dict[tuple, int] = {}
    exits: dict[tuple, int] = {}
    for r in rows:
        tid = r["table_id"]
        t = per.get(tid)
        if t is None:
            t = per[tid] = {
                "id": tid,
                "name": table_name(tid),
                "flows": 0,
                "packets": 0,
                "bytes": 0,
                "drop_flows": 0,
                "drop_packets": 0,
                "hit": False,
            }
        t["flows"] += 1
        t["packets"] += r["packets"]
        t["bytes"] += r["bytes"]
        fedges, fexits, drop = action_info(r["actions"], gw, tun)
        if drop:
            t["drop_flows"] += 1
            t["drop_packets"] += r["packets"]
        for to, kind in fedges:
            edges[(tid, to, kind)] = edges.get((tid, to, kind), 0) + 1
        for kind in fexits:
            exits[(tid, kind)] = exits.get((tid, kind), 0) + 1
        if id(r) in chosen:
            t["hit"] = True
    return {
        "node": node,
        "time": now,
        "tables": [per[k] for k in sorted(per)],
        "edges": [
            {"from": f, "to": to, "kind": kind, "flows": n}
            for (f, to, kind), n in sorted(edges.items())
        ],
        "exits": [{"table": t, "to": kind, "flows": n} for (t, kind), n in sorted(exits.items())],
    }


def flow_row(r: dict) -> dict:
    """One row of /api/flows."""
    return {
        "priority": int(r["match"].split(",", 1)[0].removeprefix("priority=")),
        "match": r["match"],
        "actions": r["actions"],
        "cookie": r["cookie"],
        "owner": r["ui_owner"],
        "packets": r["packets"],
        "bytes": r["bytes"],
        "drop": action_info(r["actions"])[2],
    }


def flows_doc(
    node: str, rows: list[dict], table_id: int, match=None, offset: int = 0, limit: int = 500
) -> dict:
    """The /api/flows document: the table's flows (those `match` selects), highest priority
    first, `limit` of them from `offset`."""
    own = rows if match is None else match.select(rows)
    sel = [flow_row(r) for r in own if r["table_id"] == table_id]
    sel.sort(key=lambda f: (-f["priority"], f["match"]))
    limit = max(0, min(limit, MAX_LIMIT))
    return {
        "node": node,
        "table": {"id": table_id, "name": table_name(table_id)},
        "total": len(sel),
        "offset": offset,
        "flows": sel[offset : offset + limit],
    }


def owners_doc(node: str, rows: list[dict]) -> dict:
    """The /api/owners document: every owner with flows here, its flow count and tables."""
    by: dict[str, dict] = {}
    for r in rows:
        o = r["ui_owner"]
        e = by.get(o["id"])
        if e is None:
            e = by[o["id"]] = {"id": o["id"], "kind": o["kind"], "text": o["text"], "flows": 0}
            e["_tables"] = set()
        e["flows"] += 1
        e["_tables"].add(r["table_id"])
    out = []
    for oid in sorted(by, key=lambda k: (KINDS.index(by[k]["kind"]), k)):
        e = by[oid]
        e["tables"] = sorted(e.pop("_tables"))
        if e["kind"] in ("policy", "cnp", "pod"):
            e["text"] = oid.replace("/", " ", 1)  # one owner for all its rules / attachments
        out.append(e)
    return {"node": node, "owners": out}
