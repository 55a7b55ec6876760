"""podman 4.3 (CNI backend, runc) runs the real `ovsctl-cni` from a conflist, alone and chained
with the reference `tuning` and `portmap` plugins."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import in_ns, uid, wait_for
from tests.runtimes.checks import (
    NETUTIL,
    assert_back_to,
    assert_pings,
    assert_tcp,
    flows_mentioning,
    gateway,
    in_cidr,
    in_netns,
    ipam_ips,
    node_state,
)
from tests.runtimes.harness import conflist


@pytest.fixture(scope="module")
def network(rt_node, podman):
    return podman.add_network(conflist(f"ovsctl-{uid()}", rt_node.sock))


@pytest.fixture(scope="module")
def chained(rt_node, podman):
    return podman.add_network(conflist(f"ovsctl-chain-{uid()}", rt_node.sock, chain=True))


def agent_lines(node, text: str) -> list[str]:
    with open(node.agent_log) as fh:
        return [line for line in fh if text in line and "ovsctl.agent: CNI " in line]


def test_podman_containers_get_addresses_reach_each_other_and_keep_them_on_reload(
    rt_node, podman, network
):
    before = node_state(rt_node)
    x, a, b = f"px{uid()}", f"pa{uid()}", f"pb{uid()}"
    try:
        # x takes the first free address and goes, so that at reload time a fresh allocation
        # would hand out another address than the one asked back (lowest-free or next-free)
        for c in (x, a, b):
            podman.run(c, network)
        podman("rm", "-f", "-t", "0", x)
        info = {c: podman.inspect(c) for c in (a, b)}
        for c in (a, b):
            # really runc, and really our plugin (the agent logged the ADD of this container)
            assert info[c]["OCIRuntime"] == "runc"
            assert info[c]["State"]["Running"]
            assert agent_lines(rt_node, f"CNI ADD {info[c]['Id']} pod {c} ok")
        ips = {c: podman.ip(c, network) for c in (a, b)}
        netns = {c: podman.netns(c) for c in (a, b)}
        macs = {c: info[c]["NetworkSettings"]["Networks"][network]["MacAddress"] for c in (a, b)}
        assert ips[a] != ips[b] and all(in_cidr(ip, rt_node.pod_cidr) for ip in ips.values())
        assert set(ips.values()) <= ipam_ips(rt_node)
        assert_pings(netns[a], ips[b])
        assert_pings(netns[b], gateway(rt_node.pod_cidr))
        assert_tcp(netns[a], ips[a], netns[b])

        # `podman network reload` re-adds each container (DEL, then ADD with IP= and MAC= in
        # CNI_ARGS): each keeps its address, and traffic still flows.
        for c in (a, b):
            p = podman("network", "reload", c, check=False)
            assert p.returncode == 0, f"podman network reload {c}: {p.stderr}\n{rt_node.tail_log()}"
        for c in (a, b):
            now = podman.inspect(c)["NetworkSettings"]["Networks"][network]
            assert (now["IPAddress"], now["MacAddress"]) == (ips[c], macs[c])
            addr = in_netns(netns[c], "ip", "-4", "-o", "addr", "show", "eth0").stdout
            assert f"inet {ips[c]}/" in addr, addr
        assert_pings(netns[a], ips[b])
        assert_tcp(netns[b], ips[b], netns[a])
    finally:
        for c in (x, a, b):
            podman("stop", "-t", "0", c, check=False)
            podman("rm", "-f", c, check=False)
    assert_back_to(rt_node, before, what="after podman stop/rm")


def _libcni_cache(podman, container_id: str) -> dict:
    """The result libcni cached for this attachment (what it passes as prevResult)."""
    pattern = f"*{container_id}*"
    found = [
        f
        for base in (podman.dir, "/var/lib/cni")
        for f in glob.glob(os.path.join(base, "**", "results", pattern), recursive=True)
    ]
    assert found, f"no libcni result cache for {container_id}"
    with open(found[0]) as fh:
        return json.load(fh)


def _check_chain(podman, conf: dict, cache: dict, netns: str) -> list[tuple[str, int, str]]:
    """CNI CHECK of every plugin of the list, in libcni's order and with libcni's inputs: each
    plugin's config gets the list's name and cniVersion, the cached result as prevResult and
    the runtimeConfig of the capabilities it declares."""
    env = {
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": "CHECK",
        "CNI_CONTAINERID": cache["containerId"],
        "CNI_NETNS": netns,
        "CNI_IFNAME": cache["ifName"],
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in cache.get("cniArgs") or []),
        "CNI_PATH": podman.bin_dir,
    }
    caps = cache.get("capabilityArgs") or {}
    out = []
    for plugin in conf["plugins"]:
        pconf = dict(plugin, name=conf["name"], cniVersion=conf["cniVersion"])
        pconf.pop("capabilities", None)
        rc = {
            k: caps[k] for k, on in (plugin.get("capabilities") or {}).items() if on and k in caps
        }
        if rc:
            pconf["runtimeConfig"] = rc
        pconf["prevResult"] = cache["result"]
        cmd = ["nsenter", f"--net=/var/run/netns/{podman.node.ns}", "--"]
        cmd.append(os.path.join(podman.bin_dir, plugin["type"]))
        p = subprocess.run(
            cmd, env=env, input=json.dumps(pconf), capture_output=True, text=True, timeout=60
        )
        out.append((plugin["type"], p.returncode, p.stdout + p.stderr))
    return out


def test_chained_tuning_and_portmap_get_our_result_and_check_passes(rt_node, podman, chained):
    before = node_state(rt_node)
    conf = json.load(open(os.path.join(podman.conf_dir, f"{chained}.conflist")))
    c = f"pc{uid()}"
    host_port = 18000 + int(uid(4), 16) % 1000
    try:
        podman.run(c, chained, "-p", f"{host_port}:5001")
        info = podman.inspect(c)
        ip, netns = podman.ip(c, chained), podman.netns(c)
        # the runtime got a result with our address through tuning and portmap (prevResult
        # passed along the chain), and tuning acted on the interface our result names
        assert in_cidr(ip, rt_node.pod_cidr) and ip in ipam_ips(rt_node)
        link = in_netns(netns, "ip", "-o", "link", "show", "eth0").stdout
        assert " mtu 1400 " in link, link
        cache = _libcni_cache(podman, info["Id"])
        res = cache["result"]
        assert any(a["address"].startswith(f"{ip}/") for a in res["ips"]), res
        assert any(i.get("sandbox") for i in res["interfaces"]), res
        # portmap worked from our result: the node's host port reaches the container
        nat = in_ns(rt_node.ns, "iptables-save", "-t", "nat").stdout
        assert f"{ip}:5001" in nat, nat
        srv = subprocess.Popen(
            ["nsenter", f"--net={netns}", "--", sys.executable, NETUTIL, "serve", "5001"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert srv.stdout.readline().strip() == "listening"

            def through_portmap():
                p = in_ns(
                    rt_node.ns,
                    sys.executable,
                    NETUTIL,
                    "send",
                    gateway(rt_node.pod_cidr),
                    str(host_port),
                    "1000",
                    check=False,
                )
                return p.returncode == 0 and p.stdout.split()[-1] == "1000"

            wait_for(through_portmap, 20, interval=0.5, what=f"node :{host_port} → {ip}:5001")
        finally:
            srv.kill()
            srv.wait(timeout=10)

        # CHECK: neither podman 4.3 nor containerd 1.6's CRI ever sends it, so we send it as
        # libcni would, with the result the runtime cached
        assert not agent_lines(rt_node, f"CNI CHECK {info['Id']}"), "podman sent CHECK after all"
        checks = _check_chain(podman, conf, cache, netns)
        assert agent_lines(rt_node, f"CNI CHECK {info['Id']} pod {c} ok")
        assert [t for t, _, _ in checks] == ["ovsctl-cni", "tuning", "portmap"]
        assert checks[0][1] == 0 and checks[1][1] == 0, checks
        # Debian's portmap 1.1.1 checks its ip6tables chain even for an IPv4-only result and
        # fails after its IPv4 check passed (containernetworking/plugins#819, fixed in 1.2)
        _, rc, out = checks[2]
        assert rc == 0 or "could not check ipv6 dnat" in out, checks
    finally:
        podman("stop", "-t", "0", c, check=False)
        podman("rm", "-f", c, check=False)
    assert_back_to(rt_node, before, what="after the chained container is removed")
    assert not flows_mentioning(rt_node, ip)
    nat = in_ns(rt_node.ns, "iptables-save", "-t", "nat").stdout
    assert f"{ip}:5001" not in nat, "portmap left its DNAT rule"
