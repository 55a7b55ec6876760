"""ovsctl's own LoadBalancer pool: the pool's syntax, the allocation (deterministic, keeps what
the status has, frees what goes), the writer, and the election of each address's holder
(every node computes the same, minimal movement, Local eligibility)."""

from __future__ import annotations

import pytest

from ovsctl.agent.reconcile import lbpool
from ovsctl.agent.reconcile.lbpool import LBService, PoolError, allocate, parse_pool
from ovsctl.config import AgentConfig, ConfigError, from_mapping

POOL = parse_pool(["172.30.0.192/28", "fd00:172:30::c0/124"])


def svc(key, ingress=(), versions=(4,), cls=lbpool.LB_CLASS, type_="LoadBalancer", ext=(),
        created=""):  # fmt: skip
    return LBService(key, type_, cls, tuple(ingress), tuple(versions), tuple(ext), created)


# -- the pool ---------------------------------------------------------------------------------


def test_pool_ranges_and_cidrs_of_both_families_sorted():
    pool = parse_pool(["fd00::10-fd00::12", "10.0.0.5-10.0.0.6", "10.0.0.0/30"])
    assert [str(r) for r in pool] == [
        "10.0.0.0-10.0.0.3",
        "10.0.0.5-10.0.0.6",
        "fd00::10-fd00::12",
    ]
    assert lbpool.in_pool(pool, "10.0.0.6") and not lbpool.in_pool(pool, "10.0.0.4")
    assert lbpool.in_pool(pool, "fd00::11") and not lbpool.in_pool(pool, "bogus")


