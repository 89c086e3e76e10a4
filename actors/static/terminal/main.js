// The terminal's entry point: wires the HTTP API, the socket, the chart, the ticket and the
// tables to the state, and draws quotes at most once per animation frame.

import * as accounts from "./accounts.js";
import * as api from "./api.js";
import { INTERVALS, applyTheme, drawLines, liveCandle, loadCandles, mountChart, priceLines, linesOffScreen } from "./chart.js";
import { mountTheme, toast } from "./common/dom.js";
import { group, signed } from "./common/format.js";
import { floorDiv, fromUnits, money, moneyText, toUnits } from "./decimal.js";
import { Socket, SocketDown } from "./socket.js";
import * as store from "./state.js";
import { state } from "./state.js";
import * as tables from "./tables.js";
import * as ticket from "./ticket.js";

const STALE_AFTER_MS = 5000; // the engine's default [engine] stale_after_ms
const RENDER_INTERVAL_MS = 250;
const HTTP_ROUTES = {
  place: (r) => ["POST", "/orders", without(r, "action")],
  cancel: (r) => ["DELETE", `/orders/${r.order_id}`],
  modify_order: (r) => ["PATCH", `/orders/${r.order_id}`, without(r, "action", "order_id")],
  close: (r) => ["POST", `/positions/${r.position_id}/close`, r.qty ? { qty: r.qty } : {}],
  modify_position: (r) => ["PATCH", `/positions/${r.position_id}`, without(r, "action", "position_id")],
  add_margin: (r) => ["POST", `/positions/${r.position_id}/margin`, { amount: r.amount }],
};

let socket;
const dirty = new Set();
let frameRequested = false;
let lastDraw = -Infinity;
let pendingCandle = null;
let firstLiveQuote = null; // measured by bench/web.py: navigation to the first live quote drawn
const pages = { history: null, ledger: null };

function without(object, ...names) {
  return Object.fromEntries(
    Object.entries(object).filter(([name, value]) => !names.includes(name) && value !== undefined),
  );
}

// ---------------------------------------------------------------------------- order routing

// One order-lane request: over the socket, or over HTTP (same client_order_id) when it is down.
async function send(request) {
  try {
    const result = await socket.order(request);
    if (!result.ok) throw Object.assign(new Error(result.error.message), { code: result.error.code });
    return result;
  } catch (error) {
    if (!(error instanceof SocketDown)) throw error;
    const [method, path, body] = HTTP_ROUTES[request.action](request);
    const result = await api.call(method, path, body);
    return result && result.order === undefined && request.action === "place" ? { order: result } : result || {};
  }
}

async function trade(request) {
  try {
    const result = await send(request);
    applyResult(request, result);
    if (!socket.isOpen) await reloadAccount(); // no account events to follow: read the outcome
    return result;
  } catch (error) {
    toast(`Rejected: ${error.message}`, "error");
    throw error;
  }
}

// The answer of our own request, applied at once (the account channel confirms it too).
function applyResult(request, result) {
  if (request.action === "place") {
    if (result.position) store.putPosition(result.position);
    if (result.position && result.position.commission === undefined) reloadFees();
    else if (result.order && result.order.status === "pending") store.putOrder(result.order);
  } else if (request.action === "cancel") {
    store.removeOrder(String(request.order_id));
  }
}

async function tableAction(request) {
  if (request.action === "tab") return showTab(request.tab);
  return trade(request);
}

// -------------------------------------------------------------------------- account events

let feesReload = null;

// Commission and swaps change positions' fees: read them again (once for a burst of charges).
function reloadFees() {
  if (feesReload) return;
  feesReload = setTimeout(() => {
    feesReload = null;
    api.get("/positions").then((answer) => store.setPositions(answer.positions), () => {});
  }, 200);
}

