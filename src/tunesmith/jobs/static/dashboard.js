// tunesmith studio: jobs, one job (controls, curves, checkpoints, events, report), comparison.
// Everything goes through the same /v1 API the SDK uses; the API key stays in this browser
// (localStorage) and is sent as a Bearer token. new.js (create a job) and playground.js (chat)
// add their views to `ts.views`.
"use strict";
const $ = (s) => document.querySelector(s);
const TERMINAL = ["succeeded", "failed", "cancelled"];
const COLORS = ["#1f5fbf", "#d9822b", "#2e9e5b", "#b83280", "#6b4fbb", "#b3261e", "#00838f", "#7a6a00"];
const ts = {
  key: localStorage.getItem("tunesmith_key") || "",
  timer: null,
  poll: Number(new URLSearchParams(location.search).get("poll")) || 2000,  // ms between live refreshes
  views: {},
};

async function api(path, init = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + ts.key }, init.headers || {});
  if (init.json !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(init.json); }
  const r = await fetch("/v1" + path, Object.assign({}, init, { headers }));
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body && body.error && body.error.message) || r.statusText);
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
function button(label, onclick, cls) { const b = document.createElement("button"); b.type = "button"; b.textContent = label; if (cls) b.className = cls; b.onclick = onclick; return b; }
function status(msg) { $("#status").textContent = msg || ""; }
function show(view) { for (const s of document.querySelectorAll("section.view")) s.hidden = s.id !== view; }
function fmt(v, digits = 4) { return v == null || v === "" ? "" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : String(v); }
function jobLabel(job) {   // the suffix of its model (ft:base:owner:suffix:key) and the end of its id
  const parts = (job.fine_tuned_model || "").split(":");
  return parts.length > 3 && parts[3] ? parts[3] + " (…" + job.id.slice(-6) + ")" : job.id;
}
function baseOf(model) { return model.startsWith("ft:") ? model.split(":")[1] : model; }  // ft:BASE:owner:suffix:id[:ckpt-step-N]
async function metricsOf(id) {   // the job's per-step metrics, from its metrics events, by step
  const events = await all("/fine_tuning/jobs/" + id + "/events", 20000);
  const points = events.filter((e) => e.type === "metrics" && e.data).map((e) => e.data).sort((a, b) => a.step - b.step);
  return { events, points };
}
function series(points, key, name, color, extra = {}) {
  return Object.assign({ name, color, points: points.filter((p) => typeof p[key] === "number").map((p) => [p.step, p[key]]) }, extra);
}

// ---- the jobs list ------------------------------------------------------------------------
async function showJobs() {
  show("jobs-view");
  const body = $("#jobs tbody"); body.textContent = "";
  const jobs = await all("/fine_tuning/jobs", 500);
  for (const j of jobs) {
    const tr = document.createElement("tr");
    const box = document.createElement("input"); box.type = "checkbox"; box.value = j.id; box.className = "pick";
    cell(tr, box); cell(tr, link("#/jobs/" + j.id, j.id)); cell(tr, text(j.model)); cell(tr, text(j.method && j.method.type));
    cell(tr, badge(j.status)); cell(tr, text(when(j.created_at))); cell(tr, text(j.fine_tuned_model || ""));
    body.append(tr);
  }
  status(jobs.length ? "" : "No jobs yet: start one under New job.");
}
$("#compare-selected").onclick = () => {
  const ids = [...document.querySelectorAll("input.pick:checked")].map((b) => b.value);
  location.hash = "#/compare/" + ids.join(",");
};

