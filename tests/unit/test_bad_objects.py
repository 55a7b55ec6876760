"""One unusual but valid (or plain invalid) object never breaks flow programming: what the node
cannot program is skipped — closing more, never less — and every other owner is computed.
Issue: an IPv6 ipBlock raised "negative shift count" in the encoder and failed every batch;
EndpointSlices of addressType FQDN/IPv6 or with a null port, and IPv6 ClusterIPs, did the same."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import netpol, policy, services
from flows.flow import CT, FlowError, flow
from ovsctl.agent.agent import Agent
from ovsctl.agent.pods import Attachment
from ovsctl.config import AgentConfig
from ovsctl.k8s import model
from ovsctl.openflow import encode as ofconv
from tests.unit.test_policy_flows import flows_of, parse, pod, view


def _isolating(spec_rules: dict) -> netpol.Policy:
    return parse({"podSelector": {"matchLabels": {"app": "db"}}, **spec_rules})


def test_an_ipv6_ip_block_matches_no_ipv4_pod_and_isolation_stays():
    """An IPv6 block is programmed in its own family (no skip note); on an IPv4-only pod it
    admits nothing, and the pod stays isolated."""
    pol = _isolating({"ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}]})
    assert pol.skipped == ()
    v = view([pod("x", "db", "10.0.0.5", {"app": "db"})])
    owners = flows_of(pol, v)
    iso = owners[policy.isolation_owner(pol)]
    assert iso, "the pod stays isolated"
    assert not owners[policy.rule_owner(pol, "ingress", 0)], "an IPv6-only rule allows nothing"
    for flows in owners.values():
        ofconv.check_encodable(flows)


def test_mixed_families_keep_the_ipv4_peer():
    pol = _isolating(
        {
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "fd00::/64"}}, {"ipBlock": {"cidr": "10.9.0.0/16"}}]}
            ]
        }
    )
    v = view([pod("x", "db", "10.0.0.5", {"app": "db"})])
    rule = flows_of(pol, v)[policy.rule_owner(pol, "ingress", 0)]
    assert any(dict(f.match).get("nw_src") == "10.9.0.0/16" for f in rule)


def test_an_unreadable_rule_allows_nothing_and_keeps_the_others_indexes():
    pol = _isolating(
        {
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bad"}]}}
                    ]
                },
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
            ]
        }
    )
    assert pol.ingress[0].never and not pol.ingress[1].never
    assert "ingress[0]" in pol.skipped[0] and "allows nothing" in pol.skipped[0]
    v = view(
        [pod("x", "db", "10.0.0.5", {"app": "db"}), pod("x", "web", "10.0.0.6", {"app": "web"})]
    )
    owners = flows_of(pol, v)
    assert not owners[policy.rule_owner(pol, "ingress", 0)]
    assert owners[policy.rule_owner(pol, "ingress", 1)]
    assert owners[policy.isolation_owner(pol)]


def _svc(spec):
    return {"kind": "Service", "metadata": {"name": "s", "namespace": "x"}, "spec": spec}


def test_a_dual_stack_service_with_ipv6_first_keeps_both_addresses_in_order():
    svc = services.parse_service(
        _svc(
            {
                "clusterIP": "fd00::10",
                "clusterIPs": ["fd00::10", "10.96.0.10"],
                "ports": [{"port": 80}],
            }
        )
    )
    assert svc.cluster_ip == "fd00::10"
    assert svc.cluster_ips == ("fd00::10", "10.96.0.10")


@pytest.mark.parametrize("ip", ["10.96.0.999", "banana"])
def test_a_bad_cluster_ip_is_a_service_error(ip):
    with pytest.raises(services.ServiceError, match="clusterIP"):
        services.parse_service(_svc({"clusterIP": ip, "ports": [{"port": 80}]}))


def test_endpoint_slices_the_node_cannot_program_are_skipped_and_said():
    skipped: list[str] = []
    good = {
        "metadata": {"name": "good"},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}, {"port": None}],
        "endpoints": [{"addresses": ["10.0.0.7", "fd00::7"]}],
    }
    fqdn = {"metadata": {"name": "f"}, "addressType": "FQDN", "endpoints": [{"addresses": ["a.b"]}]}
    six = {
        "metadata": {"name": "s6"},
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["fd00::1"]}],
    }
    eps = services.endpoints_from_slices([good, fqdn, six], skipped)
    assert [(e.ip, e.ports) for e in eps] == [("10.0.0.7", (("", 8080, "TCP"),)), ("fd00::1", ())]
    text = "\n".join(skipped)
    assert "FQDN" in text and "ports[1].port None" in text
    assert "'fd00::7' is not an IPv4 address" in text


def test_a_nat_port_zero_never_reaches_a_switch():
    with pytest.raises(FlowError, match="nat"):
        flow("EndpointDNAT", 200, {"protocol": "tcp"}, (CT(1, commit=True, nat="dst=10.0.0.1:0"),))
    with pytest.raises(FlowError, match="out of range"):
        flow("ServiceLB", 200, {"protocol": "tcp", "tp_dst": 70000})


# -- the agent: one bad object, everything else computed --------------------------------------


@pytest.fixture
def agent():
    a = Agent(AgentConfig(pod_cidr="10.244.0.0/24", node_name="n0").validate())
    # no host: the NodePort rules Services want are computed, nothing writes them
    return a


def _add(a: Agent, obj: dict) -> None:
    o = model.parse(obj)
    a.cluster[o.key] = o


def _ns(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _local(a: Agent, ns, name, ip, ofport) -> None:
    """A pod plugged into this node (what OVSDB would have told the agent)."""
    att = Attachment(f"c{name}", "eth0", ns, name, "", "/x", f"ovs{name}", ip, "0a:58:0a:f4:00:05")
    att.ofport = ofport
    a.pods[att.key] = att


def _pod(ns, name, ip, labels, phase="Running"):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": "n0"},
        "status": {"phase": phase, "podIP": ip},
    }


def _np(name, spec, ns="x"):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _canary(a: Agent) -> None:
    """A good policy and a good Service that must always be programmed."""
    _add(a, _np("canary", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}))
    _add(
        a,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "canary", "namespace": "x"},
            "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )


def _owners(a: Agent) -> dict:
    out = a.policy.owners()
    for flows in out.values():
        ofconv.check_encodable(flows)
    return out


def test_bad_objects_beside_good_ones(agent, caplog):
    _add(agent, _ns("x"))
    _add(agent, _pod("x", "web", "10.244.0.5", {"app": "web"}))
    _add(agent, _pod("x", "db", "10.244.0.6", {"app": "db"}))
    _local(agent, "x", "web", "10.244.0.5", 5)
    _local(agent, "x", "db", "10.244.0.6", 6)
    _canary(agent)
    _add(
        agent,
        _np(
            "v6",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}],
            },
        ),
    )
    _add(
        agent,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "six", "namespace": "x"},
            # two addresses of one family: no programmable Service
            "spec": {
                "clusterIP": "fd00::5",
                "clusterIPs": ["fd00::5", "fd00::6"],
                "ports": [{"port": 80}],
            },
        },
    )
    _add(
        agent,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "canary-a",
                "namespace": "x",
                "labels": {"kubernetes.io/service-name": "canary"},
            },
            "addressType": "IPv4",
            "ports": [{"port": None}],
            "endpoints": [{"addresses": ["10.244.0.5"]}],
        },
    )
    with caplog.at_level(logging.ERROR, logger="ovsctl.agent"):
        owners = _owners(agent)
        again = agent.policy.owners()  # nothing changed: nothing recomputed, nothing relogged
    assert "policy/x/canary/ingress/0" in owners and owners["policy/x/canary/ingress/0"]
    assert owners["policy/x/v6/isolation"], "the IPv6-only policy still isolates db"
    assert "service/x/canary" in owners
    assert "service/x/six" not in owners
    errors = [r.getMessage() for r in caplog.records]
    assert sum("Service x/six: spec.clusterIPs" in m for m in errors) == 1, errors
    assert sum("ports[0].port None" in m for m in errors) == 1, errors
    assert again == {}


def test_finished_pods_are_no_peers_and_hold_no_address(agent):
    _add(agent, _ns("x"))
    _add(agent, _pod("x", "db", "10.244.0.6", {"app": "db"}))
    _add(agent, _pod("x", "admin", "10.244.0.9", {"role": "admin"}, phase="Succeeded"))
    _local(agent, "x", "db", "10.244.0.6", 6)
    _add(
        agent,
        _np(
            "admins",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "admin"}}}]}],
            },
        ),
    )
    owners = _owners(agent)
    text = " ".join(f.text() for flows in owners.values() for f in flows)
    assert "10.244.0.9" not in text, "a Succeeded pod's old IP opens nothing for its next owner"
    assert [p["ip"] for p in agent.cluster_view()["pods"] if p["name"] == "admin"] == [None]


# -- random objects: the agent always computes the others --------------------------------------

_labels = st.dictionaries(
    st.sampled_from(["app", "role"]), st.sampled_from(["web", "db", "admin"]), max_size=2
)
_cidr = st.sampled_from(
    ["10.0.0.0/8", "::/0", "fd00::/64", "0.0.0.0/0", "10.244.0.7/32", "192.168.0.0/24"]
)
_port = st.one_of(
    st.builds(dict, protocol=st.sampled_from(["TCP", "UDP", "SCTP"]), port=st.integers(1, 65535)),
    st.builds(dict, port=st.sampled_from(["http", "dns", "nope"])),
    st.builds(dict, port=st.integers(1, 100), endPort=st.integers(100, 65535)),
    st.just({}),
)
_peer = st.one_of(
    st.builds(dict, ipBlock=st.builds(dict, cidr=_cidr)),
    st.builds(dict, podSelector=st.builds(dict, matchLabels=_labels)),
    st.builds(dict, namespaceSelector=st.builds(dict, matchLabels=_labels)),
)
_rule = st.fixed_dictionaries(
    {}, optional={"from": st.lists(_peer, max_size=3), "ports": st.lists(_port, max_size=2)}
)
_policy = st.fixed_dictionaries(
    {"podSelector": st.builds(dict, matchLabels=_labels)},
    optional={
        "ingress": st.lists(_rule, max_size=2),
        "policyTypes": st.sampled_from([["Ingress"], ["Ingress", "Egress"]]),
    },
)
_slice_port = st.fixed_dictionaries(
    {},
    optional={
        "port": st.one_of(st.none(), st.integers(1, 65535)),
        "name": st.just(""),
        "protocol": st.sampled_from(["TCP", "UDP"]),
    },
)
_slice = st.fixed_dictionaries(
    {
        "addressType": st.sampled_from(["IPv4", "IPv6", "FQDN"]),
        "ports": st.lists(_slice_port, max_size=2),
        "endpoints": st.lists(
            st.builds(
                dict,
                addresses=st.lists(
                    st.sampled_from(["10.244.0.5", "fd00::5", "db.example"]), min_size=1, max_size=2
                ),
            ),
            max_size=2,
        ),
    }
)
_service = st.fixed_dictionaries(
    {
        "ports": st.lists(
            st.builds(
                dict,
                port=st.integers(1, 65535),
                targetPort=st.one_of(st.integers(1, 65535), st.just("http")),
            ),
            min_size=1,
            max_size=2,
        )
    },
    optional={
        "clusterIP": st.sampled_from(["10.96.0.9", "fd00::9", "None"]),
        "selector": st.builds(dict, app=st.sampled_from(["web", "db"])),
        "type": st.sampled_from(["ClusterIP", "NodePort"]),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pols=st.lists(_policy, max_size=3),
    slices=st.lists(_slice, max_size=2),
    svcs=st.lists(_service, max_size=2),
)
def test_random_objects_never_stop_the_others(agent, pols, slices, svcs):
    agent.cluster.clear()
    agent.policy.reset()
    _add(agent, _ns("x"))
    _add(agent, _pod("x", "web", "10.244.0.5", {"app": "web"}))
    _add(agent, _pod("x", "db", "10.244.0.6", {"app": "db"}))
    _local(agent, "x", "web", "10.244.0.5", 5)
    _local(agent, "x", "db", "10.244.0.6", 6)
    _canary(agent)
    for i, spec in enumerate(pols):
        _add(agent, _np(f"r{i}", spec))
    for i, spec in enumerate(svcs):
        _add(
            agent,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"s{i}", "namespace": "x"},
                "spec": spec,
            },
        )
    for i, body in enumerate(slices):
        _add(
            agent,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"s0-{i}",
                    "namespace": "x",
                    "labels": {"kubernetes.io/service-name": "s0"},
                },
                **body,
            },
        )
    owners = _owners(agent)  # every owner's flows encode
    assert owners["policy/x/canary/ingress/0"] and "service/x/canary" in owners
    for i, spec in enumerate(pols):
        # every policy that selects db isolates it, whatever else it holds
        if spec["podSelector"]["matchLabels"].items() <= {"app": "db"}.items():
            assert owners.get(f"policy/x/r{i}/isolation"), spec
