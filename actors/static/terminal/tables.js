// The tables: open positions with live P&L, pending orders, history and ledger (paginated),
// and the edit dialog for close / partial close / TP-SL-trailing / add margin / modify order.

import { button, cell, fill } from "./common/dom.js";
import { group, percent, signed, time, tone } from "./common/format.js";
import { floorDiv, fromUnits, money, moneyText, pnlCents, toUnits } from "./decimal.js";
import { state } from "./state.js";

// How a closed position's close_reason reads in the history table and the close toast.
export const REASONS = {
  user: "Closed",
  take_profit: "Take profit",
  stop_loss: "Stop loss",
  trailing_stop: "Trailing stop",
  liquidation: "Liquidation",
  stop_out: "Stop-out",
};

const pnlCells = new Map(); // position id -> its P&L cell
let actions;

function actionsCell(...buttons) {
  const td = document.createElement("td");
  td.className = "actions";
  td.append(...buttons);
  return td;
}

const parsed = new Map(); // position id -> its numbers as units, parsed once per change
const lastPnl = new Map(); // position id -> unrealized cents at the last quote drawn

function units(position, instrument) {
  const key = `${position.qty}|${position.open_price}|${position.margin}`;
  let entry = parsed.get(position.id);
  if (!entry || entry.key !== key) {
    const { price_decimals: pd, qty_decimals: qd } = instrument;
    entry = {
      key,
      qty: toUnits(position.qty, qd),
      open: toUnits(position.open_price, pd),
      floor: -money(position.margin),
    };
    parsed.set(position.id, entry);
  }
  return entry;
}

const crossAccount = () => Boolean(state.account && state.account.margin_mode === "cross");

// Unrealized P&L at the current quote as the core computes it: floored, and for an isolated
// account never below −margin (a cross account's positions share its equity).
export function unrealized(position) {
  const instrument = state.instruments.get(position.symbol);
  const quote = state.quotes.get(position.symbol);
  if (!instrument || !quote) return position.unrealized_pnl ? money(position.unrealized_pnl) : 0n;
  const { price_decimals: pd, qty_decimals: qd } = instrument;
  const isLong = position.side === "buy";
  const { qty, open, floor } = units(position, instrument);
  const pnl = pnlCents(isLong, qty, open, toUnits(isLong ? quote.bid : quote.ask, pd), pd, qd);
  return pnl < floor && !crossAccount() ? floor : pnl;
}

export function mountTables({ onAction }) {
  actions = onAction;
  const tabs = document.querySelectorAll('[role="tab"]');
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        other.setAttribute("aria-selected", String(other === tab));
        document.getElementById(other.getAttribute("aria-controls")).hidden = other !== tab;
      }
      actions({ action: "tab", tab: tab.getAttribute("aria-controls").replace("tab-", "") });
    });
  }
}

const positionRows = new Map(); // position id -> {signature, row}: unchanged rows are kept

function positionRow(position) {
  const cross = crossAccount();
  const signature = [
    position.qty,
    position.open_price,
    position.margin,
    position.take_profit,
    position.stop_loss,
    position.liquidation_price,
    position.commission,
    position.swap,
    cross,
  ].join("|");
  const cached = positionRows.get(position.id);
  if (cached && cached.signature === signature) return cached.row;
  const id = position.id;
  const row = document.createElement("tr");
  row.dataset.id = id;
  const pnl = cell("", "num");
  pnlCells.set(id, pnl);
  row.append(
    cell(position.symbol),
    cell(position.side, position.side),
    cell(position.qty, "num"),
    cell(group(position.open_price), "num"),
    cell(group(position.margin), "num"),
    cell(`${position.leverage}×`, "num"),
    cell(group(position.take_profit), "num"),
    cell(group(position.stop_loss), "num"),
    cell(cross ? "—" : group(position.liquidation_price), "num"), // a cross account has a stop-out level instead
    cell(group(position.commission), "num"),
    cell(signed(position.swap), "num"),
    pnl,
    actionsCell(
      button("Edit", () => editPosition(state.positions.get(id))),
      button("Close", () => actions({ action: "close", position_id: id }), "small danger"),
    ),
  );
  positionRows.set(id, { signature, row });
  return row;
}

// Put exactly ``rows`` in ``tbody``, in order, moving only what is out of place.
function syncRows(tbody, rows) {
  rows.forEach((row, index) => {
    const current = tbody.children[index];
    if (current !== row) tbody.insertBefore(row, current || null);
  });
  while (tbody.children.length > rows.length) tbody.lastElementChild.remove();
}

