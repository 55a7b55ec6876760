import os
import tempfile

import pytest

from tests.helpers import Node, uid
from tests.runtimes.harness import (
    Containerd,
    Podman,
    busybox_rootfs_tar,
    conflist,
    make_bin_dir,
    rmtree,
)


def pytest_collection_modifyitems(items):
    for item in items:
        if "runtimes" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def rt_node(request):
    if os.geteuid() != 0:
        pytest.fail("runtime tests need root (network namespaces, OVS, containerd, podman)")
    n = Node(pod_cidr="10.247.0.0/24")
    request.addfinalizer(n.stop)
    n.start()
    return n


@pytest.fixture(scope="session")
def rt_dir(request):
    d = tempfile.mkdtemp(prefix=f"ovrt{uid()}-", dir="/tmp")
    request.addfinalizer(lambda: rmtree(d))
    return d


@pytest.fixture(scope="session")
def bin_dir(rt_dir):
    return make_bin_dir(os.path.join(rt_dir, "cni-bin"))


@pytest.fixture(scope="session")
def podman(request, rt_node, rt_dir, bin_dir):
    p = Podman(rt_node, os.path.join(rt_dir, "podman"), bin_dir)
    request.addfinalizer(p.cleanup)
    p.import_image(busybox_rootfs_tar(os.path.join(rt_dir, "rootfs.tar")))
    return p


@pytest.fixture(scope="session")
def containerd(request, rt_node, rt_dir, bin_dir, podman):
    archive = os.path.join(rt_dir, "image.tar")
    podman("save", "--format", "docker-archive", "-o", archive, podman.image)
    c = Containerd(rt_node, os.path.join(rt_dir, "containerd"), bin_dir, podman.image)
    c.set_conflist(conflist(f"ovsctl-{uid()}", rt_node.sock))
    request.addfinalizer(c.stop)
    c.start()
    c.ctr("images", "import", "--snapshotter", "native", archive)
    return c
