"""NetworkPolicy in the lab, as the upstream sig-network e2e suite checks it: namespaces x, y, z
with pods a, b, c each (spread over 3 nodes), every pod probing every other pod on TCP 80
("http"), TCP 81 ("alt") and UDP 53 ("dns"); each scenario compares the whole matrix with the
expected one. Expected matrices are written by hand per scenario, and cross-checked with the
independent reference evaluator in tests/netpol_reference.py."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.netpol_reference import evaluate

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = ((80, "TCP"), (81, "TCP"), (53, "UDP"))


CONTAINER_PORTS = [
    {"name": "http", "containerPort": 80, "protocol": "TCP"},
    {"name": "alt", "containerPort": 81, "protocol": "TCP"},
    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
]


def pod_doc(ns: str, name: str, labels: dict, ip: str | None = None) -> dict:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": CONTAINER_PORTS}]},
    }
    if ip:
        doc["status"] = {"podIP": ip}
    return doc


def cluster_yaml() -> str:
    docs = []
    for ns in NAMESPACES:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"ns": ns}},
            }
        )
        docs += [pod_doc(ns, p, {"pod": p}) for p in PODS]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def lab(make_lab):
    return make_lab(3, cluster_yaml())


@pytest.fixture(scope="module")
def world(lab):
    """Kubernetes-shaped namespaces and pods (with their IPs) for the reference evaluator."""
    ips = {(p["namespace"], p["name"]): p["ip"] for p in lab.status()["pods"]}
    nss = [{"metadata": {"name": ns, "labels": {"ns": ns}}} for ns in NAMESPACES]
    pods = [pod_doc(ns, p, {"pod": p}, ips[(ns, p)]) for ns in NAMESPACES for p in PODS]
    return {"namespaces": nss, "pods": pods, "ips": ips, "lab": lab}


def matrix(rule) -> dict[str, bool]:
    """rule(src_ns, src_pod, dst_ns, dst_pod, port, proto) -> allowed; all pairs, all ports."""
    out = {}
    for sn in NAMESPACES:
        for sp in PODS:
            for dn in NAMESPACES:
                for dp in PODS:
                    if (sn, sp) == (dn, dp):
                        continue
                    for port, proto in PORTS:
                        out[f"{sn}/{sp}->{dn}/{dp}:{port}/{proto}"] = bool(
                            rule(sn, sp, dn, dp, port, proto)
                        )
    return out


def netpol(name: str, ns: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def converge(lab, want: dict, timeout: float = 20.0) -> dict:
    """Probe until the matrix equals `want` (policy changes take a moment to reach every node);
    returns the last matrix. Connections tracked before the change are forgotten first: a policy
    change applies to new connections, and a probe that happened to reuse an old connection's
    source port would otherwise ride on its conntrack entry."""
    deadline = time.monotonic() + timeout
    while True:
        lab.flush_conntrack()
        got = lab.probe(timeout=1.0)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def diff(got: dict, want: dict) -> str:
    wrong = sorted(k for k in want if got.get(k) != want[k])
    return f"{len(wrong)} of {len(want)} differ: " + ", ".join(
        f"{k} {'allowed' if got.get(k) else 'blocked'} (want {'allowed' if want[k] else 'blocked'})"
        for k in wrong[:12]
    )


def apply(lab, tmp_path, policies: list[dict], name: str = "policies") -> str:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump_all(policies) if policies else "")
    if policies:
        lab.apply([str(f)], log=lambda *_: None)
    return str(f)


def run_scenario(world, tmp_path, policies, rule):
    lab = world["lab"]
    want = matrix(rule)
    ref = evaluate(world["namespaces"], world["pods"], policies)
    assert ref == want, (
        "the scenario's hand-written matrix and the reference evaluator disagree: "
        + diff(ref, want)
    )
    f = apply(lab, tmp_path, policies)
    try:
        got = converge(lab, want)
        assert got == want, diff(got, want)
    finally:
        if policies:
            lab.delete([f], log=lambda *_: None)


def cidr_of_node(world, node: str) -> str:
    st = world["lab"].status()
    return next(n["podCIDR"] for n in st["nodes"] if n["name"] == node)


ALL = ("x", "y", "z")

SCENARIOS = {
    "no-policy-allows-all": ([], lambda sn, sp, dn, dp, port, proto: True),
    "deny-all-ingress": (
        [netpol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})],
        lambda sn, sp, dn, dp, port, proto: dn != "x",
    ),
    "deny-all-egress": (
        [netpol("deny", "x", {"podSelector": {}, "policyTypes": ["Egress"]})],
        lambda sn, sp, dn, dp, port, proto: sn != "x",
    ),
    "allow-same-namespace": (
        [netpol("same", "x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "x",
    ),
    "namespace-selector": (
        [
            netpol(
                "from-y",
                "x",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or sn == "y",
    ),
    "pod-and-namespace-selector-combined": (
        [
            netpol(
                "and",
                "x",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                    "podSelector": {"matchLabels": {"pod": "b"}},
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "a") or (sn, sp) == ("y", "b"),
    ),
    "pod-or-namespace-two-peers": (
        [
            netpol(
                "or",
                "x",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                {"podSelector": {"matchLabels": {"pod": "b"}}},
                            ]
                        }
                    ],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: (
            (dn, dp) != ("x", "a") or sn == "y" or (sn, sp) == ("x", "b")
        ),
    ),
    "named-port": (
        [netpol("http", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or port == 80,
    ),
    "end-port-range": (
        [
            netpol(
                "range",
                "x",
                {
                    "podSelector": {},
                    "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "TCP",
    ),
    "udp-only": (
        [
            netpol(
                "udp",
                "x",
                {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 53}]}]},
            )
        ],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "UDP",
    ),
    "protocol-without-port": (
        [netpol("tcp", "x", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP"}]}]})],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or proto == "TCP",
    ),
    "union-of-two-policies": (
        [
            netpol(
                "p1",
                "x",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
                },
            ),
            netpol(
                "p2",
                "x",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"ns": "z"}},
                                    "podSelector": {"matchLabels": {"pod": "c"}},
                                }
                            ],
                            "ports": [{"port": 81}],
                        }
                    ],
                },
            ),
        ],
        lambda sn, sp, dn, dp, port, proto: (
            (dn, dp) != ("x", "a") or sn == "y" or ((sn, sp) == ("z", "c") and port == 81)
        ),
    ),
    "egress-to-a-namespace": (
        [
            netpol(
                "to-y",
                "x",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: sn != "x" or dn == "y",
    ),
    "egress-named-port": (
        [
            netpol(
                "to-dns",
                "y",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: (sn, sp) != ("y", "b") or proto == "UDP",
    ),
    "match-expressions-notin": (
        [
            netpol(
                "not-z",
                "x",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {"key": "ns", "operator": "NotIn", "values": ["z"]}
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: dn != "x" or sn != "z",
    ),
    "match-expressions-in-and-exists": (
        [
            netpol(
                "in",
                "y",
                {
                    "podSelector": {
                        "matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]
                    },
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [{"key": "ns", "operator": "Exists"}]
                                    },
                                    "podSelector": {
                                        "matchExpressions": [
                                            {"key": "pod", "operator": "In", "values": ["c"]}
                                        ]
                                    },
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: not (dn == "y" and dp in ("a", "b")) or sp == "c",
    ),
    "does-not-exist-selects-nothing-labelled": (
        [
            netpol(
                "dne",
                "z",
                {
                    "podSelector": {
                        "matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]
                    },
                    "policyTypes": ["Ingress"],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: True,
    ),
    "ingress-and-egress-together": (
        [
            netpol(
                "both",
                "x",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
                    "egress": [
                        {
                            "to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                            "ports": [{"port": 80}],
                        }
                    ],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: (
            ((dn, dp) != ("x", "a") or sn == "y")
            and ((sn, sp) != ("x", "a") or (dn == "z" and port == 80 and proto == "TCP"))
        ),
    ),
    "deny-all-in-every-namespace": (
        [netpol("deny", ns, {"podSelector": {}, "policyTypes": ["Ingress"]}) for ns in ALL],
        lambda sn, sp, dn, dp, port, proto: False,
    ),
    "egress-deny-all-but-same-namespace": (
        [
            netpol(
                "egress-same",
                "z",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {}}]}],
                },
            )
        ],
        lambda sn, sp, dn, dp, port, proto: sn != "z" or dn == "z",
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_scenario(world, tmp_path, name):
    policies, rule = SCENARIOS[name]
    run_scenario(world, tmp_path, policies, rule)


def test_ip_block_with_except(world, tmp_path):
    """Allow into x from the cluster CIDR except node1's pods (ipBlock matches pod IPs too)."""
    lab = world["lab"]
    node_of = {(p["namespace"], p["name"]): p["node"] for p in lab.status()["pods"]}
    policies = [
        netpol(
            "block",
            "x",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "ipBlock": {
                                    "cidr": "10.244.0.0/16",
                                    "except": [cidr_of_node(world, "node1")],
                                }
                            }
                        ]
                    }
                ],
            },
        )
    ]
    run_scenario(
        world,
        tmp_path,
        policies,
        lambda sn, sp, dn, dp, port, proto: dn != "x" or node_of[(sn, sp)] != "node1",
    )


