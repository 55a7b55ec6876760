"""Unit tests for the CNI shim (cni-shim/ovsctl-cni).

The shim runs in-process (``main`` with dicts and in-memory streams) and as a
real subprocess exactly as kubelet runs it (environment + stdin, result on
stdout, exit status), against a fake agent: a unix-socket server thread that
records each request and answers with a canned reply. No root needed.
"""

import importlib.machinery
import importlib.util
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

SHIM_PATH = Path(__file__).resolve().parents[2] / "cni-shim" / "ovsctl-cni"  # the launcher
MODULE_PATH = SHIM_PATH.with_name("ovsctl_cni.py")  # the plugin it runs


def _load_shim():
    loader = importlib.machinery.SourceFileLoader("ovsctl_cni_shim", str(MODULE_PATH))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ next to the installed script
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


shim = _load_shim()

K8S_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
    "K8S_POD_INFRA_CONTAINER_ID=0f1e2d3c4b5a;K8S_POD_UID=6b1c3a52-7c5e-4d0e-9a54-2a5f1e0c9d11"
)
K8S_ARGS_PARSED = {
    "IgnoreUnknown": "1",
    "K8S_POD_NAMESPACE": "default",
    "K8S_POD_NAME": "web-0",
    "K8S_POD_INFRA_CONTAINER_ID": "0f1e2d3c4b5a",
    "K8S_POD_UID": "6b1c3a52-7c5e-4d0e-9a54-2a5f1e0c9d11",
}

ADD_RESULT = {
    "interfaces": [
        {"name": "veth0f1e2d3c", "mac": "aa:bb:cc:00:11:22"},
        {"name": "eth0", "mac": "02:00:0a:f4:00:05", "sandbox": "/var/run/netns/cni-1234"},
    ],
    "ips": [
        {"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 1},
        {"address": "fd00:10:244::5/64", "gateway": "fd00:10:244::1", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}, {"dst": "::/0"}],
    "dns": {},
}
PREV_RESULT = {"cniVersion": "1.0.0", **ADD_RESULT}


# --------------------------------------------------------------------------
# Fake agent


class FakeAgent:
    """A unix stream server that records requests and sends a canned reply.

    mode: "reply" (send ``reply``: a dict, or raw bytes), "close" (read the
    request, then close without a reply), "close-early" (close without even
    reading), "hang" (read the request and never answer).
    """

    def __init__(self, path, reply=None, mode="reply"):
        self.path = str(path)
        self.reply = {"result": None} if reply is None else reply
        self.mode = mode
        self.requests = []  # raw bytes, one per connection
        self.connections = 0
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:  # shut down by stop()
                return
            with conn:
                self.connections += 1
                self._handle(conn)

    def _handle(self, conn):
        if self.mode == "close-early":
            return
        conn.settimeout(5)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        self.requests.append(b"".join(chunks))
        if self.mode == "hang":
            self._stop.wait(10)
        elif self.mode == "reply":
            data = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode()
            conn.sendall(data)

    @property
    def request(self):
        """The single request received, parsed."""
        assert len(self.requests) == 1, self.requests
        raw = self.requests[0]
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
        return json.loads(raw)

    def stop(self):
        self._stop.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._server.close()
        self._thread.join(5)


@pytest.fixture
def sockdir():
    # Not tmp_path: AF_UNIX paths are limited to 107 bytes and pytest's
    # per-test directories under parametrized names can exceed that.
    path = tempfile.mkdtemp(prefix="ovc-")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(sockdir):
    agents = []

    def make(reply=None, mode="reply", name="cni.sock"):
        fake = FakeAgent(sockdir / name, reply=reply, mode=mode)
        agents.append(fake)
        return fake

    yield make
    for fake in agents:
        fake.stop()


# --------------------------------------------------------------------------
# Helpers


def make_env(command="ADD", **overrides):
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "0f1e2d3c4b5a",
        "CNI_NETNS": "/var/run/netns/cni-1234",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": K8S_ARGS,
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def make_conf(socket_path, version="1.0.0", **extra):
    conf = {"cniVersion": version, "name": "ovsnet", "type": "ovsctl-cni"}
    if socket_path is not None:
        conf["socket"] = str(socket_path)
    conf.update(extra)
    return conf


def invoke(env, stdin):
    """Run main() in-process; return (exit status, parsed stdout or None, stderr)."""
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin).encode()
    if isinstance(stdin, str):
        stdin = stdin.encode()
    out, err = io.StringIO(), io.StringIO()
    status = shim.main(environ=env, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    text = out.getvalue()
    if not text:
        return status, None, err.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return status, json.loads(text), err.getvalue()


def run_shim(env, stdin, timeout=20):
    """Execute the shim exactly as kubelet does: exec the file, env + stdin."""
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin)
    proc = subprocess.run(
        [str(SHIM_PATH)],
        input=stdin.encode(),
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None), proc.stderr.decode()


