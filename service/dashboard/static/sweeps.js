// Sweeps: the list, and one sweep's progress, best trial, plots (history, a slice per searched
// parameter, parallel coordinates), importances and trials (also as CSV).

import { api } from "./api.js";
import { Chart, color, PRUNED } from "./charts.js";
import { csvText, download, fileName } from "./csv.js";
import { drawParallel } from "./parallel.js";
import { scatterData, scatterOptions } from "./scatter.js";
import { transferCards } from "./transfer.js";
import { card, facts, fill, h, num, params, status, table, when } from "./ui.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

function progress(done, total) {
  const share = total ? Math.min(1, done / total) : 0;
  return h("div", { class: "progress", title: `${done} of ${total}` }, h("div", { style: `width: ${share * 100}%` }));
}

const presetsOf = (sweep) => sweep.spec.presets?.length ? sweep.spec.presets
  : [sweep.spec.base?.optimizer?.preset ?? "symmetric"];

export async function sweepsPage(root, { context }) {
  const holder = h("div", { id: "sweeps-table" });
  root.append(h("h1", {}, "Sweeps"), card(null, holder));
  const refresh = async () => {
    const sweeps = await api("/v1/sweeps", { params: { limit: 200 } });
    fill(holder, sweeps.data.length ? table([
      { label: "Sweep", value: (s) => s.name, cell: (s) => h("a", { href: `#/sweep/${s.id}` }, s.name) },
      { label: "Status", value: (s) => s.status, cell: (s) => status(s.status) },
      { label: "Presets", value: (s) => presetsOf(s).join(", "), cell: (s) => presetsOf(s).join(", ") },
      { label: "Trials", value: (s) => s.trials_finished, cell: (s) => `${s.trials_finished} / ${s.n_trials}`, num: true },
      { label: "Best objective", value: (s) => s.best?.objective ?? null, num: true },
      { label: "Created", value: (s) => s.created_at, cell: (s) => when(s.created_at) },
    ], sweeps.data) : h("p", { class: "muted" }, "No sweeps yet: symopt sweep submit sweep.yaml"));
  };
  await refresh();
  context.every(5000, refresh);
}

/**
 * Points of the sweep's plots from /history: a completed trial at its objective; a pruned one,
 * marked, at the last value it reported before the pruner stopped it.
 */
function historyPoints(history) {
  const finished = history.data.flatMap((study) => study.finished.map((t) => ({ ...t, preset: study.preset })));
  const done = (t) => t.completed_at ?? "";
  finished.sort((a, b) => done(a).localeCompare(done(b)) || a.number - b.number);
  return finished.map((trial, i) => ({
    order: i + 1,
    trial,
    group: trial.state === "pruned" ? "pruned" : trial.preset,
    y: trial.state === "complete" ? trial.objective
      : trial.state === "pruned" && trial.intermediate.length ? trial.intermediate.at(-1).value : null,
  })).filter((p) => p.y !== null);
}

// How a range of the search space is best drawn: lrs on a log axis, batch sizes on powers of two.
const KINDS = { log_uniform: "log", log_int: "log", pow2: "log2", categorical: "category", int: "linear", uniform: "linear" };

/** The searched parameters [{name, kind, categories, bounds}], in the search space's order, then any
 * other a trial holds (a sweep stored before search_space was kept). */
function dimensionsOf(sweep, points) {
  const ranges = new Map();
  for (const space of Object.values(sweep.search_space || {})) {
    for (const [name, range] of Object.entries(space)) if (!ranges.has(name)) ranges.set(name, range);
  }
  const names = [...new Set([...ranges.keys(), ...points.flatMap((p) => Object.keys(p.trial.params))])];
  return names.map((name) => {
    const range = ranges.get(name);
    const kind = range ? KINDS[range.type] ?? "linear" : /(^|\.)lr$/.test(name) ? "log" : "linear";
    const bounds = range && range.low !== null && range.high !== null ? [range.low, range.high] : null;
    return { name, kind, categories: kind === "category" ? range.choices : null, bounds };
  });
}

// A parameter's value on its slice's x axis: a category's index, else the value itself.
function xOfParam(dimension, value) {
  if (dimension.kind !== "category") return typeof value === "number" ? value : null;
  const i = dimension.categories.findIndex((c) => String(c) === String(value));
  return i < 0 ? null : i;
}

