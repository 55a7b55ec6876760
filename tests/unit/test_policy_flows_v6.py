"""NetworkPolicy on IPv6 and dual-stack pods (issue 16): golden strings of the IPv6 flows, the
family rules (an ipBlock matches its own family only, selectors select every address of a
pod, ports per family), the ICMPv6 no policy blocks, and the flows of a dual-stack world run
through the lookup model of test_policy_flows against the independent reference evaluator
(tests/netpol_reference.py) on both families.
"""

from __future__ import annotations

import copy
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows import netpol, pipeline, policy
from flows.family import V4, V6
from flows.flow import Flow
from flows.model import NodeNet
from flows.netpol import IPBlock, PolicyError
from flows.policy import PodInfo
from tests.netpol_reference import evaluate, random_case
from tests.unit.test_policy_flows import (
    WEB,
    Slots,
    _diff,
    _pod_dict,
    all_flows,
    datapath_matrix,
    flows_of,
    ip_of,
    parse,
    view,
)

V6_BASE = int(ipaddress.ip_address("fd00::"))


def v6(ip4: str) -> str:
    """The IPv6 twin of an IPv4 address in the tests' worlds: fd00::/96 plus the 32 bits."""
    return str(ipaddress.ip_address(V6_BASE + int(ipaddress.ip_address(ip4))))


def v6_cidr(cidr4: str) -> str:
    net = ipaddress.ip_network(cidr4)
    return f"{v6(str(net.network_address))}/{96 + net.prefixlen}"


def dpod(ns, name, ip4, labels=None, ports=WEB, local=True, only6=False) -> PodInfo:
    labels = {"pod": name} if labels is None else labels
    ips = (v6(ip4),) if only6 else (ip4, v6(ip4))
    return PodInfo(ns, name, tuple(sorted(labels.items())), ips[0], tuple(ports), local, ips=ips)


def dworld(local=lambda ns, p: True, ports=None, only6=False) -> list[PodInfo]:
    return [
        dpod(
            ns,
            p,
            ip_of(ns, p),
            ports=(ports or {}).get((ns, p), WEB),
            local=local(ns, p),
            only6=only6,
        )  # fmt: skip
        for ns in "xyz"
        for p in "abc"
    ]


def texts(flows) -> list[str]:
    return sorted(str(f) for f in flows)


def owner_texts(pol, pods) -> dict[str, list[str]]:
    return {o: texts(fs) for o, fs in flows_of(pol, view(pods)).items()}


# -- netpol: ipBlock per family ---------------------------------------------------------------


def test_ipv6_ip_block_with_except_is_split_into_ipv6_cidrs():
    b = IPBlock("fd00:10:244::/56", ("fd00:10:244:1::/64",))
    assert b.version == 6
    assert b.cidrs() == [
        "fd00:10:244::/64",
        "fd00:10:244:2::/63",
        "fd00:10:244:4::/62",
        "fd00:10:244:8::/61",
        "fd00:10:244:10::/60",
        "fd00:10:244:20::/59",
        "fd00:10:244:40::/58",
        "fd00:10:244:80::/57",
    ]
    assert b.contains("fd00:10:244:2::5") and not b.contains("fd00:10:244:1::5")
    assert not b.contains("fd00:10:245::1")


def test_host_prefixes_are_bare_addresses_in_both_families():
    assert IPBlock("fd00::5/128").cidrs() == ["fd00::5"]
    assert IPBlock("10.0.0.5/32").cidrs() == ["10.0.0.5"]
    assert IPBlock("fd00::/127", ("fd00::1/128",)).cidrs() == ["fd00::"]


def test_a_block_never_matches_the_other_family():
    # ::a00:1 has the integer value of 10.0.0.1: still not in 10.0.0.0/8
    assert not IPBlock("10.0.0.0/8").contains("::a00:1")
    assert not IPBlock("10.0.0.0/8").contains("fd00::1")
    assert not IPBlock("0.0.0.0/0").contains("fd00::1")
    assert not IPBlock("::/0").contains("10.0.0.1")
    assert IPBlock("::/0").contains("fd00::1") and IPBlock("0.0.0.0/0").contains("10.0.0.1")


