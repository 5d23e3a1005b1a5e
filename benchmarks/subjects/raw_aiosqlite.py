"""Baseline: ``aiosqlite`` with one connection, one thread hop per operation.

``execute_fetchall`` runs the statement and fetches its rows in a single trip to
the connection's thread; autocommit mode commits each write before it returns. The
statements are the library's own (``benchmarks.subjects.sql``).
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import PRAGMAS, SQLITE, digest, now_ms
from benchmarks.workload import TTL_MS

__all__ = ["RawAiosqlite"]

LOOKUP, UPSERT, CLAIM, CURRENT = SQLITE.lookup, SQLITE.upsert, SQLITE.claim, SQLITE.current


class RawAiosqlite:
    name = "aiosqlite"
    description = "raw aiosqlite, one connection, autocommit, one hop per op (execute_fetchall)"
    server: str | None = None

    def __init__(self) -> None:
        self._conn: aiosqlite.Connection | None = None
        self._path: Path | None = None

    async def open(self, setup: Setup) -> None:
        path = self._path = await setup.need_sqlite().copy(self.name)
        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            await conn.execute(pragma)
        self._conn = conn

    def _db(self) -> aiosqlite.Connection:
        assert self._conn is not None, "open() first"
        return self._conn

    async def lookup(self, session_id: str) -> str | None:
        args = LOOKUP.args(key=digest(session_id), now=now_ms())
        for row in await self._db().execute_fetchall(LOOKUP.sql, args):
            return str(row[0])
        return None

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        now = now_ms()
        args = UPSERT.args(key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now)
        await self._db().execute_fetchall(UPSERT.sql, args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        db = self._db()
        key, now = digest(session_id), now_ms()
        args = CLAIM.args(key=key, alloc=alloc_id, expires=now + TTL_MS, now=now, replacing=None)
        for row in await db.execute_fetchall(CLAIM.sql, args):  # the lease, when it took it
            return str(row[0])
        for row in await db.execute_fetchall(CURRENT.sql, CURRENT.args(key=key)):
            return str(row[0])
        raise RuntimeError("claim found no row after writing one")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
