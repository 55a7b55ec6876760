"""Unit tests for ovsctl.ipam (pure file I/O under tmp_path)."""

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import netaddr
import pytest

from ovsctl.agent.ipam import IPAM, Allocation, IPAMCorrupt, IPAMError, IPAMExhausted

REPO = Path(__file__).resolve().parents[2]


def state_file(d: Path, name: str = "ipam-10.244.0.0_24.json") -> Path:
    return d / name


def test_allocation_within_cidr_skips_reserved(tmp_path):
    ipam = IPAM("10.244.0.0/28", str(tmp_path))
    assert ipam.cidr == netaddr.IPNetwork("10.244.0.0/28")
    assert ipam.gateway == netaddr.IPAddress("10.244.0.1")
    assert ipam.prefixlen == 28
    ips = [ipam.allocate(f"c{i}", "eth0").ip for i in range(13)]
    assert ips[0] == "10.244.0.2"
    assert len(set(ips)) == 13
    assert all(netaddr.IPAddress(ip) in ipam.cidr for ip in ips)
    assert not {"10.244.0.0", "10.244.0.1", "10.244.0.15"} & set(ips)
    assert ipam.usage() == (13, 13)
    with pytest.raises(IPAMExhausted):
        ipam.allocate("one-more", "eth0")


def test_cidr_is_normalised_and_validated(tmp_path):
    ipam = IPAM("10.244.1.7/24", str(tmp_path))
    assert str(ipam.cidr) == "10.244.1.0/24"
    assert (tmp_path / "ipam-10.244.1.0_24.json").exists() is False
    ipam.allocate("c", "eth0")
    assert (tmp_path / "ipam-10.244.1.0_24.json").exists()
    for bad in ("nonsense", "fd00::/127", "10.0.0.0/31", ["10.1.0.0/24", "10.2.0.0/24"]):
        with pytest.raises(IPAMError):
            IPAM(bad, str(tmp_path))


