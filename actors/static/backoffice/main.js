// The back office: operator sign-in, the house's P&L and exposure by symbol (polled while the
// page is visible), halt/resume per symbol, account search and detail (force close, balance
// adjustment), and the audit log. What an operator may do comes from GET /me: buttons their
// role cannot use are not shown (the server refuses them anyway). With several engine shards
// (split mode) it also shows the shard facts the API adds (see "engine shards" below).

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

// ------------------------------------------------------------------------------ engine shards

// With `[bus] shards` > 1 the admin API adds shard facts: `halted_shards` on /exposure and
// /symbols rows, `differing_shards` on /symbols rows, `shard` on audit entries (always 0 with one
// engine), and halt/resume may answer 503 SHARDS_UNAVAILABLE or 502 SHARDS_DISAGREE naming shards.
// With one shard none of the fields appear and the page draws exactly what it always did.
const SHARD_PROBLEMS = new Set(["SHARDS_UNAVAILABLE", "SHARDS_DISAGREE"]);
const SHARD_ERRORS = {
  ENGINE_TIMEOUT: "did not answer in time",
  ENGINE_STOPPED: "is stopped",
  OVERLOADED: "is overloaded",
};

let sharded = false; // the deployment has several shards: /exposure rows carry halted_shards
let shardsDeclared = 1; // how many engine shards the deployment runs (GET /me `shards`)
let shardsKnown = 1; // that, or 1 + the highest shard id any answer named if higher
let differing = new Map(); // symbol -> the shards whose instrument differs from shard 0's
let lastAudit = null; // the audit page on screen, drawn again when the shard column appears

function learnShards(ids) {
  for (const id of ids) shardsKnown = Math.max(shardsKnown, Number(id) + 1);
}

function shardList(ids) {
  return `${ids.length === 1 ? "shard" : "shards"} ${ids.join(", ")}`;
}

function badge(text, title) {
  const span = document.createElement("span");
  span.className = "badge";
  span.textContent = text;
  span.title = title;
  return span;
}

// What a 503 SHARDS_UNAVAILABLE or 502 SHARDS_DISAGREE means, in an operator's words:
// [what happened, what to do].
function shardProblem(title, error) {
  const details = error.details;
  const applied = details.applied_on || [];
  const where = applied.length ? `was applied on ${shardList(applied)}` : "was applied on no shard";
  if (error.code === "SHARDS_DISAGREE") {
    const refused = Object.entries(details.refused || {});
    const ids = refused.map(([shard]) => shard);
    const why = refused.map(([shard, code]) => `shard ${shard}: ${code}`).join("; ");
    return [
      `${title} ${where} but was refused by ${shardList(ids)} (${why}).`,
      `The shards do not agree about this symbol. Retry; if ${shardList(ids)} refuses again, ` +
        "check that every shard runs the same instruments (the engine logs say why).",
    ];
  }
  const missing = details.shards || [];
  const why = missing.map((shard) => `shard ${shard} ${SHARD_ERRORS[details.errors?.[shard]] || "did not answer"}`);
  return [
    `${title} ${where}, but not confirmed by ${shardList(missing)}: ${why.join("; ")}.`,
    `Retry once ${shardList(missing)} is back: repeating it is safe, a shard that already applied it ` +
      "just applies it again.",
  ];
}

// Show a shard problem; resolves to true when the operator asks to retry.
function askRetry(title, error) {
  const dialog = $("shards-dialog");
  const form = $("shards-form");
  const [what, todo] = shardProblem(title, error);
  $("shards-title").textContent =
    error.code === "SHARDS_DISAGREE" ? `${title}: the shards disagree` : `${title}: not on every shard`;
  $("shards-what").textContent = what;
  $("shards-todo").textContent = todo;
  dialog.showModal();
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener("submit", retry);
      close.removeEventListener("click", dismiss);
      dialog.removeEventListener("cancel", dismiss);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const retry = (event) => {
      event.preventDefault();
      done(true);
    };
    const dismiss = (event) => {
      event.preventDefault();
      done(false);
    };
    const close = form.querySelector("[data-cancel]");
    form.addEventListener("submit", retry);
    close.addEventListener("click", dismiss);
    dialog.addEventListener("cancel", dismiss);
  });
}

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