def test_ipv6_ip_block_parses_without_a_skip_note():
    pol = parse({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/64"}}]}]})
    assert pol.skipped == () and not pol.ingress[0].never
    assert pol.ingress[0].peers[0].ip_block == IPBlock("fd00::/64")


@pytest.mark.parametrize(
    "block, words",
    [
        ({"cidr": "fd00::/64", "except": ["10.0.0.0/8"]}, ["except[0]", "IPv4 in an IPv6 block"]),
        ({"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}, ["except[0]", "IPv6 in an IPv4 block"]),
        ({"cidr": "fd00::/64", "except": ["fd00:1::/80"]}, ["except[0]", "not inside fd00::/64"]),
        ({"cidr": "fd00::/64", "except": ["fd00::/64"]}, ["except[0]", "not inside"]),
        ({"cidr": "fd00::zz/64"}, ["ipBlock.cidr", "'fd00::zz/64' is not a CIDR"]),
        ({"cidr": "fd00::1"}, ["ipBlock.cidr", "not a CIDR"]),
        ({"cidr": "fd00::/64", "except": "fd00::/80"}, ["ipBlock.except", "must be a list"]),
        ({"cidr": "fd00::/64", "except": ["fd00::/80", "nope"]}, ["except[1]", "'nope'"]),
    ],
)
def test_bad_ipv6_blocks_name_the_policy_and_field(block, words):
    pol = parse({"podSelector": {}, "egress": [{"to": [{"ipBlock": block}]}]}, "ns1", "pol1")
    assert pol.egress[0].never  # the rule allows nothing; the policy still isolates
    msg = pol.skipped[0]
    assert "NetworkPolicy ns1/pol1: spec.egress[0].to[0].ipBlock" in msg, msg
    for w in words:
        assert w in msg, msg


def test_ipv6_block_host_bits_are_cleared():
    pol = parse({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::5/64"}}]}]})
    assert pol.ingress[0].peers[0].ip_block.cidr == "fd00::/64"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, (1 << 128) - 1),
    st.integers(96, 128),
    st.lists(st.tuples(st.integers(0, 255), st.integers(1, 32)), max_size=3),
    st.integers(0, 255),
)
def test_ipv6_cidrs_are_exactly_the_block_minus_its_excepts(base, plen, exc, probe):
    """Hypothesis: over the last byte of a random /96../128, an address is in one of cidrs()
    exactly when contains() says so."""
    net = ipaddress.ip_network((base, plen), strict=False)
    excepts = []
    for low, elen in exc:
        e = ipaddress.ip_network(
            (int(net.network_address) | low, max(plen, 96 + elen)), strict=False
        )
        if e.subnet_of(net) and e != net:
            excepts.append(str(e))
    b = IPBlock(str(net), tuple(excepts))
    addr = ipaddress.ip_address(int(net.network_address) | (probe % net.num_addresses))
    in_cidrs = any(addr in ipaddress.ip_network(c) for c in b.cidrs())
    assert in_cidrs == b.contains(str(addr))


# -- golden strings ------------------------------------------------------------------------


def test_dual_stack_ingress_golden():
    """One conjunction serves both families: each clause has the IPv4 and the IPv6 matches,
    one conj_id flow per family; the IPv6 ipBlock (with except) is in the peer clause as
    IPv6 CIDRs only, the IPv4 one as IPv4 CIDRs only."""
    pods = [
        dpod("x", "a", "10.0.1.10"),
        dpod("x", "b", "10.0.2.10", local=False),
    ]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                        {"ipBlock": {"cidr": "fd00:1::/62", "except": ["fd00:1:0:1::/64"]}},
                        {"ipBlock": {"cidr": "192.168.0.0/16"}},
                    ],
                    "ports": [{"port": 80, "endPort": 81}, {"protocol": "UDP", "port": 53}],
                }
            ],
        }
    )
    got = owner_texts(pol, pods)
    assert got["policy/x/p/ingress/0"] == [
        "[IngressRule] priority=1001,conj_id=512,ip actions=goto_table:70",
        "[IngressRule] priority=1001,conj_id=512,ipv6 actions=goto_table:70",
        "[IngressRule] priority=1001,ip,nw_dst=10.0.1.10 actions=conjunction(512,1/3)",
        "[IngressRule] priority=1001,ip,nw_src=10.0.2.10 actions=conjunction(512,2/3)",
        "[IngressRule] priority=1001,ip,nw_src=192.168.0.0/16 actions=conjunction(512,2/3)",
        "[IngressRule] priority=1001,ipv6,ipv6_dst=fd00::a00:10a actions=conjunction(512,1/3)",
        "[IngressRule] priority=1001,ipv6,ipv6_src=fd00:1:0:2::/63 actions=conjunction(512,2/3)",
        "[IngressRule] priority=1001,ipv6,ipv6_src=fd00:1::/64 actions=conjunction(512,2/3)",
        "[IngressRule] priority=1001,ipv6,ipv6_src=fd00::a00:20a actions=conjunction(512,2/3)",
        "[IngressRule] priority=1001,tcp,tp_dst=0x50/0xfffe actions=conjunction(512,3/3)",
        "[IngressRule] priority=1001,tcp6,tp_dst=0x50/0xfffe actions=conjunction(512,3/3)",
        "[IngressRule] priority=1001,udp,tp_dst=53 actions=conjunction(512,3/3)",
        "[IngressRule] priority=1001,udp6,tp_dst=53 actions=conjunction(512,3/3)",
    ]
    assert got["policy/x/p/isolation"] == [
        "[IngressDefault] priority=1000,ip,nw_dst=10.0.1.10 actions=drop",
        "[IngressDefault] priority=1000,ipv6,ipv6_dst=fd00::a00:10a actions=drop",
    ]


