// A proxy sweep's transfer across width (GET /v1/sweeps/{id}/transfer, or a proxy study's
// candidates' tuned.transfer): the classic transfer plot, objective against lr with one curve per
// width, then each width's best lr, the slope of log lr on log width with its interval, the
// recommended full-size lr, the caveats and the confirmation runs at full size.

import { Chart, color } from "./charts.js";
import { scatterData, scatterOptions } from "./scatter.js";
import { h, num, status, table } from "./ui.js";

const slopeText = (slope) => (slope
  ? `${slope.slope >= 0 ? "+" : ""}${slope.slope.toFixed(2)}${slope.low === null ? " (no interval: two widths)"
    : ` [${slope.low.toFixed(2)}, ${slope.high.toFixed(2)}]`}`
  : "–");

/** Draw `entry` (one preset's or candidate's transfer) into `chart`; the elements beneath it. */
export function drawTransfer(chart, entry) {
  const groups = entry.sizes.map((size, i) => ({ label: `width ${size.width}`, color: color(i), curve: true }));
  const points = entry.sizes.flatMap((size) => size.trials.map((t) => ({ x: t.lr, y: t.objective, group: `width ${size.width}` })));
  chart.draw(scatterOptions({ groups, xLabel: "learning rate", yLabel: "objective", xKind: "log" }), scatterData(points, groups));
  const recommendation = entry.recommendation;
  const confirmation = entry.confirmation;
  return [
    h("div", { class: "transfer-widths" }, table([
      { label: "Width", value: (s) => s.width, num: true },
      { label: "Layers", value: (s) => s.layers, num: true },
      { label: "Trials", value: (s) => s.trials.length, num: true },
      { label: "Best lr (refined)", value: (s) => s.best?.fitted_lr ?? null, num: true },
      { label: "Best lr (tried)", value: (s) => s.best?.lr ?? null, num: true },
      { label: "Best objective", value: (s) => s.best?.objective ?? null, num: true },
    ], entry.sizes)),
    h("p", { class: "transfer-verdict" }, entry.verdict),
    h("p", {}, `Slope of log lr on log width: ${slopeText(entry.slope)}. Recommended lr at width ${entry.full_width}: `,
      h("strong", { class: "recommended-lr" }, recommendation ? num(recommendation.lr) : "–"),
      recommendation?.low != null ? ` (interval ${num(recommendation.low)} – ${num(recommendation.high)})` : ""),
    entry.caveats.length ? h("ul", { class: "caveats" }, entry.caveats.map((c) => h("li", {}, c))) : null,
    confirmation ? h("div", { class: "confirmation" },
      h("h3", {}, `Confirmation at full size (${confirmation.finished} / ${confirmation.planned} finished)`),
      table([
        { label: "Factor", value: (r) => r.factor, num: true },
        { label: "lr", value: (r) => r.lr, num: true },
        { label: "Seed", value: (r) => r.seed, num: true },
        { label: "Status", value: (r) => r.status, cell: (r) => status(r.status) },
        { label: "Objective", value: (r) => r.objective, num: true },
        { label: "Job", value: (r) => r.job_id, cell: (r) => h("a", { href: `#/job/${r.job_id}` }, r.job_id.slice(0, 8)) },
      ], confirmation.runs),
      confirmation.recommended_was_best === null ? null : h("p", { class: "confirmation-verdict" },
        confirmation.recommended_was_best ? "The recommended lr had the lowest mean objective of the factors run."
          : `The recommended lr was not the best: factor ${confirmation.best_factor} had the lowest mean objective.`))
      : null,
  ];
}

/** A card per entry, each with its own chart (`transfer-<name>`, kept in `charts` across redraws). */
export function transferCards(holder, entries, charts) {
  const drawn = entries.map((entry) => {
    const name = entry.name ?? entry.preset;
    charts[name] ??= new Chart(h("div", { class: "chart" }), `transfer-${name}`, { height: 280 });
    const below = h("div", {});
    const section = h("section", { class: "card transfer" }, h("h2", {}, `Transfer across width: ${name}`),
      charts[name].element, below);
    return { entry, chart: charts[name], section, below };
  });
  holder.replaceChildren(...drawn.map((d) => d.section));
  // Drawn once in the page, so that each chart takes its card's width.
  for (const { entry, chart, below } of drawn) below.append(...drawTransfer(chart, entry).filter(Boolean));
}
