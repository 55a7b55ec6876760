"""The Vagrant lab (vagrant/Vagrantfile) and the provisioning script it shares with the netns
lab (ovsctl/lab/provision.sh), checked without VMs.

- The script: `bash -n` and shellcheck; `node` writes an agent.yaml that
  ovsctl's config loader accepts and a Node object the cluster-state model parses, byte for
  byte what the lab wrote before it used the script; bad input exits 2 with a message and
  writes nothing; every subcommand's --help names exactly the flags it parses.
- The netns lab's own call of the script (Lab._provision), without root or namespaces.
- The Vagrantfile: read as text (both providers, the settings, every provision.sh call uses
  flags the script accepts); `ruby -c`; `vagrant validate`, per provider (offline).

shellcheck, ruby, vagrant, vagrant-libvirt and systemd-analyze come with `make deps`; a missing
one fails its check rather than skipping it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ovsctl import config as agent_config
from ovsctl.k8s import model
from ovsctl.lab import lab as lab_mod

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ovsctl" / "lab" / "provision.sh"
VAGRANTFILE = ROOT / "vagrant" / "Vagrantfile"
SUBCOMMANDS = ("node", "install", "service", "pod", "kubeadm")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def run(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
    )


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def node_yaml(name: str, pod_cidr: str, ip: str) -> str:
    """What the lab wrote for a Node before it used the script."""
    node = model.parse(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": pod_cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
    )
    return yaml.safe_dump(model.to_dict(node))


# ------------------------------------------------------------------------------ the script


def test_script_parses_with_bash_n():
    p = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def need(tool: str) -> None:
    """The checks' tools are installed by `make deps` (the Makefile's APT_PKGS); a missing one
    fails the check instead of skipping it, so CI cannot pass without having run it."""
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed: `make deps` installs it (Makefile APT_PKGS)")


def test_make_deps_installs_the_checks_tools():
    text = (ROOT / "Makefile").read_text()
    pkgs = {p for line in re.findall(r"^APT_PKGS \+?:?= (.*)$", text, re.M) for p in line.split()}
    assert {"shellcheck", "ruby", "vagrant", "vagrant-libvirt", "systemd"} <= pkgs, pkgs


def test_script_is_clean_for_shellcheck():
    need("shellcheck")
    p = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def test_script_is_executable_and_strict():
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_help_lists_every_subcommand():
    p = run("--help")
    assert p.returncode == 0 and p.stderr == ""
    for sub in SUBCOMMANDS:
        assert re.search(rf"^  {sub}\s", p.stdout, re.M), sub
    nothing = run()
    assert nothing.returncode == 2 and "usage:" in nothing.stderr
    bad = run("frobnicate")
    assert bad.returncode == 2 and "unknown subcommand frobnicate" in bad.stderr


def _function(text: str, name: str) -> str:
    m = re.search(rf"^{name}\(\) \{{\n(.*?)^\}}\n", text, re.M | re.S)
    assert m, name
    return m.group(1)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_each_help_names_exactly_the_flags_it_parses(sub):
    """Keeps the --help texts true: a flag in the parser is in the help and vice versa."""
    p = run(sub, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: provision.sh {sub}")
    text = SCRIPT.read_text()
    parsed = set(re.findall(r"^\s+(--[a-z0-9-]+)\)", _function(text, f"cmd_{sub}"), re.M))
    synopsis = p.stdout.split("\n\n", 1)[0]
    in_synopsis = set(FLAG.findall(synopsis))
    described = set(re.findall(r"^\s{2,}(--[a-z0-9-]+)\s", p.stdout, re.M))
    assert parsed, sub
    assert parsed == in_synopsis, (sub, parsed ^ in_synopsis)
    assert described <= parsed, (sub, described - parsed)


LAB_FLAGS = [
    "--datapath",
    "netdev",
    "--log-level",
    "info",
]


def lab_style(tmp_path: Path, source: str = "yaml") -> tuple[list[str], dict]:
    """Flags as the netns lab passes them, and the agent config the lab used to write."""
    d = tmp_path / "nodes" / "node1"
    cluster = tmp_path / "cluster"
    rundir = d / "ovs"
    flags = [
        "node",
        "--name",
        "node1",
        "--node-ip",
        "172.30.0.11",
        "--pod-cidr",
        "10.244.1.0/24",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--cluster-state",
        str(cluster),
        "--out",
        str(d),
        "--ovsdb",
        f"unix:{rundir}/db.sock",
        "--ovs-rundir",
        str(rundir),
        "--cni-socket",
        str(d / "cni.sock"),
        "--state-dir",
        str(d / "state"),
        *LAB_FLAGS,
    ]
    before = {
        "node_name": "node1",
        "cluster_state": str(cluster),
        "datapath_type": "netdev",
        "cluster_cidr": "10.244.0.0/16",
        "ovsdb": f"unix:{rundir}/db.sock",
        "ovs_rundir": str(rundir),
        "cni_socket": str(d / "cni.sock"),
        "state_dir": str(d / "state"),
        "log_level": "info",
    }
    if source == "api":
        flags += ["--source", "api", "--api-server", "http://172.30.0.2:6443"]
        del before["cluster_state"]
        before.update(source="api", api_server="http://172.30.0.2:6443")
    return flags, before


@pytest.mark.parametrize("source", ["yaml", "api"])
def test_node_writes_what_the_lab_wrote_and_the_agent_accepts(tmp_path, source):
    flags, before = lab_style(tmp_path, source)
    p = run(*flags)
    assert p.returncode == 0, p.stderr
    agent_yaml = tmp_path / "nodes" / "node1" / "agent.yaml"
    node_file = tmp_path / "cluster" / "Node-node1.yaml"
    assert p.stdout.splitlines() == [f"wrote {agent_yaml}", f"wrote {node_file}"]

    data = yaml.safe_load(agent_yaml.read_text())
    assert data == {"source": "yaml", **before} if source == "yaml" else data == before
    cfg = agent_config.load_file(str(agent_yaml)).validate()
    assert cfg.node_name == "node1" and cfg.source == source
    assert cfg.datapath_type == "netdev" and cfg.pod_cidr == "" and cfg.node_ip == ""

    # the Node object: byte for byte what the lab wrote with yaml.safe_dump(model.to_dict())
    assert node_file.read_text() == node_yaml("node1", "10.244.1.0/24", "172.30.0.11")
    node = model.parse(yaml.safe_load(node_file.read_text()))
    assert node.key == ("Node", "", "node1")
    assert node.pod_cidr == "10.244.1.0/24" and node.internal_ip == "172.30.0.11"
    assert not [f for f in files_under(tmp_path) if "/." in f or f.startswith(".")]


def test_node_defaults_are_the_agents_defaults(tmp_path):
    p = run("node", "--name", "vm1", "--source", "api", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert files_under(tmp_path) == ["agent.yaml"]  # no Node object without --cluster-state
    data = yaml.safe_load((tmp_path / "agent.yaml").read_text())
    defaults = agent_config.AgentConfig(node_name="vm1", source="api").as_dict()
    assert data == {k: defaults[k] for k in data}
    assert set(data) == {
        "node_name",
        "cluster_cidr",
        "datapath_type",
        "ovsdb",
        "ovs_rundir",
        "cni_socket",
        "state_dir",
        "log_level",
        "source",
    }
    agent_config.load_file(str(tmp_path / "agent.yaml")).validate()


def test_node_object_only_and_optional_settings(tmp_path):
    state = tmp_path / "cluster"
    p = run(
        "node",
        "--name",
        "node7",
        "--node-ip",
        "192.168.56.17",
        "--pod-cidr",
        "10.244.7.0/24",
        "--cluster-state",
        str(state),
        "--source",
        "api",
        "--api-server",
        "http://192.168.56.10:6443",
    )
    assert p.returncode == 0, p.stderr
    assert files_under(tmp_path) == ["cluster", "cluster/Node-node7.yaml"]
    assert p.stdout == f"wrote {state}/Node-node7.yaml\n"

    out = tmp_path / "etc"
    flags = ["--name", "node2", "--source", "api", "--out", str(out)]
    flags += ["--kubeconfig", "/etc/kubernetes/kubelet.conf", "--metrics-port", "0"]
    assert run("node", *flags).returncode == 0
    cfg = agent_config.load_file(str(out / "agent.yaml")).validate()
    assert cfg.kubeconfig == "/etc/kubernetes/kubelet.conf" and cfg.metrics_port == 0
    assert cfg.api_server == ""


def test_node_overwrites_atomically(tmp_path):
    flags, _ = lab_style(tmp_path)
    assert run(*flags).returncode == 0
    node_file = tmp_path / "cluster" / "Node-node1.yaml"
    ino = node_file.stat().st_ino
    flags[flags.index("--node-ip") + 1] = "172.30.0.99"
    assert run(*flags).returncode == 0
    assert node_file.stat().st_ino != ino  # renamed into place, not rewritten in place
    assert "172.30.0.99" in node_file.read_text()
    assert sorted(os.listdir(tmp_path / "cluster")) == ["Node-node1.yaml"]


@pytest.mark.parametrize(
    "value",
    ["/srv/a b/x", "/srv/it's", "/yes", "/srv/x:", "/srv/#x", "/null", "/srv/ä", "/a: b"],
)
def test_values_that_need_quoting_round_trip(tmp_path, value):
    p = run("node", "--name", "n", "--source", "api", "--out", str(tmp_path), "--state-dir", value)
    assert p.returncode == 0, p.stderr
    cfg = agent_config.load_file(str(tmp_path / "agent.yaml")).validate()
    assert cfg.state_dir == value


BAD = [
    ([], "--name is required"),
    (["--name"], "--name needs a value"),
    (["--name", "Node_1", "--out", "{out}"], "--name Node_1: not a valid name"),
    (["--name", "n"], "nothing to write"),
    (["--name", "n", "--out", "{out}"], "--source yaml needs --cluster-state"),
    (["--name", "n", "--out", "relative/dir", "--source", "api"], "must be an absolute path"),
    (["--name", "n", "--out", "{out}", "--source", "etcd"], "--source etcd: must be yaml or api"),
    (["--name", "n", "--out", "{out}", "--bogus", "1"], "unknown argument --bogus"),
    (["--name", "n", "--cluster-state", "{state}", "--pod-cidr", "10.244.1.0/24"], "--node-ip"),
    (["--name", "n", "--cluster-state", "{state}", "--node-ip", "192.0.2.1"], "--pod-cidr"),
    (["--pod-cidr", "10.244.1.0"], "--pod-cidr 10.244.1.0: not a CIDR"),
    (["--pod-cidr", "10.244.1.0/33"], "not a CIDR (prefix 0..32)"),
    (["--pod-cidr", "10.244.1.7/24"], "host bits set (the network is 10.244.1.0/24)"),
    (["--pod-cidr", "10.244.1.0/31"], "too small (at most /30)"),
    (["--pod-cidr", "10.99.1.0/24"], "is not inside the cluster CIDR 10.244.0.0/16"),
    (["--pod-cidr", "10.300.1.0/24"], "not a CIDR (bad address 10.300.1.0)"),
    (["--node-ip", "192.0.2.256"], "--node-ip 192.0.2.256: not an IPv4 address"),
    (["--node-ip", "10.244.9.9"], "is inside the cluster CIDR"),
    (["--cluster-cidr", "10.244.0.0/8"], "host bits set"),
    (["--datapath", "dpdk"], "--datapath dpdk: must be system or netdev"),
    (["--log-level", "loud"], "--log-level loud"),
    (["--metrics-port", "70000"], "--metrics-port 70000"),
    (["--ovsdb", "/run/db.sock"], "--ovsdb /run/db.sock: must be unix:PATH"),
    (["--source", "api", "--api-server", "ftp://x"], "not an http(s) URL"),
    (["--api-server", "http://x:6443"], "--api-server and --kubeconfig go with --source api"),
    (["--name", "n", "--source", "api", "--out", "{out}", "--node-ip", "192.0.2.1"], "Node object"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path, args, message):
    out, state = tmp_path / "out", tmp_path / "state"
    if args and args[0] != "--name" and "--name" not in args:
        # one bad flag on top of an otherwise complete call
        base = ["--name", "n", "--out", "{out}", "--cluster-state", "{state}"]
        base += ["--node-ip", "192.0.2.1", "--pod-cidr", "10.244.1.0/24"]
        args = base + args
    args = [a.format(out=out, state=state) for a in args]
    p = run("node", *args)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert message in p.stderr, p.stderr
    assert p.stderr.startswith("provision.sh: ") and p.stdout == ""
    assert files_under(tmp_path) == []


def test_pod_checks_its_input_before_touching_anything(tmp_path):
    base = ["pod", "add", "--namespace", "x", "--name", "a", "--run-dir", str(tmp_path)]
    for extra, message in [
        (["--port", "0"], "--port 0: not [NAME:]PORT"),
        (["--port", "http:80/ICMP"], "--port http:80/ICMP"),
        (["--label", "novalue"], "--label novalue: not KEY=VALUE"),
        (["--netns", "a/b"], "--netns a/b: not a usable name"),
        (["--node", "Bad_Node"], "--node Bad_Node: not a valid name"),
    ]:
        p = run(*base, *extra)
        assert p.returncode == 2 and message in p.stderr, (extra, p.stderr)
    assert run("pod", "add", "--name", "a").returncode == 2
    assert run("pod", "frob").returncode == 2
    assert files_under(tmp_path) == []


def test_kubeadm_checks_its_input():
    p = run("kubeadm", "init", "--node-ip", "192.168.56.10", "--token", "short")
    assert p.returncode == 2 and "--token: must look like" in p.stderr
    p = run("kubeadm", "join", "--node-ip", "192.168.56.11", "--token", "abcdef.0123456789abcdef")
    assert p.returncode == 2 and "--control-plane IP:PORT is required" in p.stderr


def test_install_and_service_check_their_input():
    p = run("install", "--repo", "/nonexistent")
    assert p.returncode == 2 and "is not an ovsctl checkout" in p.stderr
    p = run("service")
    assert p.returncode == 2 and "--config is required" in p.stderr
    p = run("service", "--config", "/etc/ovsctl/agent.yaml", "--apiserver-state", "/srv/x")
    assert p.returncode == 2 and "go together" in p.stderr


def test_service_writes_units_shim_and_conflist(tmp_path):
    """`service --root DIR`: the files a VM gets, under DIR, without systemd or root."""
    root = tmp_path / "root"
    venv = str(Path(sys.executable).parent.parent)  # a venv that exists, for verify
    p = run(
        "service", "--config", "/etc/ovsctl/agent.yaml", "--venv", venv, "--repo", str(ROOT),
        "--apiserver-state", "/var/lib/ovsctl-lab/cluster",
        "--apiserver-listen", "192.168.56.10:6443", "--root", str(root),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    units = root / "etc" / "systemd" / "system"
    agent, api = units / "ovsctl-agent.service", units / "ovsctl-apiserver.service"
    assert f"ExecStart={venv}/bin/python -m ovsctl.cli agent --config /etc/ovsctl/agent.yaml\n" in (
        agent.read_text()
    )
    assert "Requires=openvswitch-switch.service" in agent.read_text()
    assert "ovsctl-apiserver.service" in agent.read_text()  # ordered after the API server
    assert (
        f"ExecStart={venv}/bin/python -m ovsctl.lab.apiserver "
        "--state /var/lib/ovsctl-lab/cluster --listen 192.168.56.10:6443\n"
    ) in api.read_text()
    assert (root / "var/lib/ovsctl-lab/cluster").is_dir()
    shim = root / "opt" / "cni" / "bin" / "ovsctl-cni"
    assert shim.read_bytes() == (ROOT / "cni-shim" / "ovsctl-cni").read_bytes()
    module = shim.with_name("ovsctl_cni.py")  # the plugin the launcher runs
    assert module.read_bytes() == (ROOT / "cni-shim" / "ovsctl_cni.py").read_bytes()
    assert os.access(shim, os.X_OK)
    conflist = yaml.safe_load((root / "etc/cni/net.d/10-ovsctl.conflist").read_text())
    assert conflist["name"] == "ovsctl" and conflist["cniVersion"] == "1.0.0"
    assert conflist["cniVersions"] == ["1.0.0", "1.1.0"]
    assert conflist["plugins"] == [
        {
            "type": "ovsctl-cni",
            "socket": "/run/ovsctl/cni.sock",
            "timeout": 60,
            "capabilities": {"ips": True, "mac": True},
        }
    ]
    # the same conflist as the cluster deployment's
    cm = yaml.safe_load((ROOT / "manifests" / "02-config.yaml").read_text())
    assert conflist == yaml.safe_load(cm["data"]["10-ovsctl.conflist"])
    assert not [f for f in files_under(root) if "/." in f]
    # without --apiserver-state: only the agent's unit, not ordered after an API server
    p = run("service", "--config", "/etc/a.yaml", "--root", str(tmp_path / "r2"))
    assert p.returncode == 0, p.stderr
    r2 = tmp_path / "r2" / "etc" / "systemd" / "system"
    assert sorted(os.listdir(r2)) == ["ovsctl-agent.service"]
    assert "apiserver" not in (r2 / "ovsctl-agent.service").read_text()

    need("systemd-analyze")
    v = subprocess.run(
        ["systemd-analyze", "verify", str(agent), str(api)], capture_output=True, text=True
    )
    assert v.returncode == 0 and v.stderr.strip() == "", v.stderr


def test_install_packages_include_the_makefiles():
    make = re.search(r"^APT_PKGS := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    script = re.search(r"^APT_PKGS=\(([^)]*)\)", SCRIPT.read_text(), re.M)
    assert make and script
    assert set(make.group(1).split()) <= set(script.group(1).split())


# ------------------------------------------------------------------------ the netns lab's call


def test_the_netns_lab_writes_its_nodes_through_the_script(tmp_path):
    """Lab._provision is how `ovsctl lab up` writes each node's Node object and agent.yaml."""
    lab = lab_mod.Lab("unit")
    lab.dir = str(tmp_path)
    lab.cluster_dir = str(tmp_path / "cluster")
    lab.meta_path = str(tmp_path / "lab.json")
    for source in ("yaml", "api"):
        meta = {"cluster_cidr": "10.244.0.0/16", "source": source, "nodes": {}}
        if source == "api":
            meta["api"] = {"url": f"http://{lab_mod.EXTERNAL_IP}:{lab_mod.API_PORT}"}
        lab.save_meta(meta)
        lab._provision("node2", "172.30.0.12", "10.244.2.0/24")
        node_file = tmp_path / "cluster" / "Node-node2.yaml"
        assert node_file.read_text() == node_yaml("node2", "10.244.2.0/24", "172.30.0.12")
        conf = Path(lab.node_dir("node2")) / "agent.yaml"
        cfg = agent_config.load_file(str(conf)).validate()
        assert cfg.source == source and cfg.datapath_type == "netdev"
        assert cfg.cni_socket == lab.socket("node2")
        assert cfg.ovsdb == lab.ovs("node2").remote and cfg.ovs_rundir == lab.ovs("node2").rundir
        assert cfg.state_dir == os.path.join(lab.node_dir("node2"), "state")
        assert cfg.lb_pool == ["172.30.0.176/28"]  # ovsctl/lab/lbaddr.py LB_POOL (IPv4 lab)
        if source == "yaml":
            assert cfg.cluster_state == lab.cluster_dir
        else:
            assert cfg.cluster_state == "" and cfg.api_server == meta["api"]["url"]