export function renderPositions() {
  const tbody = document.querySelector("#positions tbody");
  lastPnl.clear();
  document.querySelector('[data-count="positions"]').textContent = state.positions.size || "";
  for (const id of positionRows.keys()) {
    if (!state.positions.has(id)) {
      positionRows.delete(id);
      pnlCells.delete(id);
    }
  }
  if (!state.positions.size) {
    fill(tbody, [], 13, "No open positions");
    return;
  }
  const sorted = [...state.positions.values()].sort((a, b) => Number(b.id) - Number(a.id));
  syncRows(tbody, sorted.map(positionRow));
  updatePnl();
}

// Refresh the P&L cells only (on every quote): cheaper than rebuilding the rows.
export function updatePnl(symbol) {
  for (const [id, td] of pnlCells) {
    const position = state.positions.get(id);
    if (!position || (symbol && position.symbol !== symbol)) continue;
    const pnl = unrealized(position);
    lastPnl.set(id, pnl);
    const text = moneyText(pnl);
    if (td.dataset.value === text) continue; // untouched cells cost no layout
    td.dataset.value = text;
    td.textContent = signed(text);
    td.className = `num ${tone(text)}`;
  }
}

export function renderOrders() {
  const tbody = document.querySelector("#orders tbody");
  document.querySelector('[data-count="orders"]').textContent = state.orders.size || "";
  if (!state.orders.size) {
    fill(tbody, [], 9, "No pending orders");
    return;
  }
  const rows = [...state.orders.values()]
    .sort((a, b) => Number(b.id) - Number(a.id))
    .map((order) => {
      const row = document.createElement("tr");
      row.dataset.id = order.id;
      row.append(
        cell(order.symbol),
        cell(order.side, order.side),
        cell(order.type),
        cell(group(order.price), "num"),
        cell(order.qty, "num"),
        cell(group(order.margin), "num"),
        cell(group(order.take_profit), "num"),
        cell(group(order.stop_loss), "num"),
        actionsCell(
          button("Edit", () => editOrder(state.orders.get(order.id))),
          button("Cancel", () => actions({ action: "cancel", order_id: order.id }), "small danger"),
        ),
      );
      return row;
    });
  tbody.replaceChildren(...rows);
}

export function renderHistory(positions, { append }) {
  const tbody = document.querySelector("#history tbody");
  const rows = positions.map((closed) => {
    const row = document.createElement("tr");
    row.dataset.id = closed.position_id;
    row.append(
      cell(time(closed.closed_at)),
      cell(closed.symbol),
      cell(closed.side, closed.side),
      cell(closed.qty, "num"),
      cell(group(closed.open_price), "num"),
      cell(group(closed.close_price), "num"),
      cell(REASONS[closed.close_reason] || closed.close_reason, `reason ${closed.close_reason}`),
      cell(group(closed.commission), "num"),
      cell(signed(closed.swap), "num"),
      cell(signed(closed.pnl), `num ${tone(closed.pnl)}`),
    );
    return row;
  });
  if (append) tbody.append(...rows);
  else fill(tbody, rows, 10, "No closed positions yet");
}

export function renderLedger(entries, { append }) {
  const tbody = document.querySelector("#ledger tbody");
  const rows = entries.map((entry) => {
    const row = document.createElement("tr");
    row.append(
      cell(time(entry.ts)),
      cell(entry.kind.replaceAll("_", " ")),
      cell(signed(entry.free_delta), "num"),
      cell(signed(entry.locked_delta), "num"),
      cell(group(entry.balance), "num"),
      cell(entry.ref),
    );
    return row;
  });
  if (append) tbody.append(...rows);
  else fill(tbody, rows, 6, "No entries yet");
}

export function showMore(name, cursor) {
  const more = document.querySelector(`[data-more="${name}"]`);
  more.hidden = !cursor;
  more.dataset.cursor = cursor || "";
}

// The account's figures, live: equity = balance + the unrealized P&L at the current quotes;
// free margin = equity − used margin for a cross account, the free balance for an isolated one;
// margin level = equity / used margin (as the server computes them). Null before the summary.
export function accountFigures() {
  const account = state.account;
  if (!account) return null;
  const balance = money(account.balance);
  const locked = money(account.locked);
  let upnl = 0n;
  for (const position of state.positions.values()) {
    upnl += lastPnl.has(position.id) ? lastPnl.get(position.id) : unrealized(position);
  }
  const equity = balance + upnl;
  const cross = crossAccount();
  const level = locked > 0n ? fromUnits(floorDiv(equity * 10000n, locked), 2) : null;
  return { balance, locked, equity, free: cross ? equity - locked : balance - locked, level, cross };
}

