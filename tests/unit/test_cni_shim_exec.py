"""Unit tests for the CNI shim's executable (cni-shim/ovsctl-cni run as kubelet runs it): its
shape and imports, its JSON parsing, and requests over the agent's size limit. The helpers and
the fake agent are test_cni_shim.py's. No root needed."""
# ruff: noqa: F811 - the fixtures imported from test_cni_shim are redefined as test arguments

import ast
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_cni_shim import (  # noqa: F401 - sockdir and agent are fixtures
    ADD_RESULT,
    K8S_ARGS_PARSED,
    MODULE_PATH,
    PREV_RESULT,
    SHIM_PATH,
    agent,
    assert_error,
    invoke,
    make_conf,
    make_env,
    run_shim,
    shim,
    sockdir,
)

# --------------------------------------------------------------------------
# The executable itself, run as kubelet runs it


needs_python3_early = pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK),
    reason="shebang interpreter /usr/bin/python3 missing",
)


def test_executable_file_shape():
    assert SHIM_PATH.suffix == ""
    assert os.access(SHIM_PATH, os.X_OK)
    first_line = SHIM_PATH.read_text().splitlines()[0]
    assert first_line == "#!/usr/bin/python3 -IS"


def test_the_executable_reads_its_environment_as_os_environ_would(agent):
    """The shim reads posix.environ (bytes) itself rather than importing os: what it sees of
    the real process environment, undecodable bytes included, is what os.environ shows."""
    fake = agent(reply={"result": ADD_RESULT})
    env = {k.encode(): v.encode() for k, v in make_env().items()}
    env[b"CNI_ARGS"] = b"IgnoreUnknown=1;K8S_POD_NAME=caf\xc3\xa9;X=\xff"
    status, output, _ = run_shim(env, make_conf(fake.path))
    assert status == 0, output
    assert fake.request["args"]["K8S_POD_NAME"] == "caf\u00e9"
    env[b"CNI_IFNAME"] = b"\xa0\xf1"  # os.environ: surrogates, which the shim refuses
    status, output, _ = run_shim(env, make_conf(fake.path))
    assert_error(status, output, 4)
    assert "UTF-8" in output["msg"]


def _imports(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    return imported


def test_imports_are_minimal_stdlib():
    # json only as a fallback for interpreters without _json (imported inside functions)
    imported = _imports(MODULE_PATH)
    assert imported <= {"_json", "_socket", "errno", "json", "posix", "sys", "time"}, imported
    # the launcher: the import machinery every interpreter has loaded already; json only to
    # report that the module cannot be loaded
    imported = _imports(SHIM_PATH)
    assert imported <= {"_frozen_importlib", "_frozen_importlib_external", "json", "posix", "sys"}
    assert len(SHIM_PATH.read_text().splitlines()) < 80  # compiled at every exec: stays small


@needs_python3_early
def test_the_interpreter_loads_nothing_costly():
    """What `import json`, `socket`, `re` or `os` would pull in stays out of the shim's
    process (os: 0.5-1 ms, its environ is read through posix)."""
    out = subprocess.run(
        ["/usr/bin/python3", "-IS", "-X", "importtime", str(SHIM_PATH)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"CNI_COMMAND": "VERSION"},
    )
    assert out.returncode == 0, out.stderr
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "_json" in loaded and "_socket" in loaded  # the probe sees imports at all
    forbidden = {"re", "json", "socket", "enum", "collections", "site", "os", "_collections_abc"}
    assert not loaded & forbidden, loaded


JSON_TEXTS = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "\\u00e9x\\n"}}',
    '  [1, 2.5, -3e2, 1E400, "\\ud83d\\ude00"]\n\t',
    '"just a string"',
    "NaN",
    "[Infinity, -Infinity]",
    "",
    "   ",
    "{}  x",
    '{"a": 1} {"b": 2}',
    "[1,]",
    '{"a" 1}',
    "\ufeff{}",
    '"\\x"',
    '{"a": "tab\there"}',
    "01",
    "[" * 50 + "]" * 50,
]


@pytest.mark.parametrize("text", JSON_TEXTS)
@pytest.mark.parametrize("accelerated", [True, False])
def test_json_loads_is_json_loads(text, accelerated, monkeypatch):
    if not accelerated:
        monkeypatch.setattr(shim, "_make_scanner", None)
    try:
        want = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            shim.json_loads(text)
        return
    got = shim.json_loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN: compare the text


@pytest.mark.parametrize("text", ["", "  \n ", '{"a": 1}\n\n  x', "\ufeff{}", "[1,", '{"a" 1}'])
def test_json_errors_say_what_json_says(text):
    with pytest.raises(ValueError) as want:
        json.loads(text)
    with pytest.raises(ValueError) as got:
        shim.json_loads(text)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize(
    "obj",
    [
        {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]},
        ["é", "\u2028", "\x00", 1.5, 10**30, -0.0, True, None, float("nan")],
        "plain",
        {"nested": {"deep": [[], {}]}},
    ],
)
@pytest.mark.parametrize("accelerated", [True, False])
def test_json_dumps_is_json_dumps(obj, accelerated, monkeypatch):
    if not accelerated:
        monkeypatch.setattr(shim, "_make_scanner", None)
    assert shim.json_dumps(obj) == json.dumps(obj)
    assert shim.json_dumps(obj, compact=True) == json.dumps(obj, separators=(",", ":"))
    with pytest.raises(TypeError):
        shim.json_dumps({"x": object()})


@pytest.mark.parametrize(
    "name,ok",
    [("abc", True), ("A1-b_c.d", True), ("9", True), ("", False), ("-a", False),
     (".a", False), ("a b", False), ("a/b", False), ("é", False), ("a\n", False)],
)  # fmt: skip
def test_names_as_the_reference_regex(name, ok):
    import re

    assert bool(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*", name)) is ok
    assert shim._valid_name(name) is ok


needs_python3 = pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK),
    reason="shebang interpreter /usr/bin/python3 missing",
)


