"""Channels of the WebSocket server: names, per-channel sequence numbers and replay buffers.

Theory of operation
-------------------
A :class:`Channel` is one stream a client can subscribe to: ``quotes:SYMBOL``,
``candles:SYMBOL:INTERVAL`` or an account's private stream (``account`` on the wire, keyed by the
authenticated account id inside). The broadcaster numbers every message of a channel with the
channel's own ``seq`` (1, 2, 3, … with no gaps, independent of the engine's seq) and keeps the
last ``replay_size`` encoded messages in a ring buffer. A client that reconnects and subscribes
with ``since = N`` gets the messages ``N+1 …`` from the buffer, or a ``resync`` when they are no
longer there (:meth:`Channel.replay_after` returns None).

A message that cannot be replayed is never invented: when the server itself lost events (its
engine subscription lagged) it appends a ``resync`` marker to the affected channels — it takes a
seq like any message and is replayed like one — so a client resuming across the gap is told to
reload rather than silently missing something.

Account channels are created when a client first subscribes to them and kept after it leaves (so
it can resume), at most ``max_account_channels`` of them: the least recently used channel with no
subscriber is evicted first. Its seq is remembered (a small int per account) and a re-created
channel continues from there with an empty buffer, so a stale ``since`` gets a resync, never a
wrong replay.

Invariants: ``seq`` only grows; the replay buffer holds consecutive seqs ending at ``seq``;
``floor <= seq`` is the lowest ``since`` that can be served with an empty buffer.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice
from typing import Any, Iterable, Mapping, Optional, Union

from exness_actors.candles import INTERVAL_NAMES
from exness_actors.instruments import Instrument

__all__ = ["Channel", "ChannelError", "Channels", "ChannelKey", "ACCOUNT", "NOTIFICATIONS", "PRIVATE"]

ACCOUNT = "account"
#: the account's notifications (fed by the notifications worker, not by the engine's events)
NOTIFICATIONS = "notifications"
#: the channels that need {"op":"auth"} and are keyed by the account inside
PRIVATE = (ACCOUNT, NOTIFICATIONS)

#: ("quotes", symbol) | ("candles", symbol, interval) | ("account" or "notifications", account_id)
ChannelKey = Union[tuple[str, str], tuple[str, str, str], tuple[str, int]]


class ChannelError(Exception):
    """A channel name a client cannot subscribe to: ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str, channel: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel


class Channel:
    """One stream: its seq, replay ring buffer and subscribers (see the module docstring)."""

    __slots__ = ("key", "wire", "seq", "floor", "replay", "last_data", "subscribers", "out",
                 "instrument", "summary", "summary_key")

    def __init__(self, key: ChannelKey, wire: str, replay_size: int, *, seq: int = 0,
                 instrument: Optional[Instrument] = None) -> None:
        self.key = key
        self.wire = wire                      # the name clients see in every message
        self.seq = seq
        self.floor = seq
        self.replay: deque[tuple[int, str]] = deque(maxlen=replay_size)
        self.last_data: Optional[str] = None  # the newest data message (sent on subscribe)
        self.subscribers: dict[Any, None] = {}   # insertion-ordered set of clients
        self.out: list[str] = []              # staged for the current broadcast
        self.instrument = instrument
        # account channels: the newest account_summary sent (not numbered, never replayed)
        self.summary: Optional[str] = None
        self.summary_key: Optional[tuple] = None

    def record(self, text: str, *, data: bool = True) -> None:
        """Keep an encoded message (whose seq is ``self.seq``) for replay."""
        self.replay.append((self.seq, text))
        if data:
            self.last_data = text

    def replay_after(self, since: int) -> Optional[list[str]]:
        """The buffered messages after ``since``, or None when that gap cannot be served."""
        if since > self.seq:
            return None                       # a seq this channel never issued (another server run)
        if since == self.seq:
            return []
        replay = self.replay
        if not replay:
            return None if since < self.floor else []
        oldest = replay[0][0]
        if since < oldest - 1 or since < self.floor:
            return None
        return [text for _seq, text in islice(replay, since - oldest + 1, None)]


