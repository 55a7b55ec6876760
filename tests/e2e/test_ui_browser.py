"""The `ovsctl ui` page in headless Chromium against a real 3-node lab: the pipeline with live
counters, a table's flows with owners, traces (blocked by a policy; across nodes) and the
matrix. Each test saves a screenshot under tests/artifacts/ui (not committed)."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from tests.chromium import artifact, browser
from tests.e2e.conftest import lab_pods_yaml
from tests.e2e.test_ui_api import SERVICE, data_from_backend

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_MS = 20_000

POLICY = data_from_backend("only-backend")
EVIL = "<img src=x onerror=window.pwned=1>\"'&amp;"
SHOWN = "<img src=x onerror=window.pwned=1>"  # as text (the name is shown quoted, repr-style)
# a ClusterNetworkPolicy rule may be named anything (100 characters): the name is shown with its
# flows and in traces, as text. It accepts frontend -> frontend, which is allowed anyway.
HOSTILE = f"""
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: hostile-names}}
spec:
  tier: Admin
  priority: 5
  subject:
    namespaces: {{matchLabels: {{team: frontend}}}}
  ingress:
  - name: {json.dumps(EVIL)}
    action: Accept
    from:
    - namespaces: {{matchLabels: {{team: frontend}}}}
"""


def start_ui(lab_name: str, log: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`ovsctl ui --lab NAME` on a free port, its output to the file `log` (a pipe nobody
    reads would fill and stop it); its URL from the line it prints."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovsctl.cli", "ui", "--lab", lab_name, "--listen",
             "127.0.0.1:0"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log) as fh:
            m = re.search(r" at (http://127\.0\.0\.1:\d+)/", fh.read())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)  # polling the log for the line it prints
    proc.kill()
    proc.wait()
    with open(log) as fh:
        raise AssertionError(f"ovsctl ui did not start: {fh.read()}")


@pytest.fixture(scope="module")
def ui(make_lab):
    yaml = lab_pods_yaml(node_names=["node0", "node1", "node2"]) + POLICY + SERVICE + HOSTILE
    lab = make_lab(3, yaml)
    fd, log = tempfile.mkstemp(prefix="ovsctl-ui-", suffix=".log")
    os.close(fd)
    proc, url = start_ui(lab.name, log)
    try:
        with browser() as ctx:
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(  # what the Content-Security-Policy blocked: nothing of the page's own
                "console",
                lambda m: "Content Security Policy" in m.text and errors.append(m.text),
            )
            yield {"lab": lab, "url": url, "page": page, "errors": errors}
            assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log)


def api(ui, path: str) -> dict:
    with urllib.request.urlopen(ui["url"] + path, timeout=30) as r:
        return json.load(r)


def shot(page, name: str) -> None:
    """The window down to the end of what the tab shows (a smaller picture)."""
    view = page.viewport_size
    bottom = page.evaluate(
        """() => Math.max(...[...document.querySelectorAll('main > section:not([hidden]) > *')]
                 .map((e) => e.getBoundingClientRect().bottom))"""
    )
    height = max(200, min(view["height"], int(bottom) + 12))
    clip = {"x": 0, "y": 0, "width": view["width"], "height": height}
    page.screenshot(path=artifact("ui", f"{name}.png"), clip=clip)


def ping(lab, src: str, dst: str, count: int = 5) -> int:
    """`ping -c count` from pod src to pod dst; its exit status (0: every reply came)."""
    ip = lab.pods()[dst]["ip"]
    ns = lab.pod_netns(src)
    return subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", ip],
        capture_output=True,
        timeout=30,
    ).returncode


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
        drop = "drop" in page.get_attribute(f'[id="table-{t["id"]}"]', "class").split()
        assert drop == (t["drop_flows"] > 0), t  # red exactly where there are drop flows
    before = {t: packets(page, t) for t in (0, 50, 90)}  # Classifier, L3Forwarding, Output
    # node0 -> node1: 5 requests out through node0's pipeline (and 5 replies back in)
    assert ping(ui["lab"], "frontend/f1", "backend/b2", count=5) == 0
    page.wait_for_function(
        """(before) => Object.entries(before).every(([t, n]) =>
             Number(document.querySelector(`[id="table-${t}"]`).dataset.packets) >= n + 5)""",
        arg=before,
        timeout=WAIT_MS,
    )
    page.wait_for_selector('[id="table-0"].changed', timeout=WAIT_MS)
    assert lab.name in page.text_content("#lab")
    assert_whole_pipeline_visible(page, [t["id"] for t in doc["tables"]])
    shot(page, "pipeline")


def assert_whole_pipeline_visible(page, ids: list[int]) -> None:
    """Every table's box inside the 1400x900 window (no scrolling) and its counters legible."""
    view = page.viewport_size
    for tid in ids:
        box = page.locator(f'[id="table-{tid}"]').bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], (tid, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], (tid, box)
        text = page.locator(f'[id="table-{tid}-packets"]').bounding_box()
        assert text["height"] >= 11, (tid, text)  # px: 11 pt text not shrunk below legibility
    assert page.evaluate("document.scrollingElement.scrollHeight") <= view["height"]


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
    # node1 to node1, blocked by the policy: no reply
    assert ping(ui["lab"], "frontend/f2", "data/d2", count=3) != 0
    page.wait_for_function(  # the list refreshes with the counters
        """(n) => Number(document.querySelector('#flows-table tbody tr.drop td.packets')
                  .textContent) >= n + 3""",
        arg=dropped,
        timeout=WAIT_MS,
    )
    ids = [t["id"] for t in api(ui, "/api/pipeline?node=node1")["tables"]]
    assert_whole_pipeline_visible(page, ids)  # the flows under it, the page not scrolled
    assert page.locator("#flows-table tbody tr").last.bounding_box()["y"] < 900
    shot(page, "flows-policy")  # docs/img/ui-pipeline.png
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
    page.fill("#owner", "data/only-backend")  # the name, as an engineer types it: its id found
    page.press("#owner", "Enter")
    page.wait_for_selector("#pipeline-svg svg.filtered g.table.hit", timeout=WAIT_MS)
    assert page.url.endswith("owner=policy%2Fdata%2Fonly-backend")
    assert page.input_value("#owner") == policy["id"]
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
    page.locator("#trace-svg #verdict").scroll_into_view_if_needed()  # the drop and the verdict
    page.locator("#trace-steps li.step").last.scroll_into_view_if_needed()
    shot(page, "trace-blocked")  # docs/img/ui-trace.png


