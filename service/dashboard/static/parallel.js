// Parallel coordinates of a sweep's trials, as optuna-dashboard draws them: one vertical axis per
// searched parameter and one for the objective, each completed trial a line across them,
// coloured by its objective (dark: better). Plain SVG: uPlot has no such chart.
//
// The element carries data-lines (trials drawn) and data-axes (the axes' names, in order).

import { short } from "./charts.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 320;
const MARGIN = { top: 44, bottom: 26, side: 46 };
const AXIS_WIDTH = 88; // the least room per axis: narrow screens scroll the chart sideways
const BETTER = [30, 58, 138]; // #1e3a8a
const WORSE = [186, 211, 250]; // #bad3fa

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/**
 * value -> position in [0, 1] (0: the axis' bottom) for one dimension {kind, categories}, with
 * the tick values to label; null when the value cannot sit on this axis.
 */
function scaleOf(dimension, values) {
  if (dimension.kind === "category") {
    const n = dimension.categories.length;
    const at = (v) => {
      const i = dimension.categories.findIndex((c) => String(c) === String(v));
      return i < 0 ? null : n === 1 ? 0.5 : i / (n - 1);
    };
    return { at, ticks: dimension.categories.map((c) => [at(c), String(c)]) };
  }
  const log = dimension.kind === "log" || dimension.kind === "log2";
  const t = (v) => (log ? Math.log(v) : v);
  const known = values.filter((v) => typeof v === "number" && Number.isFinite(v) && (!log || v > 0));
  const low = Math.min(...known.map(t));
  const high = Math.max(...known.map(t));
  const at = (v) => {
    if (typeof v !== "number" || !Number.isFinite(v) || (log && v <= 0)) return null;
    return high > low ? (t(v) - low) / (high - low) : 0.5;
  };
  const ends = known.length ? [Math.min(...known), Math.max(...known)] : [];
  return { at, ticks: [...new Set(ends)].map((v) => [at(v), short(v, 4)]) };
}

// Dark for the best objective, light for the worst, in between by rank.
function shade(rank) {
  const mix = BETTER.map((c, i) => Math.round(c + (WORSE[i] - c) * rank));
  return `rgb(${mix.join(",")})`;
}

// "optimizer.overrides.embedding.lr_scale" -> "embedding.lr_scale": what fits above an axis.
const shortName = (name) => name.split(".").slice(-2).join(".");

/**
 * Draw `trials` [{params, objective, label}] in `element` across `dimensions` [{name, kind,
 * categories?}] and the objective; a trial without a value on some axis is broken there.
 */
export function drawParallel(element, { dimensions, trials, objective = "objective" }) {
  const axes = [...dimensions, { name: objective, kind: "linear", objective: true }];
  const valueOf = (trial, axis) => (axis.objective ? trial.objective : trial.params[axis.name]);
  const scales = axes.map((axis) => scaleOf(axis, trials.map((t) => valueOf(t, axis))));
  const width = Math.max(element.clientWidth || 600, axes.length * AXIS_WIDTH);
  const xAt = (i) => MARGIN.side + (axes.length > 1 ? (i * (width - 2 * MARGIN.side)) / (axes.length - 1) : 0);
  // Values keep 4% off each end of the axis, clear of the tick labels there.
  const yAt = (p) => MARGIN.top + (1 - (0.04 + 0.92 * p)) * (HEIGHT - MARGIN.top - MARGIN.bottom);

  // Worst first, so that the best lines are drawn last, on top.
  const ranked = [...trials].sort((a, b) => b.objective - a.objective);
  const lines = ranked.map((trial, r) => {
    let d = "";
    let open = false;
    axes.forEach((axis, i) => {
      const p = scales[i].at(valueOf(trial, axis));
      if (p === null) { open = false; return; }
      d += `${open ? "L" : "M"}${xAt(i).toFixed(1)},${yAt(p).toFixed(1)}`;
      open = true;
    });
    const rank = ranked.length > 1 ? 1 - r / (ranked.length - 1) : 0;
    return svg("path", { d, class: "trial-line", stroke: shade(rank), fill: "none", "stroke-width": "1.6" },
      svg("title", {}, trial.label));
  });
  const axisMarks = axes.map((axis, i) => svg("g", { class: "axis" },
    svg("line", { x1: xAt(i), x2: xAt(i), y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom, stroke: "#6b7280" }),
    // Names alternate between two rows, so that neighbours never overlap.
    svg("text", { x: xAt(i), y: i % 2 ? 30 : 14, "text-anchor": "middle", class: "axis-name" },
      shortName(axis.name), svg("title", {}, axis.name)),
    ...scales[i].ticks.map(([p, text]) => svg("text", { x: xAt(i) + 4, y: yAt(p) + 4, class: "tick" }, text))));
  element.replaceChildren(svg("svg", { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img",
    "aria-label": `parallel coordinates of ${trials.length} trials` }, ...lines, ...axisMarks));
  element.dataset.lines = String(lines.length);
  element.dataset.axes = JSON.stringify(axes.map((a) => a.name));
}
