"""What the fallback knows while the primary is away: a warm start and the journal.

Every answer the primary gives is kept in a bounded warm cache. Once degraded, a
session is copied from there into the fallback the first time it is used (it is
*seeded*), so sessions that were routing keep routing; every outage write that
changed something is journaled for write-back.

A seeded session's owner, if it heartbeats through this wrapper, has its last known
heartbeat seeded first (once per outage), so the fallback kills the owner's
bindings when that heartbeat lapses, as the primary would.
"""

from __future__ import annotations

import logging

from session_repo._core.storage import LeaseRow
from session_repo.backends.memory import MemorySessionRepository
from session_repo.resilience.journal import Journal, Write
from session_repo.resilience.warm import WarmCache

__all__ = ["FallbackState"]

logger = logging.getLogger("session_repo.resilience")


class FallbackState:
    """The fallback store, the warm cache, the seeded sessions and the journal.

    Args:
        fallback: the in-process store served while degraded.
        journal_max: outage writes kept for write-back (about one per session).
        warm_sessions: sessions whose last answer is kept.
        default_ttl_ms: how long an answer without an expiry (a lookup's) is kept.
        backend: the primary's name, for the logs.
    """

    def __init__(
        self,
        fallback: MemorySessionRepository,
        *,
        journal_max: int,
        warm_sessions: int,
        default_ttl_ms: int,
        backend: str,
    ) -> None:
        self.fallback = fallback
        self.journal = Journal(journal_max)
        self.warm = WarmCache(warm_sessions)
        # Sessions the fallback holds this outage; none while healthy (cleared on recovery).
        self._seeded: set[bytes] = set()
        self._beats_seeded: set[str] = set()  # owners whose heartbeat the fallback has
        self._default_ttl_ms = default_ttl_ms
        self._backend = backend
        self._dropped_logged = False

    def answered(self, key: bytes, owner: str | None, expires_at: int) -> None:
        """The primary's answer with its expiry (a write); ``None``: no binding."""
        self.warm.put(key, owner, expires_at)
        self._seeded.discard(key)  # while degraded, re-seeded from this answer

    def seen(self, key: bytes, owner: str | None, now: int) -> None:
        """An answer with no expiry (a lookup, a claim's other winner)."""
        self.warm.seen(key, owner, now, now + self._default_ttl_ms)
        self._seeded.discard(key)

    def claimed(
        self, key: bytes, owner: str, winner: str, now: int, expires_at: int, replacing: str | None
    ) -> None:
        """A claim's answer: ``winner`` holds the session.

        A win is kept until ``expires_at``, unless ``owner`` held the session
        already and the claim did not replace itself (``WarmCache.claimed``).
        """
        if winner == owner:
            self.warm.claimed(key, owner, expires_at, now, replacing == owner)
        else:
            self.warm.seen(key, winner, now, now + self._default_ttl_ms)
        self._seeded.discard(key)

    def renewed(self, key: bytes, expires_at: int) -> None:
        """A touch the primary made: the known owner lives on until ``expires_at``."""
        self.warm.renew(key, expires_at)
        self._seeded.discard(key)

    async def owner(self, key: bytes, now: int) -> str | None:
        """The fallback's owner of ``key``, seeded from the warm cache on first use."""
        await self.seed(key, now)
        return await self.fallback.run("lookup", lambda s: s.lookup(key, now))

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        """The fallback's lease of ``key`` (its own generation), seeded on first use."""
        await self.seed(key, now)
        return await self.fallback.run("lease", lambda s: s.lease(key, now))

    async def seed(self, key: bytes, now: int) -> None:
        """Copy ``key``'s warm row (and its owner's heartbeat) into the fallback, once."""
        if key in self._seeded:
            return
        self._seeded.add(key)
        row = self.warm.get(key, now)
        if row is None:
            await self.fallback.run("delete", lambda s: s.delete(key, now))
        else:
            await self.seed_beat(row[0], now)
            await self.fallback.run("upsert", lambda s: s.upsert(key, *row, now))

    async def seed_beat(self, alloc_id: str, now: int) -> None:
        """Copy ``alloc_id``'s last known heartbeat into the fallback, once per outage."""
        if alloc_id in self._beats_seeded:
            return
        self._beats_seeded.add(alloc_id)
        end = self.warm.beat_of(alloc_id)
        if end is not None:
            await self.fallback.run("heartbeat", lambda s: s.heartbeat(alloc_id, end, now))

    async def beat(self, alloc_id: str, expires_at: int, now: int) -> None:
        """An outage heartbeat: applied to the fallback, kept (the latest) for write-back."""
        await self.seed_beat(alloc_id, now)
        await self.fallback.run("heartbeat", lambda s: s.heartbeat(alloc_id, expires_at, now))
        self.warm.beat(alloc_id, expires_at, now)
        if not self.journal.record_beat(alloc_id, expires_at):
            self._dropped()

    async def reassert(self, alloc_id: str, now: int) -> None:
        """``alloc_id`` is a new incarnation on the primary: journal its live sessions as claims.

        Its sessions here (warm or in the fallback) with no entry of their own, each
        claimed replacing itself: on the primary its old binding is dead, so the claim
        takes it back, unless another instance holds it (a lost claim, reported).
        """
        keys = set(self.warm.keys_of(alloc_id))
        keys.update(key for key, owner, _ in self.fallback.bindings() if owner == alloc_id)
        for key in keys:
            if key in self.journal:
                continue
            row = await self.lease(key, now)
            if row is not None and row.owner == alloc_id and key not in self.journal:
                self.journaled("claim", key, alloc_id, alloc_id, row.expires_at)

    def journaled(
        self, write: Write, key: bytes, before: str | None, owner: str, expires_at: int
    ) -> None:
        """Keep an outage write for write-back (``before``: the owner it found)."""
        if not self.journal.record(write, key, before, owner, expires_at):
            self._dropped()

    def journaled_delete_owner(self, alloc_id: str) -> None:
        """Keep an outage ``delete_owner`` for write-back, in order with the rest."""
        if not self.journal.record_delete_owner(alloc_id):
            self._dropped()

    def journaled_release(self, alloc_id: str) -> None:
        """Keep an outage ``release`` for write-back, in order with the rest."""
        self._beats_seeded.add(alloc_id)  # its heartbeat is gone: nothing to seed
        self.warm.released(alloc_id)
        if not self.journal.record_release(alloc_id):
            self._dropped()

    def degraded(self) -> None:
        """A new outage began: a full journal is logged again."""
        self._dropped_logged = False

    def recovered(self) -> None:
        """The primary serves again: the fallback forgets the outage."""
        self._seeded.clear()
        self._beats_seeded.clear()
        self.fallback.clear()

    def _dropped(self) -> None:
        if not self._dropped_logged:
            self._dropped_logged = True
            logger.error(
                "the outage journal is full (%d sessions): later writes are served from "
                "the fallback but will not be written back to %s",
                self.journal.max_entries,
                self._backend,
                extra={"backend": self._backend, "operation": "journal", "outcome": "full"},
            )
