"""The lab's ground: where it lives, its addresses, its error, and running commands and
processes in its namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import netaddr

from ovsctl.util import wait_until

ROOT = os.environ.get("OVSCTL_LAB_ROOT", "/run/ovsctl-lab")
UNDERLAY = netaddr.IPNetwork("172.30.0.0/24")
EXTERNAL_IP = "172.30.0.2"
API_PORT = 6443  # the lab's Kubernetes API (`lab up --source api`), on the external host
SERVICE_CIDR = netaddr.IPNetwork("10.96.0.0/16")  # where the lab allocates missing ClusterIPs
EXTERNAL_PORT = 8080
HERE = os.path.dirname(os.path.abspath(__file__))
RESPONDER = os.path.join(HERE, "responder.py")
PROBER = os.path.join(HERE, "prober.py")
PROVISION = os.path.join(HERE, "provision.sh")  # shared with the Vagrant lab (vagrant/)


class LabError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True, timeout: float = 30, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(p.stderr or p.stdout).strip()}")
    return p


def in_ns(
    ns: str, *cmd: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int | None, marker: str) -> bool:
    """Is `pid` still the process we started (its command line mentions `marker`)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker.encode() in fh.read()
    except OSError:
        return False


def _stop_pid(pid: int | None, marker: str, sig=signal.SIGTERM, timeout: float = 5) -> None:
    if not _alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait(cond, timeout: float, what: str):
    return wait_until(cond, timeout, what, error=LabError)


def _zombie(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return None
