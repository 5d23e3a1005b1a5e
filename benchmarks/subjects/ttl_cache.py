"""Reference: ``cachetools.TTLCache`` behind async functions on the same loop.

The floor for any in-process store: a dict with expiry, plus the same SHA-256
of the session id that every other subject pays.
"""

from __future__ import annotations

from cachetools import TTLCache

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest
from benchmarks.workload import TTL_S

__all__ = ["TtlCacheReference"]


class TtlCacheReference:
    name = "ttlcache"
    description = "cachetools.TTLCache keyed by the SHA-256 digest, called from the loop"
    server: str | None = None

    def __init__(self) -> None:
        self._cache: TTLCache[bytes, str] | None = None

    async def open(self, setup: Setup) -> None:
        sessions = setup.dataset.sessions
        cache: TTLCache[bytes, str] = TTLCache(maxsize=10 * len(sessions) + 1_000_000, ttl=TTL_S)
        for session_id, alloc_id in sessions:
            cache[digest(session_id)] = alloc_id
        self._cache = cache

    def _c(self) -> TTLCache[bytes, str]:
        assert self._cache is not None, "open() first"
        return self._cache

    async def lookup(self, session_id: str) -> str | None:
        return self._c().get(digest(session_id))

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        self._c()[digest(session_id)] = alloc_id

    async def claim(self, session_id: str, alloc_id: str) -> str:
        cache = self._c()
        key = digest(session_id)
        owner = cache.get(key)
        if owner is None:
            cache[key] = alloc_id
            return alloc_id
        return owner

    async def close(self) -> None:
        self._cache = None
