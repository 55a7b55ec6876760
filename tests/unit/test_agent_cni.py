"""The agent's CNI logic without a host (issue 15): ADD rolls back at every step, DEL is
idempotent, GC keeps live ports and other networks, the restore after a restart rebuilds the
attachments; the host is the in-memory fakes of tests/fakes/host.py."""

from __future__ import annotations

import logging
import types

import pytest

from flows import pipeline
from ovsctl.agent.cni import CNI
from ovsctl.agent.cniserver import CNIError
from ovsctl.agent.ipam import IPAM, IPAMError
from ovsctl.agent.pods import Attachment, PodStore, restore_pods
from ovsctl.agent.reconcile import SkipLog
from ovsctl.agent.reconcile.policy import PolicyReconciler
from ovsctl.agent.reconcile.services import ServiceReconciler
from tests.fakes.host import FakeController, FakeInterfaces, FakeNodeHost, FakePorts

CIDR = "10.244.0.0/24"
LOGGER = "ovsctl.agent"


@pytest.fixture
def env(tmp_path):
    store, skip, cluster = PodStore(), SkipLog(), {}
    ipam = IPAM(CIDR, str(tmp_path / "ipam"))
    ifaces, ports, ctl, host = FakeInterfaces(), FakePorts(), FakeController(), FakeNodeHost()
    policy = PolicyReconciler(cluster, store, ServiceReconciler(cluster, CIDR, skip), skip)
    policy.sync, policy.controller = ctl.sync, ctl
    cni = CNI(store, ipam, ifaces, ports, policy, ctl, ctl.sync, host, cluster, prefixlen=24)
    netns = tmp_path / "netns"
    netns.write_text("")
    return types.SimpleNamespace(
        store=store, ipam=ipam, ifaces=ifaces, ports=ports, ctl=ctl, host=host, cni=cni,
        netns=str(netns), sync=ctl.sync,
    )  # fmt: skip


def req(env, command="ADD", cid="c1", ifname="eth0", name="a", network="ovsctl", **config):
    return {
        "command": command,
        "containerID": cid,
        "ifname": ifname,
        "netns": env.netns,
        "args": {"K8S_POD_NAMESPACE": "x", "K8S_POD_NAME": name},
        "config": {"cniVersion": "1.0.0", "name": network, **config},
    }


def assert_nothing_left(env):
    assert env.ipam.allocations() == [], "an IPAM allocation is left"
    assert env.ifaces.links == {}, "a veth is left"
    assert env.ports.by_name == {}, "an OVS port is left"
    assert env.store.pods == {}, "an attachment is left"
    assert env.store.inflight == set()
    assert env.sync.owners == {}, "flows are left staged"


def test_add_gives_a_result_and_pushes_the_pod_with_its_policy_flows_in_one_bundle(env):
    out = env.cni.dispatch(req(env))
    assert out["ips"] == [{"address": "10.244.0.2/24", "gateway": "10.244.0.1", "interface": 1}]
    (att,) = env.store.pods.values()
    assert env.ports.port(att.host_if)["ofport"] == att.ofport > 0
    owner = pipeline.pod_owner(att.pod_port())
    assert env.sync.owner_flows(owner)
    assert len(env.ctl.staged) == 1 and owner in env.ctl.staged[0]  # one stage, one push
    assert len(env.ctl.pushed) == 1
    assert env.cni.dispatch(req(env, "CHECK")) is None


def _fail_ipam(env):
    def boom(*a, **kw):
        raise IPAMError("state file unreadable")

    env.ipam.allocate = boom


@pytest.mark.parametrize(
    "step, fail, words",
    [
        ("IPAM", _fail_ipam, "IPAM failed"),
        ("veth", lambda env: env.ifaces.fail.add("create"), "interface setup failed"),
        ("OVS port", lambda env: env.ports.fail.add("add"), "OVSDB operation failed"),
        # the pod end fails in its namespace after the host end went into OVS: the port goes
        ("veth", lambda env: env.ifaces.fail.add("configure"), "interface setup failed"),
        ("flows", lambda env: env.ctl.fail.add("push"), "installing the pod's flows failed"),
    ],
)
def test_add_rolls_back_every_step_when_one_fails(env, step, fail, words, caplog):
    fail(env)
    with pytest.raises(CNIError) as e:
        env.cni.dispatch(req(env))
    assert e.value.msg == f"{step}: {words}", e.value.msg
    assert_nothing_left(env)


