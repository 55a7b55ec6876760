"""ClusterNetworkPolicy flows (flows/tiers.py) run through whole fake pipelines (two nodes,
tests/fakes/oftable.py) next to NetworkPolicy: the verdicts of the API's evaluation order,
seen as packets delivered or dropped, and the flows' shape (conjunctions, priorities)."""

from __future__ import annotations

import pytest

from flows import cnp, netpol, policy, tiers
from flows.policy import PodInfo, View
from tests.fakes.oftable import FakeNetwork, FakeOFTable, icmp, tcp, udp
from tests.unit.test_fake_pipeline import (
    NODES,
    REMOTES,
    Slots,
    _sport,
    node_flows,
    probe_matrix,
    world,
)

NS_LABEL = "kubernetes.io/metadata.name"
NODE_LABELS = {"node-a": {"zone": "a"}, "node-b": {"zone": "b"}}
NODE_IPS = {"node-a": NODES[0].node_ip, "node-b": NODES[1].node_ip}
EXTERNAL = "203.0.113.7"


def make_cnp(name, tier, priority, subject=None, ingress=(), egress=(), audit=False) -> dict:
    meta = {"name": name}
    if audit:
        meta["annotations"] = {"ovsctl.io/audit": "true"}
    spec = {"tier": tier, "priority": priority, "subject": subject or {"namespaces": {}}}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return {"apiVersion": cnp.API_VERSION, "kind": cnp.KIND, "metadata": meta, "spec": spec}


def ns_sel(*names) -> dict:
    return {"matchExpressions": [{"key": NS_LABEL, "operator": "In", "values": list(names)}]}


def pods_peer(ns, pod) -> dict:
    return {"pods": {"namespaceSelector": ns_sel(ns), "podSelector": {"matchLabels": {"pod": pod}}}}


def np(ns, name, pod, ingress=None, egress=None, types=("Ingress",)) -> dict:
    spec = {"podSelector": {"matchLabels": {"pod": pod}}, "policyTypes": list(types)}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def flows_for(k, pods, policies, cnps) -> frozenset:
    """Node k's flows: pipeline, pods, NetworkPolicies and ClusterNetworkPolicies."""
    view = View(
        {n: {"ns": n, NS_LABEL: n} for n in "xyz"},
        [
            PodInfo(p.namespace, p.name, (("pod", p.name),), p.ip, ports, n == k)
            for n, p, ports in pods
        ],
        {
            name: (tuple(sorted(NODE_LABELS[name].items())), (NODE_IPS[name],))
            for name in NODE_LABELS
        },
    )
    slots = Slots()
    out: set = set()
    for pol in policies:
        for fs in policy.policy_flows(netpol.parse(pol), view, slots).values():
            out |= fs
    parsed = [cnp.parse(c) for c in cnps]
    bases = tiers.base_priorities(parsed)
    for pol in parsed:
        for fs in tiers.policy_flows(pol, view, slots, bases[pol.name]).values():
            out |= fs
    mine = [p for n, p, _ in pods if n == k]
    return node_flows(NODES[k], mine, (REMOTES[k],), out)


def network(policies=(), cnps=()):
    pods = world()
    net = FakeNetwork()
    for k, node in enumerate(NODES):
        net.add_node(
            node.node_ip, FakeOFTable(flows_for(k, pods, policies, cnps), tunnel_ports={1}), 1
        )
    return net, pods


def matrix(policies=(), cnps=()) -> dict[str, bool]:
    """Every pod to every declared port of every other pod: delivered (and its reply) or not."""
    net, pods = network(policies, cnps)
    return probe_matrix(net, pods)


def pairs(got, src_ns=None, dst_ns=None, src=None, dst=None, port=None):
    """The verdicts whose key matches the filters."""
    out = {}
    for k, v in got.items():
        s, _, rest = k.partition("->")
        d, _, pp = rest.partition(":")
        if src_ns and not s.startswith(src_ns + "/") or dst_ns and not d.startswith(dst_ns + "/"):
            continue
        if src and s != src or dst and d != dst or port and not pp.startswith(f"{port}/"):
            continue
        out[k] = v
    return out