def assert_error(status, output, code, version="1.1.0"):
    assert status == 1
    assert output is not None
    assert set(output) == {"cniVersion", "code", "msg", "details"}, output
    assert output["code"] == code, output
    assert output["cniVersion"] == version, output
    assert isinstance(output["msg"], str) and output["msg"]
    assert isinstance(output["details"], str)


# --------------------------------------------------------------------------
# Malformed invocations: rejected before the agent is contacted

NETNS = "/var/run/netns/cni-1234"

# (id, env overrides, stdin factory (socket path -> stdin), expected code, cniVersion in error)
MALFORMED = [
    ("missing-command", {"CNI_COMMAND": None}, None, 4, "1.1.0"),
    ("empty-command", {"CNI_COMMAND": ""}, None, 4, "1.1.0"),
    ("unknown-command", {"CNI_COMMAND": "FROB"}, None, 4, "1.1.0"),
    ("lowercase-command", {"CNI_COMMAND": "add"}, None, 4, "1.1.0"),
    ("missing-containerid", {"CNI_CONTAINERID": None}, None, 4, "1.1.0"),
    ("containerid-slash", {"CNI_CONTAINERID": "abc/def"}, None, 4, "1.1.0"),
    ("containerid-leading-dash", {"CNI_CONTAINERID": "-abc"}, None, 4, "1.1.0"),
    ("containerid-space", {"CNI_CONTAINERID": "abc def"}, None, 4, "1.1.0"),
    ("containerid-newline", {"CNI_CONTAINERID": "abc\n"}, None, 4, "1.1.0"),
    ("missing-netns-add", {"CNI_NETNS": None}, None, 4, "1.1.0"),
    ("missing-netns-check", {"CNI_COMMAND": "CHECK", "CNI_NETNS": ""}, None, 4, "1.1.0"),
    ("missing-ifname", {"CNI_IFNAME": None}, None, 4, "1.1.0"),
    ("missing-ifname-del", {"CNI_COMMAND": "DEL", "CNI_IFNAME": None}, None, 4, "1.1.0"),
    ("ifname-too-long", {"CNI_IFNAME": "a" * 16}, None, 4, "1.1.0"),
    ("ifname-too-many-bytes", {"CNI_IFNAME": "é" * 8}, None, 4, "1.1.0"),
    ("ifname-slash", {"CNI_IFNAME": "eth/0"}, None, 4, "1.1.0"),
    ("ifname-colon", {"CNI_IFNAME": "eth0:1"}, None, 4, "1.1.0"),
    ("ifname-space", {"CNI_IFNAME": "eth 0"}, None, 4, "1.1.0"),
    ("ifname-tab", {"CNI_IFNAME": "eth\t0"}, None, 4, "1.1.0"),
    ("ifname-dot", {"CNI_IFNAME": "."}, None, 4, "1.1.0"),
    ("ifname-dotdot", {"CNI_IFNAME": ".."}, None, 4, "1.1.0"),
    ("missing-path", {"CNI_PATH": None}, None, 4, "1.1.0"),
    ("missing-path-gc", {"CNI_COMMAND": "GC", "CNI_PATH": None}, None, 4, "1.1.0"),
    ("missing-path-status", {"CNI_COMMAND": "STATUS", "CNI_PATH": ""}, None, 4, "1.1.0"),
    ("args-no-equals", {"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME"}, None, 4, "1.1.0"),
    ("args-empty-key", {"CNI_ARGS": "=web-0"}, None, 4, "1.1.0"),
    ("args-garbage", {"CNI_ARGS": "garbage"}, None, 4, "1.1.0"),
    ("bad-json", {}, lambda s: "{not json", 6, "1.1.0"),
    ("truncated-json", {}, lambda s: '{"cniVersion": "1.0.0", "name": "x"', 6, "1.1.0"),
    ("empty-stdin", {}, lambda s: "", 6, "1.1.0"),
    ("json-list", {}, lambda s: '["cniVersion", "1.0.0"]', 6, "1.1.0"),
    ("json-string", {}, lambda s: '"ovsnet"', 6, "1.1.0"),
    ("json-null", {}, lambda s: "null", 6, "1.1.0"),
    ("not-utf8", {}, lambda s: b'{"name": "\xff"}', 6, "1.1.0"),
    ("version-unsupported-old", {}, lambda s: make_conf(s, "0.2.0"), 1, "1.1.0"),
    ("version-unsupported-new", {}, lambda s: make_conf(s, "2.0.0"), 1, "1.1.0"),
    ("version-not-string", {}, lambda s: make_conf(s, 1), 1, "1.1.0"),
    (
        "version-missing",
        {},
        lambda s: {"name": "ovsnet", "type": "ovsctl-cni", "socket": str(s)},
        1,
        "1.1.0",
    ),
    (
        "name-missing",
        {},
        lambda s: {"cniVersion": "0.4.0", "type": "ovsctl-cni", "socket": str(s)},
        7,
        "0.4.0",
    ),
    ("name-empty", {}, lambda s: make_conf(s, "1.0.0", name=""), 7, "1.0.0"),
    ("name-bad-chars", {}, lambda s: make_conf(s, "1.0.0", name="pod net"), 7, "1.0.0"),
    ("name-not-string", {}, lambda s: make_conf(s, "1.0.0", name=["x"]), 7, "1.0.0"),
    (
        "type-missing",
        {},
        lambda s: {"cniVersion": "1.1.0", "name": "ovsnet", "socket": str(s)},
        7,
        "1.1.0",
    ),
    ("type-empty", {}, lambda s: make_conf(s, "0.3.1", type=""), 7, "0.3.1"),
    ("check-0.3.1", {"CNI_COMMAND": "CHECK"}, lambda s: make_conf(s, "0.3.1"), 1, "0.3.1"),
    ("check-0.3.0", {"CNI_COMMAND": "CHECK"}, lambda s: make_conf(s, "0.3.0"), 1, "0.3.0"),
    ("gc-1.0.0", {"CNI_COMMAND": "GC"}, lambda s: make_conf(s, "1.0.0"), 1, "1.0.0"),
    ("status-1.0.0", {"CNI_COMMAND": "STATUS"}, lambda s: make_conf(s, "1.0.0"), 1, "1.0.0"),
    ("status-0.4.0", {"CNI_COMMAND": "STATUS"}, lambda s: make_conf(s, "0.4.0"), 1, "0.4.0"),
    ("socket-empty", {}, lambda s: make_conf(None, "1.0.0", socket=""), 7, "1.0.0"),
    ("socket-not-string", {}, lambda s: make_conf(None, "1.0.0", socket=5), 7, "1.0.0"),
    ("timeout-zero", {}, lambda s: make_conf(s, "1.0.0", timeout=0), 7, "1.0.0"),
    ("timeout-negative", {}, lambda s: make_conf(s, "1.0.0", timeout=-1), 7, "1.0.0"),
    ("timeout-string", {}, lambda s: make_conf(s, "1.0.0", timeout="60"), 7, "1.0.0"),
    ("timeout-bool", {}, lambda s: make_conf(s, "1.0.0", timeout=True), 7, "1.0.0"),
]