class Channels:
    """Every channel of the server, created on demand, account channels LRU-bounded."""

    def __init__(self, instruments: Mapping[str, Instrument], *, replay_size: int,
                 account_replay_size: int, max_account_channels: int) -> None:
        self.instruments = instruments
        self.replay_size = replay_size
        self.account_replay_size = account_replay_size
        self.max_account_channels = max_account_channels
        self.quotes: dict[str, Channel] = {
            symbol: Channel(("quotes", symbol), f"quotes:{symbol}", replay_size, instrument=instrument)
            for symbol, instrument in instruments.items()}
        self.candles: dict[tuple[str, str], Channel] = {}
        self.accounts: OrderedDict[int, Channel] = OrderedDict()
        self.notifications: OrderedDict[int, Channel] = OrderedDict()
        self._private = {ACCOUNT: self.accounts, NOTIFICATIONS: self.notifications}
        self._retired_seq: dict[tuple[str, int], int] = {}
        self.evicted = 0

    # -- names

    def resolve(self, name: Any, account_id: Optional[int]) -> tuple[ChannelKey, str]:
        """``(key, wire name)`` of a channel name a client sent; :class:`ChannelError` otherwise."""
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ChannelError("UNKNOWN_CHANNEL", "a channel name must be a non-empty string", name)
        if name in PRIVATE:
            if account_id is None:
                raise ChannelError("AUTH_REQUIRED", f"the {name} channel needs {{\"op\":\"auth\"}} first", name)
            return (name, account_id), name
        parts = name.split(":")
        kind = parts[0]
        if kind == "quotes" and len(parts) == 2:
            symbol = parts[1].upper()
            if symbol in self.instruments:
                return ("quotes", symbol), f"quotes:{symbol}"
        elif kind == "candles" and len(parts) == 3:
            symbol, interval = parts[1].upper(), parts[2]
            if symbol in self.instruments and interval in INTERVAL_NAMES:
                return ("candles", symbol, interval), f"candles:{symbol}:{interval}"
            if symbol in self.instruments:
                raise ChannelError("UNKNOWN_CHANNEL", f"unknown candle interval {interval!r} "
                                   f"(one of {', '.join(INTERVAL_NAMES)})", name)
        raise ChannelError("UNKNOWN_CHANNEL", f"unknown channel {name!r}: use quotes:SYMBOL, "
                           f"candles:SYMBOL:INTERVAL, account or notifications; symbols: "
                           f"{', '.join(sorted(self.instruments))}", name)

    # -- lookup and creation

    def get(self, key: ChannelKey) -> Channel:
        kind = key[0]
        if kind == "quotes":
            return self.quotes[key[1]]  # type: ignore[index]
        if kind == "candles":
            symbol, interval = str(key[1]), str(key[2])  # type: ignore[misc]
            channel = self.candles.get((symbol, interval))
            if channel is None:
                channel = self.candles[(symbol, interval)] = Channel(
                    key, f"candles:{symbol}:{interval}", self.replay_size,
                    instrument=self.instruments[symbol])
            return channel
        return self._account(kind, key[1])  # type: ignore[arg-type]

    def _account(self, kind: str, account_id: int) -> Channel:
        """An account's private channel of ``kind`` (``account`` or ``notifications``)."""
        channels = self._private[kind]
        channel = channels.get(account_id)
        if channel is not None:
            channels.move_to_end(account_id)
            return channel
        retired = self._retired_seq.pop((kind, account_id), None)
        if retired is None:
            channel = Channel((kind, account_id), kind, self.account_replay_size)
        else:   # events since it was evicted were not kept: nothing before now can be replayed
            channel = Channel((kind, account_id), kind, self.account_replay_size, seq=retired + 1)
        channels[account_id] = channel
        self._evict(kind)
        return channel

    def touch(self, channel: Channel) -> None:
        """A channel lost its last subscriber: it is now the most recently used."""
        channels = self._private.get(str(channel.key[0]))
        account_id = channel.key[1]
        if channels is not None and isinstance(account_id, int) and account_id in channels:
            channels.move_to_end(account_id)

    def _evict(self, kind: str) -> None:
        channels = self._private[kind]
        excess = len(channels) - self.max_account_channels
        if excess <= 0:
            return
        victims = []
        for account_id, channel in channels.items():
            if not channel.subscribers:
                victims.append(account_id)
                if len(victims) == excess:
                    break
        for account_id in victims:
            self._retired_seq[(kind, account_id)] = channels.pop(account_id).seq
            self.evicted += 1

    def all_event_channels(self) -> Iterable[Channel]:
        """The channels fed by the engine's event stream (quotes and accounts)."""
        yield from self.quotes.values()
        yield from self.accounts.values()