# ------------------------------------------------------------------------------ Vagrantfile

VAGRANT_ENV = {
    "OVSCTL_NODES": "3",
    "OVSCTL_BOX": "debian/bookworm64",
    "OVSCTL_CPUS": "2",
    "OVSCTL_MEMORY": "2048",
    "OVSCTL_SUBNET": "192.168.56.0/24",
}


def test_vagrantfile_text_has_both_providers_and_the_settings():
    text = VAGRANTFILE.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert 'config.vm.provider "libvirt"' in code
    assert 'config.vm.provider "virtualbox"' in code
    for var in (*VAGRANT_ENV, "OVSCTL_KUBEADM"):
        assert f'"{var}"' in code, var
        assert var in text.split("require")[0], f"{var} is not documented in the header"
    for provider in ("lv", "vb"):
        assert f"{provider}.cpus = CPUS" in code and f"{provider}.memory = MEMORY" in code
    assert '"debian/bookworm64"' in code
    assert 'synced_folder "..", REPO, type: "rsync"' in code
    assert 'REPO = "/vagrant"' in code
    assert "ovsctl.lab.apiserver" in text and "--apiserver-state" in code


def test_vagrantfile_calls_the_script_with_flags_it_accepts():
    code = [
        line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for line in VAGRANTFILE.read_text().splitlines()
    ]
    statements = re.sub(r"\\\n\s*", " ", "\n".join(code)).splitlines()  # join `\` lines
    used: dict[str, set] = {}
    for st in statements:
        for sub in re.findall(r"bash #\{PROVISION\} (\w+)", st):
            used.setdefault(sub, set()).update(FLAG.findall(st))
        if st.strip().startswith("api = "):  # service's API server flags, in a variable
            used.setdefault("service", set()).update(FLAG.findall(st))
    assert set(used) == {"install", "node", "service", "kubeadm"}
    for sub, flags in used.items():
        synopsis = run(sub, "--help").stdout.split("\n\n", 1)[0]
        assert flags and flags <= set(FLAG.findall(synopsis)), (sub, flags)


