"""The pure parts of `ovsctl flows` (owner naming, filters, --diff) and `ovsctl status`, and
the command lines of `ovsctl flows/status` and `ovsctl lab flows/node-status`, without a
switch or an agent."""

from __future__ import annotations

import argparse
import json
import types

import pytest

from flows import cookie
from ovsctl import cli
from ovsctl.lab import cli as lab_cli
from ovsctl.tools import agentclient, flowview, statusview

POD_KEY = "pod/cid0123456789/eth0"
PODS = flowview.pod_index(
    [
        {
            "container_id": "cid0123456789",
            "ifname": "eth0",
            "namespace": "default",
            "name": "pa",
            "ip": "10.244.0.2",
        },
        {
            "container_id": "cidb",
            "ifname": "net1",
            "namespace": "default",
            "name": "pb",
            "ip": "10.244.0.3",
        },
    ]
)
KEYS = [
    "pipeline",
    POD_KEY,
    "pod/cidb/net1",
    "node/node1",
    "policy/x/web/ingress/0",
    "policy/x/web/isolation",
    "policy/x/web2/ingress/0",
    "service/shop/web",
]
OWNERS = {cookie.owner_id(k): k for k in KEYS}


def installed(table, table_id, feature, key, match, actions, rnd=5, packets=0):
    c = cookie.make(feature, key) if feature else 0
    c = cookie.with_round(c, rnd) if rnd else c  # round 0: learned by the switch
    return {
        "table": table,
        "table_id": table_id,
        "cookie": f"{c:#x}",
        "owner": cookie.decode(c),
        "packets": packets,
        "bytes": packets * 100,
        "match": match,
        "actions": actions,
    }


def desired(table, table_id, feature, key, match, actions, active=True):
    return {
        "table": table,
        "table_id": table_id,
        "priority": int(match.split(",")[0].split("=")[1]),
        "match": match,
        "actions": actions,
        "cookie": f"{cookie.make(feature, key):#x}",
        "owner": key,
        "active": active,
    }


def switch_rows():
    return flowview.name_rows(
        [
            installed("Classifier", 0, "pipeline", "pipeline", "priority=0", "drop"),
            installed(
                "Classifier",
                0,
                "pod",
                POD_KEY,
                "priority=100,in_port=3",
                "goto_table:10",
                packets=4,
            ),
            installed(
                "IngressRule",
                60,
                "policy",
                "policy/x/web/ingress/0",
                "priority=1001,ip,nw_src=10.244.0.2",
                "conjunction(512,2/2)",
            ),
            installed(
                "IngressRule",
                60,
                "policy",
                "policy/x/web2/ingress/0",
                "priority=1003,ip,nw_src=10.244.0.25",
                "conjunction(1024,2/2)",
            ),
            installed(
                "IngressDefault",
                65,
                "policy",
                "policy/x/web/isolation",
                "priority=1000,ip,nw_dst=10.244.0.3",
                "drop",
            ),
            installed(
                "EndpointDNAT",
                36,
                "service",
                "service/shop/web",
                "priority=200,tcp,reg3=0x1,nw_dst=10.96.0.10,tp_dst=80",
                "ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
            ),
            installed("SessionAffinity", 33, "affinity", "learned/1", "priority=200,tcp", "x", 0),
        ],
        OWNERS,
        PODS,
    )


# ---- owners ----------------------------------------------------------------------------------


def test_owner_names():
    assert flowview.owner_name(POD_KEY, "pod", 1, PODS) == "pod:default/pa"
    assert flowview.owner_name("pod/cidb/net1", "pod", 1, PODS) == "pod:default/pb[net1]"
    assert flowview.owner_name("pod/gone/eth0", "pod", 1, PODS) == "pod:gone/eth0"
    assert flowview.owner_name("policy/x/web/ingress/0", "policy", 1, PODS) == (
        "policy:x/web/ingress/0"
    )
    assert flowview.owner_name("policy/x/web/isolation", "policy", 1, PODS) == (
        "policy:x/web/isolation"
    )
    assert flowview.owner_name("service/shop/web", "service", 1, PODS) == "service:shop/web"
    assert flowview.owner_name("node/node1", "node", 1, PODS) == "node:node1"
    assert flowview.owner_name("pipeline", "pipeline", 1, PODS) == "pipeline"
    # without the agent: the hex id, or the bare feature for owner-less flows
    assert flowview.owner_name(None, "pod", 0xABC, PODS) == "pod:0xabc"
    assert flowview.owner_name(None, "pipeline", 0, PODS) == "pipeline"