DENY_Y_TO_X = make_cnp(
    "deny-y-to-x", "Admin", 10, {"namespaces": ns_sel("x")},
    ingress=[{"name": "from-y", "action": "Deny", "from": [{"namespaces": ns_sel("y")}]}],
)  # fmt: skip
ALLOW_Y_TO_X = np("x", "allow-y", "a", ingress=[{"from": [{"namespaceSelector": {}}]}])


def test_admin_deny_wins_over_a_networkpolicy_allow():
    got = matrix([ALLOW_Y_TO_X], [DENY_Y_TO_X])
    assert not any(pairs(got, src_ns="y", dst_ns="x").values())
    assert all(pairs(got, src_ns="z", dst_ns="x").values())  # not matched: NP allows all
    assert all(pairs(got, src_ns="x", dst_ns="y").values())  # the other direction is free


def test_admin_accept_wins_over_a_networkpolicy_deny():
    deny_all_x = np("x", "deny-all", "a")  # x/a isolated for ingress, nothing allowed
    accept = make_cnp(
        "accept-z", "Admin", 5, {"namespaces": ns_sel("x")},
        ingress=[{"action": "Accept", "from": [{"namespaces": ns_sel("z")}]}],
    )  # fmt: skip
    got = matrix([deny_all_x], [accept])
    assert all(pairs(got, src_ns="z", dst="x/a").values())
    assert not any(pairs(got, src_ns="y", dst="x/a").values())


def test_admin_pass_hands_over_to_networkpolicy_then_baseline():
    passing = make_cnp(
        "pass-y", "Admin", 1, {"namespaces": ns_sel("x")},
        ingress=[{"action": "Pass", "from": [{"namespaces": ns_sel("y")}]}],
    )  # fmt: skip
    baseline = make_cnp(
        "baseline-deny-y", "Baseline", 1, {"namespaces": ns_sel("x")},
        ingress=[{"action": "Deny", "from": [{"namespaces": ns_sel("y")}]}],
    )  # fmt: skip
    # the Admin Deny below the Pass never sees y's traffic
    deny_later = make_cnp(
        "later-deny", "Admin", 50, {"namespaces": ns_sel("x")},
        ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}],
    )  # fmt: skip
    got = matrix([ALLOW_Y_TO_X], [passing, baseline, deny_later])
    assert all(pairs(got, src_ns="y", dst="x/a").values())  # NP allows x/a
    assert not any(pairs(got, src_ns="y", dst="x/b").values())  # no NP on x/b: Baseline deny
    assert not any(pairs(got, src_ns="z", dst_ns="x").values())  # later Admin Deny


def test_baseline_denies_only_where_no_networkpolicy_selects():
    baseline = make_cnp(
        "baseline", "Baseline", 10, {"namespaces": ns_sel("x")},
        ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}],
    )  # fmt: skip
    got = matrix([ALLOW_Y_TO_X], [baseline])
    assert all(v for k, v in pairs(got, dst="x/a").items() if not k.startswith("x/a"))
    assert not any(pairs(got, dst="x/b").values())
    assert not any(pairs(got, dst="x/c").values())


def test_priority_decides_and_a_change_flips_the_verdict():
    def both(deny_prio, accept_prio):
        return [
            make_cnp(
                "deny", "Admin", deny_prio, {"namespaces": ns_sel("x")},
                ingress=[{"action": "Deny", "from": [{"namespaces": ns_sel("y")}]}],
            ),
            make_cnp(
                "accept", "Admin", accept_prio, {"namespaces": ns_sel("x")},
                ingress=[{"action": "Accept", "from": [{"namespaces": ns_sel("y")}]}],
            ),
        ]  # fmt: skip

    assert not any(pairs(matrix((), both(1, 2)), src_ns="y", dst_ns="x").values())
    assert all(pairs(matrix((), both(3, 2)), src_ns="y", dst_ns="x").values())
    # a tie is broken by name: "accept" < "deny"
    assert all(pairs(matrix((), both(2, 2)), src_ns="y", dst_ns="x").values())


def test_rule_order_within_a_policy():
    pol = make_cnp(
        "ordered", "Admin", 1, {"namespaces": ns_sel("x")},
        ingress=[
            {"action": "Accept", "from": [pods_peer("y", "a")]},
            {"action": "Deny", "from": [{"namespaces": ns_sel("y")}]},
        ],
    )  # fmt: skip
    got = matrix((), [pol])
    assert all(pairs(got, src="y/a", dst_ns="x").values())
    assert not any(pairs(got, src="y/b", dst_ns="x").values())


