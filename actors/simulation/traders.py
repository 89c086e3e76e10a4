"""Simulated traders: seeded clients of the HTTP API, run by ``exness-actors simulate``.

Theory of operation
-------------------
Each trader is one trio task with its own ``random.Random`` (seeded from the simulation seed
and its index). It signs up and in, then acts every ``interval_s`` on average (exponential
gaps on trio's mock clock): market, limit and stop orders with take-profit, stop-loss and
trailing stops; cancels and modifications; full and partial closes; added margin; deposits and
withdrawals; reads; token refreshes (sometimes reusing a spent refresh token); malformed or
invalid requests; and repeats of earlier ``client_order_id``\\ s.

**Account types** (issue 16): traders take turns being ``isolated`` (the account sign-up opens,
untyped), ``standard`` and ``raw_spread`` (cross margin; raw_spread pays commission and swaps).
A cross trader opens its typed account after its first sign-in (``POST /api/v1/accounts``,
or finds it in ``GET /api/v1/accounts`` after a crash cut the answer off), switches to it
(``POST /api/v1/auth/switch``) and trades there; later sign-ins name it (``account_id``). Cross traders also go **all in** now and then (a market order
whose margin is most of their free margin, at the instrument's top leverage), so that price moves
bring margin calls and stop-outs; adding margin to a cross position is a deliberate mistake
(a 4xx is expected).

Requests go through the gateway app's **test client** (``app.test_client()``): routing, the
before/after hooks, authentication, exact JSON parsing, the error handlers and the engine round
trips are the code that serves real sockets, only hypercorn and the socket are left out (they
would bring real I/O, whose timing the mock clock cannot control).

What every answer is checked against (a miss is a violation, see ``World.violation``):

* never a 5xx, except 503 ``OVERLOADED``/``ENGINE_STOPPED`` (load shedding, counted);
* a deliberately invalid request gets a 4xx, never a 2xx; a well-formed one never a 400;
* idempotency: a repeated ``client_order_id`` answers the order it first created (or its first
  rejection, unless that was transient — no or stale quote, halt — and the repeat is applied
  afresh) and creates nothing; a request cut off by a crash and retried after recovery answers
  the outcome the engine had acknowledged before the crash, if it had.

The trader's state (ids, tokens, pending retry, the random generator) outlives crashes: after a
recovery the world starts :meth:`Trader.run` again and it carries on where it was.
"""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Callable, Optional

import trio

from quart_trio.testing import TrioClient
from quart_trio.testing.connections import TestHTTPConnection

from actors.engine.messages import EngineStopped, Overloaded
from actors.simulation.runtime import seeded_random, simulated_ns
from exness_actors.commands import AccountId, OpenAccount
from exness_actors.engine import TRANSIENT_REASONS
from exness_actors.events import AccountOpened, CommandRejected
from exness_actors.reasons import RejectReason

__all__ = ["Trader", "ACTIONS", "CROSS_ACTIONS", "ACCOUNT_MIX", "test_client"]

API = "/api/v1"
_MISSING = object()

#: (action, weight): how often each kind of step is chosen.
ACTIONS: tuple[tuple[str, int], ...] = (
    ("market_order", 22),
    ("pending_order", 12),
    ("cancel_order", 5),
    ("modify_order", 4),
    ("close_position", 8),
    ("partial_close", 4),
    ("modify_position", 5),
    ("add_margin", 3),
    ("deposit", 3),
    ("withdraw", 3),
    ("repeat_order", 5),
    ("invalid_request", 10),
    ("read", 10),
    ("refresh_token", 2),
)
#: a cross trader's steps: the same, plus going all in
CROSS_ACTIONS: tuple[tuple[str, int], ...] = ACTIONS + (("all_in", 6),)
_ACTION_NAMES = tuple(name for name, _ in ACTIONS)
_ACTION_WEIGHTS = tuple(weight for _, weight in ACTIONS)
_CROSS_NAMES = tuple(name for name, _ in CROSS_ACTIONS)
_CROSS_WEIGHTS = tuple(weight for _, weight in CROSS_ACTIONS)

#: trader ``i`` trades on an account of type ``ACCOUNT_MIX[(i - 1) % 3]`` ("isolated": the
#: untyped account sign-up opens)
ACCOUNT_MIX = ("isolated", "standard", "raw_spread")