def test_a_trace_across_nodes_shows_both_pipelines(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)
    page.locator("#trace-svg #verdict").scroll_into_view_if_needed()  # the last trace read down
    page.locator("#trace-steps li.step").last.scroll_into_view_if_needed()
    assert page.evaluate("document.querySelector('#trace-svg').scrollTop") > 0
    trace_form(page, "frontend/f1", "backend/b2")
    page.wait_for_selector("#trace-svg #verdict.verdict-delivered", timeout=WAIT_MS)
    for panel in ("#trace-svg", "#trace-steps"):  # the new path shown from its start
        assert page.evaluate(f"document.querySelector('{panel}').scrollTop") == 0, panel
    assert page.text_content('#trace-svg [id="hop-0"] text').startswith("node0 · br-int")
    assert page.text_content('#trace-svg [id="hop-1"] text').startswith("node1 · br-int")
    for h in (0, 1):  # each node's pipeline from its Classifier to its Output
        steps = page.locator(f'#trace-svg g.step[id^="step-{h}-"]')
        names = [steps.nth(i).locator("text").first.text_content() for i in range(steps.count())]
        assert names[0] == "[0] Classifier" and names[-1] == "[90] Output", names
    assert "VXLAN tunnel to node1" in page.text_content('#trace-svg [id="tunnel-0-1"]')
    assert "backend/b2 on node1" in page.text_content("#trace-svg #verdict")
    assert page.locator("#trace-steps section.hop").count() == 2
    # pods' flows name the pod (as `ovsctl trace` does), never its container id
    drawn = page.text_content("#trace-svg svg")
    listed = page.locator("#trace-steps li.step span.owner").all_text_contents()
    assert "prio 200 · pod frontend/f1" in drawn and "pod backend/b2" in drawn
    assert "pod frontend/f1" in listed and "pod backend/b2" in listed, listed
    doc = api(ui, "/api/trace?src=frontend/f1&dst=backend/b2&proto=tcp&dport=80")
    steps = [s for h in doc["hops"] for p in h["passes"] for s in p["steps"]]
    raw = {s["owner"] for s in steps if (s["owner"] or "").startswith("pod/")}
    assert len(raw) == 2 and {s["owner_text"] for s in steps} >= {
        "pod frontend/f1",
        "pod backend/b2",
    }
    for key in raw:  # pod/CONTAINER/eth0: the raw key is in the document, not on the page
        cid = key.split("/")[1]
        assert cid[:12] not in drawn and not any(cid[:12] in o for o in listed), key
    shot(page, "trace-across-nodes")