def test_ports_ranges_and_named_ports():
    pol = make_cnp(
        "ports", "Admin", 1, {"namespaces": ns_sel("x")},
        ingress=[
            {"action": "Deny", "from": [{"namespaces": ns_sel("y")}],
             "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]},
            {"action": "Deny", "from": [{"namespaces": ns_sel("z")}],
             "protocols": [{"destinationNamedPort": "dns"}]},
        ],
    )  # fmt: skip
    got = matrix((), [pol])
    for k, v in pairs(got, src_ns="y", dst_ns="x").items():
        assert v == k.endswith(":53/UDP"), k
    for k, v in pairs(got, src_ns="z", dst_ns="x").items():
        assert v == (not k.endswith(":53/UDP")), k


def test_egress_named_port_resolves_on_each_destination():
    """y/b declares http as 8080, the others as 80: an egress Deny of the named port drops
    each pod's own number only."""
    pol = make_cnp(
        "no-http", "Admin", 1, {"namespaces": ns_sel("x")},
        egress=[{"action": "Deny", "to": [{"namespaces": {}}],
                 "protocols": [{"destinationNamedPort": "http"}]}],
    )  # fmt: skip
    got = matrix((), [pol])
    assert not pairs(got, src="x/a", dst="y/b", port=8080)["x/a->y/b:8080/TCP"]
    assert not pairs(got, src="x/a", dst="z/a", port=80)["x/a->z/a:80/TCP"]
    assert all(pairs(got, src="x/a", dst="y/b", port=81).values())
    assert all(pairs(got, src_ns="y", dst_ns="z").values())


def _send(net, pods, src_key, dst_ip, proto="TCP", port=80):
    sn, src, _ = next(t for t in pods if f"{t[1].namespace}/{t[1].name}" == src_key)
    make = {"TCP": tcp, "UDP": udp}[proto]
    pkt = make(src.ofport, src.mac, NODES[sn].gw_mac, src.ip, dst_ip, next(_sport), port)
    return net.nodes[NODES[sn].node_ip][0].run(pkt)


def test_egress_to_networks_and_nodes():
    pol = make_cnp(
        "egress", "Admin", 1, {"namespaces": ns_sel("x")},
        egress=[
            {"action": "Deny", "to": [{"networks": [f"{EXTERNAL}/32"]}]},
            {"action": "Deny", "to": [{"nodes": {"matchLabels": {"zone": "b"}}}]},
        ],
    )  # fmt: skip
    net, pods = network((), [pol])
    res = _send(net, pods, "x/a", EXTERNAL)
    assert res.dropped and res.drop_table == "AdminEgressRule", res
    res = _send(net, pods, "x/a", NODE_IPS["node-b"])
    assert res.dropped and res.drop_table == "AdminEgressRule", res
    assert not _send(net, pods, "y/a", EXTERNAL).dropped
    assert not _send(net, pods, "x/a", "203.0.113.8").dropped


def test_an_admin_deny_of_0_0_0_0_covers_pods_and_the_pods_own_node():
    """networks 0.0.0.0/0 matches pod-to-pod too, and the Admin tier sees the pod's own node
    (a NetworkPolicy cannot block it: its egress allow for the node sits in EgressRule)."""
    pol = make_cnp(
        "lockdown", "Admin", 1, {"pods": {"namespaceSelector": ns_sel("x"),
                                          "podSelector": {"matchLabels": {"pod": "a"}}}},
        egress=[{"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]}],
    )  # fmt: skip
    got = matrix((), [pol])
    assert not any(pairs(got, src="x/a").values())
    assert all(pairs(got, src="x/b").values())
    net, pods = network((), [pol])
    xa = next(t for t in pods if t[1].name == "a" and t[1].namespace == "x")
    res = _send(net, pods, "x/a", NODES[xa[0]].gw_ip)
    assert res.dropped and res.drop_table == "AdminEgressRule", res
    deny_all = np("x", "deny-all", "a", egress=[], types=("Egress",))
    net, pods = network([deny_all], ())
    res = _send(net, pods, "x/a", NODES[xa[0]].gw_ip)
    assert not res.dropped, res  # its own node: past every NetworkPolicy
    assert _send(net, pods, "x/a", EXTERNAL).drop_table == "EgressDefault"


def test_a_closed_peer_matches_nothing_in_accept_and_everything_in_deny():
    accept = make_cnp(
        "unknown-accept", "Admin", 1, {"namespaces": ns_sel("x")},
        egress=[{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}],
    )  # fmt: skip
    deny = make_cnp(
        "unknown-deny", "Admin", 2, {"namespaces": ns_sel("x")},
        egress=[{"action": "Deny", "to": [{"domainNames": ["example.com"]}]}],
    )  # fmt: skip
    assert all(pairs(matrix((), [accept]), src_ns="x").values())
    assert not any(pairs(matrix((), [accept, deny]), src_ns="x").values())


def test_icmp_meets_a_portless_rule_only():
    pol = make_cnp(
        "tcp-only", "Admin", 1, {"namespaces": ns_sel("x")},
        egress=[{"action": "Deny", "to": [{"namespaces": {}}], "protocols": [{"tcp": {"destinationPort": {"range": {"start": 1, "end": 65535}}}}]}],
    )  # fmt: skip
    net, pods = network((), [pol])
    xa = next(p for _, p, _ in pods if (p.namespace, p.name) == ("x", "a"))
    yb = next(p for _, p, _ in pods if (p.namespace, p.name) == ("y", "b"))
    ping = icmp(xa.ofport, xa.mac, NODES[0].gw_mac, xa.ip, yb.ip)
    deliveries, _ = net.send(NODES[0].node_ip, ping)
    assert deliveries, "ICMP is not TCP: the rule does not match it"


def test_no_cluster_policy_adds_only_the_tier_tables_misses():
    pods = world()
    without = flows_for(0, pods, (), ())
    tier_flows = [f for f in without if f.table in tiers.TABLES.values() and f.priority < 64999]
    assert sorted((f.table, f.priority) for f in tier_flows) == sorted(
        (t, 0) for t in tiers.TABLES.values()
    )


def test_one_conjunction_per_rule_flows_grow_with_pods_plus_rules():
    pods = world()
    pol = make_cnp(
        "big", "Admin", 1, {"namespaces": {}},
        ingress=[{"action": "Deny", "from": [{"namespaces": {}}],
                  "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}],
    )  # fmt: skip
    parsed = cnp.parse(pol)
    view = View(
        {n: {NS_LABEL: n} for n in "xyz"},
        [PodInfo(p.namespace, p.name, (), p.ip, (), n == 0) for n, p, _ in pods],
    )
    flows = tiers.policy_flows(parsed, view, Slots(), 64000)["cnp/big/ingress/0"]
    local = sum(1 for n, _, _ in pods if n == 0)
    # the local subjects (nw_dst), every pod as a peer (nw_src), the port, the conj_id flow,
    # and the hairpin conjunction's source clause and conj_id flow (its other clauses' flows
    # are the ones above)
    assert len(flows) == local + len(pods) + 1 + 1 + 2
    assert {f.priority for f in flows} == {64000}


def test_priorities_follow_the_evaluation_order_and_tiers_are_ranked_apart():
    ps = [
        cnp.parse(make_cnp(n, t, p, ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}]))
        for n, t, p in (
            ("b", "Admin", 5),
            ("a", "Admin", 5),
            ("c", "Admin", 1),
            ("d", "Baseline", 9),
        )
    ]
    base = tiers.base_priorities(ps)
    assert base["c"] > base["a"] > base["b"]
    assert base["c"] == tiers.PRIO_TOP - 1 * tiers.BAND  # banded by the API priority
    assert base["a"] == tiers.PRIO_TOP - 5 * tiers.BAND and base["b"] == base["a"] - 1
    assert base["d"] == tiers.PRIO_TOP - 9 * tiers.BAND


def _deny_all(name, prio, rules=1):
    rule = {"action": "Deny", "from": [{"namespaces": {}}]}
    return cnp.parse(make_cnp(name, "Admin", prio, ingress=[rule] * rules))


def test_a_policy_added_ahead_moves_no_other_policys_flows():
    """Banded priorities: a new policy at priority 0 (or between two others) leaves the flow
    priorities of the others as they were (the bench saw 30 policies' flows move)."""
    ps = [_deny_all(f"p{i}", 10 * i + 5, rules=3) for i in range(30)]
    before = tiers.base_priorities(ps)
    after = tiers.base_priorities([*ps, _deny_all("first", 0), _deny_all("mid", 42)])
    assert {k: after[k] for k in before} == before
    assert after["first"] > max(before.values()) and before["p3"] > after["mid"] > before["p4"]


def test_ties_that_overflow_a_band_fall_back_to_ranking_in_evaluation_order():
    ps = [_deny_all(f"t{i:02}", 7, rules=25) for i in range(4)] + [_deny_all("later", 8)]
    base = tiers.base_priorities(ps)
    order = [p.name for p in cnp.order(ps)]
    assert [base[n] for n in order] == sorted(base.values(), reverse=True)
    tops = sorted(base.values(), reverse=True)
    assert all(a - b >= 25 for a, b in zip(tops[:4], tops[1:5], strict=True))


def test_a_pod_elsewhere_only_affects_policies_that_peer_with_it():
    """A remote pod in a subject namespace changes no flow of this node unless a peer (or a
    named port over a network) reaches it."""
    subject_only = cnp.parse(
        make_cnp("s", "Admin", 1, {"namespaces": ns_sel("x")},
                 egress=[{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}])
    )  # fmt: skip
    named = cnp.parse(
        make_cnp("n", "Admin", 1, {"namespaces": ns_sel("y")},
                 egress=[{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}],
                          "protocols": [{"destinationNamedPort": "http"}]}])
    )  # fmt: skip
    view = View({n: {NS_LABEL: n} for n in "xy"}, [])
    remote = PodInfo("x", "r", (), "10.1.2.3", (), local=False)
    assert not tiers.affects(subject_only, remote, view)
    assert tiers.affects(subject_only, PodInfo("x", "l", (), "10.1.2.4", (), local=True), view)
    assert tiers.affects(named, remote, view)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"tier": "Middle", "priority": 1, "subject": {"namespaces": {}}}, "spec.tier"),
        ({"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}}, "spec.priority"),
        ({"tier": "Admin", "priority": -1, "subject": {"namespaces": {}}}, "spec.priority"),
        ({"tier": "Admin", "priority": "1", "subject": {"namespaces": {}}}, "spec.priority"),
        ({"tier": "Admin", "priority": 1}, "spec.subject"),
        (
            {"tier": "Admin", "priority": 1,
             "subject": {"namespaces": {}, "pods": {"podSelector": {}}}},
            "spec.subject",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]},
            "spec.ingress[0].action",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "ingress": [{"action": "Deny", "from": []}]},
            "spec.ingress[0].from",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}]},
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
                          "protocols": [{"tcp": {"destinationPort": {"range": {"start": 9, "end": 9}}}}]}]},
            "spec.ingress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "ingress": [{"action": "Deny", "from": [{"namespaces": {}, "pods": {"podSelector": {}}}]}]},
            "spec.ingress[0].from[0]",
        ),
        (
            {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
             "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
                          "protocols": [{"tcp": {}}]}]},
            "spec.ingress[0].protocols[0].tcp",
        ),
    ],
)  # fmt: skip
def test_invalid_objects_name_the_object_and_field(spec, field):
    with pytest.raises(cnp.CNPError) as e:
        cnp.parse({"metadata": {"name": "bad"}, "spec": spec})
    assert str(e.value).startswith(f"ClusterNetworkPolicy bad: {field}"), str(e.value)


