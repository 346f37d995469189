// The jobs page as a runs table, as W&B's: one row per job with its hyperparameters (preset,
// effective lr per class, batch, model, seed) and results (best and final val loss, tokens, wall
// time); sortable, filterable, grouped by sweep or study, columns chosen, exported as CSV.

import { api } from "./api.js";
import { short } from "./charts.js";
import { csvText, download } from "./csv.js";
import { baseLr, classLrs, presetTable } from "./effective.js";
import { parseFilter } from "./filter.js";
import { card, compareValues, duration, fill, h, num, seconds, status, when } from "./ui.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "diverged", "pruned"];
const HIDDEN_KEY = "symopt.runs.hidden"; // the columns a user hid, kept in this browser
const GROUPS = { "": "no grouping", sweep: "sweep", study: "study" };

export const model = (spec) => {
  const m = spec.model || {};
  return [m.family, m.size].filter(Boolean).join(" ") || "custom";
};
export const preset = (spec) => spec.optimizer?.preset ?? "–";
export const jobLink = (job) => h("a", { href: `#/job/${job.id}` }, job.name || job.id.slice(0, 8));
export const lr = (value) => (value === null || value === undefined ? "–" : short(value, 3));

// Who runs the job: the service's workers, or an agent (a user's own script) that claimed it.
// A requeued agent job keeps the host of its lost attempt, so a queued one says it waits.
const agents = (job) => job.executor === "agents";
export function runBy(job) {
  if (!agents(job)) return "service";
  if (job.status === "queued" || !job.agent_host) {
    return `agent (waiting for one${job.agent_host ? `; last on ${job.agent_host}` : ""})`;
  }
  return `agent on ${job.agent_host}`;
}
// The Job cell: the link, and for an agent job a small tag with its host.
const jobCell = (job) => (agents(job)
  ? h("span", {}, jobLink(job), " ", h("span", { class: "agent-tag", title: runBy(job) },
    job.agent_host ? `agent ${job.agent_host}` : "agent"))
  : jobLink(job));

const wallTime = (job) => job.result?.wall_time_s ?? seconds(job.started_at, job.finished_at);

/**
 * The table's columns: key (the filter's and the CSV's name), label, value(run) (sorted,
 * filtered and exported), cell(run) (shown; num() of the value if absent), num (right-aligned).
 * A run is {job, sweep, study, lr, lrs}: its sweep and study (or null), base lr, class lrs.
 */
function columnsFor(classes) {
  const link = (kind) => (run) => (run[kind] ? h("a", { href: `#/${kind}/${run[kind].id}` }, run[kind].name) : "–");
  return [
    { key: "job", label: "Job", value: (r) => r.job.name, cell: (r) => jobCell(r.job) },
    { key: "status", label: "Status", value: (r) => r.job.status, cell: (r) => status(r.job.status) },
    { key: "sweep", label: "Sweep", value: (r) => r.sweep?.name ?? null, cell: link("sweep") },
    { key: "study", label: "Study", value: (r) => r.study?.name ?? null, cell: link("study") },
    { key: "model", label: "Model", value: (r) => model(r.job.spec), cell: (r) => model(r.job.spec) },
    { key: "preset", label: "Preset", value: (r) => preset(r.job.spec), cell: (r) => preset(r.job.spec) },
    { key: "lr", label: "lr", value: (r) => r.lr, cell: (r) => lr(r.lr), num: true },
    { key: "batch", label: "Batch", value: (r) => r.job.spec.batch?.size ?? null, num: true },
    { key: "seed", label: "Seed", value: (r) => r.job.spec.seed ?? null, num: true },
    { key: "step", label: "Step", value: (r) => r.job.step, cell: (r) => `${r.job.step} / ${r.job.spec.steps}`, num: true },
    { key: "best_val", label: "Best val loss", value: (r) => r.job.best_val_loss, num: true },
    { key: "final_val", label: "Final val loss", value: (r) => r.job.result?.val_loss ?? null, num: true },
    { key: "tokens", label: "Tokens", value: (r) => r.job.result?.tokens ?? null, num: true },
    { key: "wall_s", label: "Wall time", value: (r) => wallTime(r.job), cell: (r) => duration(wallTime(r.job)), num: true },
    // Each class's lr after the results: many columns, read when one asks what differed.
    ...classes.map((c) => ({ key: `lr/${c}`, label: `lr ${c}`, value: (r) => r.lrs[c] ?? null,
      cell: (r) => lr(r.lrs[c]), num: true })),
    { key: "created", label: "Created", value: (r) => r.job.created_at, cell: (r) => when(r.job.created_at) },
  ];
}

