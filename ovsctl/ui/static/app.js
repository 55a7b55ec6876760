// ovsctl ui: the shell of the page (routing, the node selector, fetching, drawing helpers).
// Plain JavaScript, no framework, no build step. Every text that comes from the cluster is
// written with textContent; server SVG is parsed as XML and imported, never as HTML.
"use strict";

const UI = {
  tabs: {}, // name -> {show(params), hide()}
  nodes: [],
  lab: null,
  node: null,
  current: null,
};

UI.$ = (sel) => document.querySelector(sel);

// an element with text (never HTML): el("td", {class: "x"}, "text", child, ...)
UI.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
};

UI.clear = function (e) {
  while (e.firstChild) e.removeChild(e.firstChild);
  return e;
};

// the same short form draw.py writes into the pictures: 999, 12.3k, 4.5M
UI.count = function (n) {
  if (n === null || n === undefined) return "-";
  for (const [div, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (n >= div) return (n / div).toFixed(1) + unit;
  }
  return String(n);
};

UI.query = function (params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  return q.toString();
};

UI.error = function (msg) {
  const box = UI.$("#error");
  if (!msg) {
    box.hidden = true;
    return;
  }
  box.textContent = msg;
  box.hidden = false;
};

UI.status = function (msg) {
  UI.$("#status").textContent = msg;
};

// GET a URL; JSON documents parsed, errors ({"error": ...}) raised with the server's words
UI.get = async function (url, as) {
  let r;
  try {
    r = await fetch(url, { headers: { Accept: as === "text" ? "image/svg+xml" : "application/json" } });
  } catch (e) {
    throw new Error(`${url}: the server cannot be reached (${e.message})`);
  }
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      const body = await r.json();
      if (body && body.error) msg = body.error;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new Error(msg);
  }
  return as === "text" ? r.text() : r.json();
};

// an SVG document from the server, parsed as XML (scripts and event attributes removed in
// case anything slipped through) and placed into `host`; returns the <svg> element
UI.placeSvg = function (host, text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.nodeName !== "svg" || doc.getElementsByTagName("parsererror").length) {
    throw new Error("the server sent a drawing that is not SVG");
  }
  for (const s of Array.from(root.getElementsByTagName("script"))) s.remove();
  for (const e of Array.from(root.getElementsByTagName("*")).concat([root])) {
    for (const a of Array.from(e.attributes)) {
      if (/^on/i.test(a.name) || /javascript:/i.test(a.value)) e.removeAttribute(a.name);
    }
  }
  const svg = document.importNode(root, true);
  UI.clear(host).appendChild(svg);
  return svg;
};

// ---- routing: #tab?key=value&... ------------------------------------------------------

UI.parseHash = function () {
  const h = location.hash.replace(/^#/, "");
  const i = h.indexOf("?");
  const name = (i < 0 ? h : h.slice(0, i)) || "pipeline";
  const params = Object.fromEntries(new URLSearchParams(i < 0 ? "" : h.slice(i + 1)));
  return { name: UI.tabs[name] ? name : "pipeline", params };
};

UI.go = function (name, params) {
  const q = UI.query(params || {});
  const h = "#" + name + (q ? "?" + q : "");
  if (location.hash === h) UI.route();
  else location.hash = h;
};

UI.route = function () {
  const { name, params } = UI.parseHash();
  if (params.node && UI.nodes.some((n) => n.name === params.node)) UI.setNode(params.node);
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.tab === name);
  }
  for (const [n, tab] of Object.entries(UI.tabs)) {
    const sec = UI.$("#tab-" + n);
    if (n === name) {
      sec.hidden = false;
    } else if (!sec.hidden) {
      sec.hidden = true;
      if (tab.hide) tab.hide();
    }
  }
  UI.current = name;
  // the node selector picks the Pipeline's node; the other tabs show every node of a lab
  UI.$("#node-picker").hidden = UI.nodes.length < 2 || name !== "pipeline";
  UI.error(null);
  Promise.resolve(UI.tabs[name].show(params)).catch((e) => UI.error(e.message));
};

UI.setNode = function (name) {
  UI.node = name;
  UI.$("#node").value = name;
};

UI.start = async function () {
  try {
    const doc = await UI.get("/api/nodes");
    UI.nodes = doc.nodes || [];
    UI.lab = doc.lab;
  } catch (e) {
    UI.error(`cannot read the nodes: ${e.message}`);
  }
  const sel = UI.$("#node");
  for (const n of UI.nodes) {
    sel.appendChild(UI.el("option", { value: n.name }, `${n.name}${n.agent === "down" ? " (agent down)" : ""}`));
  }
  UI.$("#lab").textContent = UI.lab ? `lab ${UI.lab}` : UI.nodes.length ? `node ${UI.nodes[0].name}` : "";
  if (UI.nodes.length) UI.node = UI.nodes[0].name;
  sel.addEventListener("change", () => {
    UI.node = sel.value;
    if (UI.current === "pipeline") UI.go("pipeline", { node: UI.node });
  });
  window.addEventListener("hashchange", UI.route);
  UI.route();
};

document.addEventListener("DOMContentLoaded", UI.start);
