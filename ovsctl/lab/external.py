"""The lab's outside: the external host's routes to LoadBalancer and external IPs (the cloud
load balancer, ovsctl/lab/lbaddr.py), nodes stopped and started (a node that goes away and
comes back: the node controller's Ready condition), and Node labels applied."""

from __future__ import annotations

import json
import os
import signal

import yaml

from ovsctl.lab import lbaddr
from ovsctl.lab.base import LabError, _stop_pid, _wait, in_ns
from ovsctl.util import atomic_write


class LabExternal:
    """External routes, node stop/start, Node labels (a part of `Lab`)."""

    # -- the cloud load balancer: routes on the external host ---------------------------------------

    def service_bodies(self) -> list[dict]:
        out = []
        for f in sorted(os.listdir(self.cluster_dir)):
            if f.startswith("Service-"):
                with open(os.path.join(self.cluster_dir, f)) as fh:
                    out.append(yaml.safe_load(fh) or {})
        return out

    def stopped_nodes(self, meta: dict | None = None) -> set[str]:
        meta = meta or self.meta()
        return {n for n, info in meta["nodes"].items() if info.get("stopped")}

    def sync_ext_routes(self, meta: dict | None = None) -> dict:
        """Route every LoadBalancer ingress address and external IP from the external host to
        the nodes (ECMP; see lbaddr.ext_routes); returns {address: [next hops]}."""
        meta = meta or self.meta()
        nodes = {n: info.get("ips") or [info["ip"]] for n, info in meta["nodes"].items()}
        want = lbaddr.ext_routes(
            self.service_bodies(), self.pods(), nodes, self.stopped_nodes(meta)
        )
        ext = meta["external"]["netns"]
        have = {}
        for fam in ("-4", "-6"):
            out = in_ns(ext, "ip", "-j", fam, "route", "show", "proto", lbaddr.PROTO, check=False)
            have.update(lbaddr.parse_routes(json.loads(out.stdout or "[]")))
        for cmd in lbaddr.route_commands(want, have):
            in_ns(ext, "ip", *cmd)
        return want

    def ext_routes(self) -> dict:
        """The external host's routes to Service addresses: {address: [next hops]}."""
        ext = self.meta()["external"]["netns"]
        have = {}
        for fam in ("-4", "-6"):
            out = in_ns(ext, "ip", "-j", fam, "route", "show", "proto", lbaddr.PROTO, check=False)
            have.update(lbaddr.parse_routes(json.loads(out.stdout or "[]")))
        return have

    def _ext_hashing(self, ext: str) -> None:
        """ECMP by the 5-tuple (as a cloud load balancer spreads flows), not by addresses only."""
        in_ns(ext, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1", check=False)
        in_ns(ext, "sysctl", "-qw", "net.ipv6.fib_multipath_hash_policy=1", check=False)

    # -- nodes going away and coming back ---------------------------------------------------------

    def _node_file(self, node: str) -> str:
        return os.path.join(self.cluster_dir, f"Node-{node}.yaml")

    def _edit_node(self, node: str, edit) -> None:
        with open(self._node_file(node)) as fh:
            body = yaml.safe_load(fh) or {}
        edit(body)
        atomic_write(self._node_file(node), yaml.safe_dump(body))

    def set_node_ready(self, node: str, ready: bool) -> None:
        """The node controller's part: the Node's Ready condition."""

        def edit(body):
            conds = [
                c
                for c in (body.setdefault("status", {}).get("conditions") or [])
                if c.get("type") != "Ready"
            ]
            conds.append(
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "NodeStopped",
                }
            )
            body["status"]["conditions"] = conds

        self._edit_node(node, edit)

    def node_stop(self, node: str, log=print) -> None:
        """The node goes away: its agent is killed and its uplink goes down (it answers
        nothing on the underlay, its tunnels are dead); the Node turns NotReady at once (as the
        node controller would, without its grace period); the external host stops routing to
        it (the cloud load balancer's health check). Its pods' namespaces stay, unreachable."""
        with self.locked():
            meta = self.meta()
            info = self._node_info(meta, node)
            _stop_pid(info.get("agent_pid"), "ovsctl.cli", signal.SIGKILL)
            info["agent_pid"] = None
            in_ns(self.ns("ul"), "ip", "link", "set", node, "down")
            info["stopped"] = True
            self.save_meta(meta)
            self.set_node_ready(node, False)
            self.sync_ext_routes(meta)
        log(f"{node}: stopped (agent killed, uplink down, Node NotReady)")

    def node_start(self, node: str, log=print) -> None:
        """The node comes back: uplink up, agent started (it resyncs its switch), Node Ready
        once the agent answers, external routes to it again."""
        with self.locked():
            meta = self.meta()
            info = self._node_info(meta, node)
            in_ns(self.ns("ul"), "ip", "link", "set", node, "up")
            if not info.get("agent_pid"):
                self._start_agent(node, info)
            info.pop("stopped", None)
            self.save_meta(meta)
            _wait(lambda: self._agent_ready(node), 60, f"agent on {node}")
            self._warm_underlay(meta)
            self.set_node_ready(node, True)
            self.sync_ext_routes(meta)
        log(f"{node}: started (Node Ready)")

    def _node_info(self, meta: dict, node: str) -> dict:
        info = meta["nodes"].get(node)
        if info is None:
            raise LabError(
                f"no node {node} in lab {self.name} ({', '.join(sorted(meta['nodes']))})"
            )
        return info

    def apply_node(self, obj, meta: dict) -> None:
        """A Node in `lab apply`: its metadata.labels are set on the lab's Node (e.g.
        topology.kubernetes.io/zone); everything else of a Node is the lab's."""
        if obj.name not in meta["nodes"]:
            raise LabError(
                f"Node {obj.name}: not a lab node ({', '.join(sorted(meta['nodes']))}); "
                "the lab makes nodes (`ovsctl lab up --nodes`), apply sets their labels"
            )
        labels = dict(obj.labels)

        def edit(body):
            body.setdefault("metadata", {})["labels"] = labels

        self._edit_node(obj.name, edit)

    # -- trace from the external host -------------------------------------------------------------

    def external_trace_ends(self, tracer, dst: str, node: str | None, family: int | None):
        """(src, dst, node) for `trace ext DST`: the external host's address as the source,
        DST (a LoadBalancer ingress address or external IP, or a Service NS/NAME or svc:NS/NAME
        with one) as that Service, entering the first node the external host routes it to
        (or `node`) from the gateway port, as the node's host forwards it into br-int."""
        import netaddr

        from ovsctl.tools.trace import TraceError
        from ovsctl.tools.trace.view import End

        svcs = self.services()
        try:
            addr = str(netaddr.IPAddress(dst))
        except (netaddr.AddrFormatError, ValueError):
            addr = None
        name = dst
        for prefix in ("svc:", "svc/", "service/"):
            name = name[len(prefix) :] if name.startswith(prefix) else name
        if addr is None and "/" not in name:
            name = f"default/{name}"
        found = None
        for sv in svcs:
            addrs = sv["loadBalancerIngress"] + sv["externalIPs"]
            if addr is not None and addr in addrs:
                found = sv
            elif addr is None and f"{sv['namespace']}/{sv['name']}" == name:
                pick = [
                    a for a in addrs if family is None or netaddr.IPAddress(a).version == family
                ]
                if not pick:
                    raise TraceError(
                        f"Service {name} has no LoadBalancer ingress address or external IP"
                        + (f" of IPv{family}" if family else "")
                    )
                found, addr = sv, pick[0]
            if found:
                break
        if found is None:
            raise TraceError(
                f"{dst}: not a LoadBalancer ingress address or external IP of a Service "
                "(ext traces traffic from the external host to those)"
            )
        version = netaddr.IPAddress(addr).version
        if family not in (None, version):
            raise TraceError(f"{addr} is not an IPv{family} address")
        ext_ip = self.external_ip(version)
        if not ext_ip:
            raise TraceError(f"the external host has no IPv{version} address")
        label = f"svc:{found['namespace']}/{found['name']}"
        sv = next(
            (
                s
                for s in tracer.any.cluster.get("services") or []
                if (s["namespace"], s["name"]) == (found["namespace"], found["name"])
            ),
            None,
        )
        if sv is None:
            raise TraceError(f"the agents do not know {label} (yet)")
        if node is None:
            by_ip = {ip: n for n, i in self.meta()["nodes"].items() for ip in i.get("ips") or []}
            hops = self.ext_routes().get(addr) or []
            node = next((by_ip[h] for h in hops if h in by_ip), None)
            node = node or next(n for n in tracer.views if n not in self.stopped_nodes())
        return End("ip", ext_ip, f"ext ({ext_ip})"), End("service", addr, label, service=sv), node
