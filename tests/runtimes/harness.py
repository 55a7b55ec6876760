"""Real container runtimes driving the real shim: a private containerd (CRI) and a private
podman, each run inside a test node's network namespace, each with its own root, state,
sockets, CNI bin and conf dirs — nothing shared with the machine's own runtimes.

The runtimes enter only the node's *network* namespace (`nsenter --net`), not a private mount
namespace as `ip netns exec` would: the sandboxes' netns files are bind mounts the runtime makes,
and the agent (in its own `ip netns exec` mount namespace, a slave of the host's) must see them.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

from tests.helpers import REPO, sh, uid, wait_for
from tests.runtimes.cri import RuntimeService

REF_PLUGINS = "/usr/lib/cni"
# the shim exactly as shipped (`#!/usr/bin/python3 -IS`, stdlib only), as it is installed in
# /opt/cni/bin; pip's copy in the venv has its shebang rewritten to the venv's python
SHIM = os.path.join(REPO, "cni-shim", "ovsctl-cni")


def conflist(name: str, socket: str, chain: bool = False) -> dict:
    """The conflist the project ships (1.0.0 config, 1.1.0 also offered), optionally with the
    reference `tuning` and `portmap` chained after ours."""
    plugins = [{"type": "ovsctl-cni", "socket": socket, "timeout": 60}]
    if chain:
        plugins += [
            {"type": "tuning", "mtu": 1400},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ]
    return {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": name,
        "plugins": plugins,
    }


def make_bin_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    os.symlink(SHIM, os.path.join(path, "ovsctl-cni"))
    for p in ("loopback", "portmap", "tuning", "host-local", "bridge"):
        os.symlink(os.path.join(REF_PLUGINS, p), os.path.join(path, p))
    return path


def busybox_rootfs_tar(path: str) -> str:
    """A one-binary root filesystem: busybox-static and the applets we call."""
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "sleep", "nc", "ip", "ping", "cat", "ifconfig", "httpd"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ti)
    return path


def _nsenter(node_ns: str) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{node_ns}", "--"]


def _kill_tree_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _umount_under(path: str) -> None:
    """Unmount whatever a runtime left mounted under `path` (deepest first)."""
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for m in sorted((m for m in mounts if m.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


class Podman:
    """podman 4.3 with the CNI backend, runc, vfs storage and cgroupfs, all under `dir`."""

    def __init__(self, node, dir: str, bin_dir: str):
        self.node = node
        self.dir = dir
        self.bin_dir = bin_dir
        self.conf_dir = os.path.join(dir, "net.d")
        self.root = os.path.join(dir, "root")
        self.runroot = os.path.join(dir, "runroot")
        self.tmp = os.path.join(dir, "tmp")
        for d in (self.conf_dir, self.root, self.runroot, self.tmp):
            os.makedirs(d, exist_ok=True)
        self.conf = os.path.join(dir, "containers.conf")
        with open(self.conf, "w") as fh:
            fh.write(
                "[containers]\n"
                'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                'log_driver = "k8s-file"\n'
                "[network]\n"
                'network_backend = "cni"\n'
                f'cni_plugin_dirs = ["{bin_dir}"]\n'
                f'network_config_dir = "{self.conf_dir}"\n'
                "[engine]\n"
                'runtime = "runc"\n'
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'tmp_dir = "{self.tmp}"\n'
            )
        self.storage_conf = os.path.join(dir, "storage.conf")
        with open(self.storage_conf, "w") as fh:
            fh.write(
                f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
            )
        self.env = dict(
            os.environ, CONTAINERS_CONF=self.conf, CONTAINERS_STORAGE_CONF=self.storage_conf
        )
        self.containers: list[str] = []

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess:
        cmd = [
            *_nsenter(self.node.ns),
            "podman",
            "--root",
            self.root,
            "--runroot",
            self.runroot,
            "--storage-driver",
            "vfs",
            *args,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and p.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({p.returncode}): {p.stderr or p.stdout}"
            )
        return p

    def add_network(self, conf: dict) -> str:
        path = os.path.join(self.conf_dir, f"{conf['name']}.conflist")
        with open(path, "w") as fh:
            json.dump(conf, fh)
        return conf["name"]

    def run(self, name: str, network: str, *extra: str) -> str:
        self.containers.append(name)
        self("run", "-d", "--name", name, "--network", network, *extra, self.image, "sleep", "1d")
        return name

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def ip(self, name: str, network: str) -> str:
        return self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]

    def netns(self, name: str) -> str:
        return self.inspect(name)["NetworkSettings"]["SandboxKey"]

    def import_image(self, tarball: str) -> str:
        self.image = f"localhost/ovsctl-rt-{uid()}:latest"
        self("import", "--change", 'CMD=["/bin/sleep","1d"]', tarball, self.image)
        return self.image

    def cleanup(self) -> None:
        for name in self.containers:
            self("rm", "-f", "-t", "0", name, check=False)
        self("rm", "-a", "-f", "-t", "0", check=False)
        # conmon processes of our containers, if any survived (ours: their cmdline names our root)
        _kill_tree_pids(_pids_mentioning(self.dir))
        _umount_under(self.dir)


def _pids_mentioning(path: str) -> list[int]:
    """PIDs of processes whose command line mentions `path` (our private dirs: only processes
    this test session started can mention them)."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(d, "cmdline"), "rb") as fh:
                if path.encode() in fh.read():
                    out.append(int(os.path.basename(d)))
        except OSError:
            pass
    return [p for p in out if p != os.getpid()]


