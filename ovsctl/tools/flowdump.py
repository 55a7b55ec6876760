"""`ovsctl flows`: the switch's flows, with table names and cookie owners decoded."""

from __future__ import annotations

import re
import subprocess

from flows import cookie, tables

_LINE = re.compile(
    r"cookie=(?P<cookie>0x[0-9a-f]+), .*?table=(?P<table>\d+), "
    r"n_packets=(?P<packets>\d+), n_bytes=(?P<bytes>\d+), .*?"
    r"(?P<match>priority=\d+\S*) actions=(?P<actions>.*)$"
)


def dump(bridge: str) -> list[dict]:
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow15", "--no-names", "dump-flows", bridge],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"ovs-ofctl dump-flows {bridge} failed")
    return parse(out.stdout)


def parse(text: str) -> list[dict]:
    """Rows of `ovs-ofctl --no-names dump-flows` output (lines that are no flow skipped)."""
    rows = []
    for line in text.splitlines():
        m = _LINE.search(line)
        if not m:
            continue
        c = int(m["cookie"], 16)
        tid = int(m["table"])
        rows.append(
            {
                "table": tables.name_of(tid),
                "table_id": tid,
                "cookie": f"{c:#x}",
                "owner": cookie.decode(c),
                "packets": int(m["packets"]),
                "bytes": int(m["bytes"]),
                "match": m["match"],
                "actions": m["actions"],
            }
        )
    return rows
