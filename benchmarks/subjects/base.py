"""What a benchmarked stack provides, and what it gets to prepare itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from benchmarks.database import SqliteTemplate
from benchmarks.mariadb import MariadbTemplate
from benchmarks.postgres import PostgresTemplate
from benchmarks.redis_db import RedisTemplate
from benchmarks.workload import Dataset

__all__ = ["Setup", "Subject"]


@dataclass(frozen=True)
class Setup:
    """What a subject may use to preload itself: the sessions, a SQLite file, the servers."""

    dataset: Dataset
    sqlite: SqliteTemplate | None = None
    postgres: PostgresTemplate | None = None
    redis: RedisTemplate | None = None
    mariadb: MariadbTemplate | None = None
    heartbeats: bool = False
    """The library's subjects heartbeat every owner, so lookups check live owner rows."""

    def need_sqlite(self) -> SqliteTemplate:
        if self.sqlite is None:
            raise RuntimeError("this subject needs a SQLite file, and the run has none")
        return self.sqlite

    def need_postgres(self) -> PostgresTemplate:
        if self.postgres is None:
            raise RuntimeError("this subject needs PostgreSQL, and the run has none")
        return self.postgres

    def need_mariadb(self) -> MariadbTemplate:
        if self.mariadb is None:
            raise RuntimeError("this subject needs MariaDB, and the run has none")
        return self.mariadb

    def need_redis(self) -> RedisTemplate:
        if self.redis is None:
            raise RuntimeError("this subject needs Redis, and the run has none")
        return self.redis


class Subject(Protocol):
    """One stack under test. Every operation hashes the session id in its measured path."""

    name: str
    description: str
    server: str | None  # "postgresql", "mariadb" or "redis" when it needs that server, else None

    async def open(self, setup: Setup) -> None:
        """Get ready with the dataset's sessions preloaded (not measured)."""

    async def lookup(self, session_id: str) -> str | None: ...

    async def upsert(self, session_id: str, alloc_id: str) -> None: ...

    async def claim(self, session_id: str, alloc_id: str) -> str: ...

    async def close(self) -> None: ...
