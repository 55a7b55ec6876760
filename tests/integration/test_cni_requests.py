"""What runtimes ask of an ADD beyond "give me an address": chained results (prevResult),
requested addresses and MACs (podman's network reload, runtimeConfig capabilities), a second
interface in a pod, GC per network, pods without a namespace, and errors that name their step.
Real OVS, real namespaces and veths, the shim called as a runtime calls it."""

from __future__ import annotations

import json

import pytest

from tests.helpers import in_ns, netns_add, uid, wait_for
from tests.integration.test_single_node import ipam_ips, node_links, ping
from tests.integration.test_tools import ovsctl


def _netns(node, tag: str) -> tuple[str, str]:
    name = f"{node.ns}-{tag}{uid(4)}"
    path = netns_add(name)
    node.pods.append(name)  # removed with the node
    return name, path


def _args(name: str, namespace: str | None = "default", **more: str) -> str:
    parts = ["IgnoreUnknown=1"]
    if namespace is not None:
        parts.append(f"K8S_POD_NAMESPACE={namespace}")
    parts.append(f"K8S_POD_NAME={name}")
    parts += [f"{k}={v}" for k, v in more.items()]
    return ";".join(parts)


def _add(node, cid, path, args, ifname="eth0", conf=None, version="1.0.0"):
    return node.cni(
        "ADD",
        cid,
        path,
        ifname,
        conf=conf or node.netconf(version),
        env_extra={"CNI_ARGS": args},
    )


def _del(node, cid, path, args, ifname="eth0", conf=None):
    r = node.cni(
        "DEL", cid, path, ifname, conf=conf or node.netconf(), env_extra={"CNI_ARGS": args}
    )
    assert r.returncode == 0, r.stdout
    return r


def _error(r) -> dict:
    assert r.returncode == 1, f"expected a CNI error, got {r.returncode}: {r.stdout}"
    return json.loads(r.stdout)


