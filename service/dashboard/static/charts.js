// Charts on uPlot (the global `uPlot` from vendor/uPlot.iife.min.js).
//
// Every chart element carries what it plots, for tests and for anyone reading the page:
// data-points = {series label: number of points drawn} (updated on each draw) and
// data-bands = number of min-max bands; window.__symopt.charts[name] holds the same.

import { finite } from "./api.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
                "#7c3aed", "#0f766e", "#a16207", "#475569"];
export const color = (i) => COLORS[i % COLORS.length];
export const PRUNED = "#9ca3af";

window.__symopt = window.__symopt || { charts: {} };

function expose(element, name, u, bands) {
  const points = {};
  for (let i = 1; i < u.series.length; i++) {
    if (u.series[i].label.startsWith("_")) continue; // band edges: drawn, but not data of their own
    points[u.series[i].label] = u.data[i].reduce((n, v) => n + (v === null || v === undefined ? 0 : 1), 0);
  }
  element.dataset.points = JSON.stringify(points);
  element.dataset.bands = String(bands);
  // drawn: the newest draw; first: the first (since navigation start, as performance.now()).
  const now = performance.now();
  window.__symopt.charts[name] = { points, bands, drawn: now, first: window.__symopt.charts[name]?.first ?? now };
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
 * A uPlot in `element` that follows its width. `build(width)` returns uPlot options without
 * size; `data` is uPlot's column data. `update(data)` redraws in place; `rebuild()` makes a new
 * plot (for a change of scale type, which uPlot fixes at creation).
 */
export class Chart {
  constructor(element, name, { height = 260, bands = 0 } = {}) {
    this.element = element;
    this.name = name;
    this.height = height;
    this.bands = bands;
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
    const hooks = { ...(options.hooks || {}), draw: [(u) => expose(this.element, this.name, u, this.bands)] };
    const width = Math.max(200, this.element.clientWidth || 300);
    this.plot = new uPlot({ ...options, hooks, width, height: this.height }, data, this.element);
    // Band edges ("_min ...", "_max ...") stay out of the legend: the band shows them.
    const rows = this.element.querySelectorAll(".u-legend .u-series");
    this.plot.series.forEach((s, i) => {
      if (s.label.startsWith("_") && rows[i]) rows[i].style.display = "none";
    });
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

function axes(xLabel, yLabel, { xLog2 = false, xWhole = false } = {}) {
  const y = { label: yLabel, size: 60, values: (u, ticks) => ticks.map(short) };
  const x = { label: xLabel, values: (u, ticks) => ticks.map(xLog2 ? String : short) };
  if (xWhole) x.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]; // trial numbers: no 1.25
  return [x, y];
}

/** 0.000123 -> 1.23e-4, 12345 -> 12.3k: tick labels that fit a narrow axis. */
export function short(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a < 1e-3) return v.toExponential(1);
  return String(+v.toPrecision(3));
}

// Dots where a series has few points in view (val_loss: one per evaluation, a lone one at step
// 0 included); uPlot's own rule counts the shared x values instead, so it would hide them.
function sparse(u, si, i0, i1) {
  const y = u.data[si];
  let n = 0;
  for (let i = i0; i <= i1; i++) if (y[i] !== null && y[i] !== undefined) n++;
  return n * 8 * devicePixelRatio <= u.bbox.width;
}

/** Line options: `labels` one per series, x linear (or log), y linear or log. */
export function lineOptions({ labels, xLabel = "step", yLabel = "", logY = false, logX = false, widths }) {
  return {
    scales: { x: { time: false, distr: logX ? 3 : 1 }, y: { distr: logY ? 3 : 1 } },
    axes: axes(xLabel, yLabel),
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    series: [
      { label: xLabel },
      ...labels.map((label, i) => ({
        label,
        stroke: color(i),
        width: widths ? widths[i] : 1.5,
        spanGaps: true, // val_loss every eval, train_loss every log_every: join across the gaps
        points: { show: sparse },
        value: (u, v) => (v === null ? "–" : short(v)),
      })),
    ],
  };
}

/**
 * Scatter of labelled points [{x, y, group}] (groups: [{label, color, hollow}]); x may repeat
 * (two trials with the same batch size), so the data is one column per point, sorted by x.
 */
export function scatterData(points, groups) {
  const sorted = [...points].filter((p) => p.x !== null && p.y !== null).sort((a, b) => a.x - b.x);
  const xs = sorted.map((p) => p.x);
  const columns = groups.map((g) => sorted.map((p) => (p.group === g.label ? p.y : null)));
  return [xs, ...columns];
}

export function scatterOptions({ groups, xLabel, yLabel, logX = false, log2X = false, xWhole = false }) {
  const dot = (g) => ({
    label: g.label,
    stroke: g.color,
    fill: g.hollow ? "#fff" : g.color,
    paths: () => null, // points only
    points: { show: true, size: 9, width: 2, stroke: g.color, fill: g.hollow ? "#fff" : g.color },
    value: (u, v) => (v === null ? "–" : short(v)),
  });
  return {
    mode: 1,
    scales: { x: { time: false, distr: logX || log2X ? 3 : 1, log: log2X ? 2 : 10, range: logX ? decades : undefined }, y: {} },
    axes: axes(xLabel, yLabel, { xLog2: log2X, xWhole }),
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    series: [
      { label: xLabel },
      ...groups.map((g) =>
        g.line
          ? { label: g.label, stroke: g.color, width: 1.5, spanGaps: true, points: { show: false },
              paths: uPlot.paths.stepped({ align: 1 }) }
          : dot(g)),
    ],
  };
}

// A log axis from decade to decade, so that it always has labelled ticks (lr 0.003..0.008: 0.001, 0.01).
function decades(u, min, max) {
  if (!(min > 0 && max > 0)) return [min, max];
  const low = 10 ** Math.floor(Math.log10(min));
  const high = 10 ** Math.ceil(Math.log10(max));
  return [low, high > low ? high : low * 10];
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

/**
 * Curves [{label, x, y}] on one chart, redrawn in place as they grow; a new plot only when the
 * set of curves or the y scale (linear or log) changes.
 */
export class Curves {
  constructor(element, name, { xLabel = "step", yLabel = "", logY = false, height = 260 } = {}) {
    this.chart = new Chart(element, name, { height });
    this.axis = { xLabel, yLabel };
    this.logY = logY;
    this.labels = null;
    this.entries = [];
  }

  show(entries) {
    this.entries = entries;
    const labels = entries.map((e) => e.label);
    const data = align(entries, { positive: this.logY });
    if (this.labels === null || labels.join("\n") !== this.labels.join("\n")) {
      this.chart.draw(lineOptions({ labels, ...this.axis, logY: this.logY }), data);
      this.labels = labels;
    } else {
      this.chart.update(data);
    }
  }

  /** A new x axis label (the caller's next show() brings the matching x values). */
  relabel(xLabel) {
    this.axis.xLabel = xLabel;
    this.labels = null;
  }

  setLogY(on) {
    this.logY = on;
    this.labels = null; // uPlot fixes a scale's distribution when the plot is made
    this.show(this.entries);
  }

  destroy() {
    this.chart.destroy();
  }
}
