// Charts on uPlot (the global `uPlot` from vendor/uPlot.iife.min.js).
//
// Every chart element carries what it plots, for tests and for anyone reading the page:
// data-points = {series label: number of points drawn} (updated on each draw), data-last =
// {series label: [x, y] of its last point}, data-bands = number of min-max bands and data-ticks =
// [x tick labels, y tick labels] as last drawn; window.__symopt.charts[name] holds the same
// (but data-last).

import { finite } from "./api.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
                "#7c3aed", "#0f766e", "#a16207", "#475569"];
export const color = (i) => COLORS[i % COLORS.length];
export const PRUNED = "#9ca3af";

window.__symopt = window.__symopt || { charts: {} };

// Points per series: what a scatter's path builder placed (uPlot's mode 2 keeps its own count in
// u.drawn), else the non-null values of the series' column (mode 1).
function drawnPoints(u) {
  const points = {};
  for (let i = 1; i < u.series.length; i++) {
    if (u.series[i].label.startsWith("_")) continue; // band edges: drawn, but not data of their own
    if (u.mode === 2) points[u.series[i].label] = u.series[i].show ? u.drawn?.[i] ?? 0 : 0;
    else points[u.series[i].label] = u.data[i].reduce((n, v) => n + (v === null || v === undefined ? 0 : 1), 0);
  }
  return points;
}

// The last point of each series, [x, y]: where a curve ends (its x on the axis chosen, its y
// smoothed when smoothing is on).
function lastPoints(u) {
  const last = {};
  for (let i = 1; i < u.series.length; i++) {
    if (u.series[i].label.startsWith("_")) continue;
    const [xs, ys] = u.mode === 2 ? u.data[i] : [u.data[0], u.data[i]];
    let j = ys.length - 1;
    while (j >= 0 && (ys[j] === null || ys[j] === undefined)) j--;
    if (j >= 0) last[u.series[i].label] = [xs[j], ys[j]];
  }
  return last;
}

function expose(element, name, u, bands, ticks) {
  const points = drawnPoints(u);
  element.dataset.points = JSON.stringify(points);
  element.dataset.last = JSON.stringify(lastPoints(u));
  element.dataset.bands = String(bands);
  element.dataset.ticks = JSON.stringify(ticks);
  // drawn: the newest draw; first: the first (since navigation start, as performance.now()).
  const now = performance.now();
  window.__symopt.charts[name] = { points, bands, ticks, drawn: now, first: window.__symopt.charts[name]?.first ?? now };
}

