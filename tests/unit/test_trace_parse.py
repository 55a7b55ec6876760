"""`ovsctl trace`: parsing of real ofproto/trace output (OVS 3.1, captured from a 3-node lab into
tests/unit/data/trace/), and whole traces replayed from those captures.

The lab the data comes from: namespaces x, y, z with pods a (node0), b (node1), c (node2) on TCP
80/81 and UDP 53; NetworkPolicies x/deny (isolates x for ingress), x/from-y (x/a: ingress from
namespace y on TCP 80), z/egress-z (z: egress only to z); Services y/web (8080 -> y/b:80),
y/empty (no endpoint), y/sticky (sessionAffinity ClientIP, 9090 -> y/c:81). `lab.json` holds
every node's agent views (/cluster, /flows) and the exact flow each trace asked ofproto/trace
for; replaying checks that the packets are built the same way today.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from flows import intent as intents
from ovsctl.tools import trace

DATA = os.path.join(os.path.dirname(__file__), "data", "trace")


def raw(name: str) -> str:
    with open(os.path.join(DATA, name)) as fh:
        return fh.read()


@pytest.fixture(scope="module")
def lab():
    with open(os.path.join(DATA, "lab.json")) as fh:
        return json.load(fh)


class Replay:
    """A runner answering with the captured output for exactly the captured flow."""

    def __init__(self, node: str, lab: dict):
        self.node = node
        self.answers = {
            (c["flow"], tuple(c["ct_next"])): raw(c["file"])
            for c in lab["calls"]
            if c["node"] == node
        }
        self.asked: list[str] = []

    def trace(self, flow, ct_next):
        self.asked.append(flow)
        try:
            return self.answers[(flow, tuple(ct_next))]
        except KeyError:
            raise AssertionError(f"no capture on {self.node} for {flow} {ct_next}") from None


def tracer(lab, nodes=None) -> trace.Tracer:
    nodes = nodes or sorted(lab["views"])
    views = {n: trace.NodeView(lab["views"][n]["cluster"], lab["views"][n]["flows"]) for n in nodes}
    return trace.Tracer(views, {n: Replay(n, lab) for n in nodes})


def case(lab, name):
    return next(c for c in lab["cases"] if c["case"] == name)


def run(lab, name, nodes=None) -> trace.Trace:
    c = case(lab, name)
    return tracer(lab, nodes).trace(c["src"], c["dst"], c["proto"], c["dport"])


# -- the parser --------------------------------------------------------------------------------


def tables_of(p: trace.Pass) -> list[str]:
    return [s.table for s in p.top()]


def test_a_local_connection_is_two_passes_around_conntrack():
    passes = trace.parse(raw("local-allowed-by-rule.node0.txt"))
    assert len(passes) == 2
    first, second = passes
    assert first.bridge == "br-int" and first.recirc_id is None and first.ct_state is None
    assert tables_of(first) == [
        "Classifier",
        "SpoofGuard",
        "ARPResponder",
        "HairpinUnSNAT",
        "Conntrack",
    ]
    assert first.top()[-1].recirc_table == 31
    assert first.datapath_actions.startswith("ct(zone=65000,nat),recirc(")
    assert second.ct_state == "new|trk" and second.resumed_at == 31
    assert second.flow.startswith("recirc_id=") and "ct_state=new|trk" in second.flow
    assert tables_of(second)[0] == "ConntrackState" and tables_of(second)[-1] == "Output"
    rule = next(s for s in second.top() if s.table == "IngressRule")
    assert rule.match.startswith("conj_id=") and rule.priority > 1000
    assert rule.cookie is not None and rule.goto == 70
    out = second.top()[-1]
    assert out.outputs and out.outputs == [int(out.outputs[0])]
    # ct(commit) prints a nested "drop": it is not a drop of the packet
    commit = next(s for s in second.top() if s.table == "ConntrackCommit")
    assert "drop" in commit.actions and not commit.drops
    assert commit.action_text() == "ct(commit,zone=65000), goto_table:90"


def test_misses_have_no_match_and_priority_zero():
    passes = trace.parse(raw("local-allowed-by-rule.node0.txt"))
    arp = passes[0].top()[2]
    assert arp.table == "ARPResponder" and arp.is_miss and arp.goto == 25
    assert arp.match == "" and arp.cookie is not None


def test_a_service_is_three_passes_and_ovs_simulates_the_dnat():
    passes = trace.parse(raw("service-dnat-tunnel.node0.txt"))
    assert len(passes) == 3
    lb = next(s for s in passes[1].top() if s.table == "ServiceLB")
    assert any(a.startswith("multipath(") for a in lb.actions)
    dnat = passes[1].top()[-1]
    assert dnat.table == "EndpointDNAT" and dnat.recirc_table == 37
    third = passes[2]
    assert third.resumed_at == 37
    before, after = trace.flow_fields(third.nat_from), trace.flow_fields(third.nat_to)
    assert before["tp_dst"] == "8080" and after["tp_dst"] == "80"
    assert before["nw_dst"] != after["nw_dst"]
    assert trace.flow_fields(third.flow)["nw_dst"] == after["nw_dst"]  # the pass sees the endpoint


def test_the_tunnel_output_and_the_underlay_bridge():
    passes = trace.parse(raw("service-dnat-tunnel.node0.txt"))
    last = passes[-1]
    assert {s.bridge for s in last.steps} == {"br-int", "br-phy"}
    assert all(s.bridge == "br-int" for s in last.own())
    out = last.top()[-1]
    assert out.table == "Output" and out.outputs == [1]
    assert any(a.startswith("-> tunneling to 172.30.0.") for a in out.actions)
    final = trace.flow_fields(last.final_flow)
    assert final["tun_dst"].startswith("172.30.0.") and final["dl_dst"] == "0a:58:0a:f4:01:01"


def test_a_drop_is_a_step_without_goto_or_output():
    passes = trace.parse(raw("egress-drop.node0.txt"))
    last = passes[-1].top()[-1]
    assert last.table == "EgressDefault" and last.drops and last.actions == ["drop"]
    assert last.match.startswith("ip,nw_src=") and last.priority >= 1000
    assert passes[-1].final_flow == "unchanged"
    assert passes[-1].datapath_actions == "drop"


def test_a_service_without_endpoints_goes_to_the_controller():
    last = trace.parse(raw("service-no-endpoint.node0.txt"))[-1].top()[-1]
    assert last.table == "ServiceLB" and last.to_controller and not last.drops


def test_a_resubmit_nests_a_lookup_and_the_outer_actions_continue():
    passes = trace.parse(raw("affinity-resubmit.node0.txt"))
    steps = passes[1].own()
    i = next(k for k, s in enumerate(steps) if s.table == "ServiceLB")
    lb, nested = steps[i], steps[i + 1]
    assert nested.table == "SessionAffinity" and nested.depth == 1 and nested.actions == ["drop"]
    assert lb.depth == 0 and lb.goto == 36
    assert lb.actions[0] == "resubmit(,33)" and any(a.startswith("multipath") for a in lb.actions)
    assert [s.table for s in passes[1].top()][-2:] == ["ServiceLB", "EndpointDNAT"]
    dnat = passes[1].top()[-1]
    assert any(a.startswith(">> suppressing side effects") for a in dnat.actions)
    assert dnat.recirc_table == 37  # learn() comes first, the ct() after it is still found


def test_hairpin_snat_and_in_port_output():
    passes = trace.parse(raw("hairpin.node1.txt"))
    snat = next(p for p in passes if "169.254.169.252" in p.nat_to)
    assert trace.flow_fields(snat.flow)["nw_src"] == "169.254.169.252"
    assert passes[-1].top()[-1].in_port_output


def test_an_icmp_echo_and_the_far_side_of_a_tunnel():
    passes = trace.parse(raw("icmp-egress-rule-remote.node0.txt"))
    first = trace.flow_fields(passes[0].flow)
    assert "icmp" in first and first["icmp_type"] == "8" and first["tun_src"].startswith("172.")
    assert tables_of(passes[0])[:2] == ["Classifier", "HairpinUnSNAT"]  # the tunnel's classifier


def test_flow_fields_and_garbage():
    assert trace.flow_fields("tcp,in_port=4,nw_src=10.0.0.1") == {
        "tcp": "",
        "in_port": "4",
        "nw_src": "10.0.0.1",
    }
    assert trace.parse("") == []
    assert trace.parse("Bad openflow flow syntax: tcp,nw_dst=1.2: bad value") == []


def test_policy_owner_keys():
    assert trace.policy_owner("policy/x/deny/isolation") == {
        "policy": "x/deny",
        "kind": "isolation",
    }
    assert trace.policy_owner("policy/x/p/egress/3") == {
        "policy": "x/p",
        "kind": "rule",
        "direction": "egress",
        "rule": 3,
    }
    assert trace.policy_owner("pod/abc/eth0") is None
    assert trace.policy_owner("service/y/web") is None


# -- whole traces, replayed -------------------------------------------------------------------


def test_allowed_by_a_rule_names_the_policy_and_the_rule(lab):
    t = run(lab, "local-allowed-by-rule")
    assert t.verdict == "delivered" and t.reached and t.delivered_pod == "x/a"
    assert [h.node for h in t.hops] == ["node0"]
    ing = t.checks["ingress"]
    assert ing["status"] == "allowed" and ing["isolated_by"] == ["x/deny", "x/from-y"]
    assert t.allowed_by == [
        {"policy": "x/from-y", "direction": "ingress", "rule": 0, "node": "node0"}
    ]
    assert t.checks["egress"] == {
        "pod": "y/a",
        "node": "node0",
        "isolated_by": [],
        "status": "not-isolated",
    }
    assert t.intent["allowed"] and t.agrees()
    assert t.intent["ingress"]["allowed_by"] == [{"policy": "x/from-y", "rule": 0}]


def test_a_drop_on_the_far_node_names_the_isolating_policy(lab):
    t = run(lab, "tunnel-then-ingress-drop")  # x/b (node1) -> x/a (node0)
    assert [h.node for h in t.hops] == ["node1", "node0"]
    assert t.hops[0].outcome["to"] == "tunnel" and t.hops[0].outcome["next_node"] == "node0"
    assert t.hops[1].entered == "tunnel from node1"
    assert t.verdict == "dropped" and t.node == "node0" and t.table == "IngressDefault"
    assert t.direction == "ingress" and t.policy in ("x/deny", "x/from-y")
    assert t.isolated_by == ["x/deny", "x/from-y"]
    assert "x/a is isolated for ingress by NetworkPolicy" in t.reason
    assert t.reason.endswith("no rule allowed it")
    assert not t.reached and t.agrees()


def test_an_egress_drop_names_the_policy_and_never_reaches_ingress(lab):
    t = run(lab, "egress-drop")
    assert t.verdict == "dropped" and t.table == "EgressDefault" and t.direction == "egress"
    assert t.policy == "z/egress-z" and t.isolated_by == ["z/egress-z"]
    assert t.checks["ingress"] == {"status": "not-reached"}
    assert t.intent["egress"]["isolated_by"] == ["z/egress-z"] and not t.intent["allowed"]


def test_a_service_follows_the_dnat_and_the_tunnel(lab):
    t = run(lab, "service-dnat-tunnel")
    assert t.dst.kind == "service" and t.dport == 8080
    assert t.service["endpoint_pod"] == "y/b" and t.service["endpoint"].endswith(":80")
    assert [h.node for h in t.hops] == ["node0", "node1"]
    # the next node gets the packet as node0 rewrote it: addressed to the endpoint
    assert t.hops[1].packet.nw_dst == t.service["endpoint"].split(":")[0]
    assert t.hops[1].packet.dport == 80
    assert t.verdict == "delivered" and t.delivered_pod == "y/b" and t.reached


def test_a_service_without_endpoints_is_rejected(lab):
    t = run(lab, "service-no-endpoint")
    assert t.verdict == "rejected" and t.table == "ServiceLB" and not t.reached
    assert t.agrees() is None


def test_icmp_allowed_by_an_egress_rule(lab):
    t = run(lab, "icmp-egress-rule-remote")
    assert t.dport is None and t.sport is None
    assert t.verdict == "delivered" and t.reached
    assert t.checks["egress"]["allowed_by"][0]["policy"] == "z/egress-z"
    assert t.checks["egress"]["allowed_by"][0]["rule"] == 0


def test_udp_and_the_host(lab):
    t = run(lab, "udp-ingress-drop")
    assert t.proto == "udp" and t.dport == 53 and t.verdict == "dropped"
    t = run(lab, "to-the-host")
    assert t.dst.kind == "ip" and t.verdict == "delivered" and t.to.startswith("gateway of node0")


def test_hairpin_and_affinity(lab):
    t = run(lab, "hairpin")
    assert t.verdict == "delivered" and t.delivered_pod == "y/b" and t.reached
    t = run(lab, "affinity-resubmit")
    assert t.service["endpoint_pod"] == "y/c" and t.reached


def test_one_node_alone_says_where_the_packet_continues(lab):
    """A real node has only its own switch: x/b -> x/a traced on node1 ends at the tunnel (the
    egress half), and on node0 starts from the tunnel (the ingress half) — with exactly the
    packet node1 sends."""
    t = run(lab, "tunnel-then-ingress-drop", nodes=["node1"])
    assert t.verdict == "delivered" and t.continues == {"node": "node0", "tun_dst": "172.30.0.10"}
    assert t.half == "egress" and t.reached and t.agrees()
    assert "continues on node node0" in t.reason
    t = run(lab, "tunnel-then-ingress-drop", nodes=["node0"])
    assert t.half == "ingress" and t.hops[0].entered == "tunnel from node1"
    assert t.verdict == "dropped" and t.table == "IngressDefault" and t.agrees()
    assert t.notes and "node1" in t.notes[0]


def test_rendering_and_json(lab):
    tr = tracer(lab)
    t = tr.trace("x/b", "x/a")
    text = trace.render(t, tr)
    assert "65 IngressDefault" in text and "[policy x/" in text and "isolation]" in text
    assert "verdict: DROPPED on node0 in table IngressDefault" in text
    d = json.loads(json.dumps(t.to_dict()))
    assert d["verdict"] == "dropped" and d["policy"] in d["isolated_by"]
    steps = [s for h in d["hops"] for p in h["passes"] for s in p["steps"]]
    assert any(s["owner"] and s["owner"].endswith("/isolation") for s in steps)


def test_resolve_specs(lab):
    v = trace.NodeView(lab["views"]["node0"]["cluster"], lab["views"]["node0"]["flows"])
    assert trace.resolve("x/a", v).kind == "pod"
    assert trace.resolve("svc:y/web", v).kind == "service"
    assert trace.resolve("service/y/web", v).label == "svc:y/web"
    assert trace.resolve("y/web", v).kind == "service"  # no pod of that name
    ip = trace.resolve("x/a", v).ip
    assert trace.resolve(ip, v).label == "x/a"
    assert trace.resolve("10.96.0.1", v).label == "svc:y/web"
    assert trace.resolve("192.0.2.7", v).kind == "ip"
    with pytest.raises(trace.TraceError):
        trace.resolve("x/nope", v)
    with pytest.raises(trace.TraceError, match="no UDP port"):
        trace.default_port(trace.resolve("svc:y/web", v), "udp")


# -- intent -------------------------------------------------------------------------------------


def test_intent_on_the_captured_cluster(lab):
    its = intents.Intents(lab["views"]["node0"]["cluster"])
    a = {p.key: p for p in its.pods}
    it = its.evaluate(a["y/a"], a["x/a"], 80, "TCP")
    assert it.allowed and it.ingress.allowed_by == (("x/from-y", 0),)
    assert not its.evaluate(a["y/a"], a["x/a"], 81, "TCP").allowed
    assert not its.evaluate(a["z/a"], a["y/b"], 80, "TCP").allowed
    assert its.evaluate(a["z/a"], a["z/b"], 53, "UDP").allowed
    node_ip = next(
        n["ip"] for n in lab["views"]["node0"]["cluster"]["nodes"] if n["name"] == "node0"
    )
    assert its.evaluate(node_ip, a["x/a"], 80, "TCP").ingress.always  # its own node


def _view(policies, pods, namespaces=("x", "y")):
    return {
        "namespaces": [{"name": n, "labels": {"ns": n}} for n in namespaces],
        "nodes": [{"name": "n0", "ip": "172.30.0.10", "pod_cidr": "10.244.0.0/24"}],
        "pods": [
            {
                "namespace": ns,
                "name": name,
                "ip": ip,
                "node": "n0",
                "labels": labels,
                "ports": [["http", 80, "TCP"], ["dns", 53, "UDP"], ["alt", 8080, "TCP"]],
            }
            for ns, name, ip, labels in pods
        ],
        "policies": policies,
    }


def _pol(ns, name, spec):
    return {"kind": "NetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec}


PODS = [("x", "a", "10.244.0.2", {"app": "a"}), ("y", "b", "10.244.0.3", {"app": "b"})]


@pytest.mark.parametrize(
    "spec,port,proto,allowed",
    [
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}, 80, "TCP", True),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}, 8080, "TCP", False),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 9000}]}]},
            8080,
            "TCP",
            True,
        ),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}, 53, "UDP", True),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}, 80, "TCP", False),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}, None, "ICMP", False),
        ({"podSelector": {}, "ingress": [{}]}, None, "ICMP", True),
        (
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.244.0.0/24", "except": ["10.244.0.3/32"]}}]}
                ],
            },
            80,
            "TCP",
            False,
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/24"}}]}]},
            80,
            "TCP",
            True,
        ),
        (
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                "podSelector": {"matchLabels": {"app": "nope"}},
                            }
                        ]
                    }
                ],
            },
            80,
            "TCP",
            False,
        ),
        (
            {"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Ingress"]},
            80,
            "TCP",
            True,
        ),
    ],
)
def test_intent_semantics(spec, port, proto, allowed):
    its = intents.Intents(_view([_pol("x", "p", spec)], PODS))
    a = {p.key: p for p in its.pods}
    assert its.evaluate(a["y/b"], a["x/a"], port, proto).allowed is allowed


def test_intent_egress_and_both_directions():
    pols = [
        _pol(
            "y",
            "out",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}],
            },
        ),
        _pol("x", "in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    ]
    its = intents.Intents(_view(pols, PODS))
    a = {p.key: p for p in its.pods}
    it = its.evaluate(a["y/b"], a["x/a"], 53, "UDP")
    assert it.egress.allowed and not it.ingress.allowed and not it.allowed
    assert it.egress.allowed_by == (("y/out", 0),) and it.ingress.isolated_by == ("x/in",)
    assert not its.evaluate(a["y/b"], a["x/a"], 80, "TCP").egress.allowed
    assert its.evaluate(a["x/a"], "192.0.2.1", 80, "TCP").allowed  # x is not egress-isolated
    assert "no rule" in it.ingress.describe()


def test_intent_ignores_invalid_policies_and_lists_pairs():
    its = intents.Intents(_view([_pol("x", "bad", {"ingress": []})], PODS))
    assert its.errors and not its.policies
    keys = [intents.probe_key(*p) for p in intents.pairs(its.pods)]
    assert keys == [
        "x/a->y/b:80/TCP",
        "x/a->y/b:53/UDP",
        "x/a->y/b:8080/TCP",
        "y/b->x/a:80/TCP",
        "y/b->x/a:53/UDP",
        "y/b->x/a:8080/TCP",
    ]
    assert len(list(intents.pairs(its.pods, namespace="x"))) == 6
    assert list(intents.pairs(its.pods, namespace="z")) == []


# -- the unixctl client -------------------------------------------------------------------------


def test_appctl_talks_json_rpc_over_the_control_socket(tmp_path):
    path = str(tmp_path / "ovs-vswitchd.ctl")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    seen = []

    def serve():
        conn, _ = srv.accept()
        buf, dec = "", json.JSONDecoder()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data.decode()
                while buf.strip():
                    try:
                        req, end = dec.raw_decode(buf.lstrip())
                    except json.JSONDecodeError:
                        break
                    buf = buf.lstrip()[end:]
                    seen.append(req)
                    if req["params"][1] == "bad":
                        reply = {"id": req["id"], "error": "Bad openflow flow syntax\n"}
                    else:
                        reply = {
                            "id": req["id"],
                            "result": "Flow: " + req["params"][1],
                            "error": None,
                        }
                    body = json.dumps(reply).encode()
                    conn.sendall(body[:7])  # replies may arrive in pieces
                    conn.sendall(body[7:])

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    a = trace.Appctl(path)
    assert a.trace("tcp,in_port=1", ["trk,new", "trk,new"]) == "Flow: tcp,in_port=1"
    assert seen[0]["method"] == "ofproto/trace"
    assert seen[0]["params"] == [
        "br-int",
        "tcp,in_port=1",
        "--ct-next",
        "trk,new",
        "--ct-next",
        "trk,new",
    ]
    with pytest.raises(trace.TraceError, match="Bad openflow"):
        a.trace("bad", [])
    assert a.trace("udp", []) == "Flow: udp"  # same connection, still usable
    a.close()
    th.join(5)
    srv.close()
    assert trace.ctl_path(str(tmp_path)) == path


def test_appctl_without_a_switch(tmp_path):
    with pytest.raises(trace.TraceError, match="cannot reach ovs-vswitchd"):
        trace.Appctl(str(tmp_path / "nothing.ctl")).trace("tcp", [])
    with pytest.raises(trace.TraceError, match="no ovs-vswitchd control socket"):
        trace.ctl_path(str(tmp_path / "empty"))
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    assert trace.ctl_path(str(tmp_path)) == str(tmp_path / "ovs-vswitchd.4242.ctl")


# -- audited policies (annotation ovsctl.io/audit: "true"; captured from another lab) ----------


@pytest.fixture(scope="module")
def audit():
    """x/deny isolates x; x/from-y (audited) allows x/a from y on TCP 80."""
    with open(os.path.join(DATA, "audit.json")) as fh:
        return json.load(fh)


def test_an_audited_allow_copies_to_the_agent_and_goes_on(audit):
    passes = trace.parse(raw("audited-allow.node0.txt"))
    rule = next(s for s in passes[-1].top() if s.table == "IngressRule")
    assert rule.to_controller and rule.goto == 70 and not rule.drops
    t = run(audit, "audited-allow")
    assert t.verdict == "delivered" and t.reached and t.agrees()
    assert t.allowed_by[0]["policy"] == "x/from-y"


def test_an_audited_drop_goes_to_the_agent_and_is_still_a_drop(audit):
    last = trace.parse(raw("audited-drop.node0.txt"))[-1].top()[-1]
    assert last.table == "IngressDefault" and last.to_controller and last.priority == 65000
    t = run(audit, "audited-drop")
    assert t.verdict == "dropped" and t.table == "IngressDefault" and t.policy == "x/from-y"
    assert t.isolated_by == ["x/deny", "x/from-y"] and t.checks["ingress"]["status"] == "dropped"
    assert any("audited" in n for n in t.notes) and t.agrees()