const ACCOUNT_EVENTS = {
  balance_changed(event) {
    if (state.account) {
      const balance = moneyText(money(event.free) + money(event.locked));
      store.setAccount({ ...state.account, balance, locked: event.locked, used_margin: event.locked });
    }
    if (event.kind === "commission" || event.kind === "swap") reloadFees();
  },
  account_summary(event) {
    if (state.account) store.setAccount({ ...state.account, ...without(event, "event", "ts"), locked: event.used_margin });
  },
  margin_call(event) {
    accounts.marginCall(event);
  },
  stop_out(event) {
    accounts.stopOut(event);
  },
  order_accepted({ order }) {
    if (order.status === "pending") store.putOrder(order);
  },
  order_modified(event) {
    const order = state.orders.get(event.order_id);
    if (order) store.putOrder({ ...order, ...without(event, "event", "order_id") });
  },
  order_triggered(event) {
    store.removeOrder(event.order_id);
    toast(`Order #${event.order_id} filled at ${group(event.price)}`, "fill");
  },
  order_cancelled(event) {
    store.removeOrder(event.order_id);
    if (event.reason !== "user")
      toast(`Order #${event.order_id} cancelled: ${event.reason.replaceAll("_", " ")}`, "warn");
  },
  position_opened({ position }) {
    store.putPosition(position);
    if (position.commission === undefined) reloadFees(); // the event's rendering has no fees
    toast(`Filled: ${position.side} ${position.qty} ${position.symbol} at ${group(position.open_price)}`, "fill");
  },
  position_updated(event) {
    store.updatePosition(event.position_id, without(event, "event", "position_id", "cause"));
  },
  position_closed({ position: closed }) {
    if (/^0(\.0*)?$/.test(closed.remaining_qty)) store.removePosition(closed.position_id);
    else store.updatePosition(closed.position_id, { qty: closed.remaining_qty, margin: closed.margin });
    const reason = tables.REASONS[closed.close_reason] || closed.close_reason;
    const kind = closed.close_reason === "liquidation" || closed.close_reason === "stop_out" ? "error" : "fill";
    toast(
      `${reason}: #${closed.position_id} ${closed.qty} ${closed.symbol} at ${group(closed.close_price)}, ` +
        `P&L ${signed(closed.pnl)}`,
      kind,
    );
    loadPage("history");
  },
  account_created() {},
  account_opened() {},
};

// ------------------------------------------------------------------------------ the socket

function onMessage(message) {
  const channel = message.channel;
  if (channel === "account") {
    const handler = ACCOUNT_EVENTS[message.data.event];
    if (handler) handler(message.data);
  } else if (channel.startsWith("quotes:")) {
    if (!firstLiveQuote) firstLiveQuote = message.data.symbol;
    store.setQuote(message.data);
  } else if (channel.endsWith(":1d") && channel !== chartChannel()) {
    state.dayOpen.set(channel.split(":")[1], message.data.open);
  } else if (channel === chartChannel()) {
    if (channel.endsWith(":1d")) state.dayOpen.set(state.symbol, message.data.open);
    pendingCandle = message.data;
    scheduleFrame();
  }
}

function onResync(channel) {
  if (channel === "account") reloadAccount();
  else if (channel === chartChannel()) loadCandles();
  else if (channel.startsWith("quotes:")) api.publicGet(`/quotes/${channel.slice(7)}`).then(store.setQuote, () => {});
}

const chartChannel = () => `candles:${state.symbol}:${state.interval}`;

function onStatus(online) {
  document.getElementById("offline-banner").hidden = online;
  document.body.classList.toggle("offline", !online);
}

// ------------------------------------------------------------------------------ rendering

// Quotes and the live candle are drawn at most every RENDER_INTERVAL_MS, in an animation
// frame: 30 ticks/s need not cost 30 layouts and chart repaints. The first change after a quiet
// interval is drawn at once.
function scheduleFrame(symbol) {
  if (symbol) dirty.add(symbol);
  if (!frameRequested) {
    frameRequested = true;
    const wait = Math.max(0, lastDraw + RENDER_INTERVAL_MS - performance.now());
    setTimeout(() => requestAnimationFrame(drawFrame), wait);
  }
}

function drawFrame() {
  frameRequested = false;
  lastDraw = performance.now();
  if (pendingCandle) {
    liveCandle(pendingCandle);
    pendingCandle = null;
  }
  for (const symbol of dirty) {
    renderQuote(symbol);
    tables.updatePnl(symbol);
  }
  if (dirty.has(state.symbol)) ticket.refresh();
  if (firstLiveQuote && dirty.has(firstLiveQuote)) {
    performance.mark("exness:first-live-quote");
    firstLiveQuote = "drawn";
  }
  dirty.clear();
  tables.renderAccount();
}

function dayChange(symbol, bid) {
  const open = state.dayOpen.get(symbol);
  const instrument = state.instruments.get(symbol);
  if (!open || !instrument) return null;
  const openUnits = toUnits(open, instrument.price_decimals);
  return fromUnits(floorDiv((toUnits(bid, instrument.price_decimals) - openUnits) * 10000n, openUnits), 2);
}

