// The back office: operator sign-in, the house's P&L and exposure by symbol (polled while the
// page is visible), halt/resume per symbol, account search and detail (force close, balance
// adjustment), and the audit log. What an operator may do comes from GET /me: buttons their
// role cannot use are not shown (the server refuses them anyway).

import * as api from "./api.js";
import { button, cell, fill, mountTheme, toast } from "./common/dom.js";
import { group, time, tone } from "./common/format.js";

const POLL_MS = 2000;
const AUDIT_POLL_MS = 5000;

let permissions = new Set();
let pollTimer = null;
let auditTimer = null;
let accountsCursor = null;
let openAccount = null;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------ formatting

// an amount that can win or lose (pnl, a ledger change): green or red
function money(text) {
  return cell(group(text), `num ${tone(text)}`.trim());
}

// an amount that is just a level (balance, margin)
function amount(text) {
  return cell(group(text), "num");
}

// ------------------------------------------------------------------------------ the reason dialog

// Ask for a reason (every operator action carries one); resolves to the text, or null.
function askReason(title) {
  const dialog = $("reason-dialog");
  const form = $("reason-form");
  $("reason-title").textContent = title;
  form.reason.value = "";
  form.querySelector("[data-error]").textContent = "";
  dialog.showModal();
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", dismiss);
      dialog.removeEventListener("cancel", dismiss);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const submit = (event) => {
      event.preventDefault();
      const reason = form.reason.value.trim();
      if (!reason) {
        form.querySelector("[data-error]").textContent = "Say why: the reason goes to the audit log.";
        return;
      }
      done(reason);
    };
    const dismiss = (event) => {
      event.preventDefault();
      done(null);
    };
    const cancel = form.querySelector("[data-cancel]");
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", dismiss);
    dialog.addEventListener("cancel", dismiss);
  });
}

async function act(title, method, path, body, done) {
  const reason = await askReason(title);
  if (reason === null) return;
  try {
    const result = await api.call(method, path, { ...body, reason });
    done(result);
    refreshAudit();
  } catch (error) {
    toast(`${title}: ${error.message}`, "error");
  }
}

// ------------------------------------------------------------------------------ house and exposure

function renderPnl(pnl) {
  const figures = $("house-figures");
  const values = { ...pnl.realized, realized: pnl.realized.total, unrealized: pnl.unrealized, net: pnl.net };
  for (const dd of figures.querySelectorAll("dd[data-field]")) {
    const value = values[dd.dataset.field];
    dd.textContent = group(value);
    dd.className = tone(value);
  }
}

function exposureRow(row) {
  const tr = document.createElement("tr");
  tr.dataset.symbol = row.symbol;
  const symbol = document.createElement("th");
  symbol.scope = "row";
  symbol.textContent = row.symbol;
  const status = cell(row.halted ? "Halted" : "Trading", row.halted ? "status halted" : "status");
  const actions = cell("", "actions");
  if (permissions.has("halt")) {
    const verb = row.halted ? "Resume" : "Halt";
    actions.append(
      button(
        verb,
        () =>
          act(`${verb} ${row.symbol}`, "POST", `/symbols/${row.symbol}/${verb.toLowerCase()}`, {}, (symbolRow) => {
            toast(`${row.symbol} ${symbolRow.halted ? "halted" : "resumed"}`);
            refreshDesk();
          }),
        "small",
        `${verb} ${row.symbol}`,
      ),
    );
  }
  tr.append(
    symbol,
    cell(group(row.bid), "num"),
    cell(group(row.long_qty), "num"),
    cell(group(row.short_qty), "num"),
    cell(group(row.net_qty), "num"),
    amount(row.net_notional),
    money(row.house_unrealized),
    status,
    actions,
  );
  return tr;
}

function renderExposure(exposure) {
  $("exposure").tBodies[0].replaceChildren(...exposure.symbols.map(exposureRow));
  for (const td of $("exposure").querySelectorAll("[data-total]")) {
    const value = exposure.totals[td.dataset.total];
    td.textContent = group(value);
    td.className = td.dataset.total === "house_unrealized" ? `num ${tone(value)}`.trim() : "num";
  }
}