def test_rows_are_named_from_the_agents_owner_map():
    rows = switch_rows()
    assert [r["owner_name"] for r in rows] == [
        "pipeline",
        "pod:default/pa",
        "policy:x/web/ingress/0",
        "policy:x/web2/ingress/0",
        "policy:x/web/isolation",
        "service:shop/web",
        f"affinity:{cookie.owner_id('learned/1'):#x}",
    ]
    unnamed = flowview.name_rows(switch_rows(), {}, {})
    assert unnamed[1]["owner_name"] == f"pod:{cookie.owner_id(POD_KEY):#x}"
    assert unnamed[1]["owner_key"] is None


def test_policy_owner_ids_cover_isolation_and_rules():
    ids = flowview.policy_owner_ids("x", "web")
    assert cookie.owner_id("policy/x/web/isolation") in ids
    assert cookie.owner_id("policy/x/web/ingress/0") in ids
    assert cookie.owner_id("policy/x/web/egress/63") in ids
    assert cookie.owner_id("policy/x/web2/ingress/0") not in ids


def test_split_ref():
    assert flowview.split_ref("x/web") == ("x", "web")
    assert flowview.split_ref("web") == ("default", "web")


# ---- filters ---------------------------------------------------------------------------------


def matches(rows):
    return [r["match"] for r in rows]


def test_filter_by_table_name_or_number():
    rows = switch_rows()
    assert len(flowview.select(rows, table="Classifier")) == 2
    assert flowview.select(rows, table="65") == flowview.select(rows, table="IngressDefault")


def test_filter_by_pod_owned_and_naming_its_ip_as_a_whole_address():
    rows = switch_rows()
    got = flowview.select(rows, pod_keys={POD_KEY}, pod_ips={"10.244.0.2"})
    assert matches(got) == [
        "priority=100,in_port=3",  # owned by the pod
        "priority=1001,ip,nw_src=10.244.0.2",  # a policy clause naming its IP
        "priority=200,tcp,reg3=0x1,nw_dst=10.96.0.10,tp_dst=80",  # DNAT to it (actions)
    ]  # not nw_src=10.244.0.25


def test_filter_by_policy_by_key_and_without_the_agent_by_id():
    rows = switch_rows()
    got = flowview.select(
        rows, policy=("x", "web"), policy_ids=flowview.policy_owner_ids("x", "web")
    )
    assert [r["owner_name"] for r in got] == ["policy:x/web/ingress/0", "policy:x/web/isolation"]
    unnamed = flowview.name_rows(switch_rows(), {}, {})
    got2 = flowview.select(
        unnamed, policy=("x", "web"), policy_ids=flowview.policy_owner_ids("x", "web")
    )
    assert matches(got2) == matches(got)
    both = flowview.select(
        rows,
        pod_keys=set(),
        pod_ips={"10.244.0.3"},
        policy=("x", "web"),
        policy_ids=set(),
    )
    assert [r["owner_name"] for r in both] == ["policy:x/web/isolation"]


# ---- diff ------------------------------------------------------------------------------------


def agent_view(extra=()):
    d = [
        desired("Classifier", 0, "pipeline", "pipeline", "priority=0", "drop"),
        desired("Classifier", 0, "pod", POD_KEY, "priority=100,in_port=3", "goto_table:10"),
        desired(
            "IngressRule",
            60,
            "policy",
            "policy/x/web/ingress/0",
            "priority=1001,ip,nw_src=10.244.0.2",
            "conjunction(512,2/2)",
        ),
        desired(
            "IngressRule",
            60,
            "policy",
            "policy/x/web2/ingress/0",
            "priority=1003,ip,nw_src=10.244.0.25",
            "conjunction(1024,2/2)",
        ),
        desired(
            "IngressDefault",
            65,
            "policy",
            "policy/x/web/isolation",
            "priority=1000,ip,nw_dst=10.244.0.3",
            "drop",
        ),
        desired(
            "EndpointDNAT",
            36,
            "service",
            "service/shop/web",
            "priority=200,tcp,reg3=0x1,nw_dst=10.96.0.10,tp_dst=80",
            "ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:8080))",
        ),
        *extra,
    ]
    return {"round": 5, "owners": {f"{k:#x}": v for k, v in OWNERS.items()}, "desired": d}