_LEVERAGES = (1, 2, 5, 10, 20, 50, 100)
_MARGINS = (5, 10, 20, 50, 100, 250)
_REPEATS_KEPT = 20


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _error_code(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", ""))
    return ""


class _CancelSafeConnection(TestHTTPConnection):
    """quart-trio's test connection, safe to cancel (a crash cancels requests in flight).

    Its ``__aexit__`` awaits ``disconnect()`` before closing the nursery it opened by hand; under
    cancellation that await raises first, the nursery is never closed and trio's nursery stack
    is corrupted. Here the disconnect is shielded (it only puts a message in a buffered channel).
    """

    async def __aexit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        if exc_type is not None:
            with trio.CancelScope(shield=True):
                await self.disconnect()
            await self._nursery_manager.__aexit__(exc_type, exc_value, tb)
            return
        await super().__aexit__(exc_type, exc_value, tb)   # type: ignore[arg-type]   # quart stubs want a type


class _CancelSafeClient(TrioClient):
    http_connection_class = _CancelSafeConnection


def test_client(app: Any) -> Any:
    """A test client of ``app`` whose requests can be cancelled (see :class:`_CancelSafeConnection`)."""
    return _CancelSafeClient(app)


class Trader:
    """One simulated client (see the module docstring). ``world`` records answers and
    violations and knows what the engine acknowledged (``world.acks``)."""

    def __init__(self, index: int, seed: int, world: Any, *, interval_s: float = 1.0) -> None:
        self.index = index
        self.world = world
        self.rng = seeded_random(seed, "trader", index)
        self.interval_s = interval_s
        self.email = f"trader{index}@simulation.example.com"
        self.password = f"simulated password {index}"
        self.client: Any = None
        self.account_id: Optional[int] = None
        self.user_id: Optional[int] = None
        self.account_type = ACCOUNT_MIX[(index - 1) % len(ACCOUNT_MIX)]
        #: a cross trader's typed account, once open (it trades there, not on the sign-up's)
        self.typed_account_id: Optional[int] = None
        self.auth: Optional[dict[str, str]] = None
        self.refresh_token: Optional[str] = None
        self.spent_refresh_tokens: list[str] = []
        #: a refresh was cut off by a crash: the store may have spent the token we still hold
        self.refresh_uncertain = False
        self.instruments: dict[str, dict] = {}
        self.next_at = self.rng.uniform(0.0, min(1.0, interval_s))
        self.counter = 0
        #: client_order_id -> ("order", id) | ("rejected", code), as first answered
        self.outcomes: dict[str, tuple[str, str]] = {}
        self.repeatable: list[tuple[str, dict]] = []
        self.funding_keys: list[str] = []
        #: a placement or deposit cut off by a crash: (kind, body), retried after recovery
        self.in_flight: Optional[tuple[str, dict]] = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, client: Any, end_at: float) -> None:
        """Act until ``end_at`` (simulated seconds) or until the world crashes the system."""
        self.client = client
        while self.auth is None:
            if not await self._sign_in():
                await trio.sleep(0.5)
        while self.account_type != "isolated" and self.typed_account_id is None:
            if not await self._open_typed_account():
                await trio.sleep(0.5)
        if self.in_flight is not None:
            await self._retry_in_flight()
        names, weights = (_ACTION_NAMES, _ACTION_WEIGHTS) if self.typed_account_id is None else (
            _CROSS_NAMES, _CROSS_WEIGHTS)
        while True:
            if self.next_at >= end_at:
                return
            await trio.sleep_until(self.next_at)
            action = self.rng.choices(names, weights)[0]
            self.next_at += self.rng.expovariate(1.0 / self.interval_s)
            await getattr(self, f"_{action}")()

    async def _sign_in(self) -> bool:
        status, body = await self.request("signup", "POST", f"{API}/auth/signup",
                                          json={"email": self.email, "password": self.password}, auth=False)
        if status not in (201, 409):
            return False
        credentials: dict[str, Any] = {"email": self.email, "password": self.password}
        if self.typed_account_id is not None:
            credentials["account_id"] = self.typed_account_id
        status, body = await self.request("signin", "POST", f"{API}/auth/signin", json=credentials, auth=False)
        if status != 200:
            return False
        self._take_tokens(body)
        if not self.instruments:
            status, listing = await self.request("read", "GET", f"{API}/instruments", auth=False)
            if status != 200:
                self.auth = None
                return False
            self.instruments = {item["symbol"]: item for item in listing["instruments"]}
        return True

    def _take_tokens(self, body: dict) -> None:
        self.auth = {"Authorization": f"Bearer {body['access_token']}"}
        self.refresh_token = body["refresh_token"]
        self.account_id = int(body["account_id"])
        self.user_id = int(body["user_id"])

    async def _open_typed_account(self) -> bool:
        """A cross trader's account of its type, opened once: after a crash cut the answer off,
        the account may exist, so the listing is read first. Then the tokens are switched to it."""
        status, listing = await self.request("read", "GET", f"{API}/accounts")
        if status != 200:
            return False
        mine = [int(item["account_id"]) for item in listing["accounts"] if item["account_type"] == self.account_type]
        if mine:
            account_id = mine[0]
        else:
            status, opened = await self.request("open_account", "POST", f"{API}/accounts",
                                                json={"type": self.account_type, "demo": True})
            if status != 201:
                return False
            account_id = int(opened["account_id"])
        status, body = await self.request("switch_account", "POST", f"{API}/auth/switch",
                                          json={"account_id": account_id})
        if status != 200:
            return False
        self.typed_account_id = account_id
        self._take_tokens(body)
        return True

    # ------------------------------------------------------------------ HTTP

    async def request(self, action: str, method: str, path: str, *, json: Any = _MISSING,
                      data: Optional[bytes] = None, content_type: str = "application/json",
                      auth: bool = True, headers: Optional[dict] = None,
                      invalid: bool = False) -> tuple[int, Any]:
        """One request through the app; records the answer and checks the rules every answer obeys."""
        sent = dict(self.auth or {}) if auth else {}
        if headers:
            sent.update(headers)
        options: dict[str, Any] = {}
        if json is not _MISSING:
            options["json"] = json
        if data is not None:
            options["data"] = data
            sent["Content-Type"] = content_type
        response = await self.client.open(path, method=method, headers=sent, **options)
        body = _json(await response.get_data())
        status = response.status_code
        code = _error_code(body)
        world = self.world
        world.record_http(action, status, code)
        where = f"trader {self.index}: {method} {path}"
        if status >= 500 and not (status == 503 and code in ("OVERLOADED", "ENGINE_STOPPED")):
            world.violation("http_5xx", f"{where} answered {status} {code or body!r}")
        elif invalid and status < 400:
            world.violation("invalid_request_accepted", f"{where} (deliberately invalid) answered {status}")
        elif not invalid and status == 400:
            world.violation("valid_request_refused", f"{where} answered 400 {code}: {body!r}")
        return status, body

    # ------------------------------------------------------------------ helpers

    def _now_ms(self) -> int:
        return simulated_ns() // 1_000_000

    def _symbol(self) -> str:
        return self.rng.choice(sorted(self.instruments))

    def _price_text(self, symbol: str, value: Decimal) -> str:
        step = Decimal(1).scaleb(-int(self.instruments[symbol]["price_decimals"]))
        return format(max(value.quantize(step, rounding=ROUND_HALF_UP), step), "f")

    def _moved(self, price: Decimal, low_bps: int, high_bps: int, *, up: bool) -> Decimal:
        bps = Decimal(self.rng.randint(low_bps, high_bps)) / 10_000
        return price * (1 + bps) if up else price * (1 - bps)

    def _margin_text(self) -> str:
        return format(Decimal(self.rng.choice(_MARGINS)) + Decimal(self.rng.randint(0, 99)) / 100, "f")

    def _leverage(self, symbol: str) -> int:
        top = int(self.instruments[symbol]["max_leverage"])
        return min(self.rng.choice(_LEVERAGES), top)

    async def _quotes(self) -> dict[str, tuple[Decimal, Decimal]]:
        status, body = await self.request("read", "GET", f"{API}/quotes", auth=False)
        if status != 200:
            return {}
        return {item["symbol"]: (Decimal(item["bid"]), Decimal(item["ask"]))
                for item in body["quotes"] if item["bid"] is not None}

    async def _listing(self, path: str, key: str) -> list[dict]:
        status, body = await self.request("read", "GET", path)
        return body[key] if status == 200 else []

    def _next_client_id(self) -> str:
        self.counter += 1
        return f"t{self.index}-{self.counter}"

    def _protection(self, body: dict, symbol: str, is_buy: bool, reference: Decimal) -> None:
        """Maybe add take-profit, stop-loss and a trailing stop around ``reference``."""
        rng = self.rng
        if rng.random() < 0.35:
            body["take_profit"] = self._price_text(symbol, self._moved(reference, 5, 150, up=is_buy))
        if rng.random() < 0.35:
            body["stop_loss"] = self._price_text(symbol, self._moved(reference, 5, 150, up=not is_buy))
        if rng.random() < 0.15:
            body["trailing_stop"] = self._price_text(symbol, reference * Decimal(rng.randint(3, 80)) / 10_000)

    # ------------------------------------------------------------------ orders

    async def _place(self, action: str, body: dict) -> tuple[int, Any]:
        coid = body.get("client_order_id")
        if coid:
            self.in_flight = ("order", body)
        status, answer = await self.request(action, "POST", f"{API}/orders", json=body)
        self.in_flight = None
        if coid and status in (200, 201, 404, 409, 422):
            outcome = ("order", answer["order"]["id"]) if status in (200, 201) else ("rejected", _error_code(answer))
            if status == 200:
                self.world.violation("idempotency", f"trader {self.index}: a fresh client_order_id {coid!r} "
                                                    f"answered 200 (a duplicate) with order {outcome[1]}")
            self.outcomes[coid] = outcome
            self.repeatable.append((coid, body))
            del self.repeatable[:-_REPEATS_KEPT]
        return status, answer

    async def _market_order(self) -> None:
        symbol = self._symbol()
        is_buy = self.rng.random() < 0.5
        body: dict[str, Any] = {"symbol": symbol, "side": "buy" if is_buy else "sell", "type": "market",
                                "margin": self._margin_text(), "leverage": self._leverage(symbol)}
        if self.rng.random() < 0.9:
            body["client_order_id"] = self._next_client_id()
        quotes = await self._quotes()
        if symbol in quotes:
            bid, ask = quotes[symbol]
            self._protection(body, symbol, is_buy, ask if is_buy else bid)
            if self.rng.random() < 0.1:
                body["expected_price"] = self._price_text(symbol, ask if is_buy else bid)
                body["slippage_bps"] = self.rng.randint(0, 20)
        await self._place("market_order", body)

    async def _pending_order(self) -> None:
        quotes = await self._quotes()
        if not quotes:
            return await self._market_order()
        symbol = self.rng.choice(sorted(quotes))
        bid, ask = quotes[symbol]
        is_buy = self.rng.random() < 0.5
        kind = self.rng.choice(("limit", "stop"))
        reference = ask if is_buy else bid
        # buy limit below the ask, buy stop above it; sell limit above the bid, sell stop below it
        up = (kind == "stop") == is_buy
        price = self._moved(reference, 2, 80, up=up)
        body: dict[str, Any] = {"symbol": symbol, "side": "buy" if is_buy else "sell", "type": kind,
                                "price": self._price_text(symbol, price), "margin": self._margin_text(),
                                "leverage": self._leverage(symbol), "client_order_id": self._next_client_id()}
        self._protection(body, symbol, is_buy, price)
        if self.rng.random() < 0.3:
            body["expires_at"] = self._now_ms() + self.rng.randint(2_000, 30_000)
        await self._place("pending_order", body)

    async def _repeat_order(self) -> None:
        if not self.repeatable:
            return await self._market_order()
        coid, body = self.rng.choice(self.repeatable)
        status, answer = await self.request("repeat_order", "POST", f"{API}/orders", json=body)
        if status == 503:
            return
        self._check_repeat(coid, self.outcomes.get(coid), status, answer, "a repeated")

    def _check_repeat(self, coid: str, expected: Optional[tuple[str, str]], status: int, answer: Any,
                      what: str) -> None:
        if expected is None:
            return
        kind, value = expected
        if kind == "rejected" and value in TRANSIENT_REASONS:
            self._tried_afresh(coid, status, answer)
            return
        if kind == "order":
            got = answer["order"]["id"] if status == 200 else f"{status} {_error_code(answer)}"
            if got != value:
                self.world.violation("idempotency", f"trader {self.index}: {what} client_order_id {coid!r} "
                                                    f"answered {got}, expected 200 with order {value}")
        elif status < 400 or _error_code(answer) != value:
            self.world.violation("idempotency", f"trader {self.index}: {what} client_order_id {coid!r} "
                                                f"answered {status} {_error_code(answer)}, expected the "
                                                f"original rejection {value}")

    def _tried_afresh(self, coid: str, status: int, answer: Any) -> None:
        """A transient rejection (no or stale quote, halt) is not what a repeat answers: the repeat
        was applied anew, and its outcome is what the next repeat must answer."""
        if status in (200, 201):
            self.outcomes[coid] = ("order", answer["order"]["id"])
        elif status in (404, 409, 422):
            self.outcomes[coid] = ("rejected", _error_code(answer))

    async def _retry_in_flight(self) -> None:
        """After a crash: send again what was cut off, with the same idempotency key."""
        assert self.in_flight is not None
        kind, body = self.in_flight
        self.in_flight = None
        if kind == "deposit":
            status, _ = await self.request("retry_after_crash", "POST", f"{API}/account/deposit", json=body)
            return
        coid = body["client_order_id"]
        # what the engine had acknowledged before the crash (looked up before the retry is)
        acknowledged = self.world.acks.orders.get((self.account_id, coid))
        status, answer = await self.request("retry_after_crash", "POST", f"{API}/orders", json=body)
        self.world.count("retries_after_crash", "duplicate" if status == 200 else str(status))
        if acknowledged is not None and status != 503:
            self._check_repeat(coid, acknowledged, status, answer, "a retried (acknowledged before the crash)")
        if status in (200, 201):
            self.outcomes.setdefault(coid, ("order", answer["order"]["id"]))
        elif status in (404, 409, 422):
            self.outcomes.setdefault(coid, ("rejected", _error_code(answer)))

    async def _cancel_order(self) -> None:
        orders = await self._listing(f"{API}/orders", "orders")
        if not orders:
            return await self._pending_order()
        order = self.rng.choice(orders)
        await self.request("cancel_order", "DELETE", f"{API}/orders/{order['id']}")

    async def _modify_order(self) -> None:
        orders = await self._listing(f"{API}/orders", "orders")
        if not orders:
            return await self._pending_order()
        order = self.rng.choice(orders)
        symbol = order["symbol"]
        roll = self.rng.random()
        body: dict[str, Any]
        if roll < 0.5:
            body = {"price": self._price_text(symbol, self._moved(Decimal(order["price"]), 1, 30,
                                                                  up=self.rng.random() < 0.5))}
        elif roll < 0.7:
            body = {"take_profit": None, "stop_loss": None}
        elif roll < 0.85:
            body = {"expires_at": self._now_ms() + self.rng.randint(1_000, 20_000)}
        else:
            body = {"expires_at": None}
        await self.request("modify_order", "PATCH", f"{API}/orders/{order['id']}", json=body)

    # ------------------------------------------------------------------ positions

    async def _position(self) -> Optional[dict]:
        positions = await self._listing(f"{API}/positions", "positions")
        return self.rng.choice(positions) if positions else None

    async def _close_position(self) -> None:
        position = await self._position()
        if position is None:
            return await self._market_order()
        await self.request("close_position", "POST", f"{API}/positions/{position['id']}/close",
                           json={} if self.rng.random() < 0.5 else _MISSING)   # {} or no body: close all

    async def _partial_close(self) -> None:
        position = await self._position()
        if position is None:
            return await self._market_order()
        symbol = position["symbol"]
        step = Decimal(1).scaleb(-int(self.instruments[symbol]["qty_decimals"]))
        qty = (Decimal(position["qty"]) * Decimal(self.rng.randint(10, 90)) / 100).quantize(step, rounding=ROUND_DOWN)
        body = {"qty": format(qty, "f")} if qty > 0 else {}
        await self.request("partial_close", "POST", f"{API}/positions/{position['id']}/close", json=body)

    async def _modify_position(self) -> None:
        position = await self._position()
        if position is None:
            return await self._market_order()
        symbol = position["symbol"]
        quotes = await self._quotes()
        if symbol not in quotes:
            return
        bid, ask = quotes[symbol]
        is_long = position["side"] == "buy"
        reference = bid if is_long else ask
        rng = self.rng
        body: dict[str, Any] = {}
        if rng.random() < 0.5:
            body["take_profit"] = None if rng.random() < 0.2 else \
                self._price_text(symbol, self._moved(reference, 5, 150, up=is_long))
        if rng.random() < 0.5:
            body["stop_loss"] = None if rng.random() < 0.2 else \
                self._price_text(symbol, self._moved(reference, 5, 150, up=not is_long))
        if not body or rng.random() < 0.3:
            body["trailing_stop"] = None if rng.random() < 0.2 else \
                self._price_text(symbol, reference * Decimal(rng.randint(3, 80)) / 10_000)
        await self.request("modify_position", "PATCH", f"{API}/positions/{position['id']}", json=body)

    async def _add_margin(self) -> None:
        position = await self._position()
        if position is None:
            return await self._market_order()
        amount = format(Decimal(self.rng.randint(100, 5_000)) / 100, "f")
        # a cross account's positions share its equity: adding margin to one is refused (4xx)
        await self.request("add_margin", "POST", f"{API}/positions/{position['id']}/margin", json={"amount": amount},
                           invalid=self.typed_account_id is not None)

    async def _all_in(self) -> None:
        """A cross trader bets most of its free margin at the top leverage: the next adverse
        move brings a margin call, a larger one a stop-out."""
        status, account = await self.request("read", "GET", f"{API}/account")
        if status != 200:
            return
        free_margin = Decimal(account["free_margin"])
        margin = (free_margin * Decimal(self.rng.randint(50, 95)) / 100).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        if margin < 1:
            return await self._deposit()
        symbol = self._symbol()
        body = {"symbol": symbol, "side": "buy" if self.rng.random() < 0.5 else "sell", "type": "market",
                "margin": format(margin, "f"), "leverage": int(self.instruments[symbol]["max_leverage"]),
                "client_order_id": self._next_client_id()}
        await self._place("all_in", body)

    # ------------------------------------------------------------------ funding

    async def _deposit(self) -> None:
        if self.funding_keys and self.rng.random() < 0.15:
            key = self.rng.choice(self.funding_keys)      # a repeat: changes nothing, answers 200
        else:
            self.counter += 1
            key = f"t{self.index}-f{self.counter}"
            self.funding_keys.append(key)
            del self.funding_keys[:-_REPEATS_KEPT]
        body = {"amount": format(Decimal(self.rng.randint(1_000, 50_000)) / 100, "f"), "idempotency_key": key}
        self.in_flight = ("deposit", body)
        await self.request("deposit", "POST", f"{API}/account/deposit", json=body)
        self.in_flight = None

    async def _withdraw(self) -> None:
        amount = "1000000.00" if self.rng.random() < 0.15 else format(Decimal(self.rng.randint(100, 30_000)) / 100, "f")
        await self.request("withdraw", "POST", f"{API}/account/withdraw", json={"amount": amount})

    # ------------------------------------------------------------------ reads and auth

    async def _read(self) -> None:
        rng = self.rng
        symbol = self._symbol()
        path = rng.choice((
            f"{API}/account", f"{API}/positions", f"{API}/orders", f"{API}/orders?status=all",
            f"{API}/history/positions", f"{API}/account/ledger?limit=20", f"{API}/quotes/{symbol}",
            f"{API}/candles?symbol={symbol}&interval=1m&limit=10", f"{API}/orders?status=filled",
        ))
        status, _ = await self.request("read", "GET", path)
        if status != 200 and status != 503:
            self.world.violation("read_failed", f"trader {self.index}: GET {path} answered {status}")

    async def _refresh_token(self) -> None:
        if self.spent_refresh_tokens and self.rng.random() < 0.2:
            # Reusing a spent refresh token revokes its whole family: sign in again afterwards.
            token = self.rng.choice(self.spent_refresh_tokens)
            status, body = await self.request("refresh_token_reuse", "POST", f"{API}/auth/refresh",
                                              json={"refresh_token": token}, auth=False, invalid=True)
            if status != 401:
                self.world.violation("auth", f"trader {self.index}: a spent refresh token answered {status}")
            self.spent_refresh_tokens.clear()
            status, body = await self.request("signin", "POST", f"{API}/auth/signin",
                                              json={"email": self.email, "password": self.password}, auth=False)
            if status == 200:
                self._take_tokens(body)
            return
        uncertain, self.refresh_uncertain = self.refresh_uncertain, True
        status, body = await self.request("refresh_token", "POST", f"{API}/auth/refresh",
                                          json={"refresh_token": self.refresh_token}, auth=False)
        self.refresh_uncertain = False
        if status == 200:
            assert self.refresh_token is not None
            self.spent_refresh_tokens.append(self.refresh_token)
            self._take_tokens(body)
            return
        if not (uncertain and status == 401):
            self.world.violation("auth", f"trader {self.index}: refreshing a fresh token answered {status}")
        status, body = await self.request("signin", "POST", f"{API}/auth/signin",
                                          json={"email": self.email, "password": self.password}, auth=False)
        if status == 200:
            self._take_tokens(body)

    # ------------------------------------------------------------------ invalid input

    async def _invalid_request(self) -> None:
        """One deliberately invalid request: it must get a clean 4xx."""
        case = self.rng.choice(_INVALID_CASES)
        method, path, options = case(self)
        await self.request("invalid_request", method, path, invalid=True, **options)


