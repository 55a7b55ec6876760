"""Issue 14, items 3 and 5, as an attacker (or an unlucky cluster) would do it, in a 2-node lab:
objects the node cannot program are skipped with one log line and close more, never less;
every other owner is installed and the nodes stay Ready, across an agent restart; a finished
pod's labels never open a policy for the next owner of its IP."""

from __future__ import annotations

import yaml

from ovsctl.k8s import model
from tests.helpers import wait_for

NS = "sec"

OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    *[
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}],
            },
        }
        for name, labels, node in (
            ("db", {"app": "db"}, "node0"),
            ("web", {"app": "web"}, "node1"),
            ("intruder", {"app": "intruder"}, "node1"),
        )
    ],
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "canary", "namespace": NS},
        "spec": {"clusterIP": "10.96.7.7", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    },
]

BAD = [
    # an IPv6 ipBlock (the encoder once raised "negative shift count" on it and failed every
    # batch; it is programmed since dual-stack): db is isolated, and in this IPv4 lab the
    # IPv6-only rule admits nobody
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "v6only", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "named", "namespace": NS},
        "spec": {"clusterIP": "10.96.7.8", "ports": [{"port": 80}]},
    },
    {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "named-fqdn",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": "named"},
        },
        "addressType": "FQDN",
        "ports": [{"port": None}],
        "endpoints": [{"addresses": ["db.example.org"]}],
    },
]


# A Service no node can program: two ClusterIPs of one family. The API server (and the lab's
# `apply`, which allocates as it does) refuses it, so it is written straight into the lab's
# cluster state, as a cluster whose API server let it through would hand it to the agents.
UNPROGRAMMABLE_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "six", "namespace": NS},
    "spec": {
        "clusterIP": "fd00:10:96::6",
        "clusterIPs": ["fd00:10:96::6", "fd00:10:96::7"],
        "ports": [{"port": 80}],
    },
}


def _write(tmp_path, name, objs) -> str:
    f = tmp_path / name
    f.write_text(yaml.safe_dump_all(objs))
    return str(f)


def _log(lab, node) -> str:
    with open(lab._log_path(node)) as fh:
        return fh.read()


def _healthy(lab) -> bool:
    return all(n["healthy"] for n in lab.status()["nodes"])


def test_bad_objects_are_skipped_once_and_close_more_never_less(make_lab, tmp_path):
    lab = make_lab(2)
    lab.apply([_write(tmp_path, "good.yaml", OBJECTS)], log=lambda *_: None)
    key = f"{NS}/web->{NS}/db:80/TCP"
    svc = f"{NS}/intruder->svc:{NS}/canary:80/TCP"
    wait_for(lambda: lab.probe(services=True).get(svc), 30, what="the canary Service works")
    assert lab.probe()[key], "db is open before any policy"

    lab.apply([_write(tmp_path, "bad.yaml", BAD)], log=lambda *_: None)
    bad_service = model.parse(UNPROGRAMMABLE_SERVICE)
    lab.write_object(bad_service)
    # db is isolated by the policy whose only peer cannot be programmed (fail-closed) ...
    wait_for(lambda: not lab.probe()[key], 30, what="db isolated by the IPv6-only policy")
    # ... and everything else keeps being programmed: a Service change after the bad objects
    canary = dict(
        OBJECTS[-1], spec={**OBJECTS[-1]["spec"], "ports": [{"port": 8080, "targetPort": 80}]}
    )
    lab.apply([_write(tmp_path, "canary.yaml", [canary])], log=lambda *_: None)
    svc8080 = f"{NS}/intruder->svc:{NS}/canary:8080/TCP"
    wait_for(lambda: lab.probe(services=True).get(svc8080), 30, what="a later Service change")
    assert _healthy(lab)
    for node in ("node0", "node1"):
        log = _log(lab, node)
        reported = [
            ln for ln in log.splitlines() if "v6only" in ln and (" ERROR " in ln or "ignor" in ln)
        ]
        assert not reported, "a valid IPv6 ipBlock is programmed, not reported"
        assert log.count("ignoring Service sec/six: Service sec/six: spec.clusterIPs") == 1
        assert log.count("addressType 'FQDN' is not programmed") == 1
        assert "negative shift count" not in log and "Traceback" not in log

    # a restart resyncs without looping on the bad owners and gives the same verdicts
    lab.restart("node0", log=lambda *_: None)
    wait_for(lambda: _healthy(lab), 60, what="node0 Ready after a restart")
    probe = lab.probe(services=True)
    assert not probe[key] and probe[svc8080]
    assert _log(lab, "node0").count("resync with switch failed") == 0

    # deleting the bad objects leaves nothing stale behind
    lab.delete([_write(tmp_path, "bad2.yaml", BAD)], log=lambda *_: None)
    lab.remove_object(bad_service.key)
    wait_for(lambda: lab.probe()[key], 30, what="db open again once the policy is gone")


