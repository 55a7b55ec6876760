"""ClusterNetworkPolicy audit, without a switch: the line names the policy, tier, rule (index
and name) and action, with the verdict the action means (Accept allowed, Pass handed on, Deny dropped);
the action comes from the agent's parsed policies, never from the table; the packet-ins of
feature "cnp" reach the audit log (not the Service rejecter); an audited policy's flows name
one meter of the agent's audit range, distinct from any other audited policy's."""

from __future__ import annotations

import types

# os-ken needs app_manager imported before its controller/ofproto modules (circular import).
import os_ken.base.app_manager  # noqa: F401

from flows import cnp, cookie, policy, tables, tiers
from flows.flow import MeteredController
from flows.policy import PodInfo, View
from ovsctl.agent import audit
from ovsctl.agent.audit import AuditLog
from ovsctl.openflow.controller import Controller
from ovsctl.openflow.sync import FlowSync
from tests.unit.test_audit import Clock, frame, tcp

NS = {"kubernetes.io/metadata.name": "x"}


def cnp_obj(name, tier, priority, action, rule_name="from-y", audited=True, direction="ingress"):
    peer = "from" if direction == "ingress" else "to"
    meta = {"name": name}
    if audited:
        meta["annotations"] = {"ovsctl.io/audit": "true"}
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": meta,
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": NS}},
            direction: [
                {"name": rule_name, "action": action, peer: [{"namespaces": {}}]},
            ],
        },
    }


def cache(*objs):
    """The reconciler's cnp_cache values: (object, ClusterPolicy or None, base, owners)."""
    out = []
    for o in objs:
        try:
            pol = cnp.parse(o)
        except cnp.CNPError:
            pol = None
        out.append((o, pol, 64000, {}))
    return out


def ck(key: str, rnd: int = 5) -> int:
    return cookie.with_round(cookie.make("cnp", key), rnd)


T = {n: tables.BY_NAME[n].id for n in tables.BY_NAME}


def test_the_rule_comes_from_the_parsed_policy():
    c = cache(
        cnp_obj("deny-y", "Admin", 10, "Deny"),
        cnp_obj("base", "Baseline", 3, "Accept", rule_name=""),
        {"kind": "ClusterNetworkPolicy", "metadata": {"name": "bad"}, "spec": {"tier": "Nope"}},
    )
    assert audit.cnp_rule_of(c, "cnp/deny-y/ingress/0") == {
        "tier": "Admin",
        "priority": 10,
        "rule_name": "from-y",
        "action": "Deny",
    }
    assert audit.cnp_rule_of(c, "cnp/base/ingress/0")["action"] == "Accept"
    assert audit.cnp_rule_of(c, "cnp/deny-y/ingress/1") is None  # no such rule
    assert audit.cnp_rule_of(c, "cnp/deny-y/egress/0") is None
    assert audit.cnp_rule_of(c, "cnp/bad/ingress/0") is None  # invalid: nothing installed
    assert audit.cnp_rule_of(c, "cnp/gone/ingress/0") is None
    assert audit.cnp_rule_of(c, "policy/x/web/ingress/0") is None


def test_describe_takes_the_action_from_the_agent_not_the_table():
    info = {"tier": "Admin", "priority": 1, "rule_name": "r", "action": "Pass"}
    rule = lambda key: info  # noqa: E731
    got = audit.describe("cnp/p/ingress/0", T["AdminIngressRule"], rule)
    assert got == ("cnp/p", "ingress/0", "pass", info)  # handed on, not yet allowed
    info["action"] = "Deny"
    assert audit.describe("cnp/p/ingress/0", T["AdminIngressRule"], rule)[2] == "drop"
    info["action"] = "Accept"
    assert audit.describe("cnp/p/egress/2", T["BaselineEgressRule"], rule)[:3] == (
        "cnp/p",
        "egress/2",
        "allow",
    )
    # a table of the other direction, a NetworkPolicy table, an unknown rule: not understood
    assert audit.describe("cnp/p/egress/2", T["AdminIngressRule"], rule) is None
    assert audit.describe("cnp/p/ingress/0", T["IngressRule"], rule) is None
    assert audit.describe("cnp/p/ingress/0", T["AdminIngressRule"], lambda k: None) is None
    assert audit.describe("cnp/p/ingress/0", T["AdminIngressRule"]) is None
    # NetworkPolicy lines are as before
    assert audit.describe("policy/x/web/isolation", T["IngressDefault"], rule) == (
        "x/web",
        "ingress/isolation",
        "drop",
    )


def test_the_line_format():
    tup = {"proto": "tcp", "src": "10.244.1.3", "dst": "10.244.0.2", "sport": 40000, "dport": 80}
    info = {"tier": "Admin", "rule_name": "from-y", "action": "Deny"}
    assert audit.format_line(1795410000.0, "cnp/deny-y", "ingress/0", "drop", tup, info) == (
        "2026-11-23T05:00:00Z policy=cnp/deny-y tier=Admin rule=ingress/0 name=from-y "
        "action=Deny verdict=drop proto=tcp src=10.244.1.3:40000 dst=10.244.0.2:80"
    )
    unnamed = {"tier": "Baseline", "rule_name": "", "action": "Accept"}
    line = audit.format_line(0, "cnp/b", "egress/1", "allow", tup, unnamed)
    assert " policy=cnp/b tier=Baseline rule=egress/1 action=Accept verdict=allow " in line
    odd = {"tier": "Admin", "rule_name": 'a b="c"', "action": "Pass"}
    line = audit.format_line(0, "cnp/b", "egress/1", "allow", tup, odd)
    assert ' name="a b=\\"c\\"" action=Pass ' in line


