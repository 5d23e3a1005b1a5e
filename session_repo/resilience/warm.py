"""What the primary answered recently, so the fallback starts warm.

When the store goes away, the sessions it was serving should keep routing: every
answer the primary gives (a lookup's owner, a claim's winner, a write) is kept
here, bounded (least recently used out first), with its expiry. A lookup's answer
carries no expiry, so it is kept for at most the default ttl. While degraded, a
session is copied from here into the fallback the first time it is used.
"""

from __future__ import annotations

from cachetools import LRUCache

__all__ = ["WarmCache"]


class WarmCache:
    """Session digest -> (owner, expires_at ms), bounded."""

    def __init__(self, max_sessions: int) -> None:
        self._rows: LRUCache[bytes, tuple[str, int]] = LRUCache(maxsize=max_sessions)

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, key: bytes, owner: str | None, expires_at: int) -> None:
        """Remember ``owner`` until ``expires_at`` (ms); ``None`` forgets the session."""
        if owner is None:
            self._rows.pop(key, None)
        else:
            self._rows[key] = (owner, expires_at)

    def seen(self, key: bytes, owner: str | None, now: int, bound: int) -> None:
        """An answer without an expiry: ``owner`` holds the session at ``now``.

        A live row of the same owner keeps its own expiry (a write said it); else
        the answer is kept until ``bound``.
        """
        row = self._rows.get(key)
        if owner is None or row is None or row[0] != owner or row[1] <= now:
            self.put(key, owner, bound)

    def renew(self, key: bytes, expires_at: int) -> None:
        """A touch that succeeded: the known owner lives on until ``expires_at``."""
        row = self._rows.get(key)
        if row is not None:
            self._rows[key] = (row[0], expires_at)

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
        self._rows.clear()
