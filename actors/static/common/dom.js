// Small pieces of page both the terminal and the back office draw the same way: table cells,
// rows and buttons, a toast in the #toasts box, and the #theme-button that switches light and
// dark (remembered in localStorage, the system's preference until then).

const THEME_KEY = "exness-theme";

export function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// A button for a table row or a dialog; name: its accessible name when the label alone is
// ambiguous ("Close" in a table of positions: "Close position 7").
export function button(label, onClick, className = "small", name = "") {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = label;
  if (name) element.setAttribute("aria-label", name);
  element.addEventListener("click", onClick);
  return element;
}

// A table body's rows, or one row that says it is empty across all its columns.
export function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
  }
}

// kind: info, fill, warn or error (an error is an alert to screen readers, the rest a status).
export function toast(text, kind = "info") {
  const element = document.createElement("div");
  element.className = `toast ${kind}`;
  element.setAttribute("role", kind === "error" ? "alert" : "status");
  element.textContent = text;
  const box = document.getElementById("toasts");
  box.append(element);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => element.remove(), 6000);
}

// onChange runs after each switch (the terminal redraws its chart in the new colours).
export function mountTheme(onChange = () => {}) {
  const preferred = matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  document.documentElement.dataset.theme = localStorage.getItem(THEME_KEY) || preferred;
  document.getElementById("theme-button").addEventListener("click", () => {
    const theme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = theme;
    localStorage.setItem(THEME_KEY, theme);
    onChange(theme);
  });
}
