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

Split mode with ``[bus] shards`` > 1 (docs/decisions.md, "Issue 13, the sharded gap"):

* halt, resume and instrument changes go to **every** shard at once, each journaling its own
  input with the same operator id and reason (so the audit log has one entry per shard, each
  labelled with its ``shard``). The answer is 200 only when every shard applied it; when some
  shard did not answer, 503 ``SHARDS_UNAVAILABLE`` names them (``details.shards``) and the ones
  that did (``details.applied_on``) — repeating the action is safe, a halted symbol halts again;
* a forced close goes to the shard that opened the position: shard ``k`` numbers its ids from
  ``k × 10¹² + 1`` (:func:`actors.bus.streams.shard_of_position`);
* a balance adjustment and one account's detail go to the account's shard (``account_id % shards``);
* the house's figures, the symbols and the account listings ask every shard and merge
  (integer sums; accounts in id order); a shard that does not answer is 503 ``SHARDS_UNAVAILABLE``.

One engine (embedded, or split mode with one shard) takes the plain path: one call, as before.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Awaitable, Callable, Optional

import attrs
import trio
from quart import Response, current_app, request

from actors.bus.streams import BoxedView, shard_clients, shard_of_position
from actors.engine.actor import submit_between
from actors.engine.messages import EngineStopped, EngineTimeout, Overloaded, Reply
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


# ------------------------------------------------------------------ every shard

#: what each way of not answering is called in ``SHARDS_UNAVAILABLE``'s details
_UNAVAILABLE = ((EngineTimeout, "ENGINE_TIMEOUT"), (EngineStopped, "ENGINE_STOPPED"), (Overloaded, "OVERLOADED"))


def _shard_list(shards: Any) -> str:
    return ", ".join(str(shard) for shard in shards)


async def _on_every_shard(run: Callable[[Any], Awaitable[Any]], what: str, *, command: bool = False) -> list[Any]:
    """``run(client)`` on every engine shard at once (:func:`~actors.bus.streams.shard_clients`);
    the answers in shard order.

    One engine: one plain call, its errors as they are (503 busy or stopped, 504 timeout). Several
    shards: when some did not answer (timed out, bus down, busy) 503 ``SHARDS_UNAVAILABLE``
    naming them — for a ``command``, also the shards that applied it, and that repeating it is
    safe — rather than an answer that silently leaves a shard out. Other errors propagate."""
    clients = shard_clients(current_gateway().handle)
    if len(clients) == 1:
        return [await run(clients[0])]
    answers: list[Any] = [None] * len(clients)
    failed: dict[int, str] = {}
    errors: dict[int, Exception] = {}

    async def one(shard: int, client: Any) -> None:
        try:
            answers[shard] = await run(client)
        except Exception as exc:
            for kind, code in _UNAVAILABLE:
                if isinstance(exc, kind):
                    failed[shard] = code
                    return
            errors[shard] = exc

    async with trio.open_nursery() as nursery:
        for shard, client in enumerate(clients):
            nursery.start_soon(one, shard, client)
    if failed:
        shards = sorted(failed)
        answered = [shard for shard in range(len(clients)) if shard not in failed and shard not in errors]
        details: dict[str, Any] = {"shards": shards, "errors": {str(shard): failed[shard] for shard in shards}}
        if command:
            details["applied_on"] = answered
            message = (f"{what}: engine shard(s) {_shard_list(shards)} did not confirm it "
                       f"({', '.join(sorted(set(failed.values())))}); it was applied on shard(s) "
                       f"{_shard_list(answered) or 'none'}. Repeat the action once the shard is back: "
                       "it is safe, every shard applies it again")
        else:
            message = (f"{what}: engine shard(s) {_shard_list(shards)} did not answer "
                       f"({', '.join(sorted(set(failed.values())))}); the figures would leave them out")
        log.warning("event=shards_unavailable what=%s shards=%s", what, _shard_list(shards))
        raise EdgeError(503, "SHARDS_UNAVAILABLE", message, details, headers={"Retry-After": "1"})
    if errors:
        raise errors[min(errors)]
    return answers


