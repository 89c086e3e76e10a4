// Display formatting of the server's decimal strings (both pages): grouping and signs are added to
// the text, the digits are never recomputed.

export function group(text) {
  if (text === null || text === undefined || text === "") return "—";
  const negative = text.startsWith("-");
  const [whole, fraction] = text.replace("-", "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (negative ? "−" : "") + grouped + (fraction !== undefined ? "." + fraction : "");
}

export function signed(text) {
  if (text === null || text === undefined) return "—";
  const isZero = /^-?0(\.0*)?$/.test(text);
  return (text.startsWith("-") || isZero ? "" : "+") + group(text);
}

export function tone(text) {
  if (!text || /^-?0(\.0*)?$/.test(text)) return "";
  return text.startsWith("-") ? "down" : "up";
}

export function percent(text) {
  return text === null || text === undefined ? "—" : group(text) + " %";
}

export function time(ms) {
  const date = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}
