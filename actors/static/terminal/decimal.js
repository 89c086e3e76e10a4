// Exact decimals for the page: a decimal string <-> a BigInt count of 10^-scale units.
// Money, prices and quantities never pass through a float. The order preview and live P&L use
// the core's rules (exness_actors/money.py), with the same rounding.

const CENT_DECIMALS = 2;
const DECIMAL = /^\d+(\.\d+)?$/;
const SIGNED = /^-?\d+(\.\d+)?$/;

export class DecimalError extends Error {}

// "65000.5" at scale 2 -> 6500050n. More decimals than the scale are refused, not rounded.
export function toUnits(text, scale, { signed = false } = {}) {
  const value = String(text).trim();
  if (!(signed ? SIGNED : DECIMAL).test(value)) {
    throw new DecimalError("must be a number such as 100.00");
  }
  const negative = value.startsWith("-");
  const [whole, fraction = ""] = value.replace("-", "").split(".");
  if (fraction.length > scale) {
    throw new DecimalError(`at most ${scale} decimals`);
  }
  const units = BigInt(whole + fraction.padEnd(scale, "0"));
  return negative ? -units : units;
}

// 6500050n at scale 2 -> "65000.50".
export function fromUnits(units, scale) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, "0");
  const whole = scale ? digits.slice(0, -scale) : digits;
  const fraction = scale ? "." + digits.slice(-scale) : "";
  return (negative ? "-" : "") + whole + fraction;
}

// Division rounded towards minus infinity, as Python's //.
export function floorDiv(a, b) {
  const quotient = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? quotient - 1n : quotient;
}

const pow10 = (n) => 10n ** BigInt(n);

// qty = floor(margin·L / price) at the quantity scale (money.qty_for_margin).
export function qtyForMargin(marginCents, leverage, price, priceDecimals, qtyDecimals) {
  const numerator = marginCents * BigInt(leverage) * pow10(priceDecimals + qtyDecimals);
  return floorDiv(numerator, price * pow10(CENT_DECIMALS));
}

// Profit closed at closePrice, floored to cents (money.pnl_cents).
export function pnlCents(isLong, qty, openPrice, closePrice, priceDecimals, qtyDecimals) {
  const move = isLong ? closePrice - openPrice : openPrice - closePrice;
  return floorDiv(qty * move * pow10(CENT_DECIMALS), pow10(priceDecimals + qtyDecimals));
}

// The price at which the loss reaches margin·(1 − mm) (money.liquidation_price).
export function liquidationPrice(isLong, qty, openPrice, marginCents, maintenanceBps, priceDecimals, qtyDecimals) {
  const threshold = floorDiv(marginCents * (10000n - BigInt(maintenanceBps)), 10000n);
  const distance = floorDiv((threshold - 1n) * pow10(priceDecimals + qtyDecimals), pow10(CENT_DECIMALS) * qty) + 1n;
  return isLong ? openPrice - distance : openPrice + distance;
}

// Basis points of a ratio such as "0.005" (the instrument's maintenance_ratio).
export function ratioToBps(text) {
  return Number(toUnits(text, 4));
}

export const money = (text) => toUnits(text, CENT_DECIMALS, { signed: true });
export const moneyText = (cents) => fromUnits(cents, CENT_DECIMALS);