def test_add_rollback_also_drops_the_policy_flows_the_pod_opened(env):
    from ovsctl.k8s import model

    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        },
    ):
        o = model.parse(obj)
        env.cni.cluster[o.key] = o
    env.ctl.fail.add("push")
    with pytest.raises(CNIError, match="flows"):
        env.cni.dispatch(req(env))
    assert env.ctl.staged[0], "the pod and its policy flows were staged together"
    assert any(k.startswith("policy/") for k in env.ctl.staged[0])
    assert not [o for o in env.sync.owners if not o.startswith(("policy/", "service/"))]
    assert env.store.pods == {} and env.ports.by_name == {} and env.ipam.allocations() == []


def test_del_twice_and_for_an_unknown_container(env):
    env.cni.dispatch(req(env))
    assert env.cni.dispatch(req(env, "DEL")) is None
    assert_nothing_left(env)
    assert env.cni.dispatch(req(env, "DEL")) is None
    assert env.cni.dispatch(req(env, "DEL", cid="never-seen")) is None
    assert_nothing_left(env)


def test_del_of_an_unknown_attachment_removes_flows_still_desired(env, caplog):
    """Nothing stages a pod's flows without its attachment; should anything ever, the DEL that
    finds no attachment still takes them (and says so), so that they do not outlive the pod."""
    env.cni.dispatch(req(env))
    env.store.forget("c1/eth0")  # the attachment is gone, its flows are not
    assert env.sync.owner_flows("pod/c1/eth0")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert env.cni.dispatch(req(env, "DEL")) is None
    assert "flows desired without an attachment" in caplog.text
    assert_nothing_left(env)


def test_gc_keeps_live_ports_and_other_networks(env, caplog):
    env.cni.dispatch(req(env, cid="live", name="a"))
    env.cni.dispatch(req(env, cid="other", name="b", network="elsewhere"))
    env.cni.dispatch(req(env, cid="stale", name="c"))
    stale = env.store.pods["stale/eth0"]
    env.ports.by_name[stale.host_if]["ofport"] = -1  # its interface is gone
    gc = {"cni.dev/valid-attachments": []}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert env.cni.dispatch(req(env, "GC", **gc)) is None
    assert sorted(env.store.pods) == ["live/eth0", "other/eth0"]
    assert sorted(a.container_id for a in env.ipam.allocations()) == ["live", "other"]
    assert stale.host_if not in env.ports.by_name and stale.host_if not in env.ifaces.links
    text = caplog.text
    assert "keeping live/eth0" in text and "its port is live" in text
    assert "keeping other/eth0" in text and "belongs to network 'elsewhere'" in text
    assert "removing stale attachment stale/eth0" in text


def test_gc_needs_the_network_and_its_list(env):
    with pytest.raises(CNIError, match="valid-attachments"):
        env.cni.dispatch(req(env, "GC"))


def _port(ifaces, ports, cid, ip, ofport, network="ovsctl"):
    name = ifaces.host_ifname(cid, "eth0")
    att = Attachment(
        cid, "eth0", "x", cid, "", "/x", name, ip, "0a:58:0a:f4:00:05", network=network
    )
    ports.by_name[name] = {
        "name": name, "ofport": ofport, "external_ids": att.external_ids(), "error": None,
    }  # fmt: skip
    if ofport > 0:
        ifaces.links[name] = {
            "netns": "/x", "ifname": "eth0", "mac": att.mac, "ip": ip, "prefixlen": 24,
        }  # fmt: skip
    return att


