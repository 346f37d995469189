// Jobs: one job live, and several jobs overlaid (the list is the runs table, runs.js).

import { api, MetricsFeed } from "./api.js";
import { csvText, download, fileName } from "./csv.js";
import { curveControls, Curves, X_AXES, xScale } from "./curves.js";
import { baseLr, classLrs, presetTable } from "./effective.js";
import { jobLink, lr, model, preset, runBy } from "./runs.js";
import { card, duration, fill, facts, h, num, seconds, status, table, TERMINAL, when } from "./ui.js";

// Points per series a chart's history holds (thinned by the service, extremes kept): more than a
// chart's pixels, far fewer than a 100k-step run's points.
const CHART_POINTS = 4000;

const elapsed = (job) => duration(seconds(job.started_at, job.finished_at));

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
// What the x axes are made of (curves.js xScale), held beside the panels' series.
const X_SERIES = ["tokens", "step_time_s"];

/** Each job's step -> x for `axis`, and the axis label; all on steps when one of the jobs
 * cannot give `axis` (an agent's job may report no step times). */
function xScales(axis, jobs, feeds) {
  const scales = jobs.map((job, i) => xScale(axis, job, feeds[i]));
  if (scales.every(Boolean)) return { scales, label: X_AXES[axis][1] };
  return { scales: jobs.map(() => (step) => step), label: `step (no ${axis} recorded)` };
}

