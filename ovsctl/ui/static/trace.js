// The Trace tab: a form (source, destination, protocol, port) whose query is the hash route;
// the path drawn by the server (/svg/trace), the steps with each matched flow, the verdict
// and, for a drop, the policy and rule (/api/trace).
"use strict";

(function () {
  const FIELDS = ["src", "dst", "proto", "dport"];
  let lastKey = null;
  let listsLoaded = false;

  async function loadLists() {
    if (listsLoaded) return;
    listsLoaded = true;
    const topo = await UI.get("/api/topology");
    const pods = UI.clear(UI.$("#pods"));
    const dests = UI.clear(UI.$("#dests"));
    for (const n of topo.nodes || []) {
      for (const p of n.pods || []) {
        const label = `${(p.ips || []).join(", ")} on ${n.name}`;
        pods.appendChild(UI.el("option", { value: `${p.ns}/${p.name}` }, label));
        dests.appendChild(UI.el("option", { value: `${p.ns}/${p.name}` }, label));
      }
    }
    for (const s of topo.services || []) {
      dests.appendChild(UI.el("option", { value: `svc:${s.ns}/${s.name}` }, `Service ${(s.cluster_ips || []).join(", ")}`));
    }
  }

  // the Service a trace went through: "svc:ns/web 10.96.0.1:80 → endpoint 10.244.0.2:80 (ns/a on node0)"
  function serviceText(sv) {
    if (typeof sv !== "object" || sv === null) return String(sv);
    const pod = sv.endpoint_pod ? ` (${sv.endpoint_pod}${sv.node ? ` on ${sv.node}` : ""})` : "";
    const ep = sv.endpoint ? ` → endpoint ${sv.endpoint}${pod}` : " → no endpoint";
    return `${sv.service || "?"} ${sv.frontend || ""}${ep}`;
  }

  const ruleText = (a) => `${a.policy} ${a.direction || ""} rule ${a.rule}${a.node ? ` (on ${a.node})` : ""}`;

  function cnpText(cp) {
    const name = cp.rule_name ? ` '${cp.rule_name}'` : "";
    return `${cp.tier || ""} ${cp.policy} ${cp.direction || ""} rule ${cp.rule}${name}: ${cp.action || "?"}`.trim();
  }

  function verdictBox(t, asked) {
    const box = UI.clear(UI.$("#trace-verdict"));
    box.hidden = false;
    box.className = `verdict verdict-${t.verdict}`;
    const port = t.dport ? `${t.proto}/${t.dport}` : t.proto;
    box.appendChild(UI.el("strong", {}, `${(t.verdict || "?").toUpperCase()}`));
    const src = asked.src && asked.src !== t.src ? `${asked.src} (${t.src})` : t.src;
    const dst = asked.dst && asked.dst !== t.dst ? `${asked.dst} (${t.dst})` : t.dst;
    box.appendChild(UI.el("span", {}, ` ${src} → ${dst} ${port}`));
    const lines = [];
    if (t.verdict === "delivered" && t.to) lines.push(["to", t.to]);
    if (t.table) lines.push(["at", `${t.table} on ${t.node}`]);
    const cp = t.cluster_policy;
    if (cp) lines.push(["ClusterNetworkPolicy", typeof cp === "object" ? cnpText(cp) : String(cp)]);
    if (t.policy) lines.push(["NetworkPolicy", t.policy]);
    if (t.direction) lines.push(["direction", t.direction]);
    if ((t.isolated_by || []).length) lines.push(["isolated by", t.isolated_by.join(", ")]);
    const last = (t.hops || []).length ? t.hops[t.hops.length - 1].outcome || {} : {};
    if (t.verdict === "dropped" && last.kind === "drop" && last.table) {
      const who = last.owner_text || last.owner || "no owner";
      lines.push(["rule", `[${last.table_id}] ${last.table} priority ${last.priority} ${last.match || "(table miss)"} · ${who}`]);
    }
    const rules = (t.allowed_by || []).map((a) => (typeof a === "object" ? ruleText(a) : String(a))).join(", ");
    if (rules) lines.push(["allowed by", rules]);
    if (t.reason) lines.push(["why", t.reason]);
    if (t.service) lines.push(["Service", serviceText(t.service)]);
    if (t.agrees_with_intent === false) lines.push(["intent", "DISAGREES with the policies' intent"]);
    for (const n of t.notes || []) lines.push(["note", n]);
    const dl = UI.el("dl");
    for (const [k, v] of lines) {
      dl.appendChild(UI.el("dt", {}, k));
      dl.appendChild(UI.el("dd", { class: `v-${k.replace(/\W+/g, "-")}` }, v));
    }
    box.appendChild(dl);
  }

  function stepList(t) {
    const host = UI.clear(UI.$("#trace-steps"));
    (t.hops || []).forEach((hop, h) => {
      const sec = UI.el("section", { class: "hop", "data-node": hop.node });
      sec.appendChild(UI.el("h3", {}, `${hop.node}: entered from ${hop.entered}`));
      const ol = UI.el("ol", { class: "steps" });
      (hop.passes || []).forEach((ps, p) => {
        if (p > 0) ol.appendChild(UI.el("li", { class: "recirc" }, `conntrack recirculation (${ps.ct_state || "?"})`));
        (ps.steps || []).forEach((s, i) => {
          const li = UI.el(
            "li",
            { class: "step", id: `li-step-${h}-${p}-${i}` },
            UI.el("span", { class: "table" }, `[${s.table_id}] ${s.table}`),
            UI.el("span", { class: "prio" }, ` priority ${s.priority} `),
            UI.el("span", { class: "owner", title: s.owner || "" }, s.owner_text || s.owner || "?"),
            UI.el("div", { class: "mono" }, s.match ? s.match : "(table miss)"),
            UI.el("div", { class: "mono actions" }, "→ " + (s.actions || []).join(", ")),
          );
          li.addEventListener("mouseenter", () => highlight(`step-${h}-${p}-${i}`, true));
          li.addEventListener("mouseleave", () => highlight(`step-${h}-${p}-${i}`, false));
          ol.appendChild(li);
        });
      });
      sec.appendChild(ol);
      const o = hop.outcome || {};
      const out = [o.kind, o.to, o.tun_dst ? `tun_dst ${o.tun_dst}` : null].filter(Boolean).join(" ");
      sec.appendChild(UI.el("p", { class: "outcome" }, `leaves ${hop.node}: ${out || "?"}`));
      host.appendChild(sec);
    });
  }

  function highlight(id, on) {
    const g = UI.$("#trace-svg svg") && UI.$("#trace-svg svg").querySelector(`[id="${id}"]`);
    if (g) g.classList.toggle("hover", on);
  }

  let again = false; // the form was sent: trace even the query on screen again

  async function run(params) {
    const q = UI.query(Object.fromEntries(FIELDS.map((k) => [k, params[k]])));
    if (q === lastKey && !again) return; // back on the tab: the trace stays
    again = false;
    lastKey = q;
    UI.status(`tracing ${params.src} → ${params.dst}…`);
    UI.clear(UI.$("#trace-svg"));
    UI.clear(UI.$("#trace-steps"));
    UI.$("#trace-verdict").hidden = true;
    try {
      const [t, svg] = await Promise.all([UI.get("/api/trace?" + q), UI.get("/svg/trace?" + q, "text")]);
      verdictBox(t, params);
      naturalSize(UI.placeSvg(UI.$("#trace-svg"), svg));
      stepList(t);
      UI.$("#trace-svg").scrollTop = UI.$("#trace-steps").scrollTop = 0; // a new path from its start
      UI.status(`traced ${t.src} → ${t.dst}: ${t.verdict}`);
    } catch (e) {
      lastKey = null;
      failed(params, e.message);
    }
  }

  // the drawing at its own size (boxes and text as dot made them), narrower panels scale it down
  function naturalSize(svg) {
    const vb = svg.viewBox && svg.viewBox.baseVal;
    if (vb && vb.width) svg.style.width = `${Math.ceil((vb.width * 96) / 72)}px`;
  }

  // a trace that could not be made: the server's words where the verdict goes
  function failed(params, msg) {
    const box = UI.clear(UI.$("#trace-verdict"));
    box.hidden = false;
    box.className = "verdict verdict-error";
    box.setAttribute("role", "alert");
    box.appendChild(UI.el("strong", {}, "CANNOT TRACE"));
    box.appendChild(UI.el("span", {}, ` ${params.src || "?"} → ${params.dst || "?"}: `));
    box.appendChild(UI.el("span", { class: "why" }, msg));
    UI.status(`trace failed: ${msg}`);
  }

  let wired = false;
  function wire() {
    if (wired) return;
    wired = true;
    UI.$("#trace-form").addEventListener("submit", (e) => {
      e.preventDefault();
      again = true;
      const f = new FormData(e.target);
      UI.go("trace", Object.fromEntries(FIELDS.map((k) => [k, (f.get(k) || "").trim()])));
    });
  }

  UI.tabs.trace = {
    async show(params) {
      wire();
      loadLists().catch((e) => UI.error(`pods and Services: ${e.message}`));
      const form = UI.$("#trace-form");
      for (const k of FIELDS) {
        if (params[k] !== undefined) form.elements[k].value = params[k];
      }
      if (params.src && params.dst) await run(params);
    },
  };
})();