// Class names in the order the presets list them (embedding first, vectors last), others after.
function classOrder(runs, presets) {
  const known = [...new Set([...presets.values()].flatMap((p) => Object.keys(p.classes)))];
  const found = new Set(runs.flatMap((r) => Object.keys(r.lrs)));
  return [...known.filter((c) => found.has(c)), ...[...found].filter((c) => !known.includes(c)).sort()];
}

/** Runs in groups [{label, runs}], in the order their first run appears in `runs`. */
function grouped(runs, by) {
  if (!by) return [{ label: null, runs }];
  const groups = new Map();
  for (const run of runs) {
    const label = run[by]?.name ?? `no ${by}`;
    if (!groups.has(label)) groups.set(label, []);
    groups.get(label).push(run);
  }
  return [...groups].map(([label, members]) => ({ label, runs: members }));
}

function groupSummary(group) {
  const bests = group.runs.map((r) => r.job.best_val_loss).filter((v) => typeof v === "number");
  const n = group.runs.length;
  return `${group.label} · ${n} run${n === 1 ? "" : "s"}${bests.length ? ` · best val loss ${num(Math.min(...bests))}` : ""}`;
}

function replaceQuery(path, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  history.replaceState(null, "", `#${path}${query ? `?${query}` : ""}`);
}

function storedHidden() {
  try {
    return new Set(JSON.parse(localStorage.getItem(HIDDEN_KEY) || "[]"));
  } catch {
    return new Set();
  }
}

/** The sweep and study of each job: tuning trials through their sweep, confirmation runs by study_id. */
function ownersOf(sweeps, studies) {
  const sweepById = new Map(sweeps.map((s) => [s.id, s]));
  const studyById = new Map(studies.map((s) => [s.id, s]));
  const studyOfSweep = new Map(studies.flatMap((s) =>
    Object.values(s.progress?.tuning || {}).filter((t) => t.sweep_id).map((t) => [t.sweep_id, s])));
  return (job) => ({
    sweep: sweepById.get(job.sweep_id) ?? null,
    study: studyById.get(job.study_id) ?? studyOfSweep.get(job.sweep_id) ?? null,
  });
}

/**
 * What one render shows, worked out once: the columns (visible: those not hidden), the runs
 * filtered on every column (hidden ones too), sorted and grouped, and the filter's complaints.
 */
function viewOf(runs, presets, state) {
  const columns = columnsFor(classOrder(runs, presets));
  const { test, errors } = parseFilter(state.filter, columns);
  let rows = runs.filter(test);
  const by = state.sort && columns.find((c) => c.key === state.sort.key);
  if (by) rows = [...rows].sort((a, b) => compareValues(by.value(a), by.value(b), state.sort.descending ? -1 : 1));
  const visible = columns.filter((c) => !state.hidden.has(c.key));
  return { columns, visible, groups: grouped(rows, state.group), rows: rows.length, errors };
}

/** The CSV of a view: its visible columns' raw values (the group first, when grouped), and each run's id. */
function viewCsv(view, grouping) {
  const header = [...(grouping ? ["group"] : []), ...view.visible.map((c) => c.key), "id"];
  const rows = view.groups.flatMap((g) => g.runs.map((run) =>
    [...(grouping ? [g.label] : []), ...view.visible.map((c) => c.value(run)), run.job.id]));
  return csvText(header, rows);
}

