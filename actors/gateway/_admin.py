"""The back office's API under ``/api/v1/admin``: the house's book and exposure, accounts, symbol
halts, instrument changes, balance adjustments, forced closes and the audit log.

Who may do what (``ROUTES``' last column; :data:`actors.operators.PERMISSIONS`):

==========================================  ======  ====  =====
route                                       viewer  risk  admin
==========================================  ======  ====  =====
GET me, pnl, exposure, symbols, accounts,   yes     yes   yes
accounts/{id}, audit
POST symbols/{symbol}/halt, …/resume        no      yes   yes
POST positions/{id}/close                   no      yes   yes
PATCH instruments/{symbol}                  no      no    yes
POST accounts/{id}/adjust                   no      no    yes
==========================================  ======  ====  =====

Where answers come from: live state (house book, exposure, symbols, accounts, positions, orders)
from the engine through the views of :mod:`actors.wire.views`; the ledger, trade history and
the audit log from the store, after waiting for the persister like every history read. Every
action is one journaled command carrying the operator's id and reason (``HaltSymbol``,
``ResumeSymbol``, ``UpdateInstrument``, ``AdjustBalance``, ``ForceClosePosition``); the core
emits an ``OperatorAction`` for each that took effect, which the persister writes to the audit
log — the journal is the audit trail, the store its index.

Split mode with ``[bus] shards`` > 1: commands and views that name no account reach shard 0
only (docs/decisions.md).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Awaitable, Callable, Optional

import attrs
import trio
from quart import Response, current_app, request

from actors.gateway._admin_auth import (
    ADMIN, admin_me, admin_refresh, admin_signin, admin_signout, operator,
)
from actors.gateway._admin_schemas import (
    AccountDetail, AccountDetailQuery, AccountPage, AccountsQuery, AdjustRequest, AdminSymbol,
    AdminSymbolList, AuditPage, AuditQuery, Exposure, HousePnl, InstrumentPatch, ReasonRequest,
)
from actors.gateway._common import current_gateway, doc, json_response
from actors.gateway._params import QueryParams, invalid
from actors.gateway._schemas import AccountSummary, ClosedPart
from actors.operators import ADJUST, CLOSE, HALT, INSTRUMENT, READ
from actors.store.base import MAX_OWNER_MATCHES, AccountOwner, decode_cursor, encode_cursor
from actors.wire import codec as edge
from actors.wire import views
from actors.wire.codec import EdgeError
from exness_actors.commands import (
    MAX_CLIENT_ID, MAX_REASON, AccountId, AdjustBalance, ForceClosePosition, HaltSymbol, PositionId,
    ResumeSymbol, UpdateInstrument,
)
from exness_actors.errors import InvalidValue
from exness_actors.events import InstrumentUpdated, PositionClosed
from exness_actors.instruments import Instrument
from exness_actors.money import format_fixed, notional_cents, parse_fixed

__all__ = ["ROUTES", "register"]

log = logging.getLogger("exness.gateway.admin")

#: views one account listing may run before it answers a short page (each looks at a bounded
#: number of accounts: views.MAX_SCAN)
SCAN_CALLS = 8
AUDIT_ACTIONS = ("halt", "resume", "update_instrument", "adjust_balance", "close_position")
LATEST_CLOSES = 20


# ------------------------------------------------------------------ parsing


def _reason(body: Any) -> str:
    """The operator's reason: required, non-empty, printable, at most ``MAX_REASON`` characters."""
    if not isinstance(body, dict):
        raise EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    value = body.get("reason")
    if value is None:
        raise invalid("reason", "is required: say why (it is kept in the audit log)")
    if not isinstance(value, str) or not value.strip():
        raise invalid("reason", "must be a non-empty string")
    if len(value) > MAX_REASON or not value.isprintable():
        raise invalid("reason", f"must be printable text of at most {MAX_REASON} characters")
    return value.strip()


