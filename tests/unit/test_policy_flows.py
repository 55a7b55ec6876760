"""Unit tests of flows/policy.py (NetworkPolicy -> conjunctive flows) and flows/netpol.py
(parsing, port ranges), with no switch.

Each scenario reads the flows of a policy back into their conjunction structure: per
conjunction, its clauses (the set of matches carrying `conjunction(id,k/n)`), the `conj_id` flow
and where it goes; plus single-clause direct allows and the isolation drops. A small model of
OVS's lookup (highest priority first, a conjunction fires when each of its clauses has a
matching flow at that priority) then runs packets through the rule and default tables of every
node and compares the whole connection matrix with the independent reference evaluator in
tests/netpol_reference.py, on the reference's random policies.
"""

from __future__ import annotations

import ipaddress
import random
from collections import defaultdict
from itertools import count

import pytest

from flows import cookie, netpol, policy
from flows.family import V4, V6
from flows.flow import Conjunction, Flow, Goto, flow
from flows.netpol import PolicyError, port_masks
from flows.policy import PRIO_BASE, PodInfo, View
from tests.netpol_reference import evaluate, random_case

NS_LABEL = "kubernetes.io/metadata.name"
FAM = {4: V4, 6: V6}
WEB = (("http", 80, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))


# -- building views and policies -------------------------------------------------------------


def pod(ns, name, ip, labels=None, ports=WEB, local=True) -> PodInfo:
    labels = {"pod": name} if labels is None else labels
    return PodInfo(ns, name, tuple(sorted(labels.items())), ip, tuple(ports), local)


def view(pods, ns_labels=None) -> View:
    nss = {p.namespace for p in pods} | set(ns_labels or {})
    return View(
        {ns: {"ns": ns, **(ns_labels or {}).get(ns, {}), NS_LABEL: ns} for ns in sorted(nss)},
        list(pods),
    )


def parse(spec: dict, ns: str = "x", name: str = "p") -> netpol.Policy:
    return netpol.parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


class Slots:
    """slot_of(owner): distinct, stable slots in order of first use (as the agent hands out)."""

    def __init__(self, start: int = 0):
        self.slots: dict[str, int] = {}
        self._next = count(start)

    def __call__(self, owner: str) -> int:
        if owner not in self.slots:
            self.slots[owner] = next(self._next)
        return self.slots[owner]


def all_flows(owners: dict[str, frozenset[Flow]]) -> set[Flow]:
    return set().union(*owners.values()) if owners else set()


def flows_of(pol, v, slots=None) -> dict[str, frozenset[Flow]]:
    return policy.policy_flows(pol, v, slots or Slots())


# -- reading flows back -----------------------------------------------------------------------


def mtext(f: Flow) -> str:
    """The match as ovs-ofctl writes it, without the priority: 'tcp,tp_dst=80'."""
    return ",".join(v if k == "protocol" else f"{k}={v}" for k, v in f.match)


class Structure:
    """The flows of one or more rules, read back: conjunctions, direct allows, drops."""

    def __init__(self, flows):
        self.flows = set(flows)
        self.conj: dict[int, dict] = {}  # id -> {"n", "clauses": {k: set(match)}, "prio"}
        self.conj_flows: dict[int, Flow] = {}
        self.direct: dict[str, set[str]] = defaultdict(set)  # table -> matches
        self.drops: dict[str, set[str]] = defaultdict(set)  # table -> matches
        for f in self.flows:
            match = dict(f.match)
            if "conj_id" in match:
                assert int(match["conj_id"]) not in self.conj_flows, "two conj_id flows"
                self.conj_flows[int(match["conj_id"])] = f
            elif f.actions and all(isinstance(a, Conjunction) for a in f.actions):
                for a in f.actions:
                    c = self.conj.setdefault(a.id, {"n": a.n_clauses, "clauses": {}, "prio": set()})
                    assert c["n"] == a.n_clauses, f"conjunction {a.id} with two clause counts"
                    c["clauses"].setdefault(a.clause, set()).add(mtext(f))
                    c["prio"].add(f.priority)
            elif not f.actions:
                self.drops[f.table].add(mtext(f))
            else:
                assert len(f.actions) == 1 and isinstance(f.actions[0], Goto), f
                self.direct[f.table].add(mtext(f))
        # every conjunction is complete and has exactly one conj_id flow at its priority
        for cid, c in self.conj.items():
            assert sorted(c["clauses"]) == list(range(1, c["n"] + 1)), (cid, c)
            assert len(c["prio"]) == 1, f"conjunction {cid} spread over priorities {c['prio']}"
            assert cid in self.conj_flows, f"conjunction {cid} has no conj_id flow"
            assert self.conj_flows[cid].priority in c["prio"]
        assert set(self.conj_flows) == set(self.conj), "conj_id flows without a conjunction"
        # the rules' hairpin conjunctions (a pod that is its own peer, through a Service) apart
        self.hairpin = {
            cid - policy.HAIRPIN_CONJ: self.conj.pop(cid)
            for cid in sorted(self.conj)
            if cid >= policy.HAIRPIN_CONJ
        }
        for cid in self.hairpin:
            self.conj_flows.pop(cid + policy.HAIRPIN_CONJ)

    def shapes(self) -> list[list[set[str]]]:
        """Each conjunction as its clause match sets, in conjunction id order."""
        return [
            [self.conj[cid]["clauses"][k] for k in range(1, self.conj[cid]["n"] + 1)]
            for cid in sorted(self.conj)
        ]

    def goto(self, cid: int) -> str:
        (a,) = self.conj_flows[cid].actions
        return a.table

    def table_of(self, cid: int) -> str:
        return self.conj_flows[cid].table


def ips(*addrs: str, field: str) -> set[str]:
    return {f"ip,{field}={a}" for a in addrs}


