"""Unit tests for ovsctl.k8s.model: parsing, validation, loading and rendering."""

import copy
import json
import pickle

import pytest
import yaml

from ovsctl.k8s.model import (
    ACCEPTED_KINDS,
    KINDS,
    ContainerPort,
    Generic,
    Labels,
    ModelError,
    Namespace,
    Node,
    Pod,
    load_documents,
    load_objects,
    objects_from_text,
    parse,
    to_dict,
)


def node(name="node1", spec=None, status=None, **meta):
    d = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, **meta}}
    if spec is not None:
        d["spec"] = spec
    if status is not None:
        d["status"] = status
    return d


def pod(name="web", spec=None, status=None, **meta):
    d = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}}
    if spec is not None:
        d["spec"] = spec
    if status is not None:
        d["status"] = status
    return d


def ports_pod(*ports, name="web"):
    return pod(name, spec={"containers": [{"name": "c", "ports": list(ports)}]})


CNP_API = "policy.networking.k8s.io/v1alpha2"


def cnp(name="deny-metadata", spec=None, **meta):
    """A ClusterNetworkPolicy as kubectl would send it."""
    return {
        "apiVersion": CNP_API,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, **meta},
        "spec": spec
        if spec is not None
        else {
            "tier": "Admin",
            "priority": 10,
            "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}],
        },
    }


# --------------------------------------------------------------------------- parsing


def test_node_basic():
    n = parse(
        node(
            spec={"podCIDR": "10.244.1.0/24"},
            status={
                "addresses": [
                    {"type": "Hostname", "address": "node1"},
                    {"type": "InternalIP", "address": "192.168.0.11"},
                ]
            },
            labels={"zone": "a"},
        )
    )
    assert n == Node("node1", "10.244.1.0/24", "192.168.0.11", Labels({"zone": "a"}))
    assert n.key == ("Node", "", "node1")
    assert n.labels_dict() == {"zone": "a"}
    assert n.labels["zone"] == "a"


def test_node_without_cidr_or_ip_and_ignores_namespace():
    n = parse(node(namespace="whatever"))
    assert n == Node("node1")
    assert n.pod_cidr is None and n.internal_ip is None
    assert n.key == ("Node", "", "node1")


def test_node_pod_cidrs_fallback_prefers_ipv4():
    n = parse(node(spec={"podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"]}))
    assert n.pod_cidr == "10.244.1.0/24"
    n = parse(node(spec={"podCIDRs": ["fd00:10:244:1::/64"]}))
    assert n.pod_cidr == "fd00:10:244:1::/64"
    # spec.podCIDR wins over podCIDRs
    n = parse(node(spec={"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.9.0/24"]}))
    assert n.pod_cidr == "10.244.7.0/24"


def test_node_cidr_is_normalised():
    assert parse(node(spec={"podCIDR": "10.244.1.7/24"})).pod_cidr == "10.244.1.0/24"
    assert Node("n", pod_cidr="10.244.1.7/24").pod_cidr == "10.244.1.0/24"


def test_node_internal_ip_first_ipv4():
    n = parse(
        node(
            status={
                "addresses": [
                    {"type": "ExternalIP", "address": "203.0.113.5"},
                    {"type": "InternalIP", "address": "fd00::11"},
                    {"type": "InternalIP", "address": "192.168.0.11"},
                    {"type": "InternalIP", "address": "192.168.0.12"},
                ]
            }
        )
    )
    assert n.internal_ip == "192.168.0.11"


def test_namespace_gets_automatic_label():
    ns = parse({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert ns.labels_dict() == {"kubernetes.io/metadata.name": "team-a"}
    assert ns.key == ("Namespace", "", "team-a")
    ns = parse(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "team-a",
                "labels": {"env": "prod", "kubernetes.io/metadata.name": "forged"},
            },
        }
    )
    assert ns.labels_dict() == {"env": "prod", "kubernetes.io/metadata.name": "team-a"}
    assert Namespace("x") == Namespace("x", {"kubernetes.io/metadata.name": "x"})


