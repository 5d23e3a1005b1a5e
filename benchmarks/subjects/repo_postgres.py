"""The library: ``SqlSessionRepository`` on ``postgresql+asyncpg``, as a user constructs it."""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from session_repo import SessionRepository, SqlSessionRepository

__all__ = ["RepoPostgres"]


class RepoPostgres(LibrarySubject):
    name = "repo-pg"
    description = "SqlSessionRepository('postgresql+asyncpg://...'), library defaults"
    server: str | None = "postgresql"

    async def build(self, setup: Setup) -> SessionRepository:
        postgres = setup.need_postgres()
        await postgres.reset()
        return SqlSessionRepository(postgres.url)
