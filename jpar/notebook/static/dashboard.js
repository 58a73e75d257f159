// jpar dashboard front end (anywidget ES module, no build step, no CDN).
// Traits from Python (jpar/notebook/dashboard.py): graph {mode, nodes:[[id,label,x,y,kind]], edges:[[i,j]], version},
// states (tasks: {id:[state, engine, seconds, error]}; groups: {key:[{state:n}, mean seconds]}),
// engines [{id, node, pid, cpu, rss, shared, heap, task, hist_cpu, hist_heap}], totals {...}, status.

const STATES = ["waiting", "queued", "assigned", "running", "done", "failed", "cancelled"];
const COLOURS = {
  waiting: "#bdbdbd", queued: "#9ecae1", assigned: "#4292c6", running: "#fd8d3c",
  done: "#41ab5d", failed: "#d62728", cancelled: "#737373",
};
const SVGNS = "http://www.w3.org/2000/svg";
const DX = 70, DY = 28;   // grid unit -> px in the task view
const GX = 190, GY = 64;  // ... in the group view

const CSS = `
.jpar-dash { font: 12px/1.35 var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px; padding: 6px; position: relative; }
.jpar-dash .jpar-head { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 4px; }
.jpar-dash .jpar-chip { padding: 1px 6px; border-radius: 9px; color: #fff; font-weight: 600; }
.jpar-dash .jpar-muted { color: var(--jp-ui-font-color2, #777); }
.jpar-dash .jpar-main { display: flex; gap: 8px; }
.jpar-dash .jpar-dagbox { flex: 1 1 auto; min-width: 0; border: 1px solid var(--jp-border-color3, #eee);
  border-radius: 3px; height: 340px; background: var(--jp-layout-color0, #fff); }
.jpar-dash svg.jpar-dag { width: 100%; height: 100%; display: block; }
.jpar-dash .jpar-side { flex: 0 0 300px; max-height: 340px; overflow-y: auto; }
.jpar-dash .jpar-engine { margin-bottom: 6px; }
.jpar-dash .jpar-bar { position: relative; height: 10px; background: var(--jp-layout-color2, #eee);
  border-radius: 2px; overflow: hidden; margin: 1px 0; }
.jpar-dash .jpar-bar > div { position: absolute; top: 0; bottom: 0; left: 0; transition: width 0.2s; }
.jpar-dash .jpar-cpu-fill { background: #fd8d3c; }
.jpar-dash .jpar-heap-fill { background: #6a51a3; }
.jpar-dash .jpar-shared-fill { background: #bcbddc; }
.jpar-dash .jpar-tip { position: absolute; pointer-events: none; background: var(--jp-layout-color1, #fff);
  color: var(--jp-ui-font-color1, #222); border: 1px solid var(--jp-border-color1, #bdbdbd);
  box-shadow: var(--jp-elevation-z4, 0 2px 4px rgba(0,0,0,0.3));
  padding: 4px 6px; border-radius: 3px; white-space: pre; display: none; z-index: 10; max-width: 420px; }
.jpar-dash .jpar-details { white-space: pre-wrap; margin-top: 4px; font-family: var(--jp-code-font-family, monospace); }
.jpar-dash table { border-collapse: collapse; }
.jpar-dash td, .jpar-dash th { padding: 0 6px 0 0; text-align: left; }
.jpar-dash button { font-size: 11px; }
.jpar-dash .jpar-node { cursor: pointer; }
.jpar-dash .jpar-edge { stroke: var(--jp-border-color1, #999); }
.jpar-dash .jpar-task-dot { stroke: var(--jp-ui-font-color1, #333); }
.jpar-dash .jpar-label { fill: var(--jp-ui-font-color1, #222); }
.jpar-dash .jpar-label-dim { fill: var(--jp-ui-font-color2, #555); }
.jpar-dash .jpar-group-box { fill: var(--jp-layout-color1, #fff); stroke: var(--jp-ui-font-color2, #555); }
.jpar-dash .jpar-group-box[data-kind="actor"] { stroke: #6a51a3; }
.jpar-dash button { color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color2, #eee);
  border: 1px solid var(--jp-border-color1, #bdbdbd); border-radius: 2px; }
`;

function el(tag, attrs = {}, parent = null, ns = null) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  if (parent) parent.appendChild(e);
  return e;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "n/a";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
}

function fmtSecs(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " us";
  if (s < 1) return (s * 1e3).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}

