// The order ticket: buy/sell, market/limit/stop, margin and leverage with the resulting
// quantity and liquidation price shown before sending (the core's rules, exact decimals), and
// the server's numbers after the fill. Orders go over the WebSocket order lane with a
// client_order_id and fall back to HTTP, with the same id, when the socket is down.

import { group } from "./common/format.js";
import { DecimalError, fromUnits, liquidationPrice, money, qtyForMargin, ratioToBps, toUnits } from "./decimal.js";
import { accountFigures } from "./tables.js";
import { state } from "./state.js";

const OPTIONAL_PRICES = ["take_profit", "stop_loss", "trailing_stop"];

let form;
let placeOrder;

export function mountTicket(element, { place }) {
  form = element;
  placeOrder = place;
  form.addEventListener("input", refresh);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(event.submitter ? event.submitter.value : "buy");
  });
  refresh();
}

const field = (name) => form.elements[name].value.trim();
const orderType = () => form.elements.type.value;

function quotedPrice(side) {
  const instrument = state.instruments.get(state.symbol);
  if (orderType() !== "market") return toUnits(field("price"), instrument.price_decimals);
  const quote = state.quotes.get(state.symbol);
  if (!quote) throw new DecimalError("no quote yet");
  return toUnits(side === "buy" ? quote.ask : quote.bid, instrument.price_decimals);
}

// Quantity and liquidation price of a fill at the quoted price, or null when an input is invalid.
function preview(side) {
  const instrument = state.instruments.get(state.symbol);
  if (!instrument) return null;
  try {
    const margin = money(field("margin"));
    const leverage = Number.parseInt(field("leverage"), 10);
    const price = quotedPrice(side);
    const { price_decimals: pd, qty_decimals: qd } = instrument;
    const qty = qtyForMargin(margin, leverage, price, pd, qd);
    if (qty <= 0n || margin <= 0n || !(leverage >= 1)) return null;
    const liquidation = liquidationPrice(
      side === "buy",
      qty,
      price,
      margin,
      ratioToBps(instrument.maintenance_ratio),
      pd,
      qd,
    );
    return { qty: fromUnits(qty, qd), liquidation: fromUnits(liquidation, pd), margin: fromUnits(margin, 2) };
  } catch {
    return null;
  }
}

export function refresh() {
  if (!form || form.hidden) return;
  const pending = orderType() !== "market";
  form.querySelector("[data-pending]").hidden = !pending;
  form.querySelector("[data-market]").hidden = pending;
  const quote = state.quotes.get(state.symbol);
  form.querySelector('[data-price="ask"]').textContent = quote ? " " + group(quote.ask) : "";
  form.querySelector('[data-price="bid"]').textContent = quote ? " " + group(quote.bid) : "";
  const buy = preview("buy");
  const sell = preview("sell");
  const show = (name, text) => {
    form.querySelector(`[data-preview="${name}"]`).textContent = text;
  };
  show("qty", buy ? `${buy.qty} ${state.symbol.replace(/USDT$/, "")}` : "—");
  show("margin", buy ? `${group(buy.margin)} USD` : "—");
  show("liquidation-buy", buy ? group(buy.liquidation) : "—");
  show("liquidation-sell", sell ? group(sell.liquidation) : "—");
  // a cross account has no liquidation price per position: what the order leaves free instead
  const cross = Boolean(state.account && state.account.margin_mode === "cross");
  for (const row of form.querySelectorAll("[data-isolated]")) row.hidden = cross;
  for (const row of form.querySelectorAll("[data-cross]")) row.hidden = !cross;
  show("free-after", cross && buy ? group(freeAfter(buy.margin)) : "—");
}

// The free margin left after an order's margin, at the current quotes.
function freeAfter(margin) {
  const figures = accountFigures();
  return figures ? fromUnits(figures.free - money(margin), 2) : null;
}

function request(side) {
  const body = {
    action: "place",
    symbol: state.symbol,
    side,
    type: orderType(),
    margin: field("margin"),
    leverage: Number(field("leverage")),
    client_order_id: `web-${crypto.randomUUID()}`,
  };
  if (!/^\d+$/.test(field("leverage"))) body.leverage = field("leverage");
  if (body.type !== "market") body.price = field("price");
  for (const name of OPTIONAL_PRICES) if (field(name)) body[name] = field(name);
  const slippage = field("slippage_bps");
  if (body.type === "market" && slippage) {
    body.slippage_bps = /^\d+$/.test(slippage) ? Number(slippage) : slippage;
    const quote = state.quotes.get(state.symbol);
    if (quote) body.expected_price = side === "buy" ? quote.ask : quote.bid;
  }
  return body;
}

export function showError(message) {
  form.querySelector("[data-error]").textContent = message || "";
}

async function submit(side) {
  showError("");
  const fill = form.querySelector("[data-last-fill]");
  try {
    const result = await placeOrder(request(side));
    const { order, position } = result;
    if (position) {
      const cross = Boolean(state.account && state.account.margin_mode === "cross");
      fill.textContent =
        `Filled ${position.side} ${position.qty} ${position.symbol} at ${group(position.open_price)}` +
        ` · margin ${group(position.margin)}` +
        (cross ? " · cross margin" : ` · liquidation ${group(position.liquidation_price)}`);
    } else if (order) {
      fill.textContent = `Order #${order.id} placed: ${order.side} ${order.type} at ${group(order.price)}`;
    }
  } catch (error) {
    fill.textContent = "";
    showError(error.message);
  }
}