# The standard world: namespaces x, y, z with pods a, b, c; a in 10.0.1.0/24, b in .2, c in .3;
# last byte x=10, y=20, z=30. Node "n1" is local (pods a), the rest remote unless said otherwise.
def ip_of(ns: str, p: str) -> str:
    return f"10.0.{'abc'.index(p) + 1}.{('xyz'.index(ns) + 1) * 10}"


def world(local=lambda ns, p: True, ports=None) -> list[PodInfo]:
    return [
        pod(ns, p, ip_of(ns, p), ports=(ports or {}).get((ns, p), WEB), local=local(ns, p))
        for ns in "xyz"
        for p in "abc"
    ]


def rule_structure(spec, ns="x", v=None, direction=None) -> Structure:
    pol = parse(spec, ns)
    owners = flows_of(pol, v or view(world()))
    rules = {o: fs for o, fs in owners.items() if not o.endswith("/isolation")}
    if direction:
        rules = {o: fs for o, fs in rules.items() if f"/{direction}/" in o}
    return Structure(all_flows(rules))


X_PODS_DST = ips(ip_of("x", "a"), ip_of("x", "b"), ip_of("x", "c"), field="nw_dst")
X_PODS_SRC = ips(ip_of("x", "a"), ip_of("x", "b"), ip_of("x", "c"), field="nw_src")


# -- scenarios: conjunction structure ---------------------------------------------------------


def test_ingress_pod_selector_and_port_is_three_clauses():
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}
            ],
        }
    )
    assert s.shapes() == [
        [
            ips(ip_of("x", "a"), field="nw_dst"),
            ips(ip_of("x", "b"), field="nw_src"),
            {"tcp,tp_dst=80"},
        ]
    ]
    (cid,) = s.conj
    assert s.table_of(cid) == "IngressRule" and s.goto(cid) == "L2Forwarding"
    assert not s.direct and not s.drops


def test_ingress_peers_without_ports_is_two_clauses():
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        }
    )
    assert s.shapes() == [
        [X_PODS_DST, ips(ip_of("y", "a"), ip_of("y", "b"), ip_of("y", "c"), field="nw_src")]
    ]


def test_ingress_ports_without_peers_is_two_clauses():
    s = rule_structure(
        {"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP", "port": 53}]}]}
    )
    assert s.shapes() == [[X_PODS_DST, {"tcp,tp_dst=80", "udp,tp_dst=53"}]]


def test_ingress_allow_all_rule_is_direct_allows():
    for rule in ({}, {"from": []}, {"ports": []}):
        s = rule_structure({"podSelector": {}, "ingress": [rule]})
        assert s.conj == {}
        assert s.direct == {"IngressRule": X_PODS_DST}
        for f in s.flows:
            assert f.actions == (Goto("L2Forwarding"),)


def test_egress_allow_all_rule_is_direct_allows():
    s = rule_structure({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    assert s.conj == {} and s.direct == {"EgressRule": X_PODS_SRC}
    for f in s.flows:
        assert f.actions == (Goto("L3Forwarding"),)


def test_egress_namespace_and_port_is_three_clauses():
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "c"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                    "ports": [{"port": 81}],
                }
            ],
        }
    )
    assert s.shapes() == [
        [
            ips(ip_of("x", "c"), field="nw_src"),
            ips(ip_of("z", "a"), ip_of("z", "b"), ip_of("z", "c"), field="nw_dst"),
            {"tcp,tp_dst=81"},
        ]
    ]
    (cid,) = s.conj
    assert s.table_of(cid) == "EgressRule" and s.goto(cid) == "L3Forwarding"


def test_deny_all_ingress_is_isolation_drops_only():
    pol = parse({"podSelector": {}, "policyTypes": ["Ingress"]})
    owners = flows_of(pol, view(world()))
    assert list(owners) == [policy.isolation_owner(pol)]
    s = Structure(all_flows(owners))
    assert s.drops == {"IngressDefault": X_PODS_DST}
    assert not s.conj and not s.direct


def test_deny_all_egress_is_isolation_drops_only():
    pol = parse({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"]})
    s = Structure(all_flows(flows_of(pol, view(world()))))
    assert s.drops == {"EgressDefault": ips(ip_of("x", "b"), field="nw_src")}


def test_both_types_drop_in_both_default_tables_at_the_policy_priority():
    slots = Slots(start=7)
    pol = parse(
        {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"]}
    )
    owners = flows_of(pol, view(world()), slots)
    s = Structure(all_flows(owners))
    assert s.drops == {
        "IngressDefault": ips(ip_of("x", "a"), field="nw_dst"),
        "EgressDefault": ips(ip_of("x", "a"), field="nw_src"),
    }
    assert {f.priority for f in s.flows} == {PRIO_BASE + slots.slots[policy.isolation_owner(pol)]}


def test_default_policy_types_with_egress_rules_isolate_both_directions():
    pol = parse({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert pol.types == {"Ingress", "Egress"}
    owners = flows_of(pol, view(world()))
    s = Structure(all_flows(owners))
    assert s.drops == {"IngressDefault": X_PODS_DST, "EgressDefault": X_PODS_SRC}
    assert s.shapes() == [[X_PODS_SRC, {"udp,tp_dst=53"}]]


def test_rules_of_a_type_not_in_policy_types_make_no_flows():
    pol = parse(
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": 80}]}],
            "egress": [{"ports": [{"port": 53}]}],
        }
    )
    owners = flows_of(pol, view(world()))
    assert set(owners) == {policy.isolation_owner(pol), policy.rule_owner(pol, "ingress", 0)}
    s = Structure(all_flows(owners))
    assert "EgressDefault" not in s.drops and "EgressRule" not in {f.table for f in s.flows}


def test_pods_on_other_nodes_get_no_flows():
    remote = view(world(local=lambda ns, p: False))
    pol = parse(
        {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}],
            "egress": [{}],
        }
    )
    owners = flows_of(pol, remote)
    assert set(owners) == {
        policy.isolation_owner(pol),
        policy.rule_owner(pol, "ingress", 0),
        policy.rule_owner(pol, "egress", 0),
    }
    assert all(fs == frozenset() for fs in owners.values())


def test_own_clause_has_only_local_pods_peers_include_remote_ones():
    v = view(world(local=lambda ns, p: p == "a"))
    s = rule_structure(
        {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]},
        v=v,
    )
    assert s.shapes() == [[ips(ip_of("x", "a"), field="nw_dst"), X_PODS_SRC, {"tcp,tp_dst=80"}]]
    pol = parse({"podSelector": {}})
    assert Structure(all_flows(flows_of(pol, v))).drops == {
        "IngressDefault": ips(ip_of("x", "a"), field="nw_dst")
    }


def test_empty_peer_set_makes_no_rule_flows_but_isolation_stays():
    pol = parse(
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "nobody"}}}]}],
        }
    )
    owners = flows_of(pol, view(world()))
    assert owners[policy.rule_owner(pol, "ingress", 0)] == frozenset()
    assert Structure(owners[policy.isolation_owner(pol)]).drops == {"IngressDefault": X_PODS_DST}