export function renderAccount() {
  const bar = document.getElementById("account-bar");
  const figures = accountFigures();
  if (!figures) return;
  const values = {
    balance: group(moneyText(figures.balance)),
    equity: group(moneyText(figures.equity)),
    locked: group(moneyText(figures.locked)),
    free_margin: group(moneyText(figures.free)),
    margin_level: percent(figures.level),
  };
  for (const [name, text] of Object.entries(values)) {
    const dd = bar.querySelector(`[data-field="${name}"]`);
    if (dd.textContent !== text) dd.textContent = text;
  }
  const call = state.account.margin_call_level;
  const low = figures.cross && figures.level !== null && call && money(figures.level) <= money(call);
  bar.querySelector('[data-field="margin_level"]').classList.toggle("alert", Boolean(low));
}

// ---------------------------------------------------------------------------------- dialog

function input(label, name, value = "") {
  const wrapper = document.createElement("label");
  const element = document.createElement("input");
  element.name = name;
  element.value = value || "";
  element.inputMode = "decimal";
  element.autocomplete = "off";
  wrapper.append(label + " ", element);
  return wrapper;
}

// Open the edit dialog: fields, then buttons that each run an action with the form's values.
export function openDialog(title, fields, buttons) {
  const dialog = document.getElementById("edit-dialog");
  const form = dialog.querySelector("form");
  dialog.querySelector("[data-title]").textContent = title;
  dialog
    .querySelector("[data-fields]")
    .replaceChildren(...fields.map(([label, name, value]) => input(label, name, value)));
  const error = dialog.querySelector("[data-error]");
  error.textContent = "";
  const run = (handler) => async () => {
    error.textContent = "";
    try {
      await handler(Object.fromEntries(new FormData(form)));
      dialog.close();
    } catch (failure) {
      error.textContent = failure.message;
    }
  };
  dialog.querySelector("[data-actions]").replaceChildren(
    ...buttons.map(([label, handler, className]) => button(label, run(handler), className || "")),
    button("Dismiss", () => dialog.close(), "ghost"),
  );
  dialog.showModal();
}

// Empty means "remove" for TP/SL/trailing when it was set, "unchanged" when it was not.
const removable = (value, before) => (value.trim() ? value.trim() : before ? null : undefined);

function editPosition(position) {
  const isolated = !crossAccount(); // a cross account's positions share its equity: no margin of their own
  const marginAction = [
    "Add margin",
    (values) => actions({ action: "add_margin", position_id: position.id, amount: values.amount.trim() }),
  ];
  openDialog(
    `Position #${position.id} · ${position.symbol} ${position.side}`,
    [
      ["Take profit", "take_profit", position.take_profit],
      ["Stop loss", "stop_loss", position.stop_loss],
      ["Trailing stop", "trailing_stop", position.trailing_stop],
      ["Close quantity", "qty", ""],
      ...(isolated ? [["Add margin", "amount", ""]] : []),
    ],
    [
      [
        "Save TP/SL",
        (values) =>
          actions({
            action: "modify_position",
            position_id: position.id,
            take_profit: removable(values.take_profit, position.take_profit),
            stop_loss: removable(values.stop_loss, position.stop_loss),
            trailing_stop: removable(values.trailing_stop, position.trailing_stop),
          }),
        "primary",
      ],
      ["Close part", (values) => actions({ action: "close", position_id: position.id, qty: values.qty.trim() })],
      ...(isolated ? [marginAction] : []),
    ],
  );
}

function editOrder(order) {
  openDialog(
    `Order #${order.id} · ${order.symbol} ${order.side} ${order.type}`,
    [
      ["Price", "price", order.price],
      ["Take profit", "take_profit", order.take_profit],
      ["Stop loss", "stop_loss", order.stop_loss],
    ],
    [
      [
        "Save order",
        (values) =>
          actions({
            action: "modify_order",
            order_id: order.id,
            price: values.price.trim() || undefined,
            take_profit: removable(values.take_profit, order.take_profit),
            stop_loss: removable(values.stop_loss, order.stop_loss),
          }),
        "primary",
      ],
    ],
  );
}
