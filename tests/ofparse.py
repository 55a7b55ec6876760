"""OVS as the judge of flow text: encode flows as the agent sends them (OpenFlow 1.4 flow
mods), have `ovs-ofctl ofp-parse` decode them, and compare each line with the flow's own
text (`Flow.match_text()`, `Flow.actions_text()`), which the integration tests compare with
the switch's dump."""

from __future__ import annotations

import re
import shutil
import subprocess
import types

import os_ken.base.app_manager  # noqa: F401  (before os-ken's ofproto modules)
from os_ken.ofproto import ofproto_v1_4, ofproto_v1_4_parser

from flows import cookie
from ovsctl.openflow import encode as ofconv

HAVE_OVS_OFCTL = shutil.which("ovs-ofctl") is not None

# one decoded flow mod, as `ovs-ofctl ofp-parse` prints it
ADD_LINE = re.compile(
    r"OFPT_FLOW_MOD \(OF1\.4\) \(xid=0x[0-9a-f]+\): ADD (?:table:(?P<table>\d+) )?"
    r"(?P<match>\S+) cookie:(?P<cookie>0x[0-9a-f]+)(?: out_port:\S+)? actions=(?P<actions>\S+)"
)


def assert_ovs_decodes_as_text(flows, rnd: int = 7) -> None:
    """Every flow, decoded by OVS, reads as its own text: table, match, cookie (with the round
    `rnd`) and actions, each compared whole."""
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
        m = ADD_LINE.fullmatch(line)
        assert m, (str(f), line)
        assert int(m["table"] or 0) == f.table_id, (str(f), line)
        assert m["match"] == f.match_text(), (str(f), line)
        assert m["actions"] == f.actions_text(), (str(f), line)
        assert int(m["cookie"], 16) == cookie.with_round(f.cookie, rnd), (str(f), line)