def test_vagrantfile_node_calls_match_the_scripts_checks(tmp_path):
    """The node0 calls of the Vagrantfile, with its values, pass the script's checks."""
    state, out = tmp_path / "state", tmp_path / "etc"
    for k in range(3):
        flags = ["--name", f"node{k}", "--node-ip", f"192.168.56.{10 + k}"]
        flags += ["--pod-cidr", f"10.244.{k}.0/24", "--cluster-cidr", "10.244.0.0/16"]
        flags += ["--cluster-state", str(state), "--source", "api"]
        flags += ["--api-server", "http://192.168.56.10:6443"]
        assert run("node", *flags).returncode == 0
    flags = ["--name", "node1", "--cluster-cidr", "10.244.0.0/16", "--source", "api"]
    flags += ["--api-server", "http://192.168.56.10:6443", "--out", str(out)]
    assert run("node", *flags).returncode == 0
    nodes = [model.parse(yaml.safe_load(f.read_text())) for f in sorted(state.iterdir())]
    assert [(n.name, n.pod_cidr, n.internal_ip) for n in nodes] == [
        (f"node{k}", f"10.244.{k}.0/24", f"192.168.56.{10 + k}") for k in range(3)
    ]
    agent_config.load_file(str(out / "agent.yaml")).validate()


