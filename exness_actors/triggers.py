"""Sorted trigger indexes: a quote pops only what it crosses.

Theory of operation
-------------------
Every price-triggered thing in the book — liquidations, stop-losses, take-profits and pending
entries — is an entry ``(level, priority, id)`` in one of four :class:`TriggerIndex` per symbol,
named after the quote side and direction that fires it:

==============  ===========================  =============================================================
index           fires when                   holds
==============  ===========================  =============================================================
``bid_falls``   ``bid <= level``             long liquidation, long stop-loss, sell stop, ``below`` alert
``bid_rises``   ``bid >= level``             long take-profit, sell limit, ``above`` alert
``ask_rises``   ``ask >= level``             short liquidation, short stop-loss, buy stop
``ask_falls``   ``ask <= level``             short take-profit, buy limit
==============  ===========================  =============================================================

An index keeps ``key = sign·level`` in a ``SortedList`` so that, for both directions, the
crossed entries are exactly the tail with ``key >= sign·price``: popping them costs
``O((k+1)·log n)``, and a quote that crosses nothing costs one integer comparison against the
cached :attr:`TriggerIndex.best` — independent of how many positions are open.

Trailing stops move with the market, so they cannot sit at a fixed level. A long trailing
stop's level is ``peak − distance`` where ``peak`` is the highest bid seen since it was set.
Two stops that have the same peak *now* have the same peak forever after (they see the same
future quotes), so :class:`TrailingBook` groups stops by peak. A new high bid ``B`` merges every
group with ``peak <= B`` into one group at peak ``B`` (the largest group survives and is re-keyed,
the smaller ones' members move: each member moves ``O(log n)`` times over its life). Each group
fires its members with the smallest distance first; the book keeps the groups' best levels in a
sorted list so the no-cross check is again one comparison. Short trailing stops use the same
book over ``−ask`` (the trough becomes a peak of the negated price).

Invariants: ``best`` equals the largest key (or :data:`NONE`); every member of a group is in
``_group_of``; a group's level entry is ``(peak − min distance, peak)``.
"""

from __future__ import annotations

from typing import Final, Iterator

from sortedcontainers import SortedDict, SortedList

__all__ = ["TriggerIndex", "TrailingBook", "NONE", "PRIORITY", "ID_BITS"]

#: Below any key a real price can produce (prices are bounded by the edge to 30 digits).
NONE: Final = -(10**40)

# Ids take 53 bits: engine shard k numbers from k·10¹² + 1 and the last shard's ids stay below
# 2**53 (instruments.MAX_SHARD; a test holds the two together).
# Final: the compiled build reads these as C constants, not from the module's dict (they are on
# every trigger's add, pop and refresh)
ID_BITS: Final = 53
_PRIORITY_SHIFT: Final = ID_BITS
_KEY_SHIFT: Final = ID_BITS + 4
_PRIORITY_MASK: Final = 0xF
_ID_MASK: Final = (1 << ID_BITS) - 1

#: Processing order within one quote; ties are broken by id.
PRIORITY = {"liquidation": 0, "stop_loss": 1, "trailing_stop": 2, "take_profit": 3, "entry": 4,
            "margin_check": 5, "alert": 6}


class TriggerIndex:
    """Entries ``(level, priority, id)`` that fire when the price crosses ``level``.

    Each entry is stored as one int, ``key << 57 | priority << 53 | id`` with ``key = sign·level``:
    ints compare and bisect several times faster than tuples and take a third of the memory, and
    the order is the same as the tuple's (priority < 16, id < 2**53).
    """

    __slots__ = ("sign", "best", "_entries", "_bulk")

    def __init__(self, *, fires_on_fall: bool) -> None:
        # falls: fires when price <= level  ⇔  level >= price          (sign +1)
        # rises: fires when price >= level  ⇔  -level >= -price        (sign -1)
        self.sign = 1 if fires_on_fall else -1
        self.best = NONE
        self._entries: SortedList = SortedList()
        self._bulk: list[int] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, level: int, priority: int, ident: int) -> None:
        key = self.sign * level
        entry = key << _KEY_SHIFT | priority << _PRIORITY_SHIFT | ident
        if self._bulk is not None:
            self._bulk.append(entry)
            return
        self._entries.add(entry)
        if key > self.best:
            self.best = key

    def load_sorted(self, entries: list[int]) -> None:
        """Replace the entries with ``entries``: already-sorted, distinct entries as :meth:`add`
        encodes them (a snapshot stores them so, :meth:`entries`). One bulk construction, no
        insort per entry; the result equals adding them one by one (tests/test_recovery_fast.py)."""
        self._entries = SortedList(entries)
        self._refresh()

    def entries(self) -> list[int]:
        """The encoded entries in order (what :meth:`load_sorted` takes back)."""
        return list(self._entries)

    def begin_bulk(self) -> None:
        """Buffer :meth:`add` calls until :meth:`end_bulk` sorts them in once (restores)."""
        self._bulk = []

    def end_bulk(self) -> None:
        bulk, self._bulk = self._bulk, None
        if bulk:
            self._entries.update(bulk)
        self._refresh()

    def discard(self, level: int, priority: int, ident: int) -> None:
        self._entries.discard(self.sign * level << _KEY_SHIFT | priority << _PRIORITY_SHIFT | ident)
        self._refresh()

    def crossed(self, price: int) -> bool:
        return self.best >= self.sign * price

    def pop_crossed(self, price: int, out: list[tuple[int, int]]) -> None:
        """Append ``(priority, id)`` of every entry the price crosses and remove them."""
        threshold = self.sign * price
        entries = self._entries
        while entries and entries[-1] >> _KEY_SHIFT >= threshold:
            entry = entries.pop()
            out.append((entry >> _PRIORITY_SHIFT & _PRIORITY_MASK, entry & _ID_MASK))
        self._refresh()

    def _refresh(self) -> None:
        entries = self._entries
        self.best = entries[-1] >> _KEY_SHIFT if entries else NONE

    def items(self) -> Iterator[tuple[int, int, int]]:
        """``(level, priority, id)`` of every entry (for tests and audits)."""
        for entry in self._entries:
            yield (self.sign * (entry >> _KEY_SHIFT), entry >> _PRIORITY_SHIFT & _PRIORITY_MASK,
                   entry & _ID_MASK)