async def _view(client: Any, function: Callable, *args: Any) -> Any:
    """``function(engine, *args)`` run by one shard's engine (the value, unboxed)."""
    (value,) = await client.query(BoxedView(function, args))
    return value


def _one_outcome(command: Any, replies: list[Reply]) -> None:
    """Raise the rejection when the shards refused ``command`` (all alike: they validate it the
    same way), or 502 ``SHARDS_DISAGREE`` when some applied it and some refused it."""
    rejections = {shard: edge.rejection_of(reply.events) for shard, reply in enumerate(replies)}
    refused = {shard: error for shard, error in rejections.items() if error is not None}
    if not refused:
        return
    if len(refused) == len(replies):
        raise refused[0]
    applied = [shard for shard in rejections if shard not in refused]
    raise EdgeError(502, "SHARDS_DISAGREE",
                    f"{type(command).__name__} was applied on shard(s) {_shard_list(applied)} but refused on "
                    f"shard(s) {_shard_list(sorted(refused))} "
                    f"({'; '.join(f'{shard}: {error.code}' for shard, error in sorted(refused.items()))})",
                    {"applied_on": applied,
                     "refused": {str(shard): error.code for shard, error in sorted(refused.items())}})


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
            per_shard = await _on_every_shard(lambda client: _view(client, views.house_figures),
                                              "the house's figures")
            self._value = merged_figures(per_shard)
            self._at = now
        assert self._value is not None
        return self._value

    def forget(self) -> None:
        self._value = None


HOUSE_EXTENSION = "exness_house_figures"

_NO_EXPOSURE = {"long_qty": 0, "short_qty": 0, "long_notional": 0, "short_notional": 0}


def merged_figures(per_shard: list[dict]) -> dict:
    """Every shard's :func:`~actors.wire.views.house_figures` as one: the realized book and each
    symbol's quantities and notionals summed (exact integers), the quote of shard 0 (every shard
    trades the same quotes stream; they may be a tick apart), and a symbol halted when any shard
    has it halted, with ``halted_shards`` naming which (several shards only)."""
    if len(per_shard) == 1:
        return per_shard[0]
    book: dict[str, int] = {}
    exposure: dict[str, dict[str, int]] = {}
    for figures in per_shard:
        for key, value in figures["book"].items():
            book[key] = book.get(key, 0) + value
        for symbol, row in figures["exposure"].items():
            total = exposure.setdefault(symbol, dict(_NO_EXPOSURE))
            for key in _NO_EXPOSURE:
                total[key] += row[key]
    symbols = {}
    for symbol, first in per_shard[0]["symbols"].items():
        halted = [shard for shard, figures in enumerate(per_shard) if figures["symbols"].get(symbol, first)["halted"]]
        symbols[symbol] = {"bid": first["bid"], "ask": first["ask"], "halted": bool(halted), "halted_shards": halted}
    return {"book": book, "exposure": exposure, "symbols": symbols}


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
        row = dict(figures["exposure"].get(symbol) or _NO_EXPOSURE)
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
        if "halted_shards" in row:
            out[-1]["halted_shards"] = row["halted_shards"]
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
    return json_response({"symbols": await _all_symbols()})


#: an admin_symbols row's keys that are not the instrument's
_SYMBOL_STATE = ("symbol", "halted", "bid", "ask", "quote_ts")


def merged_symbols(per_shard: list[list[dict]]) -> list[dict]:
    """Every shard's :func:`~actors.wire.views.admin_symbols` as one list: shard 0's rows (its
    instruments and quotes), a symbol halted when any shard has it halted, and — several shards
    only — ``halted_shards`` and ``differing_shards`` (shards whose instrument differs from
    shard 0's: an instrument change some shard has not applied)."""
    if len(per_shard) == 1:
        return per_shard[0]
    by_shard = [{row["symbol"]: row for row in rows} for rows in per_shard]
    merged = []
    for first in per_shard[0]:
        symbol = first["symbol"]
        rows = [shard_rows.get(symbol, first) for shard_rows in by_shard]
        halted = [shard for shard, row in enumerate(rows) if row["halted"]]
        differing = [shard for shard, row in enumerate(rows)
                     if any(row.get(key) != value for key, value in first.items() if key not in _SYMBOL_STATE)]
        merged.append({**first, "halted": bool(halted), "halted_shards": halted, "differing_shards": differing})
    return merged