def test_policy_selecting_no_pod_makes_no_flows():
    pol = parse({"podSelector": {"matchLabels": {"pod": "nobody"}}, "ingress": [{}]})
    assert all_flows(flows_of(pol, view(world()))) == set()


def test_pods_without_ip_are_left_out():
    pods = world()
    pods[0] = pod("x", "a", "", local=True)  # x/a not wired yet
    pods[3] = pod("y", "a", "", local=True)  # y/a (a peer) not wired yet
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}],
        },
        v=view(pods),
    )
    own, peers, _ = s.shapes()[0]
    assert own == ips(ip_of("x", "b"), ip_of("x", "c"), field="nw_dst")
    assert ip_of("y", "a") not in str(peers) and len(peers) == 7


def test_named_port_ingress_one_conjunction_per_resolved_number():
    ports = {("x", "b"): (("http", 8080, "TCP"),), ("x", "c"): (("dns", 53, "UDP"),)}
    v = view(world(ports=ports))
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        },
        v=v,
    )
    peers = ips(*(ip_of("x", p) for p in "abc"), field="nw_src")
    assert sorted(s.shapes(), key=lambda c: sorted(c[2])) == [
        [ips(ip_of("x", "a"), field="nw_dst"), peers, {"tcp,tp_dst=80"}],
        [ips(ip_of("x", "b"), field="nw_dst"), peers, {"tcp,tp_dst=8080"}],
    ]


def test_named_port_egress_resolves_on_the_peers():
    ports = {("y", "b"): (("http", 8080, "TCP"),), ("y", "c"): ()}
    v = view(world(ports=ports))
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                    "ports": [{"port": "http"}],
                }
            ],
        },
        v=v,
    )
    own = ips(ip_of("x", "a"), field="nw_src")
    assert sorted(s.shapes(), key=lambda c: sorted(c[2])) == [
        [own, ips(ip_of("y", "a"), field="nw_dst"), {"tcp,tp_dst=80"}],
        [own, ips(ip_of("y", "b"), field="nw_dst"), {"tcp,tp_dst=8080"}],
    ]


def test_named_port_egress_without_peers_resolves_on_every_pod():
    ports = {("z", "c"): (("http", 9090, "TCP"),)}
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "http"}]}],
        },
        v=view(world(ports=ports)),
    )
    shapes = sorted(s.shapes(), key=lambda c: sorted(c[2]))
    assert [c[2] for c in shapes] == [{"tcp,tp_dst=80"}, {"tcp,tp_dst=9090"}]
    assert shapes[1][1] == ips(ip_of("z", "c"), field="nw_dst")
    assert len(shapes[0][1]) == 8


def test_named_and_numeric_ports_share_own_flows_with_merged_actions():
    ports = {("x", "b"): (("http", 8080, "TCP"),)}
    s = rule_structure(
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}, {"port": 81}]}]},
        v=view(world(ports=ports)),
    )
    # numeric: every own pod; "http": 80 on a and c, 8080 on b
    assert sorted(s.shapes(), key=lambda c: sorted(c[1])) == [
        [ips(ip_of("x", "a"), ip_of("x", "c"), field="nw_dst"), {"tcp,tp_dst=80"}],
        [ips(ip_of("x", "b"), field="nw_dst"), {"tcp,tp_dst=8080"}],
        [X_PODS_DST, {"tcp,tp_dst=81"}],
    ]
    # one flow per match: x/a's flow carries both of its conjunctions
    xa = [f for f in s.flows if mtext(f) == f"ip,nw_dst={ip_of('x', 'a')}"]
    assert len(xa) == 1 and len(xa[0].actions) == 2
    assert len({mtext(f) for f in s.flows}) == len(s.flows)


def test_named_port_resolving_nowhere_makes_no_flows():
    for port in (
        {"port": "nosuch"},
        {"port": "dns", "protocol": "TCP"},
        {"port": "http", "protocol": "UDP"},
    ):
        s = rule_structure({"podSelector": {}, "ingress": [{"ports": [port]}]})
        assert s.flows == set(), port


def test_end_port_range_is_masked_port_matches():
    s = rule_structure({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]})
    assert s.shapes() == [[X_PODS_DST, {"tcp,tp_dst=0x50/0xfffe"}]]
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"ports": [{"port": 1000, "endPort": 2000, "protocol": "UDP"}]}],
        }
    )
    (clauses,) = s.shapes()
    want = {
        f"udp,tp_dst={v}" if m == 0xFFFF else f"udp,tp_dst={v:#x}/{m:#x}"
        for v, m in port_masks(1000, 2000)
    }
    assert clauses[1] == want and len(want) == len(port_masks(1000, 2000)) == 8


def test_end_port_equal_to_port_is_one_exact_match():
    s = rule_structure(
        {"podSelector": {}, "ingress": [{"ports": [{"port": 8080, "endPort": 8080}]}]}
    )
    assert s.shapes() == [[X_PODS_DST, {"tcp,tp_dst=8080"}]]


