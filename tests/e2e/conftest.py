import os

import pytest

from ovsctl.lab.lab import Lab
from tests.helpers import uid


def lab_pods_yaml(namespaces=("frontend", "backend", "data"), per_ns=3, node_names=None) -> str:
    """Kubernetes YAML: namespaces with labels, pods answering on TCP 80 and UDP 53."""
    docs = []
    for ns in namespaces:
        docs.append(
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: {ns}}}}}\n"
        )
        for i in range(1, per_ns + 1):
            node = f"\n  nodeName: {node_names[i - 1]}" if node_names else ""
            docs.append(
                f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {ns[0]}{i}, namespace: {ns}, labels: {{app: {ns}}}}}\n"
                f"spec:{node}\n  containers:\n  - name: app\n    image: busybox\n    ports:\n"
                "    - {name: http, containerPort: 80, protocol: TCP}\n"
                "    - {name: dns, containerPort: 53, protocol: UDP}\n"
            )
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def make_lab(request, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root (network namespaces, OVS)")
    labs = []

    def make(nodes: int = 3, yaml_text: str | None = None, **kw) -> Lab:
        lab = Lab(f"e{uid(5)}")
        labs.append(lab)
        files = []
        if yaml_text:
            f = tmp_path_factory.mktemp("lab") / "objects.yaml"
            f.write_text(yaml_text)
            files.append(str(f))
        lab.up(nodes, files=files, log=lambda *_: None, **kw)
        return lab

    def cleanup():
        for lab in labs:
            lab.down(log=lambda *_: None)

    request.addfinalizer(cleanup)
    return make
