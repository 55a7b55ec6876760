"""A synthetic cluster for the benchmarks: nodes, namespaces, pods, NetworkPolicies and
ClusterNetworkPolicies as Kubernetes dicts, deterministic for a seed. Node 0 is the node under
test."""

from __future__ import annotations

import random
import re

# The workload grows like a real cluster: more pods means more namespaces of the same size,
# each with its own policies; namespace selectors name a team (two namespaces).
PODS_PER_NAMESPACE = 100
APPS = ("web", "api", "db", "cache", "queue", "auth", "search", "batch")
ROLES = ("frontend", "backend", "ops")


def node_name(k: int) -> str:
    return f"node{k}"


def node_ip(k: int) -> str:
    return f"192.168.{100 + k // 250}.{k % 250 + 1}"


def nodes(n: int) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node_name(k), "labels": {"zone": f"z{k % 3}"}},
            "spec": {"podCIDR": f"10.{64 + k // 256}.{k % 256}.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": node_ip(k)}]},
        }
        for k in range(n)
    ]


def n_namespaces(pods: int) -> int:
    return max(1, pods // PODS_PER_NAMESPACE)


def namespaces(pods: int) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"ns{i}", "labels": {"team": f"t{i // 2}"}},
        }
        for i in range(n_namespaces(pods))
    ]


def pod(i: int, node: int, ip: str | None, rnd: random.Random, n_ns: int) -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod{i}",
            "namespace": f"ns{i % n_ns}",
            "labels": {"app": rnd.choice(APPS), "role": rnd.choice(ROLES)},
        },
        "spec": {
            "nodeName": node_name(node),
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                }
            ],
        },
    }
    if ip:
        body["status"] = {"podIP": ip, "phase": "Running"}
    return body


def pods(total: int, local: int, n_nodes: int, seed: int = 1) -> list[dict]:
    """`local` pods on node0 (without IPs: they get them from CNI ADD), the rest spread over
    the other nodes with IPs from their pod CIDRs."""
    rnd = random.Random(seed)
    n_ns = n_namespaces(total)
    out = [pod(i, 0, None, rnd, n_ns) for i in range(local)]
    for i in range(local, total):
        k = 1 + (i - local) % (n_nodes - 1)
        slot = 2 + (i - local) // (n_nodes - 1)
        out.append(pod(i, k, f"10.{64 + k // 256}.{k % 256}.{slot}", rnd, n_ns))
    return out


def policies(n: int, pods: int, seed: int = 2) -> list[dict]:
    rnd = random.Random(seed)
    n_ns = n_namespaces(pods)
    out = []
    for i in range(n):
        ns = f"ns{i % n_ns}"
        kind = i % 4
        if kind == 0:  # pods of one app from pods of a role in same namespace, a named port
            ingress = [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": rnd.choice(ROLES)}}}],
                    "ports": [{"port": "http"}],
                }
            ]
        elif kind == 1:  # from namespaces of a team, and an ipBlock
            ingress = [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": f"t{(i % n_ns) // 2}"}}},
                        {"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.1.0/24"]}},
                    ],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                }
            ]
        elif kind == 2:  # namespace + pod selector combined, two ports
            ingress = [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"team": f"t{rnd.randrange(max(1, n_ns // 2))}"}
                            },
                            "podSelector": {"matchLabels": {"app": rnd.choice(APPS)}},
                        }
                    ],
                    "ports": [{"port": 8080}, {"port": 9090}],
                }
            ]
        else:  # egress to an app, matchExpressions
            ingress = []
        spec: dict = {
            "podSelector": {"matchLabels": {"app": rnd.choice(APPS)}},
            "policyTypes": ["Ingress"] if kind != 3 else ["Egress"],
        }
        if kind == 3:
            spec["egress"] = [
                {
                    "to": [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "app", "operator": "In", "values": list(APPS[:3])}
                                ]
                            }
                        }
                    ],
                    "ports": [{"port": 8080}],
                }
            ]
        else:
            spec["ingress"] = ingress
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"pol{i}", "namespace": ns},
                "spec": spec,
            }
        )
    return out


CNP_API = "policy.networking.k8s.io/v1alpha2"
NS_NAME = "kubernetes.io/metadata.name"


def _teams(values) -> dict:
    return {"matchExpressions": [{"key": "team", "operator": "In", "values": sorted(values)}]}


def _tcp(port: int, end: int | None = None) -> dict:
    dp = {"number": port} if end is None else {"range": {"start": port, "end": end}}
    return {"tcp": {"destinationPort": dp}}


