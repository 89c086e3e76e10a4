"""The request and response shapes of the HTTP API, for the OpenAPI document only.

The gateway does not validate with these (quart-schema's validation would decode numbers as
floats and answer HTML errors); bodies are parsed exactly by :mod:`actors.edge`. These msgspec
structs only describe, for ``/openapi.json`` and ``schemas/openapi.json``, what the handlers
accept and return — the API tests keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import msgspec
from msgspec import Meta

Decimal = Annotated[str, Meta(
    description="a decimal string (requests also accept a JSON number, parsed exactly; more "
                "decimals than the field allows is a 400)", examples=["100.00"])]
OptionalDecimal = Annotated[Optional[str], Meta(description="a decimal string, or null")]
Millis = Annotated[int, Meta(description="milliseconds since the Unix epoch", examples=[1718064000000])]
Id = Annotated[str, Meta(description="an id (digits, as a string)", examples=["42"])]
Cursor = Annotated[Optional[str], Meta(
    description="opaque; pass the previous page's next_cursor to get the next page")]
Limit = Optional[Annotated[int, Meta(ge=1, le=1000, description="page size (default 50)")]]
Symbol = Annotated[str, Meta(examples=["BTCUSDT"], description="an instrument symbol")]
Side = Literal["buy", "sell"]

_struct = dict(kw_only=True, forbid_unknown_fields=True)


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: Annotated[str, Meta(description="stable machine-readable code (core reject reasons are "
                                          "used verbatim)", examples=["INSUFFICIENT_BALANCE"])]
    message: str
    details: dict


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


# ------------------------------------------------------------------------------------- auth

class Credentials(msgspec.Struct, **_struct):
    email: Annotated[str, Meta(max_length=254, examples=["trader@example.com"],
                               description="trimmed and lower-cased before use")]
    password: Annotated[str, Meta(min_length=8, max_length=128)]


class SignupResult(msgspec.Struct, kw_only=True):
    user_id: Id


class RefreshRequest(msgspec.Struct, **_struct):
    refresh_token: str


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: Annotated[str, Meta(description="JWT for `Authorization: Bearer …`")]
    refresh_token: Annotated[str, Meta(description="opaque, single use: refresh spends it")]
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, Meta(description="seconds until the access token expires")]
    refresh_expires_in: Annotated[int, Meta(description="seconds until the refresh token expires")]
    user_id: Id
    account_id: Id


# ------------------------------------------------------------------------------------- account

class AccountSummary(msgspec.Struct, kw_only=True):
    account_id: Id
    balance: Annotated[str, Meta(description="free + locked")]
    locked: Annotated[str, Meta(description="margin of open positions and pending orders")]
    equity: Annotated[str, Meta(description="balance + unrealized pnl")]
    free_margin: str
    margin_level: Annotated[Optional[str], Meta(
        description="equity / locked in percent; null with nothing locked")]
    unrealized_pnl: str
    currency: Literal["USD"]


class FundingRequest(msgspec.Struct, **_struct):
    amount: Decimal
    idempotency_key: Optional[Annotated[str, Meta(
        max_length=64, description="a repeat with the same key changes nothing")]] = None


class LedgerQuery(msgspec.Struct, kw_only=True):
    cursor: Cursor = None
    limit: Limit = None


class LedgerEntry(msgspec.Struct, kw_only=True):
    id: str
    kind: Annotated[str, Meta(description="deposit, withdraw, order_margin, order_release, "
                                          "position_margin, position_close, add_margin")]
    free_delta: str
    locked_delta: str
    free: str
    locked: str
    balance: str
    ref: Optional[str]
    ts: Millis


class LedgerPage(msgspec.Struct, kw_only=True):
    entries: list[LedgerEntry]
    next_cursor: Optional[str]


# ------------------------------------------------------------------------------------- market

class Instrument(msgspec.Struct, kw_only=True):
    symbol: Symbol
    price_decimals: int
    qty_decimals: int
    max_leverage: int
    spread_bps: int
    min_qty: str
    maintenance_ratio: str


class InstrumentList(msgspec.Struct, kw_only=True):
    instruments: list[Instrument]


class Quote(msgspec.Struct, kw_only=True):
    symbol: Symbol
    bid: Annotated[Optional[str], Meta(description="null until the first quote")]
    ask: Annotated[Optional[str], Meta(description="null until the first quote")]
    ts: Annotated[Optional[int], Meta(description="ms; null until the first quote")]


class QuoteList(msgspec.Struct, kw_only=True):
    quotes: list[Quote]


class CandlesQuery(msgspec.Struct, kw_only=True):
    symbol: Symbol
    interval: Annotated[Optional[Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]],
                        Meta(description="default 1m")] = None
    start: Annotated[Optional[int], Meta(description="ms, inclusive (candle open time)")] = None
    end: Annotated[Optional[int], Meta(description="ms, exclusive")] = None
    limit: Optional[Annotated[int, Meta(ge=1, le=1000, description="the most recent N (default 500)")]] = None


class Candle(msgspec.Struct, kw_only=True):
    ts: Annotated[int, Meta(description="open time, ms")]
    open: str
    high: str
    low: str
    close: str
    volume: Annotated[int, Meta(description="number of quotes (tick volume)")]


# ------------------------------------------------------------------------------------- orders

class PlaceOrderRequest(msgspec.Struct, **_struct):
    symbol: Symbol
    side: Side
    type: Literal["market", "limit", "stop"]
    margin: Decimal
    leverage: Annotated[int, Meta(ge=1, description="1..the instrument's max_leverage")]
    price: Annotated[Optional[str], Meta(description="required for limit and stop orders")] = None
    take_profit: OptionalDecimal = None
    stop_loss: OptionalDecimal = None
    trailing_stop: Annotated[Optional[str], Meta(description="a price distance")] = None
    slippage_bps: Optional[Annotated[int, Meta(ge=0, le=9999, description="with expected_price")]] = None
    expected_price: OptionalDecimal = None
    expires_at: Annotated[Optional[int], Meta(description="ms; pending orders only")] = None
    client_order_id: Optional[Annotated[str, Meta(
        max_length=64, description="idempotency key: a repeat returns the original order (200)")]] = None


class Order(msgspec.Struct, kw_only=True):
    id: Id
    symbol: Symbol
    side: Side
    type: Literal["market", "limit", "stop"]
    status: Literal["pending", "filled", "cancelled", "expired"]
    price: Annotated[Optional[str], Meta(description="entry price (pending) or fill price (market)")]
    margin: str
    leverage: int
    qty: str
    take_profit: Optional[str]
    stop_loss: Optional[str]
    trailing_stop: Optional[str]
    expires_at: Optional[int]
    client_order_id: Optional[str]
    created_at: Millis
    fill_price: Optional[str]
    position_id: Annotated[Optional[str], Meta(description="the position the order opened")]
    cancel_reason: Annotated[Optional[str], Meta(description="user, expired or size_too_small")]


class Position(msgspec.Struct, kw_only=True):
    id: Id
    symbol: Symbol
    side: Side
    qty: str
    open_price: str
    margin: str
    leverage: int
    liquidation_price: str
    take_profit: Optional[str]
    stop_loss: Optional[str]
    trailing_stop: Optional[str]
    trailing_stop_price: Annotated[Optional[str], Meta(description="where the trailing stop fires now")]
    unrealized_pnl: Optional[str]
    opened_at: Millis
    order_id: Id


class PlacedOrder(msgspec.Struct, kw_only=True):
    order: Order
    position: Annotated[Optional[Position], Meta(description="present when a market order filled")] = None


class OrdersQuery(msgspec.Struct, kw_only=True):
    status: Annotated[Optional[Literal["pending", "filled", "cancelled", "expired", "all"]], Meta(
        description="pending (default): live from the engine; others: the order history")] = None
    symbol: Optional[str] = None
    cursor: Cursor = None
    limit: Limit = None


class OrderList(msgspec.Struct, kw_only=True):
    orders: list[Order]
    next_cursor: Optional[str]


class ModifyOrderRequest(msgspec.Struct, **_struct):
    price: OptionalDecimal = None
    take_profit: Annotated[Optional[str], Meta(description="null removes it")] = None
    stop_loss: Annotated[Optional[str], Meta(description="null removes it")] = None
    expires_at: Annotated[Optional[int], Meta(description="ms; null removes it")] = None


# ------------------------------------------------------------------------------------- positions

class PositionsQuery(msgspec.Struct, kw_only=True):
    symbol: Optional[str] = None


class PositionList(msgspec.Struct, kw_only=True):
    positions: list[Position]


class CloseRequest(msgspec.Struct, **_struct):
    qty: Annotated[Optional[str], Meta(description="part to close; absent or null closes all")] = None


class ClosedPart(msgspec.Struct, kw_only=True):
    position_id: Id
    symbol: Symbol
    side: Side
    close_reason: Annotated[str, Meta(description="user, take_profit, stop_loss, trailing_stop, liquidation")]
    close_price: str
    qty: str
    remaining_qty: str
    open_price: str
    margin: Annotated[str, Meta(description="margin released by this close")]
    pnl: str
    credit: Annotated[str, Meta(description="what went back to the free balance: max(0, margin + pnl)")]
    closed_at: Millis


class ModifyPositionRequest(msgspec.Struct, **_struct):
    take_profit: Annotated[Optional[str], Meta(description="null removes it")] = None
    stop_loss: Annotated[Optional[str], Meta(description="null removes it")] = None
    trailing_stop: Annotated[Optional[str], Meta(description="a distance; null removes it")] = None


class AddMarginRequest(msgspec.Struct, **_struct):
    amount: Decimal


class HistoryQuery(msgspec.Struct, kw_only=True):
    symbol: Optional[str] = None
    reason: Optional[Literal["user", "take_profit", "stop_loss", "trailing_stop", "liquidation"]] = None
    start: Annotated[Optional[int], Meta(description="closed at or after (ms)")] = None
    end: Annotated[Optional[int], Meta(description="closed before (ms)")] = None
    cursor: Cursor = None
    limit: Limit = None


class ClosedPosition(msgspec.Struct, kw_only=True):
    position_id: Id
    symbol: Symbol
    side: Side
    close_reason: str
    close_price: str
    qty: str
    remaining_qty: str
    open_price: str
    margin: str
    pnl: str
    credit: str
    leverage: Optional[int]
    opened_at: Optional[int]
    closed_at: Millis


class HistoryPage(msgspec.Struct, kw_only=True):
    positions: list[ClosedPosition]
    next_cursor: Optional[str]


# ------------------------------------------------------------------------------------- operations

class Status(msgspec.Struct, kw_only=True):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready"]
    quote_age_ms: dict[str, int]
    journal_damage: Optional[list[str]] = None
    """Damaged journal segments the last scrub found, one line each (absent when none)."""

