import os

import pytest

from tests.helpers import Node


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def node(request):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, OVS)")
    n = Node()
    request.addfinalizer(n.stop)
    n.start()
    return n