def test_pod_defaults():
    p = parse(pod())
    assert p == Pod(namespace="default", name="web")
    assert (p.uid, p.node_name, p.ip, p.ports, p.host_network, p.phase) == (
        "",
        "",
        None,
        (),
        False,
        "Pending",
    )
    assert p.labels == {}
    assert p.key == ("Pod", "default", "web")


def test_pod_full():
    p = parse(
        pod(
            namespace="shop",
            uid="0b9e2c5a-1111-2222-3333-444455556666",
            labels={"app": "web", "tier": "front"},
            spec={
                "nodeName": "node2",
                "hostNetwork": False,
                "containers": [
                    {
                        "name": "app",
                        "image": "x",
                        "ports": [
                            {"name": "http", "containerPort": 8080},
                            {"containerPort": 53, "protocol": "UDP"},
                        ],
                    },
                    {"name": "sidecar", "image": "y"},
                    {"name": "metrics", "ports": [{"name": "prom", "containerPort": 9090}]},
                ],
            },
            status={"phase": "Running", "podIP": "10.244.2.5"},
        )
    )
    assert p.namespace == "shop"
    assert p.uid == "0b9e2c5a-1111-2222-3333-444455556666"
    assert p.labels_dict() == {"app": "web", "tier": "front"}
    assert p.node_name == "node2"
    assert p.ip == "10.244.2.5"
    assert p.phase == "Running"
    assert p.ports == (
        ContainerPort("http", 8080, "TCP"),
        ContainerPort("", 53, "UDP"),
        ContainerPort("prom", 9090, "TCP"),
    )
    assert p.key == ("Pod", "shop", "web")


def test_pod_ip_fallbacks():
    assert parse(pod(status={"podIPs": [{"ip": "10.244.0.9"}]})).ip == "10.244.0.9"
    assert parse(pod(status={"podIPs": [{"ip": "fd00::9"}, {"ip": "10.244.0.9"}]})).ip == (
        "10.244.0.9"
    )
    assert parse(pod(status={"podIP": "10.244.0.8", "podIPs": [{"ip": "10.244.0.9"}]})).ip == (
        "10.244.0.8"
    )
    assert parse(pod(status={"podIP": "", "podIPs": []})).ip is None


def test_host_network_pod():
    p = parse(pod(spec={"hostNetwork": True, "nodeName": "node1"}))
    assert p.host_network is True


