// tunesmith dashboard: a read-only view over the same /v1 API the SDK uses.
// The API key stays in this browser (localStorage) and is sent as a Bearer token.
"use strict";
const $ = (s) => document.querySelector(s);
let key = localStorage.getItem("tunesmith_key") || "";
let timer = null;

async function api(path) {
  const r = await fetch("/v1" + path, { headers: { Authorization: "Bearer " + key } });
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}
async function all(path, max = 5000) {           // follow has_more / after like the SDK
  let out = [], after = null;
  while (out.length < max) {
    const page = await api(path + (path.includes("?") ? "&" : "?") + "limit=100" + (after ? "&after=" + after : ""));
    out = out.concat(page.data);
    if (!page.has_more || !page.data.length) break;
    after = page.data[page.data.length - 1].id;
  }
  return out;
}
const text = (v) => document.createTextNode(v == null ? "" : String(v));
function cell(tr, content) { const td = document.createElement("td"); td.append(content); tr.append(td); return td; }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
function badge(s) { const b = document.createElement("span"); b.className = "st st-" + s; b.textContent = s; return b; }
function link(href, label) { const a = document.createElement("a"); a.href = href; a.textContent = label; return a; }
function status(msg) { $("#status").textContent = msg || ""; }

async function showJobs() {
  $("#job-view").hidden = true; $("#jobs-view").hidden = false;
  const body = $("#jobs tbody"); body.textContent = "";
  const jobs = await all("/fine_tuning/jobs", 500);
  for (const j of jobs) {
    const tr = document.createElement("tr");
    cell(tr, link("#/jobs/" + j.id, j.id)); cell(tr, text(j.model)); cell(tr, badge(j.status));
    cell(tr, text(when(j.created_at))); cell(tr, text(j.fine_tuned_model || ""));
    body.append(tr);
  }
  status(jobs.length ? "" : "No jobs yet.");
}

function drawChart(points) {
  const svg = $("#chart"), W = 640, H = 260, P = 40;
  svg.textContent = "";
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); svg.append(e); return e; };
  const train = points.filter((p) => p.train_loss != null), valid = points.filter((p) => p.valid_loss != null);
  if (!train.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }).textContent = "no steps yet"; return; }
  const maxStep = Math.max(...points.map((p) => p.step), 1);
  const ys = train.map((p) => p.train_loss).concat(valid.map((p) => p.valid_loss));
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const x = (s) => P + (W - 2 * P) * (s / maxStep), y = (v) => H - P - (H - 2 * P) * ((v - lo) / span);
  el("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#999" });
  el("line", { x1: P, y1: P, x2: P, y2: H - P, stroke: "#999" });
  el("text", { x: P - 4, y: y(hi) + 4, "text-anchor": "end", "font-size": 10 }).textContent = hi.toFixed(2);
  el("text", { x: P - 4, y: y(lo) + 4, "text-anchor": "end", "font-size": 10 }).textContent = lo.toFixed(2);
  el("text", { x: W - P, y: H - P + 14, "text-anchor": "end", "font-size": 10 }).textContent = "step " + maxStep;
  const path = (pts, key) => pts.map((p, i) => (i ? "L" : "M") + x(p.step).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
  el("path", { d: path(train, "train_loss"), fill: "none", stroke: "#1f5fbf", "stroke-width": 1.5, id: "train-line" });
  if (valid.length) {
    el("path", { d: path(valid, "valid_loss"), fill: "none", stroke: "#d9822b", "stroke-width": 2, id: "valid-line" });
    for (const p of valid) el("circle", { cx: x(p.step), cy: y(p.valid_loss), r: 3, fill: "#d9822b" });
  }
}

async function showJob(id) {
  $("#jobs-view").hidden = true; $("#job-view").hidden = false;
  const job = await api("/fine_tuning/jobs/" + id);
  $("#job-title").textContent = job.id;
  const facts = $("#job-facts"); facts.textContent = "";
  const h = job.hyperparameters || {};
  const rows = [["status", job.status], ["model", job.model], ["method", job.method && job.method.type],
    ["fine-tuned model", job.fine_tuned_model], ["epochs / batch / lr×", [h.n_epochs, h.batch_size, h.learning_rate_multiplier].join(" / ")],
    ["trained tokens", job.trained_tokens], ["training file", job.training_file], ["validation file", job.validation_file],
    ["result files", (job.result_files || []).join(", ")], ["error", job.error && job.error.message]];
  for (const [k, v] of rows) { if (v == null || v === "") continue; const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; facts.append(dt, dd); }
  const events = await all("/fine_tuning/jobs/" + id + "/events", 20000);
  const points = events.filter((e) => e.type === "metrics" && e.data).map((e) => e.data).sort((a, b) => a.step - b.step);
  drawChart(points);
  const ol = $("#events"); ol.textContent = "";
  for (const e of events.filter((e) => e.type !== "metrics").concat(events.filter((e) => e.type === "metrics").slice(0, 5))
       .sort((a, b) => b.created_at - a.created_at)) {
    const li = document.createElement("li"); li.className = e.level; li.textContent = when(e.created_at) + " — " + e.message; ol.append(li);
  }
  const tb = $("#checkpoints tbody"); tb.textContent = "";
  for (const c of await all("/fine_tuning/jobs/" + id + "/checkpoints", 100)) {
    const tr = document.createElement("tr"); const m = c.metrics || {};
    cell(tr, text(c.step_number)); cell(tr, text(m.train_loss != null ? m.train_loss.toFixed(4) : ""));
    cell(tr, text(m.valid_loss != null ? m.valid_loss.toFixed(4) : "")); cell(tr, text(c.fine_tuned_model_checkpoint));
    tb.append(tr);
  }
  status("");
  clearTimeout(timer);
  if (!["succeeded", "failed", "cancelled"].includes(job.status)) timer = setTimeout(route, 3000);  // live view
}

async function route() {
  clearTimeout(timer);
  if (!key) { status("Enter an API key (tunesmith server keys create) to see your project's jobs."); return; }
  const m = location.hash.match(/^#\/jobs\/(ftjob-[A-Za-z0-9]+)$/);
  try { if (m) await showJob(m[1]); else await showJobs(); }
  catch (err) { status(err.message); }
}
$("#keyform").addEventListener("submit", (ev) => {
  ev.preventDefault(); key = $("#key").value.trim(); localStorage.setItem("tunesmith_key", key); route();
});
const fromUrl = new URLSearchParams(location.search).get("key");   // for screenshots / scripts
if (fromUrl) { key = fromUrl; localStorage.setItem("tunesmith_key", key); }
window.addEventListener("hashchange", route);
route();
