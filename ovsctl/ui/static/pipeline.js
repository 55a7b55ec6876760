// The Pipeline tab: the tables as drawn by the server (/svg/pipeline), their counters
// refreshed from /api/pipeline every few seconds (what moved highlighted), a table's flows
// from /api/flows (paged) on click, and an owner filter (/api/owners) that highlights the
// tables an owner touches.
"use strict";

(function () {
  const REFRESH_MS = 2500;
  const PAGE = 200;
  const st = {
    node: null,
    owner: "",
    drawnKey: null, // node + tables + edges of the drawing on screen
    svg: null,
    last: {}, // table id -> packets at the previous refresh
    timer: null,
    busy: false,
    table: null, // the table whose flows are listed
    offset: 0,
    owners: [],
  };

  function layoutKey(doc) {
    const t = doc.tables.map((x) => x.id).join(",");
    const e = doc.edges.map((x) => `${x.from}-${x.to}`).join(",");
    const x = (doc.exits || []).map((x) => `${x.table}-${x.to}`).join(",");
    return `${doc.node}|${t}|${e}|${x}`;
  }

  function byId(id) {
    return st.svg ? st.svg.querySelector(`[id="${id}"]`) : null;
  }

  async function draw(doc) {
    let text = null;
    let why = "";
    try {
      text = await UI.get("/svg/pipeline?" + UI.query({ node: st.node }), "text");
    } catch (e) {
      why = e.message; // e.g. no Graphviz on the node: the tables as a list instead
    }
    st.svg = text !== null ? UI.placeSvg(UI.$("#pipeline-svg"), text) : plainTables(doc, why);
    st.svg.dataset.node = doc.node;
    st.drawnKey = layoutKey(doc);
    st.last = {};
    for (const t of doc.tables) {
      const g = byId(`table-${t.id}`);
      if (!g) continue;
      g.classList.add("clickable");
      g.addEventListener("click", () => openTable(t.id, 0));
    }
  }

  // without a drawing: one row per table with the ids the drawing has (table-<id>, -flows,
  // -packets), so the counters, the marks and a click on a table work the same
  function plainTables(doc, why) {
    const body = UI.el("tbody");
    for (const t of doc.tables) {
      body.appendChild(
        UI.el(
          "tr",
          { id: `table-${t.id}`, class: "table" },
          UI.el("td", { id: `table-${t.id}-name` }, `[${t.id}] ${t.name}`),
          UI.el("td", { id: `table-${t.id}-flows`, class: "num" }),
          UI.el("td", { id: `table-${t.id}-packets`, class: "num" }),
        ),
      );
    }
    const box = UI.el("div", { class: "plain-pipeline" });
    box.appendChild(UI.el("p", { class: "why" }, `no drawing (${why}); the tables:`));
    box.appendChild(UI.el("table", { class: "plain-tables" }, body));
    UI.clear(UI.$("#pipeline-svg")).appendChild(box);
    return box;
  }

  function paint(doc) {
    let moved = 0;
    for (const t of doc.tables) {
      const g = byId(`table-${t.id}`);
      if (!g) continue;
      const flows = byId(`table-${t.id}-flows`);
      const packets = byId(`table-${t.id}-packets`);
      if (flows) flows.textContent = `${UI.count(t.flows)} flows`;
      if (packets) packets.textContent = `${UI.count(t.packets)} pkts`;
      const before = st.last[t.id];
      const changed = before !== undefined && before !== t.packets;
      g.classList.toggle("changed", changed);
      if (changed) moved++;
      g.classList.toggle("drop", t.drop_flows > 0);
      g.classList.toggle("hit", !!(st.owner && t.hit));
      g.classList.toggle("selected", st.table === t.id);
      g.dataset.packets = String(t.packets);
      st.last[t.id] = t.packets;
    }
    st.svg.classList.toggle("filtered", !!st.owner);
    const when = new Date(doc.time * 1000).toLocaleTimeString();
    UI.status(`${doc.node}: ${doc.tables.length} tables, updated ${when}` + (moved ? `, ${moved} moved` : ""));
  }

  async function refresh() {
    if (st.busy) return;
    st.busy = true;
    try {
      const doc = await UI.get("/api/pipeline?" + UI.query({ node: st.node, owner: st.owner }));
      if (layoutKey(doc) !== st.drawnKey) await draw(doc);
      paint(doc);
      if (st.table !== null) await listFlows();
      UI.error(null);
    } catch (e) {
      UI.error(`pipeline of ${st.node}: ${e.message}`);
    } finally {
      st.busy = false;
    }
  }

  function schedule() {
    clearTimeout(st.timer);
    st.timer = setTimeout(async () => {
      await refresh();
      if (UI.current === "pipeline") schedule();
    }, REFRESH_MS);
  }

  async function loadOwners() {
    const doc = await UI.get("/api/owners?" + UI.query({ node: st.node }));
    st.owners = doc.owners || [];
    const dl = UI.clear(UI.$("#owners"));
    for (const o of st.owners) {
      dl.appendChild(UI.el("option", { value: o.id }, `${o.text} (${o.flows} flows)`));
    }
  }

  function ownerInfo() {
    const o = st.owners.find((x) => x.id === st.owner);
    UI.$("#owner-info").textContent = !st.owner
      ? ""
      : o
        ? `${o.text}: ${o.flows} flows in ${o.tables.length} tables`
        : `${st.owner}: no flows on ${st.node}`;
  }

  function openTable(id, offset) {
    st.table = id;
    st.offset = offset;
    listFlows().catch((e) => UI.error(e.message));
    for (const g of st.svg.querySelectorAll("g.selected")) g.classList.remove("selected");
    const g = byId(`table-${id}`);
    if (g) g.classList.add("selected");
  }

  async function listFlows() {
    const q = { node: st.node, table: st.table, owner: st.owner, offset: st.offset, limit: PAGE };
    const doc = await UI.get("/api/flows?" + UI.query(q));
    const aside = UI.$("#flows");
    aside.hidden = false;
    aside.dataset.table = String(doc.table.id);
    UI.$("#flows-title").textContent =
      `[${doc.table.id}] ${doc.table.name} on ${doc.node}` + (st.owner ? ` (owner ${st.owner})` : "");
    const end = doc.offset + doc.flows.length;
    UI.$("#flows-range").textContent = doc.total ? `${doc.offset + 1}–${end} of ${doc.total}` : "no flows";
    UI.$("#flows-prev").disabled = doc.offset === 0;
    UI.$("#flows-next").disabled = end >= doc.total;
    const body = UI.clear(UI.$("#flows-table tbody"));
    for (const f of doc.flows) {
      const o = f.owner || {};
      body.appendChild(
        UI.el(
          "tr",
          { class: f.drop ? "drop" : null, "data-cookie": f.cookie },
          UI.el("td", { class: "num" }, f.priority),
          UI.el("td", { class: `owner kind-${o.kind || "unknown"}`, title: o.id || "" }, o.text || o.name || "?"),
          UI.el("td", { class: "mono" }, f.match),
          UI.el("td", { class: "mono" }, f.actions),
          UI.el("td", { class: "num packets" }, f.packets),
          UI.el("td", { class: "num bytes" }, f.bytes),
        ),
      );
    }
  }

  function closeFlows() {
    st.table = null;
    UI.$("#flows").hidden = true;
    if (st.svg) for (const g of st.svg.querySelectorAll("g.selected")) g.classList.remove("selected");
  }

  // what was typed as an owner's id: the id itself, or a name that is one owner's on this node
  // ("data/only-backend", "frontend/f2", "node2": the id without its kind, or its text)
  function resolveOwner(text) {
    if (!text || st.owners.some((o) => o.id === text)) return text;
    const t = text.toLowerCase();
    const hits = st.owners.filter(
      (o) => o.id.slice(o.id.indexOf("/") + 1).toLowerCase() === t || (o.text || "").toLowerCase() === t,
    );
    return hits.length === 1 ? hits[0].id : text;
  }

  function setOwner(value) {
    UI.go("pipeline", { node: st.node, owner: resolveOwner(value) });
  }

  let wired = false;
  function wire() {
    if (wired) return;
    wired = true;
    const input = UI.$("#owner");
    input.addEventListener("change", () => setOwner(input.value.trim()));
    UI.$("#owner-clear").addEventListener("click", () => setOwner(""));
    UI.$("#flows-prev").addEventListener("click", () => openTable(st.table, Math.max(0, st.offset - PAGE)));
    UI.$("#flows-next").addEventListener("click", () => openTable(st.table, st.offset + PAGE));
    UI.$("#flows-close").addEventListener("click", closeFlows);
  }

  UI.tabs.pipeline = {
    async show(params) {
      wire();
      const node = params.node || UI.node;
      const owner = params.owner || "";
      if (node !== st.node) {
        st.node = node;
        st.drawnKey = null;
        closeFlows();
        st.svg = null;
        UI.clear(UI.$("#pipeline-svg"));
        await loadOwners().catch((e) => UI.error(`owners: ${e.message}`));
      }
      st.owner = owner;
      UI.$("#owner").value = owner;
      ownerInfo();
      await refresh();
      schedule();
    },
    hide() {
      clearTimeout(st.timer);
    },
  };
})();
