"""Run a private Open vSwitch (ovsdb-server + ovs-vswitchd) inside a network namespace.

Used by the tests and the netns lab: each node gets its own run directory (OVS_RUNDIR, so the
*.mgmt sockets never collide), database, log files and pid files, and is stopped by the PIDs
it started — never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ovsctl.util import kill_pid

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OVSProcError(RuntimeError):
    pass


def _run(cmd: list[str], env=None, timeout: float = 30) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise OVSProcError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def netns_exec(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


class OVS:
    def __init__(self, rundir: str, netns: str | None = None):
        self.rundir = os.path.abspath(rundir)
        self.netns = netns
        self.db = os.path.join(self.rundir, "conf.db")
        self.sock = os.path.join(self.rundir, "db.sock")
        self.remote = f"unix:{self.sock}"

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            OVS_RUNDIR=self.rundir,
            OVS_DBDIR=self.rundir,
            OVS_LOGDIR=self.rundir,
            OVS_PKGDATADIR="/usr/share/openvswitch",
        )
        return env

    def pidfile(self, daemon: str) -> str:
        return os.path.join(self.rundir, f"{daemon}.pid")

    def pid(self, daemon: str) -> int | None:
        try:
            with open(self.pidfile(daemon)) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> OVS:
        os.makedirs(self.rundir, exist_ok=True)
        if not os.path.exists(self.db):
            _run(["ovsdb-tool", "create", self.db, SCHEMA])
        self.start_ovsdb()
        _run(["ovs-vsctl", f"--db={self.remote}", "--no-wait", "init"], env=self.env)
        self.start_vswitchd()
        return self

    def start_ovsdb(self) -> None:
        r = self.rundir
        _run(
            netns_exec(self.netns)
            + [
                "ovsdb-server",
                self.db,
                f"--remote=punix:{self.sock}",
                "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                f"--pidfile={self.pidfile('ovsdb-server')}",
                f"--log-file={r}/ovsdb-server.log",
                f"--unixctl={r}/ovsdb-server.ctl",
                "--detach",
            ],
            env=self.env,
        )
        self._wait(lambda: os.path.exists(self.sock), 10, "ovsdb-server socket")

    def start_vswitchd(self) -> None:
        r = self.rundir
        _run(
            netns_exec(self.netns)
            + [
                "ovs-vswitchd",
                self.remote,
                f"--pidfile={self.pidfile('ovs-vswitchd')}",
                f"--log-file={r}/ovs-vswitchd.log",
                f"--unixctl={r}/ovs-vswitchd.ctl",
                "--detach",
            ],
            env=self.env,
        )
        self._wait(lambda: self.pid("ovs-vswitchd") is not None, 10, "ovs-vswitchd")

    def stop_daemon(self, daemon: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        pid = self.pid(daemon)
        if pid is not None:
            kill_pid(pid, sig, timeout)

    def stop(self) -> None:
        self.stop_daemon("ovs-vswitchd")
        self.stop_daemon("ovsdb-server")

    def vsctl(self, *args: str) -> str:
        return _run(["ovs-vsctl", f"--db={self.remote}", "--timeout=10", *args], env=self.env)

    def ofctl(self, *args: str) -> str:
        return _run(["ovs-ofctl", "-O", "OpenFlow15", *args], env=self.env)

    def appctl(self, *args: str) -> str:
        return _run(
            ["ovs-appctl", "-t", os.path.join(self.rundir, "ovs-vswitchd.ctl"), *args], env=self.env
        )

    @staticmethod
    def _wait(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise OVSProcError(f"timed out waiting for {what}")
            time.sleep(0.02)
