"""The ClusterNetworkPolicy CRDs in manifests/ (issue 17), checked offline.

- Both files are the upstream v0.2.0 CRDs, unmodified under a header naming source and licence:
  the standard channel (manifests/05-clusternetworkpolicy-crd.yaml, applied with the others)
  and the experimental one (manifests/optional/, for `nodes` peers).
- Each is a valid CustomResourceDefinition (the Kubernetes OpenAPI schema, strict, as
  tests/unit/test_manifests.py checks every manifest), cluster-scoped, serving and storing
  policy.networking.k8s.io/v1alpha2 with an openAPIV3Schema, and agrees with the code (the kind
  table, the watched path, the manifest the watcher names) and with the ClusterRole.
- The upstream conformance examples (tests/unit/data/cnp-conformance/) validate against the
  CRDs' openAPIV3Schema as the API server would check them: JSON Schema with `jsonschema` (in the
  venv through kubernetes-validate), unknown fields refused (kubectl's default strict field
  validation), `x-kubernetes-list-type: set` lists without duplicates, and the CRDs' CEL rules
  evaluated by hand-written equivalents (an unknown rule fails the test). Mutated copies prove
  each check bites.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import ipaddress
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from ovsctl.k8s.apisource import RESOURCES
from ovsctl.k8s.model import KINDS, parse
from ovsctl.k8s.watchstream import CRD_MANIFESTS

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
STANDARD = MANIFESTS / "05-clusternetworkpolicy-crd.yaml"
EXPERIMENTAL = MANIFESTS / "optional" / "clusternetworkpolicy-crd-experimental.yaml"
CRDS = {"standard": STANDARD, "experimental": EXPERIMENTAL}
CONFORMANCE = Path(__file__).parent / "data" / "cnp-conformance"

GROUP, VERSION = "policy.networking.k8s.io", "v1alpha2"
# sha256 of the upstream files (config/crd/<channel>/policy.networking.k8s.io_clusternet...
# ...workpolicies.yaml at tag v0.2.0): the manifests carry them byte for byte under their header
UPSTREAM_SHA256 = {
    "standard": "5df2cdcface11718bd332fd88b4cb5fb3adf63426eaffdcbef4d33aac6836bef",
    "experimental": "995a7463dffb48b26ffb816bfec860ae1bc533bca364fda15b9f74f8c10b9882",
}
# the conformance suite's host network ports (suite.go: 34345 on, 8 of them)
HOST_NETWORK_PORTS = list(range(34345, 34353))

_VERSIONS = sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
K8S_VERSIONS = list(dict.fromkeys([_VERSIONS[0], _VERSIONS[-1]]))  # oldest, newest


def _split(path: Path) -> tuple[str, str]:
    """(the leading comment block, the rest) of a manifest."""
    lines = path.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[:n]), "".join(lines[n:])


@functools.cache
def _load(channel: str) -> dict:
    return yaml.safe_load(CRDS[channel].read_text())


def _crd(channel: str) -> dict:
    return copy.deepcopy(_load(channel))


def _schema(channel: str) -> dict:
    (version,) = _crd(channel)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------- the files


@pytest.mark.parametrize("channel", CRDS)
def test_crd_files_are_upstream_v0_2_0_under_a_header(channel):
    header, body = _split(CRDS[channel])
    assert hashlib.sha256(body.encode()).hexdigest() == UPSTREAM_SHA256[channel], (
        "the CRD body differs from upstream v0.2.0"
    )
    for needle in (
        "https://github.com/kubernetes-sigs/network-policy-api",
        f"config/crd/{channel}/policy.networking.k8s.io_clusternetworkpolicies.yaml",
        "tag v0.2.0",
        "Apache License, Version 2.0",
    ):
        assert needle in header, needle
    meta = _crd(channel)["metadata"]
    assert meta["annotations"]["policy.networking.k8s.io/bundle-version"] == "v0.2.0"
    assert meta["annotations"]["policy.networking.k8s.io/channel"] == channel


def test_only_the_standard_crd_is_applied_with_the_other_manifests():
    # `kubectl apply -f manifests/` does not descend into optional/
    assert STANDARD.parent == MANIFESTS and EXPERIMENTAL.parent != MANIFESTS
    assert sorted(p.name for p in (MANIFESTS / "optional").iterdir()) == [EXPERIMENTAL.name]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("channel", CRDS)
def test_crd_validates_against_the_kubernetes_openapi_schema(channel, version):
    kubernetes_validate.validate(_crd(channel), version, strict=True)
    broken = _crd(channel)
    broken["spec"]["scope"] = ["Cluster"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


@pytest.mark.parametrize("channel", CRDS)
def test_crd_is_cluster_scoped_and_serves_and_stores_v1alpha2(channel):
    crd = _crd(channel)
    assert (crd["apiVersion"], crd["kind"]) == (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
    )
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"clusternetworkpolicies.{GROUP}"
    assert spec["group"] == GROUP and spec["scope"] == "Cluster"
    assert spec["names"] == {
        "kind": "ClusterNetworkPolicy",
        "listKind": "ClusterNetworkPolicyList",
        "plural": "clusternetworkpolicies",
        "singular": "clusternetworkpolicy",
        "shortNames": ["cnp"],
    }
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object" and schema["required"] == ["metadata", "spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    body = schema["properties"]["spec"]
    assert body["required"] == ["priority", "subject", "tier"]
    assert body["properties"]["tier"]["enum"] == ["Admin", "Baseline"]
    assert (
        body["properties"]["priority"]["minimum"],
        body["properties"]["priority"]["maximum"],
    ) == (0, 1000)
    peers = body["properties"]["egress"]["items"]["properties"]["to"]["items"]["properties"]
    assert ("nodes" in peers) == (channel == "experimental")
    assert {"namespaces", "pods", "networks"} <= set(peers)


def test_crd_agrees_with_the_code_and_the_cluster_role():
    crd = _crd("standard")
    info = KINDS["ClusterNetworkPolicy"]
    assert info.api_version == f"{GROUP}/{VERSION}" and not info.namespaced
    plural = crd["spec"]["names"]["plural"]
    assert RESOURCES["ClusterNetworkPolicy"].path == f"/apis/{GROUP}/{VERSION}/{plural}"
    # the file the watcher names when the CRD is missing is this one
    assert ROOT / CRD_MANIFESTS["ClusterNetworkPolicy"] == STANDARD
    rbac = list(yaml.safe_load_all((MANIFESTS / "01-rbac.yaml").read_text()))
    (role,) = [d for d in rbac if d["kind"] == "ClusterRole"]
    rules = [r for r in role["rules"] if GROUP in r["apiGroups"]]
    assert rules == [
        {"apiGroups": [GROUP], "resources": [plural], "verbs": ["get", "list", "watch"]}
    ]


# --------------------------------------------------------------------------- the schema check


def _is_cidr(value: str) -> bool:
    """CEL isCIDR (k8s.io/apiserver's library: an address, a slash, a prefix length)."""
    if "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _no_named_port_with_address_peers(rule: dict) -> bool:
    address_peer = any(
        "networks" in p or "nodes" in p or "domainNames" in p for p in rule.get("to", [])
    )
    named = any("destinationNamedPort" in p for p in rule.get("protocols", []))
    return not (address_peer and "protocols" in rule and named)


# The CEL rules of the CRDs, as Python: the API server evaluates them on create and update.
CEL = {
    "self.start < self.end": lambda v: v["start"] < v["end"],
    "isCIDR(self)": _is_cidr,
    "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames)) && "
    "has(self.protocols) && self.protocols.exists(protocol, has(protocol.destinationNamedPort)))": (
        _no_named_port_with_address_peers
    ),
}


def _strict(schema: dict) -> dict:
    """The schema as the API server applies it with strict field validation: an object with
    declared properties takes no others, a list of type "set" has no duplicates."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            if node.get("x-kubernetes-list-type") == "set":
                node["uniqueItems"] = True
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def _cel_errors(schema: dict, value, path: str = "") -> list[str]:
    errors = []
    for check in schema.get("x-kubernetes-validations", []):
        if not CEL[check["rule"]](value):
            errors.append(f"{path or '.'}: {check['message']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                errors += _cel_errors(sub, v, f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += _cel_errors(schema["items"], v, f"{path}[{i}]")
    return errors


@functools.cache
def _validator(channel: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_strict(_schema(channel)))


def schema_errors(obj: dict, channel: str) -> list[str]:
    """What the API server (with this channel's CRD) would refuse in obj; [] if nothing."""
    schema = _schema(channel)
    validator = _validator(channel)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    return errors or _cel_errors(schema, obj)


def test_every_cel_rule_of_the_crds_is_checked():
    rules = set()

    def walk(node):
        if isinstance(node, dict):
            rules.update(v["rule"] for v in node.get("x-kubernetes-validations", []))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for channel in CRDS:
        walk(_schema(channel))
    assert rules == set(CEL), f"teach CEL these rules: {rules - set(CEL)}"


# --------------------------------------------------------------------------- conformance examples


def _render(text: str) -> str:
    def port(m: re.Match) -> str:
        return str(HOST_NETWORK_PORTS[int(m.group(1))])

    text = re.sub(r"\{\{\s*index \.HostNetworkPorts (\d+)\s*\}\}", port, text)
    assert "{{" not in text, f"an unknown template expression: {text}"
    return text


def _examples() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(CONFORMANCE.rglob("*.yaml")):
        for doc in yaml.safe_load_all(_render(path.read_text())):
            if doc and doc.get("kind") == "ClusterNetworkPolicy":
                out.append((f"{path.parent.name}/{path.name}:{doc['metadata']['name']}", doc))
    return out


EXAMPLES = _examples()


def test_the_conformance_examples_are_all_there():
    files = {i.split(":")[0] for i, _ in EXAMPLES}
    assert len(files) == 20 and len(EXAMPLES) == 23
    assert {d["spec"]["tier"] for _, d in EXAMPLES} == {"Admin", "Baseline"}


@pytest.mark.parametrize("where,obj", EXAMPLES, ids=[i for i, _ in EXAMPLES])
def test_conformance_example_validates_against_the_crd_schema(where, obj):
    assert schema_errors(obj, "experimental") == []
    if "/experimental-" in where:
        # its `nodes` peers exist only in the experimental channel's schema
        errors = schema_errors(obj, "standard")
        assert errors and all("'nodes' was unexpected" in e for e in errors), errors
    else:
        assert schema_errors(obj, "standard") == []
    # and ovsctl's model takes it (cluster-scoped, held as the raw object)
    assert parse(obj).key == ("ClusterNetworkPolicy", "", obj["metadata"]["name"])


def _base() -> dict:
    (obj,) = [
        d for i, d in EXAMPLES if i == "admin_tier/standard-gress-rules-combined.yaml:gress-rules"
    ]
    return copy.deepcopy(obj)


def _rule(obj: dict) -> dict:
    return obj["spec"]["egress"][3]  # deny-to-slytherin-at-ports-80-53-9003: has protocols


MUTATIONS = [
    # (id, change, a substring of one of the errors)
    ("priority-above-1000", lambda o: o["spec"].update(priority=1001), "greater than the maximum"),
    ("priority-negative", lambda o: o["spec"].update(priority=-1), "less than the minimum"),
    ("priority-string", lambda o: o["spec"].update(priority="10"), "is not of type 'integer'"),
    ("unknown-tier", lambda o: o["spec"].update(tier="Middle"), "'Middle' is not one of"),
    ("unknown-action", lambda o: _rule(o).update(action="Allow"), "'Allow' is not one of"),
    ("no-subject", lambda o: o["spec"].pop("subject"), "'subject' is a required property"),
    ("empty-subject", lambda o: o["spec"].update(subject={}), "should be non-empty"),
    (
        "namespaces-and-pods-subject",
        lambda o: o["spec"]["subject"].update(pods={"podSelector": {}}),
        "has too many properties",
    ),
    ("pods-without-podselector", lambda o: o["spec"].update(subject={"pods": {}}), "'podSelector'"),
    ("rule-without-to", lambda o: _rule(o).pop("to"), "'to' is a required property"),
    (
        "port-zero",
        lambda o: _rule(o)["protocols"][0]["tcp"]["destinationPort"].update(number=0),
        "less than the minimum",
    ),
    (
        "port-range-reversed",
        lambda o: _rule(o)["protocols"][0]["tcp"].update(
            destinationPort={"range": {"start": 90, "end": 80}}
        ),
        "Start port must be less than End port",
    ),
    (
        "port-number-and-range",
        lambda o: _rule(o)["protocols"][0]["tcp"]["destinationPort"].update(
            range={"start": 1, "end": 2}
        ),
        "has too many properties",
    ),
    (
        "bad-cidr",
        lambda o: _rule(o)["to"].append({"networks": ["10.0.0.0/33"]}),
        "Invalid CIDR format",
    ),
    (
        "address-not-cidr",
        lambda o: _rule(o)["to"].append({"networks": ["10.0.0.1"]}),
        "Invalid CIDR format",
    ),
    (
        "duplicate-network",
        lambda o: _rule(o)["to"].append({"networks": ["::/0", "::/0"]}),
        "non-unique",
    ),
    ("too-many-rules", lambda o: o["spec"].update(egress=[_rule(o)] * 26), "is too long"),
    ("long-rule-name", lambda o: _rule(o).update(name="x" * 101), "is too long"),
    ("unknown-field", lambda o: _rule(o).update(ports=[{"port": 80}]), "'ports' was unexpected"),
    (
        "label-not-a-string",
        lambda o: o["spec"]["subject"]["namespaces"]["matchLabels"].update(n=1),
        "not of type 'string'",
    ),
]


@pytest.mark.parametrize("change,needle", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_the_schema_check_rejects_invalid_policies(change, needle):
    obj = _base()
    assert schema_errors(obj, "standard") == []
    change(obj)
    for channel in CRDS:
        errors = schema_errors(obj, channel)
        assert any(needle in e for e in errors), (channel, errors)


def test_named_ports_with_networks_are_refused_by_the_experimental_rule():
    obj = _base()
    rule = _rule(obj)
    rule["to"] = [{"networks": ["10.0.0.0/8"]}]
    rule["protocols"] = [{"destinationNamedPort": "http"}]
    errors = schema_errors(obj, "experimental")
    assert any("namedPorts" in e for e in errors), errors
    rule["to"] = [{"namespaces": {}}]
    assert schema_errors(obj, "experimental") == []
