"""What the primary answered recently, so the fallback starts warm.

When the store goes away, the sessions it was serving should keep routing: every
answer the primary gives (a lookup's owner, a claim's winner, a write) is kept
here, bounded, with its expiry. A lookup's answer carries no expiry, so it is
kept for at most the default ttl. While degraded, a session is copied from here
into the fallback the first time it is used.

Every healthy call records its answer here, so this is on the hot path, and at
100,000 sessions each record is a few random memory reads. The rows are an
``OrderedDict`` in the order they last *changed*: an answer that changes a row (a
write, a new owner, a new session) moves it to the end; one that only confirms it
(a lookup finding the owner the row holds) changes nothing, not even the order,
because moving it would add a random memory write to every lookup (~0.45 us at
100,000 sessions, more than the wrapper's budget of ~5% of a SQLite lookup). So
the session that changed least recently goes first, and one that goes while still
in use comes back with its next answer. cachetools' ``LRUCache`` (the first
version) reorders on every read and keeps its order in Python code: ~1.2 us per
new session once full, against ~0.25 us here.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["WarmCache"]


class WarmCache:
    """Session digest -> (owner, expires_at ms), bounded; the least recently changed go first.

    Args:
        max_sessions: the most sessions kept (>= 1).
    """

    def __init__(self, max_sessions: int) -> None:
        self._rows: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._max = max_sessions

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
        elif key in rows:
            rows[key] = (owner, expires_at)
            rows.move_to_end(key)
        else:
            rows[key] = (owner, expires_at)
            if len(rows) > self._max:
                rows.popitem(last=False)

    def seen(self, key: bytes, owner: str | None, now: int, bound: int) -> None:
        """An answer without an expiry: ``owner`` holds the session at ``now``.

        A live row of the same owner keeps its own expiry (a write said it) and its
        place; else the answer is kept until ``bound``.
        """
        rows = self._rows
        if key not in rows:
            if owner is not None:
                rows[key] = (owner, bound)
                if len(rows) > self._max:
                    rows.popitem(last=False)
        elif owner is None:
            del rows[key]
        else:
            row = rows[key]
            if row[0] != owner or row[1] <= now:
                rows[key] = (owner, bound)
                rows.move_to_end(key)

    def claimed(self, key: bytes, owner: str, expires_at: int, now: int, renews: bool) -> None:
        """A claim that ``owner`` won: kept until ``expires_at``.

        Unless ``owner`` already held the session live and the claim did not renew
        it (``renews``: it replaced ``owner`` itself): then the claim changed
        nothing, and the row keeps its expiry and its place.
        """
        rows = self._rows
        if key not in rows:
            rows[key] = (owner, expires_at)
            if len(rows) > self._max:
                rows.popitem(last=False)
        else:
            row = rows[key]
            if renews or row[0] != owner or row[1] <= now:
                rows[key] = (owner, expires_at)
                rows.move_to_end(key)

    def renew(self, key: bytes, expires_at: int) -> None:
        """A touch that succeeded: the known owner lives on until ``expires_at``."""
        rows = self._rows
        if key in rows:
            rows[key] = (rows[key][0], expires_at)
            rows.move_to_end(key)

    def get(self, key: bytes, now: int) -> tuple[str, int] | None:
        """The live row for ``key``, if any."""
        row = self._rows.get(key)
        return row if row is not None and row[1] > now else None

    def keys_of(self, alloc_id: str) -> list[bytes]:
        """The sessions known to be ``alloc_id``'s (a scan: ``delete_owner`` is rare)."""
        return [key for key, (owner, _) in self._rows.items() if owner == alloc_id]

    def forget_owner(self, alloc_id: str) -> None:
        """Drop every row of ``alloc_id`` (its bindings were deleted)."""
        for key in self.keys_of(alloc_id):
            del self._rows[key]

    def clear(self) -> None:
        """Forget every session."""
        self._rows.clear()
