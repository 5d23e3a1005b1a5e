"""The library: ``SqlSessionRepository`` on ``sqlite+aiosqlite``, as a user constructs it."""

from __future__ import annotations

from pathlib import Path

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.workload import TTL_S
from session_repo import SqlSessionRepository

__all__ = ["RepoSqlite"]


class RepoSqlite:
    name = "repo-sqlite"
    description = "SqlSessionRepository('sqlite+aiosqlite:///file'), library defaults"
    server: str | None = None

    def __init__(self) -> None:
        self._repo: SqlSessionRepository | None = None
        self._path: Path | None = None

    async def open(self, setup: Setup) -> None:
        path = self._path = await setup.need_sqlite().copy(self.name)
        repo = SqlSessionRepository(f"sqlite+aiosqlite:///{path}")
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
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