def test_state_dir_created_0700(tmp_path):
    d = tmp_path / "a" / "b"
    IPAM("10.244.0.0/24", str(d)).allocate("c", "eth0")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_idempotent_allocate_and_owner(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    owner = {"namespace": "default", "name": "pod-a"}
    a = ipam.allocate("c1", "eth0", owner)
    assert a == Allocation("10.244.0.2", "c1", "eth0", owner)
    assert ipam.allocate("c1", "eth0") == a
    b = ipam.allocate("c1", "net1")
    assert b.ip != a.ip
    assert ipam.get("c1", "eth0") == a
    assert ipam.by_ip("10.244.0.2") == a
    assert ipam.by_ip("10.244.0.99") is None
    assert ipam.get("nope", "eth0") is None
    assert ipam.usage() == (2, 253)


@pytest.mark.parametrize("cid,ifname", [("", "eth0"), ("c", ""), (None, "eth0")])
def test_rejects_empty_inputs(tmp_path, cid, ifname):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    for op in (ipam.allocate, ipam.release, ipam.get):
        with pytest.raises(IPAMError):
            op(cid, ifname)
    with pytest.raises(IPAMError):
        ipam.allocate("c", "eth0", owner={"x": object()})
    with pytest.raises(IPAMError):
        ipam.by_ip("not-an-ip")


def test_release_idempotent_and_not_reused_immediately(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    a = ipam.allocate("c1", "eth0")
    assert ipam.release("c1", "eth0") == a
    assert ipam.release("c1", "eth0") is None
    assert ipam.get("c1", "eth0") is None
    b = ipam.allocate("c2", "eth0")
    assert b.ip != a.ip
    assert b.ip == "10.244.0.3"


def test_wrap_around_reuses_freed(tmp_path):
    ipam = IPAM("10.244.0.0/29", str(tmp_path))  # hosts .2 .. .6
    ipam.allocate("a", "eth0")  # .2
    ipam.allocate("b", "eth0")  # .3
    ipam.release("a", "eth0")
    got = [ipam.allocate(c, "eth0").ip for c in ("c", "d", "e", "f")]
    assert got == ["10.244.0.4", "10.244.0.5", "10.244.0.6", "10.244.0.2"]


def test_persistence_across_instances(tmp_path):
    first = IPAM("10.244.0.0/24", str(tmp_path))
    a = first.allocate("c1", "eth0", {"namespace": "ns", "name": "p"})
    first.allocate("c2", "eth0")
    first.release("c2", "eth0")  # cursor stays at .3
    second = IPAM("10.244.0.0/24", str(tmp_path))
    assert second.allocations() == [a]
    assert second.get("c1", "eth0").owner == {"namespace": "ns", "name": "p"}
    assert second.allocate("c3", "eth0").ip == "10.244.0.4"  # cursor persisted
    assert first.get("c3", "eth0") is not None  # first re-reads the file


def test_exhaustion_names_cidr(tmp_path):
    ipam = IPAM("10.244.0.0/29", str(tmp_path))
    for i in range(5):
        ipam.allocate(f"c{i}", "eth0")
    assert ipam.usage() == (5, 5)
    with pytest.raises(IPAMExhausted, match="10.244.0.0/29"):
        ipam.allocate("c5", "eth0")
    ipam.release("c2", "eth0")
    assert ipam.allocate("c5", "eth0").ip == "10.244.0.4"


def test_gc_keeps_valid_and_in_use(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    keep = ipam.allocate("keep", "eth0")
    busy = ipam.allocate("busy", "eth0")
    gone = ipam.allocate("gone", "eth0")
    gone2 = ipam.allocate("keep", "net1")  # same container, other ifname: not valid
    freed = ipam.gc({("keep", "eth0"), ("unknown", "eth0")}, {busy.ip, "garbage"})
    assert freed == [gone, gone2]
    assert ipam.allocations() == [keep, busy]
    assert IPAM("10.244.0.0/24", str(tmp_path)).allocations() == [keep, busy]
    assert ipam.gc({("keep", "eth0"), ("busy", "eth0")}, set()) == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        json.dumps({"version": 1, "cidr": "10.244.0.0/24", "cursor": None}),
        json.dumps(
            {
                "version": 1,
                "cidr": "10.244.0.0/24",
                "cursor": None,
                "allocations": [
                    {"ip": "10.244.0.1", "container_id": "c", "ifname": "e", "owner": {}}
                ],
            }
        ),
        json.dumps(
            {
                "version": 1,
                "cidr": "10.244.0.0/24",
                "cursor": None,
                "allocations": [
                    {"ip": "10.244.0.5", "container_id": "c", "ifname": "e", "owner": {}},
                    {"ip": "10.244.0.5", "container_id": "d", "ifname": "e", "owner": {}},
                ],
            }
        ),
    ],
)
def test_corrupt_file_raises_and_is_untouched(tmp_path, content):
    path = state_file(tmp_path)
    path.write_text(content)
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    for op in (
        lambda: ipam.allocate("c", "eth0"),
        lambda: ipam.release("c", "eth0"),
        lambda: ipam.allocations(),
        lambda: ipam.gc(set(), set()),
        lambda: ipam.usage(),
    ):
        with pytest.raises(IPAMCorrupt, match=str(path)):
            op()
    assert path.read_text() == content


def test_file_for_other_cidr_is_corrupt(tmp_path):
    other = IPAM("10.245.0.0/24", str(tmp_path))
    other.allocate("c", "eth0")
    # Put that file where the 10.244.0.0/24 state belongs.
    src = tmp_path / "ipam-10.245.0.0_24.json"
    dst = state_file(tmp_path)
    dst.write_bytes(src.read_bytes())
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    with pytest.raises(IPAMCorrupt, match="10.245.0.0/24"):
        ipam.allocate("c2", "eth0")
    assert dst.read_bytes() == src.read_bytes()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    for i in range(10):
        ipam.allocate(f"c{i}", "eth0")
    ipam.release("c3", "eth0")
    assert sorted(os.listdir(tmp_path)) == ["ipam-10.244.0.0_24.json", "ipam-10.244.0.0_24.lock"]
    data = json.loads(state_file(tmp_path).read_text())
    assert data["cidr"] == "10.244.0.0/24"
    assert data["cursor"] == "10.244.0.11"
    assert len(data["allocations"]) == 9


def test_state_file_one_allocation_per_line_and_read_back(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    text = state_file(tmp_path)
    ipam.allocate("c0", "eth0")
    ipam.release("c0", "eth0")
    assert json.loads(text.read_text())["allocations"] == []  # none: still JSON
    for i in range(3):
        ipam.allocate(f"c{i}", "eth0", {"namespace": "n", "name": f"p{i}", "network": "x"})
    lines = text.read_text().splitlines()
    assert len(lines) == 5 and all('"container_id": "c' in ln for ln in lines[1:4]), lines
    again = IPAM("10.244.0.0/24", str(tmp_path))  # another instance reads it back
    assert again.get("c2", "eth0").owner["name"] == "p2"
    assert again.allocate("c9", "eth0").ip == "10.244.0.6"  # after the cursor it kept


def test_threads_get_distinct_ips(tmp_path):
    ipams = [IPAM("10.244.0.0/24", str(tmp_path)), IPAM("10.244.0.0/24", str(tmp_path))]
    results: list[str] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                results.append(ipams[t % 2].allocate(f"t{t}-{i}", "eth0").ip)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 160 and len(set(results)) == 160
    assert {a.ip for a in IPAM("10.244.0.0/24", str(tmp_path)).allocations()} == set(results)


WORKER = """
import sys
from ovsctl.agent.ipam import IPAM
ipam = IPAM("10.244.0.0/24", sys.argv[1])
for i in range(int(sys.argv[3])):
    print(ipam.allocate(f"{sys.argv[2]}-{i}", "eth0").ip, flush=True)
"""


def test_processes_get_distinct_ips(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), f"p{n}", "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(4)
    ]
    ips: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ips += out.split()
    assert len(ips) == 100 and len(set(ips)) == 100
    persisted = IPAM("10.244.0.0/24", str(tmp_path)).allocations()
    assert {a.ip for a in persisted} == set(ips)
    assert {a.container_id for a in persisted} == {f"p{n}-{i}" for n in range(4) for i in range(25)}


def test_adopt_records_an_address_found_in_use_and_refuses_conflicts(tmp_path):
    ipam = IPAM("10.244.0.0/24", str(tmp_path))
    a = ipam.adopt("10.244.0.7", "c1", "eth0", {"name": "p"})
    assert a.ip == "10.244.0.7" and ipam.adopt("10.244.0.7", "c1", "eth0") == a
    assert IPAM("10.244.0.0/24", str(tmp_path)).get("c1", "eth0") == a  # persisted
    with pytest.raises(IPAMError, match="already held"):
        ipam.adopt("10.244.0.7", "c2", "eth0")
    with pytest.raises(IPAMError, match="not an address"):
        ipam.adopt("10.9.0.7", "c3", "eth0")
    # never handed out again while adopted
    got = {ipam.allocate(f"x{i}", "eth0").ip for i in range(252)}
    assert "10.244.0.7" not in got


def test_a_file_changed_behind_its_back_is_read_again(tmp_path):
    """The parsed state is kept between calls, but an edit by someone else (here: another
    IPAM on the same directory, and an in-place rewrite keeping the inode) is always seen."""
    a, b = IPAM("10.9.0.0/24", str(tmp_path)), IPAM("10.9.0.0/24", str(tmp_path))
    first = a.allocate("c1", "eth0").ip
    second = b.allocate("c2", "eth0").ip  # b wrote the file: a must not hand out `second`
    assert first != second
    third = a.allocate("c3", "eth0").ip
    assert third not in (first, second)
    # an in-place rewrite (same inode) that drops c3 and moves the cursor back
    data = json.loads(Path(a.path).read_text())
    data["allocations"] = [x for x in data["allocations"] if x["container_id"] != "c3"]
    data["cursor"] = first
    with open(a.path, "r+") as fh:
        fh.seek(0)
        fh.write(json.dumps(data))
        fh.truncate()
    assert a.allocate("c4", "eth0").ip == third  # c3's address is free again
    assert {x.container_id for x in a.allocations()} == {"c1", "c2", "c4"}


def test_the_state_is_read_again_whenever_another_process_saved_it(tmp_path):
    """Another process (another IPAM on the same directory) saving many times in a row, with
    entries of the same length, is never missed (a cache keyed by the file's identity alone
    could see a reused inode with the same size and, on coarse clocks, the same mtime)."""
    a, b = IPAM("10.9.0.0/24", str(tmp_path)), IPAM("10.9.0.0/24", str(tmp_path))
    held = a.allocate("c0", "eth0").ip
    for i in range(1, 60):
        if i > 1:
            b.release(f"c{i - 1}", "eth0")
        ip = b.allocate(f"c{i}", "eth0").ip
        mine = a.allocate("c0", "eth0").ip  # idempotent: a re-reads what b wrote
        assert mine == held and ip != held
        assert {x.container_id for x in a.allocations()} == {"c0", f"c{i}"}


def test_a_corrupt_file_does_not_leak_what_the_cache_holds(tmp_path):
    a = IPAM("10.9.0.0/24", str(tmp_path))
    a.allocate("c1", "eth0")
    Path(a.path).write_text('{"version": 99}')
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(IPAMCorrupt):
            a.allocate("c2", "eth0")
    assert len(os.listdir("/proc/self/fd")) <= before


# ---- requested addresses and GC per network ------------------------------------------------


def test_reserve_gives_the_requested_address_idempotently(tmp_path):
    from ovsctl.agent.ipam import IPAMInUse, IPAMUnavailable

    ipam = IPAM("10.9.0.0/24", str(tmp_path))
    a = ipam.reserve("10.9.0.77", "c1", "eth0", {"network": "n"})
    assert a.ip == "10.9.0.77" and ipam.reserve("10.9.0.77", "c1", "eth0").ip == "10.9.0.77"
    with pytest.raises(IPAMInUse, match="10.9.0.77.*c1/eth0"):
        ipam.reserve("10.9.0.77", "c2", "eth0")
    for bad, words in (
        ("10.8.0.5", "outside"),
        ("10.9.0.0", "reserved"),
        ("10.9.0.1", "gateway"),
        ("10.9.0.255", "reserved"),
        ("nope", "not an IPv4"),
    ):
        with pytest.raises(IPAMUnavailable, match=words):
            ipam.reserve(bad, "c3", "eth0")
    with pytest.raises(IPAMError, match="already holds 10.9.0.77"):
        ipam.reserve("10.9.0.78", "c1", "eth0")
    assert [x.ip for x in ipam.allocations()] == ["10.9.0.77"]
    # the allocator skips a reserved address
    assert ipam.allocate("c4", "eth0").ip != "10.9.0.77"


def test_gc_of_one_network_frees_only_that_networks_allocations(tmp_path):
    ipam = IPAM("10.9.0.0/24", str(tmp_path))
    a = ipam.allocate("ca", "eth0", {"network": "a"})
    b = ipam.allocate("cb", "eth0", {"network": "b"})
    legacy = ipam.allocate("cl", "eth0", {})
    assert [x.ip for x in ipam.gc(set(), set(), network="a")] == [a.ip]
    assert {x.ip for x in ipam.allocations()} == {b.ip, legacy.ip}


# ---- dual-stack: one address per family, in one record --------------------------------------

DUAL = ("10.9.0.0/24", "fd00:10:244:1::/64")


def test_dual_stack_gives_one_address_per_family_ipv4_first(tmp_path):
    ipam = IPAM(tuple(reversed(DUAL)), str(tmp_path))  # any order: IPv4 first
    assert ipam.cidrs == DUAL and str(ipam.cidr) == DUAL[0]
    a = ipam.allocate("c1", "eth0", {"network": "n"})
    assert a.ips == ("10.9.0.2", "fd00:10:244:1::2") and a.ip == "10.9.0.2"
    assert ipam.allocate("c1", "eth0") == a  # idempotent
    b = ipam.allocate("c2", "eth0")
    assert b.ips == ("10.9.0.3", "fd00:10:244:1::3")
    assert ipam.by_ip("fd00:10:244:1::3") == b and ipam.by_ip("10.9.0.3") == b
    assert ipam.usage_by_cidr() == [(DUAL[0], 2, 253), (DUAL[1], 2, 2**64 - 3)]
    assert ipam.usage() == (2, 253)
    # one record per attachment holds both, in its own file (version 2)
    path = tmp_path / "ipam-10.9.0.0_24+fd00:10:244:1::_64.json"
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["cidrs"] == list(DUAL)
    assert data["cursors"] == ["10.9.0.3", "fd00:10:244:1::3"]
    assert data["allocations"][0] == {
        "ips": ["10.9.0.2", "fd00:10:244:1::2"],
        "container_id": "c1",
        "ifname": "eth0",
        "owner": {"network": "n"},
    }
    # persisted, cursors too; release frees both
    again = IPAM(DUAL, str(tmp_path))
    assert again.allocations() == [a, b]
    assert ipam.release("c1", "eth0") == a
    assert again.allocate("c3", "eth0").ips == ("10.9.0.4", "fd00:10:244:1::4")
    assert [x.container_id for x in again.allocations()] == ["c2", "c3"]


def test_dual_stack_requested_addresses_per_family(tmp_path):
    from ovsctl.agent.ipam import IPAMInUse, IPAMUnavailable

    ipam = IPAM(DUAL, str(tmp_path))
    both = ipam.reserve(["fd00:10:244:1::50", "10.9.0.50"], "c1", "eth0")
    assert both.ips == ("10.9.0.50", "fd00:10:244:1::50")
    assert ipam.reserve("fd00:10:244:1::50", "c1", "eth0") == both  # a subset: idempotent
    # one family asked for, the other allocated
    v6 = ipam.reserve("fd00:10:244:1:0:0:0:60", "c2", "eth0")
    assert v6.ips == ("10.9.0.2", "fd00:10:244:1::60")
    for bad, err, words in (
        (["10.9.0.50"], IPAMInUse, "10.9.0.50 is held by c1/eth0"),
        (["10.9.0.7", "fd00:10:244:1::60"], IPAMInUse, "fd00:10:244:1::60 is held by c2/eth0"),
        (["fd00:10:245::5"], IPAMUnavailable, "outside this node's pod CIDR fd00:10:244:1::/64"),
        (["fd00:10:244:1::1"], IPAMUnavailable, "reserved.*gateway"),
        (["fd00:10:244:1::"], IPAMUnavailable, "reserved.*not a host address"),
        (["10.9.0.7", "10.9.0.8"], IPAMUnavailable, "one per family"),
        (["nope"], IPAMUnavailable, "'nope' is not an address"),
    ):
        with pytest.raises(err, match=words):
            ipam.reserve(bad, "c3", "eth0")
    with pytest.raises(IPAMError, match="c1/eth0 already holds 10.9.0.50, fd00:10:244:1::50"):
        ipam.reserve("fd00:10:244:1::51", "c1", "eth0")
    # nothing was allocated by the refused requests
    assert [a.container_id for a in ipam.allocations()] == ["c2", "c1"]
    assert ipam.allocate("c3", "eth0").ips == ("10.9.0.3", "fd00:10:244:1::2")


def test_an_ipv4_only_node_refuses_an_ipv6_request_and_vice_versa(tmp_path):
    from ovsctl.agent.ipam import IPAMUnavailable

    v4 = IPAM("10.9.0.0/24", str(tmp_path / "4"))
    with pytest.raises(IPAMUnavailable, match="not an IPv4 address of this node's pod CIDRs"):
        v4.reserve("fd00::5", "c", "eth0")
    v6 = IPAM("fd00:10:244:1::/64", str(tmp_path / "6"))
    with pytest.raises(IPAMUnavailable, match="not an IPv6 address"):
        v6.reserve("10.9.0.5", "c", "eth0")
    a = v6.allocate("c", "eth0")
    assert a.ips == ("fd00:10:244:1::2",) and a.ip == "fd00:10:244:1::2"
    data = json.loads((tmp_path / "6" / "ipam-fd00:10:244:1::_64.json").read_text())
    assert data["version"] == 1 and data["cidr"] == "fd00:10:244:1::/64"
    assert data["allocations"][0]["ip"] == "fd00:10:244:1::2"


def test_exhaustion_of_one_family_allocates_nothing(tmp_path):
    ipam = IPAM(("10.9.0.0/24", "fd00::/126"), str(tmp_path))  # IPv6: only fd00::2
    first = ipam.allocate("c1", "eth0")
    assert first.ips == ("10.9.0.2", "fd00::2")
    with pytest.raises(IPAMExhausted, match="fd00::/126"):
        ipam.allocate("c2", "eth0")
    with pytest.raises(IPAMExhausted, match="fd00::/126"):
        ipam.reserve("10.9.0.9", "c2", "eth0")
    assert ipam.allocations() == [first]
    assert ipam.usage_by_cidr() == [("10.9.0.0/24", 1, 253), ("fd00::/126", 1, 1)]
    ipam.release("c1", "eth0")
    assert ipam.allocate("c2", "eth0").ips == ("10.9.0.3", "fd00::2")


def test_dual_stack_gc_and_adopt_after_a_restart(tmp_path):
    ipam = IPAM(DUAL, str(tmp_path))
    keep = ipam.allocate("keep", "eth0", {"network": "n"})
    busy = ipam.allocate("busy", "eth0", {"network": "n"})
    gone = ipam.allocate("gone", "eth0", {"network": "n"})
    # an address of either family in use keeps the record (both addresses)
    assert ipam.gc({("keep", "eth0")}, {busy.ips[1]}, network="n") == [gone]
    assert IPAM(DUAL, str(tmp_path)).allocations() == [keep, busy]
    # the state lost: live ports' addresses are adopted back, both families in one record
    os.unlink(ipam.path)
    fresh = IPAM(DUAL, str(tmp_path))
    got = fresh.adopt(list(reversed(keep.ips)), "keep", "eth0", {"name": "k"})
    assert got.ips == keep.ips
    assert fresh.adopt(keep.ips, "keep", "eth0") == got  # idempotent
    with pytest.raises(IPAMError, match="already held by keep/eth0"):
        fresh.adopt([keep.ips[1]], "other", "eth0")
    with pytest.raises(IPAMError, match="at most one address per family"):
        fresh.adopt(["10.9.0.40", "10.9.0.41"], "x", "eth0")
    # a record with one family only (adopted from an IPv4-only agent) is kept as it is
    old = fresh.adopt("10.9.0.40", "old", "eth0")
    assert old.ips == ("10.9.0.40",)
    assert IPAM(DUAL, str(tmp_path)).get("old", "eth0") == old
    assert fresh.allocate("new", "eth0").ips[1] not in keep.ips


@pytest.mark.parametrize(
    "allocs",
    [
        [{"ips": ["10.9.0.5", "10.9.0.6"], "container_id": "c", "ifname": "e", "owner": {}}],
        [{"ips": ["fd00:10:244:1::1"], "container_id": "c", "ifname": "e", "owner": {}}],
        [{"ips": [], "container_id": "c", "ifname": "e", "owner": {}}],
        [{"ip": "10.9.0.5", "container_id": "c", "ifname": "e", "owner": {}}],
        [
            {"ips": ["fd00:10:244:1::5"], "container_id": "c", "ifname": "e", "owner": {}},
            {"ips": ["fd00:10:244:1::5"], "container_id": "d", "ifname": "e", "owner": {}},
        ],
    ],
)
def test_a_corrupt_dual_stack_file_raises_and_is_untouched(tmp_path, allocs):
    ipam = IPAM(DUAL, str(tmp_path))
    content = json.dumps(
        {"version": 2, "cidrs": list(DUAL), "cursors": [None, None], "allocations": allocs}
    )
    Path(ipam.path).write_text(content)
    with pytest.raises(IPAMCorrupt, match="left untouched"):
        ipam.allocate("x", "eth0")
    assert Path(ipam.path).read_text() == content