class _Group:
    __slots__ = ("peak", "members")

    def __init__(self, peak: int) -> None:
        self.peak = peak
        self.members: SortedList = SortedList()  # (distance, id)


class TrailingBook:
    """Trailing stops of one side of one symbol, grouped by the peak they last saw.

    Prices given to it are "favourable-up": the bid for longs, ``−ask`` for shorts.
    """

    __slots__ = ("_groups", "_levels", "_group_of", "min_peak", "best_level")

    def __init__(self) -> None:
        self._groups: SortedDict = SortedDict()      # peak -> _Group
        self._levels: SortedList = SortedList()      # (peak - min distance, peak)
        self._group_of: dict[int, _Group] = {}
        self.min_peak = -NONE                        # no group: nothing to raise
        self.best_level = NONE                       # no group: nothing fires

    def __len__(self) -> int:
        return len(self._group_of)

    def __contains__(self, ident: int) -> bool:
        return ident in self._group_of

    def peak_of(self, ident: int) -> int:
        return self._group_of[ident].peak

    def add(self, ident: int, distance: int, peak: int) -> None:
        group = self._groups.get(peak)
        if group is None:
            group = _Group(peak)
            self._groups[peak] = group
        else:
            self._levels.remove((peak - group.members[0][0], peak))
        group.members.add((distance, ident))
        self._group_of[ident] = group
        self._levels.add((peak - group.members[0][0], peak))
        self._refresh()

    def discard(self, ident: int, distance: int) -> None:
        group = self._group_of.pop(ident, None)
        if group is None:
            return
        peak = group.peak
        self._levels.remove((peak - group.members[0][0], peak))
        group.members.remove((distance, ident))
        if group.members:
            self._levels.add((peak - group.members[0][0], peak))
        else:
            del self._groups[peak]
        self._refresh()

    def on_price(self, price: int, out: list[tuple[int, int]], priority: int) -> None:
        """Raise peaks to ``price`` and append ``(priority, id)`` of every stop it crosses."""
        if price > self.min_peak:
            self._raise_peaks(price)
            self._refresh()
        if price <= self.best_level:
            self._fire(price, out, priority)
            self._refresh()

    def _raise_peaks(self, price: int) -> None:
        groups = self._groups
        merged: list[_Group] = []
        while groups and groups.peekitem(0)[0] <= price:
            peak, group = groups.popitem(0)
            self._levels.remove((peak - group.members[0][0], peak))
            merged.append(group)
        survivor = max(merged, key=lambda g: len(g.members))
        for group in merged:
            if group is not survivor:
                survivor.members.update(group.members)
                for _distance, ident in group.members:
                    self._group_of[ident] = survivor
        survivor.peak = price
        groups[price] = survivor
        self._levels.add((price - survivor.members[0][0], price))

    def _fire(self, price: int, out: list[tuple[int, int]], priority: int) -> None:
        levels = self._levels
        while levels and levels[-1][0] >= price:
            _level, peak = levels.pop()
            group = self._groups[peak]
            members = group.members
            limit = peak - price        # fires every member with distance <= peak - price
            while members and members[0][0] <= limit:
                _distance, ident = members.pop(0)
                del self._group_of[ident]
                out.append((priority, ident))
            if members:
                levels.add((peak - members[0][0], peak))
            else:
                del self._groups[peak]

    def _refresh(self) -> None:
        groups = self._groups
        self.min_peak = groups.peekitem(0)[0] if groups else -NONE
        self.best_level = self._levels[-1][0] if self._levels else NONE

    def items(self) -> Iterator[tuple[int, int, int]]:
        """``(id, distance, peak)`` of every stop, for snapshots and audits."""
        for peak, group in self._groups.items():
            for distance, ident in group.members:
                yield ident, distance, peak
