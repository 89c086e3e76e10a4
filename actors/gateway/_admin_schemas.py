"""The back office's request and response shapes (``/api/v1/admin``), for the OpenAPI document only
(bodies are parsed exactly by :mod:`actors.gateway._admin`, as everywhere in the gateway)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from actors.gateway._schemas import (
    AccountSummary, ClosedPosition, Credentials, Cursor, Id, Instrument, LedgerEntry, Limit, Millis, Order,
    Position, Symbol,
)

_struct = dict(kw_only=True, forbid_unknown_fields=True)

Role = Literal["viewer", "risk", "admin"]
Money = Annotated[str, Meta(description="USD, a decimal string with 2 decimals")]
Reason = Annotated[str, Meta(min_length=1, max_length=200, examples=["suspicious price feed"],
                             description="why (non-empty, at most 200 characters): kept in the audit log")]
SignedMoney = Annotated[str, Meta(
    pattern=r"^[+-]?(?:[0-9]{1,16})(?:\.[0-9]{1,2})?$", examples=["250.00", "-100.00"],
    description="USD with at most 2 decimals, not zero: positive funds the account, negative debits it")]
Percent = Annotated[str, Meta(pattern=r"^[0-9]{1,9}(?:\.[0-9]{1,2})?$", examples=["150"],
                              description="a margin level in percent (at most 2 decimals)")]


# ------------------------------------------------------------------------------------- sign-in

class OperatorSigninRequest(Credentials, **_struct):
    refresh_cookie: Annotated[bool, Meta(
        description="true: the refresh token is set as an HttpOnly, SameSite=Strict cookie "
                    "(exness_admin_refresh) scoped to /api/v1/admin and the body's refresh_token is null")] = False


class OperatorTokenPair(msgspec.Struct, kw_only=True):
    access_token: Annotated[str, Meta(description="an operator JWT (carries the role; never trades)")]
    refresh_token: Annotated[Optional[str], Meta(description="opaque, single use; null when set as the cookie")]
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_expires_in: int
    operator_id: Id
    email: str
    role: Role


class Operator(msgspec.Struct, kw_only=True):
    operator_id: Id
    email: str
    role: Role
    permissions: Annotated[list[str], Meta(description="read, halt, close, instrument, adjust")]
    shards: Annotated[int, Meta(ge=1, description=(
        "how many engine shards the deployment runs (1 embedded; `[bus] shards` in split mode): symbol-wide "
        "actions and house figures cover all of them"))]


HaltedShards = Annotated[list[int], Meta(description=(
    "split mode with several engine shards only: the shards on which the symbol is halted (all of them "
    "after a halt that every shard applied)"))]


# ------------------------------------------------------------------------------------- the house

class HouseBook(msgspec.Struct, kw_only=True):
    """The house's realized result by source; total = trader_losses − trader_gains −
    losses_absorbed + commission + swap, and spread is the part of the trading result the quotes'
    markup made."""
    spread: Money
    commission: Money
    swap: Money
    trader_losses: Money
    trader_gains: Money
    losses_absorbed: Money
    total: Money


class SymbolPnl(msgspec.Struct, kw_only=True):
    symbol: Symbol
    unrealized: Annotated[Money, Meta(description="the house's side of the open positions at the current "
                                                  "quotes (minus the traders' unrealized pnl)")]


class HousePnl(msgspec.Struct, kw_only=True):
    currency: Literal["USD"]
    realized: HouseBook
    unrealized: Money
    net: Annotated[Money, Meta(description="realized total + unrealized")]
    by_symbol: list[SymbolPnl]


class SymbolExposure(msgspec.Struct, kw_only=True):
    symbol: Symbol
    long_qty: str
    short_qty: str
    net_qty: Annotated[str, Meta(description="long − short: the traders' net position (the house holds the opposite)")]
    long_notional: Annotated[Money, Meta(description="at the open prices")]
    short_notional: Money
    net_notional: Money
    house_unrealized: Money
    halted: Annotated[bool, Meta(description="halted (on any engine shard)")]
    bid: Optional[str]
    ask: Optional[str]
    halted_shards: Union[HaltedShards, UnsetType] = UNSET


class ExposureTotals(msgspec.Struct, kw_only=True):
    long_notional: Money
    short_notional: Money
    net_notional: Money
    house_unrealized: Money


class Exposure(msgspec.Struct, kw_only=True):
    symbols: list[SymbolExposure]
    totals: ExposureTotals


# ------------------------------------------------------------------------------------- symbols

class AdminSymbol(Instrument, kw_only=True):
    halted: Annotated[bool, Meta(description="halted (on any engine shard)")]
    bid: Optional[str]
    ask: Optional[str]
    quote_ts: Optional[Millis]
    halted_shards: Union[HaltedShards, UnsetType] = UNSET
    differing_shards: Union[Annotated[list[int], Meta(description=(
        "split mode with several engine shards only: the shards whose instrument differs from shard 0's "
        "(an instrument change they did not apply: repeat it)"))], UnsetType] = UNSET


class AdminSymbolList(msgspec.Struct, kw_only=True):
    symbols: list[AdminSymbol]


class ReasonRequest(msgspec.Struct, **_struct):
    reason: Reason


class InstrumentPatch(msgspec.Struct, **_struct):
    """Give the reason and only what changes; the change is journaled and takes effect at its
    sequence number (no config edit, no new data dir). The fees are cross accounts' overrides
    in basis points of the notional (2 decimals; swaps per day, signed); null goes back to the
    account types' rates."""
    reason: Reason
    spread_bps: Union[Annotated[int, Meta(ge=0, le=9_999)], UnsetType] = UNSET
    max_leverage: Union[Annotated[int, Meta(ge=1, le=1000)], UnsetType] = UNSET
    min_qty: Union[Annotated[str, Meta(description="at the instrument's qty_decimals")], UnsetType] = UNSET
    maintenance_ratio: Union[Annotated[str, Meta(description="a ratio below 1 with up to 4 decimals, e.g. 0.0050")],
                             UnsetType] = UNSET
    commission_bps: Union[Optional[str], UnsetType] = UNSET
    swap_long_bps: Union[Optional[str], UnsetType] = UNSET
    swap_short_bps: Union[Optional[str], UnsetType] = UNSET


