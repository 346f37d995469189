// The learning rates a job really trains with, where its spec leaves them to its preset.
//
// The base lr is the spec's optimizer.lr, else the preset's default (GET /v1/presets), as
// `symopt compare` shows it. Each class's lr comes from the job's own metrics: the training loop
// logs lr/<class> (the class's lr times the schedule's multiplier) and lr_scale (that
// multiplier), so lr/<class> ÷ lr_scale is the class's lr, overrides and √d scaling included.

import { api, finite } from "./api.js";

let presets = null;

/** name -> preset (GET /v1/presets), read once per page load. */
export function presetTable() {
  presets ??= api("/v1/presets").then((answer) => new Map(answer.data.map((p) => [p.name, p])))
    .catch((error) => {
      presets = null; // asked again next time
      throw error;
    });
  return presets;
}

/** The base lr of `job`: its spec's, else its preset's default; null if the preset is unknown. */
export function baseLr(job, table) {
  const optimizer = job.spec.optimizer || {};
  if (typeof optimizer.lr === "number") return optimizer.lr;
  return table.get(optimizer.preset)?.lr ?? null;
}

// The first metrics event holds every lr series; a step is never split across pages, so one
// small page brings one whole step, or several.
const FIRST_PAGE = 400;
const classLrCache = new Map(); // job id -> Promise<{class: lr}>

/** {class: lr} of a job, from its first logged step with a positive lr_scale; {} before it has one. */
export function classLrs(jobId) {
  if (!classLrCache.has(jobId)) {
    const read = api(`/v1/jobs/${encodeURIComponent(jobId)}/metrics`, { params: { limit: FIRST_PAGE } })
      .then((page) => lrsOfPage(page.series));
    // An empty answer (no metrics yet) is asked again later; a found one never changes.
    classLrCache.set(jobId, read.then((found) => {
      if (!Object.keys(found).length) classLrCache.delete(jobId);
      return found;
    }, (error) => {
      classLrCache.delete(jobId);
      throw error;
    }));
  }
  return classLrCache.get(jobId);
}

function lrsOfPage(series) {
  const byName = new Map(series.map((s) => [s.name, new Map(s.steps.map((step, i) => [step, finite(s.values[i])]))]));
  const scale = byName.get("lr_scale");
  if (!scale) return {};
  const step = [...scale.keys()].sort((a, b) => a - b).find((s) => scale.get(s) > 0);
  if (step === undefined) return {};
  const lrs = {};
  for (const [name, values] of byName) {
    const value = values.get(step);
    if (name.startsWith("lr/") && value !== null && value !== undefined) lrs[name.slice(3)] = value / scale.get(step);
  }
  return lrs;
}