def test_in_sync_is_empty_whatever_the_round_and_learned_flows():
    d = flowview.diff(flowview.desired_rows(agent_view(), PODS), switch_rows())
    assert d == {"missing": [], "unexpected": [], "changed": []}
    assert flowview.count(d) == 0 and flowview.render_diff(d) == ""


def test_inactive_and_duplicate_desired_flows_are_not_expected():
    shadowed = desired(
        "Classifier", 0, "pod", "pod/old/eth0", "priority=100,in_port=3", "drop", False
    )
    twin = desired("Classifier", 0, "pipeline", "pipeline", "priority=0", "drop")
    rows = flowview.desired_rows(agent_view([shadowed, twin]), PODS)
    assert len(rows) == 6
    assert flowview.count(flowview.diff(rows, switch_rows())) == 0


def test_missing_unexpected_and_changed():
    want = flowview.desired_rows(
        agent_view([desired("Output", 90, "pod", POD_KEY, "priority=100,reg2=0x3", "output:3")]),
        PODS,
    )
    have = switch_rows()
    del have[2]  # deleted behind the agent's back
    have.append(installed("Output", 90, "pod", "pod/zzz/eth0", "priority=50", "drop"))
    have[0] = installed("Classifier", 0, "pipeline", "pipeline", "priority=0", "output:1")
    have[1] = installed(
        "Classifier", 0, "pod", "pod/other/eth0", "priority=100,in_port=3", "goto_table:10"
    )
    flowview.name_rows(have, OWNERS, PODS)
    d = flowview.diff(want, have)
    assert matches(d["missing"]) == ["priority=1001,ip,nw_src=10.244.0.2", "priority=100,reg2=0x3"]
    assert matches(d["unexpected"]) == ["priority=50"]
    assert [
        (c["match"], c["desired"]["actions"], c["installed"]["actions"]) for c in d["changed"]
    ] == [
        ("priority=0", "drop", "output:1"),
        ("priority=100,in_port=3", "goto_table:10", "goto_table:10"),  # other owner's cookie
    ]
    assert d["changed"][1]["desired"]["owner"] == "pod:default/pa"
    assert d["changed"][1]["installed"]["cookie"] == f"{cookie.make('pod', 'pod/other/eth0'):#x}"
    text = flowview.render_diff(d)
    assert text.splitlines()[0] == (
        "- [IngressRule] priority=1001,ip,nw_src=10.244.0.2 actions=conjunction(512,2/2)  "
        "(policy:x/web/ingress/0: desired, not on the switch)"
    )
    assert "+ [Output] priority=50 actions=drop" in text
    assert "~ [Classifier] priority=0\n    desired   actions=drop" in text
    assert text.splitlines()[-1] == "5 difference(s): 2 missing, 1 unexpected, 2 changed"
    # filters apply to both sides
    only = flowview.diff(
        flowview.select(want, policy=("x", "web"), policy_ids=set()),
        flowview.select(have, policy=("x", "web"), policy_ids=set()),
    )
    assert (
        flowview.count(only) == 1 and only["missing"][0]["owner_name"] == "policy:x/web/ingress/0"
    )


def test_keep_only_differences_seen_twice():
    want = flowview.desired_rows(agent_view(), PODS)
    have = switch_rows()
    first = flowview.diff(want, have[:2] + have[3:])  # one missing
    second = flowview.diff(want, have[:1] + have[2:])  # another one missing (a push under way)
    kept = flowview.keep(second, flowview.diff_ids(first))
    assert flowview.count(kept) == 0
    again = flowview.keep(first, flowview.diff_ids(first))
    assert again == first


