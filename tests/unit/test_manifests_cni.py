"""The deployment manifests' CNI install, checked offline: the init container's script installs
the shim and the conflist as kubelet finds them, and the installed shim accepts the installed
conflist for every command (run as kubelet runs it, against a fake agent). The rest of the
manifests is checked in test_manifests.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path, PurePosixPath

import pytest

from tests.unit.test_manifests import (
    CONTAINERFILE,
    SHIM_PATH,
    _agent_ds,
    _configmap,
    _conflist,
    _container,
    _env,
    _host_path,
    _load_agent_config,
    _load_shim,
    _plugin_conf,
    _volume_of,
)

# --------------------------------------------------------------------------- CNI install


class _FakeAgent:
    """Unix-socket stand-in for the agent: reads one request, answers {"result": ...}."""

    def __init__(self, path: str, result):
        self.requests: list[dict] = []
        self._result = result
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(path)
        self._srv.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.requests.append(json.loads(data))
                conn.sendall(json.dumps({"result": self._result}).encode())

    def close(self):
        try:
            self._srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._srv.close()
        self._thread.join(5)
        assert not self._thread.is_alive()


ADD_RESULT = {
    "interfaces": [
        {"name": "ovs0f1e2d3c4b", "mac": "aa:bb:cc:00:11:22"},
        {"name": "eth0", "mac": "02:00:0a:f4:00:05", "sandbox": "/var/run/netns/cni-1"},
    ],
    "ips": [{"address": "10.244.3.5/24", "gateway": "10.244.3.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.3.1"}],
    "dns": {},
}


@pytest.fixture
def node_dirs():
    """A fake node: /opt/cni/bin, /etc/cni/net.d, /usr/bin and the agent's run dir (short
    path: unix socket names are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="ovm-"))
    for d in ("opt/cni/bin", "etc/cni/net.d", "usr/bin", "run/ovsctl", "etc/ovsctl"):
        (root / d).mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _run_install(node: Path, host_python: bool = True) -> subprocess.CompletedProcess:
    """Run the install-cni init container's script with its paths mapped into `node`."""
    ds = _agent_ds()
    init = _container(ds, "install-cni", init=True)
    env = _env(init)
    for key, value in _configmap()["data"].items():
        (node / "etc/ovsctl" / key).write_text(value)
    if host_python:
        (node / "usr/bin/python3").symlink_to("python3.11")  # dangling, as seen from a pod

    def mapped(container_path: str) -> str:
        host = _host_path(ds, init, container_path)
        if host is not None:
            return str(node / host.lstrip("/"))
        m, v = _volume_of(ds, init, container_path)
        assert "configMap" in v
        return str(node / "etc/ovsctl" / PurePosixPath(container_path).relative_to(m["mountPath"]))

    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key, value in env.items():
        run_env[key] = {
            "SHIM_SRC": str(SHIM_PATH),
            "SHIM_MODULE_SRC": str(SHIM_PATH.with_name("ovsctl_cni.py")),
        }.get(key) or mapped(value)
    assert init["command"] == ["/bin/sh", "-c"]
    return subprocess.run(
        ["/bin/sh", "-c", init["args"][0]],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_install_cni_writes_into_the_nodes_cni_directories():
    ds = _agent_ds()
    init = _container(ds, "install-cni", init=True)
    env = _env(init)
    script = init["args"][0]
    assert _host_path(ds, init, env["CNI_BIN_DIR"]) == "/opt/cni/bin"
    assert _host_path(ds, init, env["CNI_CONF_DIR"]) == "/etc/cni/net.d"
    assert _host_path(ds, init, env["HOST_PYTHON"]) == "/usr/bin/python3"
    for target in ('"${CNI_BIN_DIR}/ovsctl-cni"', '"${CNI_CONF_DIR}/10-ovsctl.conflist"'):
        assert target in script
    # The conflist comes from the ConfigMap; the shim from where the Containerfile put it.
    m, v = _volume_of(ds, init, env["CONFLIST_SRC"])
    assert v["configMap"]["name"] == "ovsctl-config"
    assert PurePosixPath(env["CONFLIST_SRC"]).name in _configmap()["data"]
    assert _host_path(ds, init, env["SHIM_SRC"]) is None  # from the image, not the node
    workdir = re.search(r"^WORKDIR\s+(\S+)$", CONTAINERFILE.read_text(), re.M).group(1)
    assert re.search(r"^COPY\s+cni-shim\s+\./cni-shim/?$", CONTAINERFILE.read_text(), re.M)
    assert env["SHIM_SRC"] == f"{workdir}/cni-shim/ovsctl-cni"
    assert env["SHIM_MODULE_SRC"] == f"{workdir}/cni-shim/ovsctl_cni.py"
    assert _host_path(ds, init, env["SHIM_MODULE_SRC"]) is None


def test_install_cni_script_installs_files_kubelet_can_use(node_dirs):
    proc = _run_install(node_dirs)
    assert proc.returncode == 0, proc.stderr
    shim = node_dirs / "opt/cni/bin/ovsctl-cni"
    conf = node_dirs / "etc/cni/net.d/10-ovsctl.conflist"
    assert shim.read_bytes() == SHIM_PATH.read_bytes()
    assert os.stat(shim).st_mode & 0o777 == 0o755
    module = shim.with_name("ovsctl_cni.py")  # what the launcher runs, beside it
    assert module.read_bytes() == SHIM_PATH.with_name("ovsctl_cni.py").read_bytes()
    assert os.stat(module).st_mode & 0o777 == 0o644
    assert shim.read_text().startswith("#!/usr/bin/python3 ")
    assert json.loads(conf.read_text()) == _conflist()
    assert os.stat(conf).st_mode & 0o777 == 0o644
    # Nothing else left behind (no temporary files a runtime might pick up).
    assert sorted(p.name for p in (node_dirs / "etc/cni/net.d").iterdir()) == [conf.name]
    assert sorted(p.name for p in (node_dirs / "opt/cni/bin").iterdir()) == sorted(
        [shim.name, "ovsctl_cni.py"]
    )
    # Idempotent: a restarted init container replaces both (python3 is still there).
    assert _run_install(node_dirs, host_python=False).returncode == 0
    assert sorted(p.name for p in (node_dirs / "etc/cni/net.d").iterdir()) == [conf.name]


def test_install_cni_refuses_a_node_without_python(node_dirs):
    proc = _run_install(node_dirs, host_python=False)
    assert proc.returncode != 0
    assert "python3" in proc.stderr
    assert not (node_dirs / "etc/cni/net.d/10-ovsctl.conflist").exists()


def test_conflist_matches_the_shim_and_the_agent(tmp_path):
    conflist = _conflist()
    assert set(conflist) == {"cniVersion", "cniVersions", "name", "plugins"}
    # libcni up to 1.1 cannot read a 1.1.0 result back ("unsupported CNI result version"):
    # every runtime in use reads 1.0.0; libcni 1.2+ picks 1.1.0 (STATUS, GC) from the list
    assert conflist["cniVersion"] == "1.0.0"
    assert conflist["cniVersions"] == ["1.0.0", "1.1.0"]
    assert [p["type"] for p in conflist["plugins"]] == ["ovsctl-cni"]
    conf = _plugin_conf(conflist)
    assert set(conf) <= {"cniVersion", "name", "type", "socket", "timeout", "capabilities"}
    assert conf["capabilities"] == {"ips": True, "mac": True}
    assert _plugin_conf(conflist, libcni="1.2")["cniVersion"] == "1.1.0"
    cfg = _load_agent_config(tmp_path)
    assert conf["socket"] == cfg.cni_socket
    # The shim must wait longer than one step of the agent (docs/cni.md).
    assert conf["timeout"] > cfg.cni_timeout


def _run_shim(shim: Path, command: str, conf: dict, **env) -> tuple[int, dict | None]:
    full_env = {
        "CNI_COMMAND": command,
        "CNI_PATH": "/opt/cni/bin",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **env,
    }
    proc = subprocess.run(
        [str(shim)],
        input=json.dumps(conf).encode(),
        env=full_env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None)


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3")
def test_installed_shim_accepts_the_installed_conflist(node_dirs):
    """As kubelet does: VERSION, then STATUS, ADD and DEL with the plugin's configuration
    taken out of /etc/cni/net.d/10-ovsctl.conflist, running /opt/cni/bin/ovsctl-cni."""
    assert _run_install(node_dirs).returncode == 0
    shim = node_dirs / "opt/cni/bin/ovsctl-cni"
    conflist = json.loads((node_dirs / "etc/cni/net.d/10-ovsctl.conflist").read_text())
    conf = _plugin_conf(conflist)

    status, out = _run_shim(shim, "VERSION", conf)
    assert status == 0, out
    assert set(conflist["cniVersions"]) | {conflist["cniVersion"]} <= set(out["supportedVersions"])

    # Only the socket moves into the fake node; everything else is the shipped config.
    sock = str(node_dirs / "run/ovsctl/cni.sock")
    conf["socket"] = sock
    new = dict(_plugin_conf(conflist, libcni="1.2"), socket=sock)  # containerd 2: 1.1.0
    fake = _FakeAgent(sock, ADD_RESULT)
    try:
        status, out = _run_shim(shim, "STATUS", new)
        assert (status, out) == (0, None)
        pod_env = {
            "CNI_CONTAINERID": "0f1e2d3c4b5a",
            "CNI_NETNS": "/var/run/netns/cni-1",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        }
        for c in (conf, new):
            status, out = _run_shim(shim, "ADD", c, **pod_env)
            assert status == 0, out
            assert out == {"cniVersion": c["cniVersion"], **ADD_RESULT}
            status, out = _run_shim(shim, "DEL", c, **pod_env)
            assert (status, out) == (0, None)
    finally:
        fake.close()
    assert [r["command"] for r in fake.requests] == ["STATUS", "ADD", "DEL", "ADD", "DEL"]
    assert [r["config"] for r in fake.requests] == [new, conf, conf, new, new]


def test_shim_validates_the_conflist_for_every_command():
    """In-process, without an agent: the shim's own config check passes for each command
    a runtime may send with this cniVersion, and yields the shipped socket and timeout."""
    shim = _load_shim()
    old = _plugin_conf(_conflist())  # libcni up to 1.1: no STATUS or GC there
    for command in ("ADD", "CHECK", "DEL"):
        sock, timeout = shim.validate_config(command, old)
        assert (sock, timeout) == (old["socket"], float(old["timeout"]))
    new = _plugin_conf(_conflist(), libcni="1.2")
    for command in ("ADD", "CHECK", "DEL", "GC", "STATUS"):
        sock, timeout = shim.validate_config(command, new)
        assert (sock, timeout) == (new["socket"], float(new["timeout"]))
