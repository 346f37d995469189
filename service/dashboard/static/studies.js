// Comparison studies: the list, and one study's result table, verdicts (against the baseline and
// between the other candidates) and seed-band curves.

import { api } from "./api.js";
import { bandOptions, Chart } from "./charts.js";
import { transferCards } from "./transfer.js";
import { card, facts, fill, h, num, params, status, table, when } from "./ui.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const names = (study) => study.spec.candidates.map((c) => (typeof c === "string" ? c : c.name)).join(", ");

export async function studiesPage(root, { context }) {
  const holder = h("div", { id: "studies-table" });
  root.append(h("h1", {}, "Comparison studies"), card(null, holder));
  const refresh = async () => {
    const studies = await api("/v1/studies", { params: { limit: 200 } });
    fill(holder, studies.data.length ? table([
      { label: "Study", value: (s) => s.name, cell: (s) => h("a", { href: `#/study/${s.id}` }, s.name) },
      { label: "Status", value: (s) => s.status, cell: (s) => status(s.status) },
      { label: "Stage", value: (s) => s.stage, cell: (s) => s.stage },
      { label: "Candidates", value: names, cell: names },
      { label: "Created", value: (s) => s.created_at, cell: (s) => when(s.created_at) },
    ], studies.data) : h("p", { class: "muted" }, "No studies yet: symopt study submit study.yaml"));
  };
  await refresh();
  context.every(5000, refresh);
}

const interval = (i) => (i ? `[${num(i.low)}, ${num(i.high)}]` : "–");
const sweepLink = (c) => (c.sweep_id ? h("a", { href: `#/sweep/${c.sweep_id}` }, c.name) : c.name);

