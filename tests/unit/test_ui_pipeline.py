"""ovsctl ui: the pipeline graph, the flows and owners documents from a canned flow dump and
the agent's views of node1 of a 3-node lab (tests/data/ui/node1: examples/pods.yaml, Service
backend/web, NetworkPolicy data/from-backend isolating the data pods for ingress)."""

from __future__ import annotations

import copy
import json
import os

import pytest

from flows import tables
from ovsctl.tools import flowdump
from ovsctl.ui import pipeline
from ovsctl.ui.data import name_rows, services_endpoints

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ui", "node1")


def _load(name):
    with open(os.path.join(DATA, name)) as fh:
        return fh.read() if name.endswith(".txt") else json.load(fh)


CLUSTER, FLOWS, STATUS = _load("cluster.json"), _load("flows.json"), _load("status.json")
DUMP = _load("dump-flows.txt")
PORTS = {"gateway": CLUSTER["gateway"]["ofport"], "tunnel": CLUSTER["tunnel_ofport"]}


@pytest.fixture
def rows():
    return name_rows(flowdump.parse(DUMP), FLOWS, STATUS)


def test_split_actions_keeps_what_is_inside_parentheses():
    acts = "set_field:0x1->reg3,ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:80)),goto_table:40"
    assert pipeline.split_actions(acts) == [
        "set_field:0x1->reg3",
        "ct(commit,table=37,zone=65000,nat(dst=10.244.0.2:80))",
        "goto_table:40",
    ]
    assert pipeline.split_actions("drop") == ["drop"]


@pytest.mark.parametrize(
    "actions, edges, exits, drop",
    [
        ("goto_table:20", ((20, "goto"),), (), False),
        ("resubmit(,33),goto_table:36", ((33, "resubmit"), (36, "goto")), (), False),
        ("ct(table=31,zone=65000,nat)", ((31, "ct"),), (), False),
        ("ct(commit,zone=65000),goto_table:90", ((90, "goto"),), (), False),  # no table= in ct
        ("ct(commit,table=37,zone=1,nat(dst=10.0.0.1:80))", ((37, "ct"),), (), False),
        (
            "learn(table=33,hard_timeout=10,NXM_OF_IP_SRC[]),goto_table:35",
            ((35, "goto"),),
            (),
            False,
        ),
        ("drop", (), ("drop",), True),
        ("", (), ("drop",), True),
        ("conjunction(5,1/2)", (), (), False),  # a clause: neither an edge nor a drop
        ("controller(reason=no_match,meter_id=3)", (), ("controller",), False),
        ("set_field:172.30.0.11->tun_dst,goto_table:70", ((70, "goto"),), ("tunnel",), False),
        ("output:2", (), ("gateway",), False),
        ("output:1", (), ("tunnel",), False),
        ("output:7", (), ("output",), False),
        ("output:NXM_NX_REG2[]", (), ("output",), False),
        ("move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],IN_PORT", (), ("output",), False),
    ],
)
def test_action_info(actions, edges, exits, drop):
    assert pipeline.action_info(actions, 2, 1) == (edges, exits, drop)


