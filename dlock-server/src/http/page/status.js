// The dlock status page: polls the JSON API about once a second and rebuilds the tables
// and the wait-for graph. Every name comes from a client and is put in the page as text
// (textContent, createTextNode, SVG text nodes), never parsed as markup.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
let refreshes = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  // Nodes are appended as they are; anything else becomes a text node (never markup).
  for (const c of children) e.append(c instanceof Node ? c : c === null || c === undefined ? "" : String(c));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function age(ms) {
  if (ms < 1000) return ms + " ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + (s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function modeText(l) {
  if (l.mode && l.requested_mode) return l.mode + "→" + l.requested_mode;
  return l.mode || l.requested_mode || "";
}

function renderStatus(st) {
  document.getElementById("version").textContent = st.version;
  const ready = document.getElementById("ready");
  ready.textContent = st.ready ? "ready" : "restart grace: " + age(st.grace_remaining_ms || 0) + " left";
  ready.className = "badge " + (st.ready ? "ready" : "grace");
  const count = (m) => Object.values(m).reduce((a, b) => a + b, 0);
  document.getElementById("summary").textContent =
    st.connections + " connections, " + st.sessions + " sessions, " + st.resources +
    " resources, " + count(st.granted) + " granted, " + count(st.converting) +
    " converting, " + count(st.waiting) + " waiting";
}

function renderResources(view) {
  const body = document.querySelector("#resources tbody");
  const rows = [];
  for (const r of view.resources) {
    const queues = [["granted", r.holders], ["converting", r.converting], ["waiting", r.waiting]];
    let first = true;
    for (const [state, locks] of queues) {
      for (const l of locks) {
        const tr = el("tr", { class: state + (first ? " first" : "") },
          el("td", { class: "resource" }, first ? r.name : ""),
          el("td", { class: "state" }, state),
          el("td", { class: "mode" }, modeText(l)),
          el("td", { class: "num session" }, "s" + l.session),
          el("td", { class: "name" }, l.session_name),
          el("td", { class: "num age" }, age(l.for_ms)),
          el("td", { class: "num token" }, l.token === null ? "–" : l.token));
        tr.dataset.resource = r.name;
        tr.dataset.state = state;
        tr.dataset.mode = modeText(l);
        tr.dataset.session = String(l.session);
        first = false;
        rows.push(tr);
      }
    }
  }
  body.replaceChildren(...rows);
  document.getElementById("resources-more").hidden = !view.next_cursor;
}

function renderSessions(view) {
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren(...view.sessions.map((s) => {
    const tr = el("tr", {},
      el("td", { class: "num" }, "s" + s.session),
      el("td", { class: "name" }, s.name),
      el("td", { class: "num lease" }, age(s.lease_remaining_ms)),
      el("td", { class: "num" }, age(s.ttl_ms)),
      el("td", { class: "num" }, s.locks),
      el("td", { class: "num" }, s.pending));
    tr.dataset.session = String(s.session);
    return tr;
  }));
  document.getElementById("sessions-more").hidden = !view.next_cursor;
}