def test_protocol_only_ports_match_the_protocol():
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"ports": [{"protocol": "UDP"}, {"protocol": "SCTP", "port": 9}]}],
        }
    )
    assert s.shapes() == [[X_PODS_DST, {"udp", "sctp,tp_dst=9"}]]


def test_ip_block_except_is_split_into_cidrs():
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "192.168.0.0/24",
                                "except": ["192.168.0.0/26", "192.168.0.200/32"],
                            }
                        }
                    ]
                }
            ],
        }
    )
    own, peers = s.shapes()[0]
    assert own == X_PODS_DST
    want = [ipaddress.ip_network("192.168.0.0/24")]
    for e in ("192.168.0.0/26", "192.168.0.200/32"):
        e = ipaddress.ip_network(e)
        want = [r for n in want for r in (n.address_exclude(e) if e.subnet_of(n) else [n])]
    # a /32 is the bare address, as OVS prints it (so `flows --diff` can settle)
    assert peers == {f"ip,nw_src={n.network_address if n.prefixlen == 32 else n}" for n in want}
    assert "ip,nw_src=192.168.0.64/26" in peers and "ip,nw_src=192.168.0.201" in peers


def test_ip_block_and_pods_in_one_rule_are_one_peer_clause():
    s = rule_structure(
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {"ipBlock": {"cidr": "8.8.8.0/24"}},
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                    ],
                    "ports": [{"port": 53, "protocol": "UDP"}],
                }
            ],
        }
    )
    assert s.shapes() == [
        [X_PODS_SRC, {"ip,nw_dst=8.8.8.0/24", f"ip,nw_dst={ip_of('x', 'b')}"}, {"udp,tp_dst=53"}]
    ]


def test_pod_and_namespace_selector_in_one_peer_is_and():
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"ns": "y"}},
                            "podSelector": {"matchLabels": {"pod": "b"}},
                        }
                    ]
                }
            ],
        }
    )
    assert s.shapes() == [
        [ips(ip_of("x", "a"), field="nw_dst"), ips(ip_of("y", "b"), field="nw_src")]
    ]


def test_two_peers_are_or_and_duplicates_collapse():
    s = rule_structure(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                        {"namespaceSelector": {"matchLabels": {NS_LABEL: "y"}}, "podSelector": {}},
                    ]
                }
            ],
        }
    )
    assert s.shapes() == [
        [
            ips(ip_of("x", "a"), field="nw_dst"),
            ips(ip_of("y", "a"), ip_of("y", "b"), ip_of("y", "c"), ip_of("x", "b"), field="nw_src"),
        ]
    ]


def test_match_expressions_select_peers():
    pods = world() + [pod("y", "d", "10.0.4.20", labels={"pod": "d", "tier": "db"})]
    for expr, want in (
        ({"key": "tier", "operator": "In", "values": ["db"]}, {"10.0.4.20"}),
        ({"key": "tier", "operator": "Exists"}, {"10.0.4.20"}),
        ({"key": "tier", "operator": "DoesNotExist"}, {ip_of("y", p) for p in "abc"}),
        ({"key": "pod", "operator": "NotIn", "values": ["a", "b"]}, {ip_of("y", "c"), "10.0.4.20"}),
    ):
        s = rule_structure(
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                "podSelector": {"matchExpressions": [expr]},
                            }
                        ]
                    }
                ],
            },
            v=view(pods),
        )
        assert s.shapes()[0][1] == ips(*want, field="nw_src"), expr


def test_namespace_selector_on_the_automatic_name_label_of_an_unknown_namespace():
    pods = world() + [pod("w", "a", "10.0.1.40")]
    v = View({"x": {NS_LABEL: "x"}}, pods)  # w is not in the view's namespaces
    s = rule_structure(
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "w"}}}]}],
        },
        v=v,
    )
    assert s.shapes()[0][1] == {"ip,nw_src=10.0.1.40"}


def test_each_rule_has_its_own_owner_priority_and_conjunction_ids():
    slots = Slots()
    pol = parse(
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]},
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]},
            ],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
        }
    )
    owners = flows_of(pol, view(world()), slots)
    assert set(owners) == {
        f"policy/x/p/{d}" for d in ("isolation", "ingress/0", "ingress/1", "egress/0")
    }
    prios = {}
    conj_ids = {}
    for owner, fs in owners.items():
        assert fs
        assert {f.priority for f in fs} == {PRIO_BASE + slots.slots[owner]}
        prios[owner] = PRIO_BASE + slots.slots[owner]
        conj_ids[owner] = set(Structure(fs).conj)
    assert len(set(prios.values())) == 4
    ids = [i for s in conj_ids.values() for i in s]
    assert len(ids) == len(set(ids)) == 3