def test_render_lists_tables_with_owner_names():
    out = flowview.render(switch_rows()[:2])
    assert "[0] Classifier" in out
    assert "pod:default/pa" in out and "n_packets=4 n_bytes=400" in out
    assert "n_packets" not in flowview.render(switch_rows()[:2], stats=False)


# ---- main without an agent -------------------------------------------------------------------


def run_main(monkeypatch, capsys, rows, **kw):
    monkeypatch.setattr(flowview.flowdump, "dump", lambda bridge: [dict(r) for r in rows])

    def unreachable(path, url=None, timeout=5.0):
        raise agentclient.AgentUnreachable(f"{path}: connection refused")

    monkeypatch.setattr(flowview.agentclient, "get", kw.pop("get", unreachable))
    monkeypatch.setattr(flowview, "ovsdb_pods", lambda: [])
    args = argparse.Namespace(
        bridge="br-int", table=None, pod=None, policy=None, diff=False, json=True, no_stats=False
    )
    for k, v in kw.items():
        setattr(args, k, v)
    code = flowview.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def raw_rows():
    return [{k: v for k, v in r.items() if not k.startswith("owner_")} for r in switch_rows()]


def test_main_without_agent_shows_ids_and_diff_cannot_compare(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, raw_rows(), policy="x/web")
    assert code == 0 and "agent unreachable" in err
    assert [r["owner_name"] for r in json.loads(out)] == [
        f"policy:{cookie.owner_id('policy/x/web/ingress/0'):#x}",
        f"policy:{cookie.owner_id('policy/x/web/isolation'):#x}",
    ]
    code, out, err = run_main(monkeypatch, capsys, raw_rows(), diff=True)
    assert code == 2 and "--diff needs the agent" in err


def test_main_diff_exit_codes(monkeypatch, capsys):
    status = {
        "pods": [
            {
                "container_id": "cid0123456789",
                "ifname": "eth0",
                "namespace": "default",
                "name": "pa",
                "ip": "10.244.0.2",
            }
        ]
    }

    def get(path, url=None, timeout=5.0):
        return {"/flows": agent_view(), "/status": status, "/cluster": {"pods": []}}[path]

    monkeypatch.setattr(flowview.time, "sleep", lambda s: None)
    code, out, _ = run_main(monkeypatch, capsys, raw_rows(), get=get, diff=True, json=False)
    assert (code, out) == (0, "")
    code, out, _ = run_main(monkeypatch, capsys, raw_rows()[1:], get=get, diff=True, json=False)
    assert code == 1 and out.startswith("- [Classifier] priority=0 actions=drop  (pipeline:")
    code, out, _ = run_main(monkeypatch, capsys, raw_rows(), get=get, pod="default/pa")
    assert [r["owner_name"] for r in json.loads(out)][:1] == ["pod:default/pa"]
    code, out, err = run_main(monkeypatch, capsys, raw_rows(), get=get, pod="default/nope")
    assert code == 1 and "no pod default/nope" in err


# ---- status ----------------------------------------------------------------------------------

STATUS = {
    "node": "node0",
    "node_ip": "172.30.0.10",
    "bridge": "br-int",
    "ready": "ok",
    "source": {"kind": "yaml", "synced": True, "objects": 12},
    "openflow": {
        "connected": True,
        "listen": "unix:/run/openvswitch/br-int.mgmt",
        "datapath_id": "0000aabbccddeeff",
        "error": None,
        "reconnects": 1,
        "round": 4,
    },
    "last_sync": {"kind": "incremental", "round": 4, "flows": 3, "seconds": 0.0042, "at": 990.0},
    "flows_desired": 7,
    "flows_per_table": {"Classifier": 4, "SpoofGuard": 3, "Output": 0},
    "pods": [
        {
            "namespace": "default",
            "name": "pa",
            "ip": "10.244.0.2",
            "mac": "0a:58:0a:f4:00:02",
            "ofport": 3,
            "host_if": "ovs1234567890a",
        }
    ],
    "tunnel": {"port": "ovsctl-tun0", "ofport": 1},
    "peers": [{"node": "node1", "node_ip": "172.30.0.11", "pod_cidr": "10.244.1.0/24"}],
    "ipam": {"cidr": "10.244.0.0/24", "used": 1, "capacity": 253},
    "uptime_s": 3725,
    "audit": {"log": "/var/log/ovsctl/audit.log", "rate": 100, "lines": 2, "meter": True},
}


