"""Unit tests of the reference ClusterNetworkPolicy evaluator (tests/cnp_reference.py): hand-made
cases, each mirroring a sentence of the upstream API documentation, the upstream conformance
scenarios of conformance/base/api_integration/standard-anp-np-banp.yaml, and the random case
generator (deterministic, valid, exercising every feature)."""

from __future__ import annotations

import copy

import pytest

from tests import cnp_reference as ref
from tests import netpol_reference as npr

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = (("http", 80, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))
# pod a on node n1 in 10.0.1.0/24, b on n2 in 10.0.2.0/24, c on n3 in 10.0.3.0/24; the last
# byte says the namespace (x=10, y=20, z=30); IPv6 addresses fd00::<node>:<ns>
IP = {
    (ns, p): f"10.0.{PODS.index(p) + 1}.{(NAMESPACES.index(ns) + 1) * 10}"
    for ns in NAMESPACES
    for p in PODS
}
IP6 = {k: f"fd00::{PODS.index(k[1]) + 1}:{(NAMESPACES.index(k[0]) + 1) * 10}" for k in IP}
NODE_IP = {"n1": "192.168.0.1", "n2": "192.168.0.2", "n3": "192.168.0.3"}
NODE_ROLE = {"n1": "worker", "n2": "worker", "n3": "infra"}


def namespaces() -> list[dict]:
    return [{"metadata": {"name": ns, "labels": {"ns": ns}}} for ns in NAMESPACES]


def pods(ports: dict | None = None) -> list[dict]:
    out = []
    for ns in NAMESPACES:
        for i, p in enumerate(PODS):
            cps = (ports or {}).get((ns, p), PORTS)
            out.append(
                {
                    "metadata": {"namespace": ns, "name": p, "labels": {"pod": p}},
                    "spec": {
                        "nodeName": f"n{i + 1}",
                        "containers": [
                            {
                                "name": "c",
                                "ports": [
                                    {"name": n, "containerPort": cp, "protocol": pr}
                                    for n, cp, pr in cps
                                ],
                            }
                        ],
                    },
                    "status": {
                        "podIP": IP[(ns, p)],
                        "podIPs": [{"ip": IP[(ns, p)]}, {"ip": IP6[(ns, p)]}],
                    },
                }
            )
    return out


def nodes() -> list[dict]:
    return [
        {
            "metadata": {"name": n, "labels": {"role": NODE_ROLE[n]}},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "InternalIP", "address": f"fd00:ff::{n[1]}"},
                    {"type": "Hostname", "address": n},
                ]
            },
        }
        for n, ip in NODE_IP.items()
    ]


def cnp(name, tier, priority, subject=None, ingress=None, egress=None) -> dict:
    spec = {"tier": tier, "priority": priority, "subject": subject or {"namespaces": {}}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def rule(action, peers, protocols=None, name=None, direction="ingress") -> dict:
    out = {"action": action, "from" if direction == "ingress" else "to": peers}
    if protocols is not None:
        out["protocols"] = protocols
    if name:
        out["name"] = name
    return out


def eg(action, peers, protocols=None, name=None) -> dict:
    return rule(action, peers, protocols, name, "egress")


def ns_sel(*names) -> dict:
    return {
        "namespaces": {"matchExpressions": [{"key": "ns", "operator": "In", "values": list(names)}]}
    }


in_ns = ns_sel  # a subject of namespaces is written as a peer of namespaces is


def pod_peer(ns, pod) -> dict:
    return {
        "pods": {
            "namespaceSelector": {"matchLabels": {"ns": ns}},
            "podSelector": {"matchLabels": {"pod": pod}},
        }
    }


def netpol(name, ns, spec) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def expect(fn, pod_list=None) -> dict[str, bool]:
    """fn(sn, sp, dn, dp, port, proto) -> bool over every connection of the world."""
    pod_list = pod_list or pods()
    out = {}
    for s in pod_list:
        for d in pod_list:
            if s is d:
                continue
            sn, sp = s["metadata"]["namespace"], s["metadata"]["name"]
            dn, dp = d["metadata"]["namespace"], d["metadata"]["name"]
            for c in d["spec"]["containers"]:
                for p in c["ports"]:
                    port, proto = p["containerPort"], p["protocol"]
                    out[f"{sn}/{sp}->{dn}/{dp}:{port}/{proto}"] = fn(sn, sp, dn, dp, port, proto)
    return out


def check(cnps, fn, policies=(), pod_list=None, family=None):
    pod_list = pod_list or pods()
    got = ref.evaluate(namespaces(), pod_list, list(policies), list(cnps), nodes(), family)
    want = expect(fn, pod_list)
    wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert not wrong and set(got) == set(want), f"(got, want): {dict(list(wrong.items())[:12])}"
    assert any(got.values()) or not any(want.values())


def egress(cnps, targets, policies=()):
    return ref.evaluate_egress(namespaces(), pods(), list(policies), list(cnps), nodes(), targets)


DENY_ALL_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}


