"""Pod start through a real CRI runtime: containerd's RunPodSandbox (runc starts the pause
sandbox, containerd runs the CNI plugins from a conflist, as kubelet has it do), p50, with
ovsctl-cni alone in the conflist against Debian's reference `bridge` + `host-local` alone, in
the *same* containerd, which picks up a new conflist by itself.
The two take turns in rounds, so that both see the same machine.

The runtime harness of tests/runtimes provides containerd (private root, state, sockets, CNI
dirs, in a test node's network namespace), the image (busybox-static, saved by podman) and the
CRI client; it needs containerd, runc, podman and busybox-static (`make deps`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid

import netaddr

from bench.common import save, summary, wait_until

PODS = 20  # per side
ROUNDS = 2
REF_SUBNET = "10.98.0.0/16"


def _ref_conflist(data_dir: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": f"ref{uuid.uuid4().hex[:6]}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cnicri0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": REF_SUBNET, "dataDir": data_dir},
            }
        ],
    }


def _run(cd, n: int) -> list[float]:
    """Start n sandboxes one after the other (timing RunPodSandbox), then remove them."""
    times, ids = [], []
    try:
        for _ in range(n):
            name = f"b{uuid.uuid4().hex[:8]}"
            t0 = time.monotonic()
            ids.append(cd.cri.run_pod_sandbox(name, "default", str(uuid.uuid4())))
            times.append(time.monotonic() - t0)
    finally:
        for sid in ids:
            cd.cri.stop_pod_sandbox(sid)
            cd.cri.remove_pod_sandbox(sid)
    return times


def _switch(cd, conf: dict, cidr: str) -> None:
    """Install `conf` and wait until containerd uses it: a sandbox gets an address in `cidr`."""
    cd.set_conflist(conf)

    def uses_it():
        sid = cd.cri.run_pod_sandbox(f"w{uuid.uuid4().hex[:8]}", "default", str(uuid.uuid4()))
        try:
            ip = cd.cri.pod_sandbox_status(sid)[0].network.ip
        finally:
            cd.cri.stop_pod_sandbox(sid)
            cd.cri.remove_pod_sandbox(sid)
        return bool(ip) and netaddr.IPAddress(ip) in netaddr.IPNetwork(cidr)

    wait_until(uses_it, 60, f"containerd using conflist {conf['name']}", interval=0.2)


def run() -> dict:
    for tool in ("containerd", "runc", "podman"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: make deps installs it")
    from tests.helpers import Node
    from tests.runtimes.harness import (
        Containerd,
        Podman,
        busybox_rootfs_tar,
        conflist,
        make_bin_dir,
        rmtree,
    )

    d = tempfile.mkdtemp(prefix="ovbcri-", dir="/tmp")
    node = Node(pod_cidr="10.246.0.0/22")
    pm = cd = None
    mine: list[float] = []
    ref: list[float] = []
    try:
        node.start()
        bin_dir = make_bin_dir(os.path.join(d, "cni-bin"))
        pm = Podman(node, os.path.join(d, "podman"), bin_dir)
        pm.import_image(busybox_rootfs_tar(os.path.join(d, "rootfs.tar")))
        archive = os.path.join(d, "image.tar")
        pm("save", "--format", "docker-archive", "-o", archive, pm.image)
        cd = Containerd(node, os.path.join(d, "containerd"), bin_dir, pm.image)
        ours = conflist(f"ovsctl-{uuid.uuid4().hex[:6]}", node.sock)
        ours["plugins"] = ours["plugins"][:1]  # ovsctl-cni alone, as the reference is alone
        cd.set_conflist(ours)
        cd.start()
        cd.ctr("images", "import", "--snapshotter", "native", archive)
        refconf = _ref_conflist(os.path.join(d, "host-local"))
        for _ in range(ROUNDS):
            _switch(cd, ours, node.pod_cidr)
            mine += _run(cd, PODS // ROUNDS)
            _switch(cd, refconf, REF_SUBNET)
            ref += _run(cd, PODS // ROUNDS)
    finally:
        if cd is not None:
            cd.stop()
        if pm is not None:
            pm.cleanup()
        node.stop()
        rmtree(d)
    o, r = summary(mine), summary(ref)
    result = {
        "cri_run_p50_ratio": o["p50"] / r["p50"],
        "raw": {
            "ovsctl_run_pod_sandbox_s": o,
            "reference_bridge_host_local_run_pod_sandbox_s": r,
            "ovsctl_minus_reference_p50_ms": (o["p50"] - r["p50"]) * 1000,
            "mean_ratio": statistics.fmean(mine) / statistics.fmean(ref),
            "pods_per_side": len(mine),
        },
    }
    save("cri", result)
    print(
        f"containerd RunPodSandbox p50 {o['p50'] * 1000:.0f} ms with ovsctl-cni vs "
        f"{r['p50'] * 1000:.0f} ms with bridge+host-local (ratio {result['cri_run_p50_ratio']:.2f})"
    )
    return result


if __name__ == "__main__":
    run()
