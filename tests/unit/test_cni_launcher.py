"""The shim's launcher (cni-shim/ovsctl-cni): it runs the plugin module beside it
(cni-shim/ovsctl_cni.py) from Python's bytecode cache, so that an exec compiles nothing; a
cache that is stale, corrupt or cannot be written never fails a call. Real subprocesses of the
node's /usr/bin/python3 on copies of the two files."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SHIM_PATH = Path(__file__).resolve().parents[2] / "cni-shim" / "ovsctl-cni"
MODULE_PATH = SHIM_PATH.with_name("ovsctl_cni.py")

needs_python3_early = pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK),
    reason="shebang interpreter /usr/bin/python3 missing",
)


@pytest.fixture
def installed(tmp_path):
    """The launcher and its module copied into a directory of their own (as installed)."""
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy2(SHIM_PATH, d / "ovsctl-cni")
    shutil.copy2(MODULE_PATH, d / "ovsctl_cni.py")
    return d


def _exec(shim: Path, *flags: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/usr/bin/python3", "-IS", *flags, str(shim)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env or {"CNI_COMMAND": "VERSION"},
        check=False,
    )


def _version_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"


def _cached(d: Path) -> list[Path]:
    return sorted((d / "__pycache__").glob("ovsctl_cni.*.pyc"))


@needs_python3_early
def test_launcher_runs_the_module_from_its_bytecode_cache(installed):
    """The first exec writes the module's bytecode; the next ones load it and compile nothing
    (-v names where each module's code object came from)."""
    _version_ok(_exec(installed / "ovsctl-cni"))
    assert len(_cached(installed)) == 1
    proc = _exec(installed / "ovsctl-cni", "-v")
    _version_ok(proc)
    assert f"code object from '{_cached(installed)[0]}'" in proc.stderr


@needs_python3_early
def test_launcher_through_a_symlink_finds_its_module(installed, tmp_path):
    link = tmp_path / "elsewhere" / "ovsctl-cni"
    link.parent.mkdir()
    link.symlink_to(installed / "ovsctl-cni")
    _version_ok(_exec(link))


@needs_python3_early
def test_launcher_stale_cache_is_recompiled(installed):
    _version_ok(_exec(installed / "ovsctl-cni"))
    module = installed / "ovsctl_cni.py"
    module.write_text(
        module.read_text().replace('ABOUT = "ovsctl-cni: ', 'ABOUT = "ovsctl-cni: X ')
    )
    proc = _exec(installed / "ovsctl-cni", env={"PATH": "/usr/bin:/bin"})  # no CNI_COMMAND
    assert proc.returncode == 1 and proc.stderr.startswith("ovsctl-cni: X "), proc.stderr


@needs_python3_early
def test_launcher_corrupt_cache_falls_back_and_is_rewritten(installed):
    _version_ok(_exec(installed / "ovsctl-cni"))
    pyc = _cached(installed)[0]
    pyc.write_bytes(pyc.read_bytes()[:40])  # a valid header, then marshal data cut short
    _version_ok(_exec(installed / "ovsctl-cni"))  # the source compiled instead
    assert not pyc.exists()  # dropped, so that the next exec writes it anew
    _version_ok(_exec(installed / "ovsctl-cni"))
    proc = _exec(installed / "ovsctl-cni", "-v")
    _version_ok(proc)
    assert f"code object from '{pyc}'" in proc.stderr


@needs_python3_early
def test_launcher_unwritable_cache_still_answers(installed):
    (installed / "__pycache__").write_text("not a directory")  # no cache can be written
    for _ in range(2):
        _version_ok(_exec(installed / "ovsctl-cni"))


@needs_python3_early
def test_launcher_without_its_module_is_a_cni_error(installed):
    (installed / "ovsctl_cni.py").unlink()
    proc = _exec(installed / "ovsctl-cni")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = json.loads(proc.stdout)
    assert err["code"] == 5 and "ovsctl_cni.py" in err["msg"], err
