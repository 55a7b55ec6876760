"""OVS as the judge of flow text: encode flows as the agent sends them (OpenFlow 1.4 flow
mods), have `ovs-ofctl ofp-parse` decode them, and compare each line with the flow's own
text (`Flow.match_text()`, `Flow.actions_text()`), which the integration tests compare with
the switch's dump."""

from __future__ import annotations

import shutil
import subprocess
import types

import os_ken.base.app_manager  # noqa: F401  (before os-ken's ofproto modules)
from os_ken.ofproto import ofproto_v1_4, ofproto_v1_4_parser

from ovsctl.openflow import encode as ofconv

HAVE_OVS_OFCTL = shutil.which("ovs-ofctl") is not None


def assert_ovs_decodes_as_text(flows, rnd: int = 7) -> None:
    """Every flow, decoded by OVS, reads as its own text (table, match, actions)."""
    flows = sorted(flows, key=lambda f: (f.table_id, -f.priority, f.match))
    dp = types.SimpleNamespace(ofproto=ofproto_v1_4, ofproto_parser=ofproto_v1_4_parser, id=1)
    data = b""
    for f in flows:
        msg = ofconv.flow_add(dp, f, rnd)
        msg.serialize()
        data += bytes(msg.buf)
    out = subprocess.run(
        ["ovs-ofctl", "ofp-parse", "-"], input=data, capture_output=True, check=True, timeout=10
    ).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == len(flows)
    for f, line in zip(flows, lines, strict=True):
        assert f"table:{f.table_id} " in line or f.table_id == 0, (str(f), line)
        assert f" {f.match_text()} " in line, (str(f), line)
        assert line.endswith(f" actions={f.actions_text()}"), (str(f), line)