def test_conjunction_ids_come_from_the_slot():
    pol = parse({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    for slot in (0, 1, 5000, policy.MAX_SLOTS - 1):
        fs = policy.rule_flows(pol, "ingress", 0, pol.ingress[0], view(world()), slot)
        s = Structure(fs)
        assert set(s.conj) == {(slot + 1) * policy.CONJ_PER_RULE}
        assert {f.priority for f in fs} == {PRIO_BASE + slot}
    for bad in (-1, policy.MAX_SLOTS):
        with pytest.raises(ValueError, match="slot"):
            policy.rule_flows(pol, "ingress", 0, pol.ingress[0], view(world()), bad)


def test_peer_clause_includes_the_selected_pods_themselves():
    """A pod may be both a target and a peer (from: podSelector {}): nw_dst and nw_src flows."""
    s = rule_structure({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert s.shapes() == [[X_PODS_DST, X_PODS_SRC]]


# -- every flow is well formed, with a policy cookie ----------------------------------------


def _scenario_flows() -> list[list[tuple[str, Flow]]]:
    """Per random case: (owner, flow) of all its policies on one node (slots shared, as the
    agent's are)."""
    out = []
    nss = [{"metadata": {"name": n, "labels": {"ns": n}}} for n in "xyz"]
    pods = [_pod_dict(p) for p in world()]
    for seed in range(40):
        v = view(world(local=lambda ns, p: p != "c"))
        slots = Slots()
        case = []
        for pol_obj in random_case(seed, nss, pods):
            pol = netpol.parse(pol_obj)
            for owner, fs in flows_of(pol, v, slots).items():
                case += [(owner, f) for f in fs]
        out.append(case)
    return out


def test_every_flow_passes_flow_validation_and_has_a_policy_cookie():
    items = [item for case in _scenario_flows() for item in case]
    assert len(items) > 500
    for owner, f in items:
        again = flow(f.table, f.priority, dict(f.match), f.actions, f.cookie)
        assert again == f
        assert f.text()
        assert f.table in ("IngressRule", "EgressRule", "IngressDefault", "EgressDefault")
        d = cookie.decode(f.cookie)
        assert d["feature"] == "policy" and d["round"] == 0
        assert d["owner"] == cookie.owner_id(owner)
        if f.table.endswith("Default"):
            assert f.actions == () and owner.endswith("/isolation")
        else:
            assert f.actions


def test_rule_flows_never_repeat_a_match_at_one_priority():
    """OVS keeps one flow per (table, priority, match): two would overwrite each other."""
    for case in _scenario_flows():
        keys = [f.key for _, f in case]
        assert len(keys) == len(set(keys))


# -- growth: pods + rules, not pods x rules ---------------------------------------------------


def _scaled(n_pods: int, n_rules: int) -> int:
    """n_rules policies; pod j belongs to group j % n_rules; policy i selects group i and lets
    group i+1 in on port 80 and sends to group i-1 on UDP 53. All pods are local."""
    pods = [
        pod(
            "x",
            f"p{j}",
            str(ipaddress.ip_address("10.1.0.0") + j + 1),
            labels={"g": f"g{j % n_rules}"},
        )
        for j in range(n_pods)
    ]
    v = view(pods)
    slots = Slots()
    total = 0
    for i in range(n_rules):
        pol = parse(
            {
                "podSelector": {"matchLabels": {"g": f"g{i}"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"g": f"g{(i + 1) % n_rules}"}}}],
                        "ports": [{"port": 80}],
                    }
                ],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"g": f"g{(i - 1) % n_rules}"}}}],
                        "ports": [{"port": 53, "protocol": "UDP"}],
                    }
                ],
            },
            name=f"p{i}",
        )
        total += len(all_flows(flows_of(pol, v, slots)))
    return total


@pytest.mark.parametrize("n_pods,n_rules", [(20, 2), (40, 4), (100, 10), (200, 5)])
def test_flow_count_grows_linearly(n_pods, n_rules):
    small, big = _scaled(n_pods, n_rules), _scaled(2 * n_pods, 2 * n_rules)
    assert big / small <= 2.1, (small, big)
    assert big / small >= 1.9, (small, big)


def test_many_pods_times_many_peers_is_additive():
    """100 selected pods x 100 peers x 3 ports: ~200 flows, not 10,000 (or 30,000)."""
    targets = [pod("x", f"t{j}", f"10.2.0.{j + 1}", labels={"role": "t"}) for j in range(100)]
    peers = [
        pod("y", f"s{j}", f"10.3.0.{j + 1}", labels={"role": "s"}, local=False) for j in range(100)
    ]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"role": "t"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "s"}}}
                    ],
                    "ports": [{"port": 80}, {"port": 443}, {"port": 8000, "endPort": 8999}],
                }
            ],
        }
    )
    owners = flows_of(pol, view(targets + peers))
    rule = owners[policy.rule_owner(pol, "ingress", 0)]
    s = Structure(rule)
    assert len(s.conj) == 1
    n_ports = 2 + len(port_masks(8000, 8999))
    assert len(rule) == 100 + 100 + n_ports + 1
    assert len(all_flows(owners)) == len(rule) + 100  # + isolation drops


def test_named_ports_stay_additive():
    """A named port with two numbers: one conjunction each, own pods split between them."""
    targets = [
        pod(
            "x",
            f"t{j}",
            f"10.2.0.{j + 1}",
            labels={"role": "t"},
            ports=(("http", 80 + j % 2, "TCP"),),
        )
        for j in range(100)
    ]
    peers = [
        pod("y", f"s{j}", f"10.3.0.{j + 1}", labels={"role": "s"}, local=False) for j in range(100)
    ]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"role": "t"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "s"}}}
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    )
    rule = flows_of(pol, view(targets + peers))[policy.rule_owner(pol, "ingress", 0)]
    # own flows 100 (each in one conjunction), peer flows 100 (each in both), 2 ports, 2 conj_id
    assert len(rule) == 100 + 100 + 2 + 2


# -- an OVS lookup model: the flows against the reference evaluator ---------------------------


def _field_ok(field: str, value: str, pkt: dict) -> bool:
    v6 = ipaddress.ip_address(pkt["src"]).version == 6
    if field == "protocol":  # ip/tcp/udp match IPv4 packets only, ipv6/tcp6/udp6 IPv6 ones
        if value.endswith("6") != v6:
            return False
        value = value.removesuffix("6")
        return value in ("ip", "ipv") or value == pkt["proto"].lower()
    if field in ("nw_src", "nw_dst", "ipv6_src", "ipv6_dst"):
        if field.startswith("ipv6") != v6:
            return False
        addr = ipaddress.ip_address(pkt["src" if field.endswith("src") else "dst"])
        return addr in ipaddress.ip_network(value)
    if field == "tp_dst":
        if "/" in value:
            v, m = (int(x, 0) for x in value.split("/"))
            return pkt["port"] & m == v
        return int(value, 0) == pkt["port"]
    if field == "conj_id":
        return False  # only the second lookup, after a conjunction fired, matches conj_id
    if field == "reg0" and value == "0/0x40":
        return True  # not a hairpin packet (the model sends none)
    raise AssertionError(f"the model does not know match field {field}")