/** Series on one x axis: their steps merged, null where a series has no point. */
export function align(list, { positive = false } = {}) {
  const xs = [...new Set(list.flatMap((s) => s.x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = list.map((s) => {
    const y = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => {
      const v = finite(s.y[i]);
      y[at.get(x)] = positive && v !== null && v <= 0 ? null : v; // a log axis cannot show v <= 0
    });
    return y;
  });
  return [xs, ...ys];
}

/**
 * A uPlot in `element` that follows its width. `draw(options, data)` makes a new plot (uPlot
 * fixes scale types at creation); `update(data)` redraws in place.
 */
export class Chart {
  constructor(element, name, { height = 260, bands = 0 } = {}) {
    this.element = element;
    this.name = name;
    this.height = height;
    this.bands = bands;
    this.ticks = [];
    this.element.dataset.chart = name;
    this.plot = null;
    this.resizer = new ResizeObserver(() => {
      const width = this.element.clientWidth;
      if (this.plot && width > 0 && width !== this.plot.width) this.plot.setSize({ width, height: this.height });
    });
    this.resizer.observe(this.element);
  }

  draw(options, data) {
    this.options = options;
    this.plot?.destroy();
    this.ticks = [];
    const hooks = { ...(options.hooks || {}), draw: [(u) => expose(this.element, this.name, u, this.bands, this.ticks)] };
    const width = Math.max(200, this.element.clientWidth || 300);
    const axes = (options.axes || []).map((axis, i) => this.#recording(axis, i));
    this.plot = new uPlot({ ...options, axes, hooks, width, height: this.height }, data, this.element);
    // Band edges ("_min ...", "_max ...") stay out of the legend: the band shows them.
    const rows = this.element.querySelectorAll(".u-legend .u-series");
    this.plot.series.forEach((s, i) => {
      if (s.label?.startsWith("_") && rows[i]) rows[i].style.display = "none"; // mode 2: series 0 has none
    });
  }

  // The axis with its tick labels kept in this.ticks[i] each time uPlot asks for them.
  #recording(axis, i) {
    if (typeof axis.values !== "function") return axis;
    return { ...axis, values: (...args) => (this.ticks[i] = axis.values(...args)) };
  }

  update(data) {
    // Keep a zoom the user chose; otherwise follow the data (a growing curve extends its axis).
    this.plot.setData(data, true);
  }

  destroy() {
    this.resizer.disconnect();
    this.plot?.destroy();
    this.plot = null;
    delete window.__symopt.charts[this.name];
  }
}

/** x and y axes labelled with tickLabels (or `xValues` for an axis of names, e.g. categories). */
export function axes(xLabel, yLabel, { xValues = null, xWhole = false } = {}) {
  const y = { label: yLabel, size: 60, values: (u, ticks) => tickLabels(ticks) };
  const x = { label: xLabel, values: xValues ?? ((u, ticks) => tickLabels(ticks)) };
  if (xWhole) x.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]; // trial numbers: no 1.25
  return [x, y];
}

/** 0.000123 -> 1.2e-4, 12345 -> 12.3k: a number in `digits` significant digits that fits an axis. */
export function short(v, digits = 3) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(digits)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(digits)}k`;
  if (a < 1e-3) return v.toExponential(digits - 2);
  return String(+v.toPrecision(digits));
}

/**
 * Tick labels as short as they can be while each tells its tick apart: objectives 2.2105,
 * 2.2110, 2.2115 read "2.2105, 2.211, 2.2115", never "2.21, 2.21, 2.21".
 */
export function tickLabels(ticks) {
  for (let digits = 3; digits <= 12; digits++) {
    const labels = ticks.map((v) => short(v, digits));
    const shown = labels.filter((l) => l !== "");
    if (new Set(shown).size === shown.length) return labels;
  }
  return ticks.map((v) => (v === null || v === undefined ? "" : String(v)));
}

// Dots where a series has few points in view (val_loss: one per evaluation, a lone one at step
// 0 included); uPlot's own rule counts the shared x values instead, so it would hide them.
function sparse(u, si, i0, i1) {
  const y = u.data[si];
  let n = 0;
  for (let i = i0; i <= i1; i++) if (y[i] !== null && y[i] !== undefined) n++;
  return n * 8 * devicePixelRatio <= u.bbox.width;
}

/** Line options: `labels` (and `widths`, `colors`) one per series, x linear (or log), y linear or log. */
export function lineOptions({ labels, xLabel = "step", yLabel = "", logY = false, logX = false, widths, colors }) {
  return {
    scales: { x: { time: false, distr: logX ? 3 : 1 }, y: { distr: logY ? 3 : 1 } },
    axes: axes(xLabel, yLabel),
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    series: [
      { label: xLabel },
      ...labels.map((label, i) => ({
        label,
        stroke: colors ? colors[i] : color(i),
        width: widths ? widths[i] : 1.5,
        spanGaps: true, // val_loss every eval, train_loss every log_every: join across the gaps
        points: { show: sparse },
        value: (u, v) => (v === null ? "–" : short(v)),
      })),
    ],
  };
}

/** Mean lines with shaded min-max bands: for each group, series mean, _min, _max (in that order). */
export function bandOptions({ labels, xLabel, yLabel }) {
  const series = [{ label: xLabel }];
  const bands = [];
  labels.forEach((label, i) => {
    const base = series.length;
    series.push(
      { label, stroke: color(i), width: 2, spanGaps: true, points: { show: true, size: 5 },
        value: (u, v) => (v === null ? "–" : short(v)) },
      { label: `_min ${label}`, stroke: color(i) + "55", width: 1, spanGaps: true, points: { show: false } },
      { label: `_max ${label}`, stroke: color(i) + "55", width: 1, spanGaps: true, points: { show: false } },
    );
    bands.push({ series: [base + 2, base + 1], fill: color(i) + "26" });
  });
  return {
    scales: { x: { time: false }, y: {} },
    axes: axes(xLabel, yLabel),
    legend: { live: true, markers: { show: true } },
    cursor: { drag: { x: true, y: false } },
    series,
    bands,
  };
}