/** The table of a view; a click on a header calls sortBy(key, descending), a tick pick(id, on). */
function tableOf(view, state, { sortBy, pick }) {
  const heads = view.visible.map((c) => {
    const sorted = state.sort?.key === c.key;
    return h("th", { class: ["sortable", c.num ? "num" : ""].join(" ").trim(), scope: "col", title: `filter key: ${c.key}`,
      "aria-sort": sorted ? (state.sort.descending ? "descending" : "ascending") : null,
      dataset: { key: c.key }, onclick: () => sortBy(c.key, sorted ? !state.sort.descending : false) }, c.label);
  });
  const row = (run) => h("tr", { class: "run", dataset: { job: run.job.id } },
    h("td", { class: "pick", "data-label": "Compare" }, h("input", { type: "checkbox", "aria-label": `select ${run.job.name}`,
      checked: state.selected.has(run.job.id), onchange: (event) => pick(run.job.id, event.target.checked) })),
    view.visible.map((c) => h("td", { class: c.num ? "num" : null, "data-label": c.label, dataset: { key: c.key } },
      c.cell ? c.cell(run) : num(c.value(run)))));
  const head = (g) => h("tr", { class: "group-head" },
    h("th", { colspan: String(view.visible.length + 1), scope: "rowgroup" }, groupSummary(g)));
  const bodies = view.groups.map((g) => (g.label === null
    ? h("tbody", {}, g.runs.map(row))
    : h("tbody", { class: "group" }, head(g), g.runs.map(row))));
  return h("div", {}, sortPicker(view.visible, state.sort, sortBy), h("table", { class: "data runs" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "pick" }, ""), heads)), bodies));
}

// Narrow screens hide the header row: a select sorts there.
function sortPicker(columns, sort, sortBy) {
  const picker = h("select", { "aria-label": "sort by", onchange: (event) => {
    const [key, direction] = event.target.value.split(":");
    sortBy(key || null, direction === "desc");
  } }, h("option", { value: "" }, "newest first"), columns.flatMap((c) => [
    h("option", { value: `${c.key}:asc` }, `${c.label} ↑`), h("option", { value: `${c.key}:desc` }, `${c.label} ↓`)]));
  picker.value = sort ? `${sort.key}:${sort.descending ? "desc" : "asc"}` : "";
  return h("label", { class: "narrow-only" }, "Sort by ", picker);
}

/** A box per column, ticked when shown; `toggle(key, shown)` on each change. */
function columnChoices(columns, hidden, toggle) {
  return columns.map((c) => h("label", {}, h("input", { type: "checkbox", name: `column-${c.key}`,
    checked: !hidden.has(c.key), onchange: (event) => toggle(c.key, event.target.checked) }), c.label));
}

function namedSelect(name, options, value) {
  const element = h("select", { name, "aria-label": name },
    Object.entries(options).map(([v, text]) => h("option", { value: v }, text)));
  element.value = value;
  return element;
}

