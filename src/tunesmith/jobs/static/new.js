// tunesmith studio: create a job. Files are uploaded through /v1/files; every change of the form
// asks POST /v1/dashboard/preflight (the same body the create takes) for the data check of the
// files, the hyperparameters with "auto" resolved and the memory / time estimate.
"use strict";
(() => {
  const HYPER = { supervised: ["n_epochs", "batch_size", "learning_rate_multiplier"],
    dpo: ["n_epochs", "batch_size", "learning_rate_multiplier", "beta"],
    reinforcement: ["n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier", "eval_interval"] };
  const GRADERS = {
    string_check: { type: "string_check", name: "exact", operation: "eq", input: "{{sample.output_text}}", reference: "{{item.answer}}" },
    text_similarity: { type: "text_similarity", name: "close", evaluation_metric: "fuzzy_match", input: "{{sample.output_text}}", reference: "{{item.answer}}" },
    python: { type: "python", name: "scorer", source: "def grade(sample, item):\n    return 1.0 if item['answer'] in sample['output_text'] else 0.0\n" },
  };
  const files = { training_file: null, validation_file: null };
  let lastPlan = null, timer = null, seq = 0;

  const method = () => $("#new-method").value;
  function el(tag, content, cls) { const e = document.createElement(tag); if (content != null) e.append(content); if (cls) e.className = cls; return e; }
  function gb(n) { return n >= 1e8 ? (n / 1e9).toFixed(2) + " GB" : (n / 1e6).toFixed(1) + " MB"; }
  function duration(s) { return s < 90 ? s.toFixed(s < 10 ? 1 : 0) + " s" : s < 5400 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h"; }
  function table(head, rows, id) {
    const t = el("table", null, "small"); if (id) t.id = id;
    const tr = el("tr"); head.forEach((h) => tr.append(el("th", h))); t.append(el("thead", tr));
    const body = el("tbody"); rows.forEach((r) => { const row = el("tr"); r.forEach((c) => row.append(el("td", c == null ? "" : String(c)))); body.append(row); });
    t.append(body); return t;
  }

  function body() {
    const kind = method(), h = {};
    for (const k of HYPER[kind]) {
      const raw = $("#hp-" + k).value.trim();
      h[k] = raw === "" || raw === "auto" ? "auto" : Number(raw);
    }
    const m = { type: kind }; m[kind] = { hyperparameters: h };
    if (kind === "reinforcement") m[kind].grader = JSON.parse($("#grader").value);
    const out = { model: $("#new-model").value, training_file: files.training_file, method: m };
    if (files.validation_file) out.validation_file = files.validation_file;
    if ($("#new-suffix").value.trim()) out.suffix = $("#new-suffix").value.trim();
    if ($("#new-seed").value.trim()) out.seed = Number($("#new-seed").value.trim());
    return out;
  }

  function renderCheck(f) {
    const box = $("#check-out"); box.textContent = "";
    const r = f.report, tok = r.stats.tokens || {};
    const verdict = el("p", (r.ok ? "OK: " : "NOT OK: ") + r.n_examples + " examples, format " + (r.format || "unknown") +
      (r.stats.eval_examples != null ? ", " + r.stats.eval_examples + " validation examples" : ""), r.ok ? "ok" : "bad");
    verdict.id = "check-verdict"; box.append(verdict);
    if (r.errors.length) {
      box.append(el("h4", "Errors (" + Object.values(r.error_counts).reduce((a, b) => a + b, 0) + ")"));
      box.append(table(["file", "line", "code", "message"], r.errors.map((e) => [e.param === "validation_file" ? "validation" : "training", e.line, e.code, e.message]), "check-errors"));
    }
    if (r.warnings.length) {
      box.append(el("h4", "Warnings"));
      box.append(table(["file", "line", "code", "message"], r.warnings.slice(0, 30).map((e) => [e.param === "validation_file" ? "validation" : "training", e.line, e.code, e.message]), "check-warnings"));
    }
    if (tok.examples) {
      box.append(el("h4", "Tokens (through the model's chat template)"));
      box.append(table(["examples", "total", "trained", "mean", "median", "p95", "max", "over max_length " + tok.max_length],
        [[tok.examples, tok.total, tok.trained, tok.mean, tok.median, tok.p95, tok.max, tok.over_max_length]], "check-tokens"));
    }
    const dup = r.duplicates || {};
    if (dup.group_count) box.append(el("p", "duplicates: " + dup.group_count + " group(s), e.g. lines " + dup.groups[0].lines.join(", "), "warn"));
    if (dup.eval_overlap_count) box.append(el("p", dup.eval_overlap_count + " validation examples are also in the training file", "warn"));
    const pii = f.pii;
    const p = el("p", pii.total ? "Personal data: " + pii.total + " finding(s) in " + pii.rows_with_findings + " row(s) — " +
      Object.entries(pii.by_type).map(([k, v]) => k + " × " + v).join(", ") + " (tunesmith data scrub redacts them)" : "No personal data found (e-mails, phones, cards, IBANs, SSNs, IPs, secrets).", pii.total ? "warn" : "muted");
    p.id = "pii-summary"; box.append(p);
    if (pii.total) box.append(table(["file", "line", "field", "type"], pii.findings.slice(0, 20).map((x) => [x.file === "validation_file" ? "validation" : "training", x.line, x.field, x.type]), "pii-findings"));
  }

  function renderPlan(plan) {
    const box = $("#plan-out"); box.textContent = "";
    const h = plan.hyperparameters;
    box.append(table(["", ...Object.keys(h.resolved)], [["requested", ...Object.keys(h.resolved).map((k) => h.requested[k])],
      ["resolved", ...Object.keys(h.resolved).map((k) => h.resolved[k])]], "resolved"));
    box.append(el("p", "learning rate " + h.learning_rate.toExponential(2) + " (" + h.adapter + "), " + h.steps_per_epoch +
      " steps per epoch, " + h.total_steps + " steps in all, examples cut at " + h.max_length + " tokens"));
    const e = plan.estimate, mem = e.memory, t = e.time;
    const est = el("p", null, "estimate"); est.id = "estimate";
    est.append(el("strong", "Estimate: "));
    if (mem) est.append("peak memory " + gb(mem.peak) + " (" + mem.mode + " on " + mem.device + ": weights " + gb(mem.weights) +
      ", adapter + optimizer " + gb(mem.trainable + mem.grads + mem.optimizer) + ", activations " + gb(mem.activations) + "; " +
      (mem.trainable_params / 1e6).toFixed(2) + "M of " + (mem.params / 1e6).toFixed(1) + "M parameters trained)");
    if (t) est.append("; time ≈ " + duration(t.seconds) + " (" + duration(t.seconds_per_epoch) + " per epoch × " + t.epochs + ")");
    box.append(est);
    for (const n of e.notes) box.append(el("p", n, "muted"));
    box.append(el("p", "base model " + plan.base_model.name + (plan.base_model.format === "gguf" ? " (GGUF, dequantised)" : ""), "muted"));
  }

  async function preflight() {
    clearTimeout(timer);
    $("#new-submit").disabled = true;
    if (!files.training_file || !$("#new-model").value) return;
    const mine = ++seq;
    let b;
    try { b = body(); } catch (err) { $("#plan-out").textContent = "The grader is not valid JSON: " + err.message; return; }
    $("#plan-out").textContent = "checking…";
    try {
      const plan = await api("/dashboard/preflight", { method: "POST", json: b });
      if (mine !== seq) return;   // a newer request is under way
      lastPlan = plan; renderCheck(plan.files); renderPlan(plan);
      $("#new-submit").disabled = !plan.files.report.ok;
      status("");
    } catch (err) { if (mine === seq) { $("#plan-out").textContent = err.message; status(err.message); } }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(preflight, 400); };

  async function upload(input, param) {
    const f = input.files[0];
    if (!f) { files[param] = null; $(param === "training_file" ? "#train-id" : "#valid-id").textContent = ""; later(); return; }
    const form = new FormData(); form.append("purpose", "fine-tune"); form.append("file", f, f.name);
    status("uploading " + f.name + "…");
    try {
      const obj = await api("/files", { method: "POST", body: form });
      files[param] = obj.id;
      $(param === "training_file" ? "#train-id" : "#valid-id").textContent = obj.id + " (" + obj.bytes + " bytes)";
      status(""); await preflight();
    } catch (err) { status(err.message); }
  }

  function methodChanged() {
    const kind = method();
    for (const e of document.querySelectorAll(".dpo-only")) e.hidden = kind !== "dpo";
    for (const e of document.querySelectorAll(".rft-only")) e.hidden = kind !== "reinforcement";
    $("#grader-box").hidden = kind !== "reinforcement";
    if (kind === "reinforcement" && !$("#grader").value.trim()) setGrader();
    later();
  }
  function setGrader() { $("#grader").value = JSON.stringify(GRADERS[$("#grader-template").value], null, 2); later(); }
  async function graderCall(what) {
    const out = $("#grader-out");
    try {
      const grader = JSON.parse($("#grader").value);
      if (what === "validate") { await api("/fine_tuning/alpha/graders/validate", { method: "POST", json: { grader } }); out.textContent = "valid"; return; }
      const r = await api("/fine_tuning/alpha/graders/run", { method: "POST", json: { grader, model_sample: $("#grader-sample").value, item: JSON.parse($("#grader-item").value || "{}") } });
      out.textContent = "reward " + r.reward + (r.metadata && r.metadata.errors && Object.values(r.metadata.errors).some(Boolean) ? " (grader errors: see the API answer)" : "");
    } catch (err) { out.textContent = err.message; }
  }

  async function showNew(_m, params) {
    show("new-view");
    const select = $("#new-model"), wanted = params.get("model") || select.value;
    const models = (await api("/models")).data;
    select.textContent = "";
    for (const m of models) {
      const o = document.createElement("option"); o.value = m.id;
      o.textContent = m.id + (m.owned_by === "system" ? " (base)" : " (continue fine-tuning)"); select.append(o);
    }
    if (wanted && ![...select.options].some((o) => o.value === wanted)) {   // a checkpoint: continue from it
      const o = document.createElement("option"); o.value = wanted; o.textContent = wanted + " (checkpoint)"; select.append(o);
    }
    if (wanted) select.value = wanted;
    methodChanged();
    status(params.get("model") ? "Continuing from " + params.get("model") + ": upload the data to train on." : "");
  }

  $("#train-file").onchange = (ev) => upload(ev.target, "training_file");
  $("#valid-file").onchange = (ev) => upload(ev.target, "validation_file");
  $("#new-method").onchange = methodChanged;
  $("#new-model").onchange = later;
  $("#grader-template").onchange = setGrader;
  $("#grader").oninput = later;
  $("#grader-validate").onclick = () => graderCall("validate");
  $("#grader-run").onclick = () => graderCall("run");
  for (const e of document.querySelectorAll("#new-form input:not([type=file])")) e.addEventListener("input", later);
  $("#new-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", json: body() });
      location.hash = "#/jobs/" + job.id;
    } catch (err) { status(err.message); }
  });
  ts.views.new = { pattern: /^#\/new$/, show: showNew };
  window.tsNew = { lastPlan: () => lastPlan };
})();