@pytest.mark.parametrize(
    "entry, why",
    [
        ("10.0.0.9-10.0.0.1", "ends before it starts"),
        ("10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
        ("10.0.0.1/24", "host bits set"),
        ("10.0.0.1", "neither a range A-B nor a CIDR"),
        ("nonsense", "neither a range A-B nor a CIDR"),
        ("10.0.0.1-10.0.0.x", "neither a range A-B nor a CIDR"),
    ],
)
def test_bad_pool_entries_are_named(entry, why):
    with pytest.raises(PoolError, match=why) as e:
        parse_pool([entry])
    assert entry in str(e.value) and "lb_pool" in str(e.value)


def test_overlapping_entries_name_both():
    with pytest.raises(PoolError, match=r"'10.0.0.4-10.0.0.9' overlaps '10.0.0.0/29'"):
        parse_pool(["10.0.0.0/29", "10.0.0.4-10.0.0.9"])


def test_config_key_lb_pool_from_file_and_flags():
    cfg = from_mapping({"lb_pool": ["172.30.0.192/28", "fd00:172:30::c0/124"], "pod_cidr":
                        "10.244.0.0/24"}).validate()  # fmt: skip
    assert cfg.lb_pool == ["172.30.0.192/28", "fd00:172:30::c0/124"]
    flags = from_mapping({"lb_pool": "172.30.0.192-172.30.0.200, fd00::1-fd00::2"}, AgentConfig())
    assert flags.lb_pool == ["172.30.0.192-172.30.0.200", "fd00::1-fd00::2"]
    assert AgentConfig(pod_cidr="10.244.0.0/24").validate().lb_pool == []
    with pytest.raises(ConfigError, match=r"lb_pool: '172.30.0.300/28' is neither"):
        from_mapping({"lb_pool": ["172.30.0.300/28"], "pod_cidr": "10.244.0.0/24"}).validate()
    with pytest.raises(ConfigError, match="lb_pool: expected list"):
        from_mapping({"lb_pool": 5})


# -- the allocation -------------------------------------------------------------------------


def test_allocation_is_deterministic_in_name_order_lowest_free_first():
    svcs = [svc("b/x"), svc("a/y"), svc("a/x", versions=(6, 4))]
    want = {
        "a/x": ("fd00:172:30::c0", "172.30.0.192"),
        "a/y": ("172.30.0.193",),
        "b/x": ("172.30.0.194",),
    }
    assert allocate(svcs, POOL) == want
    assert allocate(list(reversed(svcs)), POOL) == want  # the order of the input: no matter


def test_allocation_keeps_status_addresses_and_skips_used_ones():
    svcs = [
        svc("a/kept", ingress=["172.30.0.195"]),
        svc("a/new"),
        svc("x/other", ingress=["172.30.0.192"], cls=None),  # someone else's, still used
        svc("x/ext", type_="ClusterIP", cls=None, ext=["172.30.0.193"]),  # an externalIP
    ]
    notes = []
    got = allocate(svcs, POOL, notes)
    # externalIPs inside the pool reserve nothing (noted, for the log)
    assert got == {"a/kept": ("172.30.0.195",), "a/new": ("172.30.0.193",)}
    assert notes == [("x/ext", "spec.externalIPs 172.30.0.193 inside lb_pool reserve nothing")]


def test_one_service_listing_the_whole_pool_in_external_ips_starves_nobody():
    small = parse_pool(["172.30.0.192/31"])
    hog = svc("a/hog", type_="ClusterIP", cls=None, ext=["172.30.0.192", "172.30.0.193"])
    got = allocate([hog, svc("b/1"), svc("b/2"), svc("b/3")], small, notes := [])
    assert got == {"b/1": ("172.30.0.192",), "b/2": ("172.30.0.193",), "b/3": ()}
    assert ("b/3", "lb_pool has no free IPv4 address left") in notes


def test_only_pool_addresses_are_kept_and_the_first_claimant_keeps_a_shared_one():
    svcs = [
        # the subnet router's address in a status: not ours to keep (nor to announce)
        svc("a/router", ingress=["10.0.0.1", "172.30.0.199"]),
        # two Services claim .192: the older keeps it, whatever the names
        svc("z/old", ingress=["172.30.0.192"], created="2026-01-01T00:00:00Z"),
        svc("b/young", ingress=["172.30.0.192"], created="2026-02-01T00:00:00Z"),
    ]
    got = allocate(svcs, POOL, notes := [])
    assert got == {"a/router": ("172.30.0.199",), "z/old": ("172.30.0.192",),
                   "b/young": ("172.30.0.193",)}  # fmt: skip
    assert ("a/router", "status.loadBalancer.ingress 10.0.0.1 is outside lb_pool: dropped") in notes
    assert ("b/young", "status.loadBalancer.ingress 172.30.0.192 is held by an older Service: "
                       "reallocated") in notes  # fmt: skip
    patches = lbpool.status_patches(svcs, POOL)
    assert patches == {"a/router": ("172.30.0.199",), "b/young": ("172.30.0.193",)}


def test_allocation_only_the_class_and_type_loadbalancer_and_families_the_pool_has():
    v4only = parse_pool(["172.30.0.192/31"])
    svcs = [svc("a/dual", versions=(4, 6)), svc("a/nodeport", type_="NodePort"),
            svc("a/cloud", cls="example.com/lb"), svc("a/late"), svc("a/later")]  # fmt: skip
    got = allocate(svcs, v4only)
    assert got == {"a/dual": ("172.30.0.192",), "a/late": ("172.30.0.193",), "a/later": ()}


def test_deleting_a_service_frees_its_address_for_the_next():
    svcs = [svc("a/one", ingress=["172.30.0.192"]), svc("a/two", ingress=["172.30.0.193"])]
    assert allocate([*svcs[1:], svc("a/three")], POOL)["a/three"] == ("172.30.0.192",)


def test_status_patches_fill_missing_and_clear_services_gone_from_the_class():
    svcs = [
        svc("a/done", ingress=["172.30.0.192"]),
        svc("a/new"),
        svc("a/was", ingress=["172.30.0.200"], type_="ClusterIP", cls=None),  # type gone
        # type gone: only the pool's address goes back; the other is not ours to clear
        svc("a/mixed", ingress=["203.0.113.7", "172.30.0.201"], type_="NodePort", cls=None),
        svc("a/cloud", ingress=["203.0.113.9"], cls="example.com/lb"),  # not ours: untouched
        # MetalLB or a cloud with a pool overlapping ours: its status is its own (no war)
        svc("a/metallb", ingress=["172.30.0.202"], cls="metallb.io/lb"),
        svc("a/noclass", ingress=["172.30.0.203"], cls=None),
    ]
    assert lbpool.status_patches(svcs, POOL) == {
        "a/new": ("172.30.0.193",),
        "a/was": (),
        "a/mixed": ("203.0.113.7",),
    }
    # and the other allocators' pool addresses stay used
    assert allocate([*svcs, svc("b/more"), svc("b/most")], POOL)["b/most"] == ("172.30.0.195",)


def test_lb_service_reads_raw_objects_and_tolerates_garbage():
    body = {
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": lbpool.LB_CLASS,
                 "ipFamilies": ["IPv6", "IPv4"], "externalIPs": ["192.0.2.1", "junk"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "FD00:172:30::C1"}, {"hostname": "h"},
                                                {"ip": "not-an-ip"}]}},
    }  # fmt: skip
    s = lbpool.lb_service(body)
    assert s == LBService("ns/web", "LoadBalancer", lbpool.LB_CLASS, ("fd00:172:30::c1",),
                          (6, 4), ("192.0.2.1",))  # fmt: skip
    assert s.ours
    bad = lbpool.lb_service({"metadata": {"name": "x"}, "spec": "nonsense", "status": 3})
    assert bad.key == "default/x" and bad.type == "ClusterIP" and bad.versions == (4,)
    v6 = lbpool.lb_service({"metadata": {"name": "y"}, "spec": {"clusterIP": "fd00::1"}})
    assert v6.versions == (6,)


