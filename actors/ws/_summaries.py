"""Throttled ``account_summary`` messages of the WebSocket ``account`` channel.

Theory of operation
-------------------
An account summary (balance, equity, used and free margin, margin level) is state, not an
event: only its newest value matters, and equity moves with every quote of a symbol the account
holds. The stream server never computes it itself (it does not own the core's state): it asks
the engine with the named view :func:`actors.wire.views.account_summaries`, for the accounts
that need one, at most once per ``account_summary_interval_ms`` (250 ms: ≤ 4 per second per
account, the last value wins).

Which accounts need one (:class:`SummaryTracker`), with no scan of anything but them:

* an account whose channel has subscribers and got an event of its own (order, position,
  balance, margin call, …) is **dirty**; so is one a client just subscribed to;
* an account whose last summary showed open positions is a **holder** of their symbols; a
  quote of a symbol with holders marks the symbol **moved** (one dict lookup per quote), and a
  round refreshes the holders of the moved symbols — never the accounts nobody watches, never
  all accounts.

A round asks for the due accounts in chunks grouped by engine shard (a sharded split
deployment answers each account from its own shard) and publishes a summary only when it differs
from the last one the channel sent (the engine time ``ts`` aside). Accounts whose channel has
no subscriber any more are forgotten lazily, when they next come due.

Summaries are not numbered: they carry no ``seq`` (the channel's seq counts its events, and
a resuming client's ``since`` replays events, not stale summaries); the newest one is sent to
every new subscriber at once, then refreshed.
"""

from __future__ import annotations

from typing import Callable, Iterable

__all__ = ["SummaryTracker", "chunked_by_shard", "summary_key"]

#: accounts asked for in one view (each is a short read of its own positions in the engine)
CHUNK = 256


class SummaryTracker:
    """Which subscribed accounts need a fresh summary (see the module docstring)."""

    __slots__ = ("dirty", "moved", "holders", "held")

    def __init__(self) -> None:
        self.dirty: set[int] = set()
        self.moved: set[str] = set()
        #: symbol -> the watched accounts whose last summary showed a position in it
        self.holders: dict[str, set[int]] = {}
        #: account -> the symbols of its last summary's open positions
        self.held: dict[int, tuple[str, ...]] = {}

    @property
    def pending(self) -> bool:
        return bool(self.dirty or self.moved)

    def take_due(self, watched: Callable[[int], bool]) -> list[int]:
        """The accounts due for a summary now (sorted), clearing what made them due; accounts
        no longer ``watched`` (no subscriber) are forgotten instead."""
        due = self.dirty
        self.dirty = set()
        for symbol in self.moved:
            due.update(self.holders.get(symbol, ()))
        self.moved = set()
        ready = []
        for account_id in sorted(due):
            if watched(account_id):
                ready.append(account_id)
            else:
                self.forget(account_id)
        return ready

    def hold(self, account_id: int, symbols: Iterable[str]) -> None:
        """Record the symbols the account's newest summary showed positions in."""
        held = tuple(symbols)
        previous = self.held.get(account_id, ())
        if held == previous:
            return
        for symbol in previous:
            holders = self.holders.get(symbol)
            if holders is not None:
                holders.discard(account_id)
                if not holders:
                    del self.holders[symbol]
        if held:
            self.held[account_id] = held
            for symbol in held:
                self.holders.setdefault(symbol, set()).add(account_id)
        else:
            self.held.pop(account_id, None)

    def forget(self, account_id: int) -> None:
        self.hold(account_id, ())
        self.dirty.discard(account_id)


def chunked_by_shard(account_ids: list[int], shard_of: Callable[[int], int],
                     size: int = CHUNK) -> list[list[int]]:
    """The ids grouped by engine shard (in shard order), each group cut into ``size`` chunks."""
    groups: dict[int, list[int]] = {}
    for account_id in account_ids:
        groups.setdefault(shard_of(account_id), []).append(account_id)
    return [ids[start:start + size] for shard in sorted(groups) for ids in [groups[shard]]
            for start in range(0, len(ids), size)]


def summary_key(data: dict) -> tuple:
    """What makes two summaries different for a client: every field but the engine time."""
    return tuple((key, value) for key, value in data.items() if key != "ts")
