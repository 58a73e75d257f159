// jpar dashboard front end (anywidget ES module, no build step, no CDN).
// Traits from Python (jpar/notebook/dashboard.py):
//   graph {mode, nodes:[[id,label,x,y,kind]], edges:[[i,j]], lanes:[[key,label,row]], expanded, version}
//     kind: "task", "call" (an actor's call, on its actor's lane), "function" or "actor" (a group)
//   states (tasks: {id:[state, engine, seconds, error, start, end, wait, fetch, args]}, args [pickled bytes,
//     [[ref id, bytes|null]]] or null; groups: {key:[{state:n}, mean seconds]})
//   stream {now, window, rows:[[row, label]], names, bars:[[row, start, end|null, name index, task id, state, n,
//     ready|null, fetch, wait]]} (a row is an engine id, or an actor's key for calls run in the actor's own
//     process; ready: when the bar's first task became ready, drawn as a thin wait strip under the bar;
//     fetch: seconds fetching ref arguments, drawn hatched over the start of the bar)
//   engines [{id, node, pid, cpu, rss, shared, heap, task, hist_cpu, hist_heap}], totals {...}, status.
// The graph is drawn in graph units (1 unit = 1 px at zoom 1) inside <g class="jpar-viewport">, whose
// transform is the zoom and pan: wheel (with the graph focused, or Ctrl), drag, the +/-/fit/1:1
// buttons, and keys + - 0 (default view) f (fit) and the arrows.

const STATES = ["waiting", "queued", "assigned", "running", "done", "failed", "cancelled"];
const COLOURS = {
  waiting: "#bdbdbd", queued: "#9ecae1", assigned: "#4292c6", running: "#fd8d3c",
  done: "#41ab5d", failed: "#d62728", cancelled: "#737373",
};
const SVGNS = "http://www.w3.org/2000/svg";
const FONT = 12;                 // label size in graph units
const MIN_READABLE = 10 / FONT;  // the default zoom never shows labels under 10 px
const DY = 34;                   // row spacing of the task view
const GX = 240, GY = 70;         // grid unit -> graph units in the group view
const MAX_LABEL = 48;            // longer names are cut on the node (the tooltip has them whole)