def _only(body: dict, allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise invalid(name, f"unknown field (allowed: {', '.join(allowed)})")


def _signed_money(body: dict, name: str) -> int:
    value = body.get(name)
    if value is None:
        raise invalid(name, "is required")
    try:
        amount = parse_fixed(value, 2, field=name, allow_negative=True)
    except InvalidValue as exc:
        raise invalid(name, exc.problem) from None
    if amount == 0:
        raise invalid(name, "must not be zero (positive funds the account, negative debits it)")
    if abs(amount) > edge.MAX_WIRE_INT:
        raise invalid(name, "is out of range")
    return amount


def _percent(params: QueryParams, name: str) -> Optional[int]:
    """A margin level in percent as hundredths of a percent."""
    value = params.text(name, max_length=16)
    if value is None:
        return None
    try:
        return parse_fixed(value.strip(), 2, field=name, allow_zero=True)
    except InvalidValue as exc:
        raise invalid(name, exc.problem) from None


def _symbol(symbol: str) -> Instrument:
    gw = current_gateway()
    instrument = gw.instruments.get(symbol.strip().upper())
    if instrument is None:
        raise EdgeError(404, "UNKNOWN_SYMBOL", f"unknown symbol {symbol[:32]!r}",
                        {**edge.not_found_details("symbol", symbol[:32]), "known": list(gw.symbols)})
    return instrument


def _account_id(value: str) -> AccountId:
    return AccountId(edge.parse_path_id(value, "account"))


# ------------------------------------------------------------------ the house


class HouseFigures:
    """The engine's :func:`~actors.wire.views.house_figures`, asked at most once per
    :attr:`max_age_s` by this gateway whoever reads them (every open back-office page polls):
    the view is one pass over the open positions, so the engine spends the same on it with one
    operator watching or twenty. An action of this gateway forgets them (the next read is fresh)."""

    max_age_s = 1.0

    def __init__(self) -> None:
        self._value: Optional[dict] = None
        self._at = 0.0

    async def get(self) -> dict:
        now = trio.current_time()
        if self._value is None or now - self._at > self.max_age_s:
            self._value = await current_gateway().query(views.house_figures)
            self._at = now
        assert self._value is not None
        return self._value

    def forget(self) -> None:
        self._value = None


HOUSE_EXTENSION = "exness_house_figures"


def _house() -> HouseFigures:
    return current_app.extensions[HOUSE_EXTENSION]


def _by_symbol(figures: dict) -> dict[str, dict[str, Any]]:
    """Per symbol, the exposure and the house's unrealized P&L in cents: minus what the traders'
    open positions would make closed at the current quote (longs at the bid, shorts at the ask),
    from the symbol's totals — within a cent per position of the sum of the positions' own
    unrealized P&L, which rounds each one against the trader."""
    gw = current_gateway()
    rows = {}
    for symbol, quote in figures["symbols"].items():
        row = dict(figures["exposure"].get(symbol) or
                   {"long_qty": 0, "short_qty": 0, "long_notional": 0, "short_notional": 0})
        instrument = gw.instrument(symbol)
        traders = 0
        if quote["bid"] is not None and quote["ask"] is not None:
            scales = (instrument.price_decimals, instrument.qty_decimals)
            traders = (notional_cents(row["long_qty"], quote["bid"], *scales) - row["long_notional"]
                       + row["short_notional"] - notional_cents(row["short_qty"], quote["ask"], *scales))
        row.update(quote, house_unrealized=-traders)
        rows[symbol] = row
    return rows


@doc(response=HousePnl, errors=(400, 403, 503), tag="admin")
async def admin_pnl() -> Response:
    """The house's P&L: realized by source (spread, commission, swap, traders' losses and gains,
    losses absorbed by negative-balance protection) and unrealized by symbol at the current quotes."""
    await operator(READ)
    QueryParams(request.args, ())
    figures = await _house().get()
    rows = _by_symbol(figures)
    unrealized = sum(row["house_unrealized"] for row in rows.values())
    book, money = figures["book"], edge.money
    return json_response({
        "currency": "USD", "realized": {key: money(value) for key, value in book.items()},
        "unrealized": money(unrealized), "net": money(book["total"] + unrealized),
        "by_symbol": [{"symbol": symbol, "unrealized": money(row["house_unrealized"])}
                      for symbol, row in rows.items()],
    })


@doc(response=Exposure, errors=(400, 403, 503), tag="admin")
async def admin_exposure() -> Response:
    """Per symbol: the traders' open long and short quantity and notional (at the open prices),
    net, the house's unrealized P&L, the quote and whether the symbol is halted."""
    await operator(READ)
    QueryParams(request.args, ())
    gw = current_gateway()
    rows = _by_symbol(await _house().get())
    money = edge.money
    out = []
    totals = {"long_notional": 0, "short_notional": 0, "house_unrealized": 0}
    for symbol, row in rows.items():
        instrument = gw.instrument(symbol)
        qty, price = instrument.qty_decimals, instrument.price_decimals
        out.append({
            "symbol": symbol, "long_qty": format_fixed(row["long_qty"], qty),
            "short_qty": format_fixed(row["short_qty"], qty),
            "net_qty": format_fixed(row["long_qty"] - row["short_qty"], qty),
            "long_notional": money(row["long_notional"]), "short_notional": money(row["short_notional"]),
            "net_notional": money(row["long_notional"] - row["short_notional"]),
            "house_unrealized": money(row["house_unrealized"]), "halted": row["halted"],
            "bid": None if row["bid"] is None else format_fixed(row["bid"], price),
            "ask": None if row["ask"] is None else format_fixed(row["ask"], price)})
        for key in totals:
            totals[key] += row[key]
    return json_response({"symbols": out, "totals": {
        "long_notional": money(totals["long_notional"]), "short_notional": money(totals["short_notional"]),
        "net_notional": money(totals["long_notional"] - totals["short_notional"]),
        "house_unrealized": money(totals["house_unrealized"])}})


# ------------------------------------------------------------------ symbols and instruments


@doc(response=AdminSymbolList, errors=(400, 403, 503), tag="admin")
async def admin_symbols() -> Response:
    """Every instrument as the engine trades it now (after operator changes), its quote and
    whether it is halted."""
    await operator(READ)
    QueryParams(request.args, ())
    return json_response({"symbols": await current_gateway().query(views.admin_symbols)})


async def _symbol_action(command: Any, symbol: str) -> Response:
    """Submit an operator's symbol command; answer the symbol as it is right after."""
    gw = current_gateway()
    _, reply, symbols = await gw.submit(command, after=views.admin_symbols)
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    for event in reply.events:
        if type(event) is InstrumentUpdated:
            # this gateway checks orders against its copy of the instruments: keep it current
            # (other gateways of a split deployment keep theirs until they restart; the core
            # checks every order against its own either way — docs/decisions.md)
            gw.instruments[symbol] = attrs.evolve(gw.instruments[symbol], **dict(event.changes))
    if symbols is None:
        symbols = await gw.query(views.admin_symbols)
    _house().forget()
    log.info("event=operator_action command=%s symbol=%s operator_id=%d", type(command).__name__, symbol,
             command.operator_id)
    return json_response(next(row for row in symbols if row["symbol"] == symbol))


@doc(request_model=ReasonRequest, response=AdminSymbol, errors=(400, 403, 404, 409, 413, 415, 422, 503),
     tag="admin")
async def admin_halt_symbol(symbol: str) -> Response:
    """Halt a symbol: new orders are refused, pending entries wait, protective triggers
    (take-profit, stop-loss, trailing stops, liquidations, stop-outs) still fire. Journaled."""
    claims = await operator(HALT)
    instrument = _symbol(symbol)
    body = await current_gateway().json_body()
    _only(body, ("reason",))
    return await _symbol_action(HaltSymbol(symbol=instrument.symbol, operator_id=claims.operator_id,
                                           reason=_reason(body)), instrument.symbol)


@doc(request_model=ReasonRequest, response=AdminSymbol, errors=(400, 403, 404, 409, 413, 415, 422, 503),
     tag="admin")
async def admin_resume_symbol(symbol: str) -> Response:
    """Lift a halt: orders are taken again and waiting entries can trigger. Journaled."""
    claims = await operator(HALT)
    instrument = _symbol(symbol)
    body = await current_gateway().json_body()
    _only(body, ("reason",))
    return await _symbol_action(ResumeSymbol(symbol=instrument.symbol, operator_id=claims.operator_id,
                                             reason=_reason(body)), instrument.symbol)


@doc(request_model=InstrumentPatch, response=AdminSymbol, errors=(400, 403, 404, 413, 415, 422, 503),
     tag="admin")
async def admin_patch_instrument(symbol: str) -> Response:
    """Change an instrument's spread, maximum leverage, minimum quantity, maintenance ratio or
    fees. Journaled: it takes effect at its sequence number, replays identically and needs no
    config edit. Answers the instrument as it trades now."""
    claims = await operator(INSTRUMENT)
    instrument = _symbol(symbol)
    body = await current_gateway().json_body()
    reason = _reason(body)
    changes = edge.parse_instrument_patch({key: value for key, value in body.items() if key != "reason"},
                                          instrument)
    return await _symbol_action(UpdateInstrument(symbol=instrument.symbol, changes=changes,
                                                 operator_id=claims.operator_id, reason=reason),
                                instrument.symbol)


# ------------------------------------------------------------------ accounts


def _with_owner(row: dict, owner: Optional[AccountOwner]) -> dict:
    row["user_id"] = None if owner is None else str(owner.user_id)
    row["email"] = None if owner is None else owner.email
    row["demo"] = None if owner is None else owner.demo
    return row


async def _scan_accounts(after: int, limit: int, bounds: tuple) -> tuple[list[dict], Optional[int]]:
    gw = current_gateway()
    rows: list[dict] = []
    for _ in range(SCAN_CALLS):
        found, last = await gw.query(views.admin_account_scan, after, limit - len(rows), bounds)
        rows.extend(found)
        if last is None or len(rows) >= limit:
            return rows, last
        after = last
    return rows, after


async def _matching_accounts(email: str, after: int, limit: int, bounds: tuple) -> tuple[list[dict], Optional[int]]:
    gw = current_gateway()
    rows: list[dict] = []
    for _ in range(SCAN_CALLS):
        owners = await gw.store.account_owners_matching(email, after=after, limit=MAX_OWNER_MATCHES)
        if not owners:
            return rows, None
        found = await gw.query(views.admin_account_rows, [owner.account_id for owner in owners], bounds)
        by_id = {owner.account_id: owner for owner in owners}
        for row in found:
            rows.append(_with_owner(row, by_id[int(row["account_id"])]))
            if len(rows) == limit:
                return rows, int(row["account_id"])
        if len(owners) < MAX_OWNER_MATCHES:
            return rows, None
        after = owners[-1].account_id
    return rows, after


@doc(response=AccountPage, query=AccountsQuery, errors=(400, 403, 503), tag="admin")
async def admin_accounts() -> Response:
    """Trading accounts by id with their balances and margin levels, and their holders.

    Filters: email (part of the holder's e-mail), min_margin_level / max_margin_level (percent,
    inclusive; an account with nothing locked has no margin level and is left out by either).
    A page may hold fewer than limit accounts: continue while next_cursor is not null."""
    await operator(READ)
    gw = current_gateway()
    params = QueryParams(request.args, ("email", "min_margin_level", "max_margin_level", "cursor", "limit"))
    email = params.text("email", max_length=254)
    bounds = (_percent(params, "min_margin_level"), _percent(params, "max_margin_level"))
    cursor, limit = params.cursor(), params.limit()
    after = decode_cursor(cursor, "accounts", 1)[0] if cursor is not None else 0
    if email is not None:
        rows, last = await _matching_accounts(email.strip().lower(), after, limit, bounds)
    else:
        rows, last = await _scan_accounts(after, limit, bounds)
        owners = await gw.store.account_owners([int(row["account_id"]) for row in rows])
        rows = [_with_owner(row, owners.get(int(row["account_id"]))) for row in rows]
    return json_response({"accounts": rows,
                          "next_cursor": None if last is None else encode_cursor("accounts", last)})


@doc(response=AccountDetail, query=AccountDetailQuery, errors=(400, 403, 404, 503), tag="admin")
async def admin_account(account_id: str) -> Response:
    """One account: balances, margin level, holder, open positions, pending orders, the ledger
    (newest first; ledger_cursor pages it) and the latest closed positions."""
    await operator(READ)
    gw = current_gateway()
    identifier = _account_id(account_id)
    params = QueryParams(request.args, ("ledger_cursor",))
    ledger_cursor = params.text("ledger_cursor", max_length=256)
    detail = await gw.query(views.admin_account, identifier)
    if detail is None:
        raise EdgeError(404, "UNKNOWN_ACCOUNT", f"no account {identifier}",
                        edge.not_found_details("account", identifier))
    owners = await gw.store.account_owners([identifier])
    _with_owner(detail, owners.get(identifier))
    await gw.history_caught_up(identifier)
    ledger = await gw.store.ledger(identifier, cursor=ledger_cursor)
    closed = await gw.store.closed_positions(identifier, limit=LATEST_CLOSES)
    detail.update(ledger=[edge.ledger_entry_json(entry) for entry in ledger.items],
                  ledger_next_cursor=ledger.next_cursor,
                  closed_positions=[edge.closed_position_json(record, gw.instrument(record.symbol))
                                    for record in closed.items])
    return json_response(detail)


@doc(request_model=AdjustRequest, response=AccountSummary, errors=(400, 403, 404, 413, 415, 422, 503),
     tag="admin")
async def admin_adjust_balance(account_id: str) -> Response:
    """Fund (amount > 0) or debit (amount < 0) an account's free balance: a ledger entry of kind
    operator_adjustment. A debit beyond the free balance is 422 INSUFFICIENT_FUNDS (or the
    core's reason). A repeated idempotency_key changes nothing. Answers the account summary."""
    claims = await operator(ADJUST)
    gw = current_gateway()
    identifier = _account_id(account_id)
    body = await gw.json_body()
    _only(body, ("amount", "reason", "idempotency_key"))
    key = body.get("idempotency_key") or ""
    if not isinstance(key, str) or len(key) > MAX_CLIENT_ID or not key.isprintable():
        raise invalid("idempotency_key", f"must be printable text of at most {MAX_CLIENT_ID} characters")
    command = AdjustBalance(account_id=identifier, amount=_signed_money(body, "amount"),
                            operator_id=claims.operator_id, reason=_reason(body), idempotency_key=key)
    _, reply, summary = await gw.submit(command, after=functools.partial(views.account_summary,
                                                                         account_id=identifier))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    if summary is None:
        summary = await gw.query(views.account_summary, identifier)
    _house().forget()
    log.info("event=operator_action command=AdjustBalance account_id=%d operator_id=%d", identifier,
             claims.operator_id)
    return json_response(summary)


@doc(request_model=ReasonRequest, response=ClosedPart, errors=(400, 403, 404, 413, 415, 422, 503), tag="admin")
async def admin_close_position(position_id: str) -> Response:
    """Force-close a whole position at the current quote (close reason operator). Journaled."""
    claims = await operator(CLOSE)
    gw = current_gateway()
    identifier = PositionId(edge.parse_position_id(position_id))
    body = await gw.json_body()
    _only(body, ("reason",))
    _, reply, _ = await gw.submit(ForceClosePosition(position_id=identifier, operator_id=claims.operator_id,
                                                     reason=_reason(body)))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    for event in reply.events:
        if type(event) is PositionClosed:
            _house().forget()
            log.info("event=operator_action command=ForceClosePosition position_id=%d operator_id=%d",
                     identifier, claims.operator_id)
            return json_response(edge.position_closed_json(event, gw.instrument(event.symbol)))
    raise RuntimeError(f"unexpected reply to ForceClosePosition: {reply.events!r}")  # pragma: no cover


# ------------------------------------------------------------------ audit


def _detail(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _operator_filter(value: Optional[str]) -> Optional[int]:
    """An operator id (digits) or e-mail; -1 (matches nothing) for an e-mail nobody has."""
    if value is None:
        return None
    if value.isdigit():
        return int(value) if len(value) <= 18 else -1
    record = await current_gateway().store.operator_by_email(value.strip().lower())
    return -1 if record is None else record.operator_id


@doc(response=AuditPage, query=AuditQuery, errors=(400, 403, 503), tag="admin")
async def admin_audit() -> Response:
    """Every operator action, newest first, from the engine's journal (via the persister).

    Filters: operator (id or e-mail), action (halt, resume, update_instrument, adjust_balance,
    close_position), from/to (ms; from inclusive, to exclusive)."""
    await operator(READ)
    gw = current_gateway()
    params = QueryParams(request.args, ("operator", "action", "from", "to", "cursor", "limit"))
    operator_id = await _operator_filter(params.text("operator", max_length=254))
    action = params.choice("action", AUDIT_ACTIONS)
    start, end = params.time_ns("from"), params.time_ns("to")
    if start is not None and end is not None and start > end:
        raise invalid("to", "must not be before from")
    cursor, limit = params.cursor(), params.limit()
    await gw.history_caught_up(0)
    page = await gw.store.audit(operator_id=operator_id, action=action, start=start, end=end, cursor=cursor,
                                limit=limit)
    emails = {record.operator_id: record.email for record in await gw.store.operators()}
    return json_response({"entries": [{
        "id": f"{entry.shard}-{entry.seq}-{entry.index}", "operator_id": str(entry.operator_id),
        "operator_email": emails.get(entry.operator_id), "action": entry.action,
        "account_id": None if entry.account_id is None else str(entry.account_id), "target": entry.target,
        "reason": entry.reason, "detail": _detail(entry.detail), "ts": edge.ns_to_ms(entry.ts),
    } for entry in page.items], "next_cursor": page.next_cursor})


#: (method, path, handler, what the route needs: None = no token, else a permission)
ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[Response]], Optional[str]], ...] = (
    ("POST", f"{ADMIN}/signin", admin_signin, None),
    ("POST", f"{ADMIN}/refresh", admin_refresh, None),
    ("POST", f"{ADMIN}/signout", admin_signout, None),
    ("GET", f"{ADMIN}/me", admin_me, READ),
    ("GET", f"{ADMIN}/pnl", admin_pnl, READ),
    ("GET", f"{ADMIN}/exposure", admin_exposure, READ),
    ("GET", f"{ADMIN}/symbols", admin_symbols, READ),
    ("POST", f"{ADMIN}/symbols/<symbol>/halt", admin_halt_symbol, HALT),
    ("POST", f"{ADMIN}/symbols/<symbol>/resume", admin_resume_symbol, HALT),
    ("PATCH", f"{ADMIN}/instruments/<symbol>", admin_patch_instrument, INSTRUMENT),
    ("GET", f"{ADMIN}/accounts", admin_accounts, READ),
    ("GET", f"{ADMIN}/accounts/<account_id>", admin_account, READ),
    ("POST", f"{ADMIN}/accounts/<account_id>/adjust", admin_adjust_balance, ADJUST),
    ("POST", f"{ADMIN}/positions/<position_id>/close", admin_close_position, CLOSE),
    ("GET", f"{ADMIN}/audit", admin_audit, READ),
)


def register(app: Any) -> None:
    app.extensions[HOUSE_EXTENSION] = HouseFigures()
    for method, path, handler, _ in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=[method])
