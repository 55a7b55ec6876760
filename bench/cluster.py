"""A synthetic cluster for the benchmarks: nodes, namespaces, pods and NetworkPolicies as
Kubernetes dicts, deterministic for a seed. Node 0 is the node under test."""

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
            "metadata": {"name": node_name(k)},
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


def _suffix_ns(obj: dict, k: int) -> dict:
    """Copy k of an object: its namespace (and team labels / selectors) renamed."""
    import copy
    import json

    text = json.dumps(obj)
    text = re.sub(r'"(ns\d+)"', rf'"\1c{k}"', text)
    text = re.sub(r'"(t\d+)"', rf'"\1c{k}"', text)
    return copy.deepcopy(json.loads(text))


def workload(pods_n: int, local: int, n_nodes: int, policies_n: int, copies: int = 1) -> list[dict]:
    """Namespaces, pods and policies; `copies` > 1 repeats the same cluster with renamed
    namespaces and teams (and other pod IPs), so growth with copies measures the flow cost of
    the cluster's size alone, not of a changed workload shape."""
    base_pods = pods(pods_n, local, n_nodes)
    out = []
    for k in range(copies):
        for d in namespaces(pods_n) + base_pods + policies(policies_n, pods_n):
            d = _suffix_ns(d, k)
            if d["kind"] == "Pod":
                d["metadata"]["name"] = f"{d['metadata']['name']}c{k}"
                ip = (d.get("status") or {}).get("podIP")
                if ip:
                    a, b, c, slot = ip.split(".")
                    d["status"]["podIP"] = f"{a}.{b}.{c}.{int(slot) + 100 * k}"
            out.append(d)
    return out