def test_vagrantfile_ruby_syntax():
    need("ruby")
    p = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True)
    assert p.returncode == 0 and "Syntax OK" in p.stdout, p.stderr


def vagrant(tmp_path: Path, *args: str, extra_env: dict | None = None):
    """`vagrant ARGS` on a copy of the Vagrantfile (vagrant writes .vagrant/ next to it)."""
    d = tmp_path / "vagrant"
    d.mkdir(exist_ok=True)
    shutil.copy(VAGRANTFILE, d / "Vagrantfile")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVSCTL_", "VAGRANT_"))}
    env.update(VAGRANT_ENV, HOME=str(tmp_path), VAGRANT_HOME=str(tmp_path / ".vagrant.d"))
    env["VAGRANT_CHECKPOINT_DISABLE"] = "1"
    env.update(extra_env or {})
    return subprocess.run(
        ["vagrant", *args], cwd=d, env=env, capture_output=True, text=True, timeout=120
    )


def need_vagrant():
    need("vagrant")


@pytest.mark.parametrize("kubeadm", ["0", "1"])
def test_vagrant_validate(tmp_path, kubeadm):
    need_vagrant()
    p = vagrant(tmp_path, "validate", "--ignore-provider", extra_env={"OVSCTL_KUBEADM": kubeadm})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout
    assert p.stdout.count("Ignoring provider config") == 3  # node0..node2


