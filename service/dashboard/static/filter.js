// The runs table's filter: "preset=adamw batch>=8 best_val<2.5 qwen3". A term `key op value`
// tests one column (op: = != < <= > >= and ~ for "contains"); any other word must appear in
// some column. Values with spaces go in double quotes: sweep="my sweep".

const TERM = /^([A-Za-z_][\w./-]*)(<=|>=|!=|=|~|<|>)(.*)$/;

const unquote = (text) => text.replace(/^"(.*)"$/, "$1");
const asNumber = (text) => (text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : null);
const missing = (v) => v === null || v === undefined || v === "";

// Does `value` (a number, text or null) pass `op` against the typed `wanted` text?
function passes(value, op, wanted) {
  if (missing(value)) return op === "!=" && wanted !== "";
  const number = asNumber(wanted);
  if (op === "~") return String(value).toLowerCase().includes(wanted.toLowerCase());
  if (typeof value === "number" && number !== null) {
    const equal = Math.abs(value - number) <= 1e-9 * Math.max(Math.abs(value), Math.abs(number));
    return { "=": equal, "!=": !equal, "<": value < number, "<=": value <= number || equal,
      ">": value > number, ">=": value >= number || equal }[op];
  }
  const text = String(value).toLowerCase();
  const other = wanted.toLowerCase();
  if (op === "=") return text === other;
  if (op === "!=") return text !== other;
  return false; // an order test of text against text means nothing here
}

/**
 * Parse `text` against `columns` [{key, value(row)}]: {test(row) -> bool, errors: [message]}.
 * A term naming no column is reported and left out, so a typo never hides every row silently.
 */
export function parseFilter(text, columns) {
  const byKey = new Map(columns.map((c) => [c.key, c]));
  const tests = [];
  const errors = [];
  for (const token of text.match(/(?:[^\s"]+|"[^"]*")+/g) || []) {
    const term = token.match(TERM);
    if (term && byKey.has(term[1])) {
      const [, key, op, wanted] = term;
      const column = byKey.get(key);
      tests.push((row) => passes(column.value(row), op, unquote(wanted)));
    } else if (term) {
      errors.push(`No column "${term[1]}"; filter keys: ${[...byKey.keys()].join(", ")}`);
    } else {
      const word = unquote(token).toLowerCase();
      tests.push((row) => columns.some((c) => !missing(c.value(row)) && String(c.value(row)).toLowerCase().includes(word)));
    }
  }
  return { test: (row) => tests.every((t) => t(row)), errors };
}
