"""The request and response shapes of the HTTP API, for the OpenAPI document only.

The gateway does not validate with these (quart-schema's validation would decode numbers as
floats and answer HTML errors); bodies are parsed exactly by :mod:`actors.wire.codec`. These msgspec
structs only describe, for ``/openapi.json`` and ``schemas/openapi.json``, what the handlers
accept and return — the API tests keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from actors.wire.codec import MAX_TIMESTAMP_MS

#: A positive decimal: what the edge parses exactly (it also takes a JSON number, a leading "+"
#: or zeros; the pattern documents the plain form every client can send).
DECIMAL_PATTERN = r"^(?:[1-9][0-9]{0,17}(?:\.[0-9]{1,18})?|0\.[0-9]{0,17}[1-9][0-9]{0,17})$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
#: Marks a request field whose values are the configured symbols; the OpenAPI provider replaces
#: it with an ``enum`` of the running gateway's instruments.
SYMBOL_MARKER = "x-exness-symbols"

Decimal = Annotated[str, Meta(
    pattern=DECIMAL_PATTERN, max_length=37,
    description="a decimal string greater than zero with at most the field's decimals (the "
                "instrument's price_decimals or qty_decimals, 2 for money); requests also accept "
                "a JSON number, parsed exactly", examples=["100.00"])]
Removable = Annotated[Optional[Decimal], Meta(
    description="absent: unchanged; null: removes it; a decimal string: sets it")]
OptionalDecimal = Optional[Decimal]
Millis = Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP_MS, description="milliseconds since the Unix epoch",
                             examples=[1718064000000])]
Id = Annotated[str, Meta(description="an id (digits, as a string)", examples=["42"])]
Cursor = Optional[Annotated[str, Meta(
    pattern=CURSOR_PATTERN, description="opaque; pass the previous page's next_cursor to get the next page")]]
Limit = Optional[Annotated[int, Meta(ge=1, le=1000, description="page size (default 50)")]]
Symbol = Annotated[str, Meta(examples=["BTCUSDT"], description="an instrument symbol")]
SymbolParam = Annotated[str, Meta(examples=["BTCUSDT"], extra_json_schema={SYMBOL_MARKER: True},
                                  description="a configured instrument symbol (case-insensitive)")]
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
                               extra_json_schema={"format": "email"},
                               description="an e-mail address; trimmed and lower-cased before use")]
    password: Annotated[str, Meta(min_length=8, max_length=128)]


class SigninRequest(Credentials, **_struct):
    refresh_cookie: Annotated[bool, Meta(
        description="true: the refresh token is set as an HttpOnly, SameSite=Strict cookie scoped to "
                    "/api/v1/auth (for browsers) and the body's refresh_token is null")] = False
    account_id: Annotated[Optional[Id], Meta(
        description="which of the user's trading accounts the tokens are for; absent: the first one "
                    "(opened at sign-up)")] = None


class SwitchRequest(msgspec.Struct, **_struct):
    """Tokens for another trading account of the signed-in user (the access token names the user)."""
    account_id: Annotated[Id, Meta(description="one of the caller's accounts (GET /api/v1/accounts)")]
    refresh_cookie: Annotated[bool, Meta(
        description="true: the new refresh token replaces the exness_refresh cookie (whose session is "
                    "revoked) and the body's refresh_token is null")] = False


class SignupResult(msgspec.Struct, kw_only=True):
    user_id: Id


class RefreshRequest(msgspec.Struct, **_struct):
    refresh_token: Annotated[Optional[str], Meta(
        description="the refresh_token from sign-in or the last refresh; omit it to use the "
                    "exness_refresh cookie of a sign-in with refresh_cookie")] = None


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: Annotated[str, Meta(description="JWT for `Authorization: Bearer …`")]
    refresh_token: Annotated[Optional[str], Meta(
        description="opaque, single use: refresh spends it; null when it was set as the cookie")]
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, Meta(description="seconds until the access token expires")]
    refresh_expires_in: Annotated[int, Meta(description="seconds until the refresh token expires")]
    user_id: Id
    account_id: Id


# ------------------------------------------------------------------------------------- account

AccountType = Annotated[str, Meta(
    description="a configured account type (config.toml [accounts]): standard, raw_spread, isolated",
    examples=["standard"])]
MarginMode = Literal["cross", "isolated"]
Level = Annotated[Optional[str], Meta(
    description="percent of equity / used margin (cross accounts; null for isolated ones)", examples=["60.00"])]


class AccountSummary(msgspec.Struct, kw_only=True):
    """The account in the token, live from the engine. A cross account is judged as a whole:
    free_margin = equity - used margin, and at margin_level <= stop_out_level its positions are
    closed, largest loss first. An isolated account's positions each have their own margin and
    liquidation price, and its free margin is its free balance."""
    account_id: Id
    balance: Annotated[str, Meta(description="free + locked")]
    locked: Annotated[str, Meta(description="margin of open positions and pending orders (= used_margin)")]
    used_margin: Annotated[str, Meta(description="margin of open positions and pending orders")]
    equity: Annotated[str, Meta(description="balance + unrealized pnl")]
    free_margin: Annotated[str, Meta(description="cross: equity - used margin; isolated: the free balance")]
    margin_level: Annotated[Optional[str], Meta(
        description="equity / used margin in percent (2 decimals, floored); null with no used margin")]
    unrealized_pnl: str
    currency: Literal["USD"]
    account_type: AccountType
    margin_mode: MarginMode
    demo: Annotated[Optional[bool], Meta(
        description="true: a demo account; false: a real one (funded by the broker); null for an account "
                    "the gateway did not open")]
    margin_call_level: Level
    stop_out_level: Level
    in_margin_call: Annotated[bool, Meta(
        description="a margin call was sent and the level has not recovered above the call level")]


class AccountEntry(msgspec.Struct, kw_only=True):
    """One of the user's trading accounts. The figures are null only while the engine has not
    confirmed a just-opened account."""
    account_id: Id
    account_type: AccountType
    demo: bool
    current: Annotated[bool, Meta(description="the account of the access token")]
    created_at: Millis
    currency: Literal["USD"]
    margin_mode: Optional[MarginMode]
    balance: Optional[str]
    locked: Optional[str]
    used_margin: Optional[str]
    equity: Optional[str]
    free_margin: Optional[str]
    margin_level: Annotated[Optional[str], Meta(description="percent; null with no used margin")]
    unrealized_pnl: Optional[str]
    margin_call_level: Level
    stop_out_level: Level
    in_margin_call: bool


class AccountList(msgspec.Struct, kw_only=True):
    accounts: Annotated[list[AccountEntry], Meta(description="oldest first")]


class AccountTypeInfo(msgspec.Struct, kw_only=True):
    name: AccountType
    margin_mode: MarginMode
    max_leverage: Annotated[int, Meta(description="the type's cap; an instrument's own max_leverage may be lower")]
    margin_call_level: Level
    stop_out_level: Level
    commission_bps: Annotated[str, Meta(description="per side, basis points of notional", examples=["0.35"])]
    swap_long_bps: Annotated[str, Meta(description="per day, basis points of the open notional (negative: credited)")]
    swap_short_bps: str
    swap_free: bool
    min_deposit: Annotated[str, Meta(description="the smallest first deposit into an empty account")]
    spread_multiplier: Optional[Annotated[str, Meta(
        description="the type's quotes: bid and ask marked up by this times each instrument's spread_bps "
                    "(1.00: the instrument's own, 0.00: the feed's raw quote); null with a fixed spread",
        examples=["1.00"])]] = None
    fixed_spread_bps: Optional[Annotated[str, Meta(
        description="the type's quotes: a fixed markup per side in basis points for every instrument; "
                    "null when spread_multiplier applies", examples=["0.50"])]] = None


class AccountTypeList(msgspec.Struct, kw_only=True):
    account_types: list[AccountTypeInfo]
    signup_type: Annotated[str, Meta(description="the type a sign-up opens")]


class OpenAccountRequest(msgspec.Struct, **_struct):
    type: AccountType
    demo: Annotated[bool, Meta(
        description="true (default): a demo account with the demo deposit; false: a real account, "
                    "opened with a zero balance and funded by the broker")] = True


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
                                          "position_margin, position_close, add_margin, commission "
                                          "(cross accounts, at open and close), swap (at the daily "
                                          "rollover; negative free_delta: charged), balance_reset "
                                          "(negative balance protection: the house covers a deficit), "
                                          "operator_adjustment (an operator funded or debited the account)")]
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
    symbol: SymbolParam
    interval: Annotated[Optional[Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]],
                        Meta(description="default 1m")] = None
    start: Annotated[Optional[Millis], Meta(description="ms, inclusive (candle open time)")] = None
    end: Annotated[Optional[Millis], Meta(description="ms, exclusive; not before start")] = None
    cursor: Cursor = None
    limit: Optional[Annotated[int, Meta(ge=1, le=1000, description="the most recent N (default 500)")]] = None


class Candle(msgspec.Struct, kw_only=True):
    ts: Annotated[int, Meta(description="open time, ms")]
    open: str
    high: str
    low: str
    close: str
    volume: Annotated[int, Meta(description="number of quotes (tick volume)")]


class CandlePage(msgspec.Struct, kw_only=True):
    candles: Annotated[list[Candle], Meta(description="oldest first")]
    next_cursor: Annotated[Optional[str], Meta(description="the page of older candles; null when none")]


# ------------------------------------------------------------------------------------- orders

class PlaceOrderRequest(msgspec.Struct, **_struct):
    """A new order. price is required for limit and stop orders and not allowed (absent or null)
    on a market order; slippage_bps and expected_price go together."""
    symbol: SymbolParam
    side: Side
    type: Literal["market", "limit", "stop"]
    margin: Decimal
    leverage: Annotated[int, Meta(ge=1, description="1..the instrument's max_leverage")]
    price: Annotated[OptionalDecimal, Meta(description="the entry price: required for limit and stop "
                                                       "orders, absent or null for market")] = None
    take_profit: OptionalDecimal = None
    stop_loss: OptionalDecimal = None
    trailing_stop: Annotated[OptionalDecimal, Meta(description="a price distance")] = None
    slippage_bps: Optional[Annotated[int, Meta(ge=0, le=9999, description="with expected_price")]] = None
    expected_price: OptionalDecimal = None
    expires_at: Annotated[Optional[Annotated[int, Meta(ge=1, le=MAX_TIMESTAMP_MS)]], Meta(
        description="ms; pending orders only; in the future")] = None
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
    cancel_reason: Annotated[Optional[str], Meta(description="user, expired, size_too_small, dead_man_switch "
                                                             "or cancel_on_disconnect")]


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
    commission: Annotated[str, Meta(description="commission charged so far (cross accounts: at open; "
                                                "0.00 for isolated ones)")]
    swap: Annotated[str, Meta(description="swaps charged so far (negative: credited)")]


class PlacedOrder(msgspec.Struct, kw_only=True):
    order: Order
    position: Annotated[Optional[Position], Meta(description="present when a market order filled")] = None


class OrdersQuery(msgspec.Struct, kw_only=True):
    status: Annotated[Optional[Literal["pending", "filled", "cancelled", "expired", "all"]], Meta(
        description="pending (default): live from the engine; others: the order history")] = None
    symbol: Optional[SymbolParam] = None
    cursor: Cursor = None
    limit: Limit = None


class OrderList(msgspec.Struct, kw_only=True):
    orders: list[Order]
    next_cursor: Optional[str]


class ModifyOrderRequest(msgspec.Struct, **_struct):
    """Give only what changes: an absent field is left unchanged, null removes it (take_profit,
    stop_loss, expires_at), a value sets it. At least one field."""
    price: Union[Annotated[Decimal, Meta(description="a new entry price; absent: unchanged (it cannot "
                                                     "be removed)")], UnsetType] = UNSET
    take_profit: Union[Removable, UnsetType] = UNSET
    stop_loss: Union[Removable, UnsetType] = UNSET
    expires_at: Union[Annotated[Optional[Annotated[int, Meta(ge=1, le=MAX_TIMESTAMP_MS)]], Meta(
        description="ms, in the future; absent: unchanged; null: removes it")], UnsetType] = UNSET


# ------------------------------------------------------------------------------------- positions

class PositionsQuery(msgspec.Struct, kw_only=True):
    symbol: Optional[SymbolParam] = None


class PositionList(msgspec.Struct, kw_only=True):
    positions: list[Position]


class CloseRequest(msgspec.Struct, **_struct):
    """The body may be left out: the whole position closes."""
    qty: Annotated[OptionalDecimal, Meta(description="part to close (qty_decimals); absent or null "
                                                     "closes all")] = None


class ClosedPart(msgspec.Struct, kw_only=True):
    position_id: Id
    symbol: Symbol
    side: Side
    close_reason: Annotated[str, Meta(description="user, take_profit, stop_loss, trailing_stop, liquidation, "
                                                  "stop_out, operator")]
    close_price: str
    qty: str
    remaining_qty: str
    open_price: str
    margin: Annotated[str, Meta(description="margin released by this close")]
    pnl: str
    credit: Annotated[str, Meta(description="what went back to the free balance: max(0, margin + pnl) "
                                            "(isolated; a cross account's is margin + pnl)")]
    closed_at: Millis
    commission: Annotated[str, Meta(description="commission of the closed part: its share of the opening "
                                                "commission plus the closing one")]
    swap: Annotated[str, Meta(description="swaps charged to the closed part (negative: credited)")]


class ModifyPositionRequest(msgspec.Struct, **_struct):
    """Give only what changes: an absent field is left unchanged, null removes it, a value sets
    it. {"take_profit": "72000.00"} moves the take-profit and keeps the stop-loss. At least one
    field."""
    take_profit: Union[Removable, UnsetType] = UNSET
    stop_loss: Union[Removable, UnsetType] = UNSET
    trailing_stop: Union[Annotated[Optional[Decimal], Meta(
        description="a price distance; absent: unchanged; null: removes it")], UnsetType] = UNSET


class AddMarginRequest(msgspec.Struct, **_struct):
    amount: Decimal


class HistoryQuery(msgspec.Struct, kw_only=True):
    symbol: Optional[SymbolParam] = None
    reason: Optional[Literal["user", "take_profit", "stop_loss", "trailing_stop", "liquidation", "stop_out",
                             "operator"]] = None
    start: Annotated[Optional[Millis], Meta(description="closed at or after (ms)")] = None
    end: Annotated[Optional[Millis], Meta(description="closed before (ms); not before start")] = None
    cursor: Cursor = None
    limit: Limit = None


class ClosedPosition(msgspec.Struct, kw_only=True):
    position_id: Id
    symbol: Symbol
    side: Side
    close_reason: Annotated[str, Meta(description="user, take_profit, stop_loss, trailing_stop, liquidation, "
                                                  "stop_out")]
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
    commission: Annotated[str, Meta(description="commission of the closed part (open share + close)")]
    swap: Annotated[str, Meta(description="swaps charged to the closed part (negative: credited)")]


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



# ------------------------------------------------------------------ issue 13: alerts, dead-man switch

class PlaceAlertRequest(msgspec.Struct, **_struct):
    """A price alert: fires once when the bid reaches price (above: bid ≥ price, below: bid ≤ price)."""
    symbol: SymbolParam
    condition: Literal["above", "below"]
    price: Decimal
    note: Optional[Annotated[str, Meta(max_length=200)]] = None
    expires_at: Annotated[Optional[Annotated[int, Meta(ge=1, le=MAX_TIMESTAMP_MS)]], Meta(
        description="ms; in the future; the alert is cancelled (reason expired) then")] = None
    client_alert_id: Optional[Annotated[str, Meta(
        max_length=64, description="idempotency key: a repeat answers the original alert (200)")]] = None


class Alert(msgspec.Struct, kw_only=True):
    id: Id
    symbol: Symbol
    condition: Literal["above", "below"]
    price: str
    note: Optional[str]
    expires_at: Optional[Millis]
    client_alert_id: Optional[str]
    created_at: Millis


class AlertList(msgspec.Struct, kw_only=True):
    alerts: list[Alert]


class CancelAllAfterRequest(msgspec.Struct, **_struct):
    timeout_s: Annotated[int, Meta(ge=0, le=86_400, description="seconds until every pending order is "
                                                                  "cancelled unless sent again; 0 disarms")]


class DeadManSwitch(msgspec.Struct, kw_only=True):
    armed: bool
    timeout_s: int
    deadline: Annotated[Optional[Millis], Meta(description="when the pending orders are cancelled (engine "
                                                           "time, ms); null when disarmed")]
    now: Annotated[Millis, Meta(description="the engine time the switch was set at (ms)")]


# ------------------------------------------------------------------------------------- documentation

def _example(summary: str, value: Any) -> dict[str, Any]:
    return {"summary": summary, "value": value}


#: Request examples, shown and prefilled by /docs ("Try it out"). The exported document sorts
#: keys, so each model's default example is the one whose name sorts first.
#: Each works as is against a fresh account with BTCUSDT near 65000 (a test sends every one).
REQUEST_EXAMPLES: dict[type, dict[str, dict[str, Any]]] = {
    Credentials: {"credentials": _example("e-mail and password", {
        "email": "trader@example.com", "password": "correct horse battery"})},
    SigninRequest: {"credentials": _example("e-mail and password", {
        "email": "trader@example.com", "password": "correct horse battery"})},
    SwitchRequest: {"account_id": _example("tokens for another of your accounts (GET /api/v1/accounts)", {
        "account_id": "2"})},
    OpenAccountRequest: {
        "demo_raw_spread": _example("a demo Raw Spread account (tight spread, commission)", {
            "type": "raw_spread", "demo": True}),
        "real_standard": _example("a real Standard account (opens empty; the broker funds it)", {
            "type": "standard", "demo": False}),
    },
    RefreshRequest: {"refresh_token": _example("the refresh_token from sign-in or the last refresh", {
        "refresh_token": "paste-the-refresh_token-from-signin"})},
    FundingRequest: {
        "amount": _example("an amount in USD", {"amount": "100.00"}),
        "idempotent": _example("with an idempotency key: a repeat changes nothing",
                               {"amount": "100.00", "idempotency_key": "funding-0001"}),
    },
    PlaceOrderRequest: {
        "buy_market": _example("market buy with a stop-loss and a take-profit", {
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10,
            "stop_loss": "60000.00", "take_profit": "72000.00"}),
        "limit_entry": _example("buy limit below the market (price is required for limit and stop)", {
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00",
            "margin": "100.00", "leverage": 10, "client_order_id": "my-order-0001"}),
        "stop_entry": _example("sell stop below the market", {
            "symbol": "BTCUSDT", "side": "sell", "type": "stop", "price": "58000.00",
            "margin": "100.00", "leverage": 5}),
    },
    ModifyOrderRequest: {
        "move_price": _example("move the entry price (everything else unchanged)", {"price": "61000.00"}),
        "set_take_profit": _example("set the take-profit, remove the expiry", {
            "take_profit": "75000.00", "expires_at": None}),
    },
    CloseRequest: {
        "part": _example("close part of the position", {"qty": "0.00100000"}),
        "whole": _example("close the whole position", {}),
    },
    ModifyPositionRequest: {
        "move_take_profit": _example("move only the take-profit (the stop-loss stays)", {"take_profit": "75000.00"}),
        "trailing_stop": _example("add a trailing stop 500.00 behind the best price", {"trailing_stop": "500.00"}),
        "remove_stop_loss": _example("remove the stop-loss (null removes)", {"stop_loss": None}),
    },
    AddMarginRequest: {"amount": _example("move 50.00 USD of free balance into the margin", {"amount": "50.00"})},
    PlaceAlertRequest: {
        "above": _example("tell me when the bid reaches 70000.00", {
            "symbol": "BTCUSDT", "condition": "above", "price": "70000.00", "note": "breakout"}),
        "below_expiring": _example("below, for one day, idempotent", {
            "symbol": "BTCUSDT", "condition": "below", "price": "60000.00", "expires_at": 4102444800000,
            "client_alert_id": "alert-0001"}),
    },
    CancelAllAfterRequest: {
        "arm": _example("cancel every pending order unless sent again within 60 s", {"timeout_s": 60}),
        "disarm": _example("disarm the switch", {"timeout_s": 0}),
    },
}

#: JSON Schema rules that span fields, added to the component of the same name.
SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "PlaceOrderRequest": {
        "if": {"properties": {"type": {"enum": ["limit", "stop"]}}, "required": ["type"]},
        "then": {"required": ["price"], "properties": {"price": {"type": "string"}}},
        "else": {"properties": {"price": {"type": "null"}}},
        "dependentRequired": {"slippage_bps": ["expected_price"], "expected_price": ["slippage_bps"]},
    },
    "ModifyOrderRequest": {"minProperties": 1},
    "ModifyPositionRequest": {"minProperties": 1},
}

