"""The deployment manifests (manifests/*.yaml) and the Containerfile, checked offline.

- Every object validates against the Kubernetes OpenAPI schemas (the strict JSON schemas that
  the kubernetes-validate package bundles: unknown fields and wrong types are errors), for the
  oldest and the newest Kubernetes version it knows; mutated copies prove the check bites.
- The pieces agree with the code: the agent config in the ConfigMap loads with ovsctl's own
  loader, the conflist is accepted by the shim (run as kubelet runs it, after the init
  container's script installed both), the ClusterRole reads exactly the kinds the cluster-state
  model accepts, and the DaemonSet mounts every path the config, the shim and the init
  container use.
- The ClusterNetworkPolicy CRD (05-clusternetworkpolicy-crd.yaml, and the experimental one in
  manifests/optional/) is checked further in test_manifests_crd.py, the CNI install (the init
  container's script, the shim run on the installed conflist) in test_manifests_cni.py.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from ovsctl import config as agent_config
from ovsctl.cli import build_parser
from ovsctl.k8s.model import KINDS

ROOT = Path(__file__).resolve().parents[2]
SHIM_PATH = ROOT / "cni-shim" / "ovsctl-cni"
MANIFESTS = ROOT / "manifests"
CONTAINERFILE = ROOT / "Containerfile"
NAMESPACE = "ovsctl-system"

# The agent's HTTP endpoint for probes and metrics (the agent serves it on the node's
# addresses; with hostNetwork the pod's port is the node's port).
HEALTH_PORT = 9476
HEALTH_PORT_NAME = "metrics-health"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"

# The only access the agent has to the API: read the kinds of its cluster state.
READ_VERBS = {"get", "list", "watch"}
RBAC_RESOURCES = {
    ("", "nodes"),
    ("", "namespaces"),
    ("", "pods"),
    ("", "services"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy.networking.k8s.io", "clusternetworkpolicies"),
    ("discovery.k8s.io", "endpointslices"),
}


# --------------------------------------------------------------------------- loading


def _documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = _documents()


def _one(kind: str, name: str) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _agent_ds() -> dict:
    return _one("DaemonSet", "ovsctl-agent")


def _ovs_ds() -> dict:
    return _one("DaemonSet", "ovsctl-ovs")


def _configmap() -> dict:
    return _one("ConfigMap", "ovsctl-config")


def _pod(ds: dict) -> dict:
    return ds["spec"]["template"]["spec"]


def _container(ds: dict, name: str, init: bool = False) -> dict:
    key = "initContainers" if init else "containers"
    found = [c for c in _pod(ds).get(key, []) if c["name"] == name]
    assert len(found) == 1, f"{ds['metadata']['name']}: no {key[:-1]} {name}"
    return found[0]


def _host_path(ds: dict, container: dict, path: str) -> str | None:
    """The node path that `path` inside `container` is, or None if it is not on a hostPath
    (or on a volume of another type). The longest mountPath that holds `path` wins."""
    volumes = {v["name"]: v for v in _pod(ds).get("volumes", [])}
    best = None
    for m in container.get("volumeMounts", []):
        mount = PurePosixPath(m["mountPath"])
        p = PurePosixPath(path)
        if (p == mount or mount in p.parents) and (
            best is None or len(mount.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = m
    if best is None:
        return None
    vol = volumes[best["name"]]
    if "hostPath" not in vol:
        return None
    rel = PurePosixPath(path).relative_to(best["mountPath"])
    return str(PurePosixPath(vol["hostPath"]["path"]) / rel)


def _volume_of(ds: dict, container: dict, path: str) -> tuple[dict, dict]:
    """(mount, volume) holding `path` inside `container`."""
    volumes = {v["name"]: v for v in _pod(ds).get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mount = PurePosixPath(m["mountPath"])
        p = PurePosixPath(path)
        if p == mount or mount in p.parents:
            return m, volumes[m["name"]]
    raise AssertionError(f"{container['name']}: nothing mounted at {path}")


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _conflist() -> dict:
    return json.loads(_configmap()["data"]["10-ovsctl.conflist"])


def _plugin_conf(conflist: dict, plugin_type: str = "ovsctl-cni", libcni: str = "1.1") -> dict:
    """The network configuration a runtime hands one plugin of a conflist: libcni copies the
    list's cniVersion and name into it. libcni up to 1.1 (containerd 1.6/1.7, podman 4) reads
    "cniVersion"; libcni 1.2+ picks the highest of "cniVersions" it knows (up to 1.1.0)."""
    plugins = [p for p in conflist["plugins"] if p.get("type") == plugin_type]
    assert len(plugins) == 1, conflist
    conf = dict(plugins[0])
    version = conflist["cniVersion"]
    if libcni != "1.1" and conflist.get("cniVersions"):
        known = [v for v in conflist["cniVersions"] if v in ("0.4.0", "1.0.0", "1.1.0")]
        version = max(known, key=lambda v: tuple(map(int, v.split("."))))
    conf["cniVersion"] = version
    conf["name"] = conflist["name"]
    return conf


def _load_shim():
    module_path = str(SHIM_PATH.with_name("ovsctl_cni.py"))
    loader = importlib.machinery.SourceFileLoader("ovsctl_cni_for_manifests", module_path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in cni-shim/
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def _load_agent_config(tmp_path) -> agent_config.AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(_configmap()["data"]["agent.yaml"])
    return agent_config.load_file(str(path))


# --------------------------------------------------------------------------- schemas

_VERSIONS = sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
K8S_VERSIONS = list(dict.fromkeys([_VERSIONS[0], _VERSIONS[-1]]))  # oldest, newest


def _strict_validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_manifest_set_is_complete():
    names = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert names == {
        "00-namespace.yaml",
        "01-rbac.yaml",
        "02-config.yaml",
        "03-agent-daemonset.yaml",
        "04-ovs-daemonset.yaml",
        "05-clusternetworkpolicy-crd.yaml",  # checked further in test_manifests_crd.py
    }
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "DaemonSet",
            "CustomResourceDefinition",
        ]
    )
    cluster_scoped = ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")
    for _, doc in DOCS:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS], ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS]
)
def test_manifest_validates_against_openapi_schema(doc, version):
    _strict_validate(doc, version)


def _set(obj: dict, path: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value


def _delete(obj: dict, path: str) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        obj = obj[k]
    del obj[keys[-1]]


MUTATIONS = [
    # (id, dotted path in the agent DaemonSet, new value or "DELETE")
    ("unknown-container-field", "spec.template.spec.containers.0.volumeMount", []),
    ("unknown-spec-field", "spec.updateStrtegy", {"type": "RollingUpdate"}),
    ("unknown-probe-field", "spec.template.spec.containers.0.livenessProbe.httpGet.url", "/x"),
    ("bool-as-string", "spec.template.spec.hostNetwork", "true"),
    ("port-as-string", "spec.template.spec.containers.0.ports.0.containerPort", "9476"),
    ("list-as-map", "spec.template.spec.tolerations", {"operator": "Exists"}),
    ("missing-container-name", "spec.template.spec.containers.0.name", "DELETE"),
    ("missing-selector", "spec.selector", "DELETE"),
]


@pytest.mark.parametrize("path,value", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_schema_check_rejects_mutated_daemonset(path, value):
    doc = copy.deepcopy(_agent_ds())
    _strict_validate(doc, K8S_VERSIONS[-1])  # the original passes
    if value == "DELETE":
        _delete(doc, path)
    else:
        _set(doc, path, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        _strict_validate(doc, K8S_VERSIONS[-1])


def test_schema_check_rejects_mutated_rbac_and_configmap():
    role = copy.deepcopy(_one("ClusterRole", "ovsctl-agent"))
    role["rules"][0]["verbs"] = "get"  # a string, not a list
    with pytest.raises(kubernetes_validate.ValidationError):
        _strict_validate(role, K8S_VERSIONS[-1])
    cm = copy.deepcopy(_configmap())
    cm["data"]["mtu"] = 1450  # ConfigMap data values are strings
    with pytest.raises(kubernetes_validate.ValidationError):
        _strict_validate(cm, K8S_VERSIONS[-1])


# --------------------------------------------------------------------------- RBAC


def test_clusterrole_is_read_only_on_exactly_the_cluster_state_kinds():
    role = _one("ClusterRole", "ovsctl-agent")
    granted = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/URLs
        if rule["resources"] == ["services/status"]:  # the one write: the LB pool's status
            assert rule == {"apiGroups": [""], "resources": ["services/status"],
                            "verbs": ["patch"]}  # fmt: skip
            continue
        assert set(rule["verbs"]) == READ_VERBS, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in group and "*" not in resource, rule
                assert "/" not in resource, rule  # no subresources (pods/exec, ...)
                granted.add((group, resource))
    assert granted == RBAC_RESOURCES
    assert {"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]} in role[
        "rules"
    ]  # the LB pool's writer patches status.loadBalancer.ingress
    # ... and that is every kind the cluster-state model accepts.
    model = set()
    for kind, info in KINDS.items():
        group = info.api_version.rpartition("/")[0]
        plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
        model.add((group, plural))
    assert model == RBAC_RESOURCES


def test_no_other_rbac_objects():
    rbac = [d for _, d in DOCS if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert sorted(d["kind"] for d in rbac) == ["ClusterRole", "ClusterRoleBinding"]


def test_binding_gives_the_role_to_the_agents_service_account():
    binding = _one("ClusterRoleBinding", "ovsctl-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "ovsctl-agent",
    }
    sa = _one("ServiceAccount", "ovsctl-agent")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert _pod(_agent_ds())["serviceAccountName"] == sa["metadata"]["name"]
    # The OVS pods need no API access: they must not borrow the agent's account.
    assert "serviceAccountName" not in _pod(_ovs_ds())


# --------------------------------------------------------------------------- agent config


def test_agent_config_is_accepted_by_the_config_loader(tmp_path):
    cfg = _load_agent_config(tmp_path)  # raises ConfigError on an unknown key or a bad type
    text = _configmap()["data"]["agent.yaml"]
    assert cfg.source == "api", "the ConfigMap should select the Kubernetes API source"
    # What the cluster decides per node is not pinned in the ConfigMap.
    assert cfg.pod_cidr == "" and cfg.node_ip == "" and cfg.cluster_state == ""
    assert "node_name" not in yaml.safe_load(text)
    # With the per-node values the API source supplies, the whole config is valid.
    cfg.node_name = "node-a"
    cfg.validate()
    assert cfg.datapath_type == "system"
    # no setting that no longer does anything (the OpenFlow listener is gone)
    assert cfg.deprecated() == []
    assert not [k for k in yaml.safe_load(text) if k.startswith("of_listen")]


def test_agent_config_dual_stack_variant_is_accepted(tmp_path):
    """The commented dual-stack line of the ConfigMap, put in place of cluster_cidr, is a
    config the agent accepts (issue 16)."""
    text = _configmap()["data"]["agent.yaml"]
    lines = text.splitlines()
    dual = [ln for ln in lines if ln.startswith("# cluster_cidrs:")]
    assert len(dual) == 1, "the ConfigMap shows the dual-stack cluster_cidrs"
    lines = [ln for ln in lines if not ln.startswith("cluster_cidr:")]
    lines[lines.index(dual[0])] = dual[0][2:]
    path = tmp_path / "agent.yaml"
    path.write_text("\n".join(lines) + "\nnode_name: node-a\n")
    cfg = agent_config.load_file(str(path)).validate()
    assert list(cfg.cluster_cidrs) == ["10.244.0.0/16", "fd00:10:244::/56"]


def test_agent_config_rejects_a_typo(tmp_path):
    """The loader the test relies on does reject what it does not know."""
    path = tmp_path / "agent.yaml"
    path.write_text(_configmap()["data"]["agent.yaml"] + "cni_sockt: /x\n")
    with pytest.raises(agent_config.ConfigError, match="unknown key"):
        agent_config.load_file(str(path))


def test_agent_command_line_is_accepted_and_reads_the_configmap(tmp_path):
    ds = _agent_ds()
    agent = _container(ds, "agent")
    env_names = {e["name"] for e in agent["env"]}
    argv = [*agent["command"], *agent["args"]]
    assert argv[:2] == ["ovsctl", "agent"]
    # Every $(VAR) the kubelet expands is defined in the container.
    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(argv)):
        assert ref in env_names, ref
    node_name = next(e for e in agent["env"] if e["name"] == "NODE_NAME")
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    args = build_parser().parse_args(
        [a.replace("$(NODE_NAME)", "node-a") for a in argv[1:]]
    )  # argv[0] is the program
    assert args.cfg_node_name == "node-a"
    mount, volume = _volume_of(ds, agent, args.config)
    assert volume["configMap"]["name"] == _configmap()["metadata"]["name"]
    key = str(PurePosixPath(args.config).relative_to(mount["mountPath"]))
    assert key in _configmap()["data"]
    # The file as the agent reads it, flags on top.
    (tmp_path / key).write_text(_configmap()["data"][key])
    args.config = str(tmp_path / key)
    cfg = agent_config.from_args(args)
    assert cfg.node_name == "node-a"


def test_agent_mounts_every_host_path_its_config_uses(tmp_path):
    cfg = _load_agent_config(tmp_path)
    ds = _agent_ds()
    agent = _container(ds, "agent")
    ovsdb = cfg.ovsdb.removeprefix("unix:")
    assert cfg.ovsdb.startswith("unix:")
    # Same path inside and on the node: the shim (on the node) and OVS (on the node or in
    # 04-ovs-daemonset) use the node's paths.
    for path in (
        cfg.cni_socket,
        ovsdb,
        os.path.join(cfg.ovs_rundir, cfg.bridge + ".mgmt"),
        os.path.join(cfg.state_dir, "10.244.3.0-24.json"),
    ):
        assert _host_path(ds, agent, path) == path, path
    # The state directory is its own hostPath, not the node's /var/lib.
    m, v = _volume_of(ds, agent, cfg.state_dir)
    assert m["mountPath"] == cfg.state_dir == v["hostPath"]["path"]
    # The CNI socket's directory: never a whole /run.
    m, v = _volume_of(ds, agent, cfg.cni_socket)
    assert m["mountPath"] == os.path.dirname(cfg.cni_socket)


def test_agent_daemonset_host_access():
    ds = _agent_ds()
    pod = _pod(ds)
    agent = _container(ds, "agent")
    assert pod["hostNetwork"] is True
    assert not pod.get("hostPID")
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert agent["securityContext"]["privileged"] is True
    by_path = {m["mountPath"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    expected = {
        "/var/run/openvswitch": "/var/run/openvswitch",
        "/var/run/netns": "/var/run/netns",
        "/var/lib/ovsctl": "/var/lib/ovsctl",
        "/run/ovsctl": "/run/ovsctl",
        "/run/xtables.lock": "/run/xtables.lock",
    }
    for mount_path, host in expected.items():
        vol = volumes[by_path[mount_path]["name"]]
        assert vol["hostPath"]["path"] == host
    assert by_path["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert volumes[by_path["/run/xtables.lock"]["name"]]["hostPath"]["type"] == "FileOrCreate"
    for c in pod["initContainers"] + pod["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, (c["name"], m["name"])
    # Every volume is used by someone.
    used = {m["name"] for c in pod["initContainers"] + pod["containers"] for m in c["volumeMounts"]}
    assert used == set(volumes)


def test_probes_use_the_health_port_and_paths():
    agent = _container(_agent_ds(), "agent")
    ports = {p["name"]: p for p in agent["ports"]}
    assert ports[HEALTH_PORT_NAME]["containerPort"] == HEALTH_PORT
    assert ports[HEALTH_PORT_NAME].get("protocol", "TCP") == "TCP"
    # With hostNetwork, a hostPort must be absent or equal to the containerPort.
    assert ports[HEALTH_PORT_NAME].get("hostPort", HEALTH_PORT) == HEALTH_PORT

    def target(probe):
        get = probe["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            port = ports[port]["containerPort"]
        return port, get["path"], get.get("scheme", "HTTP")

    assert target(agent["livenessProbe"]) == (HEALTH_PORT, LIVENESS_PATH, "HTTP")
    assert target(agent["startupProbe"]) == (HEALTH_PORT, LIVENESS_PATH, "HTTP")
    assert target(agent["readinessProbe"]) == (HEALTH_PORT, READINESS_PATH, "HTTP")
    # The port and paths are documented in the file's header.
    header = (MANIFESTS / "03-agent-daemonset.yaml").read_text().split("\napiVersion:")[0]
    for needle in (f"port {HEALTH_PORT}", LIVENESS_PATH, READINESS_PATH, "/metrics"):
        assert needle in header, needle
    # If the agent grows a setting for it, the ConfigMap (or its default) must agree.
    for key in ("health_port", "metrics_port", "http_port"):
        if key in agent_config.FIELD_TYPES:
            data = yaml.safe_load(_configmap()["data"]["agent.yaml"])
            value = data.get(key, getattr(agent_config.AgentConfig(), key))
            assert int(value) == HEALTH_PORT, key


# --------------------------------------------------------------------------- OVS DaemonSet


def test_ovs_daemonset_is_opt_in_and_shares_the_run_directory(tmp_path):
    ovs = _ovs_ds()
    pod = _pod(ovs)
    assert pod["nodeSelector"] == {"ovsctl.io/run-ovs": "true"}
    assert pod["hostNetwork"] is True
    assert not pod.get("hostPID")
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert ovs["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    cfg = _load_agent_config(tmp_path)
    agent_ds = _agent_ds()
    agent = _container(agent_ds, "agent")
    for name in ("ovsdb-server", "ovs-vswitchd"):
        c = _container(ovs, name)
        rundir = _env(c)["OVS_RUNDIR"]
        # The agent finds this DaemonSet's sockets on the node where its config says.
        assert _host_path(ovs, c, rundir + "/db.sock") == _host_path(
            agent_ds, agent, cfg.ovsdb.removeprefix("unix:")
        )
        assert _host_path(ovs, c, rundir) == _host_path(agent_ds, agent, cfg.ovs_rundir)
        if name == "ovsdb-server":
            assert '--remote="punix:${OVS_RUNDIR}/db.sock"' in c["args"][0]
        else:
            assert '"unix:${OVS_RUNDIR}/db.sock"' in c["args"][0]
        ctl = c["livenessProbe"]["exec"]["command"]
        assert ctl[:2] == ["ovs-appctl", "-t"] and ctl[2] == f"{rundir}/{name}.ctl"
        assert f'--unixctl="${{OVS_RUNDIR}}/{name}.ctl"' in c["args"][0]
    for c in pod["initContainers"] + pod["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in {v["name"] for v in pod["volumes"]}


def _scripts():
    for _, doc in DOCS:
        if doc["kind"] != "DaemonSet":
            continue
        pod = _pod(doc)
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c.get("command", [])[:2] == ["/bin/sh", "-c"]:
                yield f"{doc['metadata']['name']}/{c['name']}", c


@pytest.mark.parametrize("name,container", list(_scripts()), ids=[n for n, _ in _scripts()])
def test_container_scripts_parse_and_avoid_kubelet_expansion(name, container):
    script = container["args"][0]
    proc = subprocess.run(
        ["/bin/sh", "-n", "-c", script], capture_output=True, text=True, timeout=10, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # kubelet rewrites $(NAME) in args before the shell sees it: use ${NAME} and `...`.
    assert "$(" not in script, name


# --------------------------------------------------------------------------- image


def test_all_containers_use_the_one_image():
    images = set()
    for _, doc in DOCS:
        if doc["kind"] == "DaemonSet":
            pod = _pod(doc)
            for c in pod.get("initContainers", []) + pod["containers"]:
                images.add(c["image"])
    assert len(images) == 1, images


def test_containerfile():
    text = CONTAINERFILE.read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert re.match(r"FROM\s+\S*python:3\.\d+-slim-(bookworm|trixie)\b", lines[0]), lines[0]
    for pkg in ("openvswitch-switch", "iproute2", "iptables"):
        assert re.search(rf"\b{pkg}\b", text), pkg
    assert "pip install" in text
    for path in ("setup.cfg", "pyproject.toml", "README.md", "ovsctl", "flows", "cni-shim"):
        assert re.search(rf"^COPY\s.*\b{re.escape(path)}\b", text, re.M), path
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])$", text, re.M).group(1)
    assert json.loads(entry) == ["ovsctl", "agent"]
    # The files the package build reads are the ones copied (README.md: long_description).
    assert "file: README.md" in (ROOT / "setup.cfg").read_text()


def test_docs_describe_the_health_endpoint():
    text = (ROOT / "docs/deploy.md").read_text()
    for needle in (str(HEALTH_PORT), LIVENESS_PATH, READINESS_PATH, "/metrics"):
        assert needle in text, needle
