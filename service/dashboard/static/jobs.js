// Jobs: the list (filters, selection for compare), one job live, and several jobs overlaid.

import { api, MetricsFeed } from "./api.js";
import { Curves } from "./charts.js";
import { card, duration, fill, facts, h, num, seconds, status, table, TERMINAL, when } from "./ui.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "diverged"];

const model = (spec) => {
  const m = spec.model || {};
  return [m.family, m.size].filter(Boolean).join(" ") || "custom";
};
const preset = (spec) => spec.optimizer?.preset ?? "–";
const elapsed = (job) => duration(seconds(job.started_at, job.finished_at));
const jobLink = (job) => h("a", { href: `#/job/${job.id}` }, job.name || job.id.slice(0, 8));
// Who runs the job: the service's workers, or an agent (a user's own script) that claimed it.
// A requeued agent job keeps the host of its lost attempt, so a queued one says it waits.
const agents = (job) => job.executor === "agents";
function runBy(job) {
  if (!agents(job)) return "service";
  if (job.status === "queued" || !job.agent_host) {
    return `agent (waiting for one${job.agent_host ? `; last on ${job.agent_host}` : ""})`;
  }
  return `agent on ${job.agent_host}`;
}
// The list's Job cell: the link, and for an agent job a small tag with its host.
const jobCell = (job) => (agents(job)
  ? h("span", {}, jobLink(job), " ", h("span", { class: "agent-tag", title: runBy(job) },
    job.agent_host ? `agent ${job.agent_host}` : "agent"))
  : jobLink(job));

function replaceQuery(path, params) {
  const query = new URLSearchParams([...params].filter(([, v]) => v)).toString();
  history.replaceState(null, "", `#${path}${query ? `?${query}` : ""}`);
}

