"""Unit tests of the reference NetworkPolicy evaluator (tests/netpol_reference.py): hand-checked
matrices for the situations the upstream sig-network e2e suite covers, and the random policy
generator (deterministic, valid, exercising every feature)."""

from __future__ import annotations

import copy
import ipaddress
import json
import re

import pytest

from flows import netpol
from tests.netpol_reference import evaluate, policy_types, random_case, selector_matches

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
DEFAULT_PORTS = (("http", 80, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))
# pod a in 10.0.1.0/24, b in 10.0.2.0/24, c in 10.0.3.0/24 (one /24 per node, as in the lab);
# the last byte says the namespace: x=10, y=20, z=30
IP = {
    (ns, p): f"10.0.{PODS.index(p) + 1}.{(NAMESPACES.index(ns) + 1) * 10}"
    for ns in NAMESPACES
    for p in PODS
}


def namespaces(extra_labels: dict | None = None) -> list[dict]:
    out = []
    for ns in NAMESPACES:
        labels = {"ns": ns, **((extra_labels or {}).get(ns, {}))}
        out.append({"metadata": {"name": ns, "labels": labels}})
    return out


def pods(ports: dict | None = None, labels: dict | None = None) -> list[dict]:
    """The 9 pods; `ports` / `labels` override per (ns, pod)."""
    out = []
    for ns in NAMESPACES:
        for p in PODS:
            cps = (ports or {}).get((ns, p), DEFAULT_PORTS)
            out.append(
                {
                    "metadata": {
                        "namespace": ns,
                        "name": p,
                        "labels": (labels or {}).get((ns, p), {"pod": p}),
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "ports": [
                                    {"name": n, "containerPort": cp, "protocol": pr}
                                    for n, cp, pr in cps
                                ],
                            }
                        ]
                    },
                    "status": {"podIP": IP[(ns, p)]},
                }
            )
    return out


def netpol_obj(name: str, ns: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def expect(rule, pod_list=None) -> dict[str, bool]:
    """rule(sn, sp, dn, dp, port, proto) -> bool over every connection of the world."""
    pod_list = pod_list or pods()
    out = {}
    for src in pod_list:
        sn, sp = src["metadata"]["namespace"], src["metadata"]["name"]
        for dst in pod_list:
            dn, dp = dst["metadata"]["namespace"], dst["metadata"]["name"]
            if (sn, sp) == (dn, dp):
                continue
            for c in dst["spec"]["containers"]:
                for cp in c["ports"]:
                    port, proto = cp["containerPort"], cp["protocol"]
                    out[f"{sn}/{sp}->{dn}/{dp}:{port}/{proto}"] = bool(
                        rule(sn, sp, dn, dp, port, proto)
                    )
    return out


def check(policies, rule, ns_list=None, pod_list=None):
    got = evaluate(ns_list or namespaces(), pod_list or pods(), policies)
    want = expect(rule, pod_list)
    wrong = sorted(k for k in want if got.get(k) != want[k])
    assert set(got) == set(want)
    assert not wrong, f"{len(wrong)} differ, e.g. " + ", ".join(
        f"{k}: got {got[k]}" for k in wrong[:8]
    )


# -- the matrix ------------------------------------------------------------------------------


def test_keys_cover_every_pair_and_declared_port():
    got = evaluate(namespaces(), pods(), [])
    assert len(got) == 9 * 8 * 3
    assert got["x/a->y/b:80/TCP"] is True
    assert got["x/a->y/b:53/UDP"] is True
    assert not any(k.startswith("x/a->x/a:") for k in got)
    assert all(re.fullmatch(r"[a-z]/[a-z]->[a-z]/[a-z]:\d+/(TCP|UDP|SCTP)", k) for k in got), list(
        got
    )[:3]


def test_no_policies_allow_everything():
    check([], lambda *_: True)


def test_keys_use_each_destinations_own_ports():
    ps = pods(ports={("y", "b"): (("web", 8080, "TCP"),), ("z", "c"): ()})
    got = evaluate(namespaces(), ps, [])
    assert "x/a->y/b:8080/TCP" in got and "x/a->y/b:80/TCP" not in got
    assert not any("->z/c:" in k for k in got)
    assert len(got) == 7 * 8 * 3 + 8 * 1  # z/c declares nothing, y/b one port


def test_container_port_protocol_defaults_to_tcp():
    ps = pods()
    ps[0]["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    got = evaluate(namespaces(), ps, [])
    assert "y/a->x/a:8080/TCP" in got


# -- hand-checked situations (the upstream e2e ones) ----------------------------------------


def test_deny_all_ingress():
    pol = netpol_obj("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")


def test_deny_all_ingress_without_policy_types():
    """podSelector {} and nothing else: policyTypes defaults to Ingress -> deny all ingress."""
    pol = netpol_obj("deny", "x", {"podSelector": {}})
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")


def test_deny_all_egress():
    pol = netpol_obj("deny", "x", {"podSelector": {}, "policyTypes": ["Egress"]})
    check([pol], lambda sn, sp, dn, dp, port, proto: sn != "x")


def test_deny_all_both_directions_for_one_pod():
    pol = netpol_obj(
        "deny",
        "y",
        {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress", "Egress"]},
    )
    check(
        [pol], lambda sn, sp, dn, dp, port, proto: (sn, sp) != ("y", "b") and (dn, dp) != ("y", "b")
    )


def test_allow_from_same_namespace():
    pol = netpol_obj(
        "same-ns", "x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "x")


def test_namespace_selector():
    pol = netpol_obj(
        "from-y",
        "x",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "y")


def test_namespace_selector_by_automatic_name_label():
    """kubernetes.io/metadata.name is set on every namespace, whatever its labels say."""
    ns_list = namespaces({"z": {"kubernetes.io/metadata.name": "forged"}})
    pol = netpol_obj(
        "from-z",
        "x",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}
                    ]
                }
            ],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "z", ns_list=ns_list)


