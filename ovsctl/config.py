"""Agent configuration: typed, with defaults; unknown keys are rejected by name.

Sources, later ones winning: built-in defaults, a YAML/JSON file (`--config`), command-line
flags. Keys use snake_case in files and --kebab-case as flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field, fields

import netaddr
import yaml


class ConfigError(ValueError):
    pass


DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"


def _cidr(key: str, value) -> str:
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError) as e:
        raise ConfigError(f"{key}: {value!r} is not a CIDR ({e})") from None
    return str(net.cidr)


def _per_family(key: str, values: list[str]) -> list[str]:
    """At most one of each family, IPv4 first."""
    v4 = [v for v in values if netaddr.IPNetwork(v).version == 4]
    v6 = [v for v in values if netaddr.IPNetwork(v).version == 6]
    if len(v4) > 1 or len(v6) > 1:
        raise ConfigError(f"{key}: at most one IPv4 and one IPv6 entry, got {', '.join(values)}")
    return v4 + v6


def check_cluster_cidrs(pod_cidrs, cluster_cidrs) -> None:
    """Every family with a pod CIDR needs a cluster CIDR of that family (its pods' traffic to
    the cluster is neither masqueraded nor sent out of the node)."""
    have = {netaddr.IPNetwork(c).version for c in cluster_cidrs}
    for c in pod_cidrs:
        v = netaddr.IPNetwork(c).version
        if v not in have:
            raise ConfigError(
                f"pod CIDR {c} is IPv{v} but cluster_cidrs has no IPv{v} CIDR "
                "(e.g. --cluster-cidrs 10.244.0.0/16,fd00:10:244::/56)"
            )


@dataclass
class AgentConfig:
    node_name: str = field(default_factory=socket.gethostname)
    pod_cidr: str = ""  # this node's pod CIDR, e.g. 10.244.0.0/24 (the first of pod_cidrs)
    # one pod CIDR per family, IPv4 first (dual-stack); default: [pod_cidr] or the Node's
    # spec.podCIDRs
    pod_cidrs: list = field(default_factory=list)
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    cluster_cidrs: list = field(default_factory=list)  # one per family; default [cluster_cidr]
    bridge: str = "br-int"
    datapath_type: str = "system"  # "system" on real nodes, "netdev" (userspace) in the lab
    gateway_name: str = "ovsctl-gw0"
    gateway_ofport: int = 2
    ovsdb: str = "unix:/run/openvswitch/db.sock"
    # deprecated, ignored: the agent connects to <ovs_rundir>/<bridge>.mgmt and listens on
    # nothing (accepted so that old config files still load; the agent warns when set)
    of_listen_host: str = ""
    of_listen_port: int = 0
    cni_socket: str = "/run/ovsctl/cni.sock"
    state_dir: str = "/var/lib/ovsctl"
    node_ip: str = ""  # tunnel endpoint; default: the Node's InternalIP from the cluster state
    # the node's own addresses, one per family (IPv6: NodePorts, masquerade, always-allowed);
    # default: [node_ip] and the Node's InternalIPs
    node_ips: list = field(default_factory=list)
    cluster_state: str = ""  # directory of Kubernetes YAML (the embedded source); "" = none
    source: str = ""  # "yaml" (cluster_state), "api" (Kubernetes API), "none"; "" = from the above
    api_server: str = ""  # Kubernetes API URL; "" = in-cluster config, else the kubeconfig
    kubeconfig: str = ""  # kubeconfig path for source api ("" = in-cluster or ~/.kube/config)
    api_ca: str = ""  # CA bundle for api_server (https); "" = the system's CAs
    api_token_file: str = ""  # bearer token file for api_server, re-read when it changes
    resync_period: float = 0.0  # seconds between full relists of the API; 0 = never
    metrics_host: str = "0.0.0.0"  # /metrics /healthz /readyz (TCP: every pod reaches it)
    metrics_port: int = 9476  # 0 = no HTTP endpoint
    api_socket: str = "/run/ovsctl/agent.sock"  # /status /flows /cluster, root only; "" = off
    tunnel_name: str = "ovsctl-tun0"
    tunnel_ofport: int = 1
    ovs_rundir: str = "/var/run/openvswitch"  # where <bridge>.mgmt lives (the OpenFlow channel)
    masquerade: bool = True  # SNAT pod traffic leaving the cluster CIDR to the node's IP
    mtu: int = 0  # pod MTU; 0 = the node uplink's MTU minus the VXLAN overhead
    cni_timeout: float = 30.0  # bound on every wait inside one CNI request
    audit_log: str = "/var/log/ovsctl/audit.log"  # NetworkPolicy audit lines; "" = logger only
    audit_rate: int = 100  # audit packet-ins per second at most (switch meter + agent)
    log_level: str = "info"
    # ovsctl's own LoadBalancer pool (Services of loadBalancerClass ovsctl.io/lb): ranges
    # "A-B" and CIDRs, both families, e.g. [172.30.0.192/28, fd00:172:30::c0/124]
    lb_pool: list = field(default_factory=list)
    # the addresses Services may use as spec.externalIPs (CIDRs, both families); empty: any
    # address ovsctl does not refuse anyway (pod CIDRs, ClusterIPs, node addresses, ...)
    external_ip_cidrs: list = field(default_factory=list)

    def validate(self) -> AgentConfig:
        if not self.source:
            self.source = "yaml" if self.cluster_state else "none"
        if self.source not in ("yaml", "api", "none"):
            raise ConfigError(f"source: must be yaml, api or none, not {self.source!r}")
        if self.source == "yaml" and not self.cluster_state:
            raise ConfigError("source yaml needs cluster_state (a directory of Kubernetes YAML)")
        if self.source == "none" and not (self.pod_cidr or self.pod_cidrs):
            raise ConfigError(
                "pod_cidr is required without a cluster state source "
                "(e.g. --pod-cidr 10.244.0.0/24, or --cluster-state DIR, or --source api)"
            )
        if self.resync_period < 0:
            raise ConfigError("resync_period: must be 0 (never) or positive")
        for key in ("api_ca", "api_token_file"):
            path = getattr(self, key)
            if not path:
                continue
            if self.source != "api" or not self.api_server:
                raise ConfigError(f"{key}: only with source api and api_server (a URL)")
            if not os.path.isfile(path):
                raise ConfigError(f"{key}: {path} is not a file")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{key}: {path} is not readable")
        if self.api_token_file and self.api_server.startswith("http://"):
            raise ConfigError("api_token_file: would send the token in the clear to an http:// URL")
        if self.api_socket and not os.path.isabs(self.api_socket):
            raise ConfigError(f"api_socket: {self.api_socket!r} must be an absolute path")
        if len(self.api_socket.encode()) > 107:
            raise ConfigError(f"api_socket: {self.api_socket!r} is too long for a unix socket")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: {self.metrics_port} out of range (0 = off)")
        self._validate_addresses()
        if self.datapath_type not in ("system", "netdev"):
            raise ConfigError(
                f"datapath_type: must be 'system' or 'netdev', not {self.datapath_type!r}"
            )
        if self.mtu and not 576 <= self.mtu <= 65535:
            raise ConfigError(f"mtu: {self.mtu} out of range 576..65535 (0 = detect)")
        for key in ("gateway_name", "tunnel_name"):
            if not 0 < len(getattr(self, key)) <= 15:
                raise ConfigError(f"{key}: {getattr(self, key)!r} must be 1-15 characters")
        if self.cni_timeout <= 0:
            raise ConfigError("cni_timeout: must be positive")
        if not 1 <= self.audit_rate <= 100000:
            raise ConfigError(f"audit_rate: {self.audit_rate} out of range 1..100000 (per second)")
        self._validate_lb_pool()
        self.external_ip_cidrs = [
            _cidr("external_ip_cidrs", c) for c in dict.fromkeys(self.external_ip_cidrs)
        ]
        self.log_level = self.log_level.lower()
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: {self.log_level!r} is not debug/info/warning/error")
        return self

    def _validate_lb_pool(self) -> None:
        try:
            parse_pool(self.lb_pool)
        except PoolError as e:
            raise ConfigError(str(e)) from None

    def _validate_addresses(self) -> None:
        """pod_cidr(s), cluster_cidr(s), node_ip(s): canonical, one per family, IPv4 first; the
        single keys are the first of the lists (given both, they must agree)."""
        if self.pod_cidr:
            self.pod_cidr = _cidr("pod_cidr", self.pod_cidr)
        cidrs = _per_family("pod_cidrs", [_cidr("pod_cidrs", c) for c in self.pod_cidrs])
        if cidrs and self.pod_cidr and self.pod_cidr not in cidrs:
            raise ConfigError(
                f"pod_cidr {self.pod_cidr} and pod_cidrs {', '.join(cidrs)} disagree: "
                "pod_cidr must be one of pod_cidrs (or leave it out)"
            )
        if not cidrs and self.pod_cidr:
            cidrs = [self.pod_cidr]
        for c in cidrs:
            net = netaddr.IPNetwork(c)
            most = 30 if net.version == 4 else 126
            if net.prefixlen > most:
                raise ConfigError(f"pod_cidrs: {c} is too small (at most /{most})")
        self.pod_cidrs = cidrs
        self.pod_cidr = cidrs[0] if cidrs else ""
        self.cluster_cidr = _cidr("cluster_cidr", self.cluster_cidr) if self.cluster_cidr else ""
        ccidrs = _per_family(
            "cluster_cidrs", [_cidr("cluster_cidrs", c) for c in self.cluster_cidrs]
        )
        if ccidrs:
            # the default cluster_cidr gives way to cluster_cidrs; one set by hand must agree
            if self.cluster_cidr not in ccidrs and self.cluster_cidr != DEFAULT_CLUSTER_CIDR:
                raise ConfigError(
                    f"cluster_cidr {self.cluster_cidr} and cluster_cidrs {', '.join(ccidrs)} "
                    "disagree: cluster_cidr must be one of cluster_cidrs (or leave it out)"
                )
        elif self.cluster_cidr:
            ccidrs = [self.cluster_cidr]
        self.cluster_cidrs = ccidrs
        self.cluster_cidr = ccidrs[0] if ccidrs else ""
        check_cluster_cidrs(self.pod_cidrs, self.cluster_cidrs)
        if self.node_ip:
            try:
                self.node_ip = str(netaddr.IPAddress(self.node_ip, version=4))
            except (netaddr.AddrFormatError, ValueError):
                raise ConfigError(f"node_ip: {self.node_ip!r} is not an IPv4 address") from None
        ips = []
        for a in self.node_ips:
            try:
                ips.append(str(netaddr.IPAddress(a)))
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise ConfigError(f"node_ips: {a!r} is not an IP address") from None
        ips = _per_family("node_ips", ips)
        v4 = [a for a in ips if netaddr.IPAddress(a).version == 4]
        if self.node_ip and v4 and v4[0] != self.node_ip:
            raise ConfigError(
                f"node_ip {self.node_ip} and node_ips {', '.join(ips)} disagree: the IPv4 "
                "address of node_ips must be node_ip"
            )
        if self.node_ip and not v4:
            ips.insert(0, self.node_ip)
        self.node_ips = ips

    def deprecated(self) -> list[str]:
        """Settings given that no longer do anything, each with what replaced it."""
        out = []
        for key in ("of_listen_host", "of_listen_port"):
            if getattr(self, key):
                out.append(
                    f"{key} is deprecated and ignored: the agent listens for OpenFlow on nothing; "
                    f"it connects to {self.ovs_rundir}/{self.bridge}.mgmt"
                )
        return out

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in fields(AgentConfig)}


def _coerce(key: str, value):
    typ = FIELD_TYPES[key]
    try:
        if typ == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ == "float":
            return float(value)
        if typ == "list":  # a list of strings, or one comma-separated string (flags)
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return [v.strip() for v in value]
        if not isinstance(value, str | int | float):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {typ}, got {value!r}") from None


def from_mapping(
    data: dict, base: AgentConfig | None = None, origin: str = "config"
) -> AgentConfig:
    cfg = base or AgentConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings")
    for key, value in data.items():
        k = str(key).replace("-", "_")
        if k not in FIELD_TYPES:
            raise ConfigError(f"{origin}: unknown key {key!r} (known: {', '.join(FIELD_TYPES)})")
        setattr(cfg, k, _coerce(k, value))
    return cfg


def load_file(path: str, base: AgentConfig | None = None) -> AgentConfig:
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    return from_mapping(data or {}, base, origin=path)


HELP = {
    "node_name": "this node's name (its Node object in the cluster state)",
    "pod_cidr": "this node's pod CIDR; default: the Node's spec.podCIDR",
    "pod_cidrs": "this node's pod CIDRs, one per family, comma-separated (dual-stack: "
    "10.244.1.0/24,fd00:10:244:1::/64); default: [pod_cidr], else the Node's spec.podCIDRs",
    "cluster_cidr": "every pod CIDR together; traffic leaving it is masqueraded",
    "cluster_cidrs": "the cluster CIDRs, one per family, comma-separated "
    "(10.244.0.0/16,fd00:10:244::/56); default: [cluster_cidr]",
    "bridge": "the integration bridge the agent owns",
    "datapath_type": "system (kernel datapath) or netdev (userspace, for labs)",
    "gateway_name": "internal port holding the pod CIDR's first address",
    "gateway_ofport": "OpenFlow port number requested for the gateway",
    "ovsdb": "OVSDB to connect to",
    "of_listen_host": "deprecated, ignored: the agent connects to OVS_RUNDIR/BRIDGE.mgmt",
    "of_listen_port": "deprecated, ignored: the agent connects to OVS_RUNDIR/BRIDGE.mgmt",
    "cni_socket": "unix socket the ovsctl-cni shim talks to (mode 0600)",
    "state_dir": "IPAM allocations and the flow round live here",
    "node_ip": "tunnel endpoint (IPv4); default: the Node's InternalIP",
    "node_ips": "the node's addresses, one per family, comma-separated (the IPv6 one is used "
    "for NodePorts and masquerade); default: [node_ip] and the Node's InternalIPs",
    "cluster_state": "directory of Kubernetes YAML to watch (the embedded source)",
    "source": "yaml, api or none; default: yaml with --cluster-state, else none",
    "api_server": "Kubernetes API URL for source api; default: in-cluster, else kubeconfig",
    "kubeconfig": "kubeconfig file for source api",
    "api_ca": "CA bundle (PEM) that signs api_server's certificate",
    "api_token_file": "file holding the bearer token for api_server (re-read when it changes, "
    "as projected service account tokens rotate)",
    "resync_period": "seconds between full relists of the Kubernetes API (0, the default: "
    "never; a watch resumes from its resourceVersion and a 410 Gone relists)",
    "metrics_host": "address of the /metrics /healthz /readyz endpoint (TCP)",
    "metrics_port": "port of that endpoint (0 = off)",
    "api_socket": "unix socket (mode 0600) of /status /flows /cluster for the ovsctl tools "
    '("" = off)',
    "tunnel_name": "the flow-based VXLAN port",
    "tunnel_ofport": "OpenFlow port number requested for the tunnel",
    "ovs_rundir": "OVS run directory: the agent's OpenFlow channel is its <bridge>.mgmt socket",
    "masquerade": "true/false: SNAT pod traffic leaving the cluster CIDR to the node IP",
    "mtu": "pod MTU; 0 = the uplink's MTU minus 50 (VXLAN)",
    "cni_timeout": "seconds: bound on each wait inside one CNI request",
    "audit_log": 'file for the audit lines of policies annotated ovsctl.io/audit: "true" '
    '("" = only the ovsctl.audit logger)',
    "audit_rate": "audited connections logged per second at most (switch meter + agent)",
    "log_level": "debug, info, warning or error",
    "lb_pool": "addresses for Services of loadBalancerClass ovsctl.io/lb, comma-separated ranges "
    "A-B and CIDRs, both families (172.30.0.192/28,fd00:172:30::c0/124); every agent needs "
    "the same pool",
    "external_ip_cidrs": "CIDRs Services may use as spec.externalIPs, comma-separated, both "
    "families; empty = any address not refused anyway (pod CIDRs, ClusterIPs, node "
    "addresses, reserved, link-local, loopback, multicast)",
}


def add_flags(parser) -> None:
    """One --flag per setting, defaulting to None so only given flags override."""
    for f in fields(AgentConfig):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=f"cfg_{f.name}",
            default=None,
            metavar=f.type.upper(),
            help=f"{HELP.get(f.name, '')} (default: {_default(f)})",
        )


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.type == "list":
        return "[]"
    return "hostname" if f.name == "node_name" else "-"


def from_args(args) -> AgentConfig:
    cfg = load_file(args.config) if getattr(args, "config", None) else AgentConfig()
    overrides = {
        f.name: getattr(args, f"cfg_{f.name}")
        for f in fields(AgentConfig)
        if getattr(args, f"cfg_{f.name}", None) is not None
    }
    return from_mapping(overrides, cfg, origin="flags").validate()


# -- lb_pool: ovsctl's own LoadBalancer addresses (the agent's reconcile/lbpool.py uses them) --


class PoolError(ValueError):
    pass


@dataclass(frozen=True)
class Range:
    first: int
    last: int
    version: int

    def __contains__(self, ip: netaddr.IPAddress) -> bool:
        return ip.version == self.version and self.first <= int(ip) <= self.last

    def __str__(self) -> str:
        v = self.version
        return f"{netaddr.IPAddress(self.first, v)}-{netaddr.IPAddress(self.last, v)}"


def parse_pool(entries, key: str = "lb_pool") -> tuple[Range, ...]:
    """The ranges of `entries` ("A-B" with A <= B of one family, or a CIDR: every address of
    it), sorted by family then address. Overlapping entries are an error naming both."""
    out: list[tuple[Range, str]] = []
    for entry in entries:
        text = str(entry).strip()
        try:
            if "-" in text:
                a, b = (netaddr.IPAddress(p.strip()) for p in text.split("-", 1))
                if a.version != b.version:
                    raise PoolError(f"{key}: {text!r} mixes IPv4 and IPv6")
                if int(a) > int(b):
                    raise PoolError(f"{key}: {text!r} ends before it starts")
                r = Range(int(a), int(b), a.version)
            else:
                if "/" not in text:
                    raise ValueError("neither A-B nor a CIDR")
                net = netaddr.IPNetwork(text)
                if net.ip != net.network:
                    raise PoolError(f"{key}: {text!r} has host bits set (did you mean {net.cidr}?)")
                r = Range(int(net.first), int(net.last), net.version)
        except PoolError:
            raise
        except (netaddr.AddrFormatError, ValueError, TypeError) as e:
            raise PoolError(
                f"{key}: {text!r} is neither a range A-B nor a CIDR ({e}); e.g. "
                "172.30.0.192/28, 172.30.0.192-172.30.0.207 or fd00:172:30::c0/124"
            ) from None
        for other, otext in out:
            if other.version == r.version and r.first <= other.last and other.first <= r.last:
                raise PoolError(f"{key}: {text!r} overlaps {otext!r}")
        out.append((r, text))
    return tuple(sorted((r for r, _ in out), key=lambda r: (r.version, r.first)))
