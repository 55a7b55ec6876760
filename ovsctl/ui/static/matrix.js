// The Reachability tab: /api/matrix as one grid per source namespace (rows: sources, columns:
// destinations), each cell the intent beside the traced (and, in a lab, probed) verdict;
// blocked cells and cells that differ from the intent marked; a click opens the cell's trace.
"use strict";

(function () {
  const st = { doc: null, ns: null, probe: false, port: "" };

  const mark = (v) => (v === true ? "✓" : v === false ? "✗" : "·");

  function portsOf(doc) {
    const seen = [];
    for (const c of doc.cells) {
      const k = `${c.proto}/${c.port}`;
      if (!seen.includes(k)) seen.push(k);
    }
    // TCP first, then by port: what an engineer asks about first (tcp/80 before udp/53)
    const key = (k) => [k.startsWith("tcp/") ? 0 : 1, k.split("/")[0], Number(k.split("/")[1])];
    return seen.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      return x[0] - y[0] || x[1].localeCompare(y[1]) || x[2] - y[2];
    });
  }

  const known = (v) => v !== null && v !== undefined;

  function cellClass(c) {
    const seen = known(c.probed) ? c.probed : c.traced;
    if (!known(seen)) return "cell unknown"; // an end on a node whose agent does not answer
    const cls = ["cell", seen ? "allowed" : "blocked"];
    if (c.differs) cls.push("differs");
    return cls.join(" ");
  }

  function cellTitle(c) {
    const words = [`${c.src} → ${c.dst} ${c.proto}/${c.port}`, `intent ${c.intent ? "allowed" : "blocked"}`];
    if (c.traced !== null && c.traced !== undefined) words.push(`traced ${c.traced ? "allowed" : "blocked"}`);
    if (c.probed !== null && c.probed !== undefined) words.push(`probed ${c.probed ? "reached" : "blocked"}`);
    if (!known(c.traced) && !known(c.probed)) words.push("not traced: a node's agent does not answer");
    if (c.differs) words.push("DIFFERS from the intent");
    return words.join("; ");
  }

  function render() {
    const doc = st.doc;
    const host = UI.clear(UI.$("#matrix-grids"));
    const portSel = UI.$("#matrix-port");
    const ports = portsOf(doc);
    if (!ports.includes(st.port)) st.port = ports[0] || "";
    UI.clear(portSel);
    for (const p of ports) portSel.appendChild(UI.el("option", { value: p }, p));
    portSel.value = st.port;
    const cells = doc.cells.filter((c) => `${c.proto}/${c.port}` === st.port);
    const at = new Map(cells.map((c) => [`${c.src}>${c.dst}`, c]));
    const srcs = [...new Set(cells.map((c) => c.src))];
    const dsts = doc.pods.filter((p) => cells.some((c) => c.dst === p));
    const nsOf = (p) => p.split("/")[0];
    const groups = [...new Set(srcs.map(nsOf))];
    let blocked = 0;
    let differs = 0;
    for (const ns of groups) {
      const table = UI.el("table", { class: "matrix", "data-ns": ns });
      const head = UI.el("tr", {}, UI.el("th", { class: "corner" }, `from ${ns} ↓ to →`));
      for (const d of dsts) head.appendChild(UI.el("th", { class: "dst", title: d }, d));
      table.appendChild(UI.el("thead", {}, head));
      const body = UI.el("tbody");
      for (const s of srcs.filter((p) => nsOf(p) === ns)) {
        const row = UI.el("tr", {}, UI.el("th", { class: "src" }, s));
        for (const d of dsts) {
          const c = at.get(`${s}>${d}`);
          if (!c) {
            row.appendChild(UI.el("td", { class: "cell none" }, ""));
            continue;
          }
          const cls = cellClass(c);
          if (cls.includes("blocked")) blocked++;
          if (c.differs) differs++;
          const marks = [mark(c.intent), mark(c.traced)];
          if (c.probed !== null && c.probed !== undefined) marks.push(mark(c.probed));
          row.appendChild(
            UI.el(
              "td",
              {
                class: cls,
                title: cellTitle(c),
                "data-src": c.src,
                "data-dst": c.dst,
                onclick: () => {
                  location.hash = c.trace;
                },
              },
              marks.join(" ") + (c.differs ? " ≠" : ""),
            ),
          );
        }
        body.appendChild(row);
      }
      table.appendChild(body);
      host.appendChild(UI.el("h2", {}, `namespace ${ns}`));
      host.appendChild(table);
    }
    const down = Object.keys(doc.down || {});
    const gone = down.length ? `; not traced (agent down): ${down.join(", ")}` : "";
    UI.status(`${cells.length} pairs on ${st.port}: ${blocked} blocked, ${differs} differ from the intent${gone}`);
  }

  let wired = false;
  function wire() {
    if (wired) return;
    wired = true;
    UI.$("#matrix-ns").addEventListener("change", (e) => UI.go("matrix", { ns: e.target.value, probe: st.probe ? 1 : "" }));
    UI.$("#matrix-port").addEventListener("change", (e) => {
      st.port = e.target.value;
      render();
    });
    UI.$("#matrix-probe").addEventListener("change", (e) => UI.go("matrix", { ns: st.ns, probe: e.target.checked ? 1 : "" }));
    UI.$("#matrix-refresh").addEventListener("click", () => {
      st.doc = null; // trace (and probe) again
      UI.go("matrix", { ns: st.ns, probe: st.probe ? 1 : "" });
    });
  }

  UI.tabs.matrix = {
    async show(params) {
      wire();
      const ns = params.ns || "";
      const probe = params.probe === "1";
      UI.$("#matrix-probe-label").hidden = !UI.lab;
      UI.$("#matrix-probe").checked = probe;
      if (st.doc && st.ns === ns && st.probe === probe) {
        render();
        return;
      }
      UI.status(probe ? "probing every pair (real packets)…" : "tracing every pair…");
      UI.clear(UI.$("#matrix-grids"));
      const doc = await UI.get("/api/matrix?" + UI.query({ ns, probe: probe ? 1 : "" }));
      st.doc = doc;
      st.ns = ns;
      st.probe = probe;
      const sel = UI.$("#matrix-ns");
      UI.clear(sel).appendChild(UI.el("option", { value: "" }, "all"));
      for (const n of doc.namespaces) sel.appendChild(UI.el("option", { value: n }, n));
      sel.value = ns;
      render();
    },
  };
})();