def test_a_finished_pods_labels_open_nothing_for_the_next_owner_of_its_ip(make_lab, tmp_path):
    """A Succeeded pod labelled role=admin keeps status.podIP; that IP now belongs to another
    pod. An admin-only policy must not admit the new owner."""
    lab = make_lab(2)
    lab.apply([_write(tmp_path, "pods.yaml", OBJECTS[:4])], log=lambda *_: None)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "admins-only", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "admin"}}}]}],
        },
    }
    lab.apply([_write(tmp_path, "policy.yaml", [policy])], log=lambda *_: None)
    key = f"{NS}/intruder->{NS}/db:80/TCP"
    wait_for(lambda: not lab.probe()[key], 30, what="db isolated")
    intruder_ip = next(p["ip"] for p in lab.status()["pods"] if p["name"] == "intruder")

    def old_admin(phase: str):
        return model.parse(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "old-admin", "namespace": NS, "labels": {"role": "admin"}},
                "spec": {"nodeName": "node1"},
                "status": {"phase": phase, "podIP": intruder_ip},
            }
        )

    # control: were the old pod still Running with that IP, its labels would admit the IP
    lab.write_object(old_admin("Running"))
    wait_for(lambda: lab.probe()[key], 30, what="a Running admin's IP is admitted")
    # it finished: its IP is nobody's peer any more
    lab.write_object(old_admin("Succeeded"))
    wait_for(lambda: not lab.probe()[key], 30, what="a Succeeded pod's IP admitted no more")
    lab.write_object(old_admin("Failed"))
    assert not lab.probe()[key]


def test_external_ips_naming_a_node_or_a_pod_take_nothing(make_lab, tmp_path):
    """Issue 18 review, P0-1 (CVE-2020-8554 and worse): a Service whose externalIPs are another
    node's IP (its tunnel endpoint) and a pod's IP, on that pod's port and the tunnel's, with no
    endpoints (were it programmed, the packets would be refused). The agents refuse both
    addresses (one log line each), the tunnel keeps working, and the pod is still reached
    directly."""
    lab = make_lab(2)
    lab.apply([_write(tmp_path, "good.yaml", OBJECTS)], log=lambda *_: None)
    key = f"{NS}/intruder->{NS}/db:80/TCP"  # node1 -> node0, through the tunnel
    wait_for(lambda: lab.probe().get(key), 30, what="db reached across the tunnel")
    node1 = next(n["ip"] for n in lab.status()["nodes"] if n["name"] == "node1")
    db = next(p["ip"] for p in lab.status()["pods"] if p["name"] == "db")
    grab = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "grab", "namespace": NS},
        "spec": {
            "clusterIP": "10.96.7.9",
            "selector": {"app": "nobody"},
            "externalIPs": [node1, db],
            "ports": [
                {"name": "http", "port": 80},
                {"name": "vxlan", "port": 4789, "protocol": "UDP"},
            ],
        },
    }
    lab.write_object(model.parse(grab))
    for node in ("node0", "node1"):
        for line in (
            f"Service {NS}/grab: spec.externalIPs {node1} refused (a Node's address)",
            f"Service {NS}/grab: spec.externalIPs {db} refused (inside the pod CIDRs)",
        ):
            wait_for(lambda n=node, ln=line: ln in _log(lab, n), 30, what=f"{node}: {line}")
    assert lab.probe()[key], "db still reached directly, through the tunnel"
    assert _healthy(lab)
    for node in ("node0", "node1"):
        assert _log(lab, node).count(f"Service {NS}/grab: spec.externalIPs {db} refused") == 1