export async function studyPage(root, { id, context }) {
  const header = h("section", { class: "card" });
  const verdicts = h("section", { class: "card", id: "verdicts" });
  const results = h("section", { class: "card", id: "results" });
  const comparisons = h("section", { class: "card", id: "comparisons" });
  const curveElement = h("div", { class: "chart" });
  const tuning = h("section", { class: "card", id: "tuning" });
  const transfer = h("div", { id: "transfer" }); // a proxy study: each candidate's transfer across width
  root.append(header, verdicts, results, comparisons,
    card("Validation loss over seeds (mean, min–max band)", curveElement), tuning, transfer);
  let curves = null;
  const transferCharts = {};
  context.onLeave(() => { curves?.destroy(); Object.values(transferCharts).forEach((c) => c.destroy()); });

  const draw = async () => {
    const study = await api(`/v1/studies/${encodeURIComponent(id)}`);
    const result = study.result;
    const confirmation = study.progress.confirmation;
    fill(header, h("h1", {}, `Study ${study.name}`), facts([
      ["Status", status(study.status)],
      ["Stage", study.stage],
      ["Objective", study.spec.objective],
      ["Baseline", result?.baseline ?? "–"],
      ["Seeds", result ? result.seeds.join(", ") : "–"],
      ["Target loss", num(result?.target_loss)],
      ["Confirmation runs", `${confirmation.finished} / ${confirmation.planned} finished`],
      // every run of an agents study is claimed by users' own training scripts
      ...(study.spec.executor === "agents" ? [["Executor", "agents (your own training scripts)"]] : []),
    ]), study.error ? h("pre", { class: "error" }, study.error) : null);

    fill(tuning, h("h2", {}, "Tuning (stage 1): each candidate's sweep"),
      table([
        { label: "Candidate", value: (r) => r.name, cell: (r) => (r.sweep_id ? h("a", { href: `#/sweep/${r.sweep_id}` }, `${r.name}: sweep plots`) : r.name) },
        { label: "Status", value: (r) => r.status, cell: (r) => status(r.status) },
        { label: "Trials", value: (r) => r.trials_finished, cell: (r) => `${r.trials_finished} / ${r.n_trials}`, num: true },
      ], Object.entries(study.progress.tuning).map(([name, t]) => ({ name, ...t }))));

    if (!result) {
      fill(verdicts, h("h2", {}, "Verdicts"), h("p", { class: "muted" }, "No result yet."));
      return !FINISHED.has(study.status);
    }
    // Between the other candidates (a before b, as listed); absent from results stored before it existed.
    const pairwise = result.pairwise_verdicts ?? [];
    const caveats = result.caveats ?? []; // what the verdicts rest on
    fill(verdicts, h("h2", {}, "Verdicts"), result.verdicts.length
      ? h("ul", { class: "verdicts" }, result.verdicts.map((v) => h("li", {}, v)))
      : h("p", { class: "muted" }, "None yet: they need the confirmation runs."),
      pairwise.length ? [h("h3", {}, "Between the other candidates"),
        h("ul", { class: "verdicts", id: "pairwise" }, pairwise.map((v) => h("li", {}, v)))] : null,
      caveats.length ? [h("h3", {}, "What these verdicts rest on"),
        h("ul", { class: "caveats", id: "caveats" }, caveats.map((c) => h("li", {}, c)))] : null);

    const transfers = result.candidates.filter((c) => c.tuned?.transfer).map((c) => ({ ...c.tuned.transfer, name: c.name }));
    if (transfers.length) transferCards(transfer, transfers, transferCharts);

    const objective = (c, seed) => c.runs.find((r) => r.seed === seed)?.objective ?? null;
    fill(results, h("h2", {}, `Result (${result.objective}, ${Math.round(result.statistics.confidence * 100)}% intervals)`),
      table([
        { label: "Candidate", value: (c) => c.name, cell: sweepLink },
        { label: "Tuned", value: (c) => JSON.stringify(c.tuned?.params ?? {}),
          cell: (c) => (c.tuned ? params(c.tuned.params) : "–") },
        ...result.seeds.map((seed) => ({ label: `seed ${seed}`, value: (c) => objective(c, seed), num: true })),
        { label: "Mean", value: (c) => c.summary?.mean ?? null, num: true },
        { label: "Std", value: (c) => c.summary?.std ?? null, num: true },
        { label: "Bootstrap CI", value: (c) => c.summary?.bootstrap?.low ?? null, cell: (c) => interval(c.summary?.bootstrap), num: true },
        { label: "t CI", value: (c) => c.summary?.t?.low ?? null, cell: (c) => interval(c.summary?.t), num: true },
        { label: "Tokens to target", value: (c) => c.tokens_to_target?.mean ?? null,
          cell: (c) => `${num(c.tokens_to_target?.mean ?? null)} (${c.tokens_to_target?.reached ?? 0}/${c.tokens_to_target?.runs ?? 0} runs)`, num: true },
      ], result.candidates, { sortable: true }));

    fill(comparisons, h("h2", {}, `Against the baseline (${result.baseline}), paired by seed`),
      result.comparisons.length ? table([
        { label: "Candidate", value: (d) => d.candidate, cell: (d) => d.candidate },
        { label: "Mean difference", value: (d) => d.summary.mean, num: true },
        { label: "Bootstrap CI", value: (d) => d.summary.bootstrap.low, cell: (d) => interval(d.summary.bootstrap), num: true },
        { label: "t CI", value: (d) => d.summary.t.low, cell: (d) => interval(d.summary.t), num: true },
        { label: "Verdict", value: (d) => d.verdict, cell: (d) => d.verdict },
      ], result.comparisons) : h("p", { class: "muted" }, "No comparison yet."));

    // One mean line and min-max band per candidate, against training tokens (batch sizes may differ).
    const withCurve = result.candidates.filter((c) => c.curve.tokens.length);
    const series = withCurve.flatMap((c) => [
      { x: c.curve.tokens, y: c.curve.mean }, { x: c.curve.tokens, y: c.curve.min }, { x: c.curve.tokens, y: c.curve.max }]);
    const xs = [...new Set(series.flatMap((s) => s.x))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const data = [xs, ...series.map((s) => {
      const y = new Array(xs.length).fill(null);
      s.x.forEach((x, i) => { y[at.get(x)] = s.y[i]; });
      return y;
    })];
    curves ??= new Chart(curveElement, "study_curves", { height: 300 });
    curves.bands = withCurve.length;
    curves.draw(bandOptions({ labels: withCurve.map((c) => c.name), xLabel: "tokens", yLabel: "val loss" }), data);
    return !FINISHED.has(study.status);
  };
  if (await draw()) context.every(5000, draw);
}
