"""What a node's agent says (/cluster, /flows) and what a trace is asked for: the ends and
the packet."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from flows import cookie as cookies
from flows import owners
from flows.family import family
from ovsctl.tools import agentclient
from ovsctl.tools.flowview import cluster_policies, cnp_rule_name

from .parse import NotFoundError, TraceError, UnreachableError


def fetch(path: str, agent: str | None = None, timeout: float = 10) -> dict:
    """GET a JSON view (/cluster, /flows) of an agent: `agent` is its unix socket (a path or
    `unix:PATH`, default $OVSCTL_AGENT or /run/ovsctl/agent.sock) or an http:// URL."""
    try:
        return agentclient.get(path, agent, timeout)
    except agentclient.AgentUnreachable as e:
        raise UnreachableError(f"cannot read {path} from the agent: {e}") from None


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
        # ClusterNetworkPolicies by name: each rule's name, priority and action
        self.cluster_policies = cluster_policies(cluster)

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
        return next((p for p in self.local.values() if ip in pod_ips(p)), None)

    def pod_by_ip(self, ip: str) -> dict | None:
        return next((p for p in self.pods if ip in pod_ips(p)), None)

    def node_by_ip(self, ip: str) -> str | None:
        return next(
            (n for n, v in self.nodes.items() if v.get("ip") == ip or ip in (v.get("ips") or [])),
            None,
        )

    def node_of_pod_ip(self, ip: str) -> str | None:
        addr = netaddr.IPAddress(ip)
        for n, v in self.nodes.items():
            for cidr in v.get("pod_cidrs") or ([v["pod_cidr"]] if v.get("pod_cidr") else []):
                net = netaddr.IPNetwork(cidr)
                if net.version == addr.version and addr in net:
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
        if isinstance(owner, owners.ClusterPolicyRule):  # with its tier, name and action
            return cnp_rule_name(owner, self.cluster_policies.get(owner.name))
        if owner is not None:
            return owner.label()
        kind, _, rest = key.partition(":")  # FEATURE:0xID: a key only the agent knew
        return f"{kind} {rest}" if rest else kind

    def isolating(self, table: str, ip: str) -> list[str]:
        """Policies whose isolation drop for `ip` sits in IngressDefault/EgressDefault."""
        fam = family(ip) if ip else None
        if fam is None:
            return []
        field_ = fam.dst if table == "IngressDefault" else fam.src
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


def pod_ips(p: dict) -> list[str]:
    """Every address of a pod in a /cluster view (IPv4 first): `ips`, or the single `ip`."""
    return list(p.get("ips") or ([p["ip"]] if p.get("ip") else []))


def service_ips(sv: dict) -> list[str]:
    return list(sv.get("cluster_ips") or ([sv["cluster_ip"]] if sv.get("cluster_ip") else []))


def service_external_ips(sv: dict) -> list[str]:
    """A Service's LoadBalancer ingress addresses and external IPs as the agent's /cluster view
    lists them (`lb_ingress`, `external_ips`, the model's names; absent in older agents)."""
    out = []
    for key in ("lb_ingress", "external_ips"):
        for a in sv.get(key) or []:
            a = a.get("ip") if isinstance(a, dict) else a
            if a and a not in out:
                out.append(a)
    return out


def _of_family(addrs: list[str], version: int | None) -> str | None:
    """The first address of the family (`version` 4 or 6), or the first of all for None."""
    for a in addrs:
        if version is None or netaddr.IPAddress(a).version == version:
            return a
    return None


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


def family_of(spec: str) -> int | None:
    """4 or 6 when `spec` names an address (with or without a svc: prefix), else None."""
    s = spec.split(":", 1)[1] if spec.startswith("svc:") else spec
    try:
        return netaddr.IPAddress(s).version
    except (netaddr.AddrFormatError, ValueError):
        return None


def resolve(spec: str, view: NodeView, version: int | None = None) -> End:
    """'ns/name' (a pod, else a Service), 'svc:ns/name' or 'service/ns/name', a bare name (in
    namespace default), or an IP (a pod's or a ClusterIP counts as that pod or Service). A name
    resolves to its address of IP family `version` (4 or 6; None: its first, IPv4 on a
    dual-stack pod); an error names what has no address of that family."""
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
    fam = "" if version is None else f"IPv{version} "
    if ip is not None:
        for p in view.pods:
            if ip in pod_ips(p):
                return End("pod", ip, f"{p['namespace']}/{p['name']}", pod=p)
        for sv in svcs:
            if ip in service_ips(sv) or ip in service_external_ips(sv):
                return End("service", ip, f"svc:{sv['namespace']}/{sv['name']}", service=sv)
        return End("ip", ip, ip)
    ns, _, name = s.rpartition("/")
    ns = ns or "default"
    if not want_svc:
        for p in view.pods:
            if (p["namespace"], p["name"]) == (ns, name):
                addr = _of_family(pod_ips(p), version)
                if addr is None:
                    raise TraceError(f"pod {ns}/{name} has no {fam}address")
                return End("pod", addr, f"{ns}/{name}", pod=p)
    for sv in svcs:
        if (sv["namespace"], sv["name"]) == (ns, name):
            addr = _of_family(service_ips(sv), version)
            if addr is None:
                raise TraceError(f"Service {ns}/{name} has no {fam}ClusterIP")
            return End("service", addr, f"svc:{ns}/{name}", service=sv)
    what = "Service" if want_svc else "pod or Service"
    raise NotFoundError(f"no {what} {ns}/{name} (and {spec!r} is not an IP address)")


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

    @property
    def ipv6(self) -> bool:
        return ":" in self.nw_src

    def flow(self) -> str:
        """The packet as ofproto/trace takes it: IPv6 (tcp6, ipv6_src, ICMPv6 echo 128, the hop
        limit in nw_ttl) when its addresses are."""
        v6 = self.ipv6
        proto = ("icmp6" if self.proto == "icmp" else f"{self.proto}6") if v6 else self.proto
        f = [proto, f"in_port={self.in_port}"]
        if self.tun_dst:
            f += [f"tun_src={self.tun_src}", f"tun_dst={self.tun_dst}", "tun_id=0"]
        src, dst = ("ipv6_src", "ipv6_dst") if v6 else ("nw_src", "nw_dst")
        f += [
            f"dl_src={self.dl_src}",
            f"dl_dst={self.dl_dst}",
            f"{src}={self.nw_src}",
            f"{dst}={self.nw_dst}",
            f"nw_ttl={self.ttl}",
        ]
        if self.proto == "icmp":
            # ofproto/trace's flow syntax names the ICMPv6 fields icmpv6_type / icmpv6_code
            f += ["icmpv6_type=128", "icmpv6_code=0"] if v6 else ["icmp_type=8", "icmp_code=0"]
        else:
            f += [f"{self.proto}_src={self.sport}", f"{self.proto}_dst={self.dport}"]
            if self.proto == "tcp":
                f.append("tcp_flags=syn")
        return ",".join(f)

    def describe(self) -> str:
        if self.proto == "icmp":
            kind = "icmp6" if self.ipv6 else "icmp"
            return f"{kind} {self.nw_src} -> {self.nw_dst} (echo request)"
        if self.ipv6:
            return f"{self.proto} [{self.nw_src}]:{self.sport} -> [{self.nw_dst}]:{self.dport}"
        return f"{self.proto} {self.nw_src}:{self.sport} -> {self.nw_dst}:{self.dport}"
