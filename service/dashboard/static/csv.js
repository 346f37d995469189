// CSV made in the browser from what the API already served, and handed to the user as a file.

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
function field(value) {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** CSV text of a header row and data rows (arrays of values; null and undefined are empty). */
export function csvText(header, rows) {
  return [header, ...rows].map((row) => row.map(field).join(",")).join("\r\n") + "\r\n";
}

/** Offer `text` as a download named `filename`. */
export function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later: some browsers read the blob after click() has returned.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A file name safe on every system: letters, digits, dot, dash and underscore. */
export const fileName = (stem, extension = "csv") => `${stem.replace(/[^A-Za-z0-9._-]+/g, "_")}.${extension}`;