// A shard problem (some shard did not apply it) opens a dialog that says which and offers to
// send the same action again, with the same reason: every shard applies it again harmlessly.
async function act(title, method, path, body, done) {
  const reason = await askReason(title);
  if (reason === null) return;
  for (;;) {
    try {
      const result = await api.call(method, path, { ...body, reason });
      done(result);
      refreshAudit();
      return;
    } catch (error) {
      if (!SHARD_PROBLEMS.has(error.code)) {
        toast(`${title}: ${error.message}`, "error");
        return;
      }
      const { shards = [], applied_on = [], refused = {} } = error.details;
      learnShards([...shards, ...applied_on, ...Object.keys(refused)]);
      refreshDesk();
      refreshAudit();
      if (!(await askRetry(title, error))) return;
    }
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

// The status of a symbol: with several shards, which shards have it halted, "partial" when
// some shard the page knows of still trades it (both buttons then: halt or resume every shard),
// and a flag when some shard's instrument differs from shard 0's.
function statusCell(row) {
  const td = cell(row.halted ? "Halted" : "Trading", row.halted ? "status halted" : "status");
  const halted = row.halted_shards;
  let trading = [];
  if (halted && row.halted) {
    td.textContent = `Halted on ${shardList(halted)}`;
    trading = [...Array(shardsKnown).keys()].filter((shard) => !halted.includes(shard));
    if (trading.length) {
      td.classList.add("partial");
      td.append(
        badge(
          `partial: trading on ${shardList(trading)}`,
          "Not every shard applied the halt. Halt again to finish it, or resume to lift it everywhere.",
        ),
      );
    }
  }
  const apart = differing.get(row.symbol) || [];
  if (apart.length) {
    td.append(
      badge(
        `instrument differs on ${shardList(apart)}`,
        "An instrument change did not reach every shard: make the same change again.",
      ),
    );
  }
  return [td, trading.length > 0];
}

function exposureRow(row) {
  const tr = document.createElement("tr");
  tr.dataset.symbol = row.symbol;
  const symbol = document.createElement("th");
  symbol.scope = "row";
  symbol.textContent = row.symbol;
  const [status, partial] = statusCell(row);
  if (status.querySelector(".badge")) {
    // the status may be scrolled out of sight (a phone): a mark by the symbol says to look
    const mark = document.createElement("span");
    mark.className = "shard-mark";
    mark.textContent = "⚠";
    mark.title = "Not the same on every shard: see the status";
    mark.setAttribute("aria-hidden", "true");
    symbol.append(" ", mark);
  }
  const actions = cell("", "actions");
  if (permissions.has("halt")) {
    const verbs = partial ? ["Halt", "Resume"] : [row.halted ? "Resume" : "Halt"];
    for (const verb of verbs) {
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

// Several shards only: which shards' instruments differ from shard 0's (GET /symbols).
async function refreshDiffering() {
  try {
    const { symbols } = await api.get("/symbols");
    differing = new Map(symbols.map((row) => [row.symbol, row.differing_shards || []]));
    for (const row of symbols) learnShards([...(row.differing_shards || []), ...(row.halted_shards || [])]);
  } catch {
    // the flags stay as they were; the exposure's own answer says when shards do not answer
  }
}

async function refreshDesk() {
  try {
    const [pnl, exposure] = await Promise.all([api.get("/pnl"), api.get("/exposure")]);
    const wasSharded = sharded;
    sharded = shardsDeclared > 1 || exposure.symbols.some((row) => row.halted_shards !== undefined);
    if (sharded) {
      for (const row of exposure.symbols) learnShards(row.halted_shards);
      await refreshDiffering();
    }
    renderPnl(pnl);
    renderExposure(exposure);
    if (sharded !== wasSharded && lastAudit) renderAudit(lastAudit);
    $("live-state").textContent = "live";
    $("live-state").classList.remove("stale");
  } catch (error) {
    const missing = error.code === "SHARDS_UNAVAILABLE" ? error.details.shards || [] : [];
    $("live-state").textContent = missing.length ? `paused: ${shardList(missing)} not answering` : "paused";
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

function auditRow(entry, withShard) {
  const tr = document.createElement("tr");
  const detail = typeof entry.detail === "string" ? entry.detail : JSON.stringify(entry.detail);
  tr.append(
    cell(time(entry.ts)),
    cell(entry.operator_email || `#${entry.operator_id}`),
    cell(entry.action),
    cell(entry.target),
    ...(withShard ? [cell(String(entry.shard))] : []),
    cell(entry.reason),
    cell(detail, "detail"),
  );
  return tr;
}

// The Shard column: whenever the deployment has several shards (a halt one shard missed is a
// single shard-0 entry: the column must be there to show it), or an entry names a shard other
// than 0; never with one engine.
function renderAudit(page) {
  lastAudit = page;
  learnShards(page.entries.map((entry) => entry.shard ?? 0));
  const withShard = sharded || page.entries.some((entry) => entry.shard);
  $("audit-shard").hidden = !withShard;
  const rows = page.entries.map((entry) => auditRow(entry, withShard));
  fill($("audit").tBodies[0], rows, withShard ? 7 : 6, "No operator action yet.");
}

async function refreshAudit() {
  const form = $("audit-filter");
  const params = new URLSearchParams({ limit: "50" });
  if (form.operator.value.trim()) params.set("operator", form.operator.value.trim());
  if (form.action.value) params.set("action", form.action.value);
  try {
    const page = await api.get(`/audit?${params}`);
    renderAudit(page);
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
    sharded = false;
    shardsKnown = 1;
    differing = new Map();
    lastAudit = null;
    return;
  }
  const me = await api.get("/me");
  permissions = new Set(me.permissions);
  shardsDeclared = me.shards || 1;
  shardsKnown = Math.max(shardsKnown, shardsDeclared);
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
