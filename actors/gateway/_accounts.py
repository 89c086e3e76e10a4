"""A user's trading accounts: list them, open another (issue 16).

* **Accounts** live in the store (:class:`~actors.store.base.AccountRecord`: owner, type, demo
  or real) and in the engine (balance, positions, margin). A row is written first (its id comes
  from the store's sequence), then the engine opens the account (``OpenAccount`` with the type;
  demo accounts get ``[engine] demo_deposit``, real ones open empty and are funded by an
  operator), then the row is marked ready. ``ACCOUNT_EXISTS`` counts as success, so the engine
  step is idempotent: a row whose engine step failed (engine overloaded or stopping) is completed
  by the next listing, sign-in or switch that meets it.
* **The account in the token**: every other endpoint works on the access token's account;
  ``POST /api/v1/auth/switch`` (:mod:`actors.gateway._auth`) issues tokens for another account
  of the same user.
* **Types**: the ones configured in ``config.toml [accounts]`` (the engine pins them). Without
  any configured type, an ``isolated`` account is the engine's untyped account, which is margined
  exactly the same way.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable, Optional

from quart import Response, request

from actors.config import ConfigError
from actors.gateway._common import API, Gateway, current_gateway, doc, json_response
from actors.gateway._params import QueryParams, invalid
from actors.gateway._schemas import AccountEntry, AccountList, AccountTypeList, OpenAccountRequest, QuoteList
from actors.store.base import AccountRecord, TooManyAccounts
from actors.wire import codec as edge
from actors.wire import views as views
from exness_actors.account_types import AccountType
from exness_actors.commands import AccountId, CreateAccount, OpenAccount
from exness_actors.money import format_fixed
from exness_actors.reasons import RejectReason

__all__ = ["ROUTES", "register", "ensure_account", "account_types", "signup_account_type",
           "account_entry", "SIGNUP_ACCOUNT_TYPE", "ISOLATED"]

log = logging.getLogger("exness.gateway.accounts")

#: what a sign-up opens (the Exness default: cross margin, margin call 60 %, stop-out 0 %)
SIGNUP_ACCOUNT_TYPE = "standard"
#: the engine's untyped account is margined as this type
ISOLATED = "isolated"


def _configured(gw: Gateway) -> tuple[AccountType, ...]:
    core = gw.handle.core_config if gw.handle is not None else gw.cfg.core   # None: the OpenAPI export
    return tuple(core.account_types)


def account_types(gw: Gateway) -> tuple[str, ...]:
    """The account types a trader may open: the configured ones, by name."""
    names = tuple(sorted(t.name for t in _configured(gw)))
    return names or (ISOLATED,)


def signup_account_type(gw: Gateway) -> str:
    """``[accounts] signup_type``: the type a sign-up opens. Unset: ``standard`` when configured
    (the shipped config has it), else the untyped isolated account."""
    wanted = gw.cfg["accounts"].get("signup_type")
    if wanted is None:
        return SIGNUP_ACCOUNT_TYPE if SIGNUP_ACCOUNT_TYPE in account_types(gw) else ISOLATED
    return wanted


def check_signup_type(gw: Gateway) -> None:
    """A ``signup_type`` that names no configured type stops the start (ConfigError)."""
    wanted = gw.cfg["accounts"].get("signup_type")
    if wanted is not None and wanted not in account_types(gw):
        raise ConfigError(f"[accounts] signup_type must be one of the configured account types "
                          f"({', '.join(account_types(gw))}), not {wanted!r}")


def _percent(level: int) -> str:
    return format_fixed(level * 100, 2)


def account_type_json(account_type: AccountType) -> dict:
    """What a trader needs to choose a type: margining, levels, costs (bps = ppm / 100)."""
    cross = account_type.is_cross
    return {
        "name": account_type.name, "margin_mode": account_type.margin_mode,
        "max_leverage": account_type.max_leverage,
        "margin_call_level": _percent(account_type.margin_call_pct) if cross else None,
        "stop_out_level": _percent(account_type.stop_out_pct) if cross else None,
        "commission_bps": format_fixed(account_type.commission_ppm, 2),
        "swap_long_bps": format_fixed(account_type.swap_long_ppm, 2),
        "swap_short_bps": format_fixed(account_type.swap_short_ppm, 2),
        "swap_free": account_type.swap_free, "min_deposit": edge.money(account_type.min_deposit),
        "spread_multiplier": format_fixed(account_type.spread_pct, 2) if account_type.fixed_spread_ppm < 0 else None,
        "fixed_spread_bps": format_fixed(account_type.fixed_spread_ppm, 2) if account_type.fixed_spread_ppm >= 0 else None,
    }


@doc(response=AccountTypeList, errors=(400,), auth=False, tag="account")
async def list_account_types() -> Response:
    """The account types a trader may open (config.toml [accounts]), by name.

    Cross types are judged as a whole (margin call and stop-out levels, percent of equity over
    used margin); isolated ones margin each position on its own. Commission is per side, swaps
    per day, both in basis points of notional."""
    gw = current_gateway()
    QueryParams(request.args, ())
    configured = {t.name: t for t in _configured(gw)}
    types = [configured.get(name) or AccountType(name=name, margin_mode=ISOLATED) for name in account_types(gw)]
    return json_response({"account_types": [account_type_json(t) for t in types],
                          "signup_type": signup_account_type(gw)})


def _open_command(gw: Gateway, record: AccountRecord) -> OpenAccount | CreateAccount:
    deposit = gw.cfg.demo_deposit_cents if record.demo else 0
    account_id = AccountId(record.account_id)
    if record.account_type == ISOLATED and ISOLATED not in {t.name for t in _configured(gw)}:
        return CreateAccount(account_id=account_id, initial_deposit=deposit)
    return OpenAccount(account_id=account_id, account_type=record.account_type, initial_deposit=deposit)


async def ensure_account(gw: Gateway, record: AccountRecord) -> Optional[dict]:
    """Open ``record``'s account in the engine (idempotent) and mark it ready; answers the
    account summary right after (None when that read could not be queued). Overloaded and
    EngineStopped propagate (the row stays not ready: the next caller completes it)."""
    _, reply, summary = await gw.submit(_open_command(gw, record), after=functools.partial(
        views.account_summary, account_id=AccountId(record.account_id)))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None and rejection.code != RejectReason.ACCOUNT_EXISTS.value:
        log.error("event=account_open_failed account_id=%d type=%s code=%s", record.account_id,
                  record.account_type, rejection.code)
        raise rejection
    await gw.store.mark_account_ready(record.account_id)
    record.ready = True
    return summary


def account_entry(record: AccountRecord, summary: Optional[dict], *, current: bool) -> dict:
    """One account of ``GET /accounts``: the store's facts and the engine's summary (its figures
    null while the engine has not confirmed the account)."""
    entry: dict[str, Any] = {"account_id": str(record.account_id)}
    if summary is not None:
        entry.update(summary)
    else:
        entry.update(dict.fromkeys(("balance", "locked", "used_margin", "equity", "free_margin",
                                    "margin_level", "unrealized_pnl", "margin_mode",
                                    "margin_call_level", "stop_out_level")),
                     currency="USD", in_margin_call=False)
    entry.update(account_id=str(record.account_id), account_type=record.account_type, demo=record.demo,
                 current=current, created_at=edge.ns_to_ms(record.created_at))
    return entry


def parse_open_account(body: Any, types: tuple[str, ...]) -> tuple[str, bool]:
    """``(type, demo)`` of a ``POST /accounts`` body; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise edge.EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    for name in body:
        if name not in ("type", "demo"):
            raise invalid(name, "unknown field (allowed: type, demo)")
    account_type = body.get("type")
    if account_type is None:
        raise invalid("type", f"is required (one of: {', '.join(types)})")
    if not isinstance(account_type, str) or account_type not in types:
        raise edge.EdgeError(400, "VALIDATION_ERROR", f"type: must be one of: {', '.join(types)}",
                             {"field": "type", "problem": "unknown account type", "allowed": list(types)})
    demo = body.get("demo", True)
    if not isinstance(demo, bool):
        raise invalid("demo", "must be true (a demo account with the demo deposit) or false (a real "
                              "account, funded by the broker)")
    return account_type, demo