def test_pipeline_tables_in_order_named_with_counters(rows):
    doc = pipeline.pipeline_doc("node1", rows, 12.5, PORTS)
    assert doc["node"] == "node1" and doc["time"] == 12.5
    ids = [t["id"] for t in doc["tables"]]
    assert ids == sorted(ids) and ids == sorted({r["table_id"] for r in rows})
    for t in doc["tables"]:
        mine = [r for r in rows if r["table_id"] == t["id"]]
        assert t["name"] == tables.name_of(t["id"])
        assert (t["flows"], t["packets"], t["bytes"]) == (
            len(mine),
            sum(r["packets"] for r in mine),
            sum(r["bytes"] for r in mine),
        )
        assert t["hit"] is False
    by = {t["name"]: t for t in doc["tables"]}
    # the isolation drop of data/from-backend, and the packets it dropped
    assert by["IngressDefault"]["drop_flows"] == 1 and by["IngressDefault"]["drop_packets"] > 0
    assert by["ServiceLB"]["drop_flows"] == 0
    edges = {(e["from"], e["to"], e["kind"]) for e in doc["edges"]}
    t = tables.BY_NAME
    assert (t["Classifier"].id, t["SpoofGuard"].id, "goto") in edges
    assert (t["HairpinUnSNAT"].id, t["Conntrack"].id, "ct") in edges
    assert (t["EndpointDNAT"].id, t["HairpinSNAT"].id, "ct") in edges
    assert (t["IngressDefault"].id, t["BaselineIngressRule"].id, "goto") in edges
    exits = {(x["table"], x["to"]) for x in doc["exits"]}
    assert (t["L3Forwarding"].id, "tunnel") in exits  # to the other two nodes
    assert (t["Output"].id, "output") in exits
    assert (t["IngressDefault"].id, "drop") in exits


def test_unknown_table_is_named_by_id():
    r = copy.deepcopy(flowdump.parse(DUMP)[0])
    r["table_id"] = 200
    doc = pipeline.pipeline_doc("n", name_rows([r], FLOWS, STATUS), 0.0)
    assert doc["tables"][0]["name"] == "table200"


def test_owners_named_like_the_tools(rows):
    doc = pipeline.owners_doc("node1", rows)
    by = {o["id"]: o for o in doc["owners"]}
    assert by["policy/data/from-backend"]["tables"] == [
        tables.BY_NAME["IngressRule"].id,
        tables.BY_NAME["IngressDefault"].id,
    ]
    assert by["policy/data/from-backend"]["kind"] == "policy"
    assert by["service/backend/web"]["kind"] == "service"
    assert {"node/node0", "node/node2", "pipeline"} <= set(by)
    local = {f"pod/{p['namespace']}/{p['name']}" for p in STATUS["pods"]}
    assert local and local <= set(by)
    assert sum(o["flows"] for o in doc["owners"]) == len(rows)
    # a pod's flow carries the words `ovsctl flows` prints
    flow = next(r for r in rows if r["ui_owner"]["id"] == "pod/data/d2")
    assert flow["ui_owner"] == {
        "id": "pod/data/d2",
        "kind": "pod",
        "name": "data/d2",
        "text": "pod:data/d2",
    }


def test_owner_filter_policy_hits_its_tables_only(rows):
    doc = pipeline.pipeline_doc(
        "node1", rows, 0.0, PORTS, pipeline.OwnerFilter("policy/data/from-backend")
    )
    hit = {t["name"] for t in doc["tables"] if t["hit"]}
    assert hit == {"IngressRule", "IngressDefault"}


def test_owner_filter_pod_takes_the_flows_naming_its_address(rows):
    d2 = next(p for p in CLUSTER["pods"] if p["name"] == "d2")
    match = pipeline.OwnerFilter("pod/data/d2", d2["ips"])
    doc = pipeline.pipeline_doc("node1", rows, 0.0, PORTS, match)
    hit = {t["name"] for t in doc["tables"] if t["hit"]}
    assert {"Classifier", "SpoofGuard", "L2Forwarding"} <= hit  # its own flows
    assert "IngressDefault" in hit  # the isolation drop for its address
    own = pipeline.OwnerFilter("pod/data/d2")
    assert "IngressDefault" not in {
        t["name"]
        for t in pipeline.pipeline_doc("node1", rows, 0.0, PORTS, own)["tables"]
        if t["hit"]
    }