def test_restore_after_restart(env, caplog):
    live = _port(env.ifaces, env.ports, "live", "10.244.0.5", 7)
    gone = _port(env.ifaces, env.ports, "gone", "10.244.0.6", -1)
    env.ipam.adopt(gone.ip, "gone", "eth0", {"network": "ovsctl"})
    env.ipam.allocate("interrupted", "eth0", {"network": "ovsctl"})  # no port was plugged
    env.ifaces.links["ovs0123456789a"] = {"netns": "/y", "ifname": "eth0", "mac": "", "ip": ""}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        restore_pods(env.store, env.ports, env.ifaces, env.ipam, env.sync, env.host.net)
    assert sorted(env.store.pods) == ["gone/eth0", "live/eth0"]
    assert env.store.pods["live/eth0"].ofport == 7
    assert env.sync.owner_flows(pipeline.pod_owner(env.store.pods["live/eth0"].pod_port()))
    assert not env.sync.owner_flows(pipeline.pod_owner(env.store.pods["gone/eth0"].pod_port()))
    assert "kept until DEL/GC" in caplog.text
    allocs = {(a.container_id, a.ip) for a in env.ipam.allocations()}
    assert allocs == {("live", live.ip), ("gone", gone.ip)}  # live re-reserved, the other freed
    assert "re-reserved it" in caplog.text and "interrupted ADD" in caplog.text
    assert "ovs0123456789a" not in env.ifaces.links  # the orphan veth went
    # the restored attachment answers CHECK once its flows are on the switch
    env.ctl.push(set(env.sync.desired()))
    env.cni.cluster.clear()
    env.store.pods["live/eth0"].netns = env.netns
    env.ifaces.links[live.host_if]["netns"] = env.netns
    assert env.cni.dispatch(req(env, "CHECK", cid="live")) is None


# ---- dual-stack -------------------------------------------------------------------------------

DUAL = ("10.244.1.0/24", "fd00:10:244:1::/64")


@pytest.fixture
def dual(tmp_path):
    store, skip, cluster = PodStore(), SkipLog(), {}
    ipam = IPAM(DUAL, str(tmp_path / "ipam"))
    ifaces, ports, ctl = FakeInterfaces(), FakePorts(), FakeController()
    host = FakeNodeHost(DUAL)
    policy = PolicyReconciler(cluster, store, ServiceReconciler(cluster, DUAL[0], skip), skip)
    policy.sync, policy.controller = ctl.sync, ctl
    cni = CNI(store, ipam, ifaces, ports, policy, ctl, ctl.sync, host, cluster, prefixlen=24)
    netns = tmp_path / "netns"
    netns.write_text("")
    return types.SimpleNamespace(
        store=store, ipam=ipam, ifaces=ifaces, ports=ports, ctl=ctl, host=host, cni=cni,
        netns=str(netns), sync=ctl.sync,
    )  # fmt: skip