def test_pod_and_namespace_selector_in_one_peer_is_and():
    pol = netpol_obj(
        "and",
        "x",
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
        },
    )
    check(
        [pol], lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "a") or (sn, sp) == ("y", "b")
    )


def test_pod_selector_and_namespace_selector_as_two_peers_is_or():
    """Two peers: pods b of x (a podSelector alone means the policy's namespace), or any pod of y."""
    pol = netpol_obj(
        "or",
        "x",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                    ]
                }
            ],
        },
    )
    check(
        [pol],
        lambda sn, sp, dn, dp, port, proto: (
            (dn, dp) != ("x", "a") or sn == "y" or (sn, sp) == ("x", "b")
        ),
    )


def test_pod_selector_with_empty_namespace_selector_means_every_namespace():
    pol = netpol_obj(
        "any-ns",
        "x",
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}
            ],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or sp == "c")


def test_named_port_resolves_per_destination_pod():
    """ "http" is 80 on x/a and x/c but 8080 on x/b: each destination allows its own number."""
    ports = {("x", "b"): (("http", 8080, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))}
    ps = pods(ports=ports)
    pol = netpol_obj("http", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})

    def rule(sn, sp, dn, dp, port, proto):
        if dn != "x":
            return True
        return (port, proto) == ((8080, "TCP") if dp == "b" else (80, "TCP"))

    check([pol], rule, pod_list=ps)


def test_named_port_needs_matching_protocol():
    pol = netpol_obj(
        "dns-tcp",
        "x",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "TCP"}]}]},
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")
    pol = netpol_obj(
        "dns-udp",
        "x",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]},
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or (port, proto) == (53, "UDP"))


def test_egress_named_port_resolves_on_the_destination():
    ports = {("y", "a"): (("http", 9090, "TCP"),)}
    ps = pods(ports=ports)
    pol = netpol_obj(
        "out-http",
        "x",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]},
    )
    check(
        [pol],
        lambda sn, sp, dn, dp, port, proto: (
            sn != "x" or (port, proto) == ((9090, "TCP") if (dn, dp) == ("y", "a") else (80, "TCP"))
        ),
        pod_list=ps,
    )


def test_end_port_range():
    pol = netpol_obj(
        "range", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]}
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "TCP")
    pol = netpol_obj(
        "range", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 1000}]}]}
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or (port, proto) == (81, "TCP"))
    pol = netpol_obj(
        "range", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 1, "endPort": 79}]}]}
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")


def test_ip_block_with_except():
    """10.0.1.0/24 holds the a pods; except y/a (10.0.1.20)."""
    pol = netpol_obj(
        "cidr",
        "x",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.0.1.0/24", "except": ["10.0.1.20/32"]}}]}
            ],
        },
    )
    check(
        [pol],
        lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "b") or (sp == "a" and sn != "y"),
    )