# -- random cases against the independent reference (tests/cnp_reference.py) ----------------


def _node_dicts():
    return [
        {
            "metadata": {"name": name, "labels": NODE_LABELS[name]},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_IPS[name]}]},
        }
        for name in NODE_LABELS
    ]


def _world_dicts():
    from tests.unit.test_fake_pipeline import _dicts

    pods = world()
    nss, pod_dicts = _dicts(pods)
    for (n, _, _), d in zip(pods, pod_dicts, strict=True):
        d["spec"]["nodeName"] = ("node-a", "node-b")[n]
    return pods, nss, pod_dicts


@pytest.mark.parametrize("seed", [*range(60), *range(1000, 1020)])
def test_fake_pipeline_matches_the_reference_on_random_cluster_policies(seed):
    """Seeds from 1000 on also draw peers of kinds ovsctl does not know (fail closed)."""
    from tests import cnp_reference as ref

    pods, nss, pod_dicts = _world_dicts()
    nodes = _node_dicts()
    nps, cnps = ref.random_case(seed, nss, pod_dicts, nodes, unknown_peers=seed >= 1000)
    want = ref.evaluate(nss, pod_dicts, nps, cnps, nodes)
    got = matrix(nps, cnps)
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"seed {seed}: {nps} {cnps}\n" + ", ".join(
        f"{k}: {'delivered' if got[k] else 'dropped'}" for k in wrong[:10]
    )