def test_dual_stack_egress_named_port_golden():
    """Egress named ports resolve on the peers, per family: the peer's two addresses and the
    number in tcp and tcp6."""
    pods = [
        dpod("x", "a", "10.0.1.10", ports=()),
        dpod("x", "b", "10.0.2.10", ports=(("web", 8080, "TCP"),), local=False),
        dpod("x", "c", "10.0.3.10", ports=(("web", 9090, "TCP"),), local=False),
    ]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "web"}]}],
        }
    )
    got = owner_texts(pol, pods)
    assert got["policy/x/p/egress/0"] == [
        "[EgressRule] priority=1001,conj_id=512,ip actions=goto_table:50",
        "[EgressRule] priority=1001,conj_id=512,ipv6 actions=goto_table:50",
        "[EgressRule] priority=1001,conj_id=513,ip actions=goto_table:50",
        "[EgressRule] priority=1001,conj_id=513,ipv6 actions=goto_table:50",
        "[EgressRule] priority=1001,ip,nw_dst=10.0.2.10 actions=conjunction(512,2/3)",
        "[EgressRule] priority=1001,ip,nw_dst=10.0.3.10 actions=conjunction(513,2/3)",
        "[EgressRule] priority=1001,ip,nw_src=10.0.1.10 "
        "actions=conjunction(512,1/3),conjunction(513,1/3)",
        "[EgressRule] priority=1001,ipv6,ipv6_dst=fd00::a00:20a actions=conjunction(512,2/3)",
        "[EgressRule] priority=1001,ipv6,ipv6_dst=fd00::a00:30a actions=conjunction(513,2/3)",
        "[EgressRule] priority=1001,ipv6,ipv6_src=fd00::a00:10a "
        "actions=conjunction(512,1/3),conjunction(513,1/3)",
        "[EgressRule] priority=1001,tcp,tp_dst=8080 actions=conjunction(512,3/3)",
        "[EgressRule] priority=1001,tcp,tp_dst=9090 actions=conjunction(513,3/3)",
        "[EgressRule] priority=1001,tcp6,tp_dst=8080 actions=conjunction(512,3/3)",
        "[EgressRule] priority=1001,tcp6,tp_dst=9090 actions=conjunction(513,3/3)",
    ]
    assert got["policy/x/p/isolation"] == [
        "[EgressDefault] priority=1000,ip,nw_src=10.0.1.10 actions=drop",
        "[EgressDefault] priority=1000,ipv6,ipv6_src=fd00::a00:10a actions=drop",
    ]


