"""The library: ``RedisSessionRepository``, as a user constructs it, under its own prefix."""

from __future__ import annotations

from benchmarks.redis_db import run_all
from benchmarks.subjects.base import Setup
from benchmarks.workload import TTL_S
from session_repo import RedisSessionRepository

__all__ = ["RepoRedis"]


class RepoRedis:
    name = "repo-redis"
    description = "RedisSessionRepository('redis://.../15'), library defaults, own key prefix"
    server: str | None = "redis"

    def __init__(self) -> None:
        self._repo: RedisSessionRepository | None = None

    async def open(self, setup: Setup) -> None:
        store = setup.need_redis()
        repo = RedisSessionRepository(store.url, key_prefix=store.prefix(self.name))
        await repo.__aenter__()
        self._repo = repo

        async def preload() -> None:  # through the library: its key layout is its own
            rows = ((sid, alloc, TTL_S) for sid, alloc in setup.dataset.sessions)
            await run_all(repo.upsert, rows)

        await store.preload_once(self.name, preload)

    def _r(self) -> RedisSessionRepository:
        assert self._repo is not None, "open() first"
        return self._repo

    async def lookup(self, session_id: str) -> str | None:
        return await self._r().lookup(session_id)

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._r().upsert(session_id, alloc_id, TTL_S)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        return await self._r().claim(session_id, alloc_id, TTL_S)

    async def close(self) -> None:
        if self._repo is not None:
            await self._repo.close()
            self._repo = None