export async function jobsPage(root, { params, context }) {
  const state = {
    status: params.get("status") || "",
    sweep: params.get("sweep") || "",
    group: params.get("group") || "",
    filter: params.get("filter") || "",
    sort: null, // {key, descending}; null: the API's order, newest first
    hidden: storedHidden(),
    selected: new Set(),
  };
  const [sweeps, studies, presets] = await Promise.all([
    api("/v1/sweeps", { params: { limit: 200 } }), api("/v1/studies", { params: { limit: 200 } }), presetTable()]);
  const owners = ownersOf(sweeps.data, studies.data);
  let jobs = { data: [], count: 0 };
  const lrsOf = new Map(); // job id -> {class: lr}, as they arrive
  const view = () => viewOf(jobs.data.map((job) =>
    ({ job, ...owners(job), lr: baseLr(job, presets), lrs: lrsOf.get(job.id) ?? {} })), presets, state);

  const holder = h("div", { id: "jobs-table", class: "table-scroll" });
  const count = h("span", { class: "muted", id: "runs-count" });
  const problems = h("p", { class: "error", id: "filter-errors", role: "status" });
  const choices = h("div", { class: "choices" });
  const compare = h("button", { type: "button", class: "primary", disabled: true,
    onclick: () => { location.hash = `#/compare?ids=${[...state.selected].join(",")}`; } }, "Compare selected");
  const statusSelect = namedSelect("status", { "": "any status", "queued,running,cancelling": "active",
    ...Object.fromEntries(STATUSES.map((s) => [s, s])) }, state.status);
  const sweepSelect = namedSelect("sweep", { "": "any sweep",
    ...Object.fromEntries(sweeps.data.map((s) => [s.id, `${s.name} (${s.id.slice(0, 6)})`])) }, state.sweep);
  const groupSelect = namedSelect("group", GROUPS, state.group);
  const filterInput = h("input", { type: "search", name: "filter", "aria-label": "filter", value: state.filter,
    placeholder: "filter: preset=adamw batch>=8 best_val<2.5", spellcheck: "false" });
  const csvButton = h("button", { type: "button", id: "runs-csv",
    onclick: () => download("symopt-runs.csv", viewCsv(view(), state.group)) }, "Download CSV");
  root.append(h("h1", {}, "Runs"), card(null,
    h("div", { class: "toolbar" }, h("label", {}, "Status ", statusSelect), h("label", {}, "Sweep ", sweepSelect),
      h("label", {}, "Group by ", groupSelect), compare, count),
    h("div", { class: "toolbar" }, h("label", { class: "grow" }, "Filter ", filterInput),
      h("details", { class: "column-chooser" }, h("summary", {}, "Columns"), choices), csvButton),
    problems, holder));

  const actions = {
    sortBy: (key, descending) => {
      state.sort = key ? { key, descending } : null;
      render();
    },
    pick: (id, on) => {
      on ? state.selected.add(id) : state.selected.delete(id);
      compare.disabled = state.selected.size < 1;
    },
  };
  const toggleColumn = (key, shown) => {
    shown ? state.hidden.delete(key) : state.hidden.add(key);
    localStorage.setItem(HIDDEN_KEY, JSON.stringify([...state.hidden]));
    render();
  };
  // The column boxes are redrawn only when the set of columns changes: a refresh never swaps
  // a box under the user's click.
  let columnKeys = "";
  const render = () => {
    const shown = view();
    fill(holder, shown.rows ? tableOf(shown, state, actions) : h("p", { class: "muted" }, "No jobs match."));
    holder.dataset.rows = String(shown.rows);
    fill(problems, shown.errors.join(" "));
    const read = jobs.count > jobs.data.length ? ` (newest ${jobs.data.length} read)` : "";
    count.textContent = `${shown.rows} of ${jobs.count} job${jobs.count === 1 ? "" : "s"}${read}`;
    const keys = shown.columns.map((c) => c.key).join(",");
    if (keys !== columnKeys) fill(choices, columnChoices(shown.columns, state.hidden, toggleColumn));
    columnKeys = keys;
  };

  // Class lrs arrive per job (one small metrics read each, cached): the table redraws as they do.
  let pending = null;
  const redrawSoon = () => {
    pending ??= setTimeout(() => { pending = null; if (context.alive) render(); }, 100);
  };
  context.onLeave(() => clearTimeout(pending));
  const readLrs = () => {
    for (const job of jobs.data) {
      if (lrsOf.has(job.id) || job.status === "queued") continue;
      classLrs(job.id).then((found) => {
        if (!Object.keys(found).length) return;
        lrsOf.set(job.id, found);
        redrawSoon();
      }, () => {}); // asked again on the next refresh
    }
  };
  const refresh = async () => {
    jobs = await api("/v1/jobs", { params: { status: state.status, sweep_id: state.sweep, limit: 200 } });
    render();
    readLrs();
  };

  const keepQuery = () => replaceQuery("/jobs", { status: state.status, sweep: state.sweep, group: state.group, filter: state.filter });
  const follow = (element, name, event, then) => element.addEventListener(event, () => {
    state[name] = element.value;
    keepQuery();
    then();
  });
  follow(statusSelect, "status", "change", refresh);
  follow(sweepSelect, "sweep", "change", refresh);
  follow(groupSelect, "group", "change", render);
  follow(filterInput, "filter", "input", render);
  await refresh();
  context.every(3000, refresh);
}
