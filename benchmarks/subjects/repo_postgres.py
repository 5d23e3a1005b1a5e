"""The library: ``SqlSessionRepository`` on ``postgresql+asyncpg``, as a user constructs it."""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.workload import TTL_S
from session_repo import SqlSessionRepository

__all__ = ["RepoPostgres"]


class RepoPostgres:
    name = "repo-pg"
    description = "SqlSessionRepository('postgresql+asyncpg://...'), library defaults"
    server: str | None = "postgresql"

    def __init__(self) -> None:
        self._repo: SqlSessionRepository | None = None

    async def open(self, setup: Setup) -> None:
        postgres = setup.need_postgres()
        await postgres.reset()
        repo = SqlSessionRepository(postgres.url)
        await repo.__aenter__()
        self._repo = repo

    def _r(self) -> SqlSessionRepository:
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