def test_a_chained_add_keeps_the_previous_result_and_adds_ours(node):
    """CNI spec: a plugin that is not first in a chain returns prevResult with its own
    interfaces, IPs and routes added (our IP's interface index counts the ones before)."""
    _, path = _netns(node, "ch")
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "dummy0", "mac": "0e:00:00:00:00:01", "sandbox": path}],
        "ips": [{"address": "192.168.77.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
    }
    cid = f"ch{uid(10)}"
    r = _add(node, cid, path, _args("chained"), conf=node.netconf("1.0.0", prevResult=prev))
    assert r.returncode == 0, r.stdout
    res = json.loads(r.stdout)
    assert res["interfaces"][0] == prev["interfaces"][0]
    assert len(res["interfaces"]) == 3 and res["interfaces"][2]["name"] == "eth0"
    assert res["ips"][0] == prev["ips"][0]
    ours = res["ips"][1]
    assert ours["interface"] == 2 and res["interfaces"][2]["name"] == "eth0"
    assert ours["address"].startswith("10.244.0.")
    assert res["routes"][0] == prev["routes"][0]
    assert {"dst": "0.0.0.0/0", "gw": "10.244.0.1"} in res["routes"]
    assert res["dns"] == prev["dns"]
    # CHECK with the chain's final result as prevResult passes
    chk = node.cni(
        "CHECK",
        cid,
        path,
        conf=node.netconf("1.0.0", prevResult=res),
        env_extra={"CNI_ARGS": _args("chained")},
    )
    assert chk.returncode == 0, chk.stdout
    _del(node, cid, path, _args("chained"))


def test_a_malformed_prev_result_is_an_invalid_config_and_allocates_nothing(node):
    _, path = _netns(node, "bp")
    before = ipam_ips(node)
    r = _add(
        node,
        f"bp{uid(10)}",
        path,
        _args("badprev"),
        conf=node.netconf("1.0.0", prevResult={"ips": "10.0.0.1"}),
    )
    err = _error(r)
    assert err["code"] == 7 and "prevResult.ips" in err["msg"]
    assert ipam_ips(node) == before


def test_ip_and_mac_in_cni_args_are_honoured_across_delete_and_add(node):
    """podman's `network reload`: DEL, then ADD with IP= and MAC= in CNI_ARGS; the container
    comes back with the same address and MAC."""
    ns, path = _netns(node, "rl")
    cid = f"rl{uid(10)}"
    r = _add(node, cid, path, _args("reload", None))
    assert r.returncode == 0, r.stdout
    first = json.loads(r.stdout)
    ip = first["ips"][0]["address"].split("/")[0]
    mac = first["interfaces"][1]["mac"]
    _del(node, cid, path, _args("reload", None))
    # an ADD in between would take the next free address; the requested one must still win
    ns2, path2 = _netns(node, "rx")
    other = _add(node, f"rx{uid(10)}", path2, _args("other"))
    assert other.returncode == 0, other.stdout
    want_mac = "0a:58:0a:f4:00:fe"
    r = _add(node, cid, path, _args("reload", None, IP=ip, MAC=want_mac))
    assert r.returncode == 0, r.stdout
    again = json.loads(r.stdout)
    assert again["ips"][0]["address"] == first["ips"][0]["address"]
    assert again["interfaces"][1]["mac"] == want_mac != mac
    link = in_ns(ns, "ip", "-o", "link", "show", "eth0").stdout
    assert want_mac in link
    gw = "10.244.0.1"
    assert ping(ns, gw), "a pod with a requested MAC is spoof-guarded by that MAC"
    assert ping(ns2, ip)


def test_runtime_config_ips_and_mac_are_honoured(node):
    ns, path = _netns(node, "rc")
    cid = f"rc{uid(10)}"
    conf = node.netconf(
        "1.0.0",
        runtimeConfig={"ips": ["10.244.0.200/24"], "mac": "0A:58:0A:F4:00:C8"},
        capabilities={"ips": True, "mac": True},
    )
    r = _add(node, cid, path, _args("static"), conf=conf)
    assert r.returncode == 0, r.stdout
    res = json.loads(r.stdout)
    assert res["ips"][0]["address"] == "10.244.0.200/24"
    assert res["interfaces"][1]["mac"] == "0a:58:0a:f4:00:c8"
    assert ping(ns, "10.244.0.1")
    _del(node, cid, path, _args("static"))
    assert "10.244.0.200" not in ipam_ips(node)


@pytest.mark.parametrize(
    "args, code, words",
    [
        ({"IP": "10.99.0.81"}, 103, ["10.99.0.81", "outside", "10.244.0.0/24"]),
        ({"IP": "10.244.0.1"}, 103, ["10.244.0.1", "reserved"]),
        ({"IP": "10.244.0.300"}, 103, ["10.244.0.300"]),
        ({"IP": "fd00::5"}, 103, ["fd00::5", "IPv4"]),
        ({"MAC": "01:00:5e:00:00:01"}, 103, ["01:00:5e:00:00:01", "unicast"]),
        ({"MAC": "nonsense"}, 103, ["nonsense"]),
    ],
)
def test_an_unusable_requested_address_is_a_clear_error_and_allocates_nothing(
    node, args, code, words
):
    _, path = _netns(node, "bad")
    before, links = ipam_ips(node), node_links(node)
    err = _error(_add(node, f"bad{uid(10)}", path, _args("bad", **args)))
    assert err["code"] == code
    for w in words:
        assert w in err["msg"], err
    assert ipam_ips(node) == before
    assert node_links(node) == links


def test_a_requested_address_held_by_another_pod_is_refused_naming_it(node):
    ns, path = _netns(node, "hd")
    cid = f"hd{uid(10)}"
    r = _add(node, cid, path, _args("holder"))
    assert r.returncode == 0, r.stdout
    held = json.loads(r.stdout)["ips"][0]["address"].split("/")[0]
    _, path2 = _netns(node, "tk")
    before, links = ipam_ips(node), node_links(node)
    err = _error(_add(node, f"tk{uid(10)}", path2, _args("taker", IP=held)))
    assert err["code"] == 104
    assert held in err["msg"] and cid in err["msg"]
    assert ipam_ips(node) == before and node_links(node) == links
    assert ping(ns, "10.244.0.1"), "the holder keeps working"


def test_a_second_interface_does_not_take_the_default_route(node):
    """A Multus delegate adds net2 to a pod that already has eth0: it gets its address, no
    second default route, and the pod keeps its route through eth0."""
    ns, path = _netns(node, "mi")
    cid = f"mi{uid(10)}"
    r = _add(node, cid, path, _args("multi"))
    assert r.returncode == 0, r.stdout
    r2 = _add(node, cid, path, _args("multi"), ifname="net2")
    assert r2.returncode == 0, r2.stdout
    res = json.loads(r2.stdout)
    assert res["interfaces"][1]["name"] == "net2"
    assert res["routes"] == []
    routes = in_ns(ns, "ip", "-4", "route", "show", "default").stdout.strip().splitlines()
    assert len(routes) == 1 and "dev eth0" in routes[0], routes
    addr = res["ips"][0]["address"]
    assert addr in in_ns(ns, "ip", "-o", "-4", "addr", "show", "net2").stdout
    assert ping(ns, "10.244.0.1")
    _del(node, cid, path, _args("multi"), ifname="net2")
    assert ping(ns, "10.244.0.1"), "eth0 still works after net2 goes"
    _del(node, cid, path, _args("multi"))


def test_an_error_names_the_step_that_failed_and_leaves_nothing(node):
    ns, path = _netns(node, "st")
    # the pod already has an interface of that name
    in_ns(ns, "ip", "link", "add", "eth5", "type", "veth", "peer", "name", "eth6")
    before, links = ipam_ips(node), node_links(node)
    err = _error(_add(node, f"st{uid(10)}", path, _args("clash"), ifname="eth5"))
    assert err["code"] == 100
    assert err["msg"].startswith("veth: "), err
    assert "eth5" in err["details"] and "exists" in err["details"]
    assert ipam_ips(node) == before and node_links(node) == links


def test_the_nodes_own_namespace_is_refused(node):
    before, links = ipam_ips(node), node_links(node)
    err = _error(_add(node, f"hn{uid(10)}", f"/var/run/netns/{node.ns}", _args("hostns")))
    assert err["code"] == 4 and "own network namespace" in err["msg"]
    assert ipam_ips(node) == before and node_links(node) == links


def test_gc_touches_only_attachments_of_its_own_network(node):
    _, path_a = _netns(node, "ga")
    _, path_b = _netns(node, "gb")
    conf_a = node.netconf("1.1.0", name="neta")
    conf_b = node.netconf("1.1.0", name="netb")
    ca, cb = f"ga{uid(10)}", f"gb{uid(10)}"
    ra = _add(node, ca, path_a, _args("ona"), conf=conf_a)
    rb = _add(node, cb, path_b, _args("onb"), conf=conf_b)
    assert ra.returncode == 0 and rb.returncode == 0, (ra.stdout, rb.stdout)
    ip_a = json.loads(ra.stdout)["ips"][0]["address"].split("/")[0]
    ip_b = json.loads(rb.stdout)["ips"][0]["address"].split("/")[0]
    # make both stale behind the agent's back: their host veths go
    for r in (ra, rb):
        in_ns(node.ns, "ip", "link", "del", json.loads(r.stdout)["interfaces"][0]["name"])
    gc = node.cni("GC", "", "", "", conf={**conf_a, "cni.dev/valid-attachments": []})
    assert gc.returncode == 0, gc.stdout
    ips = ipam_ips(node)
    assert ip_a not in ips, "network A's stale attachment is collected"
    assert ip_b in ips, "network B's attachment is not A's to collect"
    log = open(node.agent_log).read()
    assert f"GC neta: keeping {cb}/eth0" in log and "belongs to network 'netb'" in log
    _del(node, cb, path_b, _args("onb"), conf=conf_b)


def test_a_pod_without_a_namespace_is_named_by_its_name(node):
    """podman sends K8S_POD_NAME and no K8S_POD_NAMESPACE."""
    _, path = _netns(node, "pm")
    cid = f"pm{uid(10)}"
    r = _add(node, cid, path, _args("webby", None))
    assert r.returncode == 0, r.stdout
    wait_for(lambda: "pod webby (" in open(node.agent_log).read(), 5, what="log line")
    assert "pod /webby" not in open(node.agent_log).read()
    text = ovsctl(node, "status").stdout
    assert any(line.split()[:1] == ["webby"] for line in text.splitlines()), text
    flows = ovsctl(node, "flows", "--pod", "webby")
    assert flows.returncode == 0, flows.stderr
    assert "pod:webby" in flows.stdout and "pod:/webby" not in flows.stdout
    _del(node, cid, path, _args("webby", None))