async def _all_symbols() -> list[dict]:
    return merged_symbols(await _on_every_shard(lambda client: _view(client, views.admin_symbols),
                                                "the symbols"))


async def _submit_on(command: Any, client: Any) -> tuple[Reply, Any]:
    """``command`` to one shard with that shard's symbols right after it (one round trip)."""
    _, reply, symbols = await submit_between(client, command, after=BoxedView(views.admin_symbols))
    return reply, symbols


async def _symbol_action(command: Any, symbol: str) -> Response:
    """Submit an operator's symbol command to every engine shard; answer the symbol as it is
    right after (200 only when every shard applied it: :func:`_on_every_shard`)."""
    gw = current_gateway()
    name = type(command).__name__
    try:
        outcomes = await _on_every_shard(functools.partial(_submit_on, command), f"{name} {symbol}", command=True)
    finally:
        _house().forget()   # some shard may have applied it even when the answer is an error
    _one_outcome(command, [reply for reply, _ in outcomes])
    for event in outcomes[0][0].events:
        if type(event) is InstrumentUpdated:
            # this gateway checks orders against its copy of the instruments: keep it current
            # at once (in split mode the copy also follows the events stream, so every other
            # gateway and stream server follows too — docs/decisions.md)
            gw.instruments[symbol] = attrs.evolve(gw.instruments[symbol], **dict(event.changes))
    if any(symbols is None for _, symbols in outcomes):
        symbols = await _all_symbols()
    else:
        symbols = merged_symbols([value for _, value in outcomes])
    log.info("event=operator_action command=%s symbol=%s operator_id=%d shards=%d", name, symbol,
             command.operator_id, len(outcomes))
    return json_response(next(row for row in symbols if row["symbol"] == symbol))


@doc(request_model=ReasonRequest, response=AdminSymbol, errors=(400, 403, 404, 409, 413, 415, 422, 502, 503),
     tag="admin")
async def admin_halt_symbol(symbol: str) -> Response:
    """Halt a symbol: new orders are refused, pending entries wait, protective triggers
    (take-profit, stop-loss, trailing stops, liquidations, stop-outs) still fire. Journaled.

    With several engine shards every shard applies it; 503 SHARDS_UNAVAILABLE names any shard
    that did not confirm (details.shards, details.applied_on): repeating the halt is safe."""
    claims = await operator(HALT)
    instrument = _symbol(symbol)
    body = await current_gateway().json_body()
    _only(body, ("reason",))
    return await _symbol_action(HaltSymbol(symbol=instrument.symbol, operator_id=claims.operator_id,
                                           reason=_reason(body)), instrument.symbol)


@doc(request_model=ReasonRequest, response=AdminSymbol, errors=(400, 403, 404, 409, 413, 415, 422, 502, 503),
     tag="admin")
async def admin_resume_symbol(symbol: str) -> Response:
    """Lift a halt: orders are taken again and waiting entries can trigger. Journaled. Every
    engine shard applies it (as a halt: 503 SHARDS_UNAVAILABLE names a shard that did not)."""
    claims = await operator(HALT)
    instrument = _symbol(symbol)
    body = await current_gateway().json_body()
    _only(body, ("reason",))
    return await _symbol_action(ResumeSymbol(symbol=instrument.symbol, operator_id=claims.operator_id,
                                             reason=_reason(body)), instrument.symbol)


@doc(request_model=InstrumentPatch, response=AdminSymbol, errors=(400, 403, 404, 413, 415, 422, 502, 503),
     tag="admin")
async def admin_patch_instrument(symbol: str) -> Response:
    """Change an instrument's spread, maximum leverage, minimum quantity, maintenance ratio or
    fees. Journaled: it takes effect at its sequence number, replays identically and needs no
    config edit. Answers the instrument as it trades now. Every engine shard applies it (as a
    halt: 503 SHARDS_UNAVAILABLE names a shard that did not), and every gateway follows it."""
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