def test_ip_block_egress_matches_pod_ips():
    pol = netpol_obj(
        "to-cidr",
        "z",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.3.0/24"]}}]}],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: sn != "z" or dp != "c")


def test_ip_block_cidr_with_host_bits_is_its_network():
    pol = netpol_obj(
        "cidr",
        "x",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.99/24"}}]}]},
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or sp == "b")


def test_union_of_two_policies():
    p1 = netpol_obj(
        "from-y",
        "x",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    p2 = netpol_obj(
        "from-z-http",
        "x",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                    "ports": [{"port": 80}],
                }
            ],
        },
    )
    check(
        [p1, p2],
        lambda sn, sp, dn, dp, port, proto: (
            dn != "x" or sn == "y" or (dp == "a" and sn == "z" and port == 80)
        ),
    )


def test_union_of_two_rules_in_one_policy():
    pol = netpol_obj(
        "two-rules",
        "x",
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]},
                {"ports": [{"protocol": "UDP", "port": 53}]},
            ],
        },
    )
    check(
        [pol],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or (sn, sp) == ("x", "a") or proto == "UDP",
    )


def test_egress_to_a_namespace():
    pol = netpol_obj(
        "to-y",
        "x",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: sn != "x" or dn == "y")


def test_egress_and_ingress_must_both_allow():
    """x may only send to y; y/b accepts only from z: x -> y/b is blocked at y/b's ingress."""
    out = netpol_obj(
        "to-y",
        "x",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    inn = netpol_obj(
        "from-z",
        "y",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
        },
    )
    check(
        [out, inn],
        lambda sn, sp, dn, dp, port, proto: (
            (sn != "x" or dn == "y") and ((dn, dp) != ("y", "b") or sn == "z")
        ),
    )


def test_policy_types_defaults():
    # only egress rules, no policyTypes: Ingress AND Egress -> ingress of x is denied too
    pol = netpol_obj("eg", "x", {"podSelector": {}, "egress": [{"ports": [{"port": 80}]}]})
    assert policy_types(pol) == {"Ingress", "Egress"}
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" and (sn != "x" or port == 80))
    # egress: [] is no egress section: Ingress only
    pol = netpol_obj("eg", "x", {"podSelector": {}, "egress": []})
    assert policy_types(pol) == {"Ingress"}
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")
    # policyTypes: [] is defaulted like an absent one
    pol = netpol_obj("eg", "x", {"podSelector": {}, "policyTypes": [], "egress": [{}]})
    assert policy_types(pol) == {"Ingress", "Egress"}
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")


def test_rules_of_a_direction_not_in_policy_types_are_ignored():
    pol = netpol_obj(
        "egress-only",
        "x",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
            "egress": [{"to": [{"podSelector": {}}]}],
        },
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: sn != "x" or dn == "x")


def test_protocol_mismatch():
    pol = netpol_obj(
        "udp-80",
        "x",
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]},
    )
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")
    pol = netpol_obj("tcp-53", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 53}]}]})
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x")


def test_protocol_only_port_entry_means_every_port_of_it():
    pol = netpol_obj("udp", "x", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]})
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "UDP")
    pol = netpol_obj("tcp", "x", {"podSelector": {}, "ingress": [{"ports": [{}]}]})
    check([pol], lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "TCP")


def test_empty_and_absent_from_and_ports_mean_all():
    for rule in ({}, {"from": []}, {"ports": []}, {"from": [], "ports": []}, {"from": None}):
        pol = netpol_obj("all", "x", {"podSelector": {}, "ingress": [rule]})
        check([pol], lambda *_: True)
    pol = netpol_obj(
        "all", "x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": []}]}
    )
    check([pol], lambda *_: True)


def test_match_expressions_operators():
    labels = {
        ("x", "a"): {"pod": "a", "tier": "web"},
        ("x", "b"): {"pod": "b", "tier": "db"},
        ("x", "c"): {"pod": "c"},
    }
    ps = pods(labels=labels)

    def only_from(expr, allowed_sources):
        pol = netpol_obj(
            "expr",
            "y",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {"matchExpressions": [expr]},
                                "namespaceSelector": {"matchLabels": {"ns": "x"}},
                            }
                        ]
                    }
                ],
            },
        )
        check(
            [pol],
            lambda sn, sp, dn, dp, port, proto: dn != "y" or (sn == "x" and sp in allowed_sources),
            pod_list=ps,
        )

    only_from({"key": "tier", "operator": "In", "values": ["web", "cache"]}, {"a"})
    only_from({"key": "tier", "operator": "NotIn", "values": ["web"]}, {"b", "c"})
    only_from({"key": "tier", "operator": "Exists"}, {"a", "b"})
    only_from({"key": "tier", "operator": "DoesNotExist"}, {"c"})