def _lookup(flows: list[Flow], table: str, pkt: dict) -> Flow | None:
    """The flow OVS executes in `table` for `pkt`, None on a table miss. Highest priority
    first; a hard match wins at its priority; a conjunction fires when every clause has a
    matching flow at one priority, and then its conj_id flow runs."""
    by_prio = defaultdict(list)
    for f in flows:
        if f.table == table:
            by_prio[f.priority].append(f)
    conj_flow = {int(dict(f.match)["conj_id"]): f for f in flows if "conj_id" in dict(f.match)}
    for prio in sorted(by_prio, reverse=True):
        hard, clauses = [], defaultdict(set)
        n_of = {}
        for f in by_prio[prio]:
            if not all(_field_ok(k, v, pkt) for k, v in f.match):
                continue
            if f.actions and all(isinstance(a, Conjunction) for a in f.actions):
                for a in f.actions:
                    clauses[a.id].add(a.clause)
                    n_of[a.id] = a.n_clauses
            else:
                hard.append(f)
        fired = sorted(cid for cid, cl in clauses.items() if len(cl) == n_of[cid])
        assert not (hard and fired), "hard and conjunctive matches at one priority"
        if hard:
            assert len(hard) == 1, f"ambiguous: {hard}"
            return hard[0]
        if fired:
            return conj_flow[fired[0]]
    return None


def _direction_allows(flows: list[Flow], rule_table: str, default_table: str, pkt: dict) -> bool:
    hit = _lookup(flows, rule_table, pkt)
    if hit is not None:
        want = "L3Forwarding" if rule_table == "EgressRule" else "L2Forwarding"
        assert hit.actions == (Goto(want),), hit
        return True
    drop = _lookup(flows, default_table, pkt)
    return drop is None


def _pod_dict(p: PodInfo) -> dict:
    return {
        "metadata": {"namespace": p.namespace, "name": p.name, "labels": dict(p.labels)},
        "spec": {
            "containers": [
                {
                    "ports": [
                        {"name": n, "containerPort": cp, "protocol": pr} for n, cp, pr in p.ports
                    ]
                }
            ]
        },
        "status": {"podIP": p.ip, "podIPs": [{"ip": a} for a in p.addrs]},
    }


def datapath_matrix(
    namespaces: list[dict], pods: list[dict], policies: list[dict], nodes=3, family=None
):
    """The connection matrix the flows of every node give (pods spread over `nodes` nodes;
    egress checked on the source's node, ingress on the destination's); `family` 6: between
    the pods' IPv6 addresses (status.podIPs), as the reference's evaluate(family=6)."""
    ns_labels = {
        n["metadata"]["name"]: {
            **(n["metadata"].get("labels") or {}),
            NS_LABEL: n["metadata"]["name"],
        }
        for n in namespaces
    }
    infos = []
    for i, d in enumerate(pods):
        md = d["metadata"]
        ports = tuple(
            (cp.get("name") or "", cp["containerPort"], cp.get("protocol") or "TCP")
            for c in d["spec"]["containers"]
            for cp in c.get("ports") or []
        )
        infos.append(
            (
                i % nodes,
                PodInfo(
                    md["namespace"],
                    md["name"],
                    tuple(sorted((md.get("labels") or {}).items())),
                    d["status"]["podIP"],
                    ports,
                    ips=tuple(e["ip"] for e in d["status"].get("podIPs") or []),
                ),
            )
        )
    parsed = [netpol.parse(p) for p in policies]
    node_flows = {}
    for node in range(nodes):
        v = View(
            ns_labels,
            [
                PodInfo(
                    *(p.namespace, p.name, p.labels, p.ip, p.ports), local=(n == node), ips=p.ips
                )
                for n, p in infos
            ],
        )
        slots = Slots()
        fl: list[Flow] = []
        for pol in parsed:
            fl += all_flows(policy.policy_flows(pol, v, slots))
        node_flows[node] = fl
    out = {}
    for sn, src in infos:
        for dn, dst in infos:
            if src is dst:
                continue
            s_ip, d_ip = (
                (src.ip, dst.ip)
                if family is None
                else (src.addr_of(FAM[family]), dst.addr_of(FAM[family]))
            )
            if not (s_ip and d_ip):
                continue
            for port, proto in sorted({(cp, pr) for _, cp, pr in dst.ports}):
                pkt = {"src": s_ip, "dst": d_ip, "proto": proto, "port": port}
                ok = _direction_allows(
                    node_flows[sn], "EgressRule", "EgressDefault", pkt
                ) and _direction_allows(node_flows[dn], "IngressRule", "IngressDefault", pkt)
                out[f"{src.namespace}/{src.name}->{dst.namespace}/{dst.name}:{port}/{proto}"] = ok
    return out


def _world_dicts(ports=None):
    nss = [{"metadata": {"name": n, "labels": {"ns": n}}} for n in "xyz"]
    pods = [_pod_dict(p) for p in world(ports=ports)]
    return nss, pods


def _diff(got, want) -> str:
    wrong = sorted(k for k in want if got.get(k) != want[k])
    return f"{len(wrong)} of {len(want)} differ: " + ", ".join(
        f"{k} {'allowed' if got[k] else 'blocked'} (reference: {'allowed' if want[k] else 'blocked'})"
        for k in wrong[:10]
    )


def test_lookup_model_on_a_hand_checked_case():
    nss, pods = _world_dicts()
    pols = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                        "ports": [{"port": 80, "endPort": 81}],
                    }
                ],
            },
        }
    ]
    got = datapath_matrix(nss, pods, pols)
    assert got["y/a->x/b:80/TCP"] and got["y/c->x/a:81/TCP"]
    assert not got["y/a->x/b:53/UDP"] and not got["z/a->x/b:80/TCP"] and not got["x/a->x/b:80/TCP"]
    assert got["x/a->y/b:53/UDP"]
    assert got == evaluate(nss, pods, pols)