def test_vagrant_validate_virtualbox_provider(tmp_path):
    """The VirtualBox provider's settings, validated by Vagrant's VirtualBox plugin (built in);
    VirtualBox itself is not needed for that, only a VBoxManage that tells its version."""
    need_vagrant()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "VBoxManage").write_text("#!/bin/sh\necho 7.0.14r161095\n")
    (fake / "VBoxManage").chmod(0o755)
    path = f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    p = vagrant(
        tmp_path, "validate", extra_env={"VAGRANT_DEFAULT_PROVIDER": "virtualbox", "PATH": path}
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_vagrant_validate_libvirt_provider(tmp_path):
    need_vagrant()
    # the tests' own VAGRANT_HOME: as any user (plain `pytest` runs the unit tests as
    # non-root too), the system plugins Debian installs are listed
    plugins = vagrant(tmp_path, "plugin", "list")
    if "vagrant-libvirt" not in plugins.stdout:
        pytest.fail("the vagrant-libvirt plugin is not installed: `make deps` installs it")
    p = vagrant(tmp_path, "validate", extra_env={"VAGRANT_DEFAULT_PROVIDER": "libvirt"})
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("OVSCTL_NODES", "0", "OVSCTL_NODES=0: must be an integer 1..50"),
        ("OVSCTL_NODES", "two", "OVSCTL_NODES=two: must be an integer"),
        ("OVSCTL_MEMORY", "64", "OVSCTL_MEMORY=64"),
        ("OVSCTL_SUBNET", "192.168.56.0/30", "is too small for 3 nodes"),
        ("OVSCTL_SUBNET", "fd00::/64", "must be IPv4"),
        ("OVSCTL_SUBNET", "nonsense", "not an IPv4 CIDR"),
    ],
)
def test_vagrant_rejects_bad_settings(tmp_path, var, value, message):
    need_vagrant()
    p = vagrant(tmp_path, "validate", "--ignore-provider", extra_env={var: value})
    assert p.returncode != 0 and message in p.stdout + p.stderr, p.stdout + p.stderr