def test_writer_is_the_lowest_named_ready_node():
    assert lbpool.writer({"node3": {4}, "node1": {4}, "node2": {4}}) == "node1"
    assert lbpool.writer({}) is None


# -- the election -----------------------------------------------------------------------------

NODES = {f"node{i}": {4, 6} for i in range(1, 6)}
ADDRS = [f"172.30.0.{i}" for i in range(192, 208)] + [f"fd00:172:30::{i:x}" for i in range(16)]


def test_every_node_computes_the_same_holder_whatever_the_order():
    a = lbpool.holders([(x, None) for x in ADDRS], NODES)
    b = lbpool.holders([(x, None) for x in reversed(ADDRS)], dict(reversed(NODES.items())))
    assert a == b
    assert set(a.values()) <= set(NODES) and None not in a.values()
    assert len(set(a.values())) >= 4  # 32 addresses spread over the 5 nodes


def test_a_node_leaving_moves_only_its_addresses():
    before = lbpool.holders([(x, None) for x in ADDRS], NODES)
    gone = before[ADDRS[0]]
    after = lbpool.holders([(x, None) for x in ADDRS], {n: v for n, v in NODES.items()
                                                         if n != gone})  # fmt: skip
    for addr in ADDRS:
        if before[addr] == gone:
            assert after[addr] not in (gone, None)
        else:
            assert after[addr] == before[addr], addr


def test_local_eligibility_only_nodes_with_a_ready_endpoint():
    got = lbpool.holders([(x, {"node2", "node4", "elsewhere"}) for x in ADDRS], NODES)
    assert set(got.values()) == {"node2", "node4"}
    assert lbpool.holders([("172.30.0.192", set())], NODES) == {"172.30.0.192": None}


def test_only_a_node_of_the_family_holds_an_address():
    nodes = {"v4only": {4}, "v6only": {6}}
    got = lbpool.holders([("172.30.0.192", None), ("fd00:172:30::c0", None)], nodes)
    assert got == {"172.30.0.192": "v4only", "fd00:172:30::c0": "v6only"}