@needs_python3
def test_subprocess_version():
    status, output, _ = run_shim({"CNI_COMMAND": "VERSION"}, "")
    assert status == 0
    assert output == shim.version_info()


@needs_python3
@pytest.mark.parametrize("version,ip_version", [("0.3.1", "4"), ("1.0.0", None)])
def test_subprocess_add_like_kubelet(agent, version, ip_version):
    fake = agent(reply={"result": ADD_RESULT})
    config = make_conf(fake.path, version)
    status, output, _ = run_shim(make_env(), config)
    assert status == 0
    assert output["cniVersion"] == version
    assert output["ips"][0].get("version") == ip_version
    assert fake.request["args"] == K8S_ARGS_PARSED
    assert fake.request["config"] == config


@needs_python3
def test_subprocess_del_empty_netns(agent):
    fake = agent(reply={"result": None})
    config = make_conf(fake.path, "1.0.0", prevResult=PREV_RESULT)
    status, output, err = run_shim(make_env("DEL", CNI_NETNS=""), config)
    assert (status, output) == (0, None)
    assert fake.request["netns"] == ""
    assert fake.request["config"]["prevResult"] == PREV_RESULT


@needs_python3
def test_subprocess_malformed_env(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, output, _ = run_shim(make_env(CNI_IFNAME="eth0/evil"), make_conf(fake.path))
    assert_error(status, output, 4)
    assert fake.connections == 0


@needs_python3
def test_subprocess_bad_json(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, output, _ = run_shim(make_env(), "{")
    assert_error(status, output, 6)
    assert fake.connections == 0


@needs_python3
def test_subprocess_agent_error(agent):
    fake = agent(reply={"error": {"code": 3, "msg": "container unknown", "details": "x"}})
    status, output, _ = run_shim(make_env("CHECK"), make_conf(fake.path, "1.1.0"))
    assert status == 1
    assert output == {"cniVersion": "1.1.0", "code": 3, "msg": "container unknown", "details": "x"}


@needs_python3
def test_subprocess_status_agent_missing(sockdir):
    env = make_env("STATUS", CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None)
    status, output, _ = run_shim(env, make_conf(sockdir / "absent.sock", "1.1.0"))
    assert_error(status, output, 50)


# --------------------------------------------------------------------------
# Requests over the agent's 4 MiB limit: invalid config (7), never "try again later" (11)


def _big_conf(path, size=5 << 20):
    return make_conf(path, "1.0.0", padding="x" * size)


def test_shim_limit_is_the_agents():
    from ovsctl.agent import cniserver

    assert shim.MAX_REQUEST_BYTES == cniserver.MAX_REQUEST == 4 << 20


def test_oversized_config_is_refused_before_connecting(agent):
    fake = agent()
    status, output, _ = invoke(make_env(), _big_conf(fake.path))
    assert_error(status, output, 7, "1.0.0")
    assert "4194304" in output["msg"], output
    assert output["details"].startswith("the request to the ovsctl agent would be ")
    assert fake.connections == 0  # the agent never saw it


def test_oversized_config_as_kubelet_runs_the_shim(agent):
    fake = agent()
    status, output, _ = run_shim(make_env(), _big_conf(fake.path))
    assert_error(status, output, 7, "1.0.0")
    assert "limit is 4194304 bytes" in output["msg"]
    assert fake.connections == 0


def test_a_config_just_under_the_limit_goes_to_the_agent(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, output, _ = invoke(make_env(), _big_conf(fake.path, (4 << 20) - 4096))
    assert status == 0, output
    assert len(fake.requests[0]) <= 4 << 20


@pytest.fixture
def real_agent(sockdir):
    """The agent's own CNIServer (ovsctl/cniserver.py) with a dispatch that records requests."""
    from ovsctl.agent.cniserver import CNIServer

    seen = []
    server = CNIServer(str(sockdir / "agent.sock"), lambda req: seen.append(req) or None)
    server.start()
    server.seen = seen
    yield server
    server.stop()


def _raw_request(path, payload: bytes, shut=True):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect(path)
    try:
        c.sendall(payload)
        if shut:
            c.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = c.recv(65536)
            if not b:
                break
            chunks.append(b)
        return json.loads(b"".join(chunks))
    finally:
        c.close()


@pytest.mark.parametrize("size", [(4 << 20) + 1, 9 << 20])
def test_agent_answers_an_oversized_request_with_invalid_config(real_agent, size):
    """A client other than the shim sends more than 4 MiB: the agent reads (and drops) the
    rest, answers error 7 naming the limit, and closes; the client is never cut off mid-send
    (EPIPE) and the agent serves the next request."""
    body = json.dumps({"command": "ADD", "pad": "x" * size}).encode() + b"\n"
    reply = _raw_request(real_agent.path, body)
    assert reply["error"]["code"] == 7, reply
    assert "4194304" in reply["error"]["msg"]
    assert real_agent.seen == []  # never dispatched
    ok = _raw_request(real_agent.path, json.dumps({"command": "STATUS"}).encode() + b"\n")
    assert ok == {"result": None} and len(real_agent.seen) == 1


def test_shim_without_its_own_check_gets_7_from_the_agent(real_agent, monkeypatch):
    """The agent's answer alone makes it 7: the shim's early refusal switched off."""
    monkeypatch.setattr(shim, "MAX_REQUEST_BYTES", 1 << 30)
    status, output, _ = invoke(make_env(), _big_conf(real_agent.path))
    assert_error(status, output, 7, "1.0.0")
    assert "4194304" in output["msg"]
