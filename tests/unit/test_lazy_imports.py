"""What an agent start imports: the Kubernetes client library only when the API source (or its
status writer) is used, and then without the package's import-everything ``__init__``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows import tables


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return set(out)


def test_agent_with_a_yaml_source_imports_no_kubernetes_client():
    mods = _modules_after(
        "import ovsctl.cli, ovsctl.config, ovsctl.agent.agent, ovsctl.k8s.source, "
        "ovsctl.k8s.apisource"
    )
    assert "ovsctl.agent.agent" in mods and "ovsctl.k8s.apisource" in mods
    heavy = {m for m in mods if m.split(".")[0] in ("kubernetes", "pydantic", "google")}
    assert heavy == set()


def test_the_api_client_imports_the_client_alone_and_the_rest_still_imports():
    code = (
        "from ovsctl.k8s.apiclient import make_api_client\n"
        "c = make_api_client(host='http://127.0.0.1:1/', token='t')\n"
        "assert c.configuration.host == 'http://127.0.0.1:1'\n"
        "c.close()\n"
    )
    mods = _modules_after(code)
    assert "kubernetes.client" in mods
    # the package's __init__ did not run: its eager imports are absent
    assert not {"kubernetes.config", "kubernetes.dynamic", "kubernetes.leaderelection"} & mods
    mods = _modules_after(code + "from kubernetes.config import incluster_config\n")
    assert "kubernetes.config.incluster_config" in mods


def test_next_table_is_the_following_pipeline_table():
    names = [t.name for t in tables.PIPELINE if not t.side]
    for a, b in zip(names, names[1:], strict=False):
        assert tables.next_table(a).name == b
    with pytest.raises(tables.UnknownTable, match="last one"):
        tables.next_table(tables.PIPELINE[-1].name)
    with pytest.raises(tables.UnknownTable, match="unknown table"):
        tables.next_table("NoSuchTable")


def test_match_addresses_canonical_and_errors_name_their_field_every_time():
    from flows.canon import FlowError, _canonical_ipv4, _canonical_ipv6

    for _ in range(2):  # the second answer comes from the remembered parse
        assert _canonical_ipv4("nw_src", "10.1.2.3/32") == "10.1.2.3"
        assert _canonical_ipv4("nw_dst", "10.1.2.3/8") == "10.0.0.0/8"
        assert _canonical_ipv4("nw_dst", "0.0.0.0/0") is None
        assert _canonical_ipv6("ipv6_src", "FD00::0:1/128") == "fd00::1"
        assert _canonical_ipv6("ipv6_src", "fd00::1/64") == "fd00::/64"
        for f in ("nw_src", "nw_dst"):
            with pytest.raises(FlowError, match=f"{f}='fd00::1': not an IPv4"):
                _canonical_ipv4(f, "fd00::1")
            with pytest.raises(FlowError, match=f"{f}='10.0.0.300': not an IPv4"):
                _canonical_ipv4(f, "10.0.0.300")
        with pytest.raises(FlowError, match="ipv6_dst='10.0.0.1': not an IPv6"):
            _canonical_ipv6("ipv6_dst", "10.0.0.1")