def test_selector_matches_and_of_labels_and_expressions():
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}
    assert selector_matches(sel, {"a": "1", "b": "x"})
    assert not selector_matches(sel, {"a": "1"})
    assert not selector_matches(sel, {"a": "2", "b": "x"})
    assert selector_matches({}, {}) and selector_matches(None, {"q": "r"})


def test_policy_in_another_namespace_does_not_select():
    pol = netpol_obj("deny", "z", {"podSelector": {"matchLabels": {"pod": "a"}}})
    check([pol], lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("z", "a"))


# -- random_case -----------------------------------------------------------------------------


def test_random_case_is_deterministic():
    for seed in range(30):
        a = random_case(seed, namespaces(), pods())
        b = random_case(seed, namespaces(), pods())
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        # the order of the inputs does not matter
        c = random_case(seed, list(reversed(namespaces())), list(reversed(pods())))
        assert json.dumps(a, sort_keys=True) == json.dumps(c, sort_keys=True)
    distinct = {json.dumps(random_case(s, namespaces(), pods()), sort_keys=True) for s in range(30)}
    assert len(distinct) == 30


def test_random_case_does_not_mutate_its_inputs():
    ns_list, pod_list = namespaces(), pods()
    before = copy.deepcopy((ns_list, pod_list))
    for seed in range(10):
        random_case(seed, ns_list, pod_list)
    assert (ns_list, pod_list) == before


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _api_valid(pol: dict) -> list[str]:
    """The API server's validation of the parts random_case varies (an independent check)."""
    errs = []
    if pol.get("apiVersion") != "networking.k8s.io/v1" or pol.get("kind") != "NetworkPolicy":
        errs.append("apiVersion/kind")
    if not _DNS_SUBDOMAIN.fullmatch(pol["metadata"]["name"]):
        errs.append("metadata.name")
    spec = pol["spec"]
    if "podSelector" not in spec:
        errs.append("spec.podSelector")

    def selector(sel, where):
        for i, e in enumerate(sel.get("matchExpressions") or []):
            if e["operator"] in ("In", "NotIn") and not e.get("values"):
                errs.append(f"{where}.matchExpressions[{i}].values")
            if e["operator"] in ("Exists", "DoesNotExist") and e.get("values"):
                errs.append(f"{where}.matchExpressions[{i}].values")
            if e["operator"] not in ("In", "NotIn", "Exists", "DoesNotExist"):
                errs.append(f"{where}.matchExpressions[{i}].operator")

    selector(spec["podSelector"], "spec.podSelector")
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, peer in enumerate(rule.get(key) or []):
                where = f"spec.{direction}[{i}].{key}[{j}]"
                kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if k in peer]
                if not kinds or ("ipBlock" in kinds and len(kinds) > 1):
                    errs.append(where)
                for k in ("podSelector", "namespaceSelector"):
                    if k in peer:
                        selector(peer[k], f"{where}.{k}")
                if "ipBlock" in peer:
                    cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
                    for e in peer["ipBlock"].get("except") or []:
                        en = ipaddress.ip_network(e, strict=False)
                        if not (en.subnet_of(cidr) and en.prefixlen > cidr.prefixlen):
                            errs.append(f"{where}.ipBlock.except")
            for j, port in enumerate(rule.get("ports") or []):
                where = f"spec.{direction}[{i}].ports[{j}]"
                if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                    errs.append(f"{where}.protocol")
                p, end = port.get("port"), port.get("endPort")
                if isinstance(p, int) and not 1 <= p <= 65535:
                    errs.append(f"{where}.port")
                if isinstance(p, str) and not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", p):
                    errs.append(f"{where}.port")
                if end is not None and (not isinstance(p, int) or not p <= end <= 65535):
                    errs.append(f"{where}.endPort")
    types = spec.get("policyTypes")
    if types is not None and (len(types) > 2 or any(t not in ("Ingress", "Egress") for t in types)):
        errs.append("spec.policyTypes")
    return errs


SEEDS = range(300)