def test_ipv6_only_pods_golden():
    pods = [dpod("x", "a", "10.0.1.10", only6=True), dpod("x", "b", "10.0.2.10", only6=True)]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"protocol": "SCTP"}]}],
        }
    )
    # a is its own peer: reaching itself through a Service it comes from the hairpin address,
    # matched by the rule's second conjunction (the own and port clause flows are shared)
    assert owner_texts(pol, pods) == {
        "policy/x/p/ingress/0": [
            "[IngressRule] priority=1001,conj_id=1073742336,ipv6 actions=goto_table:70",
            "[IngressRule] priority=1001,conj_id=512,ipv6 actions=goto_table:70",
            "[IngressRule] priority=1001,ipv6,ipv6_dst=fd00::a00:10a "
            "actions=conjunction(512,1/3),conjunction(1073742336,1/3)",
            "[IngressRule] priority=1001,ipv6,ipv6_src=fd00::a00:10a actions=conjunction(512,2/3)",
            "[IngressRule] priority=1001,ipv6,ipv6_src=fd00::a00:20a actions=conjunction(512,2/3)",
            "[IngressRule] priority=1001,ipv6,ipv6_src=fd00:ffff::a9fe:a9fc "
            "actions=conjunction(1073742336,2/3)",
            "[IngressRule] priority=1001,sctp6 "
            "actions=conjunction(512,3/3),conjunction(1073742336,3/3)",
        ],
        "policy/x/p/isolation": [
            "[IngressDefault] priority=1000,ipv6,ipv6_dst=fd00::a00:10a actions=drop"
        ],
    }


def test_ipv4_block_only_on_dual_stack_pods_makes_ipv4_flows_only():
    """A rule whose only peer is an IPv4 block allows nothing on IPv6: no IPv6 flow in it
    (the IPv6 isolation drop stays)."""
    pods = [dpod("x", "a", "10.0.1.10")]
    pol = parse({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}]})
    got = owner_texts(pol, pods)
    assert got["policy/x/p/ingress/0"] == [
        "[IngressRule] priority=1001,conj_id=512,ip actions=goto_table:70",
        "[IngressRule] priority=1001,ip,nw_dst=10.0.1.10 actions=conjunction(512,1/2)",
        "[IngressRule] priority=1001,ip,nw_src=10.9.0.0/16 actions=conjunction(512,2/2)",
    ]
    assert len(got["policy/x/p/isolation"]) == 2


def test_ipv6_block_on_ipv4_only_pods_makes_no_rule_flows():
    pods = [dpod("x", "a", "10.0.1.10")]
    pods = [PodInfo(p.namespace, p.name, p.labels, p.ip, p.ports, True) for p in pods]
    pol = parse({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]})
    got = owner_texts(pol, pods)
    assert got["policy/x/p/ingress/0"] == []
    assert got["policy/x/p/isolation"] == [
        "[IngressDefault] priority=1000,ip,nw_dst=10.0.1.10 actions=drop"
    ]


