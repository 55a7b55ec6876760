"""Looking at the lab: status, services, probes (real packets) and traces (none sent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml

from flows.family import Family, of, of_version
from ovsctl.lab import lbaddr
from ovsctl.lab.base import (
    PROBER,
    LabError,
    _alive,
)
from ovsctl.lab.clusterip import _ip


class LabProbes:
    """Status, probes, traces and reachability (a part of `Lab`)."""

    # -- status / exec / probe ---------------------------------------------------------------------

    def status(self) -> dict:
        meta = self.meta()
        nodes = []
        for name, info in sorted(meta["nodes"].items(), key=lambda kv: int(kv[0][4:])):
            healthy = _alive(info.get("agent_pid"), "ovsctl.cli") and self._agent_ready(name)
            nodes.append(
                {
                    "name": name,
                    "ip": info["ip"],
                    "ips": info.get("ips", [info["ip"]]),
                    "podCIDR": info["podCIDR"],
                    "podCIDRs": info.get("podCIDRs", [info["podCIDR"]]),
                    "healthy": healthy,
                    "stopped": bool(info.get("stopped")),  # `ovsctl lab node stop`
                }
            )
        pods = [
            {
                "namespace": r["namespace"],
                "name": r["name"],
                "node": r["node"],
                "ip": r["ip"],
                "ips": r.get("ips") or [r["ip"]],
            }
            for _k, r in sorted(self.pods().items())
        ]
        ext = meta["external"]
        return {
            "name": self.name,
            "cluster_cidr": meta["cluster_cidr"],
            "nodes": nodes,
            "pods": pods,
            "external": {
                "ip": ext.get("ip"),
                "ips": ext.get("ips") or [ext.get("ip")],
                "port": ext.get("port"),
            },
            "source": meta.get("source", "yaml"),
        }

    def family(self, family: int | None = None) -> Family:
        """The IP family to probe: `family` (4 or 6) if the lab has it, else the lab's first
        (IPv4 on a dual-stack lab, IPv6 on an IPv6-only one)."""
        have = self.families(self.meta())
        if family is None:
            return of_version(have[0])
        if family not in (4, 6):
            raise LabError(f"--family {family}: must be 4 or 6")
        if family not in have:
            raise LabError(
                f"--family {family}: lab {self.name} has no IPv{family} pods "
                f"(cluster CIDR {self.meta()['cluster_cidr']})"
            )
        return of_version(family)

    def external_ip(self, family: int | None = None) -> str:
        """The external host's address of `family` (default: the lab's first family)."""
        fam = self.family(family)
        ext = self.meta()["external"]
        return of(ext.get("ips") or [ext["ip"]], fam)

    def pod_netns(self, pod: str) -> str:
        if "/" not in pod:
            pod = f"default/{pod}"
        rec = self.pods().get(pod)
        if rec is None:
            raise LabError(f"no pod {pod} in lab {self.name}")
        return rec["netns"]

    def services(self) -> list[dict]:
        """The Service objects in the lab's state: {namespace, name, clusterIP, clusterIPs,
        ports}."""
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
                    "clusterIPs": list(spec.get("clusterIPs") or [spec["clusterIP"]]),
                    "ports": [
                        (int(p["port"]), p.get("protocol") or "TCP")
                        for p in spec.get("ports") or []
                    ],
                    "type": spec.get("type") or "ClusterIP",
                    "externalIPs": [a for a in spec.get("externalIPs") or [] if _ip(a)],
                    "loadBalancerIngress": lbaddr.ingress_ips(body),
                }
            )
        return out

    def external_service_targets(self, family: int | None = None) -> list[dict]:
        """Prober targets for every Service's LoadBalancer ingress addresses and external IPs
        (of `family`; default: the lab's first), keys "ext->svc:NS/NAME:PORT/PROTO@ADDRESS"."""
        fam = self.family(family)
        out = []
        for svc in self.services():
            addrs = svc["loadBalancerIngress"] + [
                a for a in svc["externalIPs"] if a not in svc["loadBalancerIngress"]
            ]
            for a in addrs:
                if not of([a], fam):
                    continue
                for port, proto in svc["ports"]:
                    if proto in ("TCP", "UDP"):
                        key = f"ext->svc:{svc['namespace']}/{svc['name']}:{port}/{proto}@{a}"
                        out.append({"key": key, "ip": a, "port": port, "proto": proto})
        return out

    def probe(
        self,
        timeout: float = 2.0,
        services: bool = False,
        family: int | None = None,
        only: set[str] | None = None,
    ) -> dict[str, bool]:
        """Every pod to every other pod on every declared port; with services=True also every
        pod to every Service port (keys "src->svc:ns/name:PORT/PROTO"). `family` (4 or 6)
        picks the pods' and Services' addresses of that family (default: the lab's first
        family); the keys are the same for both. A Service without a ClusterIP of the family
        is left out. `only`: the keys to probe (the others are not)."""
        fam = self.family(family)
        pods = self.pods()
        svc_targets = []
        if services:
            for svc in self.services():
                ip = of(svc["clusterIPs"], fam)
                if not ip:
                    continue
                for port, proto in svc["ports"]:
                    if proto in ("TCP", "UDP"):
                        svc_targets.append(
                            (f"svc:{svc['namespace']}/{svc['name']}", ip, port, proto)
                        )
        targets = []
        for dst in pods.values():
            for _name, port, proto in dst["ports"]:
                if proto in ("TCP", "UDP"):
                    targets.append((dst, port, proto))

        def addr(rec: dict) -> str:
            return of(rec.get("ips") or [rec["ip"]], fam)

        def run(src):
            todo = [
                {
                    "key": f"{src['namespace']}/{src['name']}->{d['namespace']}/{d['name']}:{port}/{proto}",
                    "ip": addr(d),
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
            if only is not None:
                todo = [t for t in todo if t["key"] in only]
            return self._run_prober(
                src["netns"], todo, timeout, f"{src['namespace']}/{src['name']}"
            )

        out: dict[str, bool] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(pods))) as pool:
            for part in pool.map(run, pods.values()):
                out.update(part)
        if services:  # LoadBalancer ingress and external IPs, from the external host
            out.update(self.probe_from_external(self.external_service_targets(family), timeout))
        return dict(sorted(out.items()))

    def probe_from_external(self, targets: list[dict], timeout: float = 2.0) -> dict[str, bool]:
        """Probes sent by the external host (outside the cluster): targets as the prober
        reads them, [{"key", "ip", "port", "proto"}], IPv4 or IPv6."""
        return self._run_prober(self.meta()["external"]["netns"], targets, timeout, "external host")

    def _run_prober(self, netns: str, todo: list[dict], timeout: float, who: str) -> dict:
        if not todo:
            return {}
        p = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, PROBER, "--timeout", str(timeout)],
            input=json.dumps(todo),
            capture_output=True,
            text=True,
            timeout=timeout * 3 + 30,
        )
        if p.returncode != 0:
            raise LabError(f"probe from {who} failed: {p.stderr.strip()}")
        return json.loads(p.stdout)

    # -- trace / reachability (ovsctl/tools/trace/: ofproto/trace on every node, nothing sent)

    def tracer(self):
        """A Tracer over every node: each agent's /cluster and /flows, each ovs-vswitchd."""
        from ovsctl.tools import trace

        try:
            return trace.lab_tracer(self)
        except trace.TraceError as e:
            raise LabError(str(e)) from None

    def trace(
        self, src: str, dst: str, proto: str = "tcp", dport=None, sport=40000, node=None,
        family: int | None = None,
    ):  # fmt: skip
        """Trace SRC -> DST starting on the source pod's node (or `node`, for an IP source),
        following the tunnel to the destination's node: a `trace.Trace` (see .to_dict()).
        `family`: which address of a dual-stack pod or Service (see Tracer.trace)."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        try:
            if src == "ext":  # the external host, to a LoadBalancer address or external IP
                src, dst, node = self.external_trace_ends(tracer, dst, node, family)
            return tracer.trace(src, dst, proto, dport, sport, node=node, family=family)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()

    def reachability_report(self, namespace: str | None = None, family: int | None = None) -> dict:
        """{"traced", "intended", "differences", "tiers"}: every pod to every other pod on every
        declared TCP/UDP port, traced through the live pipelines (keys as probe's), and the
        tier that decided each pair in the intent ("Admin", "NetworkPolicy", "Baseline",
        "default"); `family` 4 or 6 picks the pods' addresses of that family (default: the
        lab's first family)."""
        from ovsctl.tools import trace

        tracer = self.tracer()
        tiers: dict = {}
        try:
            traced, intended, _ = trace.lab_matrix(tracer, namespace, family, tiers)
        except trace.TraceError as e:
            raise LabError(str(e)) from None
        finally:
            tracer.close()
        return {
            "traced": traced,
            "intended": intended,
            "differences": trace.differences(traced, intended),
            "tiers": tiers,
        }

    def reachability(
        self, namespace: str | None = None, family: int | None = None
    ) -> dict[str, bool]:
        """What `probe()` would find, without sending a packet: exactly probe's shape."""
        return self.reachability_report(namespace, family)["traced"]