def _order_body(trader: Trader, **changes: Any) -> dict:
    body: dict[str, Any] = {"symbol": "BTCUSDT" if "BTCUSDT" in trader.instruments else trader._symbol(),
                            "side": "buy", "type": "market", "margin": "10.00", "leverage": 5}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not _MISSING}


_Case = Callable[[Trader], tuple[str, str, dict]]
_ORDERS = f"{API}/orders"

_INVALID_CASES: tuple[_Case, ...] = (
    lambda t: ("POST", _ORDERS, {"data": b'{"symbol": "BTCUSDT", "side": '}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, colour="red")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, margin="10.001")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, margin="-10")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, leverage=0)}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, leverage=100_000)}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, symbol="DOGEUSDT")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, side="hold")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, type="limit")}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, client_order_id="x" * 65)}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, margin=None)}),
    lambda t: ("POST", _ORDERS, {"data": b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", '
                                         b'"margin": 1e999, "leverage": 5}'}),
    lambda t: ("POST", _ORDERS, {"data": b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", '
                                         b'"margin": NaN, "leverage": 5}'}),
    lambda t: ("POST", _ORDERS, {"data": b"[1, 2, 3]"}),
    lambda t: ("POST", _ORDERS, {"data": b'{"symbol": "BTCUSDT"}', "content_type": "text/plain"}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t), "auth": False}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t), "auth": False,
                                 "headers": {"Authorization": "Bearer not.a.token"}}),
    lambda t: ("POST", _ORDERS, {"data": b'{"pad": "' + b"x" * 20_000 + b'"}'}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, type="limit", price="1.00",
                                                     expires_at=t._now_ms() - 60_000)}),
    lambda t: ("POST", _ORDERS, {"json": _order_body(t, take_profit="1.00")}),
    lambda t: ("DELETE", f"{_ORDERS}/999999999", {}),
    lambda t: ("DELETE", f"{_ORDERS}/not-a-number", {}),
    lambda t: ("PATCH", f"{_ORDERS}/999999999", {"json": {"price": "1.00"}}),
    lambda t: ("POST", f"{API}/positions/999999999/close", {"json": {}}),
    lambda t: ("PATCH", f"{API}/positions/999999999", {"json": {}}),
    lambda t: ("POST", f"{API}/positions/999999999/margin", {"json": {"amount": "abc"}}),
    lambda t: ("POST", f"{API}/account/deposit", {"json": {"amount": "0"}}),
    lambda t: ("POST", f"{API}/account/withdraw", {"json": {"amount": "5.5.5"}}),
    lambda t: ("GET", f"{API}/candles?symbol=BTCUSDT&interval=7m", {}),
    lambda t: ("GET", f"{API}/history/positions?limit=-3", {}),
    lambda t: ("POST", f"{API}/auth/signin", {"json": {"email": t.email, "password": "wrong password"},
                                              "auth": False}),
)
