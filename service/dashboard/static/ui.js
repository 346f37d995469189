// Small DOM helpers shared by the pages: elements, formatting, tables.

/** h("a", {href: "#/jobs", class: "x"}, "text", child): an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Replace an element's children (null/false ones skipped, as in h()). */
export function fill(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "diverged", "pruned"]);

export const status = (value) => h("span", { class: `status ${value}` }, value);

export function num(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") return value; // "nan", "inf"
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const a = Math.abs(value);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? value.toExponential(2) : value.toFixed(digits);
}

/** {"optimizer.lr": 0.00517..., "batch.size": 2} -> "optimizer.lr=0.0052 batch.size=2" */
export const params = (values) => h("code", {}, Object.entries(values || {}).map(([k, v]) => `${k}=${num(v)}`).join(" "));

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Seconds between two ISO times (the API's are UTC without a zone suffix), to now if `end` is null. */
export function seconds(start, end) {
  if (!start) return null;
  const parse = (t) => Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(t) ? t : `${t}Z`);
  return ((end ? parse(end) : Date.now()) - parse(start)) / 1000;
}

export const when = (t) => (t ? new Date(/[zZ]$/.test(t) ? t : `${t}Z`).toLocaleString() : "–");

export function facts(pairs) {
  return h("div", { class: "facts" }, pairs.map(([label, value]) => h("div", {}, h("b", {}, label), value)));
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

/**
 * A table of `rows` with `columns` [{label, value(row), cell(row)?, num?}]. With `sortable`,
 * clicking a header sorts by that column's value (again: the other way); a select does the
 * same on narrow screens, where the header row is hidden. `rowClass(row)` styles a row.
 */
export function table(columns, rows, { sortable = false, rowClass = () => "", sort = null } = {}) {
  const state = { column: sort?.column ?? null, descending: sort?.descending ?? false };
  const body = h("tbody");
  const heads = columns.map((c, i) =>
    h("th", {
      class: [c.num ? "num" : "", sortable ? "sortable" : ""].join(" ").trim() || null,
      onclick: sortable ? () => sortBy(i, state.column === i ? !state.descending : false) : null,
      scope: "col",
    }, c.label));
  const render = () => {
    let ordered = rows;
    if (state.column !== null) {
      const value = columns[state.column].value;
      const direction = state.descending ? -1 : 1;
      ordered = [...rows].sort((a, b) => compareValues(value(a), value(b), direction));
    }
    body.replaceChildren(...ordered.map((row) =>
      h("tr", { class: rowClass(row) || null },
        columns.map((c) => h("td", { class: c.num ? "num" : null, "data-label": c.label },
          c.cell ? c.cell(row) : num(c.value(row)))))));
    heads.forEach((th, i) => {
      if (i === state.column) th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
  };
  const sortBy = (column, descending) => {
    state.column = column;
    state.descending = descending;
    render();
  };
  render();
  const element = h("table", { class: "data" }, h("thead", {}, h("tr", {}, heads)), body);
  if (!sortable) return element;
  const picker = h("select", {
    "aria-label": "sort by",
    onchange: (event) => {
      const [column, direction] = event.target.value.split(":");
      sortBy(Number(column), direction === "desc");
    },
  }, columns.flatMap((c, i) => [
    h("option", { value: `${i}:asc` }, `${c.label} ↑`),
    h("option", { value: `${i}:desc` }, `${c.label} ↓`),
  ]));
  if (state.column !== null) picker.value = `${state.column}:${state.descending ? "desc" : "asc"}`;
  return h("div", {}, h("label", { class: "narrow-only" }, "Sort by ", picker), element);
}

/** Sort order of two cell values: missing ones last in either direction (`direction` 1 or -1);
 * numbers as numbers, the rest as text. */
export function compareValues(a, b, direction = 1) {
  const missing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
  if (missing(a) || missing(b)) return missing(a) - missing(b);
  if (typeof a === "number" && typeof b === "number") return (a - b) * direction;
  return String(a).localeCompare(String(b)) * direction;
}
