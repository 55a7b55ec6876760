"""`make demo`, the README's first command: the demo lab comes up, every pod reaches every
other, the UI's command is printed, and the lab is gone afterwards; with --keep it stays, the
Service of examples/services.yaml answers every pod on both ports (real packets) and `ovsctl lab
trace` follows a packet to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ovsctl.lab.lab import Lab
from tests.helpers import uid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_and_leaves_nothing_behind():
    if os.geteuid() != 0:
        pytest.fail("the demo needs root")
    name = f"d{uid(5)}"
    try:
        proc = _run("-m", "ovsctl.lab.demo", "--name", name)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        assert "all pods reach each other across nodes" in out
        assert f"ovsctl ui --lab {name}" in out and "--keep" in out
        assert "table=" in out or "Classifier" in out  # node0's flow tables were printed
        assert not Lab(name).exists()
    finally:
        Lab(name).down()  # idempotent, from any state (a demo killed halfway too)


def test_demo_keep_leaves_a_lab_whose_service_answers_a_trace():
    if os.geteuid() != 0:
        pytest.fail("the demo needs root")
    name = f"d{uid(5)}"
    try:
        proc = _run("-m", "ovsctl.lab.demo", "--name", name, "--keep")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert Lab(name).exists()
        assert f"ovsctl ui --lab {name}" in proc.stdout
        tr = _run(
            "-m", "ovsctl.cli", "lab", "trace", "--name", name, "frontend/f1", "svc:backend/web",
            "--json", timeout=120,
        )  # fmt: skip
        assert tr.returncode == 0, tr.stdout[-2000:] + tr.stderr[-2000:]
        doc = json.loads(tr.stdout)
        assert doc["verdict"] == "delivered", doc["verdict"]
        assert doc["service"], doc
        # and real packets: every pod reaches the Service on both its ports
        pr = _run("-m", "ovsctl.cli", "lab", "probe", "--name", name, "--services", "--json")
        res = json.loads(pr.stdout)
        svc = {k: v for k, v in res.items() if "svc:backend/web" in k}
        assert len(svc) >= 9 * 2 and all(svc.values()), svc
    finally:
        Lab(name).down()