function sparkline(values, max, colour, parent) {
  const w = 120, h = 18;
  const svg = el("svg", { width: w, height: h, class: "jpar-spark" }, parent, SVGNS);
  if (!values || values.length < 2) return svg;
  const m = max || Math.max(1, ...values);
  const pts = values.map((v, i) => `${(i * w / (values.length - 1)).toFixed(1)},${(h - 1 - (v / m) * (h - 2)).toFixed(1)}`);
  el("polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 1.2 }, svg, SVGNS);
  return svg;
}

function render({ model, el: root }) {
  const style = el("style", { text: CSS }, root);
  const box = el("div", { class: "jpar-dash" }, root);
  const head = el("div", { class: "jpar-head" }, box);
  const main = el("div", { class: "jpar-main" }, box);
  const dagbox = el("div", { class: "jpar-dagbox" }, main);
  const svg = el("svg", { class: "jpar-dag" }, dagbox, SVGNS);
  const edgeLayer = el("g", { class: "jpar-edges" }, svg, SVGNS);
  const nodeLayer = el("g", { class: "jpar-nodes" }, svg, SVGNS);
  const side = el("div", { class: "jpar-side" }, main);
  const enginesBox = el("div", { class: "jpar-engines" }, side);
  const storeBox = el("div", { class: "jpar-store" }, side);
  const actorsBox = el("div", { class: "jpar-actors" }, side);
  const details = el("div", { class: "jpar-details jpar-muted" }, box);
  const tip = el("div", { class: "jpar-tip" }, box);

  let nodeEls = new Map();     // id -> {g, shape, label, bars}
  let nodeInfo = new Map();    // id -> [label, kind]
  let mode = "tasks";
  let pinned = null;

  function describe(id) {
    const info = nodeInfo.get(id);
    if (!info) return "";
    const st = (model.get("states") || {})[id];
    if (mode === "groups") {
      const counts = st ? st[0] : {};
      const parts = STATES.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`);
      return `${info[0]}  (${info[1]})\n${parts.join(", ") || "no tasks"}\nmean duration ${fmtSecs(st ? st[1] : null)}`;
    }
    if (!st) return info[0];
    const [state, engine, secs, err] = st;
    let s = `${info[0]}  [${id}]\nstate: ${state}`;
    if (engine !== null && engine !== undefined && engine >= 0) s += `\nengine: ${engine}`;
    if (secs !== null && secs !== undefined) s += `\n${state === "running" ? "running for" : "duration"}: ${fmtSecs(secs)}`;
    if (err) s += `\nerror: ${err}`;
    return s;
  }

  function drawGraph() {
    const g = model.get("graph") || {};
    mode = g.mode || "tasks";
    const nodes = g.nodes || [], edges = g.edges || [];
    nodeEls = new Map(); nodeInfo = new Map();
    edgeLayer.replaceChildren(); nodeLayer.replaceChildren();
    svg.setAttribute("data-mode", mode);
    svg.setAttribute("data-nodes", String(nodes.length));
    const sx = mode === "groups" ? GX : DX, sy = mode === "groups" ? GY : DY;
    let maxX = 0, maxY = 0;
    for (const n of nodes) { maxX = Math.max(maxX, n[2]); maxY = Math.max(maxY, n[3]); }
    const pad = mode === "groups" ? 90 : 20;
    // small graphs keep their natural size (no giant nodes): the view box is at least the box's size
    const w = maxX * sx + 2 * pad, h = maxY * sy + pad + 20;
    const vw = Math.max(w, 480), vh = Math.max(h, 250);
    svg.setAttribute("viewBox", `${-pad - (vw - w) / 2} ${-pad / 2 - 10 - (vh - h) / 2} ${vw} ${vh}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    for (const [a, b] of edges) {
      const na = nodes[a], nb = nodes[b];
      if (!na || !nb) continue;
      el("line", { x1: na[2] * sx, y1: na[3] * sy, x2: nb[2] * sx, y2: nb[3] * sy, class: "jpar-edge",
        "stroke-width": mode === "groups" ? 1.5 : 0.8, "marker-end": "" }, edgeLayer, SVGNS);
    }
    for (const n of nodes) {
      const [id, label, x, y, kind] = n;
      nodeInfo.set(id, [label, kind]);
      const grp = el("g", { class: "jpar-node", "data-id": id, "data-kind": kind,
        transform: `translate(${x * sx},${y * sy})` }, nodeLayer, SVGNS);
      let shape, bars = null, count = null;
      if (mode === "groups") {
        shape = el("rect", { x: -80, y: -20, width: 160, height: 40, rx: 6, class: "jpar-group-box",
          "data-kind": kind, "stroke-width": 1.5 }, grp, SVGNS);
        el("text", { x: 0, y: -6, "text-anchor": "middle", "font-size": 12, "font-weight": 600, class: "jpar-label",
          text: label.length > 24 ? label.slice(0, 23) + "…" : label }, grp, SVGNS);
        bars = el("g", {}, grp, SVGNS);
        count = el("text", { x: 0, y: 30, "text-anchor": "middle", "font-size": 10, class: "jpar-label-dim" },
          grp, SVGNS);
      } else {
        shape = el("circle", { r: 8, fill: COLOURS.waiting, class: "jpar-task-dot", "stroke-width": 0.6 }, grp, SVGNS);
        el("text", { x: 11, y: 4, "font-size": 9, class: "jpar-label",
          text: label.length > 14 ? label.slice(0, 13) + "…" : label }, grp, SVGNS);
      }
      grp.addEventListener("mouseenter", (ev) => {
        tip.textContent = describe(id);
        tip.style.display = "block";
      });
      grp.addEventListener("mousemove", (ev) => {
        const r = box.getBoundingClientRect();
        tip.style.left = (ev.clientX - r.left + 12) + "px";
        tip.style.top = (ev.clientY - r.top + 12) + "px";
      });
      grp.addEventListener("mouseleave", () => { tip.style.display = "none"; });
      grp.addEventListener("click", () => {
        pinned = pinned === id ? null : id;
        details.textContent = pinned ? describe(pinned) : "";
        details.setAttribute("data-id", pinned || "");
      });
      nodeEls.set(id, { g: grp, shape, bars, count });
    }
    paintStates();
  }

  function paintStates() {
    const states = model.get("states") || {};
    if (mode === "groups") {
      for (const [id, ne] of nodeEls) {
        const st = states[id];
        const counts = st ? st[0] : {};
        const total = STATES.reduce((a, s) => a + (counts[s] || 0), 0) || 1;
        ne.bars.replaceChildren();
        let x = -76;
        const title = [];
        for (const s of STATES) {
          const c = counts[s] || 0;
          if (!c) continue;
          const w = (152 * c) / total;
          el("rect", { x, y: 2, width: Math.max(w, 0.5), height: 10, fill: COLOURS[s], class: "jpar-count",
            "data-state": s, "data-count": String(c) }, ne.bars, SVGNS);
          x += w;
          title.push(`${s} ${c}`);
        }
        ne.count.textContent = title.join(" · ");
        const lead = ["failed", "running", "assigned", "queued", "waiting", "done", "cancelled"].find((s) => counts[s]);
        ne.g.setAttribute("data-state", lead || "none");
      }
    } else {
      for (const [id, ne] of nodeEls) {
        const st = states[id];
        const state = st ? st[0] : "waiting";
        if (ne.g.getAttribute("data-state") !== state) {
          ne.g.setAttribute("data-state", state);
          ne.shape.setAttribute("fill", COLOURS[state] || "#ccc");
        }
      }
    }
    if (pinned) details.textContent = describe(pinned);
  }

  function drawEngines() {
    const engines = model.get("engines") || [];
    enginesBox.replaceChildren();
    el("div", { text: `Engines (${engines.length})`, style: "font-weight:600" }, enginesBox);
    let memMax = 1;
    for (const e of engines) memMax = Math.max(memMax, e.rss || 0, ...(e.hist_heap || [0]));
    memMax *= 1.2;
    for (const e of engines) {
      const row = el("div", { class: "jpar-engine", "data-engine": String(e.id) }, enginesBox);
      el("div", { text: `engine ${e.id}${e.node ? " · " + e.node : ""} · pid ${e.pid}${e.task ? " · " + e.task : ""}` }, row);
      // null figures: not sampled yet (an engine's first sample comes a second after it starts)
      const measured = e.cpu !== null && e.cpu !== undefined;
      row.setAttribute("data-measured", String(measured));
      const cpu = el("div", { class: "jpar-bar", title: "CPU %" }, row);
      const fill = el("div", { class: "jpar-cpu-fill", "data-cpu": measured ? String(e.cpu) : "" }, cpu);
      fill.style.width = (measured ? Math.min(100, e.cpu) : 0) + "%";
      const mem = el("div", { class: "jpar-bar", title: "heap (RSS - shared) and shared memory" }, row);
      const heap = el("div", { class: "jpar-heap-fill", "data-heap": measured ? String(e.heap) : "" }, mem);
      heap.style.width = (measured ? 100 * e.heap / memMax : 0) + "%";
      const sh = el("div", { class: "jpar-shared-fill" }, mem);
      sh.style.left = (measured ? 100 * e.heap / memMax : 0) + "%";
      sh.style.width = (measured ? 100 * e.shared / memMax : 0) + "%";
      const figures = measured
        ? `CPU ${e.cpu.toFixed(0)}% · heap ${fmtBytes(e.heap)} · shared ${fmtBytes(e.shared)} `
        : "CPU - · heap - · shared - ";
      const line = el("div", { class: "jpar-muted jpar-figures", text: figures }, row);
      sparkline(e.hist_cpu, 100, "#fd8d3c", line);
      sparkline(e.hist_heap, memMax, "#6a51a3", line);
    }
  }

  function drawTotals() {
    const t = model.get("totals") || {};
    head.replaceChildren();
    const status = model.get("status");
    el("span", { text: "jpar", style: "font-weight:700" }, head);
    el("span", { class: "jpar-muted jpar-status", text: status }, head);
    const states = t.states || {};
    for (const s of STATES) {
      const chip = el("span", { class: "jpar-chip", "data-state": s, "data-count": String(states[s] || 0),
        text: `${s} ${states[s] || 0}` }, head);
      chip.style.background = COLOURS[s];
      if (!states[s]) chip.style.opacity = 0.35;
    }
    el("span", { class: "jpar-rate", text: `${(t.rate || 0).toFixed(0)} tasks/s`, "data-rate": String(t.rate || 0) }, head);
    el("span", { class: "jpar-muted", text: `${t.tasks || 0} tasks seen${t.grouped ? " · grouped by function/actor" : ""}` }, head);
    const clear = el("button", { text: "clear", title: "forget the tasks shown so far" }, head);
    clear.addEventListener("click", () => model.send({ type: "clear" }));

    storeBox.replaceChildren();
    el("div", { text: "Object store", style: "font-weight:600;margin-top:6px" }, storeBox);
    const store = t.store;
    if (!store || !(store.hosts || []).length) {
      el("div", { class: "jpar-muted jpar-store-na", text: "n/a (this cluster's store reports no figures)" }, storeBox);
    } else {
      const tb = el("table", {}, storeBox);
      const hr = el("tr", {}, tb);
      for (const h of ["host", "used", "capacity", "spilled"]) el("th", { text: h }, hr);
      for (const h of store.hosts) {
        const tr = el("tr", {}, tb);
        for (const v of [h.host, fmtBytes(h.used), fmtBytes(h.capacity), fmtBytes(h.spilled)]) el("td", { text: v }, tr);
      }
      if ((store.largest || []).length) {
        el("div", { class: "jpar-muted", text: "largest objects" }, storeBox);
        for (const o of store.largest) el("div", { text: `${o.id} ${fmtBytes(o.size)} ${o.owner}` }, storeBox);
      }
    }
    actorsBox.replaceChildren();
    const actors = t.actors || [];
    el("div", { text: `Actors (${actors.length})`, style: "font-weight:600;margin-top:6px" }, actorsBox);
    for (const a of actors) {
      const calls = Object.entries(a.calls || {}).map(([s, n]) => `${s} ${n}`).join(", ");
      el("div", { class: "jpar-actor", "data-actor": a.id, "data-state": a.state,
        text: `${a.class}${a.name ? " '" + a.name + "'" : ""} · ${a.state}${calls ? " · calls: " + calls : ""}` }, actorsBox);
    }
    if (t.stamp) box.setAttribute("data-latency-ms", String(Math.round(Date.now() - t.stamp * 1000)));
    box.setAttribute("data-updates", String((Number(box.getAttribute("data-updates")) || 0) + 1));
  }

  let graphVersion = null;
  function onGraph() {
    const g = model.get("graph") || {};
    if (g.version === graphVersion && g.mode === mode) return;
    graphVersion = g.version;
    drawGraph();
  }
  onGraph(); drawEngines(); drawTotals();
  model.on("change:graph", onGraph);
  model.on("change:states", paintStates);
  model.on("change:engines", drawEngines);
  model.on("change:totals", drawTotals);
  model.on("change:status", drawTotals);
  return () => {
    model.off("change:graph", onGraph);
    model.off("change:states", paintStates);
    model.off("change:engines", drawEngines);
    model.off("change:totals", drawTotals);
    model.off("change:status", drawTotals);
  };
}

export default { render };
