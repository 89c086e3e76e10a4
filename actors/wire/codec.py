"""The edge codec: JSON requests → core commands, core state/events → JSON, errors → HTTP.

Shared by the HTTP gateway and the WebSocket order lane so that both validate identically.

* Amounts and prices arrive as decimal strings or JSON numbers and are parsed **exactly**
  (JSON numbers must be decoded with ``parse_float=Decimal``; a float is never accepted); more
  decimals than the field allows, out of range, wrong type, unknown field, missing field: each is
  an :class:`EdgeError` naming the field (HTTP 400, code ``VALIDATION_ERROR``).
* Responses carry every amount and price as a decimal string, timestamps as integer
  milliseconds since the epoch, sides ``buy``/``sell``.
* Core rejections keep their reason as the error code; :func:`status_for` maps it to HTTP.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable, Literal, Mapping, Optional, overload

from exness_actors.commands import (
    MAX_ALERT_NOTE, MAX_CLIENT_ID, AccountId, AddMargin, CancelAllAfter, ClientOrderId, ClosePosition, Deposit,
    ModifyOrder, ModifyPosition, OrderId, PlaceAlert, PlaceOrder, PositionId, Withdraw,
)
from exness_actors.engine import Engine
from exness_actors.errors import InvalidValue
from exness_actors.events import (
    AlertPlaced, CommandRejected, DuplicateCommand, OrderAccepted, OrderRejected, PositionClosed,
    PositionOpened,
)
from exness_actors.instruments import Instrument
from exness_actors.model import Alert, Order, Position
from exness_actors.money import format_fixed, parse_fixed, parse_integer, parse_integer_text
from exness_actors.reasons import RejectReason

__all__ = [
    "EdgeError", "status_for", "parse_place_order", "parse_modify_order", "parse_close",
    "parse_modify_position", "parse_add_margin", "parse_funding", "order_json", "position_json",
    "account_json", "quote_json", "instrument_json", "rejection_of", "ms_to_ns", "ns_to_ms",
    "error_body", "parse_json_body", "parse_path_id", "duplicate_of", "money", "MAX_WIRE_INT",
    "MAX_RESOURCE_ID", "parse_message_id", "parse_order_id", "parse_position_id",
    "order_accepted_json", "order_record_json", "pending_order_json", "position_opened_json",
    "position_closed_json", "closed_position_json", "ledger_entry_json", "candle_json",
    "margin_level_text", "account_summary_event_json",
    "parse_instrument_patch", "INSTRUMENT_PATCH_FIELDS", "parse_place_alert", "parse_cancel_all_after",
    "alert_json", "alert_placed_json", "parse_alert_id", "MAX_DEAD_MAN_S", "ALERT_FIELDS",
]

_NS_PER_MS = 1_000_000
#: The latest timestamp the API takes (2262-04-11T23:47:16.854Z): in ns it is the largest that
#: fits the signed 64-bit integers of the stores and the journal (see docs/decisions.md).
MAX_TIMESTAMP_MS = (2**63 - 1) // _NS_PER_MS
#: The largest scaled integer an amount, price or quantity may be: the journal's msgpack frames
#: carry signed 64-bit integers, so anything larger could not be journaled.
MAX_WIRE_INT = 2**63 - 1
#: The largest id a path or message may name (ids are 18 digits at most).
MAX_RESOURCE_ID = 10**18 - 1


class EdgeError(Exception):
    """An error a client sees: ``{"error": {"code", "message", "details"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, details: Optional[dict] = None,
                 headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: Optional[dict] = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _invalid(field: str, problem: str) -> EdgeError:
    return EdgeError(400, "VALIDATION_ERROR", f"{field}: {problem}", {"field": field, "problem": problem})


_STATUS = {
    RejectReason.UNKNOWN_ACCOUNT.value: 404, RejectReason.UNKNOWN_ORDER.value: 404,
    RejectReason.UNKNOWN_POSITION.value: 404, RejectReason.UNKNOWN_SYMBOL.value: 400,
    RejectReason.ORDER_NOT_PENDING.value: 409, RejectReason.ACCOUNT_EXISTS.value: 409,
    RejectReason.INVALID_COMMAND.value: 400, RejectReason.UNKNOWN_ALERT.value: 404,
    RejectReason.TOO_MANY_ALERTS.value: 409,
}


def status_for(reason: str) -> int:
    """HTTP status of a core reject reason: 404 unknown ids, 409 conflicts, 422 business rules."""
    return _STATUS.get(reason, 422)


def not_found_details(resource: str, identifier: Any) -> dict[str, str]:
    """The ``details`` of every 404 that names a resource: ``{"resource", "id"}``."""
    return {"resource": resource, "id": str(identifier)}


_RESOURCE_OF = {RejectReason.UNKNOWN_ORDER.value: "order", RejectReason.UNKNOWN_POSITION.value: "position",
                RejectReason.UNKNOWN_ALERT.value: "alert"}


def rejection_of(events: list) -> Optional[EdgeError]:
    """The :class:`EdgeError` for a reply that is a rejection, else ``None``."""
    for event in events:
        if type(event) in (OrderRejected, CommandRejected):
            details = {"reason": event.reason}
            if type(event) is CommandRejected and event.ref is not None:
                details["ref"] = str(event.ref)
                if event.reason in _RESOURCE_OF:
                    details.update(not_found_details(_RESOURCE_OF[event.reason], event.ref))
            if event.reason == RejectReason.UNKNOWN_ACCOUNT.value and event.account_id is not None:
                details.update(not_found_details("account", event.account_id))
            return EdgeError(status_for(event.reason), event.reason, event.message, details)
    return None


def duplicate_of(events: list) -> Optional[DuplicateCommand]:
    for event in events:
        if type(event) is DuplicateCommand:
            return event
    return None


# ------------------------------------------------------------------------------ JSON bodies

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON (numbers must be finite)")


def parse_json_body(raw: bytes | str) -> Any:
    """Decode a request body exactly: JSON numbers with a fraction or exponent become
    :class:`~decimal.Decimal` (never ``float``), integers ``int``; ``NaN``/``Infinity``, invalid
    UTF-8, bad syntax and absurd nesting are a 400 ``MALFORMED_JSON``."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        details: dict[str, Any] = {"problem": problem}
        if isinstance(exc, json.JSONDecodeError):
            details.update(line=exc.lineno, column=exc.colno)
        raise EdgeError(400, "MALFORMED_JSON", f"the request body is not valid JSON: {problem}",
                        details) from None


# ------------------------------------------------------------------------------ field parsing

def _check_fields(body: Any, allowed: Iterable[str], required: Iterable[str] = ()) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    allowed = set(allowed)
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _invalid(unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for name in required:
        if body.get(name) is None:
            raise _invalid(name, "is required")
    return body


@overload
def _decimal(body: Mapping[str, Any], name: str, decimals: int, *, optional: Literal[False] = False,
             allow_zero: bool = False) -> int: ...
@overload
def _decimal(body: Mapping[str, Any], name: str, decimals: int, *, optional: Literal[True],
             allow_zero: bool = False) -> Optional[int]: ...
def _decimal(body: Mapping[str, Any], name: str, decimals: int, *, optional: bool = False,
             allow_zero: bool = False) -> Optional[int]:
    value = body.get(name)
    if value is None:
        if optional:
            return None
        raise _invalid(name, "is required")
    if isinstance(value, float):
        raise _invalid(name, "must be a decimal string or exact number")
    try:
        scaled = parse_fixed(value, decimals, field=name, allow_zero=allow_zero)
    except InvalidValue as exc:
        raise _invalid(name, exc.problem) from None
    if scaled > MAX_WIRE_INT:
        raise _invalid(name, f"{value!r} is out of range" if isinstance(value, str) else f"{value} is out of range")
    return scaled


@overload
def _integer(body: Mapping[str, Any], name: str, low: int, high: int, *,
             optional: Literal[False] = False) -> int: ...
@overload
def _integer(body: Mapping[str, Any], name: str, low: int, high: int, *, optional: bool) -> Optional[int]: ...
def _integer(body: Mapping[str, Any], name: str, low: int, high: int, *, optional: bool = False) -> Optional[int]:
    value = body.get(name)
    if value is None:
        if optional:
            return None
        raise _invalid(name, "is required")
    try:
        return parse_integer(value, low, high, field=name)
    except InvalidValue as exc:
        raise _invalid(name, exc.problem) from None


def _choice(body: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name)
    if value is None:
        raise _invalid(name, "is required")
    if value not in choices:
        raise _invalid(name, f"must be one of {', '.join(choices)}")
    return value


def _text(body: Mapping[str, Any], name: str, max_length: int) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if len(value) > max_length:
        raise _invalid(name, f"must be at most {max_length} characters")
    if not value.isprintable():
        raise _invalid(name, "must be printable text")
    return value


def ms_to_ns(value: int) -> int:
    return value * _NS_PER_MS


def ns_to_ms(value: Optional[int]) -> Optional[int]:
    return None if value is None else value // _NS_PER_MS


def _timestamp(body: Mapping[str, Any], name: str, *, optional: bool = True) -> Optional[int]:
    value = _integer(body, name, 1, MAX_TIMESTAMP_MS, optional=optional)
    return None if value is None else ms_to_ns(value)


def _instrument(body: Mapping[str, Any], instruments: Mapping[str, Instrument]) -> Instrument:
    symbol = body.get("symbol")
    if symbol is None:
        raise _invalid("symbol", "is required")
    if not isinstance(symbol, str):
        raise _invalid("symbol", "must be a string")
    instrument = instruments.get(symbol.upper())
    if instrument is None:
        raise EdgeError(400, RejectReason.UNKNOWN_SYMBOL.value, f"unknown symbol {symbol!r}",
                        {"field": "symbol", "known": sorted(instruments)})
    return instrument


# ------------------------------------------------------------------------------ commands

_ORDER_FIELDS = ("symbol", "side", "type", "margin", "leverage", "price", "take_profit", "stop_loss",
                 "trailing_stop", "slippage_bps", "expected_price", "expires_at", "client_order_id")


def parse_place_order(body: Any, account_id: int, instruments: Mapping[str, Instrument]) -> PlaceOrder:
    body = _check_fields(body, _ORDER_FIELDS, ("symbol", "side", "type", "margin", "leverage"))
    instrument = _instrument(body, instruments)
    pd = instrument.price_decimals
    side = _choice(body, "side", ("buy", "sell"))
    order_type = _choice(body, "type", ("market", "limit", "stop"))
    price = _decimal(body, "price", pd, optional=True)
    if order_type != "market" and price is None:
        raise _invalid("price", f"is required for a {order_type} order")
    if order_type == "market" and price is not None:
        raise _invalid("price", "is not allowed on a market order (use expected_price with slippage_bps)")
    slippage = _integer(body, "slippage_bps", 0, 9_999, optional=True)
    expected = _decimal(body, "expected_price", pd, optional=True)
    if (slippage is None) != (expected is None):
        raise _invalid("slippage_bps" if slippage is None else "expected_price",
                       "slippage_bps and expected_price go together")
    return PlaceOrder(
        account_id=AccountId(account_id), symbol=instrument.symbol, side=side, type=order_type,
        margin=_decimal(body, "margin", 2),
        leverage=_integer(body, "leverage", 1, instrument.max_leverage),
        price=price,
        take_profit=_decimal(body, "take_profit", pd, optional=True),
        stop_loss=_decimal(body, "stop_loss", pd, optional=True),
        trailing_stop=_decimal(body, "trailing_stop", pd, optional=True),
        slippage_bps=slippage, expected_price=expected,
        expires_at=_timestamp(body, "expires_at"),
        client_order_id=ClientOrderId(_text(body, "client_order_id", MAX_CLIENT_ID)))


def _clearable(body: Mapping[str, Any], name: str, decimals: int) -> Optional[int]:
    """``absent`` → None (unchanged); ``null`` → 0 (remove); a value → the value."""
    if name not in body:
        return None
    if body[name] is None:
        return 0
    return _decimal(body, name, decimals)


def parse_modify_order(body: Any, account_id: int, order_id: int, instrument: Instrument) -> ModifyOrder:
    body = _check_fields(body, ("price", "take_profit", "stop_loss", "expires_at"))
    if not body:
        raise EdgeError(400, "VALIDATION_ERROR", "nothing to modify: give price, take_profit, stop_loss or expires_at", {})
    pd = instrument.price_decimals
    if "price" in body and body["price"] is None:
        raise _invalid("price", "cannot be removed from a pending order")
    expires = None
    if "expires_at" in body:
        expires = 0 if body["expires_at"] is None else _timestamp(body, "expires_at", optional=False)
    return ModifyOrder(account_id=AccountId(account_id), order_id=OrderId(order_id),
                       price=_decimal(body, "price", pd, optional=True),
                       take_profit=_clearable(body, "take_profit", pd),
                       stop_loss=_clearable(body, "stop_loss", pd), expires_at=expires)


def parse_close(body: Any, account_id: int, position_id: int, instrument: Instrument) -> ClosePosition:
    """``body`` None (no body at all) closes the whole position, like ``{}``."""
    body = _check_fields({} if body is None else body, ("qty",))
    return ClosePosition(account_id=AccountId(account_id), position_id=PositionId(position_id),
                         qty=_decimal(body, "qty", instrument.qty_decimals, optional=True))


def parse_modify_position(body: Any, account_id: int, position_id: int, instrument: Instrument) -> ModifyPosition:
    body = _check_fields(body, ("take_profit", "stop_loss", "trailing_stop"))
    if not body:
        raise EdgeError(400, "VALIDATION_ERROR", "nothing to modify: give take_profit, stop_loss or trailing_stop", {})
    pd = instrument.price_decimals
    return ModifyPosition(account_id=AccountId(account_id), position_id=PositionId(position_id),
                          take_profit=_clearable(body, "take_profit", pd),
                          stop_loss=_clearable(body, "stop_loss", pd),
                          trailing_stop=_clearable(body, "trailing_stop", pd))


def parse_add_margin(body: Any, account_id: int, position_id: int) -> AddMargin:
    body = _check_fields(body, ("amount",), ("amount",))
    return AddMargin(account_id=AccountId(account_id), position_id=PositionId(position_id),
                     amount=_decimal(body, "amount", 2))


def parse_funding(body: Any, account_id: int, *, deposit: bool) -> Deposit | Withdraw:
    body = _check_fields(body, ("amount", "idempotency_key"), ("amount",))
    cls = Deposit if deposit else Withdraw
    return cls(account_id=AccountId(account_id), amount=_decimal(body, "amount", 2),
               idempotency_key=_text(body, "idempotency_key", MAX_CLIENT_ID))


# ------------------------------------------------------------------------------ issue 13

#: The body fields of ``PATCH /api/v1/admin/instruments/{symbol}``: the names ``config.toml``
#: and ``GET /api/v1/instruments`` use, at their decimal scales.
INSTRUMENT_PATCH_FIELDS = ("spread_bps", "max_leverage", "min_qty", "maintenance_ratio", "commission_bps",
                           "swap_long_bps", "swap_short_bps")
_FEE_CORE_FIELDS = {"commission_bps": "commission_ppm", "swap_long_bps": "swap_long_ppm",
                    "swap_short_bps": "swap_short_ppm"}
_PPM = 1_000_000


def _fee_ppm(body: Mapping[str, Any], name: str, *, signed: bool) -> Optional[int]:
    """A fee in basis points (two decimals: 0.01 bps = 1 ppm) as ppm; ``null`` → None (reset)."""
    value = body[name]
    if value is None:
        return None
    if isinstance(value, float):
        raise _invalid(name, "must be a decimal string or exact number")
    try:
        ppm = parse_fixed(value, 2, field=name, allow_zero=True, allow_negative=signed)
    except InvalidValue as exc:
        raise _invalid(name, exc.problem) from None
    if not -_PPM < ppm < _PPM:
        raise _invalid(name, "must be below 10000 bps (100 % of notional)")
    return ppm


def parse_instrument_patch(body: Any, instrument: Instrument) -> list[list[Any]]:
    """An operator's instrument change → ``UpdateInstrument.changes`` (``[[core field, value], …]``
    with integers at the core's scale), in the order of :data:`INSTRUMENT_PATCH_FIELDS`.

    ``spread_bps`` (0..9999) and ``max_leverage`` (1..1000) are integers; ``min_qty`` a quantity
    at the instrument's scale; ``maintenance_ratio`` a ratio below 1 with up to 4 decimals;
    ``commission_bps`` (≥ 0) and ``swap_long_bps``/``swap_short_bps`` (signed, per day) fee
    overrides for cross accounts in bps with up to 2 decimals, ``null`` going back to the account
    types' rates. Bad input is a 400 ``VALIDATION_ERROR`` naming the field."""
    body = _check_fields(body, INSTRUMENT_PATCH_FIELDS)
    if not body:
        raise EdgeError(400, "VALIDATION_ERROR", f"nothing to change: give one of {', '.join(INSTRUMENT_PATCH_FIELDS)}", {})
    changes: list[list[Any]] = []
    for name in INSTRUMENT_PATCH_FIELDS:
        if name not in body:
            continue
        if name in _FEE_CORE_FIELDS:
            changes.append([_FEE_CORE_FIELDS[name], _fee_ppm(body, name, signed=name != "commission_bps")])
            continue
        if body[name] is None:
            raise _invalid(name, "cannot be removed (give a value)")
        if name == "spread_bps":
            changes.append(["spread_bps", _integer(body, name, 0, 9_999)])
        elif name == "max_leverage":
            changes.append(["max_leverage", _integer(body, name, 1, 1_000)])
        elif name == "min_qty":
            changes.append(["min_qty", _decimal(body, name, instrument.qty_decimals)])
        else:
            ratio = _decimal(body, name, 4, allow_zero=True)
            if ratio >= 10_000:
                raise _invalid(name, "must be below 1")
            changes.append(["maintenance_bps", ratio])
    return changes


#: The body fields of ``POST /api/v1/alerts``.
ALERT_FIELDS = ("symbol", "condition", "price", "note", "expires_at", "client_alert_id")


def parse_place_alert(body: Any, account_id: int, instruments: Mapping[str, Instrument]) -> PlaceAlert:
    """``POST /api/v1/alerts`` → :class:`PlaceAlert` (the price at the instrument's scale)."""
    body = _check_fields(body, ALERT_FIELDS, ("symbol", "condition", "price"))
    instrument = _instrument(body, instruments)
    return PlaceAlert(account_id=AccountId(account_id), symbol=instrument.symbol,
                      condition=_choice(body, "condition", ("above", "below")),
                      price=_decimal(body, "price", instrument.price_decimals),
                      note=_text(body, "note", MAX_ALERT_NOTE), expires_at=_timestamp(body, "expires_at"),
                      client_alert_id=_text(body, "client_alert_id", MAX_CLIENT_ID))


#: The longest dead-man timeout, in seconds (one day).
MAX_DEAD_MAN_S = 86_400


def parse_cancel_all_after(body: Any, account_id: int) -> CancelAllAfter:
    """``POST /api/v1/orders/cancel-all-after {timeout_s}`` (whole seconds; 0 disarms)."""
    body = _check_fields(body, ("timeout_s",), ("timeout_s",))
    timeout_s = _integer(body, "timeout_s", 0, MAX_DEAD_MAN_S)
    return CancelAllAfter(account_id=AccountId(account_id), timeout_ns=timeout_s * 10**9)


def alert_json(alert: Alert, instrument: Instrument) -> dict:
    return {"id": str(alert.id), "symbol": alert.symbol, "condition": alert.condition,
            "price": _price(alert.price, instrument), "note": alert.note or None,
            "expires_at": ns_to_ms(alert.expires_at), "client_alert_id": alert.client_alert_id or None,
            "created_at": ns_to_ms(alert.created_at)}


def alert_placed_json(event: AlertPlaced, instrument: Instrument) -> dict:
    return {"id": str(event.alert_id), "symbol": event.symbol, "condition": event.condition,
            "price": _price(event.price, instrument), "note": event.note or None,
            "expires_at": ns_to_ms(event.expires_at), "client_alert_id": event.client_alert_id or None,
            "created_at": ns_to_ms(event.ts)}


def parse_path_id(value: str, name: str) -> int:
    """A resource id from the URL: a positive integer, else 404 (never 500)."""
    try:
        return parse_integer_text(value, 1, MAX_RESOURCE_ID, field=f"{name}_id")
    except InvalidValue:
        raise EdgeError(404, f"UNKNOWN_{name.upper()}", f"no {name} {value[:64]!r}",
                        {"field": f"{name}_id", **not_found_details(name, value[:64])}) from None


def parse_order_id(value: str) -> OrderId:
    """An order id from the URL (404 UNKNOWN_ORDER when it cannot be one)."""
    return OrderId(parse_path_id(value, "order"))


def parse_position_id(value: str) -> PositionId:
    """A position id from the URL (404 UNKNOWN_POSITION when it cannot be one)."""
    return PositionId(parse_path_id(value, "position"))


def parse_alert_id(value: str) -> int:
    """An alert id from the URL (404 UNKNOWN_ALERT when it cannot be one)."""
    return parse_path_id(value, "alert")


def parse_message_id(value: Any, field: str) -> int:
    """An id named in a WebSocket message: a positive JSON integer or its ASCII digits."""
    try:
        if isinstance(value, str):
            return parse_integer_text(value, 1, MAX_RESOURCE_ID, field=field)
        if isinstance(value, int):
            return parse_integer(value, 1, MAX_RESOURCE_ID, field=field)
    except InvalidValue:
        pass
    raise _invalid(field, "must be a positive integer id (a string like \"42\" or a number)")


# ------------------------------------------------------------------------------ responses

def _price(value: Optional[int], instrument: Instrument) -> Optional[str]:
    return None if value is None else format_fixed(value, instrument.price_decimals)


def money(value: Optional[int]) -> Optional[str]:
    return None if value is None else format_fixed(value, 2)


def order_json(order: Order, instrument: Instrument, status: str = "pending") -> dict:
    return {
        "id": str(order.id), "symbol": order.symbol, "side": order.side, "type": order.type,
        "status": status, "price": _price(order.price, instrument), "margin": money(order.margin),
        "leverage": order.leverage, "qty": format_fixed(order.qty, instrument.qty_decimals),
        "take_profit": _price(order.take_profit, instrument),
        "stop_loss": _price(order.stop_loss, instrument),
        "trailing_stop": _price(order.trailing_stop, instrument),
        "expires_at": ns_to_ms(order.expires_at), "client_order_id": order.client_order_id or None,
        "created_at": ns_to_ms(order.created_at),
    }


def position_json(position: Position, engine: Engine) -> dict:
    instrument = engine.instruments[position.symbol]
    return {
        "id": str(position.id), "symbol": position.symbol, "side": position.side,
        "qty": format_fixed(position.qty, instrument.qty_decimals),
        "open_price": _price(position.open_price, instrument), "margin": money(position.margin),
        "leverage": position.leverage,
        "liquidation_price": _price(max(position.liquidation_price, 0), instrument),
        "take_profit": _price(position.take_profit, instrument),
        "stop_loss": _price(position.stop_loss, instrument),
        "trailing_stop": _price(position.trailing_stop, instrument),
        "trailing_stop_price": _price(engine.trailing_level(position), instrument),
        "unrealized_pnl": money(engine.unrealized_pnl(position)),
        "opened_at": ns_to_ms(position.opened_at), "order_id": str(position.order_id),
        "commission": money(position.commission), "swap": money(position.swap),
    }


def _level_percent(level: Optional[int]) -> Optional[str]:
    """An account type's margin-call or stop-out level (integer percent) as ``"60.00"``."""
    return None if level is None else format_fixed(level * 100, 2)


def account_json(summary: Mapping[str, Any]) -> dict:
    """The account summary of :meth:`~exness_actors.engine.Engine.account_summary`. An account
    made without a type (before account types existed) is margined exactly as the ``isolated``
    type, and is named so."""
    level = summary["margin_level"]
    margin_level = None
    if level is not None:
        equity, locked = level
        margin_level = format_fixed(equity * 10_000 // locked, 2)   # percent, 2 decimals, floored
    return {
        "balance": money(summary["balance"]), "locked": money(summary["locked"]),
        "used_margin": money(summary["locked"]),
        "equity": money(summary["equity"]), "free_margin": money(summary["free_margin"]),
        "margin_level": margin_level, "unrealized_pnl": money(summary["unrealized_pnl"]),
        "currency": "USD", "account_type": summary["account_type"] or "isolated",
        "margin_mode": summary["margin_mode"],
        "margin_call_level": _level_percent(summary["margin_call_level"]),
        "stop_out_level": _level_percent(summary["stop_out_level"]),
        "in_margin_call": bool(summary["in_margin_call"]),
    }


def margin_level_text(equity: int, used_margin: int) -> Optional[str]:
    """Equity / used margin as a percentage with 2 decimals, floored (None with no used margin)."""
    if not used_margin:
        return None
    return format_fixed(equity * 10_000 // used_margin, 2)


def _percent(level: Optional[int]) -> Optional[str]:
    return None if level is None else format_fixed(level * 100, 2)


def account_summary_event_json(summary: Mapping[str, Any], ts: int) -> dict:
    """The WebSocket ``account_summary`` of :meth:`~exness_actors.engine.Engine.account_summary`:
    balance, equity, used and free margin, margin level (null with no used margin) and the
    account type's levels (percent; null for an isolated account), at engine time ``ts``."""
    return {
        "event": "account_summary", "balance": money(summary["balance"]),
        "equity": money(summary["equity"]), "used_margin": money(summary["locked"]),
        "free_margin": money(summary["free_margin"]),
        "margin_level": margin_level_text(summary["equity"], summary["locked"]),
        "unrealized_pnl": money(summary["unrealized_pnl"]), "currency": "USD",
        "account_type": summary["account_type"], "margin_mode": summary["margin_mode"],
        "margin_call_level": _percent(summary["margin_call_level"]),
        "stop_out_level": _percent(summary["stop_out_level"]),
        "in_margin_call": bool(summary["in_margin_call"]), "ts": ns_to_ms(ts),
    }


def quote_json(symbol: str, quote: tuple[int, int, int], instrument: Instrument) -> dict:
    bid, ask, ts = quote
    return {"symbol": symbol, "bid": _price(bid, instrument), "ask": _price(ask, instrument),
            "ts": ns_to_ms(ts)}


def instrument_json(instrument: Instrument) -> dict:
    return {
        "symbol": instrument.symbol, "price_decimals": instrument.price_decimals,
        "qty_decimals": instrument.qty_decimals, "max_leverage": instrument.max_leverage,
        "spread_bps": instrument.spread_bps,
        "min_qty": format_fixed(instrument.min_qty, instrument.qty_decimals),
        "maintenance_ratio": format_fixed(instrument.maintenance_bps, 4),
    }


# ------------------------------------------------------------------------------ history and events
#
# Every rendering of an order has the same keys: order_json's, plus ``fill_price``,
# ``position_id`` and ``cancel_reason`` (null while they do not apply).

def _order_extras(fill_price: Optional[int], position_id: Optional[int],
                  cancel_reason: Optional[str], instrument: Instrument) -> dict:
    return {"fill_price": _price(fill_price, instrument),
            "position_id": None if position_id is None else str(position_id),
            "cancel_reason": cancel_reason}


def pending_order_json(order: Order, instrument: Instrument) -> dict:
    """A pending order held by the engine (:func:`order_json` with the history keys)."""
    out = order_json(order, instrument, "pending")
    out.update(_order_extras(None, None, None, instrument))
    return out


def order_accepted_json(event: OrderAccepted, instrument: Instrument,
                        position_id: Optional[int] = None) -> dict:
    """An order as its :class:`OrderAccepted` event describes it (a market order is born filled)."""
    filled = event.status == "filled"
    out = {
        "id": str(event.order_id), "symbol": event.symbol, "side": event.side, "type": event.type,
        "status": event.status, "price": _price(event.price, instrument),
        "margin": money(event.margin), "leverage": event.leverage,
        "qty": format_fixed(event.qty, instrument.qty_decimals),
        "take_profit": _price(event.take_profit, instrument),
        "stop_loss": _price(event.stop_loss, instrument),
        "trailing_stop": _price(event.trailing_stop, instrument),
        "expires_at": ns_to_ms(event.expires_at), "client_order_id": event.client_order_id or None,
        "created_at": ns_to_ms(event.ts),
    }
    out.update(_order_extras(event.price if filled else None, position_id, None, instrument))
    return out


def order_record_json(record: Any, instrument: Instrument) -> dict:
    """An order from the store's history (:class:`actors.store.base.OrderRecord`)."""
    out = {
        "id": str(record.order_id), "symbol": record.symbol, "side": record.side,
        "type": record.type, "status": record.status, "price": _price(record.price, instrument),
        "margin": money(record.margin), "leverage": record.leverage,
        "qty": format_fixed(record.qty, instrument.qty_decimals),
        "take_profit": _price(record.take_profit, instrument),
        "stop_loss": _price(record.stop_loss, instrument),
        "trailing_stop": _price(record.trailing_stop, instrument),
        "expires_at": ns_to_ms(record.expires_at),
        "client_order_id": record.client_order_id or None,
        "created_at": ns_to_ms(record.created_at),
    }
    out.update(_order_extras(record.fill_price, record.position_id, record.cancel_reason, instrument))
    return out


def position_opened_json(event: PositionOpened, instrument: Instrument) -> dict:
    """A position as its :class:`PositionOpened` event describes it: :func:`position_json`'s
    keys, with ``unrealized_pnl`` and ``trailing_stop_price`` null (they need the live quote)."""
    return {
        "id": str(event.position_id), "symbol": event.symbol, "side": event.side,
        "qty": format_fixed(event.qty, instrument.qty_decimals),
        "open_price": _price(event.open_price, instrument), "margin": money(event.margin),
        "leverage": event.leverage,
        "liquidation_price": _price(max(event.liquidation_price, 0), instrument),
        "take_profit": _price(event.take_profit, instrument),
        "stop_loss": _price(event.stop_loss, instrument),
        "trailing_stop": _price(event.trailing_stop, instrument),
        "trailing_stop_price": None, "unrealized_pnl": None,
        "opened_at": ns_to_ms(event.ts), "order_id": str(event.order_id),
    }


def position_closed_json(event: PositionClosed, instrument: Instrument) -> dict:
    """The closed part of a position (a close, partial close, TP/SL, liquidation)."""
    return {
        "position_id": str(event.position_id), "symbol": event.symbol, "side": event.side,
        "close_reason": event.reason, "close_price": _price(event.price, instrument),
        "qty": format_fixed(event.qty, instrument.qty_decimals),
        "remaining_qty": format_fixed(event.remaining_qty, instrument.qty_decimals),
        "open_price": _price(event.open_price, instrument), "margin": money(event.margin),
        "pnl": money(event.pnl), "credit": money(event.credit), "closed_at": ns_to_ms(event.ts),
    }


def closed_position_json(record: Any, instrument: Instrument) -> dict:
    """One row of the trade history (:class:`actors.store.base.ClosedPosition`)."""
    return {
        "position_id": str(record.position_id), "symbol": record.symbol, "side": record.side,
        "close_reason": record.reason, "close_price": _price(record.close_price, instrument),
        "qty": format_fixed(record.qty, instrument.qty_decimals),
        "remaining_qty": format_fixed(record.remaining_qty, instrument.qty_decimals),
        "open_price": _price(record.open_price, instrument), "margin": money(record.margin),
        "pnl": money(record.pnl), "credit": money(record.credit), "leverage": record.leverage,
        "opened_at": ns_to_ms(record.opened_at), "closed_at": ns_to_ms(record.closed_at),
        "commission": money(record.commission), "swap": money(record.swap),
    }


def ledger_entry_json(entry: Any) -> dict:
    """One ledger line (:class:`actors.store.base.LedgerEntry`): how free and locked moved."""
    return {
        "id": f"{entry.seq}-{entry.index}", "kind": entry.kind,
        "free_delta": money(entry.free_delta), "locked_delta": money(entry.locked_delta),
        "free": money(entry.free), "locked": money(entry.locked),
        "balance": money(entry.free + entry.locked), "ref": entry.ref or None,
        "ts": ns_to_ms(entry.ts),
    }


def candle_json(candle: Any, instrument: Instrument) -> dict:
    """``{ts, open, high, low, close, volume}``: prices as decimal strings, ``volume`` the tick
    count (an integer), ``ts`` the open time in ms."""
    return {
        "ts": ns_to_ms(candle.open_time), "open": _price(candle.open, instrument),
        "high": _price(candle.high, instrument), "low": _price(candle.low, instrument),
        "close": _price(candle.close, instrument), "volume": candle.volume,
    }