def test_flows_document_sorted_paged_and_filtered(rows):
    cls = tables.BY_NAME["Classifier"].id
    doc = pipeline.flows_doc("node1", rows, cls)
    prios = [f["priority"] for f in doc["flows"]]
    assert prios == sorted(prios, reverse=True) and doc["total"] == len(prios) > 3
    assert doc["table"] == {"id": cls, "name": "Classifier"}
    f = doc["flows"][-1]
    assert f["priority"] == 0 and f["drop"] is True and f["owner"]["kind"] == "pipeline"
    assert f["cookie"].startswith("0x") and isinstance(f["packets"], int)
    page = pipeline.flows_doc("node1", rows, cls, offset=1, limit=2)
    assert page["flows"] == doc["flows"][1:3] and page["total"] == doc["total"]
    assert len(pipeline.flows_doc("node1", rows * 3000, cls, limit=10**6)["flows"]) == 5000
    only = pipeline.flows_doc("node1", rows, cls, pipeline.OwnerFilter("pod/data/d2"))
    assert only["total"] == 1 and only["flows"][0]["owner"]["name"] == "data/d2"


def test_without_the_agent_owners_stay_ids(rows):
    bare = name_rows(flowdump.parse(DUMP), None, None)
    doc = pipeline.owners_doc("node1", bare)
    kinds = {o["kind"] for o in doc["owners"]}
    assert kinds == {"unknown"}
    assert any(o["id"].startswith("unknown/policy:0x") for o in doc["owners"])
    assert pipeline.pipeline_doc("node1", bare, 0.0)["tables"]  # the graph needs no names


@pytest.mark.parametrize("bad", ["bogus", "pod", "people/x", "", "policy"])
def test_check_owner_refuses(bad):
    with pytest.raises(ValueError, match="KIND/NAME"):
        pipeline.check_owner(bad)


def test_check_owner_accepts():
    for ok in ("pipeline", "pod/x/a", "policy/x/deny", "cnp/deny-y", "service/y/web", "node/n1"):
        assert pipeline.check_owner(ok) == ok


def test_service_endpoints_from_the_dnat_flows():
    eps = services_endpoints(FLOWS)
    pods = {
        ip: p["name"] for p in CLUSTER["pods"] for ip in p["ips"] if p["namespace"] == "backend"
    }
    assert sorted(pods[ip] for ip, port in eps["backend/web"]) == ["b1", "b2", "b3"]
    assert {port for _, port in eps["backend/web"]} == {"80"}


def test_owner_filter_policy_without_the_agent_finds_its_flows_by_owner_id():
    """The agent down: no owner keys, so no UI owner names the policy; its flows are found by
    the owner ids its keys hash to, as `ovsctl flows --policy` finds them."""
    bare = name_rows(flowdump.parse(DUMP), None, None)
    assert not any(r["ui_owner"]["id"].startswith("policy/") for r in bare)
    match = pipeline.OwnerFilter("policy/data/from-backend")
    doc = pipeline.pipeline_doc("node1", bare, 0.0, PORTS, match)
    assert {t["name"] for t in doc["tables"] if t["hit"]} == {"IngressRule", "IngressDefault"}
    table = tables.BY_NAME["IngressDefault"].id
    flows = pipeline.flows_doc("node1", bare, table, match)["flows"]
    assert flows and all(f["owner"]["kind"] == "unknown" for f in flows)
    assert not pipeline.OwnerFilter("policy/data/other").select(bare)


def test_owners_are_named_once_per_distinct_owner(monkeypatch):
    from ovsctl.tools import flowview

    calls = []
    real = flowview.owner_name
    monkeypatch.setattr(flowview, "owner_name", lambda *a: calls.append(a[:3]) or real(*a))
    rows = name_rows(flowdump.parse(DUMP), FLOWS, STATUS)
    distinct = {(r["owner"]["owner"], r["owner"]["feature"]) for r in rows}
    assert len(calls) == len(distinct) < len(rows)
    fresh = flowview.name_rows(flowdump.parse(DUMP), {}, {})
    assert [r["owner_name"] for r in fresh] == [
        real(None, r["owner"]["feature"], r["owner"]["owner"], {}) for r in fresh
    ]