# Seeds of random_case whose flows disagree with the reference because of a bug in
# flows/policy.py (egress named ports are resolved only on pods that selector peers select,
# so an ipBlock peer that covers a pod never allows that pod's named port). See
# test_egress_named_port_to_ip_block_covering_a_pod below.
_NAMED_EGRESS_IPBLOCK = "policy.py: egress named port to an ipBlock that covers a pod"
KNOWN_BAD_SEEDS: dict[int, str] = {}  # seeds 13, 18, 23 found the egress named-port bug


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BAD_SEEDS[s]))
        if s in KNOWN_BAD_SEEDS
        else s
        for s in range(60)
    ],
)
def test_flows_match_the_reference_on_random_policies(seed):
    ports = {("y", "b"): (("http", 8080, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))}
    nss, pods = _world_dicts(ports)
    policies = random_case(seed, nss, pods)
    got = datapath_matrix(nss, pods, policies)
    want = evaluate(nss, pods, policies)
    assert got == want, f"seed {seed}: {policies}\n" + _diff(got, want)


# -- regressions: bugs the review found, fixed --


def test_egress_named_port_to_ip_block_covering_a_pod():
    nss, pods = _world_dicts()
    pols = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.2.0/24"}}], "ports": [{"port": "http"}]}
                ],
            },
        }
    ]
    want = evaluate(nss, pods, pols)
    assert want["x/a->y/b:80/TCP"] is True  # y/b is 10.0.2.20, in the block, http = 80
    got = datapath_matrix(nss, pods, pols)
    assert got == want, _diff(got, want)


def test_empty_policy_types_are_defaulted():
    pol = parse({"podSelector": {}, "policyTypes": []})
    assert pol.types == {"Ingress"}


def test_null_namespace_selector_means_absent():
    spec = {
        "podSelector": {},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}, "namespaceSelector": None}]}
        ],
    }
    # the reference agrees with the API: x/a only
    nss, pods = _world_dicts()
    ref = evaluate(nss, pods, [{"metadata": {"name": "p", "namespace": "x"}, "spec": spec}])
    assert ref["x/a->x/b:80/TCP"] and not ref["y/a->x/b:80/TCP"]
    s = rule_structure(spec)
    assert s.shapes() == [[X_PODS_DST, ips(ip_of("x", "a"), field="nw_src")]]


def test_null_protocol_defaults_to_tcp():
    pol = parse({"podSelector": {}, "ingress": [{"ports": [{"protocol": None, "port": 80}]}]})
    assert pol.ingress[0].ports == (netpol.Port("TCP", 80),)


def test_ip_block_except_must_be_a_strict_subset():
    pol = parse(
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}
            ],
        }
    )
    assert pol.ingress[0].never and "except" in pol.skipped[0]


# -- parse errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,words",
    [
        (None, ["spec", "missing"]),
        ({}, ["spec.podSelector", "required"]),
        ({"podSelector": []}, ["spec.podSelector", "label selector"]),
        ({"podSelector": {"matchLabels": ["a"]}}, ["spec.podSelector.matchLabels", "map"]),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]
                }
            },
            ["spec.podSelector.matchExpressions[0].operator", "Equals"],
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            ["spec.podSelector.matchExpressions[0].values", "required"],
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]
                }
            },
            ["spec.podSelector.matchExpressions[0].values", "empty"],
        ),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, ["spec.ingress[0].from[0]", "needs"]),
        ({"podSelector": {}, "egress": [{"to": ["x"]}]}, ["spec.egress[0].to[0]", "object"]),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            ["spec.ingress[0].from[0]", "ipBlock"],
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "bogus"}}]}]},
            ["spec.ingress[0].from[0].ipBlock"],
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {}}]}]},
            ["spec.ingress[0].from[0].ipBlock", "cidr"],
        ),
        (
            {
                "podSelector": {},
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}
                ],
            },
            ["spec.egress[0].to[0].ipBlock.except", "10.1.0.0/24", "not inside"],
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
            ["spec.ingress[0].ports[0].protocol", "ICMP"],
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
            ["spec.ingress[0].ports[0].port", "out of range"],
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
            ["spec.ingress[0].ports[0].port", "70000"],
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]},
            ["spec.ingress[0].ports[0].port"],
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 1.5}]}]},
            ["spec.ingress[0].ports[0].port"],
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            ["spec.egress[0].ports[0].endPort", "90..65535"],
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": 90, "endPort": 70000}]}]},
            ["spec.egress[0].ports[0].endPort"],
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            ["spec.egress[0].ports[0].endPort", "numeric"],
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"endPort": 90}]}]},
            ["spec.egress[0].ports[0].endPort", "numeric"],
        ),
        (
            {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
            ["spec.policyTypes", "Ingress/Egress"],
        ),
        ({"podSelector": {}, "policyTypes": "Ingress"}, ["spec.policyTypes"]),
        ({"podSelector": {}, "ingress": ["x"]}, ["spec.ingress[0]", "object"]),
    ],
)
def test_parse_errors_name_the_field(spec, words):
    obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "shop"},
    }
    if spec is not None:
        obj["spec"] = spec
    try:
        pol = netpol.parse(obj)
    except PolicyError as e:
        msg = str(e)
    else:
        # a rule the agent cannot read allows nothing (never "every peer"); the policy and
        # its isolation stay, and the reason is logged once (Policy.skipped)
        assert len(pol.skipped) == 1, pol.skipped
        assert [r.never for r in (*pol.ingress, *pol.egress)] == [True]
        msg = pol.skipped[0]
        assert msg.endswith("this rule allows nothing"), msg
    assert msg.startswith("NetworkPolicy shop/bad: "), msg
    for w in words:
        assert w in msg, (w, msg)