async function refreshDesk() {
  try {
    const [pnl, exposure] = await Promise.all([api.get("/pnl"), api.get("/exposure")]);
    renderPnl(pnl);
    renderExposure(exposure);
    $("live-state").textContent = "live";
    $("live-state").classList.remove("stale");
  } catch (error) {
    $("live-state").textContent = "paused";
    $("live-state").classList.add("stale");
    if (error.status === 401 || error.status === 403) toast(error.message, "error");
  }
}

// ------------------------------------------------------------------------------ accounts

function accountQuery(cursor) {
  const form = $("account-search");
  const params = new URLSearchParams();
  for (const name of ["email", "min_margin_level", "max_margin_level"]) {
    const value = form[name].value.trim();
    if (value) params.set(name, value);
  }
  if (cursor) params.set("cursor", cursor);
  return params.toString();
}

function accountRow(row) {
  const tr = document.createElement("tr");
  const id = cell("");
  id.append(button(`#${row.account_id}`, () => showAccount(row.account_id), "link", `Account ${row.account_id}`));
  tr.append(
    id,
    cell(row.email || "—"),
    cell(row.demo === null ? "—" : row.demo ? "Demo" : "Real"),
    amount(row.balance),
    amount(row.equity),
    cell(row.margin_level === null ? "—" : `${group(row.margin_level)} %`, "num"),
    cell(String(row.positions), "num"),
    cell(String(row.orders), "num"),
  );
  return tr;
}

async function searchAccounts(more = false) {
  const error = $("account-search").parentElement.querySelector("[data-error]");
  error.textContent = "";
  try {
    const page = await api.get(`/accounts?${accountQuery(more ? accountsCursor : null)}`);
    const tbody = $("accounts").tBodies[0];
    const rows = page.accounts.map(accountRow);
    if (more) tbody.append(...rows);
    else fill(tbody, rows, 8, "No account matches.");
    accountsCursor = page.next_cursor;
    $("accounts-more").hidden = !accountsCursor;
  } catch (failure) {
    error.textContent = failure.message;
  }
}

function positionRow(position) {
  const tr = document.createElement("tr");
  const actions = cell("", "actions");
  if (permissions.has("close")) {
    actions.append(
      button(
        "Close",
        () =>
          act(`Close position ${position.id}`, "POST", `/positions/${position.id}/close`, {}, (closed) => {
            toast(`Position ${closed.position_id} closed at ${group(closed.close_price)}`);
            showAccount(openAccount);
            refreshDesk();
          }),
        "small danger",
        `Close position ${position.id}`,
      ),
    );
  }
  tr.append(
    cell(position.id),
    cell(position.symbol),
    cell(position.side, position.side),
    cell(group(position.qty), "num"),
    cell(group(position.open_price), "num"),
    amount(position.margin),
    money(position.unrealized_pnl),
    actions,
  );
  return tr;
}

function orderRow(order) {
  const tr = document.createElement("tr");
  tr.append(
    cell(order.id),
    cell(order.symbol),
    cell(order.side, order.side),
    cell(order.type),
    cell(group(order.price), "num"),
    amount(order.margin),
  );
  return tr;
}

function ledgerRow(entry) {
  const tr = document.createElement("tr");
  tr.append(cell(time(entry.ts)), cell(entry.kind), money(entry.free_delta), amount(entry.balance));
  return tr;
}