def _view_of(nss, pod_dicts, nps, cnps, nodes) -> dict:
    """The agent's /cluster view of these objects (what trace and reachability read)."""
    return {
        "namespaces": [{"name": n["metadata"]["name"], "labels": n["metadata"]["labels"]} for n in nss],
        "pods": [
            {
                "namespace": d["metadata"]["namespace"],
                "name": d["metadata"]["name"],
                "ip": d["status"]["podIP"],
                "labels": d["metadata"]["labels"],
                "ports": [
                    [p["name"], p["containerPort"], p["protocol"]]
                    for c in d["spec"]["containers"]
                    for p in c["ports"]
                ],
                "node": d["spec"]["nodeName"],
            }
            for d in pod_dicts
        ],
        "nodes": [
            {"name": n["metadata"]["name"], "ip": NODE_IPS[n["metadata"]["name"]],
             "labels": n["metadata"]["labels"]}
            for n in nodes
        ],
        "policies": nps,
        "cluster_network_policies": cnps,
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(60))
def test_intent_names_the_same_deciding_rule_as_the_reference(seed):
    from flows.intent import Intents, Pod
    from tests import cnp_reference as ref

    _, nss, pod_dicts = _world_dicts()
    nodes = _node_dicts()
    nps, cnps = ref.random_case(seed, nss, pod_dicts, nodes)
    want = ref.decisions(nss, pod_dicts, nps, cnps, nodes)
    view = _view_of(nss, pod_dicts, nps, cnps, nodes)
    intents = Intents(view)
    pods = {p.key: p for p in (Pod.from_view(p) for p in view["pods"])}
    for key, answer in want.items():
        s, _, rest = key.partition("->")
        d, _, pp = rest.partition(":")
        port, _, proto = pp.partition("/")
        it = intents.evaluate(pods[s], pods[d], int(port), proto)
        assert it.allowed == answer["allowed"], (key, it.to_dict(), answer)
        for direction in ("egress", "ingress"):
            mine, theirs = getattr(it, direction), answer[direction]
            assert mine.tier == theirs["tier"], (key, direction, mine, theirs)
            if theirs["tier"] in ("Admin", "Baseline"):
                got = mine.decided_by
                assert (got.policy, got.rule, got.action) == (
                    theirs["policy"], theirs["rule"], theirs["action"]
                ), (key, direction, got, theirs)  # fmt: skip
            passed = theirs["passed"]
            mine_passed = (mine.passed.policy, mine.passed.rule) if mine.passed else None
            their_passed = (passed["policy"], passed["rule"]) if passed else None
            assert mine_passed == their_passed, (key, direction, mine.passed, passed)