def test_parse_defaults():
    pol = parse(
        {"podSelector": {}, "ingress": [{"ports": [{"port": "8080"}, {"port": "http"}, {}]}]}
    )
    assert pol.types == {"Ingress"} and pol.key == "x/p"
    assert [(p.protocol, p.port, p.end_port) for p in pol.ingress[0].ports] == [
        ("TCP", 8080, None),
        ("TCP", "http", None),
        ("TCP", None, None),
    ]
    assert parse({"podSelector": {}, "egress": [{}]}).types == {"Ingress", "Egress"}
    assert parse({"podSelector": {}, "egress": []}).types == {"Ingress"}
    assert parse({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}).types == {
        "Egress"
    }
    no_ns = netpol.parse({"metadata": {"name": "n"}, "spec": {"podSelector": {}}})
    assert no_ns.namespace == "default"
    rule = parse({"podSelector": {}, "ingress": [{"from": [], "ports": []}, {}]}).ingress
    assert rule[0] == rule[1] == netpol.Rule()


# -- port_masks ------------------------------------------------------------------------------


def _check_masks(start: int, end: int) -> None:
    masks = port_masks(start, end)
    covered = []
    for v, m in masks:
        assert 0 <= v <= 0xFFFF and 0 <= m <= 0xFFFF
        inv = ~m & 0xFFFF
        assert inv & (inv + 1) == 0, f"{m:#x} is not a prefix mask"
        assert v & inv == 0, f"value {v:#x} has bits outside mask {m:#x}"
        covered.append((v, v + inv))
    covered.sort()
    assert covered[0][0] == start and covered[-1][1] == end, (start, end, masks)
    for (_, a1), (b0, _) in zip(covered, covered[1:], strict=False):
        assert b0 == a1 + 1, f"gap or overlap in {masks} for {start}-{end}"
    # the fewest prefixes: at most 2 per bit level, never two mergeable neighbours
    assert len(masks) <= 30
    for (a0, a1), (b0, b1) in zip(covered, covered[1:], strict=False):
        size = a1 - a0 + 1
        mergeable = size == b1 - b0 + 1 and a0 % (2 * size) == 0
        assert not mergeable, f"{masks} for {start}-{end} is not minimal"


def test_port_masks_cover_exactly_the_range():
    rng = random.Random(4)
    ranges = [
        (1, 65535),
        (0, 65535),
        (80, 80),
        (80, 81),
        (1000, 2000),
        (65535, 65535),
        (1, 1),
        (32768, 65535),
    ]
    for _ in range(400):
        a = rng.randint(1, 65535)
        b = rng.choice([a, min(65535, a + rng.randint(0, 20)), rng.randint(a, 65535)])
        ranges.append((a, b))
    for start, end in ranges:
        _check_masks(start, end)


def _ports_matching(v: int, m: int) -> list[int]:
    """Every 16-bit p with p & m == v (OVS's masked tp_dst match), by enumerating the subsets of
    the free bits; no assumption on the shape of the mask."""
    free = ~m & 0xFFFF
    if v & free:
        return []  # can never match
    out, sub = [], free
    while True:
        out.append(v | sub)
        if sub == 0:
            return out
        sub = (sub - 1) & free


def test_port_masks_match_exactly_the_range_port_by_port():
    """Exhaustive: for a few hundred random ranges, the ports the (value, mask) matches accept,
    all of them, are exactly [start, end], each matched by one mask only."""
    rng = random.Random(9)
    ranges = [(80, 81), (1000, 2000), (1, 65535), (8000, 8999), (65535, 65535)]
    for _ in range(300):
        a = rng.randint(1, 65535)
        b = rng.choice(
            [a, min(65535, a + rng.randint(0, 20)), min(65535, a + rng.randint(0, 2000))]
            + [rng.randint(a, 65535)]
        )
        ranges.append((a, b))
    for start, end in ranges:
        got = [p for v, m in port_masks(start, end) for p in _ports_matching(v, m)]
        assert sorted(got) == list(range(start, end + 1)), (start, end)
    # and the enumeration agrees with a brute force over every 16-bit value
    for v, m in [(80, 0xFFFE), (1000, 0xFFF8), (0x8000, 0x8000), (5, 0xFF0F), (3, 0xFFFC)]:
        assert sorted(_ports_matching(v, m)) == [p for p in range(65536) if p & m == v]


def test_port_masks_examples():
    assert port_masks(80, 80) == [(80, 0xFFFF)]
    assert port_masks(80, 81) == [(80, 0xFFFE)]
    assert port_masks(1, 65535)[-1] == (32768, 0x8000)
    assert port_masks(0, 65535) == [(0, 0)]
    assert port_masks(5, 4) == []


def test_the_hairpin_costs_two_flows_per_rule_not_one_per_pod_and_port():
    """A "same namespace" rule on many ports: each pod is its own peer, so its hairpin (through
    a Service) must be admitted; the rule's hairpin conjunction shares the own and port clause
    flows and adds only its source clause and its conj_id flow."""
    pods = [pod("x", f"p{i}", f"10.1.0.{i + 1}") for i in range(50)]
    pol = parse(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"podSelector": {}}],
                    "ports": [{"port": 1024, "endPort": 65535}, {"port": 53, "protocol": "UDP"}],
                }
            ],
        }
    )
    rule = flows_of(pol, view(pods))[policy.rule_owner(pol, "ingress", 0)]
    s = Structure(rule)
    n_ports = len(port_masks(1024, 65535)) + 1
    assert len(rule) == 50 + 50 + n_ports + 1 + 2
    ((hp,),) = [list(c["clauses"][2]) for c in s.hairpin.values()]
    assert hp == "ip,nw_src=169.254.169.252"
    (c,) = s.hairpin.values()
    assert c["clauses"][1] == s.conj[next(iter(s.conj))]["clauses"][1]  # the same own flows
