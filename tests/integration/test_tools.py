"""`ovsctl flows` (owners named through the agent, --pod, --diff) and `ovsctl status` on one
real node, run as a user runs them: inside the node's network namespace, with the node's OVS
run directory and its agent's unix socket ($OVSCTL_AGENT)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import VENV_BIN, wait_for


@pytest.fixture(scope="module")
def pods(node):
    return [node.add_pod(n) for n in ("ta", "tb")]


def ovsctl(node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, OVS_RUNDIR=node.ovs.rundir, OVSCTL_AGENT=node.api_sock)
    return subprocess.run(
        ["ip", "netns", "exec", node.ns, os.path.join(VENV_BIN, "ovsctl"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def flows_json(node, *args: str) -> list[dict]:
    p = ovsctl(node, "flows", "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def in_sync(node) -> bool:
    p = ovsctl(node, "flows", "--diff")
    return p.returncode == 0 and p.stdout == ""


def test_status_json_has_the_documented_fields(node, pods):
    p = ovsctl(node, "status", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["bridge"] == "br-int" and st["ready"] == "ok"
    assert st["openflow"]["connected"] and st["openflow"]["round"] >= 1
    # the agent connects to the bridge's root-only management socket; nothing listens
    assert st["openflow"]["listen"] == f"unix:{node.ovs.rundir}/br-int.mgmt"
    assert st["openflow"]["healthy"] == "ok" and st["openflow"]["error"] is None
    assert st["openflow"]["datapath_id"] == node.ovs.vsctl(
        "get", "Bridge", "br-int", "other_config:datapath-id"
    ).strip().strip('"')
    assert sum(st["flows_per_table"].values()) == st["flows_desired"] > 0
    assert list(st["flows_per_table"])[:2] == ["Classifier", "SpoofGuard"]
    names = {(p["namespace"], p["name"]) for p in st["pods"]}
    assert {("default", "ta"), ("default", "tb")} <= names
    assert st["last_sync"]["kind"] in ("full", "incremental")
    assert st["last_sync"]["seconds"] >= 0 and st["last_sync"]["at"] > 0
    assert st["ipam"]["cidr"] == node.pod_cidr and st["ipam"]["used"] >= 2
    assert st["tunnel"] is None and st["peers"] == []  # a single node without a node IP
    assert st["audit"]["rate"] == 100 and st["audit"]["meter"] is True
    human = ovsctl(node, "status")
    assert human.returncode == 0
    assert "ready: ok" in human.stdout and "default/ta" in human.stdout
    assert "meter on the switch" in human.stdout


def test_flows_name_owners_and_filter_by_pod(node, pods):
    rows = flows_json(node)
    names = {r["owner_name"] for r in rows}
    assert "pipeline" in names
    assert {"pod:default/ta", "pod:default/tb"} <= names
    assert not any(n.startswith("pod:0x") for n in names)
    ta = pods[0]
    mine = flows_json(node, "--pod", "default/ta")
    owned = [r for r in mine if r["owner_name"] == "pod:default/ta"]
    assert owned and all(r["owner_key"] == f"pod/{ta['cid']}/eth0" for r in owned)
    assert len(owned) == len([r for r in rows if r["owner_name"] == "pod:default/ta"])
    for r in mine:  # the rest names its IP
        assert r in owned or ta["ip"] in r["match"] + r["actions"], r
    assert not any(r["owner_name"] == "pod:default/tb" for r in mine)
    # the table filter combines
    l2 = flows_json(node, "--pod", "default/ta", "--table", "L2Forwarding")
    assert [r["table"] for r in l2] == ["L2Forwarding"] and l2[0]["owner_name"] == "pod:default/ta"
    text = ovsctl(node, "flows", "--pod", "default/ta").stdout
    assert "[70] L2Forwarding" in text and "pod:default/ta" in text and "n_packets=" in text
    unknown = ovsctl(node, "flows", "--pod", "default/nope")
    assert unknown.returncode == 1 and "no pod default/nope" in unknown.stderr


def test_diff_is_empty_in_sync_and_shows_flows_changed_behind_the_agents_back(node, pods):
    wait_for(lambda: in_sync(node), 30, what="flows --diff empty after sync")
    l2 = flows_json(node, "--pod", "default/tb", "--table", "L2Forwarding")[0]
    node.ovs.ofctl("del-flows", "--strict", "br-int", f"table={l2['table_id']},{l2['match']}")
    extra = "table=90,priority=7,ip,nw_dst=10.99.0.1"
    node.ovs.ofctl("add-flow", "br-int", f"cookie=0x{0xAB << 48:x},{extra},actions=drop")
    try:
        p = ovsctl(node, "flows", "--diff")
        assert p.returncode == 1, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0] == (
            f"- [L2Forwarding] {l2['match']} actions={l2['actions']}  "
            "(pod:default/tb: desired, not on the switch)"
        )
        assert lines[1].startswith("+ [Output] priority=7,ip,nw_dst=10.99.0.1 actions=drop")
        assert lines[-1] == "2 difference(s): 1 missing, 1 unexpected, 0 changed"
        d = json.loads(ovsctl(node, "flows", "--diff", "--json").stdout)
        assert [r["owner_name"] for r in d["missing"]] == ["pod:default/tb"]
        assert [r["match"] for r in d["unexpected"]] == ["priority=7,ip,nw_dst=10.99.0.1"]
        # filters apply to the diff too
        assert ovsctl(node, "flows", "--diff", "--pod", "default/ta").returncode == 0
        assert ovsctl(node, "flows", "--diff", "--table", "Output").returncode == 1

        # Without the agent: owners are ids, --pod still works (OVSDB), --diff cannot compare.
        node.kill_agent()
        gone = ovsctl(node, "flows", "--json", "--pod", "default/ta")
        assert gone.returncode == 0 and "agent unreachable" in gone.stderr
        rows = json.loads(gone.stdout)
        assert rows and all(not r["owner_name"].startswith("pod:default") for r in rows)
        assert any(r["owner_name"].startswith("pod:0x") for r in rows)
        assert ovsctl(node, "flows", "--diff").returncode == 2
        assert ovsctl(node, "status").returncode == 2
    finally:
        node.ovs.ofctl("del-flows", "--strict", "br-int", extra)
        if node.agent_proc.poll() is not None:
            node.start_agent()  # a new round puts the deleted flow back
    wait_for(lambda: in_sync(node), 30, what="flows --diff empty after the agent's new round")
    # the restarted agent found its meter (the Service reject meter; audited policies bring
    # their own) on the switch and updated it
    assert json.loads(ovsctl(node, "status", "--json").stdout)["audit"]["meter"] is True
    assert "meter=2 pktps burst stats bands=" in node.ovs.ofctl("dump-meters", "br-int")
    assert l2["match"] in {r["match"] for r in flows_json(node, "--table", "L2Forwarding")}