class Containerd:
    """containerd 1.6 with its CRI plugin, runc, the native snapshotter, under `dir`."""

    def __init__(self, node, dir: str, bin_dir: str, sandbox_image: str):
        self.node = node
        self.dir = dir
        self.bin_dir = bin_dir
        self.conf_dir = os.path.join(dir, "net.d")
        os.makedirs(self.conf_dir, exist_ok=True)
        self.address = os.path.join(dir, "containerd.sock")
        self.config = os.path.join(dir, "config.toml")
        self.log = os.path.join(dir, "containerd.log")
        self.sandbox_image = sandbox_image
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        with open(self.config, "w") as fh:
            fh.write(
                "version = 2\n"
                f'root = "{dir}/root"\n'
                f'state = "{dir}/state"\n'
                'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", '
                '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
                '"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs"]\n'
                f'[grpc]\naddress = "{self.address}"\n'
                f'[ttrpc]\naddress = "{self.address}.ttrpc"\n'
                f'[debug]\nlevel = "debug"\n'
                f'[plugins."io.containerd.internal.v1.opt"]\npath = "{dir}/opt"\n'
                f"[{cri}]\n"
                f'sandbox_image = "{sandbox_image}"\n'
                "disable_apparmor = true\n"
                "restrict_oom_score_adj = true\n"
                'stream_server_address = "127.0.0.1"\n'
                'stream_server_port = "0"\n'
                f"[{cri}.containerd]\n"
                'snapshotter = "native"\n'
                'default_runtime_name = "runc"\n'
                f"[{cri}.containerd.runtimes.runc]\n"
                'runtime_type = "io.containerd.runc.v2"\n'
                f"[{cri}.containerd.runtimes.runc.options]\n"
                f'Root = "{dir}/runc"\n'
                f"[{cri}.cni]\n"
                f'bin_dir = "{bin_dir}"\n'
                f'conf_dir = "{self.conf_dir}"\n'
                "max_conf_num = 1\n"
            )
        self.proc: subprocess.Popen | None = None
        self.cri: RuntimeService | None = None

    def set_conflist(self, conf: dict) -> None:
        """containerd's CRI picks up conf_dir changes itself (fsnotify)."""
        for f in os.listdir(self.conf_dir):
            os.unlink(os.path.join(self.conf_dir, f))
        with open(os.path.join(self.conf_dir, f"10-{conf['name']}.conflist"), "w") as fh:
            json.dump(conf, fh)

    def start(self) -> Containerd:
        logf = open(self.log, "a")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            [*_nsenter(self.node.ns), "containerd", "--config", self.config],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.cri = RuntimeService(self.address)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited:\n{self.tail_log()}")
            return self.cri.version().runtime_api_version

        wait_for(up, 60, interval=0.2, what="containerd CRI answering")
        return self

    def ctr(self, *args: str, timeout: float = 120) -> str:
        return sh("ctr", "--address", self.address, "-n", "k8s.io", *args, timeout=timeout).stdout

    def tail_log(self, n: int = 40) -> str:
        try:
            with open(self.log) as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def remove_all(self, deadline: float = 60) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                items = self.cri.list_pod_sandbox()
                for sb in items:
                    self.cri.stop_pod_sandbox(sb.id)
                    self.cri.remove_pod_sandbox(sb.id)
                return
            except Exception:  # noqa: BLE001 - best effort in teardown, retried
                time.sleep(0.5)

    def stop(self) -> None:
        if self.cri:
            if self.proc and self.proc.poll() is None:
                self.remove_all()
            self.cri.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # shims (containerd-shim-runc-v2) and sandbox processes that outlived containerd
        for f in glob.glob(os.path.join(self.dir, "state", "**", "shim.pid"), recursive=True):
            try:
                _kill_tree_pids([int(open(f).read().strip())])
            except (OSError, ValueError):
                pass
        _kill_tree_pids(_pids_mentioning(self.dir))
        _umount_under(self.dir)


def rmtree(path: str) -> None:
    _umount_under(path)
    shutil.rmtree(path, ignore_errors=True)
