// The overview page: status strip, uploads and drops over time, top-N
// tables, the live drop tail (server-sent events) and the explain form.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);

  function ago(unix) {
    if (!unix) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
    return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }

  // The data update: last success, ok or failed, and each source's error
  // (listed under the strip item, and on hover).
  function updateItem(u) {
    const failed = u.sources.filter((x) => x.error);
    const why = [u.error].concat(failed.map((x) => x.name + ": " + x.error)).filter(Boolean);
    const li = rw.el("li", { id: "update", class: u.ok ? "ok" : "bad", title: why.join("\n") },
      rw.el("b", { text: "data update " }), u.ok ? "ok" : "failed",
      ", last success " + ago(u.last_success) + (u.version ? " (version " + u.version + ")" : ""));
    if (failed.length) {
      const ul = rw.el("ul", { id: "update-errors", class: "errors" });
      for (const x of failed) ul.append(rw.el("li", { "data-source": x.name, text: x.name + ": " + x.error }));
      li.append(ul);
    }
    return li;
  }

  let devicesShown = "";
  async function status() {
    try {
      const s = await rw.get("/api/status");
      const lost = s.lost.ring_lost + s.lost.queue_dropped + s.lost.not_written + s.lost.history_not_written + s.lost.live_lagged;
      const hook = (n, on) => rw.el("li", { class: on ? "ok" : "bad", id: "hook-" + n }, rw.el("b", { text: n + " " }), on ? "attached" : "not attached");
      $("status").replaceChildren(
        rw.el("li", {}, rw.el("b", { text: "interface " }), s.interface),
        rw.el("li", { id: "mode", class: s.mode === "enforcing" ? "ok" : "muted" }, rw.el("b", { text: "mode " }), s.mode),
        rw.el("li", { id: "epoch" }, rw.el("b", { text: "policy epoch " }), String(s.epoch), " loaded " + ago(s.loaded_at)),
        hook("xdp", s.hooks.xdp), hook("tc", s.hooks.tc),
        rw.el("li", { id: "lost", class: lost ? "bad" : "" }, rw.el("b", { text: "events lost " }), String(lost),
          s.lost.suppressed ? " (+" + s.lost.suppressed + " rate-limited)" : ""),
      );
      if (s.update) $("status").append(updateItem(s.update));
      const names = s.devices.join("\n");
      if (names !== devicesShown) {
        devicesShown = names;
        for (const sel of [$("tail-device"), $("explain-device")]) {
          const keep = sel.value;
          sel.replaceChildren(sel.options[0]);
          for (const d of s.devices) if (d !== "default") sel.append(rw.el("option", { value: d, text: d }));
          sel.value = keep;
        }
      }
    } catch (e) {
      $("status").replaceChildren(rw.el("li", { class: "bad", text: "status: " + e }));
    }
  }

  // The range the chart and (beyond 24 h) the top lists show.
  let range = "24h";
  const labels = { "24h": "last 24 hours (per minute)", "7d": "last 7 days (per hour)", "30d": "last 30 days (per hour)" };
  let plot = null;
  async function chart() {
    const box = $("chart");
    try {
      const s = await rw.get("/api/series?range=" + range);
      const data = [s.t, s.upload_bytes, s.drop_packets];
      box.dataset.range = s.range;
      box.dataset.source = s.source;
      box.dataset.steps = String(s.t.length);
      box.dataset.drops = String(s.drop_packets.reduce((a, b) => a + b, 0));
      box.dataset.first = String(s.t[0] || 0);
      $("chart-note").textContent = s.source === "memory" ? "since this controller started (no history)" : "from the history";
      if (!window.uPlot) return;
      if (plot && plot.rwRange !== s.range) { plot.destroy(); plot = null; }
      if (!plot) {
        box.replaceChildren();
        const span = s.range === "24h" ? 86400 : s.range === "7d" ? 7 * 86400 : 30 * 86400;
        plot = new uPlot({
          width: Math.max(320, box.clientWidth - 8), height: 220,
          // At least the last hour, at most the range.
          // (From the data, not uPlot's padded guess for a single point.)
          scales: { x: { time: true, range: (u) => {
            const x = u.data[0], hi = x[x.length - 1] + s.step;
            return [Math.max(Math.min(x[0], hi - 3600), hi - span), hi];
          } } },
          series: [{}, { label: "upload", stroke: "#2a6fdb", value: (u, v) => v == null ? "-" : rw.bytes(v), scale: "bytes" },
            { label: "drops", stroke: "#b3261e", scale: "packets" }],
          axes: [{}, { scale: "bytes", values: (u, vs) => vs.map((v) => rw.bytes(v)), size: 70 },
            { scale: "packets", side: 1, grid: { show: false } }],
        }, data, box);
        plot.rwRange = s.range;
      } else {
        plot.setData(data);
      }
    } catch (e) {
      if (plot) { plot.destroy(); plot = null; }
      box.dataset.range = range;
      box.dataset.source = "";
      box.replaceChildren(rw.el("p", { class: "bad", id: "chart-error", text: e.message }));
      $("chart-note").textContent = "";
    }
  }
  for (const b of document.querySelectorAll("#ranges button")) {
    b.addEventListener("click", () => {
      range = b.dataset.range;
      for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
      $("range-label").textContent = labels[range];
      $("tops-label").textContent = range === "24h" ? "Top lists: since the counters began." : "Top lists: " + labels[range].replace(/ \(.*/, "") + ", from the history.";
      chart();
      tops();
    });
  }

  async function tops() {
    const ranged = range === "24h" ? "" : "&range=" + range;
    for (const by of ["country", "device", "host"]) {
      try {
        rw.topTable($("top-" + by), await rw.get("/api/top?by=" + by + "&n=10" + ranged), by, by === "device");
      } catch (e) {
        $("top-" + by).textContent = String(e.message || e);
      }
    }
  }

  // The live tail: one EventSource per filter; pausing closes it.
  let source = null;
  let paused = false;
  function connect() {
    if (source) source.close();
    source = null;
    if (paused) { $("tail-state").textContent = "paused"; return; }
    const q = new URLSearchParams({ device: $("tail-device").value, verdict: $("tail-verdict").value });
    source = new EventSource("/api/live?" + q);
    source.onopen = () => { $("tail-state").textContent = "live"; };
    source.onerror = () => { $("tail-state").textContent = "reconnecting…"; };
    source.addEventListener("drop", (m) => {
      const row = rw.eventRow(JSON.parse(m.data), true);
      row.classList.add("fresh");
      setTimeout(() => row.classList.remove("fresh"), 3000);
      const body = $("tail");
      body.prepend(row);
      while (body.rows.length > 200) body.deleteRow(-1);
    });
    source.addEventListener("lagged", (m) => {
      $("tail-state").textContent = "live (" + m.data + " missed: too many at once)";
    });
  }
  $("tail-pause").addEventListener("click", () => {
    paused = !paused;
    $("tail-pause").textContent = paused ? "resume" : "pause";
    connect();
  });
  $("tail-device").addEventListener("change", connect);
  $("tail-verdict").addEventListener("change", connect);

  $("explain").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ addr: $("explain-addr").value, device: $("explain-device").value, packet: $("explain-packet").value });
    const out = $("explain-out");
    out.textContent = "…";
    try {
      const e = await rw.get("/api/explain?" + q);
      const lines = [
        e.addr + " from " + e.device + " (" + e.device_by + "): " + e.verdict.toUpperCase(),
        "rule: " + (e.rule || "none (no rule matched: pass)"),
        "regions: " + (e.regions.map((r) => r.name).join(", ") || "none"),
        "country: " + (e.country || "-"),
      ];
      if (e.looked_up && e.looked_up.length) lines.push("looked up as: " + e.looked_up.map((l) => l.name).join(", "));
      for (const n of e.notes || []) lines.push("note: " + n);
      out.textContent = lines.join("\n");
      out.dataset.verdict = e.verdict;
    } catch (err) {
      out.textContent = "error: " + err.message;
      out.dataset.verdict = "";
    }
  });

  function all() { status(); chart(); tops(); }
  all();
  connect();
  setInterval(all, 5000);
})();
