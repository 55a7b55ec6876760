"""The lab's pods: `apply` and `delete` of manifests, as the control plane and kubelet would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import yaml

from flows.family import ordered
from ovsctl.k8s import model
from ovsctl.lab import clusterip, kubelet, lbaddr
from ovsctl.lab.base import (
    RESPONDER,
    LabError,
    _stop_pid,
    sh,
    spawn,
)


class LabPods:
    """Applying and deleting objects, scheduling and plugging pods (a part of `Lab`)."""

    # -- apply / delete ---------------------------------------------------------------------------

    def apply(self, files: list[str], log=print) -> list:
        objs = self._load(files)
        with self.locked():
            meta = self.meta()
            pods = self.pods()
            for obj in objs:
                if obj.key[0] == "Node" and obj.name not in meta["nodes"]:
                    self.apply_node(obj, meta)  # raises: not a lab node
            # namespaces first, pods last: policies and services are in place before pods start
            order = {
                "Node": 0,  # its labels (zones) before the pods and Services that use them
                "Namespace": 0,
                "NetworkPolicy": 1,
                "ClusterNetworkPolicy": 1,
                "Service": 2,
                "EndpointSlice": 3,
                "Pod": 4,
            }
            todo = sorted(objs, key=lambda o: order.get(o.key[0], 9))
            pod_objs = [o for o in todo if o.key[0] == "Pod"]
            refused = []  # Services the API server would refuse: the others still apply
            for obj in todo:
                if obj.key[0] == "Service":
                    try:
                        obj = self._allocate(obj)
                    except LabError as e:
                        refused.append(str(e))
                        log(f"error: {e}")
                        continue
                if obj.key[0] == "Node":
                    self.apply_node(obj, meta)
                    log(f"node/{obj.name} labels set")
                elif obj.key[0] != "Pod":
                    self.write_object(obj)
                    log(f"{obj.key[0].lower()}/{obj.name} applied")
            stopped = self.stopped_nodes(meta)
            names = sorted(n for n in meta["nodes"] if n not in stopped) or sorted(meta["nodes"])
            placed = []
            for obj in pod_objs:
                pkey = f"{obj.namespace}/{obj.name}"
                if pkey in pods:
                    if pods[pkey]["labels"] != dict(obj.labels):
                        pods[pkey]["labels"] = dict(obj.labels)
                        self._write_pod(obj, pods[pkey])
                        log(f"pod/{pkey} labels updated")
                    continue
                node = obj.node_name or names[sum(1 for p in pods.values()) % len(names)]
                if node not in meta["nodes"]:
                    raise LabError(
                        f"Pod {pkey}: spec.nodeName {node} is not a lab node ({', '.join(names)})"
                    )
                pods[pkey] = {
                    "namespace": obj.namespace,
                    "name": obj.name,
                    "node": node,
                    "netns": self.ns(f"p.{obj.namespace}.{obj.name}"),
                    "labels": dict(obj.labels),
                    "ports": [[p.name, p.port, p.protocol] for p in obj.ports],
                }
                placed.append((obj, pods[pkey]))
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda op: self._start_pod(*op), placed))
            failed = [r for r in results if isinstance(r, Exception)]
            for (obj, rec), r in zip(placed, results, strict=True):
                if isinstance(r, Exception):
                    pods.pop(f"{obj.namespace}/{obj.name}", None)
                else:
                    log(f"pod/{obj.namespace}/{obj.name} on {rec['node']}: {' '.join(rec['ips'])}")
            self.save_pods(pods)
            if placed:
                self._warm_underlay(meta)  # new ports made the switches forget their neighbours
            self.sync_ext_routes(meta)  # LoadBalancer and external IPs (ovsctl/lab/lbaddr.py)
            if failed or refused:
                raise LabError("; ".join(refused + [str(e) for e in failed]))
        return objs

    def _write_pod(self, obj, rec: dict) -> None:
        body = model.to_dict(obj)
        body.setdefault("spec", {})["nodeName"] = rec["node"]
        body["metadata"]["labels"] = rec["labels"]
        if rec.get("ip"):
            ready = "True" if rec.get("ready", True) else "False"
            body["status"] = {
                "podIP": rec["ip"],
                "podIPs": [{"ip": a} for a in rec.get("ips") or [rec["ip"]]],
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
            }
        self.write_object(model.parse(body))

    def set_ready(self, pod: str, ready: bool, log=print) -> None:
        """Flip a pod's Ready condition (as a failing readiness probe would): Services stop
        (or start again) sending new connections to it."""
        if "/" not in pod:
            pod = f"default/{pod}"
        with self.locked():
            pods = self.pods()
            rec = pods.get(pod)
            if rec is None:
                raise LabError(f"no pod {pod} in lab {self.name}")
            rec["ready"] = ready
            ns, name = pod.split("/", 1)
            fname = os.path.join(self.cluster_dir, f"Pod-{ns}.{name}.yaml")
            with open(fname) as fh:
                self._write_pod(model.parse(yaml.safe_load(fh)), rec)
            self.save_pods(pods)
            self.sync_ext_routes()  # externalTrafficPolicy Local: nodes with a ready endpoint
        log(f"pod/{pod} {'ready' if ready else 'not ready'}")

    def _allocate(self, obj):
        """The control plane's part for a Service: its ClusterIPs (one per family it asks for,
        from SERVICE_CIDR / SERVICE_CIDR6) and node ports (30000-32767) where the manifest has
        none; a re-applied Service keeps its own. LabError if the API server would refuse it."""
        body = obj.obj()
        spec = body.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return obj
        used_ips, used_ports, mine, used_lb, mine_body = set(), set(), {}, set(), {}
        for f in os.listdir(self.cluster_dir):
            if not f.startswith("Service-"):
                continue
            with open(os.path.join(self.cluster_dir, f)) as fh:
                other = yaml.safe_load(fh) or {}
            ospec, ometa = other.get("spec") or {}, other.get("metadata") or {}
            if (ometa.get("namespace"), ometa.get("name")) == (obj.namespace, obj.name):
                mine, mine_body = ospec, other
                continue
            used_lb |= set(lbaddr.ingress_ips(other))
            used_ips.add(ospec.get("clusterIP"))
            used_ips |= set(ospec.get("clusterIPs") or [])
            used_ports |= {p.get("nodePort") for p in ospec.get("ports") or []}
        # ClusterIPs per family, as the API server allocates them (ovsctl/lab/clusterip.py)
        changed = clusterip.allocate(
            spec,
            mine,
            used_ips,
            clusterip.cluster_families(self.meta().get("cluster_cidr", "")),
            f"Service {obj.namespace}/{obj.name}",
        )
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            mine_ports = {
                (p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
                for p in mine.get("ports") or []
            }
            for p in spec.get("ports") or []:
                if p.get("nodePort"):
                    used_ports.add(p["nodePort"])
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    port = mine_ports.get((p.get("port"), p.get("protocol") or "TCP"))
                    if not port or port in used_ports:
                        port = next(n for n in range(30000, 32768) if n not in used_ports)
                    p["nodePort"] = port
                    used_ports.add(port)
                    changed = True
        # status.loadBalancer.ingress, as an external allocator would (ovsctl/lab/lbaddr.py)
        ref = f"Service {obj.namespace}/{obj.name}"
        changed = lbaddr.fill_ingress(body, mine_body, used_lb, ref) or changed
        return model.parse(body) if changed else obj

    def _start_pod(self, obj, rec: dict):
        """Kubelet's part for one pod: netns, CNI ADD, the responder, the pod in the state."""
        ns = rec["netns"]
        try:
            sh("ip", "netns", "add", ns)
            self._write_pod(obj, rec)  # the API has the pod (and its labels) before kubelet runs it
            rec["cid"] = uuid.uuid4().hex
            res = kubelet.add(
                self.socket(rec["node"]),
                rec["cid"],
                f"/var/run/netns/{ns}",
                obj.namespace,
                obj.name,
            )
            # every address of the result (one per family), IPv4 first; "ip" is the first
            rec["ips"] = list(ordered(a["address"].split("/")[0] for a in res["ips"]))
            rec["ip"] = rec["ips"][0]
            args = []
            for _name, port, proto in rec["ports"]:
                args += [f"--{proto.lower()}", str(port)] if proto in ("TCP", "UDP") else []
            rec["pid"] = spawn(
                ns,
                [sys.executable, RESPONDER, "--tag", self.dir, *args],
                os.path.join(self.dir, "pods", f"{obj.namespace}.{obj.name}.log"),
            )
            self._write_pod(obj, rec)
            return rec
        except Exception as e:  # noqa: BLE001 - undo this pod, report it
            self._stop_pod(rec)
            return LabError(f"pod {obj.namespace}/{obj.name}: {e}")

    def _stop_pod(self, rec: dict) -> None:
        self.remove_object(("Pod", rec["namespace"], rec["name"]))
        _stop_pid(rec.get("pid"), "responder.py")
        if rec.get("cid"):
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                kubelet.delete(
                    self.socket(rec["node"]),
                    rec["cid"],
                    f"/var/run/netns/{rec['netns']}",
                    rec["namespace"],
                    rec["name"],
                )
        sh("ip", "netns", "del", rec["netns"], check=False)

    def delete(self, files: list[str], log=print) -> None:
        objs = self._load(files)
        with self.locked():
            pods = self.pods()
            for obj in objs:
                kind = obj.key[0]
                if kind == "Pod":
                    rec = pods.pop(f"{obj.namespace}/{obj.name}", None)
                    if rec is None:
                        log(f"pod/{obj.namespace}/{obj.name} not found")
                        continue
                    self.remove_object(obj.key)
                    self._stop_pod(rec)
                    self.save_pods(pods)
                    log(f"pod/{obj.namespace}/{obj.name} deleted (CNI DEL on {rec['node']})")
                elif kind == "Node":
                    raise LabError(f"Node {obj.name}: the lab's nodes go with `ovsctl lab down`")
                else:
                    self.remove_object(obj.key)
                    log(f"{kind.lower()}/{obj.name} deleted")
            self.sync_ext_routes()

    @staticmethod
    def _load(files: list[str]) -> list:
        objs = []
        for f in files:
            if not os.path.exists(f):
                raise LabError(f"{f}: no such file or directory")
            try:
                objs += [model.parse(d) for d in model.load_documents(f)]
            except (model.ModelError, ValueError) as e:
                raise LabError(f"{f}: {e}") from None
        return objs
