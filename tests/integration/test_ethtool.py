"""TX checksum offload off through pyroute2's ethtool (agent/host/netlink.py), as `ethtool -k`
sees it: on a veth pair in a fresh network namespace."""

import errno
import os
import subprocess
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    ns = f"ovsctl-eth-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def tx_checksumming(ns: str, ifname: str) -> str:
    for line in sh("ip", "netns", "exec", ns, "ethtool", "-k", ifname).splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].split()[0]
    raise AssertionError("ethtool -k printed no tx-checksumming line")


def in_ns(ns: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_tx_checksum_off_on_a_veth(netns):
    assert tx_checksumming(netns, "veth-a") == "on"  # a veth starts with it on
    p = in_ns(netns, "from ovsctl.agent.host.netlink import tx_checksum_off as f; f('veth-a')")
    assert p.returncode == 0, p.stderr
    assert tx_checksumming(netns, "veth-a") == "off"
    assert tx_checksumming(netns, "veth-b") == "on"  # only the one asked for


def test_tx_checksum_off_without_the_interface_is_an_oserror(netns):
    p = in_ns(
        netns,
        "from ovsctl.agent.host.netlink import tx_checksum_off as f\n"
        "try:\n    f('nope0')\nexcept OSError as e:\n    print(e.errno)\n",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(errno.ENODEV)
