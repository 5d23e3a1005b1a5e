"""What the primary answered recently, so the fallback starts warm.

When the store goes away, the sessions it was serving should keep routing: every
answer the primary gives (a lookup's owner, a claim's winner, a write) is kept
here, bounded, with its expiry. A lookup's answer carries no expiry, so it is
kept for at most the default ttl. While degraded, a session is copied from here
into the fallback the first time it is used.

Every healthy call records its answer here, so this is on the hot path, at up to
``max_sessions`` (100,000 by default) sessions. Three choices keep it cheap:

- The rows are an ``OrderedDict`` in the order they last *changed*: an answer that
  changes a row (a write, a new owner, a new session) moves it to the end; one that
  only confirms it (a lookup finding the owner the row holds) changes nothing, not
  even the order, because moving it is a random memory write on every lookup
  (~0.45 us at 100,000 sessions). So the session that changed least recently goes
  first, and one that goes while still in use comes back with its next answer.
- A row is one ``int``: ``expires_at << bits | the owner's number`` (owners are
  numbered in a small table). A ``(owner, expires_at)`` tuple is a container the
  garbage collector tracks: a cache growing by tuples set off a collection every
  700 new rows and, now and then, a full one that walked all 100,000 rows (65-80 ms
  with the event loop stopped). An int is not tracked, and a confirming lookup reads
  one object, not two.
- cachetools' ``LRUCache`` (the first version) reorders on every read and keeps its
  order in Python code: ~1.2 us per new session once full, against ~0.25 us here.

It must never seed a binding whose owner is dead. The primary already answers
``None`` for an owner whose heartbeat lapsed (and that answer drops the row), but a
row kept from earlier would outlive it: so the heartbeats that go through this
wrapper are kept here too (``beat``), and ``get`` gives nothing for an owner whose
last known heartbeat has ended. A heartbeat after a lapse forgets the owner's rows
(the lapse was final for them, as on the primary), and so does a release, or an
``owners()`` answer that no longer lists it. Owners that heartbeat elsewhere are not
extrapolated: their renewals cannot reach this process during an outage.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["WarmCache"]

# Owners numbered beyond the sessions kept before the numbers are given out afresh
# (to the owners still held): a fleet that churns through machine ids stays bounded.
SPARE_OWNERS = 4096


class WarmCache:
    """Session digest -> (owner, expires_at ms), bounded; the least recently changed go first.

    Args:
        max_sessions: the most sessions kept (>= 1).
    """

    def __init__(self, max_sessions: int) -> None:
        self._max = max_sessions
        self._rows: OrderedDict[bytes, int] = OrderedDict()  # expires_at << bits | number
        self._numbers: dict[str, int] = {}  # owner -> number
        self._owners: list[str] = []  # number -> owner
        self._most_owners = max_sessions + SPARE_OWNERS
        self._bits = self._most_owners.bit_length()
        self._mask = (1 << self._bits) - 1
        self._beats: dict[str, int] = {}  # owner -> its heartbeat's end (ms), as told here

    def __len__(self) -> int:
        return len(self._rows)

    # Written rows move to the end (a new one is there already; over the bound, the
    # first goes). Inline in each method: a shared helper would cost a call per answer.
    # ``key in rows`` then ``rows[key]``: cheaper than ``rows.get(key)`` on an OrderedDict.

    def put(self, key: bytes, owner: str | None, expires_at: int) -> None:
        """Remember ``owner`` until ``expires_at`` (ms); ``None`` forgets the session."""
        rows = self._rows
        if owner is None:
            rows.pop(key, None)
            return
        number = self._numbers.get(owner)
        if number is None:
            number = self._number(owner)
        if key in rows:
            rows[key] = expires_at << self._bits | number
            rows.move_to_end(key)
        else:
            rows[key] = expires_at << self._bits | number
            if len(rows) > self._max:
                rows.popitem(last=False)

    def seen(self, key: bytes, owner: str | None, now: int, bound: int) -> None:
        """An answer without an expiry: ``owner`` holds the session at ``now``.

        A live row of the same owner keeps its own expiry (a write said it) and its
        place; else the answer is kept until ``bound``.
        """
        rows = self._rows
        if key in rows:
            if owner is None:
                del rows[key]
                return
            row = rows[key]
            number = self._numbers.get(owner)
            if row & self._mask == number and row >> self._bits > now:
                return  # what it holds already: the common case, nothing written
            if number is None:
                number = self._number(owner)
            rows[key] = bound << self._bits | number
            rows.move_to_end(key)
        elif owner is not None:
            number = self._numbers.get(owner)
            if number is None:
                number = self._number(owner)
            rows[key] = bound << self._bits | number
            if len(rows) > self._max:
                rows.popitem(last=False)

    def claimed(self, key: bytes, owner: str, expires_at: int, now: int, renews: bool) -> None:
        """A claim that ``owner`` won: kept until ``expires_at``.

        Unless ``owner`` already held the session live and the claim did not renew
        it (``renews``: it replaced ``owner`` itself): then the claim changed
        nothing, and the row keeps its expiry and its place.
        """
        rows = self._rows
        number = self._numbers.get(owner)
        if key in rows:
            row = rows[key]
            if not renews and row & self._mask == number and row >> self._bits > now:
                return
            if number is None:
                number = self._number(owner)
            rows[key] = expires_at << self._bits | number
            rows.move_to_end(key)
        else:
            if number is None:
                number = self._number(owner)
            rows[key] = expires_at << self._bits | number
            if len(rows) > self._max:
                rows.popitem(last=False)

    def renew(self, key: bytes, expires_at: int) -> None:
        """A touch that succeeded: the known owner lives on until ``expires_at``."""
        rows = self._rows
        if key in rows:
            rows[key] = expires_at << self._bits | rows[key] & self._mask
            rows.move_to_end(key)

    def get(self, key: bytes, now: int) -> tuple[str, int] | None:
        """The live row for ``key`` as (owner, expires_at), if any.

        A row whose owner's known heartbeat has ended is not live.
        """
        row = self._rows.get(key)
        if row is None or row >> self._bits <= now:
            return None
        owner = self._owners[row & self._mask]
        beat = self._beats.get(owner)
        if beat is not None and beat <= now:
            return None
        return owner, row >> self._bits

    def beat(self, alloc_id: str, expires_at: int, now: int) -> None:
        """``alloc_id`` heartbeated until ``expires_at``; after a lapse, its rows go."""
        last = self._beats.get(alloc_id)
        if last is not None and last <= now:
            self.forget_owner(alloc_id)
        self._beats[alloc_id] = expires_at

    def beat_of(self, alloc_id: str) -> int | None:
        """The end of ``alloc_id``'s last heartbeat told here, if it ever beat here."""
        return self._beats.get(alloc_id)

    def beating(self) -> list[str]:
        """The owners whose heartbeats were told here."""
        return list(self._beats)

    def released(self, alloc_id: str) -> None:
        """``alloc_id`` left: its rows and its heartbeat go."""
        self.forget_owner(alloc_id)
        self._beats.pop(alloc_id, None)

    def owners_seen(self, live: dict[str, int]) -> None:
        """An ``owners()`` answer: a heartbeat kept here but not listed lapsed or left.

        Args:
            live: alloc id -> heartbeat end (ms), the owners live on the store.
        """
        for alloc_id in [o for o in self._beats if o not in live]:
            self.released(alloc_id)
        for alloc_id, end in live.items():
            if alloc_id in self._beats:
                self._beats[alloc_id] = end

    def keys_of(self, alloc_id: str) -> list[bytes]:
        """The sessions known to be ``alloc_id``'s (a scan: ``delete_owner`` is rare)."""
        number = self._numbers.get(alloc_id)
        if number is None:
            return []
        mask = self._mask
        return [key for key, row in self._rows.items() if row & mask == number]

    def forget_owner(self, alloc_id: str) -> None:
        """Drop every row of ``alloc_id`` (its bindings were deleted)."""
        for key in self.keys_of(alloc_id):
            del self._rows[key]

    def clear(self) -> None:
        """Forget every session."""
        self._rows.clear()
        self._numbers.clear()
        self._owners.clear()
        self._beats.clear()

    def _number(self, owner: str) -> int:
        """A number for an owner not numbered yet."""
        if len(self._owners) >= self._most_owners:
            self._renumber()
        number = self._numbers[owner] = len(self._owners)
        self._owners.append(owner)
        return number

    def _renumber(self) -> None:
        """Number afresh only the owners rows still hold (at most ``max_sessions``).

        A pass over every row (tens of ms at 100,000 sessions), the first time after
        ``max_sessions + SPARE_OWNERS`` owners were numbered, then at most once per
        ``SPARE_OWNERS`` new ones: never, for a fleet that had fewer machine ids.
        """
        old, bits, mask = self._owners, self._bits, self._mask
        self._numbers, self._owners = {}, []
        rows = self._rows
        for key, row in list(rows.items()):
            owner = old[row & mask]
            number = self._numbers.get(owner)
            if number is None:
                number = self._numbers[owner] = len(self._owners)
                self._owners.append(owner)
            rows[key] = row >> bits << bits | number  # same place: only the value changes