def test_allow_all_rule_is_direct_allows_per_family():
    pods = [dpod("x", "a", "10.0.1.10")]
    pol = parse({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    assert owner_texts(pol, pods)["policy/x/p/egress/0"] == [
        "[EgressRule] priority=1001,ip,nw_src=10.0.1.10 actions=goto_table:50",
        "[EgressRule] priority=1001,ipv6,ipv6_src=fd00::a00:10a actions=goto_table:50",
    ]


def test_audited_policy_ipv6_flows_use_the_policy_meter():
    pods = [dpod("x", "a", "10.0.1.10")]
    obj = {
        "metadata": {
            "name": "p",
            "namespace": "x",
            "annotations": {netpol.AUDIT_ANNOTATION: "true"},
        },
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]},
    }
    pol = netpol.parse(obj)
    got = {o: texts(fs) for o, fs in policy.policy_flows(pol, view(pods), Slots()).items()}
    meter = policy.audit_meter(0)
    assert got["policy/x/p/isolation"] == [
        f"[IngressDefault] priority=65000,ip,nw_dst=10.0.1.10 "
        f"actions=controller(max_len=128,meter_id={meter})",
        f"[IngressDefault] priority=65000,ipv6,ipv6_dst=fd00::a00:10a "
        f"actions=controller(max_len=128,meter_id={meter})",
    ]
    rule = got["policy/x/p/ingress/0"]
    assert (
        f"[IngressRule] priority=1001,conj_id=512,ipv6 "
        f"actions=controller(max_len=128,meter_id={meter}),goto_table:70"
    ) in rule
    assert "[IngressRule] priority=1001,tcp6,tp_dst=80 actions=conjunction(512,2/2)" in rule


# -- ICMPv6 never blocked ---------------------------------------------------------------------


def test_icmp6_always_allowed_golden():
    assert texts(policy.icmp6_always_flows(pipeline.PRIO_ALWAYS, 0)) == [
        f"[{t}] priority=65000,icmp6,icmp_type={n} actions=goto_table:{to}"
        for t, to in (("AdminEgressRule", 50), ("AdminIngressRule", 70))
        for n in sorted(("1", "133", "135", "136", "2", "3", "4"))
    ]


def _node(cidrs):
    return NodeNet.for_cidrs(cidrs, 2, ("192.168.0.2",))


def test_dual_stack_node_has_the_icmp6_flows_ipv4_only_node_has_none():
    ck_flows = pipeline.node_flows(_node(("10.244.1.0/24", "fd00:10:244:1::/64")))
    icmp6 = [f for f in ck_flows if ("protocol", "icmp6") in f.match and f.table.endswith("Rule")]
    assert len(icmp6) == 2 * len(policy.ICMP6_ALWAYS)
    assert all(f.priority == pipeline.PRIO_ALWAYS for f in icmp6)
    assert all(f.cookie == icmp6[0].cookie for f in icmp6)
    v4 = pipeline.node_flows(_node(("10.244.1.0/24",)))
    assert not [f for f in v4 if "6" in dict(f.match).get("protocol", "")]


def test_icmp6_always_outranks_every_policy_drop_and_rule():
    assert pipeline.PRIO_ALWAYS > policy.PRIO_BASE + policy.MAX_SLOTS
    # the audited drops sit in the Default tables, which an allowed packet never reaches; the
    # Admin tables come before every ClusterNetworkPolicy and NetworkPolicy
    assert {f.table for f in policy.icmp6_always_flows(pipeline.PRIO_ALWAYS, 0)} == {
        "AdminEgressRule",
        "AdminIngressRule",
    }


# -- scale: pods + rules, also dual-stack -------------------------------------------------------