// ---- one job ------------------------------------------------------------------------------
function jobChart(job, points) {
  const rft = job.method && job.method.type === "reinforcement";
  $("#chart-title").textContent = rft ? "Reward" : "Loss";
  const lines = rft
    ? [series(points, "train_mean_reward", "training reward", COLORS[0], { id: "reward-line" }),
       series(points, "full_valid_mean_reward", "validation reward", COLORS[1], { id: "valid-reward-line", dots: true, dashed: true })]
    : [series(points, "train_loss", "training loss", COLORS[0], { id: "train-line" }),
       series(points, "valid_loss", "validation loss", COLORS[1], { id: "valid-line", dots: true, dashed: true })];
  const total = Math.max(0, ...points.map((p) => p.total_steps || 0));   // the axis spans the whole run
  tsChart.drawChart($("#chart"), lines, { xLabel: "step", yLabel: rft ? "mean reward" : "loss (nats / token)", xMax: total });
}

async function jobControl(id, action) {
  try { await api("/fine_tuning/jobs/" + id + "/" + action, { method: "POST" }); status(""); }
  catch (err) { status(err.message); }
  await showJob(id);
}

async function showJob(id) {
  show("job-view");
  const job = await api("/fine_tuning/jobs/" + id);
  $("#job-title").textContent = job.id;
  const facts = $("#job-facts"); facts.textContent = "";
  const kind = job.method && job.method.type, h = (job.method && job.method[kind] && job.method[kind].hyperparameters) || job.hyperparameters || {};
  const rows = [["status", badge(job.status)], ["model", job.model], ["method", kind],
    ["fine-tuned model", job.fine_tuned_model],
    ["hyperparameters", Object.entries(h).map(([k, v]) => k + "=" + v).join(", ")],
    ["trained tokens", job.trained_tokens], ["training file", job.training_file], ["validation file", job.validation_file],
    ["result files", (job.result_files || []).join(", ")], ["error", job.error && job.error.message]];
  for (const [k, v] of rows) {
    if (v == null || v === "") continue;
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.append(typeof v === "string" || typeof v === "number" ? text(v) : v);
    facts.append(dt, dd);
  }
  $("#job-cancel").disabled = TERMINAL.includes(job.status);
  $("#job-pause").disabled = TERMINAL.includes(job.status) || job.status === "paused";
  $("#job-resume").disabled = job.status !== "paused";
  $("#job-cancel").onclick = () => jobControl(id, "cancel");
  $("#job-pause").onclick = () => jobControl(id, "pause");
  $("#job-resume").onclick = () => jobControl(id, "resume");
  $("#job-chat").hidden = !job.fine_tuned_model;
  $("#job-chat").onclick = () => { location.hash = "#/playground?left=" + encodeURIComponent(job.fine_tuned_model) + "&right=" + encodeURIComponent(baseOf(job.model)); };
  const { events, points } = await metricsOf(id);
  jobChart(job, points);
  const ol = $("#events"); ol.textContent = "";
  for (const e of events.filter((e) => e.type !== "metrics").concat(events.filter((e) => e.type === "metrics").slice(0, 5))
       .sort((a, b) => b.created_at - a.created_at)) {
    const li = document.createElement("li"); li.className = e.level; li.textContent = when(e.created_at) + " — " + e.message; ol.append(li);
  }
  const tb = $("#checkpoints tbody"); tb.textContent = "";
  const rft = kind === "reinforcement", cols = rft ? ["train_reward_mean", "valid_reward_mean"] : ["train_loss", "valid_loss"];
  const heads = $("#checkpoints thead").querySelectorAll("th");
  heads[1].textContent = rft ? "train reward" : "train loss"; heads[2].textContent = rft ? "valid reward" : "valid loss";
  for (const c of await all("/fine_tuning/jobs/" + id + "/checkpoints", 100)) {
    const tr = document.createElement("tr"); const m = c.metrics || {};
    cell(tr, text(c.step_number)); cell(tr, text(fmt(m[cols[0]]))); cell(tr, text(fmt(m[cols[1]])));
    cell(tr, text(c.fine_tuned_model_checkpoint));
    const acts = cell(tr, button("chat", () => { location.hash = "#/playground?left=" + encodeURIComponent(c.fine_tuned_model_checkpoint) + "&right=" + encodeURIComponent(baseOf(job.model)); }, "ckpt-chat"));
    acts.append(" ", button("continue from here", () => { location.hash = "#/new?model=" + encodeURIComponent(c.fine_tuned_model_checkpoint); }, "ckpt-continue"));
    tb.append(tr);
  }
  await showReport(job);
  status("");
  clearTimeout(ts.timer);
  if (!TERMINAL.includes(job.status)) ts.timer = setTimeout(route, ts.poll);  // live view
}

