"""The library: ``SqlSessionRepository`` on ``sqlite+aiosqlite``, as a user constructs it."""

from __future__ import annotations

from pathlib import Path

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from session_repo import SessionRepository, SqlSessionRepository

__all__ = ["RepoSqlite"]


class RepoSqlite(LibrarySubject):
    name = "repo-sqlite"
    description = "SqlSessionRepository('sqlite+aiosqlite:///file'), library defaults"

    _path: Path | None = None

    async def build(self, setup: Setup) -> SessionRepository:
        self._path = await setup.need_sqlite().copy(self.name)
        return SqlSessionRepository(f"sqlite+aiosqlite:///{self._path}")

    async def remove(self) -> None:
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