export async function jobsPage(root, { params, context }) {
  const chosen = { status: params.get("status") || "", sweep: params.get("sweep") || "" };
  const selected = new Set();
  const sweeps = await api("/v1/sweeps", { params: { limit: 200 } });
  const statusSelect = h("select", { name: "status", "aria-label": "status" },
    h("option", { value: "" }, "any status"),
    h("option", { value: "queued,running,cancelling" }, "active"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const sweepSelect = h("select", { name: "sweep", "aria-label": "sweep" },
    h("option", { value: "" }, "any sweep"),
    sweeps.data.map((s) => h("option", { value: s.id }, `${s.name} (${s.id.slice(0, 6)})`)));
  statusSelect.value = chosen.status;
  sweepSelect.value = chosen.sweep;
  const compare = h("button", { type: "button", class: "primary", disabled: true,
    onclick: () => { location.hash = `#/compare?ids=${[...selected].join(",")}`; } }, "Compare selected");
  const count = h("span", { class: "muted" });
  const holder = h("div", { id: "jobs-table" });
  root.append(h("h1", {}, "Jobs"), card(null,
    h("div", { class: "toolbar" }, h("label", {}, "Status ", statusSelect), h("label", {}, "Sweep ", sweepSelect),
      compare, count),
    holder));

  const columns = [
    { label: "", value: () => null, cell: (job) => h("input", {
      type: "checkbox", "aria-label": `select ${job.name}`, checked: selected.has(job.id),
      onchange: (event) => {
        event.target.checked ? selected.add(job.id) : selected.delete(job.id);
        compare.disabled = selected.size < 1;
      } }) },
    { label: "Job", value: (j) => j.name, cell: jobCell },
    { label: "Status", value: (j) => j.status, cell: (j) => status(j.status) },
    { label: "Model", value: (j) => model(j.spec), cell: (j) => model(j.spec) },
    { label: "Preset", value: (j) => preset(j.spec), cell: (j) => preset(j.spec) },
    { label: "Step", value: (j) => j.step, cell: (j) => `${j.step} / ${j.spec.steps}`, num: true },
    { label: "Best val loss", value: (j) => j.best_val_loss, num: true },
    { label: "Elapsed", value: (j) => seconds(j.started_at, j.finished_at), cell: elapsed, num: true },
    { label: "Created", value: (j) => j.created_at, cell: (j) => when(j.created_at) },
  ];
  const refresh = async () => {
    const jobs = await api("/v1/jobs", {
      params: { status: chosen.status, sweep_id: chosen.sweep, limit: 200 },
    });
    count.textContent = `${jobs.count} job${jobs.count === 1 ? "" : "s"}${jobs.count > jobs.data.length ? `, newest ${jobs.data.length} shown` : ""}`;
    fill(holder, jobs.data.length ? table(columns, jobs.data) : h("p", { class: "muted" }, "No jobs match."));
    holder.dataset.rows = String(jobs.data.length);
  };
  const filter = () => {
    chosen.status = statusSelect.value;
    chosen.sweep = sweepSelect.value;
    replaceQuery("/jobs", Object.entries(chosen));
    refresh();
  };
  statusSelect.addEventListener("change", filter);
  sweepSelect.addEventListener("change", filter);
  await refresh();
  context.every(3000, refresh);
}

// The job page's charts: which series each shows, matched by name.
const PANELS = [
  { name: "loss", title: "Loss", yLabel: "loss", logToggle: true, match: (n) => n === "train_loss" || n === "val_loss" },
  { name: "lr", title: "Learning rate per class", yLabel: "lr", match: (n) => n.startsWith("lr/") },
  { name: "throughput", title: "Throughput", yLabel: "tokens/s", match: (n) => n === "tokens_per_s" },
  { name: "grad_norm", title: "Gradient norm per class", yLabel: "‖g‖", logY: true,
    match: (n) => n === "grad_norm" || n.startsWith("grad_norm/") },
  { name: "update_rms", title: "Update RMS per class", yLabel: "rms Δw", logY: true, match: (n) => n.startsWith("update_rms/") },
  { name: "moe", title: "MoE load imbalance (mean over layers)", yLabel: "",
    match: (n) => /^moe\/(load_cv|max_mean_load|maxvio|dead_expert_fraction|load_balancing_loss)$/.test(n) },
  { name: "moe_layers", title: "MoE max/mean expert load per layer", yLabel: "max/mean",
    match: (n) => /^moe\/layer\d+\/max_mean_load$/.test(n) },
];
const LOSS_ORDER = ["train_loss", "val_loss"];

export async function jobPage(root, { id, context }) {
  let job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  const header = h("section", { class: "card" });
  const grid = h("div", { class: "grid" });
  const logs = h("pre", { class: "logs", id: "logs" });
  root.append(header, grid,
    card("Spec", h("pre", { id: "spec" }, JSON.stringify(job.spec, null, 2))),
    card("Logs", logs));

  const cancel = h("button", { type: "button", class: "danger", id: "cancel", onclick: async () => {
    cancel.disabled = true;
    job = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    drawHeader();
  } }, "Cancel job");
  const drawHeader = () => {
    cancel.hidden = TERMINAL.has(job.status) || job.status === "cancelling";
    fill(header,
      h("div", { class: "chart-head" }, h("h1", {}, job.name || job.id), cancel),
      facts([
        ["Status", status(job.status)],
        ["Model", model(job.spec)],
        ["Preset", preset(job.spec)],
        ["Step", `${job.step} / ${job.spec.steps}`],
        ["Best val loss", num(job.best_val_loss)],
        ["Elapsed", elapsed(job)],
        ["Attempt", `${job.attempt} / ${job.max_attempts}`],
        ["Run by", h("span", { id: "run-by" }, runBy(job))],
        ["Sweep", job.sweep_id ? h("a", { href: `#/sweep/${job.sweep_id}` }, `trial ${job.trial_number}`) : "–"],
        ["Id", h("code", {}, job.id)],
      ]),
      job.queued_reason ? h("p", { class: "muted" }, job.queued_reason) : null,
      job.error ? h("pre", { class: "error" }, job.error) : null);
    header.dataset.status = job.status;
  };
  drawHeader();

  // One chart per panel that has data, made when its first series arrives.
  const panels = PANELS.map((p) => ({ ...p, curves: null, card: null }));
  context.onLeave(() => panels.forEach((p) => p.curves?.destroy()));
  const feed = new MetricsFeed(id, (name) => PANELS.some((p) => p.match(name)));
  const draw = () => {
    for (const panel of panels) {
      const names = [...feed.series.keys()].filter(panel.match).sort((a, b) =>
        panel.name === "loss" ? LOSS_ORDER.indexOf(a) - LOSS_ORDER.indexOf(b) : a.localeCompare(b));
      const entries = names.map((n) => ({ label: n, x: feed.series.get(n).steps, y: feed.series.get(n).values }))
        .filter((e) => e.x.length);
      if (!entries.length) continue;
      if (!panel.curves) {
        const element = h("div", { class: "chart" });
        const toggle = panel.logToggle && h("label", {}, h("input", { type: "checkbox", id: `log-${panel.name}`,
          onchange: (event) => panel.curves.setLogY(event.target.checked) }), " log scale");
        panel.card = h("section", { class: "card" }, h("div", { class: "chart-head" }, h("h2", {}, panel.title), toggle), element);
        // Panels keep their order whatever arrives first.
        const after = panels.slice(0, panels.indexOf(panel)).reverse().find((p) => p.card);
        after ? after.card.after(panel.card) : grid.prepend(panel.card);
        panel.curves = new Curves(element, panel.name, { yLabel: panel.yLabel, logY: Boolean(panel.logY) });
      }
      panel.curves.show(entries);
    }
  };
  await feed.load(draw); // the loss first, then the diagnostics

  let afterId = 0;
  const readLogs = async () => {
    const page = await api(`/v1/jobs/${encodeURIComponent(id)}/logs`, { params: { after_id: afterId } });
    afterId = page.last_id;
    if (page.data.length) {
      logs.append(page.data.map((e) => `${when(e.time)}  step ${e.step ?? "–"}  ${e.message}\n`).join(""));
    }
    if (!logs.textContent) logs.textContent = "";
  };
  await readLogs();

  if (TERMINAL.has(job.status)) return;
  // Live: the job's row, new points since the newest step held, new log lines; stop once the
  // job has finished (its last points were stored before its final status).
  context.every(1000, async () => {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    drawHeader();
    if (await feed.poll()) draw();
    await readLogs();
    return !TERMINAL.has(job.status);
  });
}

export async function comparePage(root, { params, context }) {
  const ids = (params.get("ids") || "").split(",").filter(Boolean);
  const recent = await api("/v1/jobs", { params: { limit: 50 } });
  const chosen = new Set(ids);
  const picker = h("div", { class: "toolbar" },
    recent.data.map((job) => h("label", {}, h("input", {
      type: "checkbox", value: job.id, checked: chosen.has(job.id),
      onchange: (event) => { event.target.checked ? chosen.add(job.id) : chosen.delete(job.id); },
    }), `${job.name} (${preset(job.spec)})`)),
    h("button", { type: "button", class: "primary",
      onclick: () => { location.hash = `#/compare?ids=${[...chosen].join(",")}`; } }, "Show"));
  root.append(h("h1", {}, "Compare jobs"), card("Jobs", picker));
  if (!ids.length) {
    root.append(h("p", { class: "muted" }, "Choose jobs above, or select them in the job list."));
    return;
  }
  const jobs = await Promise.all(ids.map((id) => api(`/v1/jobs/${encodeURIComponent(id)}`)));
  const feeds = jobs.map((job) => new MetricsFeed(job.id, (n) => ["train_loss", "val_loss", "tokens"].includes(n)));
  await Promise.all(feeds.map((feed) => feed.load()));
  const label = (job) => `${job.name} · ${preset(job.spec)} · ${job.id.slice(0, 6)}`;
  // Against steps, or against training tokens (fair when batch sizes differ): the `tokens`
  // series at each logged step, else steps x batch x seq_len (evaluations at step 0, ...).
  let axis = "step";
  const xOf = (job, feed, steps) => {
    if (axis === "step") return steps;
    const tokens = feed.series.get("tokens") || { steps: [], values: [] };
    const at = new Map(tokens.steps.map((s, i) => [s, tokens.values[i]]));
    return steps.map((s) => at.get(s) ?? s * job.spec.batch.size * job.spec.data.seq_len);
  };
  const axisSelect = h("select", { "aria-label": "x axis", onchange: (event) => {
    axis = event.target.value;
    charts.forEach((c) => c.curves.relabel(axis));
    draw();
  } }, h("option", { value: "step" }, "x: steps"), h("option", { value: "tokens" }, "x: tokens"));
  root.append(h("div", { class: "toolbar" }, axisSelect));
  const charts = ["train_loss", "val_loss"].map((series) => {
    const element = h("div", { class: "chart" });
    const curves = new Curves(element, `compare_${series}`, { yLabel: series });
    const toggle = h("label", {}, h("input", { type: "checkbox",
      onchange: (event) => curves.setLogY(event.target.checked) }), " log scale");
    root.append(card(null, h("div", { class: "chart-head" }, h("h2", {}, series.replace("_", " ")), toggle), element));
    return { series, curves };
  });
  context.onLeave(() => charts.forEach((c) => c.curves.destroy()));
  const draw = () => {
    for (const { series, curves } of charts) {
      curves.show(jobs.map((job, i) => {
        const held = feeds[i].series.get(series) || { steps: [], values: [] };
        return { label: label(job), x: xOf(job, feeds[i], held.steps), y: held.values };
      }));
    }
  };
  draw();
  root.append(card("Summary", table([
    { label: "Job", value: (j) => j.name, cell: jobLink },
    { label: "Status", value: (j) => j.status, cell: (j) => status(j.status) },
    { label: "Preset", value: (j) => preset(j.spec), cell: (j) => preset(j.spec) },
    { label: "lr", value: (j) => j.spec.optimizer?.lr ?? null, num: true },
    { label: "Batch", value: (j) => j.spec.batch?.size ?? null, num: true },
    { label: "Best val loss", value: (j) => j.best_val_loss, num: true },
    { label: "Elapsed", value: (j) => seconds(j.started_at, j.finished_at), cell: elapsed, num: true },
  ], jobs)));
  // Running jobs keep growing here too.
  context.every(2000, async () => {
    const running = jobs.map((job, i) => [job, i]).filter(([job]) => !TERMINAL.has(job.status));
    if (!running.length) return false;
    for (const [job, i] of running) {
      jobs[i] = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
      await feeds[i].poll();
    }
    draw();
    return true;
  });
}
