"""What a node's agent says (/cluster, /flows) and what a trace is asked for: the ends and
the packet."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows import cookie as cookies
from flows import owners
from ovsctl.tools import agentclient

from .parse import TraceError


def fetch(path: str, agent: str | None = None, timeout: float = 10) -> dict:
    """GET a JSON view (/cluster, /flows) of an agent: `agent` is its unix socket (a path or
    `unix:PATH`, default $OVSCTL_AGENT or /run/ovsctl/agent.sock) or an http:// URL."""
    try:
        return agentclient.get(path, agent, timeout)
    except agentclient.AgentUnreachable as e:
        raise TraceError(f"cannot read {path} from the agent: {e}") from None


class NodeView:
    """One node as its agent sees it: /cluster and /flows."""

    def __init__(self, cluster: dict, flows: dict):
        self.cluster, self.flows = cluster, flows
        self.name: str = cluster["node"]
        self.node_ip: str = cluster.get("node_ip") or ""
        self.gateway: dict = cluster.get("gateway") or {}
        self.tunnel_ofport: int | None = cluster.get("tunnel_ofport")
        self.pods: list[dict] = [p for p in cluster.get("pods") or [] if p.get("ip")]
        self.local = {(p["namespace"], p["name"]): p for p in self.pods if p.get("local")}
        self.owners = {int(k, 16): v for k, v in (flows.get("owners") or {}).items()}
        self.pod_by_owner = {
            owners.Pod(*p["local"]["key"].rsplit("/", 1)).key: p for p in self.local.values()
        }
        self.nodes = {n["name"]: n for n in cluster.get("nodes") or []}

    @property
    def pod_cidr(self) -> str:
        n = self.nodes.get(self.name) or {}
        return n.get("pod_cidr") or ""

    def port_name(self, ofport: int) -> str:
        if ofport == self.gateway.get("ofport"):
            return "gateway"
        if ofport == self.tunnel_ofport:
            return "tunnel"
        for p in self.local.values():
            if p["local"]["ofport"] == ofport:
                return f"pod {p['namespace']}/{p['name']}"
        return f"port {ofport}"

    def local_pod_at(self, ofport: int) -> dict | None:
        return next((p for p in self.local.values() if p["local"]["ofport"] == ofport), None)

    def local_pod_ip(self, ip: str) -> dict | None:
        return next((p for p in self.local.values() if p["ip"] == ip), None)

    def node_by_ip(self, ip: str) -> str | None:
        return next((n for n, v in self.nodes.items() if v.get("ip") == ip), None)

    def node_of_pod_ip(self, ip: str) -> str | None:
        for n, v in self.nodes.items():
            if v.get("pod_cidr") and netaddr.IPAddress(ip) in netaddr.IPNetwork(v["pod_cidr"]):
                return n
        return None

    def owner_key(self, ck: int | None) -> str | None:
        if ck is None:
            return None
        oid = ck & cookies.OWNER_MASK
        return self.owners.get(oid) or (
            f"{cookies.decode(ck)['feature']}:{oid:#x}" if oid else None
        )

    def owner_label(self, key: str | None) -> str:
        """A readable owner: 'pod y/a', 'policy x/deny isolation', 'policy x/p ingress rule 0'."""
        if not key:
            return ""
        if key in self.pod_by_owner:
            p = self.pod_by_owner[key]
            return f"pod {p['namespace']}/{p['name']}"
        owner = owners.try_parse(key)
        if owner is not None:
            return owner.label()
        kind, _, rest = key.partition(":")  # FEATURE:0xID: a key only the agent knew
        return f"{kind} {rest}" if rest else kind

    def isolating(self, table: str, ip: str) -> list[str]:
        """Policies whose isolation drop for `ip` sits in IngressDefault/EgressDefault."""
        field_ = "nw_dst" if table == "IngressDefault" else "nw_src"
        out = set()
        for f in self.flows.get("desired") or []:
            if f["table"] != table:  # drops, or an audited policy's controller() instead
                continue
            if f"{field_}={ip}" not in f["match"].split(","):
                continue
            pol = policy_owner(f["owner"])
            if pol and pol["kind"] == "isolation":
                out.add(pol["policy"])
        return sorted(out)


