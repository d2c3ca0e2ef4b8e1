// tunesmith studio: the playground. One prompt goes to two models at once through
// /v1/chat/completions with stream: true; each answer grows token by token in its column.
"use strict";
(() => {
  async function models(extra) {
    const ids = (await api("/models")).data.map((m) => m.id);
    for (const x of extra) if (x && !ids.includes(x)) ids.push(x);   // a checkpoint of one of the project's jobs
    return ids;
  }
  function fill(select, ids, wanted) {
    const keep = wanted || select.value;
    select.textContent = "";
    for (const id of ids) { const o = document.createElement("option"); o.value = o.textContent = id; select.append(o); }
    if (keep && ids.includes(keep)) select.value = keep;
  }

  async function showPlayground(_m, params) {
    show("playground-view");
    const left = params.get("left"), right = params.get("right");
    const ids = await models([left, right]);
    fill($("#pg-left"), ids, left || ids.find((i) => i.startsWith("ft:")));
    fill($("#pg-right"), ids, right || ids.find((i) => !i.startsWith("ft:")));
    status("");
  }

  // Reads an SSE stream of chat.completion.chunk objects into `out`; returns the final text.
  async function stream(model, messages, out) {
    out.textContent = ""; out.classList.add("streaming"); out.dataset.done = "";
    const r = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { Authorization: "Bearer " + ts.key, "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true, max_tokens: Number($("#pg-max").value) || 64,
        temperature: Number($("#pg-temp").value) || 0 }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || r.statusText);
    }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "", chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) { out.append(delta.content); chunks += 1; }
        }
      }
    }
    out.classList.remove("streaming"); out.dataset.done = "1"; out.dataset.chunks = String(chunks);
    return out.textContent;
  }

  $("#pg-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const messages = [];
    if ($("#pg-system").value.trim()) messages.push({ role: "system", content: $("#pg-system").value.trim() });
    messages.push({ role: "user", content: $("#pg-prompt").value });
    status("");
    const run = (side) => stream($("#pg-" + side).value, messages, $("#pg-" + side + "-out"))
      .catch((err) => { const out = $("#pg-" + side + "-out"); out.textContent = "error: " + err.message; out.dataset.done = "1"; });
    await Promise.all([run("left"), run("right")]);
  });
  ts.views.playground = { pattern: /^#\/playground$/, show: showPlayground };
})();