def test_the_log_writes_cnp_lines_with_their_own_budget(tmp_path):
    objs = cache(
        cnp_obj("deny-y", "Admin", 10, "Deny"),
        cnp_obj("allow-all", "Baseline", 5, "Accept", rule_name="all"),
    )
    keys = ["cnp/deny-y/ingress/0", "cnp/allow-all/ingress/0", "policy/x/web/isolation"]
    log = AuditLog(
        str(tmp_path / "audit.log"),
        2,
        lambda: keys,
        clock=Clock(),
        cnp_rule=lambda key: audit.cnp_rule_of(objs, key),
    )
    log.wall = lambda: 1795410000.0
    pkt = frame(6, "10.244.1.3", "10.244.0.2", tcp(40000, 80))
    line = log.packet_in(ck("cnp/deny-y/ingress/0"), T["AdminIngressRule"], pkt)
    assert line == (
        "2026-11-23T05:00:00Z policy=cnp/deny-y tier=Admin rule=ingress/0 name=from-y "
        "action=Deny verdict=drop proto=tcp src=10.244.1.3:40000 dst=10.244.0.2:80"
    )
    assert log.packet_in(ck("cnp/deny-y/ingress/0"), T["AdminIngressRule"], pkt) is None
    assert log.counts["repeats"] == 1
    base = log.packet_in(ck("cnp/allow-all/ingress/0"), T["BaselineIngressRule"], pkt)
    assert "policy=cnp/allow-all tier=Baseline rule=ingress/0 name=all action=Accept" in base
    assert base.endswith("verdict=allow proto=tcp src=10.244.1.3:40000 dst=10.244.0.2:80")
    # deny-y spent its budget of 2; allow-all has its own
    other = frame(6, "10.244.1.3", "10.244.0.2", tcp(40001, 80))
    assert log.packet_in(ck("cnp/deny-y/ingress/0"), T["AdminIngressRule"], other) is None
    assert log.counts["rate_limited"] == 1
    assert log.packet_in(ck("cnp/allow-all/ingress/0"), T["BaselineIngressRule"], other)
    # a policy the agent no longer has: counted, no line
    assert log.packet_in(ck("cnp/gone/ingress/0"), T["AdminIngressRule"], pkt) is None
    assert log.counts["unknown"] == 1


def test_cnp_packet_ins_go_to_the_audit_log_not_the_rejecter(tmp_path, monkeypatch):
    ctl = Controller(FlowSync(), str(tmp_path))
    got, rejected = [], []
    ctl.on_audit = lambda c, t, d: got.append((c, t, d))
    monkeypatch.setattr("ovsctl.openflow.packetin.reject", lambda data: rejected.append(data))
    data = frame(6, "10.244.1.3", "10.244.0.2", tcp(1, 80))
    msg = types.SimpleNamespace(
        cookie=ck("cnp/deny-y/ingress/0"),
        table_id=T["AdminIngressRule"],
        data=bytearray(data),
        match={"in_port": 3},
    )
    ctl.on_packet_in(msg)
    assert got == [(msg.cookie, T["AdminIngressRule"], data)] and not rejected


def test_each_audited_cnp_has_its_own_meter_in_the_agents_audit_range():
    v = View(
        {"x": NS, "y": {"kubernetes.io/metadata.name": "y"}},
        [
            PodInfo("x", "w", (("app", "w"),), "10.244.0.2", (), True),
            PodInfo("y", "b", (("app", "b"),), "10.244.1.3", (), False),
        ],
    )
    given: dict[str, int] = {"policy/x/other/isolation": 0}

    def slot_of(owner: str) -> int:
        return given.setdefault(owner, len(given))

    pols = [cnp.parse(cnp_obj(n, "Admin", p, "Deny")) for n, p in (("a", 1), ("b", 2))]
    quiet = cnp.parse(cnp_obj("q", "Admin", 3, "Deny", audited=False))
    bases = tiers.base_priorities([*pols, quiet])
    meters = {}
    for p in (*pols, quiet):
        flows = tiers.policy_flows(p, v, slot_of, bases[p.name])
        meters[p.name] = {
            a.meter_id
            for fs in flows.values()
            for f in fs
            for a in f.actions
            if isinstance(a, MeteredController)
        }
    assert meters["q"] == set()
    assert len(meters["a"]) == len(meters["b"]) == 1 and meters["a"] != meters["b"]
    for name in ("a", "b"):
        (m,) = meters[name]
        # the meter of the slot of the policy's first rule owner, which the agent puts on
        # the switch (its meter_rate answers for policy.is_audit_meter)
        assert m == policy.audit_meter(given[f"cnp/{name}/ingress/0"])
        assert policy.is_audit_meter(m) and m != policy.audit_meter(0)