function renderQuote(symbol) {
  const row = document.querySelector(`#watchlist tr[data-symbol="${symbol}"]`);
  const quote = state.quotes.get(symbol);
  if (!row || !quote) return;
  const previous = row.dataset.bid;
  row.querySelector("[data-bid]").textContent = group(quote.bid);
  row.querySelector("[data-ask]").textContent = group(quote.ask);
  const change = dayChange(symbol, quote.bid);
  const day = row.querySelector("[data-day]");
  day.textContent = change === null ? "—" : `${signed(change)}%`;
  day.className = `num ${change && change.startsWith("-") ? "down" : "up"}`;
  if (previous) row.dataset.tick = quote.bid > previous ? "up" : "down";
  row.dataset.bid = quote.bid;
  row.classList.remove("stale");
}

function markStale() {
  const now = Date.now();
  for (const [symbol, quote] of state.quotes) {
    const row = document.querySelector(`#watchlist tr[data-symbol="${symbol}"]`);
    const stale = now - quote.ts > STALE_AFTER_MS;
    if (row && row.classList.contains("stale") !== stale) {
      row.classList.toggle("stale", stale);
      row.querySelector("[data-stale]").hidden = !stale;
    }
  }
}

function buildWatchlist() {
  const rows = [...state.instruments.keys()].map((symbol) => {
    const row = document.createElement("tr");
    row.dataset.symbol = symbol;
    const name = document.createElement("th");
    name.scope = "row";
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "symbol";
    pick.textContent = symbol;
    pick.addEventListener("click", () => chooseSymbol(symbol));
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.stale = "";
    badge.textContent = "stale";
    badge.hidden = true;
    name.append(pick, badge);
    row.append(name);
    for (const field of ["bid", "ask", "day"]) {
      const td = document.createElement("td");
      td.className = "num";
      td.dataset[field] = "";
      td.textContent = "—";
      row.append(td);
    }
    return row;
  });
  document.querySelector("#watchlist tbody").replaceChildren(...rows);
}

function highlightSymbol() {
  for (const row of document.querySelectorAll("#watchlist tbody tr")) {
    row.setAttribute("aria-selected", String(row.dataset.symbol === state.symbol));
  }
  document.getElementById("chart-symbol").textContent = state.symbol;
}

function chooseSymbol(symbol, interval = state.interval) {
  const before = chartChannel();
  pendingCandle = null;
  store.selectSymbol(symbol);
  state.interval = interval;
  const after = chartChannel();
  if (before !== after) {
    if (!before.endsWith(":1d")) socket.unsubscribe([before]);
    socket.subscribe([after]);
  }
  for (const button of document.querySelectorAll("#intervals button")) {
    button.setAttribute("aria-pressed", String(button.textContent === state.interval));
  }
  highlightSymbol();
  ticket.refresh();
  loadCandles().catch(() => toast("Could not load candles", "error"));
}

function buildIntervals() {
  const group_ = document.getElementById("intervals");
  group_.replaceChildren(
    ...INTERVALS.map((interval) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = interval;
      button.setAttribute("aria-pressed", String(interval === state.interval));
      button.addEventListener("click", () => chooseSymbol(state.symbol, interval));
      return button;
    }),
  );
}

// ---------------------------------------------------------------------------- the session

async function reloadAccount() {
  const [account, positions, orders] = await Promise.all([
    api.get("/account"),
    api.get("/positions"),
    api.get("/orders?status=pending"),
  ]);
  store.setAccount(account);
  store.setPositions(positions.positions);
  store.setOrders(orders.orders);
}