def test_status_render():
    out = statusview.render(STATUS, now=1000.0)
    assert "node      node0 (172.30.0.10)   ready: ok   up 1h02m05s" in out
    assert (
        "openflow  unix:/run/openvswitch/br-int.mgmt  connected  round 4  connections 1  "
        "datapath 0000aabbccddeeff"
    ) in out
    assert "last sync incremental: 3 flows in 4.2 ms, 10s ago" in out
    assert "ipam      10.244.0.0/24: 1 of 253 used" in out
    assert "tunnel    ovsctl-tun0 (ofport 1)" in out
    assert "peers     node1" in out and "10.244.1.0/24" in out
    assert "Classifier      4" in out and "Output" not in out
    assert "default/pa" in out and "ofport 3" in out
    assert "audit     /var/log/ovsctl/audit.log, at most 100/s, meter on the switch; 2 lines" in out
    assert "NOT CONNECTED" in statusview.render({**STATUS, "openflow": {}}, now=1000.0)


@pytest.mark.parametrize("ready, code", [("ok", 0), ("starting", 1)])
def test_status_main_exit_codes(monkeypatch, capsys, ready, code):
    monkeypatch.setattr(statusview.agentclient, "get", lambda p, u=None: {**STATUS, "ready": ready})
    assert statusview.main(argparse.Namespace(json=True, agent=None)) == code
    assert json.loads(capsys.readouterr().out)["ready"] == ready


def test_status_main_unreachable(monkeypatch, capsys):
    def get(p, u=None):
        raise agentclient.AgentUnreachable("refused")

    monkeypatch.setattr(statusview.agentclient, "get", get)
    assert statusview.main(argparse.Namespace(json=False, agent=None)) == 2
    assert "agent unreachable" in capsys.readouterr().err


def test_agentclient_unreachable():
    with pytest.raises(agentclient.AgentUnreachable):
        agentclient.get("/status", "http://127.0.0.1:9", timeout=1)


# ---- command lines ---------------------------------------------------------------------------


def test_flows_and_status_command_lines():
    p = cli.build_parser()
    a = p.parse_args(["flows", "--table", "L2Forwarding", "--pod", "x/a", "--policy", "x/p"])
    assert (a.table, a.pod, a.policy, a.diff, a.json) == (
        "L2Forwarding",
        "x/a",
        "x/p",
        False,
        False,
    )
    a = p.parse_args(["flows", "--diff", "--json", "--agent", "http://10.0.0.1:9476"])
    assert a.diff and a.json and a.agent == "http://10.0.0.1:9476"
    a = p.parse_args(["status", "--agent", "unix:/run/ovsctl/agent.sock"])
    assert a.agent == "unix:/run/ovsctl/agent.sock"
    a = p.parse_args(["status", "--json"])
    assert a.json and a.func is cli._status


def test_lab_flows_and_node_status_run_the_command_in_the_node(monkeypatch):
    calls = []
    lab = types.SimpleNamespace(
        name="t",
        meta=lambda: {"nodes": {"node0": {"netns": "t.node0"}}},
        ovs=lambda node: types.SimpleNamespace(rundir="/run/x/node0/ovs"),
        api_socket=lambda node: f"/run/x/{node}/agent.sock",
    )
    monkeypatch.setattr(lab_cli, "_lab", lambda args: lab)
    monkeypatch.setattr(lab_cli.os, "geteuid", lambda: 0)

    def run(cmd, env=None, **kw):
        calls.append((cmd, env))
        return types.SimpleNamespace(returncode=1)

    monkeypatch.setattr(lab_cli.subprocess, "run", run)
    p = cli.build_parser()
    a = p.parse_args(["lab", "flows", "node0", "--pod", "x/a", "--diff", "--no-stats"])
    assert a.func(a) == 1
    cmd, env = calls[-1]
    assert cmd[:4] == ["ip", "netns", "exec", "t.node0"]
    assert cmd[5:] == ["-m", "ovsctl.cli", "flows", "--pod", "x/a", "--diff", "--no-stats"]
    assert env["OVS_RUNDIR"] == "/run/x/node0/ovs"
    assert env["OVSCTL_AGENT"] == "/run/x/node0/agent.sock"  # the node agent's unix socket
    a = p.parse_args(["lab", "node-status", "node0", "--json"])
    assert a.func(a) == 1
    assert calls[-1][0][5:] == ["-m", "ovsctl.cli", "status", "--json"]
    a = p.parse_args(["lab", "node-status", "node9"])
    assert a.func(a) == 1  # LabError: no such node