def merged_scan(per_shard: list[tuple[list[dict], Optional[int]]]) -> tuple[list[dict], Optional[int]]:
    """Every shard's :func:`~actors.wire.views.admin_account_scan` of the same range as one, in
    account id order: each shard looked at its accounts up to its own last id, so the merged
    rows are complete only up to the smallest of those (a shard that answered None has no
    more); the rows past it are left for the next call, which starts there."""
    if len(per_shard) == 1:
        return per_shard[0]
    bound = min((last for _, last in per_shard if last is not None), default=None)
    rows = sorted((row for found, _ in per_shard for row in found), key=lambda row: int(row["account_id"]))
    if bound is not None:
        rows = [row for row in rows if int(row["account_id"]) <= bound]
    return rows, bound


async def _scan_accounts(after: int, limit: int, bounds: tuple) -> tuple[list[dict], Optional[int]]:
    rows: list[dict] = []
    for _ in range(SCAN_CALLS):
        wanted = limit - len(rows)
        found, last = merged_scan(await _on_every_shard(
            lambda client: _view(client, views.admin_account_scan, after, wanted, bounds), "the accounts"))
        for row in found:
            rows.append(row)
            if len(rows) >= limit:
                return rows, int(row["account_id"])
        if last is None:
            return rows, None
        after = last
    return rows, after


async def _account_rows(account_ids: list[int], bounds: tuple) -> list[dict]:
    """:func:`~actors.wire.views.admin_account_rows` of these accounts, each asked of its own
    shard (one view per shard, at once), in the order given."""
    gw = current_gateway()
    clients = shard_clients(gw.handle)
    if len(clients) == 1:
        return await _view(clients[0], views.admin_account_rows, account_ids, bounds)
    by_shard: list[list[int]] = [[] for _ in clients]
    for account_id in account_ids:
        by_shard[gw.handle.shard_of(account_id)].append(account_id)
    found = await _on_every_shard(
        lambda client: _view(client, views.admin_account_rows, by_shard[client.shard], bounds), "the accounts")
    rows = {int(row["account_id"]): row for shard_rows in found for row in shard_rows}
    return [rows[account_id] for account_id in account_ids if account_id in rows]


async def _matching_accounts(email: str, after: int, limit: int, bounds: tuple) -> tuple[list[dict], Optional[int]]:
    gw = current_gateway()
    rows: list[dict] = []
    for _ in range(SCAN_CALLS):
        owners = await gw.store.account_owners_matching(email, after=after, limit=MAX_OWNER_MATCHES)
        if not owners:
            return rows, None
        found = await _account_rows([owner.account_id for owner in owners], bounds)
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
    """Force-close a whole position at the current quote (close reason operator). Journaled.
    With several engine shards it goes to the shard that opened the position (its id says which)."""
    claims = await operator(CLOSE)
    gw = current_gateway()
    identifier = PositionId(edge.parse_position_id(position_id))
    body = await gw.json_body()
    _only(body, ("reason",))
    command = ForceClosePosition(position_id=identifier, operator_id=claims.operator_id, reason=_reason(body))
    clients = shard_clients(gw.handle)
    if len(clients) == 1:
        _, reply, _ = await gw.submit(command)
    else:   # the shard that opened it holds it (ids by range)
        shard = shard_of_position(identifier)
        if shard >= len(clients):
            raise EdgeError(404, "UNKNOWN_POSITION", f"no open position {identifier}",
                            {"reason": "UNKNOWN_POSITION", "ref": str(identifier),
                             **edge.not_found_details("position", identifier)})
        _, reply, _ = await submit_between(clients[shard], command)
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
    """Every operator action, newest first, from the engine's journal (via the persister). With
    several engine shards a halt, resume or instrument change has one entry per shard (shard).

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
    for shard in range(len(shard_clients(gw.handle))):   # every shard's persister writes its own
        await gw.shard_history_caught_up(shard)
    page = await gw.store.audit(operator_id=operator_id, action=action, start=start, end=end, cursor=cursor,
                                limit=limit)
    emails = {record.operator_id: record.email for record in await gw.store.operators()}
    return json_response({"entries": [{
        "id": f"{entry.shard}-{entry.seq}-{entry.index}", "shard": entry.shard,
        "operator_id": str(entry.operator_id),
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