@pytest.mark.parametrize("n", [10, 40])
def test_dual_stack_flow_count_is_additive(n):
    """n local targets and n remote peers, dual-stack: own flows 2n, peer flows 2n, a port per
    family, a conj_id per family; twice the IPv4 count, never n x n."""
    targets = [
        dpod("x", f"t{i}", f"10.1.{i // 250}.{i % 250 + 1}", labels={"r": "t"}) for i in range(n)
    ]
    peers = [
        dpod("y", f"p{i}", f"10.2.{i // 250}.{i % 250 + 1}", labels={"r": "p"}, local=False)
        for i in range(n)
    ]
    pol = parse(
        {
            "podSelector": {"matchLabels": {"r": "t"}},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"r": "p"}}}],
                         "ports": [{"port": 80}]}],
        }
    )  # fmt: skip
    rule = flows_of(pol, view(targets + peers))[policy.rule_owner(pol, "ingress", 0)]
    assert len(rule) == 2 * n + 2 * n + 2 + 2


# -- the lookup model against the reference, both families ----------------------------------------

PORTS = {("y", "b"): (("http", 8080, "TCP"), ("alt", 81, "TCP"), ("dns", 53, "UDP"))}


def _dual_world_dicts(ports=PORTS):
    nss = [{"metadata": {"name": n, "labels": {"ns": n}}} for n in "xyz"]
    return nss, [_pod_dict(p) for p in dworld(ports=ports)]


def _mirror(policies: list[dict]) -> list[dict]:
    """The policies with every IPv4 ipBlock replaced by its IPv6 twin (v6_cidr)."""
    out = copy.deepcopy(policies)
    for pol in out:
        for d, key in (("ingress", "from"), ("egress", "to")):
            for rule in pol["spec"].get(d) or []:
                for peer in rule.get(key) or []:
                    ib = peer.get("ipBlock")
                    if ib and ipaddress.ip_network(ib["cidr"], strict=False).version == 4:
                        ib["cidr"] = v6_cidr(str(ipaddress.ip_network(ib["cidr"], strict=False)))
                        if ib.get("except"):
                            ib["except"] = [v6_cidr(e) for e in ib["except"]]
    return out


def _has_ip_block(policies) -> bool:
    return "ipBlock" in repr(policies)


@pytest.mark.parametrize("seed", range(60))
def test_dual_stack_flows_match_the_reference_on_both_families(seed):
    """Random policies (with IPv4 and IPv6 ipBlocks) over dual-stack pods: the flows give the
    reference's matrix on IPv4 and on IPv6."""
    nss, pods = _dual_world_dicts()
    policies = random_case(seed, nss, pods)
    for fam in (4, 6):
        got = datapath_matrix(nss, pods, policies, family=fam)
        want = evaluate(nss, pods, policies, family=fam)
        assert want and got == want, f"seed {seed} IPv{fam}: {policies}\n" + _diff(got, want)


@pytest.mark.parametrize("seed", range(60))
def test_ipv6_verdicts_equal_ipv4_for_selectors_and_follow_the_cidr_for_ip_blocks(seed):
    """For selector rules the IPv6 matrix is the IPv4 one; with every IPv4 ipBlock replaced by
    its IPv6 twin, the IPv6 matrix is the IPv4 matrix of the original (reference and flows)."""
    nss, pods = _dual_world_dicts()
    v4_pods = [{**p, "status": {"podIP": p["status"]["podIP"]}} for p in pods]
    policies = random_case(seed, nss, v4_pods)  # IPv4 blocks only
    want4 = evaluate(nss, pods, policies, family=4)
    mirrored = _mirror(policies)
    assert evaluate(nss, pods, mirrored, family=6) == want4
    assert datapath_matrix(nss, pods, mirrored, family=6) == want4
    if not _has_ip_block(policies):
        assert evaluate(nss, pods, policies, family=6) == want4
        assert datapath_matrix(nss, pods, policies, family=6) == want4


def test_random_dual_stack_cases_use_ipv6_blocks():
    nss, pods = _dual_world_dicts()
    blocks = [
        ib["cidr"]
        for seed in range(60)
        for pol in random_case(seed, nss, pods)
        for d, key in (("ingress", "from"), ("egress", "to"))
        for rule in pol["spec"].get(d) or []
        for peer in rule.get(key) or []
        if (ib := peer.get("ipBlock"))
    ]
    assert any(":" in b for b in blocks) and any("." in b for b in blocks)


