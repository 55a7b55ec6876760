"""`ovsctl ui`'s API on a large pipeline: 20 tables and 30,000 flows on a real (private,
userspace) OVS, the agent's /flows and /status views served over HTTP with an owner for every
cookie. Measured, each the median of RUNS:

- `dump`: `ovs-ofctl dump-flows` of the bridge alone (the switch's own cost; the reference);
- `pipeline_cold`: GET /api/pipeline when the node's dump has expired (dump, parse, owners
  named, the graph);
- `pipeline_warm`: GET /api/pipeline within DUMP_TTL (the page's refreshes in between, and a
  second tab: the graph from the shared dump);
- `flows_page`: GET /api/flows of one 1,500-flow table, 500 rows, within DUMP_TTL.

Ratios to `dump` are what to read. `make bench BENCH=ui` runs it after bench/ui.py (its keys
`ui_api_*` in bench/results/ui.json and the summary); alone: `python -m bench.ui_api` (root:
it starts an OVS).
"""

from __future__ import annotations

import http.server
import json
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request

from bench.common import save, sh
from flows import cookie, tables
from ovsctl.lab.ovsproc import OVS
from ovsctl.ui import data, server
from ovsctl.ui.api import API

TABLES, PER_TABLE, RUNS = 20, 1500, 5


def flow_lines(owner_keys: list[str]) -> list[str]:
    ids = [t.id for t in tables.PIPELINE][:TABLES]
    rnd = random.Random(7)
    out = []
    for i, tid in enumerate(ids):
        nxt = ids[i + 1] if i + 1 < len(ids) else None
        for k in range(PER_TABLE):
            key = owner_keys[rnd.randrange(len(owner_keys))]
            ck = cookie.with_round(cookie.make(key.split("/")[0], key), 1)
            ip = f"10.{i}.{k // 250}.{k % 250 + 1}"
            if nxt is None or k % 10 == 0:
                acts = "drop"
            elif k % 10 == 1:
                acts = f"ct(table={nxt},zone=1)"
            else:
                acts = f"set_field:0x{k:x}->reg3,goto_table:{nxt}"
            out.append(
                f"table={tid},priority={100 + k % 50},cookie={ck:#x},ip,nw_dst={ip} actions={acts}"
            )
    return out


class _Views(http.server.BaseHTTPRequestHandler):
    docs: dict

    def do_GET(self):  # noqa: N802
        body = json.dumps(self.docs.get(self.path, {})).encode()
        self.send_response(200 if self.path in self.docs else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t0


def run() -> dict:
    pods = [
        {
            "container_id": f"c{i:04d}",
            "ifname": "eth0",
            "namespace": "ns",
            "name": f"p{i}",
            "ip": "",
        }
        for i in range(100)
    ]
    keys = [f"pod/c{i:04d}/eth0" for i in range(100)] + [
        f"policy/ns/np{i}/ingress/0" for i in range(200)
    ] + ["pipeline"] + [f"service/ns/s{i}" for i in range(50)]  # fmt: skip
    views = {
        "/flows": {"owners": {f"{cookie.owner_id(k):#x}": k for k in keys}, "desired": []},
        "/status": {"pods": pods},
        "/cluster": {"node": "bench", "pods": [], "gateway": {"ofport": 2}, "tunnel_ofport": 1},
    }
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        ovs = OVS(os.path.join(tmp, "ovs")).start()
        views_srv = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), type("V", (_Views,), {"docs": views})
        )
        threading.Thread(target=views_srv.serve_forever, daemon=True).start()
        try:
            ovs.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
            path = os.path.join(tmp, "flows.txt")
            with open(path, "w") as fh:
                fh.write("\n".join(flow_lines(keys)) + "\n")
            ovs.ofctl("-O", "OpenFlow15", "--bundle", "add-flows", "br-int", path)
            switch = f"unix:{os.path.join(ovs.rundir, 'br-int.mgmt')}"
            agent = f"http://127.0.0.1:{views_srv.server_address[1]}"
            api = API([data.NodeSource("bench", agent, ovs.rundir)])
            srv = server.make_server(api, "127.0.0.1", 0)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{srv.server_address[1]}"
            src = api.sources["bench"]
            res: dict[str, list[float]] = {k: [] for k in ("dump", "cold", "warm", "flows")}
            for _ in range(RUNS):
                t0 = time.perf_counter()
                sh("ovs-ofctl", "-O", "OpenFlow15", "--no-names", "dump-flows", switch)
                res["dump"].append(time.perf_counter() - t0)
                src._rows._at = -1e9  # the dump expired
                res["cold"].append(_get(f"{base}/api/pipeline?node=bench"))
                res["warm"].append(_get(f"{base}/api/pipeline?node=bench"))
                res["flows"].append(_get(f"{base}/api/flows?node=bench&table=0&limit=500"))
            with urllib.request.urlopen(f"{base}/api/pipeline?node=bench", timeout=60) as r:
                doc = json.load(r)
            srv.shutdown()
            srv.server_close()
        finally:
            views_srv.shutdown()
            ovs.stop()
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "flows": sum(t["flows"] for t in doc["tables"]),
        "tables": len(doc["tables"]),
        "dump_s": round(med["dump"], 4),
        "pipeline_cold_s": round(med["cold"], 4),
        "pipeline_warm_s": round(med["warm"], 4),
        "flows_page_s": round(med["flows"], 4),
        "ui_pipeline_cold_ratio": round(med["cold"] / med["dump"], 2),
        "ui_pipeline_warm_ratio": round(med["warm"] / med["dump"], 2),
    }
    save("ui_api", out)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
