// A device's page: bytes by country and host (totals and over time), the rules that apply, and its recent drops.
"use strict";
(function () {
  const name = new URLSearchParams(location.search).get("name") || "";
  document.getElementById("device-name").textContent = name;
  document.title = "regionwall: " + name;
  async function refresh() {
    try {
      const d = await rw.get("/api/device?name=" + encodeURIComponent(name));
      const t = d.total;
      const strip = document.getElementById("device-total");
      strip.replaceChildren(
        rw.el("li", {}, rw.el("b", { text: "upload " }), rw.bytes(t.upload_bytes)),
        rw.el("li", { class: "bad", id: "device-blocked" }, rw.el("b", { text: "blocked " }), t.blocked_packets + " packets, " + rw.bytes(t.blocked_bytes)),
        rw.el("li", { class: "ok" }, rw.el("b", { text: "allowed " }), (t.passed_packets + t.audited_packets) + " packets"),
      );
      if (!d.known) strip.append(rw.el("li", { class: "muted", text: "(not a device of the live policy)" }));
      rw.topTable(document.getElementById("dev-country"), d.countries, "country");
      rw.topTable(document.getElementById("dev-host"), d.hosts, "host");
      document.getElementById("dev-rules").replaceChildren(...d.rules.map((r) => rw.el("tr", {},
        rw.el("td", { text: r.name }), rw.el("td", { text: r.via }), rw.el("td", { text: r.mode }),
        rw.el("td", { text: r.block.join(", ") || "-" }), rw.el("td", { text: r.allow.join(", ") || "-" }),
        rw.el("td", { text: String(r.line) }))));
      document.getElementById("dev-drops").replaceChildren(...d.drops.map((r) => rw.eventRow(r, false)));
    } catch (e) {
      document.getElementById("device-total").replaceChildren(rw.el("li", { class: "bad", text: String(e) }));
    }
  }
  // Bytes over time by country and host, from the history.
  let range = "24h";
  const plots = {};
  const labels = { "24h": "last 24 hours (per minute)", "7d": "last 7 days (per hour)", "30d": "last 30 days (per hour)" };
  async function charts() {
    const note = document.getElementById("dev-chart-note");
    for (const by of ["country", "host"]) {
      const box = document.getElementById("dev-chart-" + by);
      try {
        const d = await rw.get("/api/device/series?" + new URLSearchParams({ name, by, range }));
        box.dataset.range = d.range;
        plots[by] = rw.linesChart(box, d, plots[by]);
        note.textContent = "";
      } catch (e) {
        if (plots[by]) { plots[by].destroy(); plots[by] = null; }
        box.dataset.lines = "";
        box.replaceChildren(rw.el("p", { class: "muted", text: e.message }));
      }
    }
  }
  for (const b of document.querySelectorAll("#ranges button")) {
    b.addEventListener("click", () => {
      range = b.dataset.range;
      for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
      document.getElementById("dev-range-label").textContent = labels[range];
      charts();
    });
  }
  refresh();
  charts();
  setInterval(refresh, 5000);
  setInterval(charts, 30000);
})();
