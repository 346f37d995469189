// Curves against a chosen x (steps, training tokens or training time), optionally smoothed, and
// the controls that choose both.

import { finite } from "./api.js";
import { align, Chart, color, lineOptions } from "./charts.js";
import { h } from "./ui.js";

/** The x axes a curve may take: value -> [option text, axis label]. */
export const X_AXES = {
  step: ["x: steps", "step"],
  tokens: ["x: tokens", "tokens"],
  // Summed step times: evaluations and checkpoints are left out, so this is training time.
  time: ["x: time", "training time (s)"],
};

/**
 * Exponential moving average with a debiased start, as TensorBoard's and W&B's smoothing:
 * s_t = w·s_(t-1) + (1-w)·x_t with s_0 = 0, shown as s_t / (1 - w^t) so that the first points are
 * not pulled towards 0. Missing and non-finite values stay null and leave the average as it was.
 */
export function ema(values, weight) {
  if (!(weight > 0)) return values;
  let average = 0;
  let seen = 0;
  return values.map((value) => {
    const v = finite(value);
    if (v === null) return null;
    seen += 1;
    average = weight * average + (1 - weight) * v;
    return average / (1 - weight ** seen);
  });
}

/**
 * step -> x through known (step, x) pairs, linear in between: an evaluation's step that no
 * metrics event logged still gets its tokens or time. Before the first pair the line runs from
 * (0, 0); after the last it keeps the last pair's rate.
 */
export function interpolate(steps, xs) {
  const known = [[0, 0]];
  steps.forEach((s, i) => {
    const x = finite(xs[i]);
    if (x !== null && s > known[known.length - 1][0]) known.push([s, x]);
  });
  return (step) => {
    let i = 1;
    while (i < known.length - 1 && known[i][0] < step) i++;
    if (known.length === 1) return null;
    const [s0, x0] = known[i - 1];
    const [s1, x1] = known[i];
    return x0 + ((step - s0) * (x1 - x0)) / (s1 - s0);
  };
}

/** Training seconds at each logged step: step_time_s (the mean over the steps since the
 * previous metrics event) times those steps, summed. */
export function trainingSeconds(stepTimes) {
  let total = 0;
  let previous = 0;
  return stepTimes.steps.map((step, i) => {
    total += (finite(stepTimes.values[i]) ?? 0) * (step - previous);
    previous = step;
    return total;
  });
}

/**
 * A job's step -> x for `axis`, from its feed's `tokens` and `step_time_s` series (null: this
 * job cannot give that axis). Without a `tokens` series (an agent's job may report none),
 * tokens are steps × batch × sequence length.
 */
export function xScale(axis, job, feed) {
  if (axis === "step") return (step) => step;
  if (axis === "tokens") {
    const tokens = feed.series.get("tokens");
    if (tokens?.steps.length) return interpolate(tokens.steps, tokens.values);
    const perStep = (job.spec.batch?.size ?? 0) * (job.spec.data?.seq_len ?? 0);
    return perStep ? (step) => step * perStep : null;
  }
  const times = feed.series.get("step_time_s");
  return times?.steps.length ? interpolate(times.steps, trainingSeconds(times)) : null;
}

/**
 * Curves [{label, x, y}] on one chart, redrawn in place as they grow; a new plot only when the
 * set of curves, the y scale (linear or log) or the smoothing's on/off changes. Smoothed curves
 * keep their labels; the raw ones stay behind them, faint, as "_raw <label>" (out of the legend
 * and of data-points, as band edges are).
 */
export class Curves {
  constructor(element, name, { xLabel = "step", yLabel = "", logY = false, height = 260 } = {}) {
    this.chart = new Chart(element, name, { height });
    this.axis = { xLabel, yLabel };
    this.logY = logY;
    this.smoothing = 0; // the EMA weight of the next show(); 0: raw curves only
    this.labels = null;
    this.entries = [];
  }

  show(entries) {
    this.entries = entries;
    const smoothed = this.smoothing > 0;
    const shown = smoothed
      ? entries.flatMap((e) => [{ ...e, label: `_raw ${e.label}` }, { ...e, y: ema(e.y, this.smoothing) }])
      : entries;
    const labels = shown.map((e) => e.label);
    const data = align(shown, { positive: this.logY });
    if (this.labels === null || labels.join("\n") !== this.labels.join("\n")) {
      // Each curve in its own colour; its raw line (when smoothed) in the same colour, faint.
      const colors = entries.flatMap((e, i) => (smoothed ? [`${color(i)}40`, color(i)] : [color(i)]));
      const widths = labels.map((label) => (label.startsWith("_raw ") ? 1 : 1.5));
      this.chart.draw(lineOptions({ labels, ...this.axis, logY: this.logY, colors, widths }), data);
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

/**
 * The x axis select and the smoothing slider of a page's curves; `onChange({axis, smoothing})`
 * runs on each change.
 */
export function curveControls(onChange) {
  const state = { axis: "step", smoothing: 0 };
  const shown = h("output", { class: "smoothing-value" }, "off");
  const select = h("select", { "aria-label": "x axis", onchange: (event) => {
    state.axis = event.target.value;
    onChange({ ...state });
  } }, Object.entries(X_AXES).map(([axis, [text]]) => h("option", { value: axis }, text)));
  const slider = h("input", {
    type: "range", min: "0", max: "0.99", step: "0.01", value: "0", "aria-label": "smoothing",
    oninput: (event) => {
      state.smoothing = Number(event.target.value);
      shown.textContent = state.smoothing > 0 ? state.smoothing.toFixed(2) : "off";
      onChange({ ...state });
    },
  });
  return h("div", { class: "toolbar curve-controls" }, select,
    h("label", {}, "Smoothing ", slider, shown));
}
