"""What ``create_session_repository()`` returns: the resilient wrapper over a SQLite file.

Judged against ``repo-sqlite`` (the bare backend) in the same run: the healthy
path of the wrapper should cost next to nothing.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from session_repo import SessionRepository, SessionStoreConfig, create_session_repository

__all__ = ["RepoResilient"]


class RepoResilient(LibrarySubject):
    name = "repo-resilient"
    description = "create_session_repository(url=sqlite file): ResilientSessionRepository"

    _path: Path | None = None

    async def build(self, setup: Setup) -> SessionRepository:
        self._path = await setup.need_sqlite().copy(self.name)
        config = SessionStoreConfig(url=f"sqlite+aiosqlite:///{self._path}")
        return create_session_repository(config)

    async def remove(self) -> None:
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