def test_generic_kinds():
    np = parse(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop", "resourceVersion": "42"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    assert isinstance(np, Generic)
    assert np.key == ("NetworkPolicy", "shop", "deny")
    assert np.obj()["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert "resourceVersion" not in np.obj()["metadata"]
    svc = parse({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}})
    assert svc.key == ("Service", "default", "web")
    assert svc.obj()["metadata"]["namespace"] == "default"
    eps = parse(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-abc12", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [],
        }
    )
    assert eps.key == ("EndpointSlice", "default", "web-abc12")
    # the body is canonical: key order and bookkeeping fields don't matter
    a = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"a": 1, "b": 2}}
    b = {"kind": "Service", "spec": {"b": 2, "a": 1}, "metadata": {"name": "s"}, "apiVersion": "v1"}
    b["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert parse(a) == parse(b)
    assert hash(parse(a)) == hash(parse(b))


def test_accepted_kinds_constant():
    # in dependency order: a batch applies them in this order (and deletes in the reverse)
    assert ACCEPTED_KINDS == (
        "Namespace",
        "Node",
        "NetworkPolicy",
        "ClusterNetworkPolicy",
        "Service",
        "EndpointSlice",
        "Pod",
    )
    assert KINDS["EndpointSlice"].api_version == "discovery.k8s.io/v1"
    assert KINDS["NetworkPolicy"].api_version == "networking.k8s.io/v1"
    info = KINDS["ClusterNetworkPolicy"]
    assert (info.api_version, info.namespaced, info.name_rule) == (CNP_API, False, "subdomain")
    assert info.no_namespace and not KINDS["Node"].no_namespace


def test_cluster_network_policy_is_a_cluster_scoped_generic():
    raw = cnp(labels={"team": "sec"}, resourceVersion="7", uid="u-1")
    raw["status"] = {"conditions": []}
    g = parse(raw)
    assert isinstance(g, Generic)
    assert g.key == ("ClusterNetworkPolicy", "", "deny-metadata")
    assert (g.namespace, g.ref) == ("", "deny-metadata")
    body = g.obj()
    assert "namespace" not in body["metadata"], "a cluster-scoped object has no namespace"
    assert "resourceVersion" not in body["metadata"] and body["metadata"]["uid"] == "u-1"
    assert body["spec"] == raw["spec"] and body["apiVersion"] == CNP_API
    # an empty namespace is no namespace (as the API server stores it); the value is the same
    same = cnp(labels={"team": "sec"}, namespace="", uid="u-1")
    same["status"] = {"conditions": []}
    assert parse(same) == g
    # round trips, through YAML too (the lab's state files)
    assert parse(to_dict(g)) == g
    assert parse(yaml.safe_load(yaml.safe_dump(to_dict(g)))) == g
    # the spec is carried as written: its semantics are checked by flows/cnp.py, not here
    odd = parse(cnp(spec={"tier": "Nope", "priority": -1}))
    assert odd.obj()["spec"] == {"tier": "Nope", "priority": -1}
    # names are DNS-1123 subdomains: dots allowed
    assert parse(cnp("allow.dns-to-kube-system")).name == "allow.dns-to-kube-system"


def test_objects_are_hashable_and_compare_by_value():
    a = parse(ports_pod({"containerPort": 80}))
    b = parse(ports_pod({"containerPort": 80}))
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = parse(ports_pod({"containerPort": 81}))
    assert a != c
    with pytest.raises(AttributeError):
        a.name = "other"  # frozen
    with pytest.raises(TypeError):
        a.labels["x"] = "y"  # immutable labels
    assert Labels({"b": "2", "a": "1"}).pairs == (("a", "1"), ("b", "2"))
    assert Labels([("a", "1")]) == {"a": "1"}
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) == a


def test_parse_does_not_mutate_input():
    raw = pod(labels={"a": "b"}, spec={"containers": [{"ports": [{"containerPort": 80}]}]})
    before = copy.deepcopy(raw)
    parse(raw)
    assert raw == before


# --------------------------------------------------------------------------- validation


