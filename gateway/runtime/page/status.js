// headrace status page: keeps the server-rendered page current from /status/stream
// (Server-Sent Events). No build step. Cell formats match gateway/runtime/page/render.py.
"use strict";
(() => {
  performance.mark("headrace-script");
  const $ = (sel, el = document) => el.querySelector(sel);
  const SVG = "http://www.w3.org/2000/svg";
  const initial = JSON.parse($("#initial").textContent);
  const tbody = $("#nodes tbody");
  const rows = new Map();   // node -> <tr>
  const data = new Map();   // node -> its latest row from the server
  let skew = initial.now - Date.now() / 1000;  // the gateway's clock minus ours, seconds
  let state = initial, period = 3, lostAt = null;
  // for the browser tests and anyone curious: when the first update arrived (ms after navigation)
  window.headrace = { firstUpdate: null, updates: 0, events: 0, connected: false };

  const now = () => Date.now() / 1000 + skew;
  const fmt = v => (v === null || v === undefined) ? "–" :
    (typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) : String(v));
  const clock = t => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  function ago(s) {
    if (s === null || s === undefined) return "never";
    s = Math.max(0, Math.floor(s));
    return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.floor(s / 60)} min ago` : `${Math.floor(s / 3600)} h ago`;
  }
  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
  }
  function size(n) {
    if (n === null || n === undefined) return "–";
    for (const u of ["B", "KB", "MB", "GB"]) {
      if (n < 1024 || u === "GB") return u === "B" ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${u}`;
      n /= 1024;
    }
  }
  const isLate = (r, t) => !r.last_seen ||
    t - r.last_seen > (r.per_min ? Math.max(3 * 60 / r.per_min, 10) : 60);
  function el(tag, attrs = {}, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs = {}, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- nodes --------------------------------------------------------------------------
  for (const tr of tbody.rows) rows.set(tr.dataset.node, tr);

  // the node table's cells, by position (render.py's node_row writes them in this order)
  const CELLS = { name: 0, transport: 1, seen: 2, per_min: 3, frames: 4, quality: 5, rejected: 6, battery: 7,
                  last: 8, extra: 9 };

  function newRow(name) {
    const tr = el("tr", { "data-node": name });
    for (let i = 0; i < 10; i++) tr.append(el("td"));
    tr.cells[CELLS.name].textContent = name;
    const after = [...rows.keys()].filter(n => n > name).sort()[0];
    tbody.insertBefore(tr, after ? rows.get(after) : null);
    rows.set(name, tr);
    watch(tr);
    return tr;
  }

  function cell(tr, k, text) {
    const td = tr.cells[CELLS[k]];
    if (td.textContent !== text) td.textContent = text;
  }

  function updateRow(r) {
    const tr = rows.get(r.node) || newRow(r.node);
    data.set(r.node, r);
    cell(tr, "transport", r.transport);
    cell(tr, "per_min", r.per_min.toFixed(1));
    cell(tr, "frames", String(r.frames));
    cell(tr, "quality", r.quality === null ? "–" : `${(100 * r.quality).toFixed(1)} %`);
    const causes = Object.keys(r.causes).sort().map(k => `${k} ${r.causes[k]}`).join(", ");
    cell(tr, "rejected", causes ? `${r.rejected} (${causes})` : String(r.rejected));
    cell(tr, "battery", fmt(r.battery));
    cell(tr, "extra", Object.entries(r.extra).map(([k, v]) => `${k}: ${fmt(v)}`).join(" "));
    const td = tr.cells[CELLS.last];
    for (const [k, v] of Object.entries(r.last)) {
      let span = [...td.children].find(s => s.dataset.s === k);
      if (!span) {
        span = el("span", { "data-s": k }, "");
        td.append(span);
      }
      const text = fmt(v);  // the span's text node; its sparkline, if drawn, follows it
      if (!span.firstChild || span.firstChild.nodeType !== Node.TEXT_NODE) span.prepend(document.createTextNode(""));
      if (span.firstChild.nodeValue !== text) span.firstChild.nodeValue = text;
    }
    if (tr.dataset.lastSeen !== String(r.last_seen)) {
      tr.dataset.lastSeen = String(r.last_seen);
      tr.dataset.shownAt = String(Date.now());  // when this frame reached the page (ms, our clock)
    }
    ageRow(tr, r, now());
  }

  function ageRow(tr, r, t) {
    cell(tr, "seen", r.last_seen ? ago(t - r.last_seen) : "never");
    tr.classList.toggle("late", isLate(r, t));
  }

  function ageAll() {
    const t = now();
    let late = 0;
    for (const [name, tr] of rows) {
      const r = data.get(name);
      if (!r) continue;
      ageRow(tr, r, t);
      late += tr.classList.contains("late");
    }
    $('[data-k="late"]').textContent = `${late} late`;
    $('[data-k="late"]').className = late ? "warn" : "";
  }

  // -- panels ---------------------------------------------------------------------------
  function dd(section, k, text, cls) {
    const e = $(`#${section} [data-k="${k}"]`);
    if (e.textContent !== text) e.textContent = text;
    if (cls !== undefined) e.className = cls;
  }

  function gateway(g) {
    dd("gateway", "version", g.version);
    dd("gateway", "uptime", duration(g.uptime));
    dd("gateway", "ok", g.ok ? "all running" : "A TASK DIED: see the log", g.ok ? "" : "bad");
    dd("gateway", "disk", g.disk_total ? `${size(g.disk_free)} free of ${size(g.disk_total)}` : "unknown",
       g.disk_total && g.disk_free / g.disk_total < 0.1 ? "bad" : "");
    const ul = $('#gateway [data-k="warnings"]');
    const want = g.warnings.length ? g.warnings : null;
    if (ul.dataset.v !== JSON.stringify(want)) {
      ul.dataset.v = JSON.stringify(want);
      ul.replaceChildren(...(want ? want.map(w => el("li", {}, w)) : [el("li", { class: "none" }, "none")]));
    }
  }

  function uplink(u) {
    dd("uplink", "connected", u.connected ? "connected" : "DISCONNECTED", u.connected ? "ok" : "bad");
    dd("uplink", "depth", `${u.depth} records, ${size(u.bytes)}`);
    dd("uplink", "oldest", u.oldest_age === null ? "–" : ago(u.oldest_age).replace(" ago", ""));
    dd("uplink", "dropped", Object.entries(u.dropped).map(([k, v]) => `${k} ${v}`).join(", ") || "none");
    dd("uplink", "rejects", Object.keys(u.rejects).sort().map(k => `${k} ${u.rejects[k]}`).join(", ") || "none");
  }

  function alarms(list) {
    const ul = $("#alarms ul");
    const t = now();
    ul.replaceChildren(...list.map(a => {
      const li = el("li", { "data-rule": a.rule, class: a.severity });
      const what = a.signal === "silence" ? `silent ${fmt(a.value)} s` : `${a.series} = ${fmt(a.value)}`;
      li.append(el("b", {}, a.rule), ` ${a.severity} · ${what} · since ${a.since ? clock(a.since) : "?"}` +
                (a.since ? ` (${ago(t - a.since).replace(" ago", "")})` : ""));
      return li;
    }));
    if (!list.length) ul.append(el("li", { class: "none" }, "none"));
    $('[data-k="alarms"]').textContent = `· ${list.length} alarm${list.length === 1 ? "" : "s"}`;
    $('[data-k="alarms"]').className = list.length ? "bad" : "";
  }

  // -- events -------------------------------------------------------------------------------
  const short = id => "#…" + String(id % 10000).padStart(4, "0");
  function describe(e) {
    if (e.type === "alarm") {
      const what = e.signal === "silence" ? `${fmt(e.value)} s silent` :
        e.series ? `${e.series}${e.signal === "rate" ? " rate" : ""} = ${fmt(e.value)}` : fmt(e.value);
      return `ALARM ${e.state} ${e.rule} (${what}, ${e.severity})`;
    }
    if (e.type === "demand") {
      const where = e.zone || `(${e.at[0]}, ${e.at[1]})`;
      return `DEMAND ${short(e.id)} ${e.need} at ${where}, priority ${e.priority} (${e.source})`;
    }
    const eta = e.eta !== undefined ? `, eta ${e.eta.toFixed(1)} s` : "";
    return `DISPATCH ${short(e.demand)} ${e.need} → ${e.resource}: ${e.state}${eta}`;
  }

  function addEvent(e, fresh) {
    const ol = $("#events ol");
    const li = el("li", { "data-type": e.type, "data-t": String(e.t),
                          "data-state": e.state || "", class: e.type });
    if (fresh) li.dataset.shown = String(Date.now());  // when it reached the page (ms, our clock)
    li.append(el("time", {}, clock(e.t)), " ", describe(e));
    ol.prepend(li);
    while (ol.children.length > 100) ol.lastChild.remove();
  }

  function onEvent(e) {
    window.headrace.events++;
    addEvent(e, true);
    if (e.type === "alarm") {  // at once; the next state confirms
      const list = state.alarms.filter(a => a.rule !== e.rule);
      if (e.state === "raised") list.push({ rule: e.rule, severity: e.severity, since: e.t,
        series: e.series || e.node, value: e.value, signal: e.signal || "value" });
      state.alarms = list.sort((a, b) => a.rule < b.rule ? -1 : 1);
      alarms(state.alarms);
    }
  }

  // -- the plant map ---------------------------------------------------------------------
  function map(d) {
    const m = $("#map");
    const pts = [...Object.values(d.points), ...d.resources.map(r => r.at), ...d.demands.map(x => x.at)];
    if (!pts.length) { m.replaceChildren(svg("text", { x: 2, y: 10, class: "none" }, "no zones, resources or demands")); return; }
    const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
    const pad = Math.max(2, 0.08 * Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)));
    const x0 = Math.min(...xs) - pad, x1 = Math.max(...xs) + pad, y0 = Math.min(...ys) - pad, y1 = Math.max(...ys) + pad;
    const w = x1 - x0, h = Math.max(y1 - y0, w / 4), fs = Math.max(w, h) / 45;
    m.setAttribute("viewBox", `${x0} 0 ${w} ${h}`);
    const Y = y => y1 - y;  // north up
    const right = x => x > x0 + 0.6 * w;  // labels of points on the right run leftwards, inside the map
    const out = [];
    for (const [a, b] of d.edges) {
      const p = d.points[a], q = d.points[b];
      out.push(svg("line", { x1: p[0], y1: Y(p[1]), x2: q[0], y2: Y(q[1]), class: "edge", "stroke-width": fs / 3 }));
    }
    for (const [name, p] of Object.entries(d.points)) {
      out.push(svg("rect", { x: p[0] - fs / 2, y: Y(p[1]) - fs / 2, width: fs, height: fs, class: "zone" }));
      out.push(svg("text", { x: right(p[0]) ? p[0] - fs * 0.8 : p[0] + fs * 0.8, y: Y(p[1]) + fs * 1.6, "font-size": fs,
                             class: "zlabel", "text-anchor": right(p[0]) ? "end" : "start" }, name));
    }
    const byId = new Map(d.demands.map(x => [x.id, x]));
    for (const r of d.resources) {
      const dem = r.demand !== null ? byId.get(r.demand) : null;
      if (dem) out.push(svg("line", { x1: r.at[0], y1: Y(r.at[1]), x2: dem.at[0], y2: Y(dem.at[1]),
                                       class: "route", "stroke-width": fs / 4 }));
    }
    for (const x of d.demands) {
      const [cx, cy] = [x.at[0], Y(x.at[1])], s = fs * 0.9;
      out.push(svg("path", { d: `M${cx} ${cy - s}L${cx + s} ${cy}L${cx} ${cy + s}L${cx - s} ${cy}Z`,
                             class: `demand ${x.state}`, "data-demand": x.id }));
      out.push(svg("text", { x: right(cx) ? cx - s * 1.4 : cx + s * 1.4, y: cy + s * 0.4, "font-size": fs,
                             class: "dlabel", "text-anchor": right(cx) ? "end" : "start" },
                   `${short(x.id)} ${x.need} p${x.priority} ${x.state}`));
    }
    for (const r of d.resources) {
      const kind = r.demand !== null ? "busy" : r.available ? "free" : "off";
      out.push(svg("circle", { cx: r.at[0], cy: Y(r.at[1]), r: fs * 0.7, class: `res ${kind}`, "data-res": r.id }));
      out.push(svg("text", { x: right(r.at[0]) ? r.at[0] - fs : r.at[0] + fs, y: Y(r.at[1]) - fs * 0.9,
                             "font-size": fs, class: "rlabel", "text-anchor": right(r.at[0]) ? "end" : "start" }, r.id));
    }
    m.replaceChildren(...out);
    $('[data-k="demands"]').textContent = `· ${d.demands.length} open demand${d.demands.length === 1 ? "" : "s"}`;
  }

  // -- sparklines and the plot (samples from /status/history) ------------------------------
  const visible = new Set();
  const io = new IntersectionObserver(entries => {
    for (const e of entries) (e.isIntersecting ? visible.add : visible.delete).call(visible, e.target.dataset.node);
  });
  const watch = tr => io.observe(tr);
  for (const tr of rows.values()) watch(tr);
  let plotNode = null, plots = [];

  function spark(span, values) {  // the span's sparkline, made on first use
    let svgEl = span.querySelector("svg");
    if (!svgEl) {
      svgEl = svg("svg", { class: "sp", viewBox: "0 0 60 16", preserveAspectRatio: "none" });
      span.append(svgEl);
    }
    const pts = values.map((v, i) => [i, v]).filter(p => p[1] !== null);
    if (pts.length < 2) { svgEl.replaceChildren(); return; }
    const vs = pts.map(p => p[1]), lo = Math.min(...vs), hi = Math.max(...vs), n = values.length - 1;
    const line = pts.map(([i, v]) => `${(60 * i / n).toFixed(1)},${(15 - (hi > lo ? 14 * (v - lo) / (hi - lo) : 7)).toFixed(1)}`);
    svgEl.replaceChildren(svg("polyline", { points: line.join(" ") }));
  }

  async function history() {
    const names = [...visible].slice(0, 150);
    if (plotNode && !names.includes(plotNode)) names.push(plotNode);
    if (!names.length || !window.headrace.connected) return;
    try {
      const r = await fetch(`/status/history?nodes=${names.map(encodeURIComponent).join(",")}`);
      if (!r.ok) return;
      const h = await r.json();
      period = h.period || period;
      for (const [name, sensors] of Object.entries(h.nodes)) {
        const tr = rows.get(name);
        if (!tr) continue;
        for (const span of tr.cells[CELLS.last].children) if (sensors[span.dataset.s]) spark(span, sensors[span.dataset.s]);
      }
      if (plotNode && h.nodes[plotNode]) plot(h.t, h.nodes[plotNode]);
    } catch (err) { /* the stream's banner says the gateway is gone */ }
  }

  function plot(t, sensors) {
    const box = $("#plot .chart");
    const names = Object.keys(sensors);
    if (typeof uPlot === "undefined") return;
    if (plots.length !== names.length || plots.some((p, i) => p.series[1].label !== names[i])) {
      plots.forEach(p => p.destroy());
      box.replaceChildren();
      const width = Math.min(box.clientWidth || 600, 900);
      plots = names.map((s, i) => new uPlot({ width, height: 110, scales: { x: { time: true } },
        series: [{}, { label: s, stroke: `hsl(${(i * 67) % 360} 70% 40%)`, width: 1.5, spanGaps: true }],
        axes: [{}, { size: 60 }] }, [t, sensors[s]], box));
    } else {
      plots.forEach((p, i) => p.setData([t, sensors[names[i]]]));
    }
  }

  tbody.addEventListener("click", ev => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    plotNode = tr.dataset.node;
    $("#plot h2 span").textContent = plotNode;
    $("#plot").hidden = false;
    plots.forEach(p => p.destroy()); plots = []; $("#plot .chart").replaceChildren();
    history();
  });
  $("#plot button").addEventListener("click", () => { plotNode = null; $("#plot").hidden = true; });

  // -- the stream -----------------------------------------------------------------------
  function apply(s) {
    const first = window.headrace.firstUpdate === null;
    if (first) window.headrace.firstUpdate = performance.now();
    window.headrace.updates++;
    skew = s.now - Date.now() / 1000;
    if (s.full) {
      const keep = new Set(s.nodes.map(r => r.node));
      for (const [name, tr] of rows) if (!keep.has(name)) { tr.remove(); rows.delete(name); data.delete(name); }
      if (s.events) { $("#events ol").replaceChildren(); s.events.forEach(e => addEvent(e, false)); }
    }
    s.nodes.forEach(updateRow);
    $('[data-k="nodes"]').textContent = `${s.node_count} nodes`;
    state = { ...state, ...s };
    gateway(s.gateway); uplink(s.uplink); alarms(s.alarms); map(s.dispatch); ageAll();
    $("#live").textContent = `live · ${clock(s.now)}`;
    if (first) history();
  }

  function lost(yes) {
    window.headrace.connected = !yes;
    document.body.classList.toggle("stale", yes);
    if (yes && lostAt === null) lostAt = Date.now() / 1000;
    if (!yes) lostAt = null;
    $("#lost").hidden = !yes;
    if (yes) $("#lost span").textContent = `at ${clock(lostAt)}`;
    if (yes) $("#live").textContent = "not live";
  }

  function connect(early) {
    // the first stream is the one the page's head opened while it loaded (its messages so far queued)
    const es = early ? early.es : new EventSource("/status/stream");
    es.addEventListener("state", m => apply(JSON.parse(m.data)));
    es.addEventListener("ev", m => onEvent(JSON.parse(m.data)));
    es.onopen = () => lost(false);
    es.onerror = () => {
      lost(true);
      // the browser retries by itself after a dropped connection, but gives up on an HTTP error
      // (a restarting gateway, a changed token): then start over
      if (es.readyState === EventSource.CLOSED) setTimeout(() => connect(null), 2000);
    };
    if (early) {
      const queued = early.queue;
      early.queue = null;
      if (es.readyState === EventSource.OPEN) lost(false);
      else if (es.readyState === EventSource.CLOSED) es.onerror();
      for (const [kind, data] of queued) (kind === "state" ? apply : onEvent)(JSON.parse(data));
    }
  }

  alarms(initial.alarms); map(initial.dispatch);
  for (const e of initial.events || []) addEvent(e, false);
  for (const tr of rows.values()) {  // rows rendered by the server: what they show, for ageing
    data.set(tr.dataset.node, { last_seen: Number(tr.dataset.lastSeen) || 0,
      per_min: Number(tr.cells[CELLS.per_min].textContent) });
  }
  ageAll();
  performance.mark("headrace-ready");
  connect(window.headraceEarly);
  setInterval(ageAll, 1000);
  (function loop() { history().finally(() => setTimeout(loop, period * 1000)); })();
})();