@doc(response=AccountList, errors=(400, 503), tag="account")
async def list_accounts() -> Response:
    """The caller's trading accounts, oldest first, with their figures.

    ``current`` marks the account of the access token (the one every other endpoint works on);
    ``POST /api/v1/auth/switch`` moves to another."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    entries = []
    for record in await gw.store.accounts_of(claims.user_id):
        summary = None
        if not record.ready:
            summary = await ensure_account(gw, record)
        if summary is None:
            summary = await gw.query(views.account_summary, AccountId(record.account_id))
        entries.append(account_entry(record, summary, current=record.account_id == claims.account_id))
    return json_response({"accounts": entries})


@doc(request_model=OpenAccountRequest, response=AccountEntry, status=201,
     errors=(400, 409, 413, 415, 422, 503), tag="account")
async def open_account() -> Response:
    """Open another trading account of a configured type (201 with the new account).

    A demo account gets the demo deposit and deposits freely; a real account opens with a zero
    balance and is funded by the broker (its deposit endpoint answers 403). An unknown type is
    400 naming ``type``; past ``[limits] accounts_per_user`` it is 409 ACCOUNT_LIMIT_REACHED. The
    new account is not the current one: switch to it with ``POST /api/v1/auth/switch``."""
    gw = current_gateway()
    claims = gw.authenticate()
    account_type, demo = parse_open_account(await gw.json_body(), account_types(gw))
    limit = gw.settings.accounts_per_user
    try:
        record = await gw.store.open_account(claims.user_id, account_type=account_type, demo=demo,
                                             created_at=gw.clock(), limit=limit)
    except TooManyAccounts:
        raise edge.EdgeError(409, "ACCOUNT_LIMIT_REACHED", f"a user may hold at most {limit} trading accounts",
                             {"limit": limit}) from None
    summary = await ensure_account(gw, record)
    if summary is None:
        summary = await gw.query(views.account_summary, AccountId(record.account_id))
    log.info("event=account_opened user_id=%d account_id=%d type=%s demo=%s", claims.user_id,
             record.account_id, account_type, demo)
    return json_response(account_entry(record, summary, current=False), 201)


@doc(response=QuoteList, errors=(400, 503), tag="account")
async def list_account_quotes() -> Response:
    """The bid and ask of every symbol at the current account's spread (null until its first quote).

    Each account type has its own quotes (``spread_multiplier`` or ``fixed_spread_bps`` in
    ``/account-types``): these are the prices the account's market orders fill at and its
    stop-losses, take-profits, pending orders and margin levels are judged on. The public
    ``/quotes`` and the WebSocket ``quotes`` channel carry the market's (the instrument's spread)."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    return json_response({"quotes": await gw.query(views.account_quotes, AccountId(claims.account_id), gw.symbols)})


ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[Response]]], ...] = (
    ("GET", f"{API}/account-types", list_account_types),
    ("GET", f"{API}/accounts", list_accounts),
    ("POST", f"{API}/accounts", open_account),
    ("GET", f"{API}/account/quotes", list_account_quotes),
)


def register(app: Any, gw: Gateway) -> None:
    check_signup_type(gw)
    for method, path, handler in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=[method])
