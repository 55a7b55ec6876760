"""The lab's ClusterIP allocation (ovsctl/lab/clusterip.py), as the API server allocates them:
families from ipFamilyPolicy / ipFamilies / clusterIPs and the lab's cluster CIDRs, IPv6 from
fd00:10:96::/112, and every field the API server fills in. Each result is parsed back by the
agent's own parser (flows/services.py), which must accept it."""

import pytest

from flows.family import V4, V6
from flows.services import parse_service
from ovsctl.lab.base import LabError
from ovsctl.lab.clusterip import allocate, cluster_families

DUAL = cluster_families("10.244.0.0/16,fd00:10:244::/56")
SIX = cluster_families("fd00:10:244::/56")
FOUR = cluster_families("10.244.0.0/16")
REF = "Service shop/web"


def alloc(cluster, used=(), mine=None, **spec):
    spec = {"ports": [{"port": 80}], **spec}
    allocate(spec, mine or {}, set(used), cluster, REF)
    svc = parse_service({"metadata": {"namespace": "shop", "name": "web"}, "spec": spec})
    assert svc.cluster_ips == tuple(spec["clusterIPs"]) or spec["clusterIPs"] == ["None"]
    return spec


def fields(spec):
    return (spec["clusterIP"], spec["clusterIPs"], spec["ipFamilies"], spec["ipFamilyPolicy"])


def test_cluster_families_primary_first():
    assert DUAL == (V4, V6) and SIX == (V6,) and FOUR == (V4,)
    assert cluster_families("fd00:10:244::/56,10.244.0.0/16") == (V6, V4)


def test_an_ipv4_lab_fills_the_fields_as_the_api_server_does():
    assert fields(alloc(FOUR)) == ("10.96.0.1", ["10.96.0.1"], ["IPv4"], "SingleStack")
    given = alloc(FOUR, clusterIP="10.96.0.40")
    assert fields(given) == ("10.96.0.40", ["10.96.0.40"], ["IPv4"], "SingleStack")
    assert alloc(FOUR, used={"10.96.0.1"})["clusterIP"] == "10.96.0.2"
    assert alloc(FOUR, ipFamilyPolicy="PreferDualStack")["clusterIPs"] == ["10.96.0.1"]


def test_a_dual_stack_lab():
    # unset / SingleStack: the primary family only
    assert fields(alloc(DUAL)) == ("10.96.0.1", ["10.96.0.1"], ["IPv4"], "SingleStack")
    assert fields(alloc(DUAL, ipFamilies=["IPv6"])) == (
        "fd00:10:96::1",
        ["fd00:10:96::1"],
        ["IPv6"],
        "SingleStack",
    )
    both = ("10.96.0.1", ["10.96.0.1", "fd00:10:96::1"], ["IPv4", "IPv6"])
    assert fields(alloc(DUAL, ipFamilyPolicy="PreferDualStack")) == (*both, "PreferDualStack")
    assert fields(alloc(DUAL, ipFamilyPolicy="RequireDualStack")) == (*both, "RequireDualStack")
    six_first = alloc(DUAL, ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6", "IPv4"])
    assert six_first["clusterIPs"] == ["fd00:10:96::1", "10.96.0.1"]
    assert six_first["clusterIP"] == "fd00:10:96::1"
    # two families without a policy: RequireDualStack, as the API server infers it
    assert alloc(DUAL, ipFamilies=["IPv4", "IPv6"])["ipFamilyPolicy"] == "RequireDualStack"
    # a given address keeps its place; the other family is allocated
    part = alloc(DUAL, clusterIP="10.96.0.40", ipFamilyPolicy="PreferDualStack")
    assert part["clusterIPs"] == ["10.96.0.40", "fd00:10:96::1"]


def test_an_ipv6_only_lab():
    assert fields(alloc(SIX)) == ("fd00:10:96::1", ["fd00:10:96::1"], ["IPv6"], "SingleStack")
    assert alloc(SIX, ipFamilyPolicy="PreferDualStack")["clusterIPs"] == ["fd00:10:96::1"]
    # PreferDualStack asking for both on a single-stack lab gets the lab's family
    pref = alloc(SIX, ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"])
    assert pref["ipFamilies"] == ["IPv6"]


def test_re_applied_services_keep_their_addresses_and_taken_ones_are_skipped():
    mine = {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00:10:96::7"]}
    again = alloc(DUAL, mine=mine, ipFamilyPolicy="RequireDualStack")
    assert again["clusterIPs"] == ["10.96.0.7", "fd00:10:96::7"]
    other = alloc(DUAL, used={"fd00:10:96::1", "10.96.0.1"}, ipFamilyPolicy="RequireDualStack")
    assert other["clusterIPs"] == ["10.96.0.2", "fd00:10:96::2"]


def test_headless_gets_families_but_no_address():
    spec = alloc(DUAL, clusterIP="None", ipFamilyPolicy="PreferDualStack")
    assert spec["clusterIP"] == "None" and spec["clusterIPs"] == ["None"]
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]


def test_changed_says_whether_anything_was_filled_in():
    spec = {"ports": [{"port": 80}]}
    assert allocate(spec, {}, set(), FOUR, REF) is True
    assert allocate(spec, {}, set(), FOUR, REF) is False


@pytest.mark.parametrize(
    "cluster,spec,msg",
    [
        (FOUR, {"ipFamilyPolicy": "RequireDualStack"}, "RequireDualStack needs a dual-stack lab"),
        (SIX, {"ipFamilyPolicy": "RequireDualStack"}, "RequireDualStack needs a dual-stack lab"),
        (FOUR, {"ipFamilies": ["IPv6"]}, "IPv6 is not a family of this lab"),
        (DUAL, {"ipFamilyPolicy": "Dual"}, "spec.ipFamilyPolicy must be one of"),
        (DUAL, {"ipFamilies": ["IPv4", "IPv4"]}, "lists IPv4 twice"),
        (DUAL, {"ipFamilies": ["IPv7"]}, r"spec.ipFamilies\[0\]"),
        (DUAL, {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "SingleStack"}, "SingleStack"),
        (DUAL, {"clusterIP": "10.96.0.999"}, "spec.clusterIP '10.96.0.999'"),
        (DUAL, {"clusterIPs": ["10.96.0.4", "10.96.0.5"]}, "one address per family"),
        (DUAL, {"clusterIP": "fd00:10:96::4", "ipFamilies": ["IPv4"]}, r"spec.clusterIPs\[0\]"),
    ],
)
def test_what_the_api_server_refuses_is_an_error_naming_the_service_and_field(cluster, spec, msg):
    with pytest.raises(LabError, match=rf"^Service shop/web: .*{msg}"):
        allocate({"ports": [{"port": 80}], **spec}, {}, set(), cluster, REF)