@pytest.mark.parametrize(
    "overrides,stdin,code,version",
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_request_rejected_before_agent(agent, overrides, stdin, code, version):
    fake = agent(reply={"result": ADD_RESULT})
    config = stdin(fake.path) if stdin else make_conf(fake.path)
    status, output, _ = invoke(make_env(**overrides), config)
    assert_error(status, output, code, version)
    assert fake.connections == 0
    assert fake.requests == []


def test_malformed_cases_cover_the_brief():
    assert len(MALFORMED) >= 12
    assert {case[3] for case in MALFORMED} == {1, 4, 6, 7}


def test_missing_env_vars_are_all_named():
    status, output, _ = invoke(
        {"CNI_COMMAND": "ADD", "CNI_ARGS": ""}, make_conf("/nonexistent/cni.sock")
    )
    assert_error(status, output, 4)
    for name in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"):
        assert name in output["msg"]
    assert "CNI_ARGS" not in output["msg"]


def test_missing_command_prints_about_on_stderr():
    status, output, err = invoke({}, b"")
    assert_error(status, output, 4)
    assert "ovsctl-cni" in err and "1.1.0" in err


def test_containerid_with_allowed_punctuation_is_accepted(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, _, _ = invoke(make_env(CNI_CONTAINERID="A0_b.c-d"), make_conf(fake.path))
    assert status == 0
    assert fake.request["containerID"] == "A0_b.c-d"


def test_ifname_of_exactly_15_bytes_is_accepted(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, _, _ = invoke(make_env(CNI_IFNAME="a" * 15), make_conf(fake.path))
    assert status == 0
    assert fake.request["ifname"] == "a" * 15


def test_socket_path_too_long_for_a_unix_socket_is_an_invalid_config():
    status, output, _ = invoke(make_env(), make_conf("/run/" + "x" * 103))  # 108 bytes
    assert_error(status, output, 7, version="1.0.0")
    assert "too long" in output["msg"]


def test_ifname_that_is_not_utf8_is_an_invalid_environment(agent):
    """kubelet passes bytes; Python hands undecodable ones over as surrogates (found by the
    stress fuzz: the agent used to answer 100 with a UnicodeEncodeError)."""
    fake = agent(reply={"result": ADD_RESULT})
    env = make_env()
    env["CNI_IFNAME"] = b"\xa0\xf1\xe2".decode("utf-8", "surrogateescape")
    status, output, _ = invoke(env, make_conf(fake.path))
    assert_error(status, output, 4)
    assert "UTF-8" in output["msg"]
    assert fake.requests == []  # never reached the agent


# --------------------------------------------------------------------------
# CNI_ARGS parsing


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("", {}),
        ("K8S_POD_NAME=web-0", {"K8S_POD_NAME": "web-0"}),
        (K8S_ARGS, K8S_ARGS_PARSED),
        ("A=1;B=", {"A": "1", "B": ""}),
        ("A=1;", {"A": "1"}),
        ("A=x=y", {"A": "x=y"}),
        ("A=1;A=2", {"A": "2"}),
    ],
)
def test_parse_cni_args(raw, expected):
    assert shim.parse_cni_args(raw) == expected


@pytest.mark.parametrize("raw", ["A", "A=1;B", "=1", "A=1;;=2"])
def test_parse_cni_args_rejects_malformed(raw):
    with pytest.raises(shim.CNIError) as info:
        shim.parse_cni_args(raw)
    assert info.value.code == 4


# --------------------------------------------------------------------------
# Requests forwarded to the agent


def test_add_request_is_exact(agent):
    fake = agent(reply={"result": ADD_RESULT})
    config = make_conf(fake.path, "1.0.0", mtu=1450, ipam={"type": "ovsctl"})
    status, output, _ = invoke(make_env(), config)
    assert status == 0
    assert fake.request == {
        "command": "ADD",
        "containerID": "0f1e2d3c4b5a",
        "netns": NETNS,
        "ifname": "eth0",
        "args": K8S_ARGS_PARSED,
        "path": "/opt/cni/bin:/usr/lib/cni",
        "config": config,
    }
    assert output == {"cniVersion": "1.0.0", **ADD_RESULT}


def test_add_without_cni_args_sends_empty_dict(agent):
    fake = agent(reply={"result": ADD_RESULT})
    status, _, _ = invoke(make_env(CNI_ARGS=None), make_conf(fake.path))
    assert status == 0
    assert fake.request["args"] == {}


def test_del_with_empty_netns_is_forwarded(agent):
    fake = agent(reply={"result": None})
    config = make_conf(fake.path, "1.0.0", prevResult=PREV_RESULT)
    status, output, _ = invoke(make_env("DEL", CNI_NETNS=""), config)
    assert status == 0
    assert output is None
    request = fake.request
    assert request["command"] == "DEL"
    assert request["netns"] == ""
    assert request["config"]["prevResult"] == PREV_RESULT
    assert request["config"] == config


def test_del_without_netns_variable_is_forwarded(agent):
    fake = agent(reply={"result": None})
    status, output, _ = invoke(make_env("DEL", CNI_NETNS=None), make_conf(fake.path, "0.3.1"))
    assert (status, output) == (0, None)
    assert fake.request["netns"] == ""


def test_check_passes_prev_result_and_prints_nothing(agent):
    fake = agent(reply={"result": None})
    config = make_conf(fake.path, "0.4.0", prevResult=PREV_RESULT)
    status, output, _ = invoke(make_env("CHECK"), config)
    assert (status, output) == (0, None)
    assert fake.request["command"] == "CHECK"
    assert fake.request["config"]["prevResult"] == PREV_RESULT


def test_gc_passes_valid_attachments_and_needs_no_container(agent):
    fake = agent(reply={"result": None})
    attachments = [{"containerID": "0f1e2d3c4b5a", "ifname": "eth0"}]
    config = make_conf(fake.path, "1.1.0", **{"cni.dev/valid-attachments": attachments})
    env = make_env("GC", CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None, CNI_ARGS=None)
    status, output, _ = invoke(env, config)
    assert (status, output) == (0, None)
    assert fake.request == {
        "command": "GC",
        "containerID": "",
        "netns": "",
        "ifname": "",
        "args": {},
        "path": "/opt/cni/bin:/usr/lib/cni",
        "config": config,
    }


def test_status_success_prints_nothing(agent):
    fake = agent(reply={"result": None})
    env = make_env("STATUS", CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None)
    status, output, _ = invoke(env, make_conf(fake.path, "1.1.0"))
    assert (status, output) == (0, None)
    assert fake.request["command"] == "STATUS"


def test_default_socket_path_is_used_without_socket_key(monkeypatch, agent):
    fake = agent(reply={"result": ADD_RESULT})
    monkeypatch.setattr(shim, "DEFAULT_SOCKET", fake.path)
    status, output, _ = invoke(make_env(), make_conf(None, "1.0.0"))
    assert status == 0 and output["ips"] == ADD_RESULT["ips"]
    assert "socket" not in fake.request["config"]


# --------------------------------------------------------------------------
# Results in the config's format


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_add_result_legacy_versions_get_ip_version(agent, version):
    fake = agent(reply={"result": ADD_RESULT})
    status, output, _ = invoke(make_env(), make_conf(fake.path, version))
    assert status == 0
    assert output["cniVersion"] == version
    assert [ip["version"] for ip in output["ips"]] == ["4", "6"]
    assert output["ips"][0] == {**ADD_RESULT["ips"][0], "version": "4"}
    assert output["interfaces"] == ADD_RESULT["interfaces"]
    assert output["routes"] == ADD_RESULT["routes"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_add_result_1x_has_no_ip_version(agent, version):
    result = dict(ADD_RESULT, cniVersion="0.4.0")
    result["ips"] = [dict(ip, version="4") for ip in ADD_RESULT["ips"]]
    fake = agent(reply={"result": result})
    status, output, _ = invoke(make_env(), make_conf(fake.path, version))
    assert status == 0
    assert output == {"cniVersion": version, **ADD_RESULT}
    assert list(output)[0] == "cniVersion"


def test_add_result_drops_1_1_fields_for_older_versions(agent):
    result = {
        "interfaces": [{"name": "eth0", "mac": "02:00:0a:f4:00:05", "mtu": 1450, "sandbox": "x"}],
        "ips": [{"address": "10.244.0.5/24", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1", "mtu": 1450, "table": 5}],
    }
    fake = agent(reply={"result": result})
    status, output, _ = invoke(make_env(), make_conf(fake.path, "1.0.0"))
    assert status == 0
    assert output["interfaces"] == [{"name": "eth0", "mac": "02:00:0a:f4:00:05", "sandbox": "x"}]
    assert output["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]

    fake.requests.clear()
    status, output, _ = invoke(make_env(), make_conf(fake.path, "1.1.0"))
    assert status == 0
    assert output == {"cniVersion": "1.1.0", **result}


def test_convert_result_does_not_mutate_input():
    original = json.loads(json.dumps(ADD_RESULT))
    shim.convert_result(original, "0.3.1")
    assert original == ADD_RESULT


# --------------------------------------------------------------------------
# VERSION


def test_version_output():
    status, output, _ = invoke({"CNI_COMMAND": "VERSION"}, b"")
    assert status == 0
    assert output == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def test_version_ignores_stdin_and_agent(agent):
    fake = agent(reply={"result": None})
    status, output, _ = invoke(make_env("VERSION"), b"{garbage")
    assert status == 0 and output["cniVersion"] == "1.1.0"
    assert fake.connections == 0


# --------------------------------------------------------------------------
# Agent errors and an unreachable agent


@pytest.mark.parametrize(
    "code,msg,details",
    [
        (2, "unsupported field", 'CNI_ARGS "FOO=bar"'),
        (3, "container unknown", "no pod for containerID 0f1e2d3c4b5a"),
        (7, "invalid network config", "ipam: no subnet"),
        (11, "try again later", "OVSDB not connected"),
        (999, "internal", "boom"),
    ],
)
def test_agent_error_passthrough(agent, code, msg, details):
    fake = agent(reply={"error": {"code": code, "msg": msg, "details": details}})
    status, output, _ = invoke(make_env(), make_conf(fake.path, "0.4.0"))
    assert status == 1
    assert output == {"cniVersion": "0.4.0", "code": code, "msg": msg, "details": details}
    assert fake.request["command"] == "ADD"


def test_agent_error_without_details(agent):
    fake = agent(reply={"error": {"code": 3, "msg": "container unknown"}})
    status, output, _ = invoke(make_env("CHECK"), make_conf(fake.path, "1.0.0"))
    assert_error(status, output, 3, "1.0.0")
    assert output["details"] == ""


def test_status_agent_error_passthrough(agent):
    fake = agent(reply={"error": {"code": 51, "msg": "limited connectivity", "details": ""}})
    status, output, _ = invoke(make_env("STATUS"), make_conf(fake.path, "1.1.0"))
    assert_error(status, output, 51, "1.1.0")


def test_agent_socket_missing_is_try_again_later(sockdir):
    status, output, _ = invoke(make_env(), make_conf(sockdir / "absent.sock", "1.0.0"))
    assert_error(status, output, 11, "1.0.0")
    assert "absent.sock" in output["msg"] + output["details"]


def test_agent_connection_refused_is_try_again_later(sockdir):
    # A stale socket file: bound once, nobody listening any more.
    path = sockdir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    status, output, _ = invoke(make_env(), make_conf(path, "1.0.0"))
    assert_error(status, output, 11, "1.0.0")


@pytest.mark.parametrize("mode", ["close", "close-early"])
def test_agent_closes_without_reply_is_try_again_later(agent, mode):
    fake = agent(mode=mode)
    status, output, _ = invoke(make_env(), make_conf(fake.path, "1.0.0"))
    assert_error(status, output, 11, "1.0.0")
    assert fake.connections == 1


def test_agent_timeout_is_try_again_later(agent):
    # The fake agent holds the connection open for 10 s and then closes it without a reply; the
    # shim gives up on its own 0.3 s timeout first: a timeout, not "closed without a reply".
    fake = agent(mode="hang")
    status, output, _ = invoke(make_env(), make_conf(fake.path, "1.0.0", timeout=0.3))
    assert_error(status, output, 11, "1.0.0")
    assert output["msg"].startswith("ovsctl agent unreachable"), output
    assert "timed out" in output["msg"] + output["details"], output
    assert len(fake.requests) == 1


def test_status_agent_missing_is_plugin_not_available(sockdir):
    env = make_env("STATUS", CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None)
    status, output, _ = invoke(env, make_conf(sockdir / "absent.sock", "1.1.0"))
    assert_error(status, output, 50, "1.1.0")


@pytest.mark.parametrize("mode", ["close", "hang"])
def test_status_agent_gone_is_plugin_not_available(agent, mode):
    fake = agent(mode=mode)
    status, output, _ = invoke(make_env("STATUS"), make_conf(fake.path, "1.1.0", timeout=0.3))
    assert_error(status, output, 50, "1.1.0")


@pytest.mark.parametrize(
    "reply",
    [
        b"this is not json",
        b'{"result": {"ips": [',
        b"[1, 2, 3]",
        b'{"something": "else"}',
        b'{"error": "bad"}',
        b'{"error": {"code": "3", "msg": "x"}}',
        b'{"result": null}',
        b'{"result": ["eth0"]}',
    ],
)
def test_malformed_agent_reply_to_add_is_io_failure(agent, reply):
    fake = agent(reply=reply)
    status, output, _ = invoke(make_env(), make_conf(fake.path, "1.0.0"))
    assert_error(status, output, 5, "1.0.0")


def test_unexpected_exception_is_a_cni_error_not_a_traceback(monkeypatch, agent):
    fake = agent(reply={"result": ADD_RESULT})

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(shim, "call_agent", boom)
    status, output, err = invoke(make_env(), make_conf(fake.path, "1.0.0"))
    assert_error(status, output, 5)
    assert "kaboom" in output["details"]
    assert "Traceback" not in err


def test_stdin_read_error_is_io_failure():
    class Broken:
        def read(self):
            raise OSError(5, "Input/output error")

    out = io.StringIO()
    status = shim.main(environ=make_env(), stdin=Broken(), stdout=out, stderr=io.StringIO())
    output = json.loads(out.getvalue())
    assert_error(status, output, 5)
