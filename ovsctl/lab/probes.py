"""Looking at the lab: status, services, probes (real packets) and traces (none sent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml

from ovsctl.lab.base import (
    PROBER,
    LabError,
    _alive,
)


class LabProbes:
    """Status, probes, traces and reachability (a part of `Lab`)."""

    # -- status / exec / probe ---------------------------------------------------------------------

    def status(self) -> dict:
        meta = self.meta()
        nodes = []
        for name, info in sorted(meta["nodes"].items(), key=lambda kv: int(kv[0][4:])):
            healthy = _alive(info.get("agent_pid"), "ovsctl.cli") and self._agent_ready(name)
            nodes.append(
                {"name": name, "ip": info["ip"], "podCIDR": info["podCIDR"], "healthy": healthy}
            )
        pods = [
            {"namespace": r["namespace"], "name": r["name"], "node": r["node"], "ip": r["ip"]}
            for _k, r in sorted(self.pods().items())
        ]
        return {
            "name": self.name,
            "nodes": nodes,
            "pods": pods,
            "external": {"ip": meta["external"].get("ip"), "port": meta["external"].get("port")},
            "source": meta.get("source", "yaml"),
        }

    def pod_netns(self, pod: str) -> str:
        if "/" not in pod:
            pod = f"default/{pod}"
        rec = self.pods().get(pod)
        if rec is None:
            raise LabError(f"no pod {pod} in lab {self.name}")
        return rec["netns"]

    def services(self) -> list[dict]:
        """The Service objects in the lab's state: {namespace, name, clusterIP, ports}."""
        out = []
        for f in sorted(os.listdir(self.cluster_dir)):
            if not f.startswith("Service-"):
                continue
            with open(os.path.join(self.cluster_dir, f)) as fh:
                body = yaml.safe_load(fh) or {}
            spec, meta = body.get("spec") or {}, body.get("metadata") or {}
            if spec.get("clusterIP") in (None, "", "None"):
                continue
            out.append(
                {
                    "namespace": meta.get("namespace", "default"),
                    "name": meta.get("name"),
                    "clusterIP": spec["clusterIP"],
                    "ports": [
                        (int(p["port"]), p.get("protocol") or "TCP")
                        for p in spec.get("ports") or []
                    ],
                }
            )
        return out

    def probe(self, timeout: float = 2.0, services: bool = False) -> dict[str, bool]:
        """Every pod to every other pod on every declared port; with services=True also every
        pod to every Service port (keys "src->svc:ns/name:PORT/PROTO")."""
        pods = self.pods()
        svc_targets = []
        if services:
            for svc in self.services():
                for port, proto in svc["ports"]:
                    if proto in ("TCP", "UDP"):
                        svc_targets.append(
                            (f"svc:{svc['namespace']}/{svc['name']}", svc["clusterIP"], port, proto)
                        )
        targets = []
        for dst in pods.values():
            for _name, port, proto in dst["ports"]:
                if proto in ("TCP", "UDP"):
                    targets.append((dst, port, proto))

        def run(src):
            todo = [
                {
                    "key": f"{src['namespace']}/{src['name']}->{d['namespace']}/{d['name']}:{port}/{proto}",
                    "ip": d["ip"],
                    "port": port,
                    "proto": proto,
                }
                for d, port, proto in targets
                if d is not src
            ] + [
                {
                    "key": f"{src['namespace']}/{src['name']}->{name}:{port}/{proto}",
                    "ip": ip,
                    "port": port,
                    "proto": proto,
                }
                for name, ip, port, proto in svc_targets
            ]
            if not todo:
                return {}
            p = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    src["netns"],
                    sys.executable,
                    PROBER,
                    "--timeout",
                    str(timeout),
                ],
                input=json.dumps(todo),
                capture_output=True,
                text=True,
                timeout=timeout * 3 + 30,
            )
            if p.returncode != 0:
                raise LabError(
                    f"probe from {src['namespace']}/{src['name']} failed: {p.stderr.strip()}"
                )
            return json.loads(p.stdout)

        out: dict[str, bool] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(pods))) as pool:
            for part in pool.map(run, pods.values()):
                out.update(part)
        return dict(sorted(out.items()))

    # -- trace / reachability (ovsctl/tools/trace/: ofproto/trace on every node, nothing sent)

    def tracer(self):
        """A Tracer over every node: each agent's /cluster and /flows, each ovs-vswitchd."""
        from ovsctl.tools import trace

        try:
            return trace.lab_tracer(self)
        except trace.TraceError as e:
            raise LabError(str(e)) from None

    def trace(self, src: str, dst: str, proto: str = "tcp", dport=None, sport=40000, node=None):
        """Trace SRC -> DST starting on the source pod's node (or `node`, for an IP source),
        following the tunnel to the destination's node: a `trace.Trace` (see .to_dict())."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        try:
            return tracer.trace(src, dst, proto, dport, sport, node=node)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()

    def reachability_report(self, namespace: str | None = None) -> dict:
        """{"traced", "intended", "differences"}: every pod to every other pod on every declared
        TCP/UDP port, traced through the live pipelines (keys as probe's)."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        try:
            traced, intended, _ = trace.lab_matrix(tracer, namespace)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()
        return {
            "traced": traced,
            "intended": intended,
            "differences": trace.differences(traced, intended),
        }

    def reachability(self, namespace: str | None = None) -> dict[str, bool]:
        """What `probe()` would find, without sending a packet: exactly probe's shape."""
        return self.reachability_report(namespace)["traced"]