async function showReport(job) {
  $("#report-box").hidden = true;
  if (!TERMINAL.includes(job.status)) return;
  try {
    const html = await api("/dashboard/jobs/" + job.id + "/report");
    // A sandboxed frame without allow-scripts: the report shows as its own page and runs nothing
    // (same-origin only so headless Chromium paints it in-process, for screenshots).
    $("#report").srcdoc = html;
    $("#report-box").hidden = false;
  } catch (err) { /* no report (yet): nothing to show */ }
}

// ---- several jobs -------------------------------------------------------------------------
const METRIC_LABELS = { train_loss: "loss (nats / token)", valid_loss: "validation loss (nats / token)",
  train_mean_reward: "mean reward", full_valid_mean_reward: "validation mean reward" };
async function showCompare(ids) {
  show("compare-view");
  if (!ids.length) {   // no choice yet: the latest five jobs
    ids = (await api("/fine_tuning/jobs?limit=5")).data.map((j) => j.id);
  }
  const metric = $("#compare-metric").value;
  const list = $("#compare-jobs"); list.textContent = "";
  const lines = [];
  for (const [i, id] of ids.entries()) {
    const job = await api("/fine_tuning/jobs/" + id);
    const { points } = await metricsOf(id);
    const color = COLORS[i % COLORS.length];
    lines.push(series(points, metric, jobLabel(job), color, { dots: metric.includes("valid") }));
    const li = document.createElement("li"); li.style.color = color;
    li.append(link("#/jobs/" + id, id), text(" — " + job.model + ", " + job.status)); list.append(li);
  }
  tsChart.drawChart($("#compare-chart"), lines, { xLabel: "step", yLabel: METRIC_LABELS[metric], empty: "no " + metric + " points in these jobs" });
  status("");
  clearTimeout(ts.timer);
  ts.timer = setTimeout(route, ts.poll * 2);
}
$("#compare-metric").onchange = () => route();

// ---- routing ------------------------------------------------------------------------------
ts.views.jobs = { pattern: /^#?\/?$/, show: () => showJobs() };
ts.views.job = { pattern: /^#\/jobs\/(ftjob-[A-Za-z0-9]+)$/, show: (m) => showJob(m[1]) };
ts.views.compare = { pattern: /^#\/compare\/?([A-Za-z0-9,-]*)$/, show: (m) => showCompare(m[1] ? m[1].split(",").filter(Boolean) : []) };

async function route() {
  clearTimeout(ts.timer);
  if (!ts.key) { show(""); status("Enter an API key (tunesmith server keys create) to see your project's jobs."); return; }
  const [path, query] = location.hash.split("?");
  const params = new URLSearchParams(query || "");
  try {
    for (const v of Object.values(ts.views)) {
      const m = path.match(v.pattern);
      if (m) { await v.show(m, params); return; }
    }
    await showJobs();
  } catch (err) { status(err.message); }
}
$("#keyform").addEventListener("submit", (ev) => {
  ev.preventDefault(); ts.key = $("#key").value.trim(); localStorage.setItem("tunesmith_key", ts.key); route();
});
const fromUrl = new URLSearchParams(location.search).get("key");   // for screenshots / scripts
if (fromUrl) { ts.key = fromUrl; localStorage.setItem("tunesmith_key", ts.key); }
window.addEventListener("hashchange", route);
window.addEventListener("load", route);   // after new.js and playground.js added their views
