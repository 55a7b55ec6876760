"""`ovsctl flows`: the switch's flows with table names, owners named, filters, and `--diff`.

Cookies carry only a 40-bit hash of the owner key (flows/cookie.py), so owners are named with
the agent's help: its /flows endpoint maps every owner id to its key (`pod/<cid>/<ifname>`,
`policy/NS/NAME/ingress/0`, `cnp/NAME/ingress/0`, `service/NS/NAME`, `node/NAME`, `pipeline`)
and /status maps pod attachments to pod names. A ClusterNetworkPolicy rule reads "cnp NAME
ingress rule 0", and, with the agent's /cluster view, its tier, rule name and action too:
"cnp NAME ingress rule 0 (Admin 'from-y': Deny)". Without the agent the owner stays a hex id,
except that `--pod` falls back to the pods OVSDB records (external_ids) and `--policy` to
hashing the keys a policy's owners can have (and then names those owners).

`--policy NS/NAME` is a NetworkPolicy, `--policy cnp/NAME` a ClusterNetworkPolicy.

`--diff` compares what the agent wants installed (/flows "desired", active=true) with what the
switch holds, keyed by (table, priority, match) and compared by actions and cookie without the
round; flows the switch learned itself (feature "affinity") are not the agent's and are left
out. Exit codes: 0 in sync (nothing printed), 1 differences, 2 could not compare.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import netaddr

from flows import cnp, cookie, owners, tables
from ovsctl.tools import agentclient, flowdump

MAX_RULES = 64  # --policy without the agent: rule indexes tried per direction


# ---- owners ------------------------------------------------------------------------------------


def pod_index(pods: list[dict]) -> dict[str, dict]:
    """owner key "pod/<cid>/<ifname>" -> {namespace, name, ip, ifname} from attachments (the
    agent's /status "pods", or OVSDB external_ids turned into the same shape)."""
    out = {}
    for p in pods:
        cid, ifname = p.get("container_id"), p.get("ifname")
        if cid and ifname:
            out[owners.Pod(cid, ifname).key] = {
                "namespace": p.get("namespace", ""),
                "name": p.get("name", ""),
                "ip": p.get("ip", ""),
                "ips": addresses(p),
                "ifname": ifname,
            }
    return out


def addresses(p: dict) -> list[str]:
    """Every address of a pod row (IPv4 first): its "ips" (a list, or the comma-separated
    text OVSDB external_ids hold), else its single "ip"."""
    ips = p.get("ips") or ""
    if isinstance(ips, str):
        ips = [a for a in ips.split(",") if a]
    return list(ips) or ([p["ip"]] if p.get("ip") else [])


def owner_name(
    key: str | None,
    feature: str,
    oid: int,
    pods: dict[str, dict],
    cluster_policies: dict[str, cnp.ClusterPolicy] | None = None,
) -> str:
    """A human name for a flow's owner: pod:NS/NAME, policy:NS/NAME/ingress/0,
    policy:NS/NAME/isolation, service:NS/NAME, node:NAME, pipeline, "cnp NAME ingress rule 0"
    (with its tier, rule name and action when `cluster_policies` has the policy);
    FEATURE:0xID when the key is unknown (no agent), the bare feature when the flow has no
    owner."""
    if key is None:
        return f"{feature}:{oid:#x}" if oid else feature
    owner = owners.try_parse(key)
    if isinstance(owner, owners.ClusterPolicyRule):
        return cnp_rule_name(owner, (cluster_policies or {}).get(owner.name))
    if isinstance(owner, owners.Pod) and key in pods:
        p = pods[key]
        suffix = "" if p["ifname"] == "eth0" else f"[{p['ifname']}]"
        ref = f"{p['namespace']}/{p['name']}" if p["namespace"] else p["name"] or key
        return f"pod:{ref}{suffix}"  # podman sends no namespace: pod:NAME
    kind, _, rest = key.partition("/")
    return f"{kind}:{rest}" if rest else kind


def cnp_rule_name(owner: owners.ClusterPolicyRule, pol: cnp.ClusterPolicy | None) -> str:
    """ "cnp NAME ingress rule 0", and "(Admin 'from-y': Deny)" after it when the policy is
    known and has that rule."""
    text = owner.label()
    rules = pol.rules(owner.direction) if pol is not None else ()
    if owner.index < len(rules):
        rule = rules[owner.index]
        named = f" {rule.name!r}" if rule.name else ""
        text += f" ({pol.tier}{named}: {rule.action})"
    return text


def cluster_policies(cluster: dict | None) -> dict[str, cnp.ClusterPolicy]:
    """The ClusterNetworkPolicies of an agent's /cluster view by name (the invalid ones, which
    the agent installs nothing of, left out)."""
    out = {}
    for obj in (cluster or {}).get("cluster_network_policies") or []:
        try:
            pol = cnp.parse(obj)
        except cnp.CNPError:
            continue
        out[pol.name] = pol
    return out


def policy_ref(ref: str) -> tuple[str, str]:
    """--policy: ("cnp", NAME) for cnp/NAME (a ClusterNetworkPolicy), else (NS, NAME) of a
    NetworkPolicy (a bare NAME is in namespace default)."""
    if ref.startswith("cnp/") and ref.count("/") == 1 and ref[4:]:
        return "cnp", ref[4:]
    return split_ref(ref)


def cluster_policy_owners(name: str) -> dict[int, str]:
    """Owner id -> key of every owner a ClusterNetworkPolicy's flows can carry (rules
    0..MAX_RULES-1 each way): enough to find and name its flows without the agent."""
    return {cookie.owner_id(k): k for k in owners.cluster_policy_keys(name, MAX_RULES)}


def policy_owner_ids(ns: str, name: str) -> set[int]:
    """Owner ids a policy's flows can carry (its isolation and its rules), computed from the
    key scheme of flows/policy.py: enough to filter by policy without the agent."""
    return {cookie.owner_id(k) for k in owners.policy_keys(ns, name, MAX_RULES)}


def ovsdb_pods(timeout: float = 5.0) -> list[dict]:
    """Pod attachments from OVSDB (the agent records them in each port's external_ids)."""
    p = subprocess.run(
        [
            "ovs-vsctl",
            f"--timeout={int(timeout)}",
            "--format=json",
            "--columns=external_ids",
            "list",
            "Interface",
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    if p.returncode != 0:
        return []
    out = []
    for row in json.loads(p.stdout or "{}").get("data", []):
        ext = dict(row[0][1]) if row and row[0] and row[0][0] == "map" else {}
        if ext.get("ovsctl-owner") == "pod":
            out.append(
                {
                    "container_id": ext.get("container-id"),
                    "ifname": ext.get("ifname"),
                    "namespace": ext.get("pod-namespace", ""),
                    "name": ext.get("pod-name", ""),
                    "ip": ext.get("ip", ""),
                    "ips": ext.get("ips", ""),
                }
            )
    return out


def split_ref(ref: str) -> tuple[str, str]:
    """'ns/name' -> (ns, name); a bare name is in namespace default."""
    ns, _, name = ref.rpartition("/")
    return ns or "default", name


# ---- rows: naming and filtering (pure) ---------------------------------------------------------


def name_rows(
    rows: list[dict],
    owners: dict[int, str],
    pods: dict[str, dict],
    cluster_policies: dict[str, cnp.ClusterPolicy] | None = None,
) -> list[dict]:
    """Add owner_key and owner_name to installed-flow rows (flowdump.dump); each distinct
    (owner id, feature) is named once (30,000 flows have a few hundred owners)."""
    named: dict[tuple, tuple] = {}
    for r in rows:
        o = r["owner"]
        k = (o["owner"], o["feature"])
        hit = named.get(k)
        if hit is None:
            key = owners.get(o["owner"]) if o["owner"] else None
            text = owner_name(key, o["feature"], o["owner"], pods, cluster_policies)
            hit = named[k] = (key, text)
        r["owner_key"], r["owner_name"] = hit
    return rows


def ip_pattern(ip: str) -> re.Pattern:
    """The address as a whole (10.244.0.2 but not 10.244.0.25; fd00::2 but not fd00::25 nor
    fd00::2:1) in flow text, where OVS writes IPv6 addresses compressed and in lower case."""
    try:
        addr = netaddr.IPAddress(ip)
    except (netaddr.AddrFormatError, ValueError):
        addr = None
    if addr is not None and addr.version == 6:
        text = str(addr)  # netaddr's form is OVS's (RFC 5952)
        return re.compile(
            rf"(?:(?<=set_field:)|(?<![0-9a-f:.])){re.escape(text)}(?![0-9a-f]|:[0-9a-f]|::)"
        )
    return re.compile(rf"(?<![0-9.]){re.escape(ip)}(?![0-9]|\.[0-9])")


def select(
    rows: list[dict],
    table: str | None = None,
    pod_keys: set[str] | None = None,
    pod_ips: set[str] | None = None,
    policy: tuple[str, str] | None = None,
    policy_ids: set[int] | None = None,
) -> list[dict]:
    """Rows of a table (name or number); of a pod (owned by one of its attachments, or naming
    one of its IPs in match or actions); of a policy (owned by its rules or its isolation, by
    key when known, else by owner id): `policy` (NS, NAME) a NetworkPolicy, ("cnp", NAME) a
    ClusterNetworkPolicy (policy_ref)."""
    out = []
    pats = [ip_pattern(ip) for ip in sorted(pod_ips or ()) if ip]
    want = f"{policy[0]}/{policy[1]}" if policy else None
    if policy and policy[0] == "cnp":
        kind, feature, want = owners.ClusterPolicyRule, "cnp", policy[1]
    elif policy:
        kind, feature = (owners.PolicyRule, owners.PolicyIsolation), "policy"
    for r in rows:
        if table is not None and r["table"] != table and str(r["table_id"]) != table:
            continue
        if pod_keys is not None:
            text = f"{r['match']} {r['actions']}"
            if r.get("owner_key") not in pod_keys and not any(p.search(text) for p in pats):
                continue
        if want is not None:
            key = r.get("owner_key")
            if key is not None:
                owner = owners.try_parse(key)
                if not isinstance(owner, kind) or owner.policy != want:
                    continue
            elif r["owner"]["feature"] != feature or r["owner"]["owner"] not in (
                policy_ids or set()
            ):
                continue
        out.append(r)
    return out


# ---- diff (pure) -------------------------------------------------------------------------------


def desired_rows(
    flows_view: dict,
    pods: dict[str, dict],
    cluster_policies: dict[str, cnp.ClusterPolicy] | None = None,
) -> list[dict]:
    """The agent's active desired flows as rows shaped like installed ones (one per key)."""
    out, seen = [], set()
    for d in flows_view.get("desired", []):
        if not d.get("active", True):
            continue
        key = (d["table_id"], d["match"])
        if key in seen:
            continue  # two owners want the very same flow
        seen.add(key)
        c = int(d["cookie"], 16)
        dec = cookie.decode(c)
        out.append(
            {
                "table": d["table"],
                "table_id": d["table_id"],
                "cookie": d["cookie"],
                "owner": dec,
                "owner_key": d["owner"],
                "owner_name": owner_name(
                    d["owner"], dec["feature"], dec["owner"], pods, cluster_policies
                ),
                "match": d["match"],
                "actions": d["actions"],
            }
        )
    return out


def diff(desired: list[dict], installed: list[dict]) -> dict:
    """{"missing": desired, not on the switch; "unexpected": on the switch, not desired;
    "changed": same (table, priority, match), other actions or cookie (round aside)}.
    Installed flows of feature "affinity" (learned by the switch) are left out."""
    want = {(r["table_id"], r["match"]): r for r in desired}
    have = {
        (r["table_id"], r["match"]): r for r in installed if r["owner"]["feature"] != "affinity"
    }
    missing = [want[k] for k in sorted(want.keys() - have.keys())]
    unexpected = [have[k] for k in sorted(have.keys() - want.keys())]
    changed = []
    for k in sorted(want.keys() & have.keys()):
        w, h = want[k], have[k]
        wc = int(w["cookie"], 16) & ~cookie.ROUND_MASK
        hc = int(h["cookie"], 16) & ~cookie.ROUND_MASK
        if w["actions"] != h["actions"] or wc != hc:
            changed.append(
                {
                    "table": w["table"],
                    "table_id": w["table_id"],
                    "match": w["match"],
                    "desired": _side(w),
                    "installed": _side(h),
                }
            )
    return {"missing": missing, "unexpected": unexpected, "changed": changed}


def _side(r: dict) -> dict:
    return {
        "actions": r["actions"],
        "cookie": f"{int(r['cookie'], 16) & ~cookie.ROUND_MASK:#x}",
        "owner": r["owner_name"],
    }


def diff_ids(d: dict) -> set[tuple]:
    """What identifies each difference (for keeping only those seen twice in a row)."""
    out = {("missing", r["table_id"], r["match"], r["actions"]) for r in d["missing"]}
    out |= {("unexpected", r["table_id"], r["match"], r["actions"]) for r in d["unexpected"]}
    out |= {
        ("changed", c["table_id"], c["match"], c["installed"]["actions"], c["installed"]["cookie"])
        for c in d["changed"]
    }
    return out


def keep(d: dict, ids: set[tuple]) -> dict:
    """Only the differences whose ids are in `ids`."""
    return {
        "missing": [
            r for r in d["missing"] if ("missing", r["table_id"], r["match"], r["actions"]) in ids
        ],
        "unexpected": [
            r
            for r in d["unexpected"]
            if ("unexpected", r["table_id"], r["match"], r["actions"]) in ids
        ],
        "changed": [
            c
            for c in d["changed"]
            if (
                "changed",
                c["table_id"],
                c["match"],
                c["installed"]["actions"],
                c["installed"]["cookie"],
            )
            in ids
        ],
    }


def count(d: dict) -> int:
    return len(d["missing"]) + len(d["unexpected"]) + len(d["changed"])


def render_diff(d: dict) -> str:
    """'-' desired but not installed, '+' installed but not desired, '~' installed otherwise;
    empty when in sync."""
    if not count(d):
        return ""
    lines = []
    for r in d["missing"]:
        lines.append(
            f"- [{r['table']}] {r['match']} actions={r['actions']}  "
            f"({r['owner_name']}: desired, not on the switch)"
        )
    for r in d["unexpected"]:
        lines.append(
            f"+ [{r['table']}] {r['match']} actions={r['actions']}  "
            f"({r['owner_name']}: on the switch, not desired)"
        )
    for c in d["changed"]:
        w, h = c["desired"], c["installed"]
        lines.append(
            f"~ [{c['table']}] {c['match']}\n"
            f"    desired   actions={w['actions']} cookie={w['cookie']} ({w['owner']})\n"
            f"    installed actions={h['actions']} cookie={h['cookie']} ({h['owner']})"
        )
    lines.append(
        f"{count(d)} difference(s): {len(d['missing'])} missing, "
        f"{len(d['unexpected'])} unexpected, {len(d['changed'])} changed"
    )
    return "\n".join(lines)


def render(rows: list[dict], stats: bool = True) -> str:
    out, current = [], None
    width = min(40, max([len(r["owner_name"]) for r in rows] + [10]))
    for r in rows:
        if r["table"] != current:
            current = r["table"]
            doc = tables.BY_NAME[current].doc if current in tables.BY_NAME else ""
            out.append(f"\n[{r['table_id']}] {current}  — {doc}")
        o = r["owner"]
        st = f" n_packets={r['packets']} n_bytes={r['bytes']}" if stats else ""
        out.append(
            f"  {r['owner_name']:<{width}} round={o['round']:<3}{st} {r['match']} "
            f"actions={r['actions']}"
        )
    return "\n".join(out)


# ---- the command -------------------------------------------------------------------------------


def _fail(msg: str, code: int) -> int:
    print(f"ovsctl flows: {msg}", file=sys.stderr)
    return code


def main(args) -> int:
    want_diff = getattr(args, "diff", False)
    err_code = 2 if want_diff else 1
    url = getattr(args, "agent", None)
    try:
        rows = flowdump.dump(args.bridge)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return _fail(str(e), err_code)
    try:
        view = agentclient.get("/flows", url)
        status = agentclient.get("/status", url)
    except agentclient.AgentUnreachable as e:
        if want_diff:
            return _fail(f"--diff needs the agent's desired flows: {e}", 2)
        print(f"ovsctl flows: agent unreachable ({e}); owners shown as ids", file=sys.stderr)
        view, status = None, None
    owners = {int(k, 16): v for k, v in (view or {}).get("owners", {}).items()}
    pods = pod_index(status["pods"] if status else ovsdb_pods())
    policy = policy_ids = None
    if getattr(args, "policy", None):
        policy = policy_ref(args.policy)
        if policy[0] == "cnp":
            computed = cluster_policy_owners(policy[1])
            policy_ids = set(computed)
            if view is None:  # name its owners from the key scheme
                owners.update(computed)
        else:
            policy_ids = policy_owner_ids(*policy)
    cluster: dict | None = None
    if view is not None and any(k.startswith("cnp/") for k in owners.values()):
        try:  # the ClusterNetworkPolicies: each rule's tier, name and action
            cluster = agentclient.get("/cluster", url)
        except agentclient.AgentUnreachable:
            cluster = None
    cnps = cluster_policies(cluster)
    name_rows(rows, owners, pods, cnps)

    pod_keys = pod_ips = None
    if getattr(args, "pod", None):
        ns, name = split_ref(args.pod)
        # a bare NAME is default/NAME, or a pod whose runtime sent no namespace (podman)
        refs = {(ns, name)} | ({("", name)} if "/" not in args.pod else set())
        pod_keys = {k for k, p in pods.items() if (p["namespace"], p["name"]) in refs}
        pod_ips = {ip for k in pod_keys for ip in pods[k]["ips"]}  # both of a dual-stack pod
        if not pod_keys and view is not None:  # another node's pod: flows naming its IP
            if cluster is None:
                try:
                    cluster = agentclient.get("/cluster", url)
                except agentclient.AgentUnreachable:
                    cluster = {}
            pod_ips = {
                ip
                for p in cluster.get("pods", [])
                if (p["namespace"], p["name"]) == (ns, name)
                for ip in addresses(p)
            }
        if not pod_keys and not pod_ips:
            return _fail(f"no pod {ns}/{name} known here", err_code)
    filters = dict(
        table=args.table, pod_keys=pod_keys, pod_ips=pod_ips, policy=policy, policy_ids=policy_ids
    )

    if not want_diff:
        rows = select(rows, **filters)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(render(rows, stats=not args.no_stats))
        return 0

    def attempt(installed=None):
        inst = (
            installed
            if installed is not None
            else name_rows(flowdump.dump(args.bridge), owners, pods, cnps)
        )
        v = view if installed is not None else agentclient.get("/flows", url)
        owners.update({int(k, 16): o for k, o in v.get("owners", {}).items()})
        return diff(select(desired_rows(v, pods, cnps), **filters), select(inst, **filters))

    d = attempt(rows)
    if count(d):  # a change may have been on its way: keep what a second look still sees
        time.sleep(0.5)
        try:
            d = keep(attempt(), diff_ids(d))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            return _fail(str(e), 2)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        text = render_diff(d)
        if text:
            print(text)
    return 1 if count(d) else 0