def policy_owner(key: str) -> dict | None:
    """'policy/NS/NAME/ingress/IDX' or 'policy/NS/NAME/isolation' -> its parts (the shape the
    trace verdicts carry), through flows/owners.py."""
    owner = owners.try_parse(key)
    if isinstance(owner, owners.PolicyIsolation):
        return {"policy": owner.policy, "kind": "isolation"}
    if isinstance(owner, owners.PolicyRule):
        return {
            "policy": owner.policy,
            "kind": "rule",
            "direction": owner.direction,
            "rule": owner.index,
        }
    return None


# -- what to trace ------------------------------------------------------------------------------


@dataclass
class End:
    """A source or destination: a pod, a Service, or a plain IP."""

    kind: str  # "pod", "service", "ip"
    ip: str
    label: str
    pod: dict | None = None
    service: dict | None = None

    @property
    def node(self) -> str | None:
        return self.pod.get("node") if self.pod else None


def resolve(spec: str, view: NodeView) -> End:
    """'ns/name' (a pod, else a Service), 'svc:ns/name' or 'service/ns/name', a bare name (in
    namespace default), or an IP (a pod's or a ClusterIP counts as that pod or Service)."""
    svcs = view.cluster.get("services") or []
    want_svc = False
    s = spec
    for prefix in ("svc:", "svc/", "service/", "services/"):
        if s.startswith(prefix) and s.count("/") >= (2 if prefix.endswith("/") else 1):
            s, want_svc = s[len(prefix) :], True
            break
    try:
        ip = str(netaddr.IPAddress(s))
    except (netaddr.AddrFormatError, ValueError):
        ip = None
    if ip is not None:
        for p in view.pods:
            if p["ip"] == ip:
                return End("pod", ip, f"{p['namespace']}/{p['name']}", pod=p)
        for sv in svcs:
            if sv.get("cluster_ip") == ip:
                return End("service", ip, f"svc:{sv['namespace']}/{sv['name']}", service=sv)
        return End("ip", ip, ip)
    ns, _, name = s.rpartition("/")
    ns = ns or "default"
    if not want_svc:
        for p in view.pods:
            if (p["namespace"], p["name"]) == (ns, name):
                return End("pod", p["ip"], f"{ns}/{name}", pod=p)
    for sv in svcs:
        if (sv["namespace"], sv["name"]) == (ns, name):
            if not sv.get("cluster_ip"):
                raise TraceError(f"Service {ns}/{name} has no ClusterIP")
            return End("service", sv["cluster_ip"], f"svc:{ns}/{name}", service=sv)
    what = "Service" if want_svc else "pod or Service"
    raise TraceError(f"no {what} {ns}/{name} (and {spec!r} is not an IP address)")


def default_port(dst: End, proto: str) -> int | None:
    if proto == "icmp":
        return None
    if dst.kind == "service":
        for p in dst.service.get("ports") or []:
            if p["protocol"].lower() == proto:
                return p["port"]
        raise TraceError(f"{dst.label} has no {proto.upper()} port")
    if dst.kind == "pod":
        for _n, port, pr in dst.pod.get("ports") or []:
            if pr.lower() == proto:
                return port
    raise TraceError(f"{dst.label} declares no {proto.upper()} port: give --dport")


@dataclass
class Packet:
    proto: str
    nw_src: str
    nw_dst: str
    sport: int | None
    dport: int | None
    in_port: int
    dl_src: str
    dl_dst: str
    ttl: int = 64
    tun_src: str | None = None
    tun_dst: str | None = None

    def flow(self) -> str:
        f = [self.proto, f"in_port={self.in_port}"]
        if self.tun_dst:
            f += [f"tun_src={self.tun_src}", f"tun_dst={self.tun_dst}", "tun_id=0"]
        f += [
            f"dl_src={self.dl_src}",
            f"dl_dst={self.dl_dst}",
            f"nw_src={self.nw_src}",
            f"nw_dst={self.nw_dst}",
            f"nw_ttl={self.ttl}",
        ]
        if self.proto == "icmp":
            f += ["icmp_type=8", "icmp_code=0"]
        else:
            f += [f"{self.proto}_src={self.sport}", f"{self.proto}_dst={self.dport}"]
            if self.proto == "tcp":
                f.append("tcp_flags=syn")
        return ",".join(f)

    def describe(self) -> str:
        if self.proto == "icmp":
            return f"icmp {self.nw_src} -> {self.nw_dst} (echo request)"
        return f"{self.proto} {self.nw_src}:{self.sport} -> {self.nw_dst}:{self.dport}"
