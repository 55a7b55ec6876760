"""Owner keys: one type that formats and parses, used by the pipeline, policy and Service
flows and by the tools (flows, trace, audit)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows import owners, pipeline, policy, services
from flows.model import PodPort, RemoteNode
from flows.netpol import Policy, Selector

_part = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True)


@given(
    st.one_of(
        st.just(owners.Pipeline()),
        st.builds(owners.Pod, _part, st.from_regex(r"[a-z0-9]{1,15}", fullmatch=True)),
        st.builds(owners.Node, _part),
        st.builds(
            owners.PolicyRule,
            _part,
            _part,
            st.sampled_from(["ingress", "egress"]),
            st.integers(0, 999),
        ),
        st.builds(owners.PolicyIsolation, _part, _part),
        st.builds(owners.Service, _part, _part),
    )
)
def test_every_key_parses_back_to_its_owner(owner):
    assert owners.parse(owner.key) == owner


@pytest.mark.parametrize(
    "key",
    [
        "",
        "pod",
        "pod/abc",
        "pod/a/b/c",
        "node/",
        "policy/x/p/sideways/0",
        "policy/x/p/ingress/one",
        "policy/x/isolation",
        "service/x",
        "nonsense/a/b",
        "pipeline/x",
    ],
)
def test_what_is_no_owner_key_is_refused(key):
    with pytest.raises(owners.OwnerError):
        owners.parse(key)
    assert owners.try_parse(key) is None


def test_the_flow_producers_make_their_keys_here():
    assert owners.parse(
        pipeline.pod_owner(PodPort("cid1/eth0", 5, "10.0.0.5", "0a:58:0a:00:00:05"))
    ) == owners.Pod("cid1", "eth0")
    assert owners.parse(
        pipeline.node_owner(RemoteNode("node1", "10.244.1.0/24", "192.168.1.11"))
    ) == owners.Node("node1")
    pol = Policy("x", "p", Selector())
    assert owners.parse(policy.rule_owner(pol, "egress", 2)) == owners.PolicyRule(
        "x", "p", "egress", 2
    )
    assert owners.parse(policy.isolation_owner(pol)) == owners.PolicyIsolation("x", "p")
    svc = services.Service("x", "s", "10.96.0.1", (), None)
    assert owners.parse(services.service_owner(svc)) == owners.Service("x", "s")
    assert owners.parse(pipeline.pipeline_owner()) == owners.Pipeline()


def test_labels_name_owners_for_people():
    assert owners.PolicyRule("x", "p", "ingress", 0).label() == "policy x/p ingress rule 0"
    assert owners.PolicyIsolation("x", "p").label() == "policy x/p isolation"
    assert owners.Service("x", "s").label() == "service x/s"
