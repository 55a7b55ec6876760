"""The agent's reading of a CNI request, without a host: requested addresses and MACs (CNI_ARGS,
runtimeConfig, the Pod annotation), prevResult, and the checks the agent makes itself."""

from __future__ import annotations

import types

import pytest

from ovsctl.agent.cnireq import ids, prev_result, requested
from ovsctl.agent.cniserver import CNIError
from ovsctl.k8s import model


@pytest.fixture
def agent():
    """What reading a request needs of the agent: the cluster snapshot (a Pod's annotation)."""
    return types.SimpleNamespace(cluster={})


def _pod(agent, ns, name, note=None):
    meta = {"name": name, "namespace": ns}
    if note is not None:
        meta["annotations"] = {model.STATIC_IP_ANNOTATION: note}
    pod = model.parse({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {}})
    agent.cluster[pod.key] = pod
    return pod


def req(**config):
    return {"config": {"cniVersion": "1.0.0", "name": "ovsctl", **config}}


def test_nothing_requested(agent):
    assert requested(agent.cluster, req(), {"K8S_POD_NAME": "a"}) == (None, None)


def test_cni_args_ip_and_mac(agent):
    got = requested(agent.cluster, req(), {"IP": "10.244.0.81", "MAC": "0A:58:0A:F4:00:51"})
    assert got == ("10.244.0.81", "0a:58:0a:f4:00:51")


def test_runtime_config_ips_and_mac(agent):
    got = requested(
        agent.cluster, req(runtimeConfig={"ips": ["10.244.0.7/24"], "mac": "0e:00:00:00:00:07"}), {}
    )
    assert got == ("10.244.0.7", "0e:00:00:00:00:07")


def test_the_pod_annotation_is_a_static_ip(agent):
    _pod(agent, "prod", "db-0", "10.244.0.50")
    args = {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "db-0"}
    assert requested(agent.cluster, req(), args) == ("10.244.0.50", None)
    # the same address asked for twice is fine; different ones are an error naming both
    assert requested(agent.cluster, req(), {**args, "IP": "10.244.0.50"}) == ("10.244.0.50", None)
    with pytest.raises(CNIError) as e:
        requested(agent.cluster, req(), {**args, "IP": "10.244.0.51"})
    assert e.value.code == 103 and "10.244.0.50" in e.value.msg and "10.244.0.51" in e.value.msg


def test_a_bad_annotation_fails_only_that_pods_add(agent):
    _pod(agent, "prod", "bad", "not-an-ip")  # the object itself is accepted
    with pytest.raises(CNIError) as e:
        requested(agent.cluster, req(), {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "bad"})
    assert e.value.code == 103 and "not-an-ip" in e.value.msg
    assert model.STATIC_IP_ANNOTATION in e.value.msg


@pytest.mark.parametrize(
    "config, args, code",
    [
        ({"runtimeConfig": {"ips": "10.244.0.5"}}, {}, 7),
        ({"runtimeConfig": []}, {}, 7),
        ({}, {"IP": "fd00::1"}, 103),
        ({}, {"MAC": "ff:ff:ff:ff:ff:ff"}, 103),
        ({}, {"MAC": "00:00:00:00:00:00"}, 103),
        ({}, {"MAC": "0a:58:zz:00:00:01"}, 103),
        ({"runtimeConfig": {"mac": "0e:00:00:00:00:01"}}, {"MAC": "0e:00:00:00:00:02"}, 103),
    ],
)
def test_bad_requests_are_clear_errors(agent, config, args, code):
    with pytest.raises(CNIError) as e:
        requested(agent.cluster, req(**config), args)
    assert e.value.code == code


@pytest.mark.parametrize(
    "bad",
    [
        {"containerID": "abc\nINFO forged line", "ifname": "eth0"},
        {"containerID": "../../etc", "ifname": "eth0"},
        {"containerID": "abc", "ifname": "eth0\n"},
        {"containerID": "abc", "ifname": "a/b"},
        {"containerID": "abc", "ifname": "x" * 16},
        {"containerID": "abc", "ifname": "eth0", "args": {"K8S_POD_NAME": "web\nERROR x"}},
        {"containerID": "abc", "ifname": "eth0", "args": {"K8S_POD_NAMESPACE": "a/b"}},
        {"containerID": "abc", "ifname": "eth0", "args": {"K8S_POD_NAME": 5}},
        {"containerID": "abc", "ifname": "eth0", "netns": "/x\x00y"},
    ],
)
def test_the_agent_checks_ids_itself(bad):
    with pytest.raises(CNIError) as e:
        ids(bad)
    assert e.value.code == 4


def test_prev_result_is_checked_and_kept():
    assert prev_result(req()) is None
    prev = {"interfaces": [{"name": "x"}], "ips": [], "dns": {}}
    assert prev_result(req(prevResult=prev)) == prev
    for bad in ("x", {"interfaces": "x"}, {"ips": [1]}, {"dns": []}):
        with pytest.raises(CNIError) as e:
            prev_result(req(prevResult=bad))
        assert e.value.code == 7


def test_pod_annotation_round_trips_through_the_model():
    pod = model.parse(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "a",
                "namespace": "n",
                "annotations": {model.STATIC_IP_ANNOTATION: " 10.244.0.9 "},
            },
            "spec": {},
        }
    )
    assert pod.static_ip == "10.244.0.9"
    assert model.parse(model.to_dict(pod)) == pod


def test_requested_addresses_per_family(agent):
    from ovsctl.agent.cnireq import requested_addrs

    _pod(agent, "prod", "db-0", "fd00:10:244:1::50, 10.244.0.50")
    args = {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "db-0"}
    both = (4, 6)
    assert requested_addrs(agent.cluster, req(), args, both) == (
        ("10.244.0.50", "fd00:10:244:1::50"),
        None,
    )
    # the same addresses from several sources agree; IP= lists one per family
    rc = req(runtimeConfig={"ips": ["fd00:10:244:1:0::50/64"]})
    got = requested_addrs(agent.cluster, rc, {**args, "IP": "10.244.0.50"}, both)
    assert got[0] == ("10.244.0.50", "fd00:10:244:1::50")
    with pytest.raises(CNIError) as e:
        requested_addrs(agent.cluster, req(), {**args, "IP": "fd00:10:244:1::51"}, both)
    assert e.value.code == 103 and "fd00:10:244:1::51 and fd00:10:244:1::50" in e.value.msg
    # a family the node has no pod CIDR of
    with pytest.raises(CNIError, match="serves IPv6 pods only") as e:
        requested_addrs(agent.cluster, req(), {"IP": "10.244.0.5"}, (6,))
    assert e.value.code == 103
    assert requested_addrs(agent.cluster, req(), {"IP": "fd00::5"}, (6,)) == (("fd00::5",), None)
