"""The `ovsctl ui` page in headless Chromium against a real 3-node lab: the pipeline with live
counters, a table's flows with owners, traces (blocked by a policy; across nodes) and the
matrix. Each test saves a screenshot under tests/artifacts/ui (not committed)."""

import json
import os
import re
import selectors
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.chromium import artifact, browser
from tests.e2e.conftest import lab_pods_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_MS = 20_000

POLICY = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-backend, namespace: data}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: backend}}
"""


def start_ui(lab_name: str) -> tuple[subprocess.Popen, str]:
    """`ovsctl ui --lab NAME` on a free port; its URL from the line it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovsctl.cli", "ui", "--lab", lab_name, "--listen", "127.0.0.1:0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + 30, []
    while time.monotonic() < deadline and proc.poll() is None:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            seen.append(line)
            m = re.search(r" at (http://127\.0\.0\.1:\d+)/", line)
            if m:
                return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"ovsctl ui did not start: {''.join(seen)}")


@pytest.fixture(scope="module")
def ui(make_lab):
    yaml = lab_pods_yaml(node_names=["node0", "node1", "node2"]) + POLICY
    lab = make_lab(3, yaml)
    proc, url = start_ui(lab.name)
    try:
        with browser() as ctx:
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield {"lab": lab, "url": url, "page": page, "errors": errors}
            assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api(ui, path: str) -> dict:
    with urllib.request.urlopen(ui["url"] + path, timeout=30) as r:
        return json.load(r)


def shot(page, name: str) -> None:
    page.screenshot(path=artifact("ui", f"{name}.png"), full_page=False)


def ping(lab, src: str, dst: str, count: int = 5) -> None:
    ip = lab.pods()[dst]["ip"]
    ns = lab.pod_netns(src)
    subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", ip],
        capture_output=True,
        timeout=30,
    )


def packets(page, tid: int) -> int:
    return int(page.get_attribute(f'[id="table-{tid}"]', "data-packets"))


def test_pipeline_shows_every_table_with_counters_that_rise(ui):
    page, lab = ui["page"], ui["lab"]
    page.goto(ui["url"] + "/#pipeline?node=node0")
    doc = api(ui, "/api/pipeline?node=node0")
    assert len(doc["tables"]) >= 15
    last = doc["tables"][-1]["id"]
    page.wait_for_selector(
        f'svg[data-node=node0] [id="table-{last}"][data-packets]', timeout=WAIT_MS
    )
    for t in doc["tables"]:
        name = page.text_content(f'[id="table-{t["id"]}-name"]')
        assert name == f"[{t['id']}] {t['name']}"
        assert re.fullmatch(
            r"[\d.]+[kMG]? flows", page.text_content(f'[id="table-{t["id"]}-flows"]')
        )
        assert "drop" in page.get_attribute(f'[id="table-{t["id"]}"]', "class").split() or (
            not t["drop_flows"]
        )
    before = {t: packets(page, t) for t in (0, 50, 90)}  # Classifier, L3Forwarding, Output
    ping(ui["lab"], "frontend/f1", "backend/b2")  # node0 -> node1: through node0's pipeline
    page.wait_for_function(
        """(before) => Object.entries(before).every(([t, n]) =>
             Number(document.querySelector(`[id="table-${t}"]`).dataset.packets) > n)""",
        arg=before,
        timeout=WAIT_MS,
    )
    page.wait_for_selector('[id="table-0"].changed', timeout=WAIT_MS)
    assert lab.name in page.text_content("#lab")
    shot(page, "pipeline")