def test_random_case_produces_valid_policies():
    for seed in SEEDS:
        policies = random_case(seed, namespaces(), pods())
        assert 1 <= len(policies) <= 3
        names = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies]
        assert len(set(names)) == len(names)
        for pol in policies:
            assert _api_valid(pol) == [], (seed, pol)
            parsed = netpol.parse(pol)  # flows' parser accepts it too
            assert parsed.namespace in NAMESPACES
            assert (parsed.namespace, parsed.name) == (
                pol["metadata"]["namespace"],
                pol["metadata"]["name"],
            )


def _features(pol: dict) -> set[str]:
    spec = pol["spec"]
    f = set()
    types = policy_types(pol)
    f.add(
        {frozenset({"Ingress"}): "ingress-only", frozenset({"Egress"}): "egress-only"}.get(
            frozenset(types), "both"
        )
    )
    if spec["podSelector"] == {}:
        f.add("empty-podSelector")
    if not spec.get("ingress") and not spec.get("egress"):
        f.add("deny-all")
    if "policyTypes" not in spec and spec.get("egress"):
        f.add("implicit-egress")

    def sel(s):
        if s.get("matchLabels"):
            f.add("matchLabels")
        for e in s.get("matchExpressions") or []:
            f.add(e["operator"])

    sel(spec["podSelector"])
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            if not rule.get(key):
                f.add(f"{direction}-all-peers")
            for peer in rule.get(key) or []:
                if "podSelector" in peer and "namespaceSelector" in peer:
                    f.add("pod+ns")
                elif "podSelector" in peer:
                    f.add("pod-peer")
                elif "namespaceSelector" in peer:
                    f.add("ns-peer")
                for k in ("podSelector", "namespaceSelector"):
                    if k in peer:
                        sel(peer[k])
                if "ipBlock" in peer:
                    f.add("ipBlock")
                    if peer["ipBlock"].get("except"):
                        f.add("ipBlock-except")
                    if peer["ipBlock"]["cidr"].endswith("/32"):
                        f.add("ipBlock-/32")
                    if peer["ipBlock"]["cidr"].endswith("/24"):
                        f.add("ipBlock-/24")
            for port in rule.get("ports") or []:
                f.add(port.get("protocol", "TCP"))
                if isinstance(port.get("port"), str):
                    f.add("named-port")
                elif "endPort" in port:
                    f.add("endPort")
                elif port.get("port") is None:
                    f.add("protocol-only")
                else:
                    f.add("numeric-port")
    return f


def test_random_case_exercises_every_feature():
    seen: set[str] = set()
    for seed in range(60):
        for pol in random_case(seed, namespaces(), pods()):
            seen |= _features(pol)
    want = {
        "ingress-only",
        "egress-only",
        "both",
        "empty-podSelector",
        "deny-all",
        "implicit-egress",
        "matchLabels",
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "pod+ns",
        "pod-peer",
        "ns-peer",
        "ingress-all-peers",
        "egress-all-peers",
        "ipBlock",
        "ipBlock-except",
        "ipBlock-/32",
        "ipBlock-/24",
        "TCP",
        "UDP",
        "named-port",
        "endPort",
        "protocol-only",
        "numeric-port",
    }
    assert want <= seen, sorted(want - seen)


def test_random_ip_blocks_cover_some_pod_ips():
    hit = 0
    for seed in range(60):
        for pol in random_case(seed, namespaces(), pods()):
            for direction, key in (("ingress", "from"), ("egress", "to")):
                for rule in pol["spec"].get(direction) or []:
                    for peer in rule.get(key) or []:
                        if "ipBlock" in peer:
                            net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                            hit += any(ipaddress.ip_address(ip) in net for ip in IP.values())
    assert hit >= 10


def test_random_cases_give_varied_matrices():
    """Neither always everything allowed nor always nothing: the cases discriminate."""
    fractions = []
    for seed in range(40):
        m = evaluate(namespaces(), pods(), random_case(seed, namespaces(), pods()))
        fractions.append(sum(m.values()) / len(m))
    assert sum(1 for f in fractions if 0 < f < 1) >= 25
    assert len({round(f, 3) for f in fractions}) >= 15


@pytest.mark.parametrize("seed", range(5))
def test_random_case_works_with_other_worlds(seed):
    """Pods without names on ports, without IPs, a namespace with no pods."""
    ns_list = namespaces() + [{"metadata": {"name": "empty"}}]
    ps = pods(ports={("x", "a"): ((None, 8080, "TCP"),)})
    del ps[1]["status"]
    policies = random_case(seed, ns_list, ps)
    for pol in policies:
        netpol.parse(pol)
        assert _api_valid(pol) == []
    evaluate(ns_list, ps, policies)
