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
 * A job's metric series in the browser: `load()` reads the history once (page by page: the API
 * never splits a step across pages), then `poll()` asks only for what is new.
 *
 * Polls re-read the newest step (since_step = lastStep - 1): the scheduler may store a step's
 * train_loss in one write and the evaluation of that same step (val_loss) in the next, and
 * since_step = lastStep would skip that val_loss for good. Points already held are dropped.
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
    this.series = new Map(); // name -> {steps: number[], values: (number|string)[]}
    this.lastStep = null; // every wanted series is held up to here
  }

  /** The history, in two stages: the `first` series, then the other wanted ones; `onStage()`
   * runs after each, so the loss curve shows before the diagnostics have arrived. */
  async load(onStage = () => {}) {
    // A first small page names the series (one step holds them all).
    const probe = await this.#page({ limit: 1000 });
    const rest = [...new Set(probe.series.map((s) => s.name))].filter((n) => this.wanted(n) && !this.first.includes(n));
    const ends = [];
    for (const names of [this.first, rest]) {
      if (!names.length) continue;
      const thinned = this.maxPoints ? { max_points: this.maxPoints } : {};
      ends.push(await this.#read({ names: names.join(","), ...thinned }, null));
      onStage();
    }
    // Each stage read up to its own newest step: polls start from the oldest of them.
    const known = ends.filter((end) => end !== null);
    this.lastStep = known.length ? Math.min(...known) : null;
    return this;
  }

  /** New points since the last call; returns how many were added. */
  async poll() {
    const before = this.#count();
    const end = await this.#read({}, this.lastStep === null ? null : this.lastStep - 1);
    if (end !== null) this.lastStep = Math.max(this.lastStep ?? -1, end);
    return this.#count() - before;
  }

  // Pages from `since` on until the answer is whole; the newest step read (or null: none).
  async #read(params, since) {
    let cursor = since;
    let end = null;
    for (;;) {
      const page = await this.#page({ limit: 100000, ...params, since_step: cursor });
      this.#merge(page.series.filter((s) => this.wanted(s.name)));
      if (page.last_step !== null) end = Math.max(end ?? -1, page.last_step);
      if (!page.truncated || page.last_step === null) return end;
      cursor = page.last_step;
    }
  }

  #page(params) {
    return api(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics`, { params });
  }

  #count() {
    let n = 0;
    for (const held of this.series.values()) n += held.steps.length;
    return n;
  }

  #merge(list) {
    for (const { name, steps, values } of list) {
      let held = this.series.get(name);
      if (!held) this.series.set(name, (held = { steps: [], values: [] }));
      const newest = held.steps.length ? held.steps[held.steps.length - 1] : -Infinity;
      for (let i = 0; i < steps.length; i++) {
        if (steps[i] <= newest) continue; // already here (the re-read step)
        held.steps.push(steps[i]);
        held.values.push(values[i]);
      }
    }
  }
}
