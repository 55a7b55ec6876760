"""The NodePort chain as iptables-restore / ip6tables-restore input (pure text): one restore per
family, each with only that family's rules; the IPv4 text is what it always was."""

from flows.model import NODEPORT_IP, NODEPORT_IP6, NODEPORT_LOCAL_IP, NODEPORT_LOCAL_IP6
from ovsctl.agent.host.hostnet import node_port_rules

ENTRIES = {
    ("tcp", 30080, NODEPORT_IP),
    ("udp", 30053, NODEPORT_LOCAL_IP),
    ("tcp", 30080, NODEPORT_IP6),
    ("udp", 30053, NODEPORT_LOCAL_IP6),
}


def test_ipv4_rules_are_as_before_and_without_ipv6():
    assert node_port_rules(ENTRIES, v6=False) == (
        "*nat\n"
        ":OVSCTL-NODEPORTS - [0:0]\n"
        '-A OVSCTL-NODEPORTS -p tcp -m tcp --dport 30080 -m comment --comment "ovsctl: nodePort'
        ' 30080/tcp" -j DNAT --to-destination 169.254.169.250\n'
        '-A OVSCTL-NODEPORTS -p udp -m udp --dport 30053 -m comment --comment "ovsctl: nodePort'
        ' 30053/udp" -j DNAT --to-destination 169.254.169.251\n'
        "COMMIT\n"
    )


def test_ipv6_rules_dnat_to_the_ipv6_node_port_addresses():
    assert node_port_rules(ENTRIES, v6=True) == (
        "*nat\n"
        ":OVSCTL-NODEPORTS - [0:0]\n"
        '-A OVSCTL-NODEPORTS -p tcp -m tcp --dport 30080 -m comment --comment "ovsctl: nodePort'
        ' 30080/tcp" -j DNAT --to-destination fd00:ffff::a9fe:a9fa\n'
        '-A OVSCTL-NODEPORTS -p udp -m udp --dport 30053 -m comment --comment "ovsctl: nodePort'
        ' 30053/udp" -j DNAT --to-destination fd00:ffff::a9fe:a9fb\n'
        "COMMIT\n"
    )


def test_no_entries_empty_the_chain():
    assert node_port_rules(set(), v6=True) == "*nat\n:OVSCTL-NODEPORTS - [0:0]\nCOMMIT\n"