async function loadPage(name, cursor) {
  if (!state.signedIn) return;
  const path = name === "history" ? "/history/positions" : "/account/ledger";
  const page = await api.get(`${path}?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  const render = name === "history" ? tables.renderHistory : tables.renderLedger;
  render(name === "history" ? page.positions : page.entries, { append: Boolean(cursor) });
  tables.showMore(name, page.next_cursor);
}

function showTab(tab) {
  if (tab === "history" || tab === "ledger") loadPage(tab).catch((error) => toast(error.message, "error"));
}

function setSignedIn(signedIn) {
  state.signedIn = signedIn;
  document.getElementById("account-switch").hidden = !signedIn;
  document.getElementById("auth-form").hidden = signedIn;
  document.getElementById("ticket").hidden = !signedIn;
  document.getElementById("account-bar").hidden = !signedIn;
  document.getElementById("signout-button").hidden = !signedIn;
  document.getElementById("funds-button").hidden = !signedIn || Boolean(state.account && state.account.demo === false);
  document.querySelector(".tables").hidden = !signedIn;
}

// Another account of the same user (the switcher): its own positions, orders, history.
async function showSwitchedAccount() {
  accounts.reset();
  tables.renderHistory([], { append: false });
  tables.renderLedger([], { append: false });
  tables.showMore("history", null);
  tables.showMore("ledger", null);
  await reloadAccount();
  const tab = document.querySelector('[role="tab"][aria-selected="true"]');
  showTab(tab.getAttribute("aria-controls").replace("tab-", ""));
  ticket.refresh();
}

async function onSession(pair) {
  if (!pair) {
    if (state.signedIn) {
      setSignedIn(false);
      socket.authenticate(null);
      state.accountId = null;
      accounts.reset();
      store.setPositions([]);
      store.setOrders([]);
    }
    return;
  }
  const switched = state.accountId !== null && state.accountId !== pair.account_id;
  state.accountId = pair.account_id;
  socket.authenticate(pair.access_token, { newAccount: switched });
  if (!state.signedIn) {
    await reloadAccount(); // before the ticket shows: a snapshot must not overwrite a newer fill
    setSignedIn(true);
    ticket.refresh();
  } else if (switched) {
    await showSwitchedAccount();
  }
  if (switched || !document.getElementById("account-select").options.length) await accounts.loadAccounts();
}

function mountAuth() {
  const form = document.getElementById("auth-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    const error = form.querySelector("[data-error]");
    error.textContent = "";
    try {
      if (event.submitter && event.submitter.value === "signup") await api.signUp(email, password);
      else await api.signIn(email, password);
      form.reset();
    } catch (failure) {
      const field = failure.details && failure.details.field;
      error.textContent = field ? `${field}: ${failure.message}` : failure.message;
    }
  });
  document.getElementById("signout-button").addEventListener("click", () => api.signOut().catch(() => {}));
}

function mountFunds() {
  const change = (kind) => async (values) => {
    await api.call("POST", `/account/${kind}`, { amount: values.amount.trim(), idempotency_key: crypto.randomUUID() });
    toast(`${kind === "deposit" ? "Deposited" : "Withdrew"} ${group(values.amount.trim())} USD`, "fill");
  };
  document.getElementById("funds-button").addEventListener("click", () =>
    tables.openDialog(
      "Demo funds",
      [["Amount", "amount", "1000.00"]],
      [
        ["Deposit", change("deposit"), "primary"],
        ["Withdraw", change("withdraw")],
      ],
    ),
  );
  for (const more of document.querySelectorAll("[data-more]")) {
    more.addEventListener("click", () => loadPage(more.dataset.more, more.dataset.cursor));
  }
}

// ------------------------------------------------------------------------------------ start

async function start() {
  mountTheme(applyTheme);
  setSignedIn(false);
  const wsUrl = document.querySelector('meta[name="exness-ws-url"]').content;
  socket = new Socket(wsUrl, {
    getToken: api.token,
    onMessage,
    onResync,
    onStatus,
    onTokenExpired: () => api.refresh().catch(() => {}),
  });
  const [{ instruments }, { quotes }] = await Promise.all([api.publicGet("/instruments"), api.publicGet("/quotes")]);
  instruments.forEach((instrument) => state.instruments.set(instrument.symbol, instrument));
  state.symbol = instruments[0].symbol;
  buildWatchlist();
  buildIntervals();
  highlightSymbol();
  store.on("quote", (quote) => scheduleFrame(quote.symbol));
  store.on("positions", () => {
    tables.renderPositions();
    drawLines();
    tables.renderAccount();
  });
  store.on("orders", () => {
    tables.renderOrders();
    drawLines();
  });
  store.on("account", () => {
    tables.renderAccount();
    accounts.syncBanner();
    document.getElementById("funds-button").hidden = !state.signedIn || state.account.demo === false;
    ticket.refresh();
  });
  quotes.forEach(store.setQuote);
  const symbols = [...state.instruments.keys()];
  socket.subscribe([
    ...symbols.map((symbol) => `quotes:${symbol}`),
    ...symbols.map((symbol) => `candles:${symbol}:1d`),
    chartChannel(),
  ]);
  socket.connect();
  mountChart(document.getElementById("chart"));
  ticket.mountTicket(document.getElementById("ticket"), { place: trade });
  tables.mountTables({ onAction: tableAction });
  tables.renderPositions();
  tables.renderOrders();
  mountAuth();
  mountFunds();
  accounts.mountAccounts({ toast });
  api.onSession((pair) => onSession(pair).catch((error) => toast(error.message, "error")));
  setInterval(markStale, 1000);
  loadCandles().catch(() => toast("Could not load candles", "error"));
  await api.resume();
  document.body.dataset.ready = "true";
}

window.exnessTerminal = { priceLines, linesOffScreen };
start().catch((error) => toast(`The terminal could not start: ${error.message}`, "error"));
