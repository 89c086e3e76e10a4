// What the page knows, in one place: instruments, quotes, the account, its positions and
// pending orders. Modules change it through these functions and listen by topic.

const listeners = new Map();

export const state = {
  instruments: new Map(), // symbol -> instrument (decimals, leverage, maintenance_ratio)
  quotes: new Map(), // symbol -> {bid, ask, ts}
  dayOpen: new Map(), // symbol -> open of the day's candle
  account: null, // the HTTP account summary, kept live from balance events and summaries
  accountId: null, // the account of the access token (the one every request works on)
  positions: new Map(), // id -> position
  orders: new Map(), // id -> pending order
  symbol: "BTCUSDT",
  interval: "1m",
  signedIn: false,
};

export function on(topic, listener) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(listener);
}

export function emit(topic, detail) {
  (listeners.get(topic) || []).forEach((listener) => listener(detail));
}

export function setQuote(quote) {
  state.quotes.set(quote.symbol, quote);
  emit("quote", quote);
}

export function setPositions(list) {
  state.positions = new Map(list.map((position) => [position.id, position]));
  emit("positions");
}

export function putPosition(position) {
  state.positions.set(position.id, position);
  emit("positions");
}

export function updatePosition(id, fields) {
  const position = state.positions.get(id);
  if (!position) return;
  Object.assign(position, fields);
  emit("positions");
}

export function removePosition(id) {
  state.positions.delete(id);
  emit("positions");
}

export function setOrders(list) {
  state.orders = new Map(list.map((order) => [order.id, order]));
  emit("orders");
}

export function putOrder(order) {
  state.orders.set(order.id, order);
  emit("orders");
}

export function removeOrder(id) {
  state.orders.delete(id);
  emit("orders");
}

export function setAccount(account) {
  state.account = account;
  emit("account");
}

export function selectSymbol(symbol) {
  state.symbol = symbol;
  emit("symbol", symbol);
}
