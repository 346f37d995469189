// Sweeps: the list, and one sweep's progress, best trial, plots, importances and trials.

import { api } from "./api.js";
import { Chart, color, PRUNED, scatterData, scatterOptions } from "./charts.js";
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

/** The lr the plots use: optimizer.lr when tuned, else the first tuned step size. */
function lrParam(names) {
  return names.includes("optimizer.lr") ? "optimizer.lr" : names.find((n) => /(^|\.)lr$/.test(n)) ?? null;
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

export async function sweepPage(root, { id, context }) {
  const header = h("section", { class: "card" });
  const grid = h("div", { class: "grid" });
  const importances = h("section", { class: "card", id: "importances" });
  const trialsCard = h("section", { class: "card", id: "trials" });
  const optuna = h("section", { class: "card", id: "optuna" });
  root.append(header, grid, importances, trialsCard, optuna);
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
    const [sweep, trials, past, weights] = await Promise.all([
      api(path), api(`${path}/trials`), api(`${path}/history`), api(`${path}/importances`)]);
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
    const names = [...new Set(points.flatMap((p) => Object.keys(p.trial.params)))];
    const lr = lrParam(names);
    const scatter = [[lr, "objective vs " + lr, { logX: true }], ["batch.size", "objective vs batch size", { log2X: true }]];
    for (const [param, title, scale] of scatter) {
      if (!param || !names.includes(param)) continue;
      const chart = charts[param] ?? chartCard(param, title);
      const at = points.filter((p) => typeof p.trial.params[param] === "number")
        .map((p) => ({ x: p.trial.params[param], y: p.y, group: p.group }));
      chart.draw(scatterOptions({ groups, xLabel: param, yLabel: "objective", ...scale }), scatterData(at, groups));
    }

    fill(importances, h("h2", {}, "Parameter importances"), ...Object.entries(weights).map(([p, values]) => {
      const entries = Object.entries(values).sort((a, b) => b[1] - a[1]);
      return h("div", {}, presets.length > 1 ? h("h3", {}, p) : null, entries.length
        ? h("div", { class: "bars" }, entries.flatMap(([name, v]) => [
          h("span", {}, name), h("div", { class: "bar", style: `width: ${Math.max(1, v * 100)}%` }), h("span", {}, v.toFixed(2))]))
        : h("p", { class: "muted" }, "Known once two trials have finished."));
    }));

    const paramNames = [...new Set(trials.data.flatMap((t) => Object.keys(t.params)))];
    fill(trialsCard, h("h2", {}, `Trials (${trials.count})`), table([
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

    const studies = past.data.map((s) => s.study);
    fill(optuna, h("h2", {}, "Open in optuna-dashboard"),
      h("p", {}, "The sweep's Optuna studies live in the service's own database. optuna-dashboard is a separate program " +
        "(pip install optuna-dashboard); run it on the service's machine against the same database URL:"),
      h("pre", { id: "optuna-command" },
        'optuna-dashboard "${SYMOPT_DATABASE_URL:-sqlite:///${SYMOPT_HOME:-$HOME/.symopt}/symopt.db}"'),
      h("p", {}, `and open the stud${studies.length > 1 ? "ies" : "y"} `,
        studies.flatMap((s, i) => [i ? ", " : "", h("code", { class: "study-name" }, s)]), "."));
    return !FINISHED.has(sweep.status);
  };
  if (await draw()) context.every(3000, draw);
}
