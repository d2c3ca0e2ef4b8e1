// tunesmith dashboard: line charts as plain SVG (no library), with labelled axes and tick marks.
// drawChart(svg, series, {xLabel, yLabel, empty, xMax}) draws every series [{name, color, points: [[x, y]],
// id?, dashed?, dots?}] on shared axes; the legend is drawn inside the SVG so screenshots carry it.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them.
function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
  const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => raw <= s);
  const first = Math.floor(lo / step) * step, last = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = first; v <= last + step / 2; v += step) ticks.push(+v.toFixed(12));
  return { ticks, step, lo: first, hi: last };
}

function tickLabel(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  return Math.abs(v) >= 1e4 ? v.toExponential(1) : v.toFixed(Math.min(digits, 6));
}

function drawChart(svg, series, opts = {}) {
  const W = 680, H = 300, L = 58, R = 16, T = 14, B = 44;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.textContent = "";
  const el = (tag, attrs, parent = svg) => {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    parent.append(e);
    return e;
  };
  const shown = series.filter((s) => s.points.length);
  if (!shown.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }).textContent = opts.empty || "no steps yet";
    return;
  }
  const xs = shown.flatMap((s) => s.points.map((p) => p[0])), ys = shown.flatMap((s) => s.points.map((p) => p[1]));
  const xt = niceTicks(Math.min(0, ...xs), Math.max(...xs, opts.xMax || 1), 8);   // xMax: a run's total steps
  const xTicks = xt.ticks.filter((v) => Number.isInteger(v));   // steps are whole numbers
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 5);
  const x = (v) => L + (W - L - R) * ((v - xt.lo) / (xt.hi - xt.lo));
  const y = (v) => H - B - (H - T - B) * ((v - yt.lo) / (yt.hi - yt.lo));
  const axes = el("g", { class: "axes", "font-size": 11, fill: "#4a5263" });
  for (const v of yt.ticks) {
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eceef2" }, axes);
    el("line", { x1: L - 5, x2: L, y1: y(v), y2: y(v), stroke: "#777", class: "ytick" }, axes);
    el("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", class: "ytick-label" }, axes).textContent = tickLabel(v, yt.step);
  }
  for (const v of xTicks) {
    el("line", { x1: x(v), x2: x(v), y1: H - B, y2: H - B + 5, stroke: "#777", class: "xtick" }, axes);
    el("text", { x: x(v), y: H - B + 18, "text-anchor": "middle", class: "xtick-label" }, axes).textContent = String(v);
  }
  el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#777" }, axes);
  el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#777" }, axes);
  el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "xlabel" }, axes).textContent = opts.xLabel || "step";
  el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(T + H - B) / 2})`, class: "ylabel" }, axes)
    .textContent = opts.yLabel || "";
  shown.forEach((s) => {
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
    const attrs = { d, fill: "none", stroke: s.color, "stroke-width": s.dashed ? 2 : 1.6, class: "series" };
    if (s.dashed) attrs["stroke-dasharray"] = "5 3";
    if (s.id) attrs.id = s.id;
    el("path", attrs).setAttribute("data-name", s.name);
    if (s.dots || s.points.length === 1) for (const p of s.points) el("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.8, fill: s.color });
  });
  const legend = el("g", { class: "legend", "font-size": 11 });
  let lx = L + 8;
  for (const s of shown) {
    el("line", { x1: lx, x2: lx + 16, y1: T + 8, y2: T + 8, stroke: s.color, "stroke-width": 2.5, "stroke-dasharray": s.dashed ? "5 3" : "none" }, legend);
    const t = el("text", { x: lx + 20, y: T + 12, fill: "#1d2330" }, legend);
    t.textContent = s.name;
    lx += 28 + 6.2 * s.name.length;
  }
}

window.tsChart = { drawChart, niceTicks };