# ------------------------------------------------------------------- dual-stack and IPv6-only

DUAL = ["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"]


@pytest.mark.parametrize(
    ("cluster", "pod", "ips"),
    [
        ("10.244.0.0/16,fd00:10:244::/56", "10.244.1.0/24,fd00:10:244:1::/64", None),
        ("fd00:10:244::/56,10.244.0.0/16", "fd00:10:244:1::/64,10.244.1.0/24", None),  # any order
        ("fd00:10:244::/56", "fd00:10:244:1::/64", None),  # IPv6-only: the tunnel stays IPv4
    ],
)
def test_node_dual_stack_writes_both_families(tmp_path, cluster, pod, ips):
    state, out = tmp_path / "state", tmp_path / "out"
    p = run(
        "node",
        *("--name", "node1", "--cluster-cidr", cluster, "--pod-cidr", pod),
        *("--node-ip", "fd00:172:30::b,172.30.0.11", "--cluster-state", str(state)),
        *("--out", str(out)),
    )
    assert p.returncode == 0, p.stderr
    want_cidrs = sorted(pod.split(","), key=lambda c: ":" in c)  # IPv4 first
    node = model.parse(yaml.safe_load((state / "Node-node1.yaml").read_text()))
    assert node.pod_cidrs == tuple(want_cidrs) and node.pod_cidr == want_cidrs[0]
    assert node.internal_ips == ("172.30.0.11", "fd00:172:30::b")
    assert node.internal_ip == "172.30.0.11"  # the tunnel endpoint
    assert node.labels_dict() == {"kubernetes.io/hostname": "node1"}  # as kubelet labels it
    conf = yaml.safe_load((out / "agent.yaml").read_text())
    assert conf["cluster_cidrs"] == sorted(cluster.split(","), key=lambda c: ":" in c)
    assert conf["pod_cidrs"] == want_cidrs
    assert conf["node_ips"] == ["172.30.0.11", "fd00:172:30::b"]
    assert "cluster_cidr" not in conf and "pod_cidr" not in conf


