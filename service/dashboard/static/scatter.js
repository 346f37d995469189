// Scatter plots on uPlot's mode 2: every series holds its own (x, y) pairs, so x values may
// repeat (trials that share a batch size) and every point is drawn. uPlot's aligned mode is made
// for one shared, increasing x column: fed repeated x, it lost trials (the best one included).
//
// The path builders draw each pair themselves and count what lands in the plot area in u.drawn,
// which charts.js reports as data-points.

import { finite } from "./api.js";
import { axes, short } from "./charts.js";
import { h } from "./ui.js";

/** Mode-2 data from points [{x, y, group}] and groups [{label}]: null, then [xs, ys] per group. */
export function scatterData(points, groups) {
  const plotted = points.filter((p) => finite(p.x) !== null && finite(p.y) !== null);
  return [null, ...groups.map((g) => {
    const mine = plotted.filter((p) => p.group === g.label).sort((a, b) => a.x - b.x);
    return [mine.map((p) => p.x), mine.map((p) => p.y)];
  })];
}

// Canvas positions of series `si`'s pairs that fall inside the plot area.
function placed(u, si) {
  const [xs, ys] = u.data[si];
  const { left, top, width, height } = u.bbox;
  const inside = (x, y) => x >= left - 0.5 && x <= left + width + 0.5 && y >= top - 0.5 && y <= top + height + 0.5;
  const at = [];
  for (let i = 0; i < xs.length; i++) {
    const x = u.valToPos(xs[i], "x", true);
    const y = u.valToPos(ys[i], "y", true);
    if (Number.isFinite(x) && Number.isFinite(y) && inside(x, y)) at.push([x, y]);
  }
  return at;
}

function counted(u, si, count) {
  u.drawn = { ...(u.drawn || {}), [si]: count };
}

/** A circle of `size` CSS pixels at each pair. */
const dots = (size) => (u, si) => {
  const r = (size / 2) * devicePixelRatio;
  const path = new Path2D();
  const at = placed(u, si);
  for (const [x, y] of at) {
    path.moveTo(x + r, y);
    path.arc(x, y, r, 0, 2 * Math.PI);
  }
  counted(u, si, at.length);
  return { stroke: path, fill: path };
};

/** A stepped line through the pairs (the best objective so far, trial after trial). */
function stairs(u, si) {
  const path = new Path2D();
  const at = placed(u, si);
  at.forEach(([x, y], i) => {
    if (i === 0) path.moveTo(x, y);
    else {
      path.lineTo(x, at[i - 1][1]);
      path.lineTo(x, y);
    }
  });
  counted(u, si, at.length);
  return { stroke: path };
}

/** A straight line through the pairs in x order (a width's objective against lr). */
function polyline(u, si) {
  const path = new Path2D();
  const at = placed(u, si);
  at.forEach(([x, y], i) => (i === 0 ? path.moveTo(x, y) : path.lineTo(x, y)));
  return { stroke: path };
}

// x ranges over the data and the searched range (`bounds`, if known), with room for the dots
// at the ends: a trial at the edge of its range shows as one.
const span = (bounds, min, max) => (bounds ? [Math.min(bounds[0], min), Math.max(bounds[1], max)] : [min, max]);

const linear = (bounds) => (u, min, max) => {
  const [low, high] = span(bounds, min, max);
  const pad = (high - low) * 0.05 || Math.abs(low) * 0.1 || 1;
  return [low - pad, high + pad];
};

const logarithmic = (bounds) => (u, min, max) => {
  const [low, high] = span(bounds, min, max);
  if (!(low > 0 && high > 0)) return [min, max];
  const pad = high > low ? (high / low) ** 0.05 : 1.5;
  return [low / pad, high * pad];
};

// Powers of two half a step beyond the ends (batch 2..8: 1.41..11.3).
const halfPowers = (bounds) => (u, min, max) => {
  const [low, high] = span(bounds, min, max);
  if (!(low > 0 && high > 0)) return [min, max];
  return [2 ** (Math.floor(Math.log2(low)) - 0.5), 2 ** (Math.ceil(Math.log2(high)) + 0.5)];
};

