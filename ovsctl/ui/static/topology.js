// The Topology tab: nodes, their tunnels, pods with addresses (/svg/topology) and the
// Services with their endpoints (/api/topology).
"use strict";

(function () {
  const portText = (p) =>
    typeof p === "object" && p !== null ? `${p.port}/${p.protocol || "TCP"}${p.name ? ` (${p.name})` : ""}` : String(p);

  UI.tabs.topology = {
    async show() {
      const [doc, svg] = await Promise.all([UI.get("/api/topology"), UI.get("/svg/topology", "text")]);
      UI.placeSvg(UI.$("#topology-svg"), svg);
      const body = UI.clear(UI.$("#services tbody"));
      for (const s of doc.services || []) {
        const eps = (s.endpoints || []).map((e) => `${e.pod || "?"} ${e.ip}${e.node ? ` on ${e.node}` : ""}`);
        body.appendChild(
          UI.el(
            "tr",
            {},
            UI.el("td", {}, `${s.ns}/${s.name}`),
            UI.el("td", { class: "mono" }, (s.cluster_ips || []).join(", ")),
            UI.el("td", { class: "mono" }, (s.ports || []).map(portText).join(", ")),
            UI.el("td", {}, eps.join("; ") || "no endpoints"),
          ),
        );
      }
      const pods = (doc.nodes || []).reduce((n, x) => n + (x.pods || []).length, 0);
      UI.status(`${(doc.nodes || []).length} nodes, ${pods} pods, ${(doc.services || []).length} Services`);
    },
  };
})();