# -- basics ---------------------------------------------------------------------------------


def test_keys_are_netpol_references_and_nothing_means_allow():
    got = ref.evaluate(namespaces(), pods(), [], [], nodes())
    assert got == npr.evaluate(namespaces(), pods(), [])
    assert len(got) == 9 * 8 * 3 and all(got.values())


@pytest.mark.parametrize("seed", range(20))
def test_without_cluster_policies_it_is_netpol_reference(seed):
    policies = npr.random_case(seed, namespaces(), pods())
    assert ref.evaluate(namespaces(), pods(), policies, []) == npr.evaluate(
        namespaces(), pods(), policies
    )


# -- tiers ----------------------------------------------------------------------------------


def test_admin_deny_beats_networkpolicy_allow():
    """Admin: "cluster-wide security rules that cannot be overridden in the other tiers"."""
    np = netpol("allow-all", "x", {"podSelector": {}, "ingress": [{}]})
    c = cnp("deny-y", "Admin", 10, in_ns("x"), ingress=[rule("Deny", [ns_sel("y")])])
    check([c], lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x"), [np])


def test_admin_accept_beats_networkpolicy_deny():
    """Accept: "No further ingress ClusterNetworkPolicy or NetworkPolicy rules will be processed"."""
    np = netpol("deny", "x", DENY_ALL_INGRESS)
    c = cnp("accept-y", "Admin", 10, in_ns("x"), ingress=[rule("Accept", [ns_sel("y")])])
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "y", [np])


def test_egress_accept_leaves_the_destinations_ingress_rules():
    """Egress Accept: "... but any ingress rules at the destination do apply"."""
    np = netpol("deny", "y", DENY_ALL_INGRESS)
    c = cnp("out", "Admin", 1, in_ns("x"), egress=[eg("Accept", [{"namespaces": {}}])])
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "y", [np])


def test_admin_pass_hands_to_networkpolicy_then_baseline():
    """Pass: "if an Admin tier CNP uses Pass action, NetworkPolicy evaluation will happen next";
    pods no NetworkPolicy selects go on to the Baseline tier."""
    cnps = [
        cnp("pass-y", "Admin", 10, in_ns("x"), ingress=[rule("Pass", [ns_sel("y")])]),
        cnp("deny-rest", "Admin", 20, in_ns("x"), ingress=[rule("Deny", [{"namespaces": {}}])]),
        cnp("base", "Baseline", 0, in_ns("x"), ingress=[rule("Deny", [ns_sel("y")])]),
    ]
    np = netpol(
        "a-from-y",
        "x",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    check(cnps, lambda sn, sp, dn, dp, port, proto: dn != "x" or (sn == "y" and dp == "a"), [np])


def test_baseline_applies_only_where_no_networkpolicy_selects():
    """ "v1.NetworkPolicy always makes a final decision for selected pods. Further evaluation only
    happens for Pods not selected by a v1.NetworkPolicy" (in that direction)."""
    base = cnp(
        "base", "Baseline", 5, {"namespaces": {}}, ingress=[rule("Deny", [{"namespaces": {}}])]
    )
    nps = [
        netpol(
            "a-from-x",
            "y",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
            },
        ),
        netpol("egress-only", "z", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    ]
    check([base], lambda sn, sp, dn, dp, port, proto: dn == "y" and dp == "a" and sn == "x", nps)


def test_baseline_accept_is_overridden_by_networkpolicy_deny():
    base = cnp("base", "Baseline", 5, in_ns("x"), ingress=[rule("Accept", [{"namespaces": {}}])])
    np = netpol(
        "deny", "x", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}
    )
    check([base], lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "b"), [np])