// Ticks of a log axis at 1, 2 and 5 × 10^k (at every digit when that gives fewer than three):
// uPlot's own would label only whole decades, none at all inside a narrow range.
function logTicks(u, axis, min, max) {
  const inside = (mantissas) => {
    const ticks = [];
    for (let k = Math.floor(Math.log10(min)); k <= Math.ceil(Math.log10(max)); k++) {
      for (const m of mantissas) if (m * 10 ** k >= min && m * 10 ** k <= max) ticks.push(+(m * 10 ** k).toPrecision(12));
    }
    return ticks;
  };
  const few = inside([1, 2, 5]);
  return few.length >= 3 ? few : inside([1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

function powersOfTwo(u, axis, min, max) {
  const ticks = [];
  for (let p = Math.ceil(Math.log2(min)); 2 ** p <= max; p++) ticks.push(2 ** p);
  return ticks;
}

/** The x scale and axis of a kind: linear, log, log2 (powers of two) or category (`categories`
 * by index); `bounds` [low, high] the searched range, when known. */
function xAxis(kind, categories, bounds) {
  if (kind === "log") return { scale: { distr: 3, log: 10, range: logarithmic(bounds) }, splits: logTicks };
  if (kind === "log2") return { scale: { distr: 3, log: 2, range: halfPowers(bounds) }, splits: powersOfTwo };
  if (kind === "category") {
    return {
      scale: { range: () => [-0.5, categories.length - 0.5] },
      splits: () => categories.map((c, i) => i),
      values: (u, ticks) => ticks.map((t) => (t === null ? "" : String(categories[t] ?? ""))),
    };
  }
  return { scale: { range: linear(bounds) } };
}

// A line under the plot naming the point nearest the cursor (within 12 px).
function readout(xLabel, yLabel, categories) {
  const line = h("div", { class: "readout muted" }, "\u00a0");
  const name = (x) => (categories ? String(categories[x]) : short(x, 4));
  const setCursor = (u) => {
    const { left, top } = u.cursor;
    let best = null;
    for (let si = 1; left >= 0 && si < u.series.length; si++) {
      if (!u.series[si].show) continue;
      const [xs, ys] = u.data[si];
      xs.forEach((x, i) => {
        const distance = Math.hypot(u.valToPos(x, "x") - left, u.valToPos(ys[i], "y") - top);
        if (distance <= 12 && (!best || distance < best.distance)) best = { distance, si, x, y: ys[i] };
      });
    }
    line.textContent = best
      ? `${u.series[best.si].label}: ${xLabel} ${name(best.x)}, ${yLabel} ${short(best.y, 5)}`
      : "\u00a0";
  };
  return { ready: [(u) => u.root.append(line)], setCursor: [setCursor] };
}

/**
 * Options of a mode-2 scatter: `groups` [{label, color, hollow, line, curve}] (a `line` group is
 * a stepped line; a `curve` group, dots joined by straight lines), x of `xKind` (linear, log, log2 or category with `categories`) over the data
 * and `xBounds` [low, high] (the searched range, if any).
 */
export function scatterOptions({ groups, xLabel, yLabel, xKind = "linear", categories = null, xBounds = null,
  xWhole = false }) {
  const x = xAxis(xKind, categories, xBounds);
  const [xAxisOptions, yAxisOptions] = axes(xLabel, yLabel, { xValues: x.values, xWhole });
  if (x.splits) {
    xAxisOptions.splits = x.splits;
    xAxisOptions.filter = (u, splits) => splits; // label every tick chosen (uPlot's log filter would drop 2 and 5)
  }
  const joined = (u, si) => {
    const line = polyline(u, si);
    const marks = dots(7)(u, si);
    line.stroke.addPath(marks.stroke);
    return { stroke: line.stroke, fill: marks.fill };
  };
  const series = groups.map((g) => (g.line
    ? { label: g.label, stroke: g.color, width: 1.5, paths: stairs, points: { show: false } }
    : { label: g.label, stroke: g.color, fill: g.hollow ? "#fff" : g.color, width: 2,
        paths: g.curve ? joined : dots(8), points: { show: false } }));
  return {
    mode: 2,
    scales: { x: { time: false, ...x.scale }, y: {} },
    axes: [xAxisOptions, yAxisOptions],
    legend: { live: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    hooks: readout(xLabel, yLabel, categories),
    series: [{}, ...series.map((s) => ({ ...s, facets: [{ scale: "x", auto: true }, { scale: "y", auto: true }] }))],
  };
}