def test_egress_ip_block(world, tmp_path):
    lab = world["lab"]
    node_of = {(p["namespace"], p["name"]): p["node"] for p in lab.status()["pods"]}
    policies = [
        netpol(
            "to-node2",
            "y",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": cidr_of_node(world, "node2")}}]}],
            },
        )
    ]
    run_scenario(
        world,
        tmp_path,
        policies,
        lambda sn, sp, dn, dp, port, proto: sn != "y" or node_of[(dn, dp)] == "node2",
    )


def test_policy_update_flips_a_connection(world, tmp_path):
    lab = world["lab"]
    first = [
        netpol(
            "flip",
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            },
        )
    ]
    second = [
        netpol(
            "flip",
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
            },
        )
    ]
    f = apply(lab, tmp_path, first, "first")
    try:
        want = matrix(lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "a") or sn == "y")
        got = converge(lab, want)
        assert got == want, diff(got, want)
        apply(lab, tmp_path, second, "second")  # same name: an edit of the policy
        want = matrix(lambda sn, sp, dn, dp, port, proto: (dn, dp) != ("x", "a") or sn == "z")
        got = converge(lab, want)
        assert got == want, diff(got, want)
    finally:
        lab.delete([f], log=lambda *_: None)


def test_pod_relabel_flips_a_connection(world, tmp_path):
    lab = world["lab"]
    policies = [
        netpol(
            "frontends",
            "x",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"role": "frontend"}},
                            }
                        ]
                    }
                ],
            },
        )
    ]
    f = apply(lab, tmp_path, policies)
    relabel = tmp_path / "relabel.yaml"

    try:
        want = matrix(lambda sn, sp, dn, dp, port, proto: dn != "x")
        got = converge(lab, want)
        assert got == want, diff(got, want)
        relabel.write_text(json.dumps(pod_doc("y", "c", {"pod": "c", "role": "frontend"})))
        lab.apply([str(relabel)], log=lambda *_: None)
        want = matrix(lambda sn, sp, dn, dp, port, proto: dn != "x" or (sn, sp) == ("y", "c"))
        got = converge(lab, want)
        assert got == want, diff(got, want)
    finally:
        relabel.write_text(json.dumps(pod_doc("y", "c", {"pod": "c"})))
        lab.apply([str(relabel)], log=lambda *_: None)
        lab.delete([f], log=lambda *_: None)


