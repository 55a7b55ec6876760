"""`ovsctl ui` with a big switch: 20 tables and 30,000 flows (synthetic, each with an owner's
cookie) on a real OVS bridge (userspace datapath, no agent: the server reads the bridge
directly, `ovsctl ui --ovs-rundir DIR --bridge br-ui`). Measured in headless Chromium:

- `ui_render_s`: from navigation to the pipeline drawn with every table's counters (median of
  RUNS fresh navigations; `ui_render_cold_s` the first, before the server has the layout);
- `ui_flows_s`: from a click on the biggest table to its first page of flows listed;
- the reference, in the same run and the same browser: navigation to the plain
  `ovs-ofctl dump-flows` text of the same bridge (dumped for each request) rendered in a
  `<pre>` — the page an engineer would otherwise read. `ui_render_ratio` = ui / reference.

Each time ends when two animation frames have passed after the condition (the browser has
painted). The goal is a render under 2 s.

Then bench/ui_api.py, the server's side of the same size without a browser (`ui_api_*`):
`ui_api_pipeline_s`, GET /api/pipeline with the node's dump expired (dump, parse, owners, the
graph), and `ui_api_pipeline_ratio`, that / `ovs-ofctl dump-flows` of the bridge in the same
run; `ui_api_pipeline_warm_s` within the shared dump's 1.5 s, `ui_api_flows_page_s` 500 rows of
one table.
"""

from __future__ import annotations

import html
import http.server
import os
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench.common import REPO, BenchNode, save

TABLES = 20
FLOWS = 30_000
BIG = (60, 12_000)  # IngressRule: the biggest table (policy rules)
SECOND = (40, 8_000)  # EgressRule
RUNS = 5
BRIDGE = "br-ui"
PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def synthetic_flows() -> tuple[list[str], list[int]]:
    """`ovs-ofctl add-flows` lines: the first TABLES tables of the pipeline, each table's
    miss going on to the next; FLOWS flows in all, most in IngressRule and EgressRule, with
    policy, pod and Service cookies; one in ten a drop."""
    from flows import cookie, tables

    ids = [t.id for t in tables.PIPELINE if not t.side][:TABLES]
    sizes = dict.fromkeys(ids, 0)
    sizes[BIG[0]], sizes[SECOND[0]] = BIG[1], SECOND[1]
    rest = [t for t in ids if t not in (BIG[0], SECOND[0])]
    left = FLOWS - BIG[1] - SECOND[1] - len(ids)  # the miss flows count too
    for i, t in enumerate(rest):
        sizes[t] = left // len(rest) + (1 if i < left % len(rest) else 0)
    owners = [
        ("policy", lambda i: f"policy/ns{i % 50}/p{i % 700}/ingress/{i % 5}"),
        ("pod", lambda i: f"pod/c{i % 3000}/eth0"),
        ("service", lambda i: f"service/ns{i % 50}/svc{i % 400}"),
    ]
    lines = []
    for k, t in enumerate(ids):
        nxt = ids[k + 1] if k + 1 < len(ids) else None
        miss = f"goto_table:{nxt}" if nxt is not None else "drop"
        pipe = cookie.with_round(cookie.make("pipeline"), 1)
        lines.append(f"table={t},cookie={pipe:#x},priority=0,actions={miss}")
        for i in range(sizes[t]):
            feature, key = owners[i % len(owners)]
            c = cookie.with_round(cookie.make(feature, key(i)), 1)
            ip = f"10.{64 + i // 62500}.{i // 250 % 250}.{i % 250 + 2}"
            act = "drop" if i % 10 == 9 or nxt is None else f"goto_table:{nxt}"
            lines.append(
                f"table={t},cookie={c:#x},priority={100 + i % 900},tcp,nw_dst={ip},"
                f"tp_dst={1 + i % 60000},actions={act}"
            )
    return lines, ids