def test_clicking_a_table_lists_its_flows_with_owners(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#pipeline?node=node1")
    page.wait_for_selector('svg[data-node=node1] [id="table-65"][data-packets]', timeout=WAIT_MS)
    page.click('[id="table-65"]')  # IngressDefault: the policy's isolation of data/d2
    page.wait_for_selector("#flows[data-table='65'] tbody tr", timeout=WAIT_MS)
    assert "IngressDefault on node1" in page.text_content("#flows-title")
    rows = page.locator("#flows-table tbody tr")
    owners = [rows.nth(i).locator("td.owner").text_content() for i in range(rows.count())]
    assert any("data/only-backend" in o for o in owners), owners
    assert "pipeline" in owners
    drop_row = page.locator("#flows-table tbody tr.drop").first
    assert "data/only-backend" in drop_row.locator("td.owner").text_content()
    dropped = int(drop_row.locator("td.packets").text_content())
    ping(ui["lab"], "frontend/f2", "data/d2", count=3)  # node1 to node1, blocked by the policy
    page.wait_for_function(  # the list refreshes with the counters
        """(n) => Number(document.querySelector('#flows-table tbody tr.drop td.packets')
                  .textContent) >= n + 3""",
        arg=dropped,
        timeout=WAIT_MS,
    )
    shot(page, "flows-policy")
    page.click('[id="table-0"]')  # Classifier: the pods' and nodes' flows
    page.wait_for_selector("#flows[data-table='0'] tbody tr", timeout=WAIT_MS)
    text = page.text_content("#flows-table tbody")
    for owner in ("frontend/f2", "backend/b2", "data/d2", "node0", "node2"):
        assert owner in text
    shot(page, "flows")


def test_the_owner_filter_highlights_the_tables_it_touches(ui):
    page = ui["page"]
    owners = api(ui, "/api/owners?node=node1")["owners"]
    policy = next(o for o in owners if o["id"] == "policy/data/only-backend")
    page.goto(ui["url"] + "/#pipeline?node=node1")
    page.wait_for_selector('svg[data-node=node1] [id="table-0"][data-packets]', timeout=WAIT_MS)
    page.fill("#owner", policy["id"])
    page.dispatch_event("#owner", "change")
    page.wait_for_selector("#pipeline-svg svg.filtered g.table.hit", timeout=WAIT_MS)
    hit = page.eval_on_selector_all("g.table.hit", "gs => gs.map(g => Number(g.id.slice(6)))")
    assert sorted(hit) == sorted(policy["tables"])
    assert f"{policy['flows']} flows in {len(policy['tables'])} tables" in page.text_content(
        "#owner-info"
    )
    page.click('[id="table-65"]')  # the owner's flows only
    page.wait_for_selector("#flows[data-table='65'] tbody tr", timeout=WAIT_MS)
    page.wait_for_function("document.querySelectorAll('#flows-table tbody tr').length === 1")
    assert "(owner policy/data/only-backend)" in page.text_content("#flows-title")
    shot(page, "pipeline-owner")
    page.click("#flows-close")
    page.click("#owner-clear")
    page.wait_for_selector("#pipeline-svg svg:not(.filtered)", timeout=WAIT_MS)
    assert page.locator("g.table.hit").count() == 0


def test_a_trace_blocked_by_a_policy_draws_the_path_and_names_it(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)
    verdict = page.text_content("#trace-svg #verdict")
    assert "DROPPED" in verdict and "NetworkPolicy data/only-backend" in verdict
    box = page.text_content("#trace-verdict")
    assert "data/only-backend" in box and "IngressDefault on node1" in box
    drop = page.locator("#trace-svg g.step.drop")
    assert drop.count() == 1
    assert "IngressDefault" in drop.text_content() and "data/only-backend" in drop.text_content()
    first = page.text_content('#trace-svg [id="step-0-0-0-table"]')
    assert first == "[0] Classifier"
    assert page.locator("#trace-steps li.step").count() >= 20  # each matched flow listed
    shot(page, "trace-blocked")


def test_a_trace_across_nodes_shows_both_pipelines(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=backend/b2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-delivered", timeout=WAIT_MS)
    assert page.text_content('#trace-svg [id="hop-0"] text').startswith("node0 · br-int")
    assert page.text_content('#trace-svg [id="hop-1"] text').startswith("node1 · br-int")
    for h in (0, 1):  # each node's pipeline from its Classifier to its Output
        steps = page.locator(f'#trace-svg g.step[id^="step-{h}-"]')
        names = [steps.nth(i).locator("text").first.text_content() for i in range(steps.count())]
        assert names[0] == "[0] Classifier" and names[-1] == "[90] Output", names
    assert "VXLAN tunnel to node1" in page.text_content('#trace-svg [id="tunnel-0-1"]')
    assert "backend/b2 on node1" in page.text_content("#trace-svg #verdict")
    assert page.locator("#trace-steps section.hop").count() == 2
    shot(page, "trace-across-nodes")


def test_the_matrix_marks_the_blocked_cells(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#matrix")
    page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)
    port = page.input_value("#matrix-port")
    cells = page.locator("table.matrix td.cell[data-src]")
    assert cells.count() == 9 * 8
    for i in range(cells.count()):
        c = cells.nth(i)
        src, dst = c.get_attribute("data-src"), c.get_attribute("data-dst")
        blocked = dst.startswith("data/") and not src.startswith("backend/")
        cls = c.get_attribute("class").split()
        assert ("blocked" in cls) == blocked and ("allowed" in cls) != blocked, (src, dst, port)
        assert "differs" not in cls
    shot(page, "matrix")
    page.click('td.cell[data-src="frontend/f3"][data-dst="data/d1"]')
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)
    assert page.url.split("#", 1)[1].startswith("trace?src=frontend/f3&dst=data/d1")
    assert "frontend/f3 → data/d1" in page.text_content("#trace-verdict")