def test_networks_match_their_own_family_on_a_dual_stack_node():
    """::/0 denies a dual-stack pod's IPv6 only; its IPv4 conjunction gets no flows."""
    pol = cnp.parse(
        make_cnp(
            "v6-out", "Admin", 1, {"namespaces": {}},
            egress=[{"action": "Deny", "to": [{"networks": ["::/0"]}]}],
        )
    )  # fmt: skip
    view = View(
        {"x": {NS_LABEL: "x"}},
        [PodInfo("x", "a", (), "10.244.0.5", (), True, ips=("10.244.0.5", "fd00:10:244::5"))],
    )
    flows = tiers.policy_flows(pol, view, Slots(), 64000)["cnp/v6-out/egress/0"]
    texts = sorted(str(f) for f in flows)
    assert texts == [
        "[AdminEgressRule] priority=64000,conj_id=256,ipv6 actions=drop",
        "[AdminEgressRule] priority=64000,ipv6 actions=conjunction(256,2/2)",
        "[AdminEgressRule] priority=64000,ipv6,ipv6_src=fd00:10:244::5 actions=conjunction(256,1/2)",
    ]


def test_ovs_decodes_the_cluster_policy_flows_as_their_text():
    """Every kind of tier flow (each action in each tier table, both families, 0.0.0.0/0 and
    ::/0, ranges, named ports, audited), encoded as the agent sends it and decoded by
    ovs-ofctl: the text OVS prints is ours."""
    from tests.ofparse import assert_ovs_decodes_as_text

    view = View(
        {n: {NS_LABEL: n} for n in "xy"},
        [
            PodInfo("x", "a", (("app", "a"),), "10.244.0.5", (("web", 80, "TCP"),), True,
                    ips=("10.244.0.5", "fd00:10:244::5")),
            PodInfo("y", "b", (("app", "b"),), "10.244.1.6", (("web", 8080, "TCP"),), False,
                    ips=("10.244.1.6", "fd00:10:244:1::6")),
        ],
        {"n1": ((("zone", "a"),), ("192.168.50.11",))},
    )  # fmt: skip
    rules = [
        {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
        {"action": "Pass", "to": [{"nodes": {}}, {"networks": ["203.0.113.0/24", "fd00:9::/64"]}],
         "protocols": [{"udp": {"destinationPort": {"range": {"start": 53, "end": 60}}}}]},
        {"action": "Accept", "to": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "web"}]},
    ]  # fmt: skip
    flows: set = set()
    for tier in ("Admin", "Baseline"):
        for audit in (False, True):
            name = f"{tier.lower()}-{audit}"
            pol = cnp.parse(
                make_cnp(
                    name, tier, 1, {"namespaces": {}}, audit=audit, egress=rules,
                    ingress=[{"action": "Accept", "from": [{"pods": {"podSelector": {}}}],
                              "protocols": [{"sctp": {"destinationPort": {"number": 9}}}]}],
                )
            )  # fmt: skip
            base = tiers.base_priorities([pol])[pol.name] - (100 if audit else 0)
            for fs in tiers.policy_flows(pol, view, Slots(), base).values():
                flows |= fs
    assert {f.table for f in flows} == set(tiers.TABLES.values())
    assert_ovs_decodes_as_text(flows)