/** Every series of a job as CSV: one row per step, one column per series (losses first). */
async function metricsCsv(job) {
  const feed = await new MetricsFeed(job.id, () => true, { first: [] }).load();
  const rank = (name) => (LOSS_ORDER.includes(name) ? LOSS_ORDER.indexOf(name) : LOSS_ORDER.length);
  const names = [...feed.series.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const steps = [...new Set(names.flatMap((n) => feed.series.get(n).steps))].sort((a, b) => a - b);
  const columns = names.map((n) => {
    const held = feed.series.get(n);
    return new Map(held.steps.map((s, i) => [s, held.values[i]]));
  });
  return csvText(["step", ...names], steps.map((s) => [s, ...columns.map((c) => c.get(s))]));
}

function cancelButton(job, onCancelled) {
  const button = h("button", { type: "button", class: "danger", id: "cancel", onclick: async () => {
    // A cancel cannot be undone, and the button sits where a click lands by mistake: ask first.
    const name = job().name || job().id;
    if (!confirm(`Cancel ${name}? A running job stops at its next step; a cancelled job is not run again.`)) return;
    button.disabled = true;
    onCancelled(await api(`/v1/jobs/${encodeURIComponent(job().id)}/cancel`, { method: "POST" }));
  } }, "Cancel job");
  return button;
}

export async function jobPage(root, { id, context }) {
  let job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  const header = h("section", { class: "card" });
  const grid = h("div", { class: "grid" });
  const logs = h("pre", { class: "logs", id: "logs" });
  const view = { axis: "step", smoothing: 0 };
  const csvButton = h("button", { type: "button", id: "job-csv", onclick: async () => {
    download(fileName(`${job.name || job.id}-metrics`), await metricsCsv(job));
  } }, "Download metrics CSV");
  const controls = h("div", { class: "chart-head", id: "curve-controls" },
    curveControls((chosen) => {
      Object.assign(view, chosen);
      draw();
    }), csvButton);
  root.append(header, controls, grid,
    card("Spec", h("pre", { id: "spec" }, JSON.stringify(job.spec, null, 2))),
    card("Logs", logs));

  const cancel = cancelButton(() => job, (answer) => {
    job = answer;
    drawHeader();
  });
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
  const feed = new MetricsFeed(id, (name) => X_SERIES.includes(name) || PANELS.some((p) => p.match(name)),
    { maxPoints: CHART_POINTS });
  const addPanel = (panel) => {
    const element = h("div", { class: "chart" });
    const toggle = panel.logToggle && h("label", {}, h("input", { type: "checkbox", id: `log-${panel.name}`,
      onchange: (event) => panel.curves.setLogY(event.target.checked) }), " log scale");
    panel.card = h("section", { class: "card" }, h("div", { class: "chart-head" }, h("h2", {}, panel.title), toggle), element);
    // Panels keep their order whatever arrives first.
    const after = panels.slice(0, panels.indexOf(panel)).reverse().find((p) => p.card);
    after ? after.card.after(panel.card) : grid.prepend(panel.card);
    panel.curves = new Curves(element, panel.name, { yLabel: panel.yLabel, logY: Boolean(panel.logY) });
  };
  const draw = () => {
    const { scales: [scale], label } = xScales(view.axis, [job], [feed]);
    for (const panel of panels) {
      const names = [...feed.series.keys()].filter(panel.match).sort((a, b) =>
        panel.name === "loss" ? LOSS_ORDER.indexOf(a) - LOSS_ORDER.indexOf(b) : a.localeCompare(b));
      const entries = names.map((n) => ({ label: n, x: feed.series.get(n).steps.map(scale), y: feed.series.get(n).values }))
        .filter((e) => e.x.length);
      if (!entries.length) continue;
      if (!panel.curves) addPanel(panel);
      if (panel.curves.axis.xLabel !== label) panel.curves.relabel(label);
      panel.curves.smoothing = view.smoothing;
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

// The compare page's choice of jobs: the chosen ones (each removable) and a select to add one.
function comparePicker(ids, recent) {
  const go = (chosen) => { location.hash = `#/compare?ids=${chosen.join(",")}`; };
  const names = new Map(recent.map((job) => [job.id, job]));
  const chips = ids.map((id) => h("span", { class: "chip" }, names.has(id) ? names.get(id).name : id.slice(0, 8),
    h("button", { type: "button", class: "link", "aria-label": `remove ${names.get(id)?.name ?? id}`,
      onclick: () => go(ids.filter((other) => other !== id)) }, "✕")));
  const add = h("select", { "aria-label": "add a job", onchange: (event) => go([...ids, event.target.value]) },
    h("option", { value: "" }, "add a job…"),
    recent.filter((job) => !ids.includes(job.id)).map((job) => h("option", { value: job.id }, `${job.name} (${preset(job.spec)})`)));
  return h("div", { class: "toolbar" }, chips, add, h("a", { href: "#/jobs" }, "choose in the runs table"));
}

// "embedding 0.0012 · lm_head 0.0003": a job's class lrs in one cell.
const classLrText = (lrs) => Object.entries(lrs).map(([c, v]) => `${c} ${lr(v)}`).join(" · ") || "–";

export async function comparePage(root, { params, context }) {
  const ids = (params.get("ids") || "").split(",").filter(Boolean);
  const [recent, presets] = await Promise.all([api("/v1/jobs", { params: { limit: 50 } }), presetTable()]);
  root.append(h("h1", {}, "Compare jobs"), card("Jobs", comparePicker(ids, recent.data)));
  if (!ids.length) {
    root.append(h("p", { class: "muted" }, "Add jobs above, or select them in the runs table."));
    return;
  }
  const jobs = await Promise.all(ids.map((id) => api(`/v1/jobs/${encodeURIComponent(id)}`)));
  const wanted = (n) => ["train_loss", "val_loss", ...X_SERIES].includes(n);
  const feeds = jobs.map((job) => new MetricsFeed(job.id, wanted, { maxPoints: CHART_POINTS }));
  await Promise.all(feeds.map((feed) => feed.load()));
  const label = (job) => `${job.name} · ${preset(job.spec)} · ${job.id.slice(0, 6)}`;
  // Against steps, tokens (fair when batch sizes differ) or training time, smoothed or not.
  const view = { axis: "step", smoothing: 0 };
  root.append(curveControls((chosen) => {
    Object.assign(view, chosen);
    draw();
  }));
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
    const { scales, label: xLabel } = xScales(view.axis, jobs, feeds);
    for (const { series, curves } of charts) {
      if (curves.axis.xLabel !== xLabel) curves.relabel(xLabel);
      curves.smoothing = view.smoothing;
      curves.show(jobs.map((job, i) => {
        const held = feeds[i].series.get(series) || { steps: [], values: [] };
        return { label: label(job), x: held.steps.map(scales[i]), y: held.values };
      }));
    }
  };
  draw();

  // The summary, as `symopt compare` prints it: lr is the effective one (the preset's default
  // when the spec leaves it out); each class's lr follows from the job's metrics.
  const lrs = new Map();
  const summary = h("div", { id: "compare-summary" });
  const drawSummary = () => fill(summary, table([
    { label: "Job", value: (j) => j.name, cell: jobLink },
    { label: "Status", value: (j) => j.status, cell: (j) => status(j.status) },
    { label: "Preset", value: (j) => preset(j.spec), cell: (j) => preset(j.spec) },
    { label: "lr", value: (j) => baseLr(j, presets), cell: (j) => lr(baseLr(j, presets)), num: true },
    { label: "lr per class", value: (j) => classLrText(lrs.get(j.id) || {}), cell: (j) => classLrText(lrs.get(j.id) || {}) },
    { label: "Batch", value: (j) => j.spec.batch?.size ?? null, num: true },
    { label: "Best val loss", value: (j) => j.best_val_loss, num: true },
    { label: "Final val loss", value: (j) => j.result?.val_loss ?? null, num: true },
    { label: "Tokens", value: (j) => j.result?.tokens ?? null, num: true },
    { label: "Elapsed", value: (j) => seconds(j.started_at, j.finished_at), cell: elapsed, num: true },
  ], jobs));
  root.append(card("Summary", summary));
  drawSummary();
  jobs.forEach((job) => classLrs(job.id).then((found) => {
    lrs.set(job.id, found);
    if (context.alive) drawSummary();
  }, () => {}));

  // Running jobs keep growing here too.
  context.every(2000, async () => {
    const running = jobs.map((job, i) => [job, i]).filter(([job]) => !TERMINAL.has(job.status));
    if (!running.length) return false;
    for (const [job, i] of running) {
      jobs[i] = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
      await feeds[i].poll();
    }
    draw();
    drawSummary();
    return true;
  });
}
