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
from session_repo._core.storage import Gauges, LeaseRow, Storage
from session_repo.clock import Clock

__all__ = ["MemorySessionRepository", "MemoryStorage"]

_Row = tuple[str, int, int, int]
"""A binding: (alloc id, expires_at ms, generation, its owner's heartbeat epoch)."""

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

    Generations come from one counter for all sessions, so they increase for a
    session across deletes, expiry and eviction, which forget its row.

    Args:
        max_sessions: the most rows kept; beyond it the least recently used goes.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        # digest -> (alloc_id, expires_at ms, generation, owner epoch); least recent first.
        self._rows: OrderedDict[bytes, _Row] = OrderedDict()
        # alloc_id -> (heartbeat end ms, epoch): the owners that heartbeat.
        self._beats: dict[str, tuple[int, int]] = {}
        self._generations = 0

    async def close(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every binding and heartbeat at once."""
        self._rows.clear()
        self._beats.clear()

    def rows(self) -> list[tuple[bytes, str, int]]:
        """A copy of the rows: (digest, alloc id, expires_at ms), least recent first."""
        return [(key, row[0], row[1]) for key, row in self._rows.items()]

    def _live(self, row: _Row | None, now: int) -> bool:
        """The liveness rule: unexpired, and its owner's heartbeat (if any) live and the same."""
        if row is None or row[1] <= now:
            return False
        beat = self._beats.get(row[0])
        return beat is None or (now < beat[0] and beat[1] == row[3])

    def _bind(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> int:
        """(Re)bind: the same live owner keeps its generation; anything else takes a new one.

        Returns the binding's generation (a bare int: upserts and claims, the common
        calls, need no ``LeaseRow``).
        """
        rows = self._rows
        old = rows.get(key)
        if old is not None and old[0] == alloc_id and self._live(old, now):
            generation = old[2]
        else:
            self._generations += 1
            generation = self._generations
        beat = self._beats.get(alloc_id) if self._beats else None
        rows[key] = (alloc_id, expires_at, generation, 0 if beat is None else beat[1])
        rows.move_to_end(key)
        if len(rows) > self.max_sessions:
            rows.popitem(last=False)
        return generation

    def _held(self, key: bytes, now: int, generation: int | None) -> _Row | None:
        """``key``'s live row if it has ``generation`` (any, when ``None``)."""
        row = self._rows.get(key)
        if not self._live(row, now) or row is None:
            return None
        return row if generation is None or row[2] == generation else None

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        self._bind(key, alloc_id, expires_at, now)

    async def lookup(self, key: bytes, now: int) -> str | None:
        row = self._rows.get(key)  # ``_live`` inlined: this is every request's path
        if row is None or row[1] <= now:
            return None
        beats = self._beats
        if beats:
            beat = beats.get(row[0])
            if beat is not None and (now >= beat[0] or beat[1] != row[3]):
                return None
        self._rows.move_to_end(key)
        return row[0]

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        row = self._rows.get(key)
        if not self._live(row, now) or row is None:
            return None
        self._rows.move_to_end(key)
        return LeaseRow(row[0], row[2], row[1])

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        row = self._rows.get(key)  # ``acquire``, without its lease: every new session's path
        if row is not None and row[0] != replacing and self._live(row, now):
            self._rows.move_to_end(key)
            return row[0]
        self._bind(key, alloc_id, expires_at, now)
        return alloc_id

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        row = self._rows.get(key)
        if row is not None and row[0] != replacing and self._live(row, now):
            self._rows.move_to_end(key)
            return LeaseRow(row[0], row[2], row[1])
        return LeaseRow(alloc_id, self._bind(key, alloc_id, expires_at, now), expires_at)

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        row = self._held(key, now, generation)
        if row is None:
            return False
        self._rows[key] = (row[0], expires_at, row[2], row[3])
        self._rows.move_to_end(key)
        return True

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        if self._held(key, now, generation) is None:
            return False
        del self._rows[key]
        return True

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        beat = self._beats.get(alloc_id)
        if beat is None:
            self._beats[alloc_id] = (expires_at, 0)
        elif now < beat[0]:
            self._beats[alloc_id] = (expires_at, beat[1])
        else:  # lapsed: a new incarnation; what the lapse killed stays dead
            self._beats[alloc_id] = (expires_at, beat[1] + 1)

    async def release(self, alloc_id: str, now: int) -> int:
        doomed = await self._scan(lambda row: row[0] == alloc_id)
        live = 0
        for key in doomed:
            row = self._rows.get(key)
            if row is not None and row[0] == alloc_id:
                live += self._live(row, now)
                del self._rows[key]
        self._beats.pop(alloc_id, None)
        return live

    async def owners(self, now: int) -> dict[str, int]:
        return {owner: end for owner, (end, _) in self._beats.items() if now < end}

    async def _scan(self, wanted: Callable[[_Row], bool]) -> list[bytes]:
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

    def _remove(self, keys: list[bytes], still_wanted: Callable[[_Row], bool]) -> int:
        """Delete the keys whose rows are still wanted (a scan may have yielded meanwhile)."""
        removed = 0
        for key in keys:
            row = self._rows.get(key)
            if row is not None and still_wanted(row):
                del self._rows[key]
                removed += 1
        return removed

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        def owned(row: _Row) -> bool:
            return row[0] == alloc_id and self._live(row, now)

        return self._remove(await self._scan(owned), owned)

    async def cleanup(self, now: int, batch: int) -> int:
        def dead(row: _Row) -> bool:
            return not self._live(row, now)

        doomed = await self._scan(dead)
        removed = 0
        for start in range(0, len(doomed), batch):
            if start:
                await asyncio.sleep(0)  # let requests through between batches
            removed += self._remove(doomed[start : start + batch], dead)
        return removed + self._forget_lapsed(now)

    def _forget_lapsed(self, now: int) -> int:
        """Drop lapsed heartbeats with what is left of their bindings, in one step.

        Both go at once: a binding outliving its owner's row would count as an
        owner's that never heartbeated, and come back to life.
        """
        lapsed = {owner for owner, (end, _) in self._beats.items() if end <= now}
        if not lapsed:
            return 0
        orphans = [key for key, row in self._rows.items() if row[0] in lapsed]
        for key in orphans:
            del self._rows[key]
        for owner in lapsed:
            del self._beats[owner]
        return len(orphans)

    async def gauges(self, now: int) -> Gauges:
        expired = len(await self._scan(lambda row: not self._live(row, now)))
        owners = sum(1 for end, _ in self._beats.values() if now < end)
        return Gauges(len(self._rows) - expired, expired, None, owners)

    async def ping(self) -> str:
        return f"in-process, {len(self._rows)} of {self.max_sessions} rows"
