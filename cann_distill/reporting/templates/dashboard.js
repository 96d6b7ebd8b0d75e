"use strict";
// The dashboard page. Every node is built from the data with createElement, textContent and
// setAttribute; no string from the server is ever parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";
// bidi embeddings, overrides, isolates and marks, and control characters: shown as visible escapes
const CONTROLS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const inert = s => String(s).replace(CONTROLS, c => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
const isNum = v => typeof v === "number" && Number.isFinite(v);
const pct = v => isNum(v) ? (100 * v).toFixed(2) + "%" : "–";
const pt = v => isNum(v) ? (v >= 0 ? "+" : "") + (100 * v).toFixed(2) + " pt" : "–";
const num = v => isNum(v) ? v.toFixed(3) : "–";
let refreshMs = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(inert(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = inert(text);
  return node;
}

function progressText(live) {
  return isNum(live.epochs) ? live.done + "/" + live.epochs : live.done + (live.done === 1 ? " epoch" : " epochs");
}

function stageCell(run, stage) {
  const st = run.status[stage] || "–", live = run.live[stage];
  const td = el("td", st === "–" ? {} : {class: st}, st);
  if (live && live.problem) {
    td.append(" ", el("span", {class: "problem"}, "live log " + live.problem));
  } else if (live && (st !== "–" || live.done > 0)) {
    td.append(" ", el("span", {class: "epoch", "data-run": run.name, "data-stage": stage}, progressText(live)));
    if (isNum(live.epochs)) td.append(el("progress", {max: live.epochs, value: Math.min(live.done, live.epochs)}));
  }
  return td;
}

function curve(rows, key, color, w, h, total, lo, hi) {
  const pts = rows.filter(r => isNum(r[key]) && isNum(r.epoch));
  if (!pts.length) return null;
  const n = Math.max(total, 2);
  const xy = pts.map(r => (10 + (r.epoch - 1) * (w - 20) / (n - 1)).toFixed(1) + "," +
    (h - 18 - (r[key] - lo) * (h - 52) / ((hi - lo) || 1)).toFixed(1));
  return svg("polyline", {fill: "none", stroke: color, "stroke-width": 2, points: xy.join(" ")});
}

function chart(stage, live) {
  const rows = live.history, w = 280, h = 130;
  const total = isNum(live.epochs) ? live.epochs : Math.max(rows.length, 2);
  const losses = rows.map(r => r.loss).filter(isNum);
  const hi = losses.length ? Math.max(...losses) : 1;
  const node = svg("svg", {width: w, height: h, role: "img", "aria-label": stage + " curves"});
  node.append(svg("text", {x: 8, y: 14, "font-size": 11, "font-weight": "bold"}, stage));
  node.append(svg("text", {x: 8, y: 28, "font-size": 10, fill: "#c44e52"}, "loss (0–" + hi.toPrecision(3) + ")"));
  node.append(svg("text", {x: w - 8, y: 28, "font-size": 10, fill: "#4c72b0", "text-anchor": "end"}, "val top-1 (0–100%)"));
  node.append(svg("text", {x: 8, y: h - 4, "font-size": 10, fill: "#777"}, "epoch 1"));
  node.append(svg("text", {x: w - 8, y: h - 4, "font-size": 10, fill: "#777", "text-anchor": "end"}, "epoch " + total));
  for (const c of [curve(rows, "loss", "#c44e52", w, h, total, 0, hi), curve(rows, "val_acc", "#4c72b0", w, h, total, 0, 1)]) {
    if (c) node.append(c);
  }
  return node;
}

function numbersLine(run) {
  const n = run.numbers || {};
  const p = el("p", {class: "numbers"});
  if (n.problem) {
    p.append(el("span", {class: "problem"}, n.problem));
    return p;
  }
  const from = {report: "report.json", validate: "validate", training: "training"}[n.source] || "?";
  p.append(el("b", {}, "on " + (n.split || "?")), " (" + from + (isNum(n.n) ? ", " + n.n + " images" : "") + "): ");
  const parts = [["teacher", pct(n.teacher)], ["baseline", pct(n.baseline)], ["student", pct(n.student)]];
  if (n.source !== "training") parts.push(["INT8", pct(n.onnx_int8) + (isNum(n.int8_drop) ? " (drop " + pt(n.int8_drop) + ")" : "")]);
  if (n.source === "report") {
    parts.push(["TE", n.te === null && n.verdict === "undefined" ? "not meaningful" : num(n.te)]);
    parts.push(["DQI", n.dqi === null && n.verdict === "undefined" ? "not meaningful" : num(n.dqi)]);
  }
  p.append(parts.map(([k, v]) => k + " " + v).join(" · "));
  return p;
}

function runCard(run, stages) {
  const card = el("div", {class: "run", "data-run": run.name}, el("h2", {}, run.name));
  card.append(el("p", {class: "meta"}, run.path));
  if (run.problem) card.append(el("p", {class: "problem"}, run.problem));
  card.append(el("table", {}, el("tr", {}, ...stages.map(s => el("th", {}, s))), el("tr", {}, ...stages.map(s => stageCell(run, s)))));
  const line = numbersLine(run);
  line.append(" · ");
  if (run.report) line.append(el("a", {href: "/runs/" + encodeURIComponent(run.name) + "/report.html"}, "report.html"));
  else line.append("no report yet");
  card.append(line);
  const n = run.numbers || {};
  if (n.source === "report" && n.verdict === "undefined" && n.te_note) card.append(el("p", {class: "note"}, "TE and DQI " + n.te_note));
  if (n.verdict_line && n.verdict !== "undefined") card.append(el("p", {class: "note"}, n.verdict_line));
  const charts = Object.keys(run.live).filter(s => !run.live[s].problem).map(s => chart(s, run.live[s]));
  if (charts.length) card.append(el("div", {class: "charts"}, ...charts));
  return card;
}

function render(state) {
  refreshMs = Math.max(100, 1000 * (isNum(state.refresh) ? state.refresh : 2));
  document.getElementById("root").textContent = inert(state.root) + " — refreshed every " + refreshMs / 1000 + " s";
  const cards = (state.runs || []).map(run => runCard(run, state.stages || []));
  document.getElementById("runs").replaceChildren(...(cards.length ? cards : [el("p", {}, "no runs")]));
  document.getElementById("updated").textContent = "last update " + new Date().toLocaleTimeString();
}

async function poll() {
  try {
    const r = await fetch("/api/runs", {cache: "no-store"});
    if (r.ok) render(await r.json());
    else document.getElementById("updated").textContent = "server answered " + r.status + ", retrying";
  } catch (e) {
    document.getElementById("updated").textContent = "server unreachable, retrying";
  }
  setTimeout(poll, refreshMs);
}

poll();