def test_node_dual_stack_config_is_accepted_by_the_agent(tmp_path):
    out = tmp_path / "out"
    p = run(
        "node",
        *("--name", "node1", *DUAL, "--pod-cidr", "10.244.1.0/24,fd00:10:244:1::/64"),
        *("--node-ip", "172.30.0.11,fd00:172:30::b", "--cluster-state", str(tmp_path / "s")),
        *("--out", str(out)),
    )
    assert p.returncode == 0, p.stderr
    cfg = agent_config.load_file(str(out / "agent.yaml")).validate()
    assert list(cfg.cluster_cidrs) == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert list(cfg.pod_cidrs) == ["10.244.1.0/24", "fd00:10:244:1::/64"]


BAD_DUAL = [
    (["--pod-cidr", "10.244.1.0/24"], "needs one pod CIDR per family of --cluster-cidr"),
    (["--pod-cidr", "10.244.1.0/24,fd00:10:245::/64"], "is not inside the cluster CIDR"),
    (["--pod-cidr", "10.244.1.0/24,fd00:10:244:1::1/64"], "host bits set (the network is"),
    (["--pod-cidr", "10.244.1.0/24,fd00:10:244:1::/127"], "too small (at most /126)"),
    (["--pod-cidr", "10.244.1.0/24,fd00:10:244:1::/129"], "not a CIDR (prefix 0..128)"),
    (["--pod-cidr", "10.244.1.0/24,fd00:10:244:1::"], "not a CIDR (ADDRESS/PREFIX"),
    (["--pod-cidr", "10.244.1.0/24,"], "an empty item"),
    (["--pod-cidr", "10.244.1.0/24,10.244.2.0/24"], "two IPv4 values"),
    (["--cluster-cidr", "fd00::/56,fd01::/56"], "two IPv6 values"),
    (["--node-ip", "fd00:172:30::b"], "needs an IPv4 address too (the VXLAN tunnel endpoint)"),
    (["--node-ip", "172.30.0.11,fd00:172:30::zz"], "not an IPv6 address"),
    (["--node-ip", "172.30.0.11,fd00:10:244:7::1"], "is inside the cluster CIDR fd00:10:244::/56"),
]