# ---- IPv6 and dual-stack pods (issue 16) --------------------------------------------------------


def test_a_dual_stack_pods_addresses_from_status_and_from_ovsdb():
    rows = [
        {"container_id": "c1", "ifname": "eth0", "namespace": "d", "name": "p",
         "ip": "10.244.0.2", "ips": ["10.244.0.2", "fd00:10:244::2"]},
        # OVSDB external_ids hold the addresses comma-separated
        {"container_id": "c2", "ifname": "eth0", "namespace": "d", "name": "q",
         "ip": "10.244.0.3", "ips": "10.244.0.3,fd00:10:244::3"},
        {"container_id": "c3", "ifname": "eth0", "namespace": "d", "name": "r", "ip": "10.244.0.4"},
    ]  # fmt: skip
    idx = flowview.pod_index(rows)
    assert [idx[f"pod/c{i}/eth0"]["ips"] for i in (1, 2, 3)] == [
        ["10.244.0.2", "fd00:10:244::2"],
        ["10.244.0.3", "fd00:10:244::3"],
        ["10.244.0.4"],
    ]


@pytest.mark.parametrize(
    "text, hit",
    [
        ("priority=200,ipv6,ipv6_src=fd00:10:244::2", True),
        ("ct(commit,table=37,zone=65000,nat(dst=[fd00:10:244::2]:8080))", True),
        ("set_field:fd00:10:244::2->ipv6_src", True),
        ("priority=200,icmp6,icmp_type=135,nd_target=fd00:10:244::2 actions=", True),
        ("ipv6_src=fd00:10:244::25", False),
        ("ipv6_src=fd00:10:244::2:1", False),
        ("ipv6_src=1fd00:10:244::2", False),
        ("ipv6_dst=fd00:10:244::/64", False),
    ],
)
def test_an_ipv6_address_is_found_as_a_whole(text, hit):
    assert bool(flowview.ip_pattern("FD00:10:244:0::2").search(text)) == hit


def test_pod_filter_of_a_dual_stack_pod_finds_flows_of_both_addresses():
    rows = flowview.name_rows(
        [
            installed("IngressRule", 60, "policy", "policy/x/web/ingress/0",
                      "priority=1001,ip,nw_src=10.244.0.2", "conjunction(512,2/2)"),
            installed("IngressRule", 60, "policy", "policy/x/web/ingress/0",
                      "priority=1001,ipv6,ipv6_src=fd00:10:244::2", "conjunction(512,2/2)"),
            installed("IngressRule", 60, "policy", "policy/x/web/ingress/0",
                      "priority=1001,ipv6,ipv6_src=fd00:10:244::3", "conjunction(512,2/2)"),
        ],
        OWNERS,
        PODS,
    )  # fmt: skip
    pods = flowview.pod_index(
        [{"container_id": "c1", "ifname": "eth0", "namespace": "d", "name": "p",
          "ip": "10.244.0.2", "ips": ["10.244.0.2", "fd00:10:244::2"]}]
    )  # fmt: skip
    ips = {ip for p in pods.values() for ip in p["ips"]}
    got = flowview.select(rows, pod_keys=set(pods), pod_ips=ips)
    assert matches(got) == [
        "priority=1001,ip,nw_src=10.244.0.2",
        "priority=1001,ipv6,ipv6_src=fd00:10:244::2",
    ]
