"""`ovsctl flows`: the switch's flows, with table names and cookie owners decoded."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from flows import cookie, tables

_LINE = re.compile(
    r"cookie=(?P<cookie>0x[0-9a-f]+), .*?table=(?P<table>\d+), "
    r"n_packets=(?P<packets>\d+), n_bytes=(?P<bytes>\d+), .*?"
    r"(?P<match>priority=\d+\S*) actions=(?P<actions>.*)$"
)


def dump(bridge: str) -> list[dict]:
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow15", "dump-flows", bridge],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"ovs-ofctl dump-flows {bridge} failed")
    rows = []
    for line in out.stdout.splitlines():
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


def _owner(o: dict) -> str:
    """feature:owner-id (the owner id is a hash of the owner's key, e.g. pod/<cid>/<ifname>)."""
    return f"{o['feature']}:{o['owner']:#012x}" if o["owner"] else o["feature"]


def main(args) -> int:
    try:
        rows = dump(args.bridge)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"ovsctl flows: {e}", file=sys.stderr)
        return 1
    if args.table is not None:
        want = args.table
        rows = [r for r in rows if r["table"] == want or str(r["table_id"]) == want]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    current = None
    for r in rows:
        if r["table"] != current:
            current = r["table"]
            doc = tables.BY_NAME[current].doc if current in tables.BY_NAME else ""
            print(f"\n[{r['table_id']}] {current}  — {doc}")
        o = r["owner"]
        stats = "" if args.no_stats else f" n_packets={r['packets']} n_bytes={r['bytes']}"
        print(f"  {_owner(o):<22} round={o['round']:<3}{stats} {r['match']} actions={r['actions']}")
    return 0