@pytest.mark.parametrize(("args", "message"), BAD_DUAL)
def test_bad_dual_stack_input_exits_2_and_writes_nothing(tmp_path, args, message):
    flags = {"--name": "n", "--out": str(tmp_path / "out"), "--cluster-state": str(tmp_path / "s")}
    flags.update({"--node-ip": "172.30.0.11", "--pod-cidr": "10.244.1.0/24,fd00:10:244:1::/64"})
    flags["--cluster-cidr"] = DUAL[1]
    flags.update(dict(zip(args[::2], args[1::2], strict=True)))
    p = run("node", *[x for kv in flags.items() for x in kv])
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert message in p.stderr and p.stderr.startswith("provision.sh: "), p.stderr
    assert p.stdout == "" and files_under(tmp_path) == []


def test_the_netns_lab_writes_dual_stack_nodes_through_the_script(tmp_path):
    lab = lab_mod.Lab("unit")
    lab.dir = str(tmp_path)
    lab.cluster_dir = str(tmp_path / "cluster")
    lab.meta_path = str(tmp_path / "lab.json")
    lab.save_meta({"cluster_cidr": DUAL[1], "source": "yaml", "nodes": {}})
    lab._provision(
        "node2", ["172.30.0.12", "fd00:172:30::c"], ["10.244.2.0/24", "fd00:10:244:2::/64"]
    )
    node = model.parse(yaml.safe_load((tmp_path / "cluster" / "Node-node2.yaml").read_text()))
    assert node.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")
    assert node.internal_ips == ("172.30.0.12", "fd00:172:30::c")
    conf = yaml.safe_load((Path(lab.node_dir("node2")) / "agent.yaml").read_text())
    assert conf["pod_cidrs"] == ["10.244.2.0/24", "fd00:10:244:2::/64"]
    assert conf["cluster_cidrs"] == ["10.244.0.0/16", "fd00:10:244::/56"]


def test_vagrantfile_dual_stack_node_calls_match_the_scripts_checks(tmp_path):
    """With OVSCTL_CLUSTER_CIDR6 the Vagrantfile's node calls carry both families; the values
    it computes pass the script's checks and make dual-stack Nodes."""
    need("ruby")
    env = dict(os.environ, OVSCTL_NODES="3", OVSCTL_CLUSTER_CIDR6="fd00:10:244::/56")
    prog = (
        "module Vagrant; def self.configure(*); end; end; load ARGV[0]; "
        "puts provision_script(0); puts provision_script(1)"
    )
    p = subprocess.run(
        ["ruby", "-e", prog, str(VAGRANTFILE)], capture_output=True, text=True, env=env
    )
    assert p.returncode == 0, p.stderr
    assert "ip -6 addr replace fd00:192:168:56::b/64 nodad dev" in p.stdout
    calls = re.findall(r"; bash \S+provision\.sh node (.*)$", p.stdout, re.M)
    assert len(calls) == 3 + 2  # node0 writes the three Node objects, each node its config
    state = tmp_path / "state"
    for k, call in enumerate(calls[:3]):
        args = call.replace("/var/lib/ovsctl-lab/cluster", str(state)).split()
        assert f"192.168.56.{10 + k},fd00:192:168:56::{10 + k:x}" in args
        assert run("node", *args).returncode == 0
    nodes = [model.parse(yaml.safe_load(f.read_text())) for f in sorted(state.iterdir())]
    assert [n.pod_cidrs for n in nodes] == [
        (f"10.244.{k}.0/24", ("fd00:10:244::/64", "fd00:10:244:1::/64", "fd00:10:244:2::/64")[k])
        for k in range(3)
    ]
    out = tmp_path / "etc"
    args = calls[4].replace("/etc/ovsctl", str(out)).split()
    assert run("node", *args).returncode == 0
    conf = yaml.safe_load((out / "agent.yaml").read_text())
    assert conf["cluster_cidrs"] == ["10.244.0.0/16", "fd00:10:244::/56"]