def test_baseline_pass_means_default_allow():
    cnps = [
        cnp("pass", "Baseline", 1, in_ns("x"), ingress=[rule("Pass", [ns_sel("y")])]),
        cnp("deny", "Baseline", 2, in_ns("x"), ingress=[rule("Deny", [{"namespaces": {}}])]),
    ]
    check(cnps, lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "y")


def test_admin_pass_skips_only_the_rest_of_the_admin_tier():
    cnps = [
        cnp("pass", "Admin", 1, in_ns("x"), ingress=[rule("Pass", [ns_sel("y")])]),
        cnp("admin-deny", "Admin", 2, in_ns("x"), ingress=[rule("Deny", [{"namespaces": {}}])]),
        cnp(
            "base-accept", "Baseline", 0, in_ns("x"), ingress=[rule("Accept", [pod_peer("y", "a")])]
        ),
        cnp("base-deny", "Baseline", 1, in_ns("x"), ingress=[rule("Deny", [{"namespaces": {}}])]),
    ]
    check(cnps, lambda sn, sp, dn, dp, port, proto: dn != "x" or (sn, sp) == ("y", "a"))


# -- order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "deny_prio,accept_prio,allowed", [(9, 10, False), (10, 9, True), (0, 1000, False)]
)
def test_lower_priority_number_first(deny_prio, accept_prio, allowed):
    """ "Policies with lower priority values have higher precedence" (9 before 10: numbers,
    not strings)."""
    cnps = [
        cnp("p-deny", "Admin", deny_prio, in_ns("x"), ingress=[rule("Deny", [ns_sel("y")])]),
        cnp("p-accept", "Admin", accept_prio, in_ns("x"), ingress=[rule("Accept", [ns_sel("y")])]),
    ]
    check(cnps, lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x") or allowed)


def test_rule_order_within_a_policy():
    """ "a rule that appears at the top of the ingress rules would take the highest precedence"."""
    rules = [rule("Accept", [pod_peer("y", "a")]), rule("Deny", [ns_sel("y")])]
    c = cnp("order", "Admin", 3, in_ns("x"), ingress=rules)
    check([c], lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x") or sp == "a")
    c["spec"]["ingress"].reverse()
    check([c], lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x"))


@pytest.mark.parametrize(
    "accept_name,deny_name,allowed", [("a-accept", "b-deny", True), ("b-accept", "a-deny", False)]
)
def test_equal_priorities_are_ordered_by_name(accept_name, deny_name, allowed):
    """Equal priorities are up to the implementation; ours orders them by name."""
    cnps = [
        cnp(deny_name, "Admin", 10, in_ns("x"), ingress=[rule("Deny", [ns_sel("y")])]),
        cnp(accept_name, "Admin", 10, in_ns("x"), ingress=[rule("Accept", [ns_sel("y")])]),
    ]
    for listed in (cnps, cnps[::-1]):
        check(listed, lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x") or allowed)


def test_a_policy_whose_subject_does_not_select_is_skipped():
    cnps = [
        cnp("a-other", "Admin", 1, in_ns("z"), ingress=[rule("Accept", [ns_sel("y")])]),
        cnp("b-deny", "Admin", 2, in_ns("x"), ingress=[rule("Deny", [ns_sel("y")])]),
    ]
    check(cnps, lambda sn, sp, dn, dp, port, proto: not (sn == "y" and dn == "x"))


# -- subjects and peers ---------------------------------------------------------------------


def test_pods_subject_is_namespace_and_pod_selector():
    sub = {
        "pods": {
            "namespaceSelector": {"matchLabels": {"ns": "x"}},
            "podSelector": {"matchLabels": {"pod": "a"}},
        }
    }
    c = cnp("s", "Admin", 1, sub, ingress=[rule("Deny", [{"namespaces": {}}])])
    check([c], lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "a"))
    del sub["pods"]["namespaceSelector"]  # absent: every namespace
    check([c], lambda sn, sp, dn, dp, port, proto: dp != "a")


def test_namespace_name_label_and_pods_peer():
    sub = {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}
    c = cnp("s", "Admin", 1, sub, egress=[eg("Deny", [pod_peer("y", "b")])])
    check([c], lambda sn, sp, dn, dp, port, proto: not (sn == "z" and (dn, dp) == ("y", "b")))


def test_named_port_resolves_per_destination_pod_with_its_protocol():
    ports = {
        ("x", "a"): (("http", 8080, "TCP"), ("dns", 53, "UDP")),
        ("x", "b"): (("http", 80, "UDP"),),
        ("x", "c"): (("http", 80, "TCP"), ("quic", 80, "UDP")),  # same number, other protocol
    }
    c = cnp(
        "n",
        "Admin",
        1,
        in_ns("x"),
        ingress=[rule("Deny", [{"namespaces": {}}], [{"destinationNamedPort": "http"}])],
    )
    plist = pods(ports)
    check(
        [c],
        lambda sn, sp, dn, dp, port, proto: (
            dn != "x"
            or (dp, port, proto) not in {("a", 8080, "TCP"), ("b", 80, "UDP"), ("c", 80, "TCP")}
        ),
        pod_list=plist,
    )


def test_port_numbers_ranges_and_protocols():
    protos = [
        {"tcp": {"destinationPort": {"number": 81}}},
        {"udp": {"destinationPort": {"range": {"start": 50, "end": 53}}}},
        {"sctp": {"destinationPort": {"number": 80}}},
    ]
    c = cnp("p", "Admin", 1, in_ns("x"), ingress=[rule("Deny", [{"namespaces": {}}], protos)])
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "x" or (port, proto) == (80, "TCP"))
    protos[1]["udp"]["destinationPort"]["range"] = {"start": 54, "end": 60}  # beside 53
    protos.append({"tcp": {"destinationPort": {"range": {"start": 79, "end": 80}}}})  # inclusive
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "x" or (port, proto) == (53, "UDP"))


def test_no_protocols_means_all_traffic():
    c = cnp("all", "Admin", 1, in_ns("y"), egress=[eg("Deny", [pod_peer("z", "c")], [])])
    check([c], lambda sn, sp, dn, dp, port, proto: not (sn == "y" and (dn, dp) == ("z", "c")))


def test_networks_match_pod_addresses():
    """ "cluster-internal traffic will be checked against the rule as well"."""
    c = cnp(
        "net",
        "Admin",
        1,
        in_ns("x"),
        egress=[eg("Deny", [{"networks": ["10.0.2.0/24", "10.0.3.30/32"]}])],
    )
    check(
        [c],
        lambda sn, sp, dn, dp, port, proto: sn != "x" or not (dp == "b" or (dn, dp) == ("z", "c")),
    )


@pytest.mark.parametrize(
    "cidr,family,denied",
    [
        ("0.0.0.0/0", None, "all"),
        ("::/0", None, "none"),
        ("::/0", 6, "all"),
        ("0.0.0.0/0", 6, "none"),
        ("fd00::2:0/112", 6, "b"),
    ],
)
def test_networks_of_each_family(cidr, family, denied):
    """ "0.0.0.0/0" denies all IPv4 pod-to-pod traffic; "::/0" IPv6."""
    c = cnp("net", "Admin", 1, in_ns("y"), egress=[eg("Deny", [{"networks": [cidr]}])])

    def want(sn, sp, dn, dp, port, proto):
        return sn != "y" or {"all": False, "none": True, "b": dp != "b"}[denied]

    check([c], want, family=family)


def test_egress_to_external_networks_and_nodes():
    ext = [("8.8.8.8", 53, "UDP"), ("8.8.8.8", 443, "TCP"), ("2001:db8::1", 443, "TCP")]
    targets = ext + ref.node_targets(nodes(), ((10250, "TCP"),))
    cnps = [
        cnp(
            "a",
            "Admin",
            1,
            in_ns("x"),
            egress=[
                eg(
                    "Accept",
                    [{"networks": ["8.8.8.0/24"]}],
                    [{"udp": {"destinationPort": {"number": 53}}}],
                ),
                eg("Deny", [{"networks": ["0.0.0.0/0", "::/0"]}]),
            ],
        ),
        cnp(
            "b",
            "Admin",
            2,
            in_ns("y"),
            egress=[eg("Deny", [{"nodes": {"matchLabels": {"role": "infra"}}}])],
        ),
    ]
    got = egress(cnps, targets)
    want = {}
    for p in pods():
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        for ip, port, proto in targets:
            # the pod's own node is no exception for the Admin tier (ovsctl's choice)
            if ns == "x":
                ok = (ip, port, proto) == ("8.8.8.8", 53, "UDP")
            elif ns == "y":
                ok = ip not in (NODE_IP["n3"], "fd00:ff::3")
            else:
                ok = True
            want[f"{ns}/{name}->{ip}:{port}/{proto}"] = ok
    assert got == want
    assert len(targets) == 3 + 6  # two addresses per node, the Hostname one is no IP


def test_node_peers_do_not_match_pods_nor_pod_peers_ips():
    cnps = [
        cnp(
            "n",
            "Admin",
            1,
            {"namespaces": {}},
            egress=[
                eg(
                    "Deny",
                    [{"nodes": {}}, {"namespaces": {}}],
                    [{"tcp": {"destinationPort": {"number": 81}}}],
                )
            ],
        )
    ]
    check(cnps, lambda sn, sp, dn, dp, port, proto: port != 81)
    assert all(egress(cnps, [("8.8.8.8", 81, "TCP")]).values())
    assert not any(
        egress(cnps, [(NODE_IP["n3"], 81, "TCP")])[f"{ns}/{p}->{NODE_IP['n3']}:81/TCP"]
        for ns in NAMESPACES
        for p in "ab"
    )


def test_networkpolicy_egress_to_external_ipblock():
    np = netpol(
        "out",
        "z",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "8.8.0.0/16", "except": ["8.8.4.0/24"]}}],
                    "ports": [{"port": 53, "protocol": "UDP"}],
                },
                {"to": [{"namespaceSelector": {}}]},
                {"ports": [{"port": "dns", "protocol": "UDP"}]},
            ],
        },
    )
    targets = [("8.8.8.8", 53, "UDP"), ("8.8.4.4", 53, "UDP"), ("8.8.8.8", 80, "TCP")]
    got = egress([], targets, [np])
    assert [got[f"z/a->{ip}:{port}/{pr}"] for ip, port, pr in targets] == [True, False, False]
    assert all(got[f"x/a->{ip}:{port}/{pr}"] for ip, port, pr in targets)


