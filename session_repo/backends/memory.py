"""``MemorySessionRepository``: bindings in this process, least recently used evicted.

For tests and single-process services. Expiry follows the injected clock with
the same millisecond rules as the SQL backends, and expired entries stay until
``cleanup()`` (or eviction) removes them, so every backend counts alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable

from session_repo._core.front import StoreFront
from session_repo._core.inputs import DEFAULT_TTL, Ttl, positive_int
from session_repo._core.storage import Gauges, Storage
from session_repo.clock import Clock

__all__ = ["MemorySessionRepository", "MemoryStorage"]

# Rows read between yields to the event loop in full scans (about 0.3 ms of work).
_SLICE = 4096


class MemorySessionRepository(StoreFront):
    """In-process store; cannot fail, so it is never wrapped for resilience.

    Args:
        clock: where time comes from; ``None`` for ``SystemClock``.
        default_ttl: the ttl (seconds or ``timedelta``) used when a call passes ``None``.
        max_sessions: the most bindings kept; beyond it the least recently used
            one is evicted.
        cleanup_interval: seconds between background cleanups; 0 (the default)
            turns them off.
        cleanup_batch: the most rows one cleanup batch removes.

    Raises:
        TypeError: an argument has the wrong type.
        InvalidInput: an argument is out of range.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        default_ttl: Ttl = DEFAULT_TTL,
        max_sessions: int = 100_000,
        cleanup_interval: float = 0,
        cleanup_batch: int = 5000,
    ) -> None:
        super().__init__(
            connect=self._connect,
            backend="memory",
            guard_cancellation=False,  # no driver beneath: nothing can swallow one
            clock=clock,
            default_ttl=default_ttl,
            cleanup_interval=cleanup_interval,
            cleanup_batch=cleanup_batch,
        )
        self._rows = MemoryStorage(positive_int("max_sessions", max_sessions))

    async def _connect(self, resources: contextlib.AsyncExitStack) -> MemoryStorage:
        return self._rows

    @property
    def max_sessions(self) -> int:
        """The most bindings kept before the least recently used one is evicted."""
        return self._rows.max_sessions

    def clear(self) -> None:
        """Forget every binding at once (a fallback's after its primary is back)."""
        self._rows.clear()

    def bindings(self) -> list[tuple[bytes, str, int]]:
        """Every stored row, expired ones too: (session digest, alloc id, expires_at ms).

        For inspection (tests, a debugger); the session ids themselves are not kept.
        """
        return self._rows.rows()


class MemoryStorage(Storage):
    """Rows in an ``OrderedDict``, least recently used first; implements ``Storage``.

    Args:
        max_sessions: the most rows kept; beyond it the least recently used goes.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        # digest -> (alloc_id, expires_at ms); order is least recently used first.
        self._rows: OrderedDict[bytes, tuple[str, int]] = OrderedDict()

    async def close(self) -> None:
        self._rows.clear()

    def clear(self) -> None:
        """Forget every binding at once."""
        self._rows.clear()

    def rows(self) -> list[tuple[bytes, str, int]]:
        """A copy of the rows: (digest, alloc id, expires_at ms), least recent first."""
        return [(key, owner, expires_at) for key, (owner, expires_at) in self._rows.items()]

    def _put(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        rows = self._rows
        rows[key] = (alloc_id, expires_at)
        rows.move_to_end(key)
        if len(rows) > self.max_sessions:
            rows.popitem(last=False)

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        self._put(key, alloc_id, expires_at)

    async def lookup(self, key: bytes, now: int) -> str | None:
        row = self._rows.get(key)
        if row is None or row[1] <= now:
            return None
        self._rows.move_to_end(key)
        return row[0]

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        row = self._rows.get(key)
        if row is not None and row[1] > now and row[0] != replacing:
            self._rows.move_to_end(key)
            return row[0]
        self._put(key, alloc_id, expires_at)
        return alloc_id

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        row = self._rows.get(key)
        if row is None or row[1] <= now:
            return False
        self._put(key, row[0], expires_at)
        return True

    async def delete(self, key: bytes, now: int) -> bool:
        row = self._rows.get(key)
        if row is None or row[1] <= now:
            return False
        del self._rows[key]
        return True

    async def _scan(self, wanted: Callable[[tuple[str, int]], bool]) -> list[bytes]:
        """Keys whose row is ``wanted``, read in slices so other requests get through."""
        keys = list(self._rows)
        found: list[bytes] = []
        for start in range(0, len(keys), _SLICE):
            if start:
                await asyncio.sleep(0)
            rows = self._rows
            for key in keys[start : start + _SLICE]:
                row = rows.get(key)
                if row is not None and wanted(row):
                    found.append(key)
        return found

    def _remove(self, keys: list[bytes], still_wanted: Callable[[tuple[str, int]], bool]) -> int:
        """Delete the keys whose rows are still wanted (a scan may have yielded meanwhile)."""
        removed = 0
        for key in keys:
            row = self._rows.get(key)
            if row is not None and still_wanted(row):
                del self._rows[key]
                removed += 1
        return removed

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        def owned(row: tuple[str, int]) -> bool:
            return row[0] == alloc_id and row[1] > now

        return self._remove(await self._scan(owned), owned)

    async def cleanup(self, now: int, batch: int) -> int:
        def expired(row: tuple[str, int]) -> bool:
            return row[1] <= now

        doomed = await self._scan(expired)
        removed = 0
        for start in range(0, len(doomed), batch):
            if start:
                await asyncio.sleep(0)  # let requests through between batches
            removed += self._remove(doomed[start : start + batch], expired)
        return removed

    async def gauges(self, now: int) -> Gauges:
        expired = len(await self._scan(lambda row: row[1] <= now))
        return Gauges(len(self._rows) - expired, expired, None)

    async def ping(self) -> str:
        return f"in-process, {len(self._rows)} of {self.max_sessions} rows"