def cluster_policy(i: int, pods: int, rnd: random.Random) -> dict:
    """ClusterNetworkPolicy `cnp{i}`, one of ten shapes a cluster admin writes (both tiers,
    Deny/Accept/Pass, namespaces/pods/networks/nodes peers, numbered, ranged and named ports).
    Every selector names this copy's namespaces or teams (never `{}`), so a cluster twice the
    size (workload's copies) holds twice the policies of the same reach."""
    n_ns = n_namespaces(pods)
    teams = [f"t{j}" for j in range(max(1, n_ns // 2))]
    team = rnd.choice(teams)
    others = [t for t in teams if t != team] or teams
    ns = f"ns{rnd.randrange(n_ns)}"
    one_ns = {"matchLabels": {NS_NAME: ns}}
    kind = i % 10
    tier, ingress, egress = "Admin", [], []
    subject: dict = {"namespaces": {"matchLabels": {"team": team}}}
    if kind == 0:  # tenant isolation: other teams may not reach this team
        ingress = [{"action": "Deny", "from": [{"namespaces": _teams(others)}]}]
    elif kind == 1:  # monitoring may always scrape the web pods
        subject = {"pods": {"namespaceSelector": _teams(teams), "podSelector": {"matchLabels": {"app": "web"}}}}  # fmt: skip
        ingress = [{"action": "Accept", "from": [{"namespaces": one_ns}], "protocols": [_tcp(9090)]}]  # fmt: skip
    elif kind == 2:  # a namespace's traffic to the databases is NetworkPolicy's to decide
        subject = {"namespaces": one_ns}
        to = {"pods": {"namespaceSelector": {"matchLabels": {"team": team}}, "podSelector": {"matchLabels": {"app": "db"}}}}  # fmt: skip
        egress = [{"action": "Pass", "to": [to], "protocols": [_tcp(8080)]}]
    elif kind == 3:  # nobody reaches the cloud metadata service
        subject = {"namespaces": _teams(teams)}
        egress = [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}]
    elif kind == 4:  # the nodes of a zone, kubelet's port range
        to = {"nodes": {"matchLabels": {"zone": f"z{i % 3}"}}}
        egress = [{"action": "Accept", "to": [to], "protocols": [_tcp(10250, 10255)]}]
    elif kind == 5:  # baseline: a namespace is closed to the other teams by default
        tier, subject = "Baseline", {"namespaces": one_ns}
        ingress = [{"action": "Deny", "from": [{"namespaces": _teams(others)}]}]
    elif kind == 6:  # baseline: pods of a namespace may reach each other's http port
        tier, subject = "Baseline", {"namespaces": one_ns}
        peer = {"pods": {"namespaceSelector": one_ns, "podSelector": {}}}
        ingress = [{"action": "Accept", "from": [peer], "protocols": [{"destinationNamedPort": "http"}]}]  # fmt: skip
    elif kind == 7:  # baseline egress: DNS inside the team, nothing else outside the cluster
        tier = "Baseline"
        egress = [
            {
                "action": "Accept",
                "to": [{"namespaces": {"matchLabels": {"team": team}}}],
                "protocols": [{"udp": {"destinationPort": {"number": 53}}}],
            },  # fmt: skip
            {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]},
        ]
    elif kind == 8:  # the ops pods' traffic goes to NetworkPolicy, both protocols
        peer = {"pods": {"namespaceSelector": _teams(teams), "podSelector": {"matchLabels": {"role": "ops"}}}}  # fmt: skip
        ingress = [{"action": "Pass", "from": [peer], "protocols": [_tcp(8080), {"udp": {"destinationPort": {"number": 8080}}}]}]  # fmt: skip
    else:  # baseline: private networks on the NodePort range
        tier = "Baseline"
        nets = ["10.0.0.0/8", "172.16.0.0/12"]
        egress = [{"action": "Accept", "to": [{"networks": nets}], "protocols": [_tcp(30000, 32767)]}]  # fmt: skip
    spec: dict = {"tier": tier, "priority": rnd.randrange(0, 1001), "subject": subject}
    if ingress:
        spec["ingress"] = [{"name": f"in{j}", **r} for j, r in enumerate(ingress)]
    if egress:
        spec["egress"] = [{"name": f"out{j}", **r} for j, r in enumerate(egress)]
    return {"apiVersion": CNP_API, "kind": "ClusterNetworkPolicy", "metadata": {"name": f"cnp{i}"}, "spec": spec}  # fmt: skip


def cluster_policies(n: int, pods: int, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    return [cluster_policy(i, pods, rnd) for i in range(n)]


def _suffix_ns(obj: dict, k: int) -> dict:
    """Copy k of an object: its namespace (and team labels / selectors) renamed."""
    import copy
    import json

    text = json.dumps(obj)
    text = re.sub(r'"(ns\d+)"', rf'"\1c{k}"', text)
    text = re.sub(r'"(t\d+)"', rf'"\1c{k}"', text)
    return copy.deepcopy(json.loads(text))


def workload(
    pods_n: int, local: int, n_nodes: int, policies_n: int, copies: int = 1, cnps_n: int = 0
) -> list[dict]:
    """Namespaces, pods, policies and ClusterNetworkPolicies; `copies` > 1 repeats the same
    cluster with renamed namespaces, teams and ClusterNetworkPolicies (and other pod IPs), so
    growth with copies measures the flow cost of the cluster's size alone, not of a changed
    workload shape."""
    base_pods = pods(pods_n, local, n_nodes)
    base = namespaces(pods_n) + base_pods + policies(policies_n, pods_n)
    base += cluster_policies(cnps_n, pods_n)
    out = []
    for k in range(copies):
        for d in base:
            d = _suffix_ns(d, k)
            if d["kind"] == "ClusterNetworkPolicy":
                d["metadata"]["name"] = f"{d['metadata']['name']}c{k}"
            if d["kind"] == "Pod":
                d["metadata"]["name"] = f"{d['metadata']['name']}c{k}"
                ip = (d.get("status") or {}).get("podIP")
                if ip:
                    a, b, c, slot = ip.split(".")
                    d["status"]["podIP"] = f"{a}.{b}.{c}.{int(slot) + 100 * k}"
            out.append(d)
    return out