# -- fail closed ----------------------------------------------------------------------------


def test_unknown_peer_in_an_accept_rule_matches_nothing():
    """For "Accept" rules, "fail closed" means: "treat the rule as matching no traffic"."""
    c = cnp(
        "u",
        "Admin",
        1,
        in_ns("x"),
        ingress=[rule("Accept", [{"namespaces": {}}, {"domainNames": ["a.example"]}])],
    )
    np = netpol("deny", "x", DENY_ALL_INGRESS)
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "x", [np])


@pytest.mark.parametrize("action", ["Deny", "Pass"])
def test_unknown_peer_in_a_deny_or_pass_rule_denies_all(action):
    """For "Deny" and "Pass" rules, "fail closed" means: "treat the rule as a 'Deny all' rule"."""
    accept_later = cnp(
        "z-accept", "Admin", 1, in_ns("x"), egress=[eg("Accept", [{"namespaces": {}}])]
    )
    c = cnp(
        "u",
        "Admin",
        1,
        in_ns("x"),
        egress=[
            eg(
                action,
                [pod_peer("y", "a"), {"domainNames": ["*.example"]}],
                [{"tcp": {"destinationPort": {"number": 80}}}],
            )
        ],
    )
    check([c, accept_later], lambda sn, sp, dn, dp, port, proto: sn != "x")
    assert not any(
        v for k, v in egress([c], [("1.1.1.1", 53, "UDP")]).items() if k.startswith("x/")
    )