def start_ui(rundir: str) -> tuple[subprocess.Popen, str]:
    """`ovsctl ui` for the bridge alone (no agent answers at the socket given)."""
    cmd = [
        sys.executable, "-m", "ovsctl.cli", "ui", "--listen", "127.0.0.1:0",
        "--ovs-rundir", rundir, "--bridge", BRIDGE, "--agent", os.path.join(rundir, "no-agent"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": REPO, "OVS_RUNDIR": rundir}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if sel.select(timeout=1):
            m = re.search(r" at (http://127\.0\.0\.1:\d+)/", proc.stdout.readline())
            if m:
                return proc, m.group(1)
    proc.kill()
    raise RuntimeError("ovsctl ui did not start")


def dump_server(ovs) -> http.server.ThreadingHTTPServer:
    """The reference: GET / dumps the bridge with ovs-ofctl and returns it in a <pre>."""

    class Dump(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path != "/":  # /favicon.ico
                self.send_error(404)
                return
            text = ovs.ofctl("dump-flows", BRIDGE)
            body = f"<!doctype html><pre id=dump>{html.escape(text)}</pre>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dump)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def timed(page, url: str, ready) -> float:
    page.goto("about:blank")
    t0 = time.monotonic()
    page.goto(url, wait_until="commit")
    ready()
    page.evaluate(PAINTED)
    return time.monotonic() - t0


def measure(page, ui_url: str, ref_url: str, ids: list[int]) -> dict:
    last = max(ids)
    drawn = f"""() => {{
        const gs = document.querySelectorAll('#pipeline-svg g.table[data-packets]');
        return gs.length === {len(ids)};
    }}"""
    ui, ref, flows = [], [], []
    for _ in range(RUNS):  # alternated, so that both see the same noise
        ref.append(timed(page, ref_url, lambda: page.wait_for_load_state("load", timeout=60_000)))
        assert page.text_content("#dump").count("\n") >= FLOWS
        ui.append(
            timed(
                page,
                f"{ui_url}/#pipeline?node=local",
                lambda: page.wait_for_function(drawn, timeout=60_000),
            )
        )
        assert page.get_attribute(f'[id="table-{last}"]', "data-packets") is not None
        t0 = time.monotonic()
        page.click(f'[id="table-{BIG[0]}"]')
        page.wait_for_selector(f"#flows[data-table='{BIG[0]}'] tbody tr", timeout=60_000)
        page.evaluate(PAINTED)
        flows.append(time.monotonic() - t0)
        total = page.text_content("#flows-range")
        assert total.endswith(f"of {BIG[1] + 1}"), total
    return {"ui": ui, "ref": ref, "flows": flows}


def run() -> dict:
    from tests.chromium import artifact, browser

    lines, ids = synthetic_flows()
    with BenchNode() as node:
        node.ovs.vsctl(
            "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
            "fail_mode=secure", "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
        )  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as fh:
            fh.write("\n".join(lines) + "\n")
        try:
            node.ovs.ofctl("--bundle", "add-flows", BRIDGE, fh.name)
        finally:
            os.unlink(fh.name)
        agg = node.ovs.ofctl("dump-aggregate", BRIDGE)
        count = int(agg.split("flow_count=")[1].split()[0])
        if count != len(lines):
            raise RuntimeError(f"{count} flows on {BRIDGE}, {len(lines)} added")
        proc, ui_url = start_ui(node.ovs.rundir)
        ref = dump_server(node.ovs)
        try:
            with browser() as ctx:
                page = ctx.new_page()
                raw = measure(page, ui_url, f"http://127.0.0.1:{ref.server_port}/", ids)
                page.screenshot(path=artifact("bench", "ui-30k.png"))
        finally:
            ref.shutdown()
            proc.terminate()
            proc.wait(10)
    ui, refs = statistics.median(raw["ui"]), statistics.median(raw["ref"])
    res = {
        "ui_tables": len(ids),
        "ui_flow_count": count,
        "ui_render_s": round(ui, 3),
        "ui_render_cold_s": round(raw["ui"][0], 3),
        "ui_flows_s": round(statistics.median(raw["flows"]), 3),
        "ui_dump_ref_s": round(refs, 3),
        "ui_render_ratio": round(ui / refs, 2),
        "raw": raw,
    }
    from bench import ui_api

    api = ui_api.run()
    res.update(
        {
            "ui_api_dump_s": api["dump_s"],
            "ui_api_pipeline_s": api["pipeline_cold_s"],
            "ui_api_pipeline_ratio": api["ui_pipeline_cold_ratio"],
            "ui_api_pipeline_warm_s": api["pipeline_warm_s"],
            "ui_api_flows_page_s": api["flows_page_s"],
        }
    )
    save("ui", res)
    return res


if __name__ == "__main__":
    r = run()
    print({k: v for k, v in r.items() if k != "raw"})