def test_dual_stack_add_result_lists_both_addresses_ipv4_first(dual):
    out = dual.cni.dispatch(req(dual))
    (att,) = dual.store.pods.values()
    assert out == {
        "interfaces": [
            {"name": att.host_if, "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": dual.netns},
        ],
        "ips": [
            {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1},
            {"address": "fd00:10:244:1::2/64", "gateway": "fd00:10:244:1::1", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
            {"dst": "::/0", "gw": "fd00:10:244:1::1"},
        ],
        "dns": {},
    }
    assert att.ips == ("10.244.1.2", "fd00:10:244:1::2") and att.ip == "10.244.1.2"
    assert att.pod_port().ips == att.ips
    link = dual.ifaces.links[att.host_if]
    assert (link["ip"], link["prefixlen"], link["more"]) == (
        "10.244.1.2", 24, [("fd00:10:244:1::2", 64)],
    )  # fmt: skip
    # OVSDB keeps both (restart and GC need them)
    ext = dual.ports.port(att.host_if)["external_ids"]
    assert ext["ip"] == "10.244.1.2" and ext["ips"] == "10.244.1.2,fd00:10:244:1::2"
    assert Attachment.from_port(dual.ports.port(att.host_if)).ips == att.ips
    assert dual.cni.dispatch(req(dual, "CHECK")) is None
    # CHECK sees a missing IPv6 address or IPv6 default route
    link["more"] = []
    with pytest.raises(CNIError) as e:
        dual.cni.dispatch(req(dual, "CHECK"))
    assert "eth0 lacks fd00:10:244:1::2/64" in e.value.details
    link["more"], link["gateways6"] = [("fd00:10:244:1::2", 64)], []
    with pytest.raises(CNIError) as e:
        dual.cni.dispatch(req(dual, "CHECK"))
    assert e.value.details == "eth0 has no IPv6 default route via fd00:10:244:1::1"
    # DEL frees both
    dual.cni.dispatch(req(dual, "DEL"))
    assert_nothing_left(dual)


def test_ipv4_only_records_and_results_are_unchanged(env):
    out = env.cni.dispatch(req(env))
    assert out["ips"] == [{"address": "10.244.0.2/24", "gateway": "10.244.0.1", "interface": 1}]
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
    (att,) = env.store.pods.values()
    assert set(env.ports.port(att.host_if)["external_ids"]) == {
        "ovsctl-owner", "container-id", "ifname", "pod-namespace", "pod-name", "pod-uid",
        "netns", "ip", "attached-mac", "cni-network", "default-route",
    }  # fmt: skip
    assert "more" not in env.ifaces.calls  # the fake was called without `more`
    assert env.ifaces.links[att.host_if]["more"] == []


def test_dual_stack_no_default_route_per_family(dual):
    def create(host_if, netns, ifname, **kw):
        dual.ifaces.links[host_if] = {"netns": netns, "ifname": ifname, "mac": kw["mac"],
                                      "ip": kw["ip"], "prefixlen": kw["prefixlen"]}  # fmt: skip
        kw["during"]()  # the OVS port, while the pod end is configured
        return "02:00:00:00:00:01", (True, False)  # the pod had an IPv6 default route

    dual.ifaces.create = create
    out = dual.cni.dispatch(req(dual, ifname="net1"))
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    (att,) = dual.store.pods.values()
    assert att.default_route and not att.default_route6
    assert dual.ports.port(att.host_if)["external_ids"]["default-route6"] == "false"


def test_dual_stack_requested_addresses(dual):
    args = {"IP": "fd00:10:244:1::70,10.244.1.70"}
    r = req(dual)
    r["args"].update(args)
    out = dual.cni.dispatch(r)
    assert [i["address"] for i in out["ips"]] == ["10.244.1.70/24", "fd00:10:244:1::70/64"]
    # ADD again with the same request: the same attachment
    assert dual.cni.dispatch(r) == out
    # one family asked for: the other is allocated
    r2 = req(dual, cid="c2", name="b", runtimeConfig={"ips": ["fd00:10:244:1::71/64"]})
    out2 = dual.cni.dispatch(r2)
    assert [i["address"] for i in out2["ips"]] == ["10.244.1.2/24", "fd00:10:244:1::71/64"]
    # in use (104), outside (103): nothing allocated
    for ips, code in (("10.244.1.9,fd00:10:244:1::70", 104), ("fd00:10:245::1", 103)):
        r3 = req(dual, cid="c3", name="c")
        r3["args"]["IP"] = ips
        with pytest.raises(CNIError) as e:
            dual.cni.dispatch(r3)
        assert e.value.code == code
    assert sorted(a.container_id for a in dual.ipam.allocations()) == ["c1", "c2"]
    assert sorted(dual.store.pods) == ["c1/eth0", "c2/eth0"]


def test_ipv4_only_node_refuses_an_ipv6_request(env):
    r = req(env)
    r["args"]["IP"] = "fd00::5"
    with pytest.raises(CNIError) as e:
        env.cni.dispatch(r)
    assert e.value.code == 103 and "serves IPv4 pods only" in e.value.msg
    assert_nothing_left(env)


def test_dual_stack_gc_and_restore(dual, caplog):
    dual.cni.dispatch(req(dual, cid="live", name="a"))
    dual.cni.dispatch(req(dual, cid="stale", name="b"))
    stale = dual.store.pods["stale/eth0"]
    dual.ports.by_name[stale.host_if]["ofport"] = -1
    dual.cni.dispatch(req(dual, "GC", **{"cni.dev/valid-attachments": []}))
    (live,) = dual.ipam.allocations()
    assert live.container_id == "live" and len(live.ips) == 2
    # a restart that lost the IPAM state: both addresses re-reserved from OVSDB
    import os

    os.unlink(dual.ipam.path)
    store = PodStore()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        restore_pods(store, dual.ports, dual.ifaces, dual.ipam, dual.sync, dual.host.net)
    assert store.pods["live/eth0"].ips == live.ips
    assert [a.ips for a in dual.ipam.allocations()] == [live.ips]
    assert "re-reserved it" in caplog.text