const CSS = `
.jpar-dash { --jpar-fg: var(--jp-ui-font-color1, var(--vscode-editor-foreground, #222));
  --jpar-fg2: var(--jp-ui-font-color2, var(--vscode-descriptionForeground, #666));
  --jpar-bg: var(--jp-layout-color0, var(--vscode-editor-background, #fff));
  --jpar-bg1: var(--jp-layout-color1, var(--vscode-editorWidget-background, #fff));
  --jpar-bg2: var(--jp-layout-color2, var(--vscode-input-background, #eee));
  --jpar-line: var(--jp-border-color1, var(--vscode-editorWidget-border, #bdbdbd));
  --jpar-line2: var(--jp-border-color2, var(--vscode-editorWidget-border, #ddd));
  --jpar-wait: var(--jp-ui-font-color2, var(--vscode-descriptionForeground, #757575));
  --jpar-transfer: var(--jp-error-color1, var(--vscode-errorForeground, #d32f2f));
  font: 12px/1.35 var(--jp-ui-font-family, var(--vscode-font-family, sans-serif)); color: var(--jpar-fg);
  border: 1px solid var(--jpar-line2); border-radius: 4px; padding: 6px; position: relative; }
.jpar-dash .jpar-head { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 4px; }
.jpar-dash .jpar-chip { padding: 1px 6px; border-radius: 9px; color: #fff; font-weight: 600; }
.jpar-dash .jpar-muted { color: var(--jpar-fg2); }
.jpar-dash .jpar-main { display: flex; gap: 8px; }
.jpar-dash .jpar-dagbox { flex: 1 1 auto; min-width: 0; border: 1px solid var(--jp-border-color3, var(--jpar-line2));
  border-radius: 3px; height: 380px; background: var(--jpar-bg); position: relative; overflow: hidden; outline: none; }
.jpar-dash .jpar-dagbox:focus { border-color: var(--jp-brand-color1, #2196f3); }
.jpar-dash svg.jpar-dag { width: 100%; height: 100%; display: block; cursor: grab; touch-action: none; }
.jpar-dash svg.jpar-dag.jpar-panning { cursor: grabbing; }
.jpar-dash .jpar-tools { position: absolute; top: 4px; right: 4px; display: flex; gap: 2px; }
.jpar-dash .jpar-tools button { min-width: 24px; }
.jpar-dash .jpar-empty { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  text-align: center; padding: 24px; color: var(--jpar-fg2); font-size: 13px; pointer-events: none; }
.jpar-dash .jpar-side { flex: 0 0 300px; max-height: 380px; overflow-y: auto; }
.jpar-dash .jpar-engine { margin-bottom: 6px; }
.jpar-dash .jpar-bar { position: relative; height: 10px; background: var(--jpar-bg2);
  border-radius: 2px; overflow: hidden; margin: 1px 0; }
.jpar-dash .jpar-bar > div { position: absolute; top: 0; bottom: 0; left: 0; transition: width 0.2s; }
.jpar-dash .jpar-cpu-fill { background: #fd8d3c; }
.jpar-dash .jpar-heap-fill { background: #6a51a3; }
.jpar-dash .jpar-shared-fill { background: #bcbddc; }
.jpar-dash .jpar-tip { position: absolute; pointer-events: none; background: var(--jpar-bg1);
  color: var(--jpar-fg); border: 1px solid var(--jpar-line);
  box-shadow: var(--jp-elevation-z4, 0 2px 4px rgba(0,0,0,0.3));
  padding: 4px 6px; border-radius: 3px; white-space: pre-wrap; display: none; z-index: 10; max-width: 420px;
  overflow-wrap: anywhere; }
.jpar-dash .jpar-details { white-space: pre-wrap; margin-top: 4px; font-family: var(--jp-code-font-family, monospace);
  overflow-wrap: anywhere; }
.jpar-dash table { border-collapse: collapse; }
.jpar-dash td, .jpar-dash th { padding: 0 6px 0 0; text-align: left; }
.jpar-dash .jpar-object { margin: 2px 0; }
.jpar-dash .jpar-object > div { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.jpar-dash .jpar-object-top { display: flex; gap: 6px; }
.jpar-dash .jpar-made-by { overflow: hidden; text-overflow: ellipsis; flex: 1 1 auto; }
.jpar-dash .jpar-size { flex: none; }
.jpar-dash button { font-size: 11px; color: var(--jpar-fg); background: var(--jpar-bg2);
  border: 1px solid var(--jpar-line); border-radius: 2px; cursor: pointer; }
.jpar-dash button:disabled { opacity: 0.5; cursor: not-allowed; }
.jpar-dash button:focus-visible { outline: 2px solid var(--jp-brand-color1, #2196f3); outline-offset: 1px; }
.jpar-dash .jpar-free { flex: none; padding: 0 4px; }
.jpar-dash .jpar-node { cursor: pointer; }
.jpar-dash .jpar-edge { stroke: var(--jpar-line); }
.jpar-dash .jpar-task-dot { stroke: var(--jpar-fg); }
.jpar-dash .jpar-node:hover .jpar-task-dot, .jpar-dash .jpar-node.jpar-pinned .jpar-task-dot { stroke-width: 2.5; }
.jpar-dash .jpar-label { fill: var(--jpar-fg); }
.jpar-dash .jpar-label-dim { fill: var(--jpar-fg2); }
.jpar-dash .jpar-lane { fill: var(--jpar-bg2); opacity: 0.6; }
.jpar-dash .jpar-lane-label { fill: #6a51a3; font-weight: 600; }
.jpar-dash .jpar-group-box { fill: var(--jpar-bg1); stroke: var(--jpar-fg2); }
.jpar-dash .jpar-group-box[data-kind="actor"] { stroke: #6a51a3; }
.jpar-dash line.jpar-edge.jpar-critical { stroke: #e6550d; stroke-width: 3.5; }
.jpar-dash .jpar-node.jpar-critical .jpar-task-dot, .jpar-dash .jpar-node.jpar-critical .jpar-group-box
  { stroke: #e6550d; stroke-width: 3.5; }
.jpar-dash .jpar-tools button.jpar-on { background: #e6550d; color: #fff; }
.jpar-dash .jpar-streambox { margin-top: 6px; border: 1px solid var(--jp-border-color3, var(--jpar-line2));
  border-radius: 3px; background: var(--jpar-bg); position: relative; }
.jpar-dash svg.jpar-stream { width: 100%; display: block; }
.jpar-dash .jpar-stream-row { fill: var(--jpar-bg2); opacity: 0.5; }
.jpar-dash .jpar-stream-bar { stroke: var(--jpar-bg); stroke-width: 0.5; }
.jpar-dash .jpar-stream-wait, .jpar-dash .jpar-legend-wait { fill: var(--jpar-wait); opacity: 0.8; }
.jpar-dash .jpar-legend-run { fill: var(--jpar-fg2); }
.jpar-dash .jpar-hatch-bg { fill: var(--jpar-bg); }
.jpar-dash .jpar-hatch-line { stroke: var(--jpar-transfer); }
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

function fmtClock(t) {
  if (!t) return "-";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// a stable colour per function name (the same name gets the same colour in every view and session)
function nameColour(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${h % 360}, 60%, 52%)`;
}