INVALID = [
    # (object, substrings the message must contain)
    (
        ports_pod({"containerPort": 80}, {"containerPort": 70000}),
        ["Pod default/web", "spec.containers[0].ports[1].containerPort", "70000"],
    ),
    (ports_pod({"containerPort": 0}), ["spec.containers[0].ports[0].containerPort", "1..65535"]),
    (ports_pod({"containerPort": "80"}), ["ports[0].containerPort", "integer"]),
    (ports_pod({"containerPort": True}), ["ports[0].containerPort", "integer"]),
    (ports_pod({"name": "x"}), ["ports[0].containerPort", "required"]),
    (
        ports_pod({"containerPort": 80, "protocol": "ICMP"}),
        ["spec.containers[0].ports[0].protocol", "ICMP"],
    ),
    (ports_pod({"containerPort": 80, "protocol": "tcp"}), ["ports[0].protocol"]),
    (ports_pod({"containerPort": 80, "name": "HTTP"}), ["ports[0].name", "IANA_SVC_NAME"]),
    (ports_pod({"containerPort": 80, "name": "12345"}), ["ports[0].name", "letter"]),
    (
        ports_pod({"containerPort": 80, "name": "a"}, {"containerPort": 81, "name": "a"}),
        ["ports[1].name", "duplicate"],
    ),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {}}, ["Pod", "metadata.name", "required"]),
    ({"apiVersion": "v1", "kind": "Pod"}, ["metadata", "required"]),
    (pod("Web"), ["Pod default/Web", "metadata.name", "DNS-1123"]),
    (pod("a" * 254), ["metadata.name", "253"]),
    (pod("web", namespace="Shop"), ["metadata.namespace", "DNS-1123 label"]),
    (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
        ["Namespace a.b", "metadata.name", "DNS-1123 label"],
    ),
    (
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1svc"}},
        ["Service default/1svc", "metadata.name", "DNS-1035"],
    ),
    ({"kind": "Pod", "metadata": {"name": "web"}}, ["Pod default/web", "apiVersion", "required"]),
    (
        {"apiVersion": "networking.k8s.io/v1", "kind": "Pod", "metadata": {"name": "web"}},
        ["apiVersion", "'v1'"],
    ),
    (
        {"apiVersion": "v1", "kind": "NetworkPolicy", "metadata": {"name": "np"}},
        ["NetworkPolicy default/np", "apiVersion", "networking.k8s.io/v1"],
    ),
    (
        {
            "apiVersion": "discovery.k8s.io/v1beta1",
            "kind": "EndpointSlice",
            "metadata": {"name": "e"},
        },
        ["apiVersion", "discovery.k8s.io/v1"],
    ),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}, ["Deployment"]),
    ({"apiVersion": "v1", "metadata": {"name": "x"}}, ["kind", "required"]),
    # ClusterNetworkPolicy: what this layer checks (the spec's meaning is flows/cnp.py's)
    (
        cnp(namespace="shop"),
        ["ClusterNetworkPolicy deny-metadata", "metadata.namespace", "cluster-scoped", "shop"],
    ),
    (
        {**cnp(), "metadata": {}},
        ["ClusterNetworkPolicy <unnamed>", "metadata.name", "required"],
    ),
    ({**cnp(), "metadata": {"name": ""}}, ["ClusterNetworkPolicy", "metadata.name", "required"]),
    (
        {**cnp(), "apiVersion": "policy.networking.k8s.io/v1alpha1"},
        ["ClusterNetworkPolicy deny-metadata", "apiVersion", CNP_API, "v1alpha1"],
    ),
    (
        {**cnp(), "apiVersion": "networking.k8s.io/v1"},
        ["ClusterNetworkPolicy deny-metadata", "apiVersion", CNP_API],
    ),
    ({k: v for k, v in cnp().items() if k != "apiVersion"}, ["apiVersion", "required", CNP_API]),
    (cnp("Deny_Metadata"), ["ClusterNetworkPolicy Deny_Metadata", "metadata.name", "DNS-1123"]),
    (cnp(spec=["tier", "Admin"]), ["ClusterNetworkPolicy deny-metadata", "spec", "mapping"]),
    (cnp(labels={"tier": 1}), ["ClusterNetworkPolicy deny-metadata", "metadata.labels['tier']"]),
    (pod(status={"podIP": "10.244.0.300"}), ["Pod default/web", "status.podIP", "10.244.0.300"]),
    (pod(status={"podIPs": [{"ip": "bogus"}]}), ["status.podIPs[0].ip", "bogus"]),
    (pod(status={"phase": "Sleeping"}), ["status.phase"]),
    (node(spec={"podCIDR": "10.244.1.0"}), ["Node node1", "spec.podCIDR", "CIDR"]),
    (node(spec={"podCIDR": "10.244.1.0/33"}), ["spec.podCIDR", "prefix"]),
    (node(spec={"podCIDRs": ["10.244.1.0/24", "x/8"]}), ["spec.podCIDRs[1]"]),
    (
        node(status={"addresses": [{"type": "InternalIP", "address": "node1.local"}]}),
        ["Node node1", "status.addresses[0].address"],
    ),
    (pod(labels={"version": 1}), ["metadata.labels['version']", "string"]),
    (pod(labels={"bad key!": "x"}), ["metadata.labels['bad key!']"]),
    (pod(labels={"app": "-x"}), ["metadata.labels['app']", "value"]),
    (pod(spec={"hostNetwork": "yes"}), ["spec.hostNetwork", "boolean"]),
    (pod(spec={"nodeName": "Node_1"}), ["spec.nodeName"]),
    (pod(spec={"containers": {"name": "c"}}), ["spec.containers", "list"]),
    (pod(spec=[]), ["spec", "mapping"]),
    (["not", "a", "mapping"], ["mapping"]),
]


