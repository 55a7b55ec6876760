"""Call a CNI plugin exactly as kubelet (through containerd's CRI) does: CNI_* environment,
the network config on stdin, the result or error object on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIM = os.path.join(REPO, "cni-shim", "ovsctl-cni")


def cni_env(
    command: str,
    container_id: str,
    netns: str,
    ifname: str = "eth0",
    namespace: str = "default",
    name: str = "pod",
    pod_uid: str | None = None,
    cni_path: str = "/opt/cni/bin",
) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id};"
            f"K8S_POD_UID={pod_uid or uuid.uuid4()}"
        ),
    }


def run(
    env: dict, stdin: str, plugin: str = SHIM, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the plugin; the caller reads returncode and stdout (JSON result or error)."""
    cmd = [plugin] if os.access(plugin, os.X_OK) and plugin != SHIM else [sys.executable, plugin]
    return subprocess.run(
        cmd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def netconf(socket_path: str, version: str = "1.0.0", **extra) -> dict:
    conf = {"cniVersion": version, "name": "ovsctl", "type": "ovsctl-cni", "socket": socket_path}
    conf.update(extra)
    return conf


def add(
    socket_path: str,
    container_id: str,
    netns: str,
    namespace: str,
    name: str,
    version: str = "1.0.0",
) -> dict:
    p = run(
        cni_env("ADD", container_id, netns, namespace=namespace, name=name),
        json.dumps(netconf(socket_path, version)),
    )
    if p.returncode != 0:
        raise RuntimeError(
            f"CNI ADD {namespace}/{name} failed: {p.stdout.strip() or p.stderr.strip()}"
        )
    return json.loads(p.stdout)


def delete(socket_path: str, container_id: str, netns: str, namespace: str, name: str) -> None:
    p = run(
        cni_env("DEL", container_id, netns, namespace=namespace, name=name),
        json.dumps(netconf(socket_path)),
    )
    if p.returncode != 0:
        raise RuntimeError(
            f"CNI DEL {namespace}/{name} failed: {p.stdout.strip() or p.stderr.strip()}"
        )