EXTERNALS = [(EXTERNAL, 80, "TCP"), (EXTERNAL, 53, "UDP"), ("198.51.100.9", 443, "TCP")]


@pytest.mark.parametrize("seed", range(30))
def test_fake_pipeline_matches_the_reference_to_nodes_and_external_addresses(seed):
    """Every pod to both nodes' addresses and to external ones (networks and nodes peers, the
    pod's own node), on the fake switch against the reference's egress verdicts."""
    from tests import cnp_reference as ref

    pods, nss, pod_dicts = _world_dicts()
    nodes = _node_dicts()
    targets = EXTERNALS + ref.node_targets(nodes, ((10250, "TCP"), (53, "UDP")))
    nps, cnps = ref.random_case(seed, nss, pod_dicts, nodes, targets)
    want = ref.evaluate_egress(nss, pod_dicts, nps, cnps, nodes, targets)
    net, _ = network(nps, cnps)
    wrong = []
    for n, src, _ in pods:
        for ip, port, proto in targets:
            make = tcp if proto == "TCP" else udp
            pkt = make(src.ofport, src.mac, NODES[n].gw_mac, src.ip, ip, next(_sport), port)
            res = net.nodes[NODES[n].node_ip][0].run(pkt)
            got = res.output_ports == [NODES[n].gw_ofport]
            assert got or res.dropped, res
            key = f"{src.namespace}/{src.name}->{ip}:{port}/{proto}"
            if got != want[key]:
                wrong.append(f"{key}: {'delivered' if got else 'dropped'}")
    assert not wrong, f"seed {seed}: {nps} {cnps}\n" + ", ".join(wrong[:10])