@pytest.mark.parametrize("obj,needles", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_objects_raise_model_error(obj, needles):
    with pytest.raises(ModelError) as ei:
        parse(obj)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    assert isinstance(ei.value, ValueError)


def test_model_error_attributes():
    with pytest.raises(ModelError) as ei:
        parse(ports_pod({"containerPort": 80}, {"containerPort": 70000}))
    e = ei.value
    assert e.ref == "Pod default/web"
    assert e.path == "spec.containers[0].ports[1].containerPort"
    assert "65535" in e.reason


def test_direct_construction_validates():
    with pytest.raises(ModelError):
        ContainerPort("x", 0)
    with pytest.raises(ModelError):
        ContainerPort("x", 80, "ICMP")
    with pytest.raises(ModelError, match="Pod default/p: ip"):
        Pod("default", "p", ip="10.0.0")
    with pytest.raises(ModelError, match="Node n: pod_cidr"):
        Node("n", pod_cidr="10.0.0.0")


# --------------------------------------------------------------------------- loading

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def test_load_multi_document_yaml_with_empty_documents(tmp_path):
    f = tmp_path / "all.yaml"
    f.write_text(
        "---\n"
        "# only a comment\n"
        "---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
        "---\n"
        "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n"
        "---\n"
    )
    docs = load_documents(str(f))
    assert [d["kind"] for d in docs] == ["Namespace", "Pod"]
    objs = load_objects(str(f))
    assert objs == [Namespace("shop"), Pod("shop", "web")]


def test_load_list_and_typed_list(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}],
            }
        )
    )
    assert [d["kind"] for d in load_documents(str(f))] == ["Namespace", "Pod"]
    # API list responses: items without kind/apiVersion
    g = tmp_path / "pods.json"
    g.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": "7"},
                "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}],
            }
        )
    )
    assert load_objects(str(g)) == [Pod("default", "a"), Pod("default", "b")]
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    assert load_documents(str(empty)) == []
    # a ClusterNetworkPolicy inside a List with other kinds, and its typed list from the API
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [NS, cnp()]}))
    assert [o.key for o in load_objects(str(mixed))] == [
        ("Namespace", "", "shop"),
        ("ClusterNetworkPolicy", "", "deny-metadata"),
    ]
    typed = tmp_path / "cnps.json"
    typed.write_text(
        json.dumps(
            {
                "apiVersion": CNP_API,
                "kind": "ClusterNetworkPolicyList",
                "items": [
                    {k: v for k, v in cnp(n).items() if k not in ("kind", "apiVersion")}
                    for n in ("a", "b")
                ],
            }
        )
    )
    assert [o.key for o in load_objects(str(typed))] == [
        ("ClusterNetworkPolicy", "", "a"),
        ("ClusterNetworkPolicy", "", "b"),
    ]


def test_load_json(tmp_path):
    f = tmp_path / "ns.json"
    f.write_text(json.dumps(NS))
    assert load_objects(str(f)) == [Namespace("shop")]


def test_load_directory_sorted_non_recursive(tmp_path):
    (tmp_path / "b.yml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: b}\n")
    (tmp_path / "a.json").write_text(json.dumps(NS))
    (tmp_path / "c.yaml").write_text("")  # empty file
    (tmp_path / "notes.txt").write_text("not a manifest: [")
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "x.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: deep}\n")
    assert load_objects(str(tmp_path)) == [Namespace("shop"), Pod("default", "b")]