function trialsCsv(sweep, trials, paramNames) {
  const header = ["trial_number", "preset", "state", "status", "objective", ...paramNames,
    "pruned_at_tokens", "finished_at", "agent_host", "job_id"];
  const rows = trials.data.map((t) => [t.trial_number, t.preset, t.state, t.status, t.objective,
    ...paramNames.map((name) => t.params[name]), t.pruned_at_tokens, t.finished_at, t.agent_host, t.job_id]);
  download(fileName(`${sweep.name}-trials`), csvText(header, rows));
}

export async function sweepPage(root, { id, context }) {
  const header = h("section", { class: "card" });
  const grid = h("div", { class: "grid" });
  const parallel = h("div", { class: "parallel", id: "parallel-chart" });
  const parallelCard = h("section", { class: "card", id: "parallel", hidden: true },
    h("h2", {}, "Parallel coordinates (completed trials; dark: better)"), parallel);
  const importances = h("section", { class: "card", id: "importances" });
  const trialsCard = h("section", { class: "card", id: "trials" });
  const optuna = h("section", { class: "card", id: "optuna" });
  const transfer = h("div", { id: "transfer" }); // a proxy sweep's transfer across width
  root.append(header, transfer, grid, parallelCard, importances, trialsCard, optuna);
  const charts = {};
  const chartCard = (name, title) => {
    const element = h("div", { class: "chart" });
    grid.append(h("section", { class: "card" }, h("h2", {}, title), element));
    charts[name] = new Chart(element, name, { height: 260 });
    return charts[name];
  };
  const history = chartCard("history", "Optimization history");
  context.onLeave(() => Object.values(charts).forEach((c) => c.destroy()));

  const draw = async () => {
    const path = `/v1/sweeps/${encodeURIComponent(id)}`;
    const [sweep, trials, past, weights, across] = await Promise.all([
      api(path), api(`${path}/trials`), api(`${path}/history`), api(`${path}/importances`), api(`${path}/transfer`)]);
    if (across) transferCards(transfer, across.presets, charts);
    const presets = presetsOf(sweep);
    const best = sweep.best;
    const agents = sweep.spec.executor === "agents"; // trials run by users' own scripts
    fill(header,
      h("h1", {}, `Sweep ${sweep.name}`),
      facts([
        ["Status", status(sweep.status)],
        ["Trials", `${sweep.trials_finished} / ${sweep.n_trials} finished, ${sweep.trials_running} running`],
        ["Sampler", sweep.spec.sampler],
        ["Pruner", sweep.spec.pruner],
        ["Objective", sweep.spec.objective],
        ...(agents ? [["Executor", "agents (your own training scripts)"]] : []),
        ["Best", best ? h("span", {}, `${num(best.objective)} (`, h("a", { href: `#/job/${best.job_id}` },
          `trial ${best.trial_number}`), `, ${best.preset})`) : "–"],
        ["Jobs", h("a", { href: `#/jobs?sweep=${sweep.id}` }, "this sweep's jobs")],
      ]),
      progress(sweep.trials_finished, sweep.n_trials),
      best ? h("p", {}, "Best parameters: ", params(best.params)) : null,
      Object.keys(sweep.best_by_preset).length > 1 ? table([
        { label: "Preset", value: (t) => t.preset, cell: (t) => t.preset },
        { label: "Objective", value: (t) => t.objective, num: true },
        { label: "Params", value: (t) => JSON.stringify(t.params), cell: (t) => params(t.params) },
        { label: "Job", value: (t) => t.job_id, cell: (t) => h("a", { href: `#/job/${t.job_id}` }, `trial ${t.trial_number}`) },
      ], Object.values(sweep.best_by_preset)) : null,
      sweep.error ? h("pre", { class: "error" }, sweep.error) : null);

    // Plots: one colour per preset, pruned trials hollow and grey.
    const points = historyPoints(past);
    const groups = [...presets.map((p, i) => ({ label: p, color: color(i) })),
      { label: "pruned", color: PRUNED, hollow: true }];
    const bestLines = presets.map((p, i) => ({ label: `best ${p}`, color: color(i), line: true }));
    const order = [
      ...points.map((p) => ({ x: p.order, y: p.y, group: p.group })),
      ...points.filter((p) => p.trial.best_so_far !== null)
        .map((p) => ({ x: p.order, y: p.trial.best_so_far, group: `best ${p.trial.preset}` })),
    ];
    const everyGroup = [...groups, ...bestLines];
    history.draw(scatterOptions({ groups: everyGroup, xLabel: "trial (completion order)", yLabel: "objective", xWhole: true }),
      scatterData(order, everyGroup));

    // A slice per searched parameter: the objective against it, every trial a dot.
    const dimensions = dimensionsOf(sweep, points);
    for (const dimension of dimensions) {
      const chart = charts[dimension.name] ?? chartCard(dimension.name, `objective vs ${dimension.name}`);
      const at = points.map((p) => ({ x: xOfParam(dimension, p.trial.params[dimension.name]), y: p.y, group: p.group }));
      chart.draw(scatterOptions({ groups, xLabel: dimension.name, yLabel: "objective", xKind: dimension.kind,
        categories: dimension.categories, xBounds: dimension.bounds }), scatterData(at, groups));
    }

    const completed = points.filter((p) => p.trial.state === "complete");
    parallelCard.hidden = !dimensions.length || !completed.length;
    if (!parallelCard.hidden) {
      const presetAxis = presets.length > 1 ? [{ name: "preset", kind: "category", categories: presets }] : [];
      drawParallel(parallel, {
        dimensions: [...presetAxis, ...dimensions],
        trials: completed.map((p) => ({
          params: { ...p.trial.params, preset: p.trial.preset },
          objective: p.y,
          label: `trial ${p.trial.number} (${p.trial.preset}): objective ${num(p.y)}`,
        })),
      });
    }

    fill(importances, h("h2", {}, "Parameter importances"), ...Object.entries(weights).map(([p, values]) => {
      const entries = Object.entries(values).sort((a, b) => b[1] - a[1]);
      return h("div", {}, presets.length > 1 ? h("h3", {}, p) : null, entries.length
        ? h("div", { class: "bars" }, entries.flatMap(([name, v]) => [
          h("span", {}, name), h("div", { class: "bar", style: `width: ${Math.max(1, v * 100)}%` }), h("span", {}, v.toFixed(2))]))
        : h("p", { class: "muted" }, "Known once two trials have finished."));
    }));

    const paramNames = [...new Set(trials.data.flatMap((t) => Object.keys(t.params)))];
    fill(trialsCard, h("div", { class: "chart-head" }, h("h2", {}, `Trials (${trials.count})`),
      h("button", { type: "button", id: "trials-csv", onclick: () => trialsCsv(sweep, trials, paramNames) }, "Download CSV")),
    table([
      { label: "#", value: (t) => t.trial_number, num: true },
      { label: "Preset", value: (t) => t.preset, cell: (t) => t.preset },
      { label: "State", value: (t) => t.state, cell: (t) => status(t.state) },
      { label: "Objective", value: (t) => t.objective, num: true },
      ...paramNames.map((name) => ({ label: name, value: (t) => t.params[name] ?? null, num: true })),
      { label: "Pruned at tokens", value: (t) => t.pruned_at_tokens, num: true },
      { label: "Finished", value: (t) => t.finished_at, cell: (t) => when(t.finished_at) },
      ...(agents ? [{ label: "Agent", value: (t) => t.agent_host, cell: (t) => t.agent_host ?? "–" }] : []),
      { label: "Job", value: (t) => t.job_id, cell: (t) => h("a", { href: `#/job/${t.job_id}` }, t.job_id.slice(0, 8)) },
    ], trials.data, { sortable: true, sort: { column: 3 }, rowClass: (t) => (t.state === "pruned" ? "pruned" : "") }));

    // The API does not tell the database URL (it may hold a password): the command names the
    // service's own default, which `symopt serve` reads the same way.
    const studies = past.data.map((s) => s.study);
    fill(optuna, h("h2", {}, "Open in optuna-dashboard"),
      h("p", {}, "The sweep's Optuna studies live in the service's own database. optuna-dashboard is a separate " +
        "program for operators (pip install optuna-dashboard): it shows every tenant's studies in that database. " +
        "Run it on the service's machine against the database URL the service uses:"),
      h("pre", { id: "optuna-command" },
        'optuna-dashboard "${SYMOPT_DATABASE_URL:-sqlite:///${SYMOPT_HOME:-$HOME/.symopt}/symopt.db}"'),
      h("p", {}, `and open the stud${studies.length > 1 ? "ies" : "y"} `,
        studies.flatMap((s, i) => [i ? ", " : "", h("code", { class: "study-name" }, s)]), "."));
    return !FINISHED.has(sweep.status);
  };
  if (await draw()) context.every(3000, draw);
}
