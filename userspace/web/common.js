// Helpers shared by the dashboard's pages (no framework; no inline script).
"use strict";
const rw = {
  async get(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  },
  el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  },
  bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  },
  time(ts) { return (ts || "").replace(/^.*T/, "").replace(/\..*$/, "").replace(/Z$/, ""); },
  // A top-N table (blocked and allowed, each with its "other" row); device
  // names link to their page when `link` is set.
  topTable(box, top, label, link) {
    box.replaceChildren();
    for (const [title, rows, other] of [["blocked", top.blocked, top.blocked_other], ["allowed", top.allowed, top.allowed_other]]) {
      const t = rw.el("table", { class: "top " + title, "data-kind": title });
      t.append(rw.el("caption", { class: title === "blocked" ? "bad" : "ok", text: title }));
      t.append(rw.el("tr", {}, rw.el("th", { text: label }), rw.el("th", { class: "num", text: "packets" }), rw.el("th", { class: "num", text: "bytes" })));
      const all = other ? rows.concat([other]) : rows;
      if (!all.length) t.append(rw.el("tr", {}, rw.el("td", { class: "muted", text: "none" })));
      for (const r of all) {
        const name = link && r !== other ? rw.el("a", { href: "/device?name=" + encodeURIComponent(r.name), text: r.name }) : r.name;
        t.append(rw.el("tr", { "data-name": r.name }, rw.el("td", {}, name),
          rw.el("td", { class: "num", text: String(r.packets) }), rw.el("td", { class: "num", text: rw.bytes(r.bytes) })));
      }
      box.append(t);
    }
  },
  // A chart of bytes per step, one line per key and one for "other"
  // (what /api/device/series answers); returns the uPlot to update.
  palette: ["#2a6fdb", "#b3261e", "#1b6e3a", "#8a4baf", "#c77700", "#00838f", "#6d4c41", "#ad1457"],
  linesChart(box, d, old) {
    const lines = d.other ? d.lines.concat([d.other]) : d.lines;
    box.dataset.lines = lines.map((l) => l.name).join(",");
    box.dataset.steps = String(d.t.length);
    if (old) old.destroy();
    box.replaceChildren();
    if (!lines.length) { box.append(rw.el("p", { class: "muted", text: "no traffic in this range" })); return null; }
    if (!window.uPlot) return null;
    const series = [{}].concat(lines.map((l, i) => ({
      label: l.name, stroke: l === d.other ? "#999" : rw.palette[i % rw.palette.length],
      value: (u, v) => v == null ? "-" : rw.bytes(v),
    })));
    const span = { "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 }[d.range] || 86400;
    return new uPlot({
      width: Math.max(300, box.clientWidth - 8), height: 200,
      // At least the last hour, at most the range (as the overview).
      scales: { x: { time: true, range: (u) => {
        const x = u.data[0], hi = x[x.length - 1] + d.step;
        return [Math.max(Math.min(x[0], hi - 3600), hi - span), hi];
      } } },
      series,
      axes: [{}, { values: (u, vs) => vs.map((v) => rw.bytes(v)), size: 70 }],
    }, [d.t].concat(lines.map((l) => l.bytes)), box);
  },
  eventRow(r, withDevice) {
    const cells = [rw.time(r.timestamp)];
    if (withDevice) cells.push(r.device);
    cells.push(r.verdict, (r.dst_ip || "?") + (r.dst_port ? ":" + r.dst_port : ""), r.country || "-", r.host || "", r.rule);
    return rw.el("tr", { "data-device": r.device, "data-verdict": r.verdict }, ...cells.map((c) => rw.el("td", { text: c })));
  },
};