# ------------------------------------------------------------------------------------- accounts

class AccountsQuery(msgspec.Struct, kw_only=True):
    email: Optional[Annotated[str, Meta(max_length=254, description="part of the holder's e-mail")]] = None
    min_margin_level: Optional[Annotated[Percent, Meta(
        description="only accounts at or above this margin level (accounts with nothing locked have none)")]] = None
    max_margin_level: Optional[Annotated[Percent, Meta(
        description="only accounts at or below this margin level (the ones near a margin call)")]] = None
    cursor: Cursor = None
    limit: Limit = None


class AccountRow(AccountSummary, kw_only=True):
    """The account summary a trader sees (``demo`` null when no user holds the account), its
    holder, and how many positions and orders it has."""
    user_id: Optional[Id]
    email: Optional[str]
    positions: Annotated[int, Meta(description="open positions")]
    orders: Annotated[int, Meta(description="pending orders")]


class AccountPage(msgspec.Struct, kw_only=True):
    """A page may hold fewer than limit accounts (each page looks at a bounded number of
    accounts); continue while next_cursor is not null."""
    accounts: list[AccountRow]
    next_cursor: Optional[str]


class AccountDetailQuery(msgspec.Struct, kw_only=True):
    ledger_cursor: Cursor = None


class AccountDetail(AccountRow, kw_only=True):
    open_positions: list[Position]
    pending_orders: list[Order]
    ledger: list[LedgerEntry]
    ledger_next_cursor: Optional[str]
    closed_positions: Annotated[list[ClosedPosition], Meta(description="the 20 latest closes")]


class AdjustRequest(msgspec.Struct, **_struct):
    amount: SignedMoney
    reason: Reason
    idempotency_key: Optional[Annotated[str, Meta(max_length=64, description="a repeat changes nothing")]] = None


# ------------------------------------------------------------------------------------- audit

class AuditQuery(msgspec.Struct, kw_only=True):
    operator: Optional[Annotated[str, Meta(max_length=254, description="an operator id or e-mail")]] = None
    action: Optional[Literal["halt", "resume", "update_instrument", "adjust_balance", "close_position"]] = None
    from_: Optional[Annotated[Millis, Meta(description="at or after (ms)")]] = msgspec.field(default=None, name="from")
    to: Optional[Annotated[Millis, Meta(description="before (ms); not before from")]] = None
    cursor: Cursor = None
    limit: Limit = None


class AuditEntry(msgspec.Struct, kw_only=True):
    id: Annotated[str, Meta(description="shard-seq-index of the engine input")]
    shard: Annotated[int, Meta(description=(
        "the engine shard that journaled it: a halt, resume or instrument change is applied by every "
        "shard of a sharded deployment, so it has one entry per shard"))]
    operator_id: Id
    operator_email: Optional[str]
    action: str
    account_id: Optional[Id]
    target: Annotated[str, Meta(description="the symbol, account or position acted on")]
    reason: str
    detail: Annotated[Any, Meta(description="what changed (the changes, the amount)")]
    ts: Millis


class AuditPage(msgspec.Struct, kw_only=True):
    entries: list[AuditEntry]
    next_cursor: Optional[str]


# ------------------------------------------------------------------------------------- documentation

def _example(summary: str, value: Any) -> dict[str, Any]:
    return {"summary": summary, "value": value}


#: Request examples of the admin routes (tests/test_admin.py sends each as an admin).
ADMIN_REQUEST_EXAMPLES: dict[type, dict[str, dict[str, Any]]] = {
    OperatorSigninRequest: {"credentials": _example("an operator's e-mail and password", {
        "email": "ops@example.com", "password": "operator password 1"})},
    ReasonRequest: {"reason": _example("why", {"reason": "exchange outage"})},
    InstrumentPatch: {"spread": _example("widen the spread and lower the leverage", {
        "reason": "volatility", "spread_bps": 5, "max_leverage": 50})},
    AdjustRequest: {
        "fund": _example("fund the account", {"reason": "bank transfer 42", "amount": "250.00"}),
        "debit": _example("debit the account", {"reason": "chargeback 7", "amount": "-100.00"}),
    },
}
#: JSON Schema rules that span fields.
ADMIN_SCHEMA_RULES: dict[str, dict[str, Any]] = {"InstrumentPatch": {"minProperties": 2}}
