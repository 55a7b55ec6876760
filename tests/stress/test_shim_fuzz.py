"""Fuzz the CNI shim, run as kubelet runs it (the executable, CNI_* environment, config on
stdin), against a real agent: 1,000 random or mutated network configs (JSON or not) and CNI_*
environments (missing, garbage, non-UTF-8 and very long values, bad netns paths, bad versions,
every command). Every run must end with a CNI error object on stdout (JSON with a code and a
msg) or a success, never a Python traceback; and afterwards nothing is left behind: no OVS port,
veth, IPAM allocation, flow or netns file. An ADD that succeeds is deleted again, as the runtime
would."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovsctl.lab import kubelet
from tests.helpers import in_ns, netns_add, netns_del
from tests.stress.conftest import (
    ipam_allocations,
    netns_files,
    pod_cookie_owners,
    pod_ports,
    pod_veths,
)

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
COMMANDS = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"]
DEFAULT_SOCKET = "/run/ovsctl/cni.sock"
MISSING = object()  # a key or variable left out


@pytest.fixture(scope="module")
def places(node, request):
    """Paths the fuzz points at: a real pod netns, a directory, a regular file, ..."""
    name = f"{node.ns}-fz"
    path = netns_add(name)
    request.addfinalizer(lambda: netns_del(name))
    plain = os.path.join(node.dir, "plain-file")
    with open(plain, "w") as fh:
        fh.write("not a namespace\n")
    return {"netns_name": name, "netns": path, "plain": plain, "dir": node.dir}


def text(max_size: int = 30):
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=max_size
    )


def nasty():
    """A value of no use: garbage text, raw bytes (maybe not UTF-8), or something very long."""
    return st.one_of(
        text(),
        st.binary(max_size=30).filter(lambda b: b"\0" not in b),
        st.integers(100, 20000).map(lambda n: "a" * n),
        st.integers(10, 3000).map(lambda n: "é\u2603" * n),
        st.sampled_from(["-", ".", "..", " ", "\t\n", "$(reboot)", "../../etc/passwd", "%s%n"]),
    )


def json_values():
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text(10), inner, max_size=4),
        max_leaves=12,
    )


JSON = json_values()  # strategies are built once: building them is what costs
NASTY = nasty()
EXTRA_KEYS = st.dictionaries(text(12), JSON, max_size=2)


def bad(*values):
    """A broken value for one field: missing, empty, one of `values`, garbage."""
    return st.one_of(st.sampled_from([MISSING, "", *values]), NASTY)


def bad_conf(*values):
    return st.one_of(st.sampled_from([MISSING, *values]), JSON)


ENV_FIELDS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS")
CONF_FIELDS = ("cniVersion", "name", "type", "socket", "timeout")
BROKEN = st.lists(st.sampled_from((*ENV_FIELDS, *CONF_FIELDS, "stdin")), max_size=3, unique=True)


def invocations(sock: str, places: dict):
    """Valid invocations of a random command, each with up to 3 of its parts broken."""
    long_path = "/" + "n" * 5000
    env_bad = {
        "CNI_COMMAND": bad("add", "FROB", "ADD ", "version"),
        "CNI_CONTAINERID": bad("a" * 3000, "bad/id", "-x", "x y"),
        "CNI_NETNS": bad(
            "/var/run/netns/ovsctl-fuzz-no-such-ns",
            places["dir"],
            places["plain"],
            "/dev/null",
            "fuzzns",
            long_path,
        ),
        "CNI_IFNAME": bad("lo", ".", "..", "eth0123456789abc", "a/b", "x:y", "é", "e\u00a0"),
        "CNI_PATH": bad(),
        "CNI_ARGS": bad(
            "K8S_POD_NAME", "=x", ";;;", "K8S_POD_NAME=" + "p" * 4000, "A=\u2603;B=a=b=c;A=2"
        ),
    }
    conf_bad = {
        "cniVersion": bad_conf("0.2.0", "1.2.0", "", "v1", "1.0", 1),
        "name": bad_conf("", "bad name", "a/b", "x" * 300),
        "type": bad_conf("", 0),
        "socket": bad_conf(
            os.path.join(places["dir"], "no-such.sock"),
            places["dir"],
            places["plain"],
            "/dev/null",
            "",
            "/" + "s" * 200,
            sock + "\0x",
            "relative.sock",
        ),
        "timeout": bad_conf(0, -1, "10", True, 1e-9, 1e308, float("nan"), float("inf")),
    }

    @st.composite
    def invocation(draw):
        cmd = draw(st.sampled_from(COMMANDS))
        cid = "fz" + draw(st.text("0123456789abcdef", min_size=6, max_size=12))
        env = {
            "CNI_COMMAND": cmd,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": places["netns"],
            "CNI_IFNAME": draw(st.sampled_from(["eth0", "net1"])),
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=p{cid};K8S_POD_UID=u",
        }
        if cmd in ("GC", "STATUS", "VERSION"):  # as runtimes call these: no container
            for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"):
                if draw(st.booleans()):
                    del env[k]
        conf = {
            "cniVersion": draw(
                st.sampled_from(VERSIONS[3:] if cmd in ("GC", "STATUS") else VERSIONS)
            ),
            "name": "ovsctl",
            "type": "ovsctl-cni",
            "socket": sock,
        }
        if draw(st.booleans()):
            conf["timeout"] = draw(st.sampled_from([30, 60, 12.5]))
        if cmd == "GC" and draw(st.integers(0, 3)):
            conf["cni.dev/valid-attachments"] = []
        for extra in ("prevResult", "runtimeConfig", "cni.dev/valid-attachments", "ipam", "mtu"):
            if not draw(st.integers(0, 4)):
                conf[extra] = draw(JSON)
        if not draw(st.integers(0, 4)):
            conf.update(draw(EXTRA_KEYS))

        broken = draw(BROKEN)
        for field in broken:
            if field in env_bad:
                env[field] = draw(env_bad[field])
            elif field in conf_bad:
                conf[field] = draw(conf_bad[field])
        if conf.get("socket", MISSING) is MISSING and os.path.exists(DEFAULT_SOCKET):
            conf["socket"] = "/nonexistent/cni.sock"  # never poke an agent running on this host
        env = {k: v for k, v in env.items() if v is not MISSING}
        conf = {k: v for k, v in conf.items() if v is not MISSING}
        good = json.dumps(conf).encode()
        stdin = good
        if "stdin" in broken:
            stdin = draw(
                st.one_of(
                    st.integers(0, len(good) - 1).map(lambda n: good[:n]),  # cut short
                    st.binary(max_size=200),
                    JSON.map(lambda v: json.dumps(v).encode()),
                    st.sampled_from([b"", b"null", b"[]", b"\xff\xfe{}", b"{" * 5000, b"{}" * 3]),
                )
            )
        return env, stdin

    return invocation()


def run_shim(env: dict, stdin: bytes) -> subprocess.CompletedProcess:
    """Exec the shim file itself (its #! line), as the runtime does."""
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
    return subprocess.run(
        [kubelet.SHIM], env=full, input=stdin, capture_output=True, timeout=60, check=False
    )


def check_outcome(env: dict, p: subprocess.CompletedProcess) -> tuple[str, object]:
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out + err, (out, err)
    assert p.returncode in (0, 1), (p.returncode, out, err)
    if err:  # only the "about" line, when CNI_COMMAND is missing
        assert not env.get("CNI_COMMAND") and err.startswith("ovsctl-cni:"), err
    cmd = env.get("CNI_COMMAND")
    if p.returncode == 0:
        if cmd in ("ADD", "VERSION"):
            res = json.loads(out)
            assert isinstance(res, dict) and (
                "ips" in res if cmd == "ADD" else "supportedVersions" in res
            ), res
        else:
            assert out == "", out
        return "ok", cmd
    assert out.endswith("\n") and out.count("\n") == 1, out
    obj = json.loads(out)
    assert isinstance(obj, dict), obj
    assert isinstance(obj.get("code"), int) and not isinstance(obj["code"], bool), obj
    assert isinstance(obj.get("msg"), str) and obj["msg"], obj
    assert isinstance(obj.get("details"), str) and isinstance(obj.get("cniVersion"), str), obj
    return "error", obj["code"]


def test_fuzzed_invocations_never_crash_and_leave_nothing(node, places):
    before = {
        "ports": pod_ports(node),
        "veths": pod_veths(node),
        "ipam": ipam_allocations(node),
        "flows": pod_cookie_owners(node),
        "netns": netns_files(),
    }
    outcomes: collections.Counter = collections.Counter()
    shim_time = [0.0]
    t0 = time.monotonic()

    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(invocations(node.sock, places))
    def fuzz(inv):
        env, stdin = inv
        t = time.monotonic()
        p = run_shim(env, stdin)
        shim_time[0] += time.monotonic() - t
        outcomes[check_outcome(env, p)] += 1
        if p.returncode == 0 and env.get("CNI_COMMAND") == "ADD":
            # the runtime deletes what it made
            conf = json.dumps(node.netconf("1.0.0")).encode()
            d = run_shim({**env, "CNI_COMMAND": "DEL"}, conf)
            assert d.returncode == 0, d.stdout

    fuzz()
    took = time.monotonic() - t0
    assert node.agent_proc.poll() is None, "the agent died:\n" + node.tail_log()
    assert node.cni("STATUS", "", "", "").returncode == 0
    # the fuzz reached the agent (successes and the agent's own errors), not only the shim
    assert outcomes[("ok", "ADD")] > 0 and outcomes[("ok", "DEL")] > 0, outcomes
    assert outcomes[("error", 3)] > 0, outcomes
    # and left nothing behind
    assert pod_ports(node) == before["ports"], "OVS ports left"
    assert pod_veths(node) == before["veths"], "veths left"
    assert ipam_allocations(node) == before["ipam"], "IPAM allocations left"
    assert pod_cookie_owners(node) == before["flows"], "pod flows left"
    assert netns_files() - before["netns"] == set(), "netns files left"
    links = in_ns(places["netns_name"], "ip", "-o", "link", "show").stdout
    assert [line.split(": ")[1] for line in links.splitlines()] == ["lo"], links
    print(
        f"\nfuzz: {sum(outcomes.values())} runs in {took:.1f}s ({shim_time[0]:.1f}s in the shim); "
        + ", ".join(f"{k[0]} {k[1]}: {n}" for k, n in sorted(outcomes.items(), key=str))
    )