def test_egress_only_peer_fields_in_ingress_fail_closed():
    c = cnp("u", "Baseline", 1, in_ns("x"), ingress=[rule("Deny", [{"networks": ["10.0.1.0/24"]}])])
    check([c], lambda sn, sp, dn, dp, port, proto: dn != "x")


# -- validation and explanations ------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda s: s["subject"].update(pods={"podSelector": {}}), "spec.subject"),
        (lambda s: s.update(subject={}), "spec.subject"),
        (lambda s: s.update(priority=1001), "spec.priority"),
        (lambda s: s.update(priority="1"), "spec.priority"),
        (lambda s: s.update(tier="Developer"), "spec.tier"),
        (lambda s: s["ingress"][0].update(action="Allow"), "spec.ingress[0].action"),
        (lambda s: s["ingress"][0].update({"from": []}), "spec.ingress[0].from"),
        (
            lambda s: s["ingress"][0]["from"][0].update(pods={"podSelector": {}}),
            "spec.ingress[0].from[0]",
        ),
        (
            lambda s: s["egress"][0]["to"].append({"networks": ["10.0.0.300/8"]}),
            "spec.egress[0].to[1].networks",
        ),
        (
            lambda s: s["egress"][0].update(
                protocols=[{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            lambda s: s["egress"][0].update(
                protocols=[{"udp": {"destinationPort": {"number": 0}}}]
            ),
            "spec.egress[0].protocols[0].udp.destinationPort.number",
        ),
        (lambda s: s.update(egress=[s["egress"][0]] * 26), "spec.egress"),
    ],
)
def test_invalid_policies_are_named_and_ignored(mutate, field):
    good = cnp(
        "bad",
        "Admin",
        1,
        in_ns("x"),
        ingress=[rule("Deny", [{"namespaces": {}}])],
        egress=[eg("Deny", [{"namespaces": {}}])],
    )
    assert ref.problems(good) == []
    bad = copy.deepcopy(good)
    mutate(bad["spec"])
    found = ref.problems(bad)
    assert found and all(p.startswith(f"ClusterNetworkPolicy bad: {field}") for p in found), found
    assert all(ref.evaluate(namespaces(), pods(), [], [bad], nodes()).values())


def test_explain_names_the_deciding_rule_and_the_pass():
    nsl, plist = namespaces(), pods()
    by = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in plist}
    cnps = [
        cnp(
            "pass",
            "Admin",
            3,
            in_ns("x"),
            ingress=[rule("Deny", [ns_sel("z")]), rule("Pass", [ns_sel("y")], name="to-np")],
        ),
        cnp(
            "base",
            "Baseline",
            7,
            in_ns("x"),
            ingress=[rule("Deny", [{"namespaces": {}}], name="base-deny")],
        ),
    ]
    got = ref.explain(nsl, plist, [], cnps, by[("y", "a")], by[("x", "b")], 80, "TCP")
    assert got["allowed"] is False and got["egress"]["tier"] == "default"
    ing = got["ingress"]
    assert (
        ing["tier"],
        ing["policy"],
        ing["priority"],
        ing["rule"],
        ing["rule_name"],
        ing["action"],
    ) == ("Baseline", "base", 7, 0, "base-deny", "Deny")
    assert (
        ing["passed"]["policy"],
        ing["passed"]["rule"],
        ing["passed"]["rule_name"],
        ing["passed"]["action"],
    ) == ("pass", 1, "to-np", "Pass")
    got = ref.explain(nsl, plist, [], cnps, by[("z", "a")], by[("x", "b")], 80, "TCP")
    assert (
        got["ingress"]["policy"],
        got["ingress"]["rule"],
        got["ingress"]["rule_name"],
        got["ingress"]["passed"],
    ) == ("pass", 0, None, None)
    own = ref.explain(nsl, plist, [], cnps, by[("x", "a")], NODE_IP["n1"], 22, "TCP", nodes())
    assert own["allowed"] and own["egress"]["tier"] == "own-node" and own["ingress"] is None
    cnps[1]["spec"]["ingress"][0]["action"] = "Pass"  # a Baseline Pass: the default decides
    got = ref.explain(nsl, plist, [], cnps, by[("y", "a")], by[("x", "b")], 80, "TCP")
    assert got["allowed"] and got["ingress"]["tier"] == "default"
    assert (got["ingress"]["policy"], got["ingress"]["passed"]["policy"]) == (None, "pass")
    got = ref.explain(nsl, plist, [], cnps, by[("x", "a")], by[("x", "b")], 80, "TCP")
    assert got["allowed"] and got["ingress"]["passed"] is None