def test_ipv4_only_world_flows_are_unchanged_by_the_ips_field():
    """A PodInfo with ips=(ip,) is the IPv4 pod it always was: the same flows."""
    nss, pods = _dual_world_dicts()
    from tests.unit.test_policy_flows import world

    plain = world()
    with_ips = [
        PodInfo(p.namespace, p.name, p.labels, p.ip, p.ports, p.local, ips=(p.ip,)) for p in plain
    ]
    for seed in range(10):
        for pol in map(netpol.parse, random_case(seed, nss, [_pod_dict(p) for p in plain])):
            a = all_flows(policy.policy_flows(pol, view(plain), Slots()))
            b = all_flows(policy.policy_flows(pol, view(with_ips), Slots()))
            assert a == b
            assert not [f for f in a if "6" in dict(f.match).get("protocol", "")]


def test_every_dual_stack_flow_is_valid_and_one_per_match():
    nss, pods = _dual_world_dicts()
    for seed in range(20):
        for pol in map(netpol.parse, random_case(seed, nss, pods)):
            for _owner, fs in policy.policy_flows(pol, view(dworld(ports=PORTS)), Slots()).items():
                seen = {}
                for f in fs:
                    assert isinstance(f, Flow)
                    key = (f.table, f.priority, f.match)
                    assert key not in seen, (seen[key], f)
                    seen[key] = f


def test_pod_addr_of():
    p = dpod("x", "a", "10.0.1.10")
    assert p.addrs == ("10.0.1.10", "fd00::a00:10a")
    assert p.addr_of(V4) == "10.0.1.10" and p.addr_of(V6) == "fd00::a00:10a"
    q = PodInfo("x", "b", (), "10.0.0.1")
    assert q.addrs == ("10.0.0.1",) and q.addr_of(V6) == ""
    assert PodInfo("x", "c", (), "").addrs == ()


def test_policy_error_is_still_raised_for_a_broken_spec():
    with pytest.raises(PolicyError, match="NetworkPolicy x/p: spec.podSelector"):
        parse({"ingress": []})


# -- the switch reads them as written ----------------------------------------------------------


def test_ovs_decodes_the_ipv6_policy_flows_as_their_text():
    """Every kind of IPv6 policy flow (conjunction clauses per family, conj_id per family,
    ranges in tcp6/udp6, IPv6 CIDRs, audited allows and drops, the ICMPv6 always allowed),
    encoded as the agent sends it and decoded by ovs-ofctl: the text OVS prints is ours."""
    from ovsctl.openflow import osken_compat
    from tests.ofparse import assert_ovs_decodes_as_text

    osken_compat.register_extensions()
    pods = dworld(local=lambda ns, p: p == "a", ports=PORTS)
    specs = [
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"ipBlock": {"cidr": "fd00::/96", "except": ["fd00::a00:100/120"]}},
                    ],
                    "ports": [{"port": 80, "endPort": 90}, {"protocol": "UDP", "port": "dns"}],
                }
            ],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}, {}],
            "policyTypes": ["Ingress", "Egress"],
        },
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP"}]}]},
    ]
    flows: set[Flow] = set(policy.icmp6_always_flows(pipeline.PRIO_ALWAYS, 0))
    slots = Slots()
    for i, spec in enumerate(specs):
        obj = {"metadata": {"name": f"p{i}", "namespace": "x"}, "spec": spec}
        if i == 1:
            obj["metadata"]["annotations"] = {netpol.AUDIT_ANNOTATION: "true"}
        flows |= all_flows(policy.policy_flows(netpol.parse(obj), view(pods), slots))
    assert any(("protocol", "ipv6") in f.match for f in flows)
    assert any(dict(f.match).get("protocol") == "udp6" for f in flows)
    assert_ovs_decodes_as_text(flows, 3)
