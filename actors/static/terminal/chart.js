// The candlestick chart (TradingView Lightweight Charts, vendored): history from
// /api/v1/candles, the live candle from the candles channel, and price lines for the selected
// symbol's positions (entry, take profit, stop loss, liquidation) and pending orders.

import { CandlestickSeries, createChart } from "./vendor/lightweight-charts.standalone.production.mjs";
import { publicGet } from "./api.js";
import { state } from "./state.js";

export const INTERVALS = ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"];

const LINE_STYLES = {
  entry: { color: "#2962ff", lineStyle: 0 },
  take_profit: { color: "#26a69a", lineStyle: 2 },
  stop_loss: { color: "#ef5350", lineStyle: 2 },
  liquidation: { color: "#ff9800", lineStyle: 1 },
  order: { color: "#8e24aa", lineStyle: 3 },
};

let chart = null;
let series = null;
let lines = new Map(); // key -> {line, price}
let loadId = 0;
let lastTime = 0;

const seconds = (ms) => Math.floor(ms / 1000);
// The chart library draws with numbers; the values come from the server's decimal strings
// and are never used for money.
const bar = (candle) => ({
  time: seconds(candle.ts),
  open: Number(candle.open),
  high: Number(candle.high),
  low: Number(candle.low),
  close: Number(candle.close),
});

function colors() {
  const style = getComputedStyle(document.documentElement);
  return {
    text: style.getPropertyValue("--muted").trim(),
    grid: style.getPropertyValue("--grid").trim(),
    background: style.getPropertyValue("--panel").trim(),
  };
}

export function applyTheme() {
  if (!chart) return;
  const { text, grid, background } = colors();
  chart.applyOptions({
    layout: { background: { color: background }, textColor: text },
    grid: { vertLines: { color: grid }, horzLines: { color: grid } },
  });
}

export function mountChart(element) {
  chart = createChart(element, {
    autoSize: true,
    // The logo injects an inline <style> the page's CSP refuses; the footer carries the
    // attribution and the link to tradingview.com the licence asks for instead.
    layout: { attributionLogo: false, fontFamily: "inherit" },
    timeScale: { timeVisible: true, secondsVisible: false },
    rightPriceScale: { borderVisible: false },
  });
  series = chart.addSeries(CandlestickSeries, {
    upColor: "#26a69a",
    downColor: "#ef5350",
    borderVisible: false,
    wickUpColor: "#26a69a",
    wickDownColor: "#ef5350",
    autoscaleInfoProvider: withLinesInRange,
  });
  applyTheme();
}

export async function loadCandles() {
  const id = ++loadId;
  const instrument = state.instruments.get(state.symbol);
  const precision = instrument ? instrument.price_decimals : 2;
  series.applyOptions({ priceFormat: { type: "price", precision, minMove: 10 ** -precision } });
  const page = await publicGet(`/candles?symbol=${state.symbol}&interval=${state.interval}&limit=300`);
  if (id !== loadId) return;
  const bars = page.candles.map(bar).sort((a, b) => a.time - b.time);
  series.setData(bars);
  lastTime = bars.length ? bars[bars.length - 1].time : 0;
  clearLines();
  drawLines();
}

// A candles:SYMBOL:INTERVAL message for the chart's symbol and interval.
export function liveCandle(candle) {
  const next = bar(candle);
  if (!series || next.time < lastTime) return; // older than the history loaded: already drawn
  lastTime = next.time;
  series.update(next);
}

// Kinds of price line the price scale stretches to show; a liquidation line stays out of the
// fit (at low leverage it sits far away and would flatten the candles), like MetaTrader's chart.
const FITTED_KINDS = new Set(["entry", "order", "take_profit", "stop_loss"]);

// The candles' own range widened to the fitted price lines, so an entry, TP, SL or pending
// order of the chart's symbol is never drawn off-screen.
function withLinesInRange(candlesRange) {
  const range = candlesRange();
  if (!range || !range.priceRange) return range;
  let { minValue, maxValue } = range.priceRange;
  for (const { kind, price } of lines.values()) {
    if (!FITTED_KINDS.has(kind)) continue;
    minValue = Math.min(minValue, Number(price));
    maxValue = Math.max(maxValue, Number(price));
  }
  return { ...range, priceRange: { minValue, maxValue } };
}

function clearLines() {
  for (const { line } of lines.values()) series.removePriceLine(line);
  lines = new Map();
}

// The newest MAX_ITEMS_WITH_LINES positions and orders of the symbol get lines: 4 lines each,
// and past a few dozen lines the chart is unreadable and its repaint dominates the page's CPU.
const MAX_ITEMS_WITH_LINES = 12;

const newest = (items) =>
  [...items]
    .filter((item) => item.symbol === state.symbol)
    .sort((a, b) => Number(b.id) - Number(a.id))
    .slice(0, MAX_ITEMS_WITH_LINES);

function wanted() {
  const result = new Map();
  const cross = Boolean(state.account && state.account.margin_mode === "cross"); // no liquidation price
  for (const position of newest(state.positions.values())) {
    const side = position.side === "buy" ? "Long" : "Short";
    result.set(`p${position.id}:entry`, ["entry", position.open_price, `${side} #${position.id}`]);
    result.set(`p${position.id}:tp`, ["take_profit", position.take_profit, `TP #${position.id}`]);
    result.set(`p${position.id}:sl`, ["stop_loss", position.stop_loss, `SL #${position.id}`]);
    if (!cross) result.set(`p${position.id}:liq`, ["liquidation", position.liquidation_price, `Liq. #${position.id}`]);
  }
  for (const order of newest(state.orders.values())) {
    result.set(`o${order.id}:entry`, ["order", order.price, `${order.side} ${order.type} #${order.id}`]);
    result.set(`o${order.id}:tp`, ["take_profit", order.take_profit, `TP #${order.id}`]);
    result.set(`o${order.id}:sl`, ["stop_loss", order.stop_loss, `SL #${order.id}`]);
  }
  return result;
}

// Bring the price lines in step with the positions and orders: add, move or remove.
export function drawLines() {
  if (!series) return;
  const next = wanted();
  for (const [key, { line }] of lines) {
    const target = next.get(key);
    if (!target || target[1] === null) {
      series.removePriceLine(line);
      lines.delete(key);
    }
  }
  for (const [key, [kind, price, title]] of next) {
    if (price === null || price === undefined) continue;
    const current = lines.get(key);
    if (current && current.price === price) continue;
    if (current) {
      current.line.applyOptions({ price: Number(price) });
      current.price = price;
    } else {
      const line = series.createPriceLine({
        price: Number(price),
        title,
        lineWidth: 1,
        axisLabelVisible: true,
        ...LINE_STYLES[kind],
      });
      lines.set(key, { line, price, kind });
    }
  }
}

// For tests and the curious: the price lines drawn now, as {title: price}.
export function priceLines() {
  return Object.fromEntries([...lines.values()].map(({ line, price }) => [line.options().title, price]));
}

// For tests and the curious: titles of the fitted price lines drawn outside the visible range.
export function linesOffScreen() {
  const height = chart.paneSize().height;
  return [...lines.values()]
    .filter(({ kind }) => FITTED_KINDS.has(kind))
    .filter(({ price }) => {
      const y = series.priceToCoordinate(Number(price));
      return y === null || y < 0 || y > height;
    })
    .map(({ line }) => line.options().title);
}
