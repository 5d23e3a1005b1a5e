"""The library: ``RedisSessionRepository``, as a user constructs it, under its own prefix."""

from __future__ import annotations

from benchmarks.redis_db import run_all
from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from benchmarks.workload import TTL_S
from session_repo import RedisSessionRepository, SessionRepository

__all__ = ["RepoRedis"]


class RepoRedis(LibrarySubject):
    name = "repo-redis"
    description = "RedisSessionRepository('redis://.../15'), library defaults, own key prefix"
    server: str | None = "redis"

    async def build(self, setup: Setup) -> SessionRepository:
        store = setup.need_redis()
        return RedisSessionRepository(store.url, key_prefix=store.prefix(self.name))

    async def preload(self, repo: SessionRepository, setup: Setup) -> None:
        async def through_the_library() -> None:  # its key layout is its own
            rows = ((sid, alloc, TTL_S) for sid, alloc in setup.dataset.sessions)
            await run_all(repo.upsert, rows)

        await setup.need_redis().preload_once(self.name, through_the_library)
