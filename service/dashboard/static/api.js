// The REST API as the pages use it: the key (session storage), JSON calls, and metric series
// loaded once in full and then followed incrementally.

const KEY = "symopt.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

/** Called with the server's message when a call is answered 401 (the key was revoked, ...). */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

export const storedKey = () => sessionStorage.getItem(KEY);
export const forgetKey = () => sessionStorage.removeItem(KEY);

async function failure(response) {
  const body = await response.json().catch(() => ({}));
  const detail = typeof body.detail === "string" ? body.detail : "";
  return new ApiError(response.status, body.message || detail || response.statusText);
}

/** GET /v1/me with `key`; keeps the key when the service accepts it, throws ApiError otherwise. */
export async function checkKey(key) {
  const response = await fetch("/v1/me", { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) throw await failure(response);
  sessionStorage.setItem(KEY, key);
  return response.json();
}

/** One JSON call; `params` become the query string (empty values left out). */
export async function api(path, { method = "GET", params = {} } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url, { method, headers: { Authorization: `Bearer ${storedKey()}` } });
  if (response.status === 401) {
    const error = await failure(response);
    forgetKey();
    unauthorized(error.message);
    throw error;
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** "nan", "inf" and "-inf" arrive as strings: the charts leave such points out (null). */
export const finite = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/**
 * A job's metric series in the browser: `load()` reads the history once, then `poll()` asks only
 * for the points stored since (`after_seq`: the service numbers each job's points in the order
 * they were stored, and each answer's `next_seq` is where the next one starts). A step's val_loss
 * stored after its train_loss, and a point rewritten by a retried attempt, come once each.
 *
 * `maxPoints` (charts): the history comes in one answer per stage, each series thinned by the
 * service to at most that many points keeping its first, last, lowest and highest values
 * (`?max_points=`); new points after it come at full resolution. Without it (CSV), every point.
 */
export class MetricsFeed {
  constructor(jobId, wanted, { first = ["train_loss", "val_loss"], maxPoints = null } = {}) {
    this.jobId = jobId;
    this.wanted = wanted; // name -> bool: which series this page keeps
    this.first = first; // loaded (and shown, via onStage) before the rest
    this.maxPoints = maxPoints;
    this.series = new Map(); // name -> {steps: number[], values: (number|string)[]}, by step
    this.seq = 0; // every wanted point stored up to this seq is held
  }

  /** The history, in two stages: the `first` series, then the other wanted ones; `onStage()`
   * runs after each, so the loss curve shows before the diagnostics have arrived. */
  async load(onStage = () => {}) {
    // A first small page names the series (one step holds them all).
    const probe = await this.#page({ limit: 1000 });
    const rest = [...new Set(probe.series.map((s) => s.name))].filter((n) => this.wanted(n) && !this.first.includes(n));
    for (const names of [this.first, rest]) {
      if (!names.length) continue;
      const thinned = this.maxPoints ? { max_points: this.maxPoints } : {};
      await this.#read({ names: names.join(","), ...thinned }, 0);
      onStage();
    }
    // Each stage read at least up to the probe's seq: polls go on from there (what a stage read
    // beyond it comes again, and is held once).
    this.seq = probe.next_seq;
    return this;
  }

  /** New points since the last call; returns how many were added or changed. */
  async poll() {
    // Every point stored after the cursor: an old step rewritten by a retried attempt too.
    const [changed, seq] = await this.#read({}, this.seq);
    this.seq = seq;
    return changed;
  }

  // Pages of the points stored after seq `after` until the answer is whole: [points added or
  // changed, the seq it reached].
  async #read(params, after) {
    let changed = 0;
    for (let seq = after; ;) {
      const page = await this.#page({ limit: 100000, ...params, after_seq: seq });
      changed += this.#merge(page.series.filter((s) => this.wanted(s.name)));
      seq = page.next_seq;
      if (!page.truncated) return [changed, seq];
    }
  }

  #page(params) {
    return api(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics`, { params });
  }

  // Each point into its series at its step (a held step takes the newer value); how many points
  // were added or changed.
  #merge(list) {
    let changed = 0;
    for (const { name, steps, values } of list) {
      let held = this.series.get(name);
      if (!held) this.series.set(name, (held = { steps: [], values: [] }));
      for (let i = 0; i < steps.length; i++) changed += put(held, steps[i], values[i]);
    }
    return changed;
  }
}

// 1 when (step, value) was added to the series or changed its value there, else 0.
function put(held, step, value) {
  const { steps, values } = held;
  if (!steps.length || step > steps[steps.length - 1]) {
    steps.push(step); // the usual case: a newer step
    values.push(value);
    return 1;
  }
  let low = 0;
  let high = steps.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (steps[middle] < step) low = middle + 1;
    else high = middle;
  }
  if (steps[low] === step) {
    if (values[low] === value) return 0;
    values[low] = value;
    return 1;
  }
  steps.splice(low, 0, step);
  values.splice(low, 0, value);
  return 1;
}
