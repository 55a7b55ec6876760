"""`ovsctl lab`: an N-node cluster out of network namespaces on this machine.

Layout of a lab named LAB (everything it makes carries the name, so several labs coexist and
`down` finds all of it even after a crash):

    netns LAB.ul            the underlay: a Linux bridge joining every node's uplink
    netns LAB.ext           an "external" host outside the cluster (a responder on :8080)
    netns LAB.nodeK         node K: its own ovsdb-server + ovs-vswitchd (userspace datapath,
                            own OVS_RUNDIR), br-phy holding the uplink and the node IP, br-int
                            programmed by its own ovsctl agent
    netns LAB.p.NS.NAME     one per pod, plugged in through the CNI shim as kubelet would
    /run/ovsctl-lab/LAB/    lab.json, pods.json, cluster/ (the YAML state every agent watches),
                            nodes/nodeK/ (OVS run dir, agent config, log, state, CNI socket)

The lab plays the control plane and kubelet: it writes Node objects, schedules pods
(round-robin when spec.nodeName is empty), calls the shim with CNI_* + stdin, starts a
responder on each declared containerPort and writes the pod (with its IP) into the state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

import yaml

from ovsctl.k8s import model
from ovsctl.lab.base import (
    API_PORT,
    EXTERNAL_IP,
    EXTERNAL_IP6,
    EXTERNAL_PORT,
    HERE,
    PROBER,
    PROVISION,
    RESPONDER,
    ROOT,
    SERVICE_CIDR,
    UNDERLAY,
    UNDERLAY6,
    LabError,
    in_ns,
    netns_list,
    sh,
)
from ovsctl.lab.external import LabExternal
from ovsctl.lab.nodes import LabNodes
from ovsctl.lab.ovsproc import OVS
from ovsctl.lab.pods import LabPods
from ovsctl.lab.probes import LabProbes
from ovsctl.util import atomic_write

__all__ = [
    "ROOT",
    "UNDERLAY",
    "EXTERNAL_IP",
    "EXTERNAL_IP6",
    "UNDERLAY6",
    "API_PORT",
    "SERVICE_CIDR",
    "EXTERNAL_PORT",
    "HERE",
    "RESPONDER",
    "PROBER",
    "PROVISION",
    "LabError",
    "sh",
    "in_ns",
    "netns_list",
    "Lab",
]


class Lab(LabNodes, LabPods, LabProbes, LabExternal):
    """A lab named `name`: its bookkeeping here; nodes, pods and probes in the parts."""

    def __init__(self, name: str = "lab"):
        if not name.replace("-", "").isalnum() or len(name) > 12:
            raise LabError(f"lab name {name!r}: use up to 12 letters, digits or '-'")
        self.name = name
        self.dir = os.path.join(ROOT, name)
        self.cluster_dir = os.path.join(self.dir, "cluster")
        self.meta_path = os.path.join(self.dir, "lab.json")
        self.pods_path = os.path.join(self.dir, "pods.json")

    # -- bookkeeping ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, ".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def exists(self) -> bool:
        return os.path.exists(self.meta_path)

    def meta(self) -> dict:
        try:
            with open(self.meta_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise LabError(
                f"no lab named {self.name!r} (start one with: ovsctl lab up --name {self.name})"
            ) from None

    def save_meta(self, meta: dict) -> None:
        atomic_write(self.meta_path, json.dumps(meta, indent=2))

    def pods(self) -> dict:
        try:
            with open(self.pods_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def save_pods(self, pods: dict) -> None:
        atomic_write(self.pods_path, json.dumps(pods, indent=2))

    def ns(self, what: str) -> str:
        return f"{self.name}.{what}"

    def node_dir(self, node: str) -> str:
        return os.path.join(self.dir, "nodes", node)

    def ovs(self, node: str) -> OVS:
        return OVS(os.path.join(self.node_dir(node), "ovs"), netns=self.ns(node))

    def write_object(self, obj) -> None:
        kind, ns, name = obj.key
        fname = f"{kind}-{ns + '.' if ns else ''}{name}.yaml"
        atomic_write(os.path.join(self.cluster_dir, fname), yaml.safe_dump(model.to_dict(obj)))

    def remove_object(self, key: tuple) -> None:
        kind, ns, name = key
        fname = f"{kind}-{ns + '.' if ns else ''}{name}.yaml"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.cluster_dir, fname))