def test_replies_pass_but_new_connections_do_not(world, tmp_path):
    """Stateful: with x isolated for ingress and allowed to y only, x/a -> y/a works (the reply
    comes back through x's ingress isolation), while y/a -> x/a is blocked."""
    policies = [netpol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    run_scenario(world, tmp_path, policies, lambda sn, sp, dn, dp, port, proto: dn != "x")
    # (the matrix above already has x -> elsewhere allowed: those replies cross x's isolation)


@pytest.mark.parametrize("seed", range(20))
def test_random_policies_match_the_reference(world, tmp_path, seed):
    from tests.netpol_reference import random_case

    policies = random_case(seed, world["namespaces"], world["pods"])
    lab = world["lab"]
    want = evaluate(world["namespaces"], world["pods"], policies)
    f = apply(lab, tmp_path, policies, f"random{seed}")
    try:
        got = converge(lab, want)
        assert got == want, f"seed {seed}: {json.dumps(policies)}\n" + diff(got, want)
    finally:
        lab.delete([f], log=lambda *_: None)


def test_traffic_between_a_pod_and_its_own_node_is_always_allowed(world, tmp_path):
    """kubelet probes: with x isolated both ways and nothing allowed, the node still reaches
    x's pods and they reach the node."""
    lab = world["lab"]
    from tests.helpers import in_ns

    policies = [netpol("deny-both", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
    f = apply(lab, tmp_path, policies)
    try:
        want = matrix(lambda sn, sp, dn, dp, port, proto: sn != "x" and dn != "x")
        got = converge(lab, want)
        assert got == want, diff(got, want)
        meta = lab.meta()
        for p in lab.status()["pods"]:
            if p["namespace"] != "x":
                continue
            node = meta["nodes"][p["node"]]
            assert in_ns(node["netns"], "ping", "-c1", "-W1", p["ip"], check=False).returncode == 0
            gw = node["podCIDR"].rsplit(".", 1)[0] + ".1"
            pns = lab.pod_netns(f"x/{p['name']}")
            assert in_ns(pns, "ping", "-c1", "-W1", gw, check=False).returncode == 0
            assert in_ns(pns, "ping", "-c1", "-W1", node["ip"], check=False).returncode == 0
            # ...while another node is not the pod's own node: blocked by egress isolation
            other = next(n for n in meta["nodes"].values() if n["name"] != p["node"])
            assert in_ns(pns, "ping", "-c1", "-W1", other["ip"], check=False).returncode != 0
    finally:
        lab.delete([f], log=lambda *_: None)