async function showAccount(accountId) {
  try {
    const account = await api.get(`/accounts/${accountId}`);
    openAccount = accountId;
    $("account-detail").hidden = false;
    $("account-title").textContent = `Account #${account.account_id}${account.email ? " — " + account.email : ""}`;
    for (const dd of $("account-figures").querySelectorAll("dd[data-field]")) {
      const value = account[dd.dataset.field];
      dd.textContent =
        dd.dataset.field === "margin_level"
          ? value === null
            ? "—"
            : `${group(value)} %`
          : dd.dataset.field === "account_type"
            ? `${value || "untyped"} (${account.margin_mode})`
            : group(value);
    }
    $("adjust-form").hidden = !permissions.has("adjust");
    fill($("account-positions").tBodies[0], account.open_positions.map(positionRow), 8, "No open position.");
    fill($("account-orders").tBodies[0], account.pending_orders.map(orderRow), 6, "No pending order.");
    fill($("account-ledger").tBodies[0], account.ledger.map(ledgerRow), 4, "No ledger entry.");
  } catch (error) {
    toast(error.message, "error");
  }
}

async function adjust(event) {
  event.preventDefault();
  const form = event.target;
  const body = { amount: form.amount.value.trim(), reason: form.reason.value.trim() };
  try {
    await api.call("POST", `/accounts/${openAccount}/adjust`, body);
    toast(`Account #${openAccount} adjusted by ${body.amount}`);
    form.reset();
    await showAccount(openAccount);
    refreshAudit();
  } catch (error) {
    toast(`Adjust: ${error.message}`, "error");
  }
}

// ------------------------------------------------------------------------------ audit

function auditRow(entry) {
  const tr = document.createElement("tr");
  const detail = typeof entry.detail === "string" ? entry.detail : JSON.stringify(entry.detail);
  tr.append(
    cell(time(entry.ts)),
    cell(entry.operator_email || `#${entry.operator_id}`),
    cell(entry.action),
    cell(entry.target),
    cell(entry.reason),
    cell(detail, "detail"),
  );
  return tr;
}

async function refreshAudit() {
  const form = $("audit-filter");
  const params = new URLSearchParams({ limit: "50" });
  if (form.operator.value.trim()) params.set("operator", form.operator.value.trim());
  if (form.action.value) params.set("action", form.action.value);
  try {
    const page = await api.get(`/audit?${params}`);
    fill($("audit").tBodies[0], page.entries.map(auditRow), 6, "No operator action yet.");
  } catch (error) {
    if (error.status !== 401) toast(`Audit log: ${error.message}`, "error");
  }
}

// ------------------------------------------------------------------------------ session

function stopPolling() {
  clearInterval(pollTimer);
  clearInterval(auditTimer);
  pollTimer = auditTimer = null;
}

function startPolling() {
  stopPolling();
  pollTimer = setInterval(() => document.visibilityState === "visible" && refreshDesk(), POLL_MS);
  auditTimer = setInterval(() => document.visibilityState === "visible" && refreshAudit(), AUDIT_POLL_MS);
}

async function onSession(pair) {
  const signedIn = Boolean(pair);
  $("signin-form").hidden = signedIn;
  $("desk").hidden = !signedIn;
  $("signout-button").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
  if (!signedIn) {
    stopPolling();
    permissions = new Set();
    return;
  }
  const me = await api.get("/me");
  permissions = new Set(me.permissions);
  $("whoami").textContent = `${me.email} · ${me.role}`;
  await Promise.all([refreshDesk(), refreshAudit()]);
  startPolling();
}

function mountForms() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const error = form.querySelector("[data-error]");
    error.textContent = "";
    try {
      await api.signIn(form.email.value.trim(), form.password.value);
      form.reset();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  $("signout-button").addEventListener("click", () => api.signOut().catch(() => {}));
  $("account-search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchAccounts();
  });
  $("accounts-more").addEventListener("click", () => searchAccounts(true));
  $("adjust-form").addEventListener("submit", adjust);
  $("audit-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    refreshAudit();
  });
}

async function start() {
  mountTheme();
  mountForms();
  api.onSession((pair) => onSession(pair).catch((error) => toast(error.message, "error")));
  await api.resume();
  document.body.dataset.ready = "true";
}

start().catch((error) => toast(`The back office could not start: ${error.message}`, "error"));