def test_load_keeps_timestamps_as_strings(tmp_path):
    f = tmp_path / "svc.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Service\n"
        "metadata: {name: s, creationTimestamp: 2024-01-02T03:04:05Z}\nspec: {}\n"
    )
    (svc,) = load_objects(str(f))
    assert svc.obj()["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"


def test_load_errors_name_file_and_document(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n")
    with pytest.raises(ModelError, match=r"bad\.yaml: invalid YAML"):
        load_documents(str(bad_yaml))

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    with pytest.raises(ModelError, match=r"bad\.json: invalid JSON"):
        load_documents(str(bad_json))

    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\njust text\n")
    with pytest.raises(ModelError, match=r"scalar\.yaml: document 2: .*mapping"):
        load_documents(str(scalar))

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
        "spec: {containers: [{name: c, ports: [{containerPort: 99999}]}]}\n"
    )
    with pytest.raises(ModelError) as ei:
        load_objects(str(invalid))
    msg = str(ei.value)
    assert "invalid.yaml: document 2: Pod default/web: spec.containers[0].ports[0]" in msg
    assert ei.value.file == str(invalid) and ei.value.document == "document 2"

    in_list = tmp_path / "inlist.yaml"
    in_list.write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: A}}\n"
    )
    with pytest.raises(ModelError, match=r"inlist\.yaml: document 1 items\[0\]: Namespace A"):
        load_objects(str(in_list))

    with pytest.raises(ModelError, match=r"missing\.yaml: cannot read"):
        load_documents(str(tmp_path / "missing.yaml"))

    # a directory load fails on its bad file, naming it
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.yaml").write_text(yaml.safe_dump(NS))
    (d / "b.yaml").write_text("kind: [")
    with pytest.raises(ModelError, match=r"b\.yaml"):
        load_objects(str(d))


def test_objects_from_text_bytes():
    data = b"\xef\xbb\xbfapiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
    assert objects_from_text(data, "x.yaml") == [Namespace("a")]
    with pytest.raises(ModelError, match="x.yaml: not UTF-8"):
        objects_from_text(b"\xff\xfe\xfa", "x.yaml")


# --------------------------------------------------------------------------- rendering


ROUND_TRIP = [
    Node("node1"),
    Node("node1", "10.244.1.0/24", "192.168.0.11", {"zone": "a"}),
    Namespace("shop", {"env": "prod"}),
    Namespace("default"),
    Pod("default", "bare"),
    Pod(
        "shop",
        "web",
        uid="u-1",
        labels={"app": "web"},
        node_name="node2",
        ip="10.244.2.5",
        ports=(
            ContainerPort("http", 80),
            ContainerPort("", 53, "UDP"),
            ContainerPort("s", 9, "SCTP"),
        ),
        host_network=True,
        phase="Running",
    ),
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=lambda o: f"{o.kind}-{o.name}")
def test_to_dict_round_trip(obj):
    d = to_dict(obj)
    assert d["kind"] == obj.kind and d["apiVersion"] == "v1"
    assert parse(d) == obj
    # and through YAML text too, as the lab writes state files
    assert parse(yaml.safe_load(yaml.safe_dump(d))) == obj
    assert parse(json.loads(json.dumps(d))) == obj


def test_to_dict_round_trip_generic_and_parsed():
    raw = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "shop", "labels": {"a": "b"}},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
    }
    g = parse(raw)
    assert parse(to_dict(g)) == g
    p = parse(
        pod(
            spec={
                "containers": [{"ports": [{"containerPort": 1}]}, {"ports": [{"containerPort": 2}]}]
            },
            status={"podIPs": [{"ip": "10.0.0.1"}], "phase": "Running"},
        )
    )
    assert parse(to_dict(p)) == p


def test_to_dict_rejects_non_model():
    with pytest.raises(TypeError):
        to_dict({"kind": "Pod"})
