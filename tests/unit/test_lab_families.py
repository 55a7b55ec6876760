"""The lab's cluster CIDRs and node prefixes per IP family (`ovsctl lab up --cluster-cidr
10.244.0.0/16,fd00:10:244::/56 --node-prefix 24,64`): parsing and the errors, no root."""

from __future__ import annotations

import pytest

from ovsctl.lab.base import LabError, parse_cidrs, parse_prefixes
from ovsctl.lab.nodes import LabNodes


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.244.0.0/16", ["10.244.0.0/16"]),
        ("10.244.0.0/16,fd00:10:244::/56", ["10.244.0.0/16", "fd00:10:244::/56"]),
        ("fd00:10:244::/56, 10.244.0.0/16", ["10.244.0.0/16", "fd00:10:244::/56"]),  # IPv4 first
        ("FD00:10:244:0::/56", ["fd00:10:244::/56"]),
    ],
)
def test_parse_cidrs(text, want):
    assert parse_cidrs(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.244.0.0/16,10.245.0.0/16", "at most one CIDR per IP family"),
        ("fd00::/56,fd01::/56", "at most one CIDR per IP family"),
        ("10.244.0.1/16", "host bits set (the network is 10.244.0.0/16)"),
        ("fd00:10:244::1/56", "host bits set (the network is fd00:10:244::/56)"),
        ("10.244.0.0", "not a CIDR (ADDRESS/PREFIX)"),
        ("nonsense", "'nonsense' is not a CIDR"),
        ("10.244.0.0/16,", "'' is not a CIDR"),
    ],
)
def test_parse_cidrs_errors_name_the_flag_and_the_value(text, message):
    with pytest.raises(LabError, match="--cluster-cidr") as e:
        parse_cidrs(text)
    assert message in str(e.value)


def test_parse_prefixes():
    dual = ["10.244.0.0/16", "fd00:10:244::/56"]
    assert parse_prefixes(None, dual) == [24, 64]
    assert parse_prefixes("24,64", dual) == [24, 64]
    assert parse_prefixes("26", dual) == [26, 64]  # the first; the other its family's default
    assert parse_prefixes(29, ["10.244.0.0/16"]) == [29]  # `lab up(node_prefix=29)` as before
    assert parse_prefixes([25, 120], dual) == [25, 120]
    assert parse_prefixes(None, ["fd00:10:244::/56"]) == [64]
    for bad, message in (
        ("24,64,64", "3 sizes for 2 cluster CIDR(s)"),
        ("x", "not a number or a list like 24,64"),
        ("8,64", "/8 for 10.244.0.0/16 must be between /16 and /30"),
        ("24,127", "/127 for fd00:10:244::/56 must be between /56 and /126"),
    ):
        with pytest.raises(LabError, match="--node-prefix") as e:
            parse_prefixes(bad, dual)
        assert message in str(e.value), bad


def test_families_of_a_lab():
    assert LabNodes.families({"cluster_cidr": "10.244.0.0/16"}) == [4]
    assert LabNodes.families({"cluster_cidr": "10.244.0.0/16,fd00:10:244::/56"}) == [4, 6]
    assert LabNodes.families({"cluster_cidr": "fd00:10:244::/56"}) == [6]