def test_the_matrix_marks_the_blocked_cells(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#matrix")
    page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)
    port = page.input_value("#matrix-port")
    assert port == "tcp/80"  # TCP first: the pods answer on tcp/80 and udp/53
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


def test_the_node_selector_picks_the_pipelines_node_and_only_there(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#pipeline?node=node0")
    page.wait_for_selector('svg[data-node=node0] [id="table-0"][data-packets]', timeout=WAIT_MS)
    assert page.is_visible("#node-picker") and page.input_value("#node") == "node0"
    page.select_option("#node", "node2")
    page.wait_for_selector('svg[data-node=node2] [id="table-0"][data-packets]', timeout=WAIT_MS)
    assert page.url.endswith("#pipeline?node=node2")
    assert page.text_content("#status").startswith("node2: ")
    for tab in (
        "matrix",
        "trace",
        "topology",
    ):  # the whole lab there: no selector that does nothing
        page.click(f"#tabs a[data-tab={tab}]")
        page.wait_for_selector(f"#tab-{tab}:not([hidden])", timeout=WAIT_MS)
        assert not page.is_visible("#node-picker"), tab
    page.click("#tabs a[data-tab=pipeline]")
    page.wait_for_selector("#node-picker:not([hidden])", timeout=WAIT_MS)


def trace_form(page, src: str, dst: str, proto: str = "tcp", dport: str = "80") -> None:
    page.fill("#trace-form input[name=src]", src)
    page.fill("#trace-form input[name=dst]", dst)
    page.select_option("#trace-form select[name=proto]", proto)
    page.fill("#trace-form input[name=dport]", dport)
    page.click("#trace-form button[type=submit]")


def test_a_trace_to_a_service_and_to_an_address(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace")
    trace_form(page, "frontend/f1", "svc:backend/web")
    page.wait_for_selector("#trace-svg #verdict.verdict-delivered", timeout=WAIT_MS)
    service = page.text_content("#trace-verdict .v-Service")
    assert re.fullmatch(
        r"svc:backend/web [\d.]+:80 → endpoint 10\.244\.[\d.]+:80 \(backend/b\d on node\d\)",
        service,
    ), service
    steps = page.locator("#trace-steps li.step span.owner").all_text_contents()
    assert "service backend/web" in steps, steps
    shot(page, "trace-service")
    b2 = ui["lab"].pods()["backend/b2"]["ip"]
    trace_form(page, "frontend/f1", b2)
    page.wait_for_selector("#trace-svg #verdict.verdict-delivered", timeout=WAIT_MS)
    assert f"frontend/f1 → {b2} (backend/b2) tcp/80" in page.text_content("#trace-verdict")
    # the drawing at its own size: a step's text as big as dot made it, not blown up
    height = page.locator('#trace-svg [id="step-0-0-0-table"]').bounding_box()["height"]
    assert 8 <= height <= 20, height


@pytest.mark.parametrize(
    "src,dst,dport,words",
    [
        ("frontend/nope", "backend/b1", "80", "no pod or Service frontend/nope"),
        ("frontend/f1", "svc:backend/nope", "80", "no Service backend/nope"),
        ("frontend/f1", "10.1.2.300", "80", "'10.1.2.300' is not an IP address"),
        ("frontend/f1", "192.0.2.9", "", "give a port"),
    ],
)
def test_a_bad_trace_says_why_on_the_page(ui, src, dst, dport, words):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=backend/b2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict", timeout=WAIT_MS)
    trace_form(page, src, dst, dport=dport)
    page.wait_for_selector("#trace-verdict.verdict-error", timeout=WAIT_MS)
    box = page.text_content("#trace-verdict")
    assert box.startswith(f"CANNOT TRACE {src} → {dst}: ") and words in box, box
    assert page.text_content("#status").startswith("trace failed: ")
    assert not page.is_visible("#trace-svg") and page.locator("#trace-steps *").count() == 0


def test_the_topology_shows_nodes_pods_and_the_service(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#topology")
    page.wait_for_selector('#topology-svg [id="svc-backend-web"]', timeout=WAIT_MS)
    svc = page.locator('#topology-svg [id="svc-backend-web"] text').all_text_contents()
    assert svc[0] == "svc backend/web" and svc[-1] == "80/TCP (http)", svc
    for n in ("node0", "node1", "node2"):
        assert page.locator(f'#topology-svg [id="node-{n}"]').count() == 1
    row = page.text_content("#services tbody tr")
    assert "backend/web" in row and "80/TCP (http)" in row
    assert all(f"backend/b{i}" in row for i in (1, 2, 3)), row
    shot(page, "topology")


def test_the_matrix_probe_box_sends_real_packets(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#matrix?ns=data")
    page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)
    page.check("#matrix-probe")
    page.wait_for_function(  # intent · traced · probed: three marks once probed
        """() => { const c = document.querySelector('table.matrix td.cell[data-src]');
                   return c !== null && c.textContent.split(' ').length === 3; }""",
        timeout=60_000,
    )
    assert "probe=1" in page.url
    blocked = page.text_content('td.cell[data-src="frontend/f1"][data-dst="data/d2"]')
    allowed = page.text_content('td.cell[data-src="backend/b1"][data-dst="data/d2"]')
    assert (blocked, allowed) == ("✗ ✗ ✗", "✓ ✓ ✓")
    shot(page, "matrix-probed")


def test_the_matrix_refresh_button_traces_again(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#matrix?ns=frontend")
    page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)
    with page.expect_response(lambda r: "/api/matrix?ns=frontend" in r.url, timeout=60_000):
        page.click("#matrix-refresh")
    page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)


def test_the_trace_button_traces_the_same_query_again(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)
    with page.expect_response(lambda r: "/api/trace?" in r.url, timeout=WAIT_MS):
        page.click("#trace-form button[type=submit]")
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)


def test_a_drop_names_the_rule_that_dropped_it(ui):
    page = ui["page"]
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=data/d2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-dropped", timeout=WAIT_MS)
    assert page.text_content("#trace-verdict .v-isolated-by") == "data/only-backend"
    rule = page.text_content("#trace-verdict .v-rule")
    assert rule.startswith("[65] IngressDefault priority ") and "data/only-backend" in rule, rule
    assert page.text_content("#trace-verdict .v-direction") == "ingress"


def test_hostile_names_are_text_everywhere(ui):
    page = ui["page"]
    owner = next(
        o for o in api(ui, "/api/owners?node=node1")["owners"] if o["id"] == "cnp/hostile-names"
    )
    table = owner["tables"][0]
    page.goto(ui["url"] + f"/#pipeline?node=node1&owner={owner['id']}")
    page.wait_for_selector(f'svg[data-node=node1] [id="table-{table}"]', timeout=WAIT_MS)
    page.click(f'[id="table-{table}"]')
    page.wait_for_selector(f"#flows[data-table='{table}'] tbody tr", timeout=WAIT_MS)
    assert SHOWN in page.text_content("#flows-table tbody")  # the name, as text
    page.goto(ui["url"] + "/#trace?src=frontend/f1&dst=frontend/f2&proto=tcp&dport=80")
    page.wait_for_selector("#trace-svg #verdict.verdict-delivered", timeout=WAIT_MS)
    assert SHOWN in page.text_content("#trace-steps") and "&amp;" in page.text_content(
        "#trace-steps"
    )
    assert SHOWN in page.text_content("#trace-svg")
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_without_a_drawing_the_tables_are_listed(ui, tmp_path):
    """A node where Graphviz's dot fails (here: a dot that exits 1 first on PATH)."""
    dot = tmp_path / "dot"
    dot.write_text("#!/bin/sh\necho 'dot: cannot draw' >&2\nexit 1\n")
    dot.chmod(0o755)
    log = str(tmp_path / "ui.log")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc, url = start_ui(ui["lab"].name, log, env)
    try:
        page = ui["page"]
        page.goto(url + "/#pipeline?node=node0")
        page.wait_for_selector('.plain-pipeline [id="table-0"][data-packets]', timeout=WAIT_MS)
        assert "cannot draw" in page.text_content(".plain-pipeline .why")
        assert re.fullmatch(r"[\d.]+[kMG]? flows", page.text_content('[id="table-0-flows"]'))
        page.click('[id="table-0"]')
        page.wait_for_selector("#flows[data-table='0'] tbody tr", timeout=WAIT_MS)
        shot(page, "pipeline-no-graphviz")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_pod_that_does_not_answer_differs_from_the_intent(ui):
    """Near the end: frontend/f2's responder is stopped, so real packets to it get no answer
    where the policies and the switch let them through: those cells differ, and say so."""
    page, lab = ui["page"], ui["lab"]
    pid = lab.pods()["frontend/f2"]["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _running(pid):
        assert time.monotonic() < deadline, "the responder did not stop"
        time.sleep(0.05)
    page.goto(ui["url"] + "/#matrix?ns=frontend&probe=1")
    page.wait_for_function(  # a cell of this matrix (not the last one's), probed
        """() => { const c = document.querySelector(
                     'td.cell[data-src="backend/b1"][data-dst="frontend/f2"]');
                   return c !== null && c.textContent.split(' ').length >= 3; }""",
        timeout=60_000,
    )
    cells = page.locator("table.matrix td.cell[data-src]")
    differ = set()
    for i in range(cells.count()):
        c = cells.nth(i)
        if "differs" in c.get_attribute("class").split():
            differ.add((c.get_attribute("data-src"), c.get_attribute("data-dst")))
            assert c.text_content() == "✓ ✓ ✗ ≠"  # intended, traced through, no answer
    pods = [f"{ns}/{ns[0]}{i}" for ns in ("frontend", "backend", "data") for i in (1, 2, 3)]
    assert differ == {(p, "frontend/f2") for p in pods if p != "frontend/f2"}
    assert f"{len(differ)} differ from the intent" in page.text_content("#status")
    shot(page, "matrix-differs")


def _running(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_node_whose_agent_is_down_leaves_its_cells_unknown(ui):
    """Last in the module: node2's agent is stopped and started again."""
    page, lab = ui["page"], ui["lab"]
    lab.node_stop("node2", log=lambda *_: None)
    try:
        page.goto(ui["url"] + "/#matrix?ns=backend")
        page.wait_for_selector("table.matrix td.cell[data-src]", timeout=60_000)
        cells = page.locator("table.matrix td.cell[data-src]")
        for i in range(cells.count()):
            c = cells.nth(i)
            on2 = any(c.get_attribute(a).endswith("3") for a in ("data-src", "data-dst"))
            assert ("unknown" in c.get_attribute("class").split()) == on2
        assert "not traced (agent down): node2" in page.text_content("#status")
        shot(page, "matrix-node-down")
    finally:
        lab.node_start("node2", log=lambda *_: None)
