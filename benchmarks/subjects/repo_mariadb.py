"""The library: ``SqlSessionRepository`` on ``mysql+asyncmy`` (MariaDB), as a user constructs it."""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from session_repo import SessionRepository, SqlSessionRepository

__all__ = ["RepoMariadb"]


class RepoMariadb(LibrarySubject):
    name = "repo-mariadb"
    description = "SqlSessionRepository('mysql+asyncmy://...'), library defaults"
    server: str | None = "mariadb"

    async def build(self, setup: Setup) -> SessionRepository:
        mariadb = setup.need_mariadb()
        await mariadb.reset()
        return SqlSessionRepository(mariadb.url)