function renderGraph(view) {
  const name = (id) => (view.names[id] !== undefined ? view.names[id] : "s" + id);
  // Edges of recent cycles: victim -> s1 -> ... -> sk -> victim; the first is the refused
  // request (no longer in the graph).
  const cycleEdges = new Map();
  const cycleNodes = new Set();
  for (const c of view.cycles) {
    const s = c.sessions;
    for (let i = 0; i < s.length && s.length > 1; i++) {
      cycleEdges.set(s[i] + ">" + s[(i + 1) % s.length], i === 0);
      cycleNodes.add(s[i]);
    }
  }
  const edges = view.edges.map((e) => ({ from: e.waiter, to: e.holder }));
  const present = new Set(edges.map((e) => e.from + ">" + e.to));
  for (const [key, refused] of cycleEdges) {
    if (!present.has(key)) {
      const [from, to] = key.split(">").map(Number);
      edges.push({ from, to, refused });
    }
  }
  const ids = [...new Set(edges.flatMap((e) => [e.from, e.to]))].sort((a, b) => a - b);
  const W = 640, H = 360, R = 22;
  const pos = new Map();
  ids.forEach((id, i) => {
    const a = (2 * Math.PI * i) / Math.max(ids.length, 1) - Math.PI / 2;
    const rad = ids.length > 1 ? Math.min(W, H) / 2 - 50 : 0;
    pos.set(id, { x: W / 2 + rad * Math.cos(a), y: H / 2 + rad * Math.sin(a) });
  });
  const gEdges = document.getElementById("graph-edges");
  const gNodes = document.getElementById("graph-nodes");
  const lines = [];
  const keys = new Set(edges.map((e) => e.from + ">" + e.to));
  for (const e of edges) {
    const p = pos.get(e.from), q = pos.get(e.to);
    if (e.from === e.to) continue;
    const dx = q.x - p.x, dy = q.y - p.y, d = Math.hypot(dx, dy) || 1;
    const key = e.from + ">" + e.to;
    // Two sessions waiting for each other: the two arrows side by side, not on one line.
    const both = keys.has(e.to + ">" + e.from) ? 5 : 0;
    const ox = (-dy / d) * both, oy = (dx / d) * both;
    const inCycle = cycleEdges.has(key);
    const line = svg("line", {
      x1: p.x + (dx / d) * R + ox, y1: p.y + (dy / d) * R + oy,
      x2: q.x - (dx / d) * R + ox, y2: q.y - (dy / d) * R + oy,
      class: "edge" + (inCycle ? " cycle" : "") + (e.refused ? " refused" : ""),
      "marker-end": inCycle ? "url(#arrow-cycle)" : "url(#arrow)",
      "data-from": e.from, "data-to": e.to,
    });
    const title = svg("title");
    title.textContent = name(e.from) + " waits for " + name(e.to) + (e.refused ? " (refused: deadlock)" : "");
    line.append(title);
    lines.push(line);
  }
  gEdges.replaceChildren(...lines);
  gNodes.replaceChildren(...ids.map((id) => {
    const p = pos.get(id);
    const g = svg("g", { class: "node" + (cycleNodes.has(id) ? " cycle" : ""), "data-session": id });
    g.append(svg("circle", { cx: p.x, cy: p.y, r: R }));
    const label = svg("text", { x: p.x, y: p.y + 4 });
    label.textContent = "s" + id;
    const full = svg("text", { x: p.x, y: p.y + R + 14 });
    const n = name(id);
    full.textContent = n.length > 24 ? n.slice(0, 23) + "…" : n;
    const title = svg("title");
    title.textContent = n;
    g.append(label, full, title);
    return g;
  }));
  const list = document.getElementById("cycles");
  if (view.cycles.length === 0) {
    list.replaceChildren(el("li", { class: "note" }, "none"));
  } else {
    list.replaceChildren(...view.cycles.slice().reverse().map((c) => {
      const path = c.sessions.concat([c.sessions[0]]).map((s) => name(s) + " (s" + s + ")").join(" → ");
      const what = c.resource !== null ? " on " + c.resource + (c.mode ? " in " + c.mode : "") : "";
      const li = el("li", { class: "cycle" }, "deadlock: " + path + "; refused " + name(c.victim) + "'s request" + what);
      li.dataset.victim = String(c.victim);
      return li;
    }));
  }
}

async function refresh() {
  const prefix = document.getElementById("prefix").value;
  const err = document.getElementById("error");
  try {
    const [st, res, ses, waits] = await Promise.all([
      getJson("/api/status"),
      getJson("/api/resources?limit=200&prefix=" + encodeURIComponent(prefix)),
      getJson("/api/sessions?limit=500"),
      getJson("/api/waits"),
    ]);
    renderStatus(st);
    renderResources(res);
    renderSessions(ses);
    renderGraph(waits);
    err.hidden = true;
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
  } catch (e) {
    err.textContent = "update failed: " + e.message;
    err.hidden = false;
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

document.getElementById("prefix").addEventListener("input", () => { refresh(); });
loop();