// a task's argument sizes: its pickled arguments, then each ref argument's value (where known)
function describeArgs(args) {
  if (!args) return "";
  let s = args[0] !== null && args[0] !== undefined ? `\narguments: ${fmtBytes(args[0])} pickled` : "";
  const refs = args[1] || [];
  refs.slice(0, 8).forEach(([ref, size]) => {
    s += `\n  ref ${ref}: ${size === null || size === undefined ? "size not known" : fmtBytes(size)}`;
  });
  if (refs.length > 8) s += `\n  … and ${refs.length - 8} more refs`;
  return s;
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

// Place the tooltip near (x, y) (px inside `box`) but wholly inside the box: flipped left or up
// when it would run past the right or bottom edge.
function placeTip(tip, box, x, y) {
  const bw = box.clientWidth, bh = box.clientHeight;
  const tw = tip.offsetWidth, th = tip.offsetHeight;
  let left = x + 14, top = y + 14;
  if (left + tw > bw - 2) left = Math.max(2, x - tw - 10);
  if (top + th > bh - 2) top = Math.max(2, y - th - 10);
  tip.style.left = left + "px";
  tip.style.top = top + "px";
}

function render({ model, el: root }) {
  el("style", { text: CSS }, root);
  const box = el("div", { class: "jpar-dash" }, root);
  const head = el("div", { class: "jpar-head" }, box);
  const main = el("div", { class: "jpar-main" }, box);
  // data-lm-suppress-shortcuts: JupyterLab's shortcuts (0 0 restarts the kernel!) leave our keys alone
  const dagbox = el("div", { class: "jpar-dagbox", tabindex: "0", "data-lm-suppress-shortcuts": "true",
    "aria-label": "task graph: + and - zoom, 0 resets, f fits, arrows pan" }, main);
  const svg = el("svg", { class: "jpar-dag" }, dagbox, SVGNS);
  const view = el("g", { class: "jpar-viewport" }, svg, SVGNS);
  const laneLayer = el("g", { class: "jpar-lanes" }, view, SVGNS);
  const edgeLayer = el("g", { class: "jpar-edges" }, view, SVGNS);
  const nodeLayer = el("g", { class: "jpar-nodes" }, view, SVGNS);
  const empty = el("div", { class: "jpar-empty", text: "Tasks you submit appear here as a graph: one node per " +
    "task, an arrow for each ref passed to another task, each actor's calls on a lane of their own. " +
    "Past a few hundred tasks they are grouped by function; click a group to open it." }, dagbox);
  const tools = el("div", { class: "jpar-tools" }, dagbox);
  const side = el("div", { class: "jpar-side" }, main);
  const enginesBox = el("div", { class: "jpar-engines" }, side);
  // its "free" buttons take Enter and Space themselves: JupyterLab's shortcuts leave them alone
  const storeBox = el("div", { class: "jpar-store", "data-lm-suppress-shortcuts": "true" }, side);
  const actorsBox = el("div", { class: "jpar-actors" }, side);
  const streamBox = el("div", { class: "jpar-streambox" }, box);
  const streamSvg = el("svg", { class: "jpar-stream" }, streamBox, SVGNS);
  const details = el("div", { class: "jpar-details jpar-muted" }, box);
  const tip = el("div", { class: "jpar-tip" }, box);

  let nodeEls = new Map();     // id -> {g, shape, bars, count, kind}
  let nodeInfo = new Map();    // id -> [label, kind]
  let mode = "tasks";
  let pinned = null;
  let extent = { x0: 0, y0: 0, x1: 1, y1: 1 };   // the graph's bounding box in graph units
  let zoom = { k: 1, x: 0, y: 0 };
  let userMoved = false;       // after a zoom or pan, new graphs keep the user's view
  let edgeEls = [];            // [from index, to index, line]
  let showCritical = false;
  const freeing = new Map();   // object id -> when its "free" was clicked: its row goes with an update soon

  // ---------------------------------------------------------------- details
  function describe(id) {
    const info = nodeInfo.get(id);
    if (!info) return "";
    const st = (model.get("states") || {})[id];
    const [label, kind] = info;
    if (kind === "function" || kind === "actor") {
      const counts = st ? st[0] : {};
      const parts = STATES.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`);
      const open = (model.get("graph") || {}).expanded === id;
      return `${label}  (${kind === "actor" ? "actor" : "function"})\n${parts.join(", ") || "no tasks"}` +
        `\nmean duration ${fmtSecs(st ? st[1] : null)}\n${open ? "click to fold its tasks" : "click to show its tasks"}`;
    }
    let s = `function: ${label}\ntask: ${id}${kind === "call" ? " (actor call)" : ""}`;
    if (!st) return s;
    const [state, engine, secs, err, start, end, wait, fetch, args] = st;
    s += `\nstate: ${state}`;
    if (engine !== null && engine !== undefined && engine >= 0) s += `\nengine: ${engine}`;
    if (start) s += `\nstarted: ${fmtClock(start)}`;
    if (end) s += `\nended: ${fmtClock(end)}`;
    if (secs !== null && secs !== undefined) s += `\n${state === "running" ? "running for" : "duration"}: ${fmtSecs(secs)}`;
    if (wait !== null && wait !== undefined) s += start ? `\nwaited: ${fmtSecs(wait)} (ready → started)` : `\nqueued for: ${fmtSecs(wait)}`;
    if (fetch) s += `\nfetching arguments: ${fmtSecs(fetch)} (transfer)`;
    s += describeArgs(args);
    if (err) s += `\nerror: ${err}`;
    return s;
  }

  function showTip(text, ev) {
    tip.textContent = text;
    tip.style.display = "block";
    const r = box.getBoundingClientRect();
    placeTip(tip, box, ev.clientX - r.left, ev.clientY - r.top);
  }

  function pin(id) {
    if (pinned && nodeEls.get(pinned)) nodeEls.get(pinned).g.classList.remove("jpar-pinned");
    pinned = pinned === id ? null : id;
    if (pinned && nodeEls.get(pinned)) nodeEls.get(pinned).g.classList.add("jpar-pinned");
    details.textContent = pinned ? describe(pinned) : "";
    details.setAttribute("data-id", pinned || "");
  }

  // ---------------------------------------------------------------- zoom and pan
  function apply() {
    view.setAttribute("transform", `translate(${zoom.x.toFixed(1)},${zoom.y.toFixed(1)}) scale(${zoom.k.toFixed(4)})`);
    svg.setAttribute("data-zoom", zoom.k.toFixed(4));
  }
  function fitScale() {
    const w = dagbox.clientWidth || 600, h = dagbox.clientHeight || 380;
    return Math.min(w / (extent.x1 - extent.x0), h / (extent.y1 - extent.y0), 2);
  }
  function centre(k) {
    const w = dagbox.clientWidth || 600, h = dagbox.clientHeight || 380;
    zoom = { k, x: (w - k * (extent.x1 + extent.x0)) / 2, y: (h - k * (extent.y1 + extent.y0)) / 2 };
  }
  function fit() { centre(fitScale()); apply(); }
  // the default view: the whole graph if it fits with labels >= 10 px, else its top-left corner at that size
  function home() {
    const k = Math.min(1, Math.max(fitScale(), MIN_READABLE));
    centre(k);
    if (k > fitScale()) {
      const w = dagbox.clientWidth || 600, h = dagbox.clientHeight || 380;
      if (k * (extent.x1 - extent.x0) > w) zoom.x = -k * extent.x0;
      if (k * (extent.y1 - extent.y0) > h) zoom.y = -k * extent.y0;
    }
    apply();
  }
  function zoomAt(factor, px, py) {
    const k = Math.min(8, Math.max(0.02, zoom.k * factor));
    const f = k / zoom.k;
    zoom = { k, x: px - (px - zoom.x) * f, y: py - (py - zoom.y) * f };
    userMoved = true;
    apply();
  }
  function zoomCentre(factor) { zoomAt(factor, (dagbox.clientWidth || 600) / 2, (dagbox.clientHeight || 380) / 2); }
  function pan(dx, dy) { zoom.x += dx; zoom.y += dy; userMoved = true; apply(); }

  for (const [text, title, act] of [["−", "zoom out (-)", () => zoomCentre(1 / 1.25)],
    ["+", "zoom in (+)", () => zoomCentre(1.25)], ["fit", "show the whole graph (f)", () => { userMoved = true; fit(); }],
    ["1:1", "the default view: labels at least 10 px (0)", () => { userMoved = false; home(); }],
    ["critical path", "highlight the chain of dependent tasks that took longest (c)", () => toggleCritical()]]) {
    const b = el("button", { text, title, class: text === "critical path" ? "jpar-critical-button" :
      "jpar-zoom-" + (text === "−" ? "out" : text === "+" ? "in" : text === "fit" ? "fit" : "home") }, tools);
    b.addEventListener("click", (ev) => { ev.stopPropagation(); act(); });
    b.addEventListener("pointerdown", (ev) => ev.stopPropagation());
  }
  svg.addEventListener("wheel", (ev) => {
    // the page scrolls unless the graph has the focus (a click on it) or Ctrl is held
    if (document.activeElement !== dagbox && !ev.ctrlKey) return;
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    dagbox.focus({ preventScroll: true });
    drag = { x: ev.clientX, y: ev.clientY, moved: false, id: ev.pointerId };
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) { drag.moved = true; svg.setPointerCapture(drag.id); svg.classList.add("jpar-panning"); tip.style.display = "none"; }
    drag.x = ev.clientX; drag.y = ev.clientY;
    pan(dx, dy);
  });
  const endDrag = () => {
    if (drag && drag.moved) { svg.classList.remove("jpar-panning"); suppressClick = true; setTimeout(() => { suppressClick = false; }, 0); }
    drag = null;
  };
  let suppressClick = false;
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  dagbox.addEventListener("keydown", (ev) => {
    const keys = { "+": () => zoomCentre(1.25), "=": () => zoomCentre(1.25), "-": () => zoomCentre(1 / 1.25),
      "0": () => { userMoved = false; home(); }, f: () => { userMoved = true; fit(); },
      ArrowLeft: () => pan(60, 0), ArrowRight: () => pan(-60, 0), ArrowUp: () => pan(0, 60), ArrowDown: () => pan(0, -60),
      c: () => toggleCritical(), Escape: () => { if (pinned) pin(pinned); } };
    const act = keys[ev.key];
    if (!act || ev.altKey || ev.metaKey || ev.ctrlKey) return;
    ev.preventDefault();
    ev.stopPropagation();
    act();
  });

  // ---------------------------------------------------------------- the graph
  function drawGraph() {
    const g = model.get("graph") || {};
    mode = g.mode || "tasks";
    const nodes = g.nodes || [], edges = g.edges || [], lanes = g.lanes || [];
    nodeEls = new Map(); nodeInfo = new Map();
    tip.style.display = "none";      // its node may be gone (a hovered node gets no mouseleave then)
    laneLayer.replaceChildren(); edgeLayer.replaceChildren(); nodeLayer.replaceChildren();
    svg.setAttribute("data-mode", mode);
    svg.setAttribute("data-nodes", String(nodes.length));
    empty.style.display = nodes.length ? "none" : "flex";
    tools.style.display = nodes.length ? "flex" : "none";
    // columns as wide as the longest label needs (full names, up to MAX_LABEL characters)
    // full names everywhere (up to MAX_LABEL characters); an actor's lane has a spacing of its own
    const shown = (n) => n[1];
    const width = (len) => Math.max(90, Math.min(420, Math.min(MAX_LABEL, len) * FONT * 0.6 + 40));
    let longest = 4, longestCall = 4;
    for (const n of nodes) {
      if (n[4] === "task") longest = Math.max(longest, n[1].length);
      else if (n[4] === "call") longestCall = Math.max(longestCall, shown(n).length);
    }
    const dx = mode === "groups" ? GX : width(longest), cdx = width(longestCall);
    const sy = mode === "groups" ? GY : DY;
    const sxOf = (n) => (n[4] === "call" ? cdx : dx);
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of nodes) {
      const grouped = n[4] === "function" || n[4] === "actor";
      const sx = sxOf(n);
      const hw = grouped ? 105 : 12, right = grouped ? 105 : sx - 12;
      x0 = Math.min(x0, n[2] * sx - hw); x1 = Math.max(x1, n[2] * sx + right);
      y0 = Math.min(y0, n[3] * sy - (grouped ? 26 : 14)); y1 = Math.max(y1, n[3] * sy + (grouped ? 40 : 14));
    }
    if (lanes.length) { x0 -= 10; y0 = Math.min(y0, Math.min(...lanes.map((l) => l[2])) * sy - 30); }
    extent = nodes.length ? { x0: x0 - 16, y0: y0 - 16, x1: x1 + 16, y1: y1 + 16 } : { x0: 0, y0: 0, x1: 1, y1: 1 };
    for (const [key, label, row] of lanes) {
      el("rect", { class: "jpar-lane", x: extent.x0, y: row * sy - 17, width: extent.x1 - extent.x0, height: 34,
        "data-lane": key }, laneLayer, SVGNS);
      el("text", { class: "jpar-lane-label", x: extent.x0 + 4, y: row * sy - 21, "font-size": FONT, text: label },
        laneLayer, SVGNS);
    }
    edgeEls = [];
    for (const [a, b] of edges) {
      const na = nodes[a], nb = nodes[b];
      if (!na || !nb) continue;
      // an edge to the right leaves after the source's label, not through it
      const ax = na[2] * sxOf(na), bx = nb[2] * sxOf(nb);
      const tail = (na[4] === "task" || na[4] === "call") && bx > ax + 40
        ? Math.min(bx - ax - 20, 16 + Math.min(MAX_LABEL, shown(na).length) * FONT * 0.58) : 0;
      edgeEls.push([a, b, el("line", { x1: ax + tail, y1: na[3] * sy, x2: bx, y2: nb[3] * sy,
        class: "jpar-edge", "stroke-width": mode === "groups" ? 1.5 : 1 }, edgeLayer, SVGNS)]);
    }
    for (const n of nodes) {
      const [id, label, x, y, kind] = n;
      nodeInfo.set(id, [label, kind]);
      const grp = el("g", { class: "jpar-node", "data-id": id, "data-kind": kind,
        transform: `translate(${x * sxOf(n)},${y * sy})` }, nodeLayer, SVGNS);
      let shape, bars = null, count = null;
      if (kind === "function" || kind === "actor") {
        shape = el("rect", { x: -105, y: -24, width: 210, height: 46, rx: 6, class: "jpar-group-box",
          "data-kind": kind, "stroke-width": g.expanded === id ? 3 : 1.5 }, grp, SVGNS);
        // "f @ cell [3], line 2": a function's group per call site; the site goes on a line of its own
        const at = label.indexOf(" @ "), name = at < 0 ? label : label.slice(0, at);
        el("text", { x: 0, y: -8, "text-anchor": "middle", "font-size": FONT, "font-weight": 600, class: "jpar-label",
          text: name.length > 30 ? name.slice(0, 29) + "…" : name }, grp, SVGNS);
        bars = el("g", {}, grp, SVGNS);
        count = el("text", { x: 0, y: 36, "text-anchor": "middle", "font-size": 10.5, class: "jpar-label-dim" },
          grp, SVGNS);
        if (at >= 0) {
          const site = label.slice(at + 3);
          el("text", { x: 0, y: 20.5, "text-anchor": "middle", "font-size": 9.5, class: "jpar-label-dim jpar-site",
            text: site.length > 40 ? site.slice(0, 39) + "…" : site }, grp, SVGNS);
        }
      } else {
        shape = el("circle", { r: 10, fill: COLOURS.waiting, class: "jpar-task-dot", "stroke-width": 0.8 }, grp, SVGNS);
        const text = shown(n);
        el("text", { x: 14, y: 4, "font-size": FONT, class: "jpar-label",
          text: text.length > MAX_LABEL ? text.slice(0, MAX_LABEL - 1) + "…" : text }, grp, SVGNS);
      }
      grp.addEventListener("mouseenter", (ev) => { if (!drag || !drag.moved) showTip(describe(id), ev); });
      grp.addEventListener("mousemove", (ev) => {
        const r = box.getBoundingClientRect();
        placeTip(tip, box, ev.clientX - r.left, ev.clientY - r.top);
      });
      grp.addEventListener("mouseleave", () => { tip.style.display = "none"; });
      grp.addEventListener("click", () => {
        if (suppressClick) return;
        if (kind === "function" || kind === "actor") model.send({ type: "expand", key: id });
        pin(id);
      });
      nodeEls.set(id, { g: grp, shape, bars, count, kind });
    }
    if (!userMoved) home(); else apply();
    if (pinned && !nodeEls.has(pinned)) pin(pinned);
    else if (pinned) nodeEls.get(pinned).g.classList.add("jpar-pinned");
    paintStates();
  }

  function paintStates() {
    const states = model.get("states") || {};
    for (const [id, ne] of nodeEls) {
      const st = states[id];
      if (ne.kind === "function" || ne.kind === "actor") {
        const counts = st ? st[0] : {};
        const total = STATES.reduce((a, s) => a + (counts[s] || 0), 0) || 1;
        ne.bars.replaceChildren();
        let x = -101;
        const title = [];
        for (const s of STATES) {
          const c = counts[s] || 0;
          if (!c) continue;
          const w = (202 * c) / total;
          el("rect", { x, y: 2, width: Math.max(w, 0.5), height: 10, fill: COLOURS[s], class: "jpar-count",
            "data-state": s, "data-count": String(c) }, ne.bars, SVGNS);
          x += w;
          title.push(`${s} ${c}`);
        }
        ne.count.textContent = title.join(" · ");
        const lead = ["failed", "running", "assigned", "queued", "waiting", "done", "cancelled"].find((s) => counts[s]);
        ne.g.setAttribute("data-state", lead || "none");
      } else {
        const state = st ? st[0] : "waiting";
        if (ne.g.getAttribute("data-state") !== state) {
          ne.g.setAttribute("data-state", state);
          ne.shape.setAttribute("fill", COLOURS[state] || "#ccc");
        }
      }
    }
    if (pinned) details.textContent = describe(pinned);
    if (showCritical) paintCritical();
  }

  // ---------------------------------------------------------------- the critical path
  // The chain of dependent nodes whose durations add up to the most (tasks: their run time so far;
  // groups: their mean task's), found in topological order; nodes on a cycle (possible between groups) are left out.
  function criticalPath() {
    const g = model.get("graph") || {}, states = model.get("states") || {};
    const nodes = g.nodes || [], n = nodes.length;
    // (+1 ns each: among equally long chains the longer one wins, e.g. through tasks too quick to time)
    const weight = nodes.map((nd) => {
      const st = states[nd[0]];
      if (!st) return 1e-9;
      return 1e-9 + ((nd[4] === "function" || nd[4] === "actor") ? (st[1] || 0) : (st[2] || 0));
    });
    const succ = nodes.map(() => []), indeg = new Array(n).fill(0);
    for (const [a, b] of g.edges || []) { if (a !== b && a < n && b < n) { succ[a].push(b); indeg[b]++; } }
    const best = weight.slice(), prev = new Array(n).fill(-1), ready = [];
    for (let i = 0; i < n; i++) if (!indeg[i]) ready.push(i);
    let top = -1;
    while (ready.length) {
      const i = ready.pop();
      if (top < 0 || best[i] > best[top]) top = i;
      for (const j of succ[i]) {
        if (prev[j] < 0 || best[i] + weight[j] > best[j]) { best[j] = best[i] + weight[j]; prev[j] = i; }
        if (--indeg[j] === 0) ready.push(j);
      }
    }
    const path = [];
    for (let i = top; i >= 0; i = prev[i]) path.unshift(i);
    return { path, seconds: top >= 0 ? best[top] : 0 };
  }
  function paintCritical() {
    for (const ne of nodeEls.values()) ne.g.classList.remove("jpar-critical");
    for (const [, , line] of edgeEls) line.classList.remove("jpar-critical");
    svg.removeAttribute("data-critical");
    if (!showCritical) return;
    const { path, seconds } = criticalPath();
    const ids = (model.get("graph") || {}).nodes || [];
    const on = new Set(path);
    for (const i of path) { const ne = nodeEls.get(ids[i][0]); if (ne) ne.g.classList.add("jpar-critical"); }
    for (const [a, b, line] of edgeEls) if (on.has(a) && on.has(b) && path.indexOf(b) === path.indexOf(a) + 1) line.classList.add("jpar-critical");
    svg.setAttribute("data-critical", `${path.length} ${seconds.toFixed(4)}`);
    critButton().title = `critical path: ${fmtSecs(seconds)} over ${path.length} node${path.length === 1 ? "" : "s"} (c)`;
  }
  function critButton() { return tools.querySelector(".jpar-critical-button"); }
  function toggleCritical() {
    showCritical = !showCritical;
    critButton().classList.toggle("jpar-on", showCritical);
    paintCritical();
    if (showCritical) {       // bring the path into view, at the current zoom
      const on = Array.from(nodeEls.values()).filter((ne) => ne.g.classList.contains("jpar-critical"));
      if (!on.length) return;
      const ms = on.map((ne) => ne.g.transform.baseVal[0].matrix);
      const w = dagbox.clientWidth || 600, h = dagbox.clientHeight || 380;
      const x0 = Math.min(...ms.map((m) => m.e)), x1 = Math.max(...ms.map((m) => m.e));
      const y0 = Math.min(...ms.map((m) => m.f)), y1 = Math.max(...ms.map((m) => m.f));
      // centred if it fits, else its start (the leftmost node) near the left edge
      zoom.x = zoom.k * (x1 - x0) < w - 120 ? w / 2 - zoom.k * (x0 + x1) / 2 : 40 - zoom.k * x0;
      zoom.y = zoom.k * (y1 - y0) < h - 60 ? h / 2 - zoom.k * (y0 + y1) / 2 : 40 - zoom.k * y0;
      userMoved = true;
      apply();
    }
  }

  // ---------------------------------------------------------------- the task stream
  let streamAt = 0;            // local clock (s) when the last stream snapshot arrived
  const ROW = 24, AXIS = 18, LEFT = 120, BAR = 15, LEGEND = 16;
  // transfers are hatched; the pattern's id is this widget's own (several dashboards may share a page)
  const hatch = "jpar-hatch-" + Math.random().toString(36).slice(2);
  function drawStream() {
    const s = model.get("stream") || {};
    const rows = s.rows || [], bars = s.bars || [], names = s.names || [], win = s.window || 60;
    const w = Math.max(200, streamBox.clientWidth || 800);
    const h = AXIS + Math.max(1, rows.length) * ROW + LEGEND + 4;
    streamSvg.setAttribute("height", String(h));
    streamSvg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    streamSvg.setAttribute("data-bars", String(bars.length));
    streamSvg.replaceChildren();
    const pat = el("pattern", { id: hatch, width: 4, height: 4, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" }, el("defs", {}, streamSvg, SVGNS), SVGNS);
    el("rect", { class: "jpar-hatch-bg", width: 4, height: 4 }, pat, SVGNS);
    el("line", { class: "jpar-hatch-line", x1: 1, y1: 0, x2: 1, y2: 4, "stroke-width": 2 }, pat, SVGNS);
    const age = streamAt ? Date.now() / 1000 - streamAt : 0;   // time since the snapshot: the picture moves on
    const span = w - LEFT - 6;
    const xOf = (t) => LEFT + Math.max(0, Math.min(span, ((t - age + win) / win) * span));
    const sampled = (model.get("totals") || {}).sampled;   // summary stream: past 500 new tasks/s, a sample
    el("text", { x: 4, y: 12, "font-size": 11, class: "jpar-label",
      text: sampled ? "task stream (a sample: past 500 new tasks a second)" : "task stream" }, streamSvg, SVGNS);
    for (let sec = 0; sec < win; sec += win >= 60 ? 10 : 5) {
      const x = LEFT + span - (sec / win) * span;
      el("text", { x, y: 12, "font-size": 10, "text-anchor": "middle", class: "jpar-label-dim",
        text: sec ? `-${sec}s` : "now" }, streamSvg, SVGNS);
    }
    if (!rows.length) {
      el("text", { x: LEFT, y: AXIS + 14, "font-size": 11, class: "jpar-label-dim",
        text: "each engine's tasks of the last minute appear here as bars, coloured by function" }, streamSvg, SVGNS);
    }
    // the legend: run (the function's colour), wait (ready -> start), transfer (fetching ref arguments)
    const ly = AXIS + Math.max(1, rows.length) * ROW + 4;
    let lx = LEFT;
    for (const [kind, label, height] of [["run", "run (colour: function)", 10], ["wait", "wait: ready → started", 3],
      ["transfer", "transfer: fetching ref arguments", 10]]) {
      const r = el("rect", { class: `jpar-legend jpar-legend-${kind}`, x: lx, y: ly + (10 - height) / 2, width: 18, height },
        streamSvg, SVGNS);
      if (kind === "transfer") r.setAttribute("fill", `url(#${hatch})`);
      el("text", { x: lx + 22, y: ly + 9, "font-size": 10, class: "jpar-label-dim", text: label }, streamSvg, SVGNS);
      lx += 30 + label.length * 5.6;
    }
    const rowOf = new Map();
    rows.forEach(([key, label], i) => {
      rowOf.set(key, i);
      el("rect", { class: "jpar-stream-row", x: LEFT, y: AXIS + i * ROW + 1, width: span, height: ROW - 2 }, streamSvg, SVGNS);
      el("text", { x: 4, y: AXIS + i * ROW + 14, "font-size": 11, class: "jpar-label",
        text: label.length > 18 ? label.slice(0, 17) + "…" : label }, streamSvg, SVGNS).appendChild(
        el("title", { text: label }, null, SVGNS));
    });
    const hover = (e, text) => {
      e.addEventListener("mouseenter", (ev) => showTip(text(), ev));
      e.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    };
    // waits of tasks queued together overlap, each ending at its own start: drawn longest first, the
    // part of the strip just before a bar is that bar's task's (the one hovered there)
    const waitLayer = el("g", { class: "jpar-stream-waits" }, streamSvg, SVGNS), waits = [];
    for (const [eng, t0, t1, ni, tid, state, n, ready, fetch, wait] of bars) {
      const row = rowOf.get(eng);
      if (row === undefined) continue;
      const xa = xOf(t0), xb = xOf(t1 === null ? age : t1), y = AXIS + row * ROW + 2;
      const name = names[ni] || "?";
      const all = n > 1 ? ` in all (${n} tasks)` : "";
      const where = typeof eng === "string" ? (rows.find((r) => r[0] === eng) || [eng, eng])[1] : `engine ${eng}`;
      // the wait: a thin strip under the row's bars, from when the task became ready to its start
      if (ready !== null && ready !== undefined && xa - xOf(ready) >= 0.5) {
        const xr = xOf(ready);
        waits.push([xa - xr, el("rect", { class: "jpar-stream-wait", x: xr, y: y + BAR + 1.5, width: xa - xr, height: 3,
          "data-task": tid, "data-engine": String(eng), "data-wait": String(wait) }, null, SVGNS)]);
        hover(waits[waits.length - 1][1], () => `waiting: ${name}\ntask: ${tid}${n > 1 ? " (the first of " + n + ")" : ""}\nready → started on ${where}: ` +
          fmtSecs(n > 1 ? t0 - ready : wait) + `\n(queued until an engine took it, or its arguments were ready)`);
      }
      if (xb <= LEFT) continue;
      const r = el("rect", { class: "jpar-stream-bar", x: xa, y, width: Math.max(1, xb - xa),
        height: BAR, fill: state === "failed" ? COLOURS.failed : nameColour(name), "data-name": name,
        "data-engine": String(eng), "data-state": state, "data-task": tid,
        "data-wait": String(wait || 0), "data-fetch": String(fetch || 0) }, streamSvg, SVGNS);
      if (t1 === null) r.setAttribute("opacity", "0.75");
      hover(r, () => {
        const dur = (t1 === null ? age : t1) - t0;
        return `${name}${n > 1 ? `  (${n} tasks in a row)` : ""}\ntask: ${tid}\nran on: ${where}\nstate: ${state}` +
          `\n${t1 === null ? "running for" : "duration"}: ${fmtSecs(dur)}` +
          (wait ? `\nwaited: ${fmtSecs(wait)}${all} (ready → started)` : "") +
          (fetch ? `\nfetching arguments: ${fmtSecs(fetch)}${all} (transfer)` : "");
      });
      // the transfer: hatched over the start of the run (the engine fetched its ref arguments first)
      const xf = Math.min(xb, xa + (fetch || 0) / win * span);
      if (xf - xa >= 1) {
        hover(el("rect", { class: "jpar-stream-transfer", x: xa, y, width: xf - xa, height: BAR, fill: `url(#${hatch})`,
          "data-task": tid, "data-engine": String(eng), "data-fetch": String(fetch) }, streamSvg, SVGNS),
        () => `transfer: fetching the ref arguments of ${name}\ntask: ${tid}\non ${where}: ${fmtSecs(fetch)}${all}` +
          `\n(from the object store, another engine, or the copies sent with the task)`);
      }
    }
    waits.sort((a, b) => b[0] - a[0]).forEach(([, r]) => waitLayer.appendChild(r));
  }
  function onStream() { streamAt = Date.now() / 1000; drawStream(); }
  // between updates (none come while nothing changes) the stream keeps moving with the clock
  const ticker = setInterval(() => {
    const s = model.get("stream") || {};
    if ((s.bars || []).length && streamAt && Date.now() / 1000 - streamAt < (s.window || 60) + 5) drawStream();
  }, 250);

  function drawEngines() {
    const engines = model.get("engines") || [];
    enginesBox.replaceChildren();
    el("div", { text: `Engines (${engines.length})`, style: "font-weight:600" }, enginesBox);
    // memory bars against the engine's host memory where the kernel knows it (its own host), else
    // against the largest engine (then only their relative sizes mean something: the title says so)
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
      const scale = e.limit || memMax;
      const mem = el("div", { class: "jpar-bar", "data-limit": e.limit ? String(e.limit) : "", title: e.limit
        ? `heap (RSS - shared) and shared memory, of the host's ${fmtBytes(e.limit)}`
        : "heap (RSS - shared) and shared memory, relative to the largest engine (this host's memory is not reported)" }, row);
      const heap = el("div", { class: "jpar-heap-fill", "data-heap": measured ? String(e.heap) : "" }, mem);
      heap.style.width = (measured ? 100 * e.heap / scale : 0) + "%";
      const sh = el("div", { class: "jpar-shared-fill" }, mem);
      sh.style.left = (measured ? 100 * e.heap / scale : 0) + "%";
      sh.style.width = (measured ? 100 * e.shared / scale : 0) + "%";
      const ofHost = e.limit ? ` (${(100 * (e.heap + e.shared) / e.limit).toFixed(1)}% of ${fmtBytes(e.limit)})` : "";
      const figures = measured
        ? `CPU ${e.cpu.toFixed(0)}% · heap ${fmtBytes(e.heap)} · shared ${fmtBytes(e.shared)}${ofHost} `
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

    // the store is redrawn at every update: a focused "free" button gets the focus back after it
    const focused = storeBox.contains(document.activeElement) ? document.activeElement.getAttribute("data-free") : null;
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
        // named by what made them (a task, a put's call site) and the variables holding them
        el("div", { class: "jpar-muted", text: "largest objects" }, storeBox);
        const list = el("div", { class: "jpar-largest" }, storeBox);
        for (const o of store.largest) {      // two lines each: what made it and its size; who holds it, where
          const row = el("div", { class: "jpar-object", "data-id": o.id,
            title: `object ${o.id}${o.spilled ? " (spilled to disk)" : ""}` }, list);
          const top = el("div", { class: "jpar-object-top" }, row);
          el("span", { class: "jpar-made-by", text: o.made_by || `object ${o.id}` }, top);
          el("span", { class: "jpar-size", text: fmtBytes(o.size) + (o.spilled ? " on disk" : "") }, top);
          // jpar.free on the kernel's side: only objects this notebook holds a ref to (else disabled, and why)
          const free = el("button", { class: "jpar-free", "data-free": o.id, text: "free",
            "aria-label": `free ${o.made_by || "object " + o.id}`,
            title: o.freeable ? "release this object's memory now (jpar.free); its refs then raise ObjectFreedError"
              : `cannot free: ${o.why_not || "this notebook holds no ref to it"}` }, top);
          if (Date.now() - (freeing.get(o.id) || 0) < 5000) { free.disabled = true; free.textContent = "freeing…"; }
          else if (!o.freeable) free.disabled = true;
          free.addEventListener("click", () => {
            freeing.set(o.id, Date.now());
            free.disabled = true;
            free.textContent = "freeing…";
            model.send({ type: "free", id: o.id });
          });
          if (focused === o.id) free.focus();
          const sub = el("div", { class: "jpar-muted" }, row);
          if ((o.vars || []).length) {
            el("span", { text: "held by " }, sub);
            el("span", { class: "jpar-held-by", text: o.vars.join(", ") }, sub);
            el("span", { text: " · " }, sub);
          }
          el("span", { text: [o.host, o.owner].filter(Boolean).join(" · ") }, sub);
        }
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
  onGraph(); drawEngines(); drawTotals(); onStream();
  model.on("change:graph", onGraph);
  model.on("change:stream", onStream);
  model.on("change:states", paintStates);
  model.on("change:engines", drawEngines);
  model.on("change:totals", drawTotals);
  model.on("change:status", drawTotals);
  return () => {
    clearInterval(ticker);
    model.off("change:graph", onGraph);
    model.off("change:stream", onStream);
    model.off("change:states", paintStates);
    model.off("change:engines", drawEngines);
    model.off("change:totals", drawTotals);
    model.off("change:status", drawTotals);
  };
}

export default { render };
