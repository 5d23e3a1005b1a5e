"""Baseline: ``aiosqlite`` with one connection, one thread hop per operation.

``execute_fetchall`` runs the statement and fetches its rows in a single trip to
the connection's thread; autocommit mode commits each write before it returns.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import CLAIM, LOOKUP, OWNER, PRAGMAS, UPSERT, digest, expiry_ms, now_ms

__all__ = ["RawAiosqlite"]


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
        rows = await self._db().execute_fetchall(LOOKUP, (digest(session_id), now_ms()))
        for row in rows:
            return str(row[0])
        return None

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._db().execute_fetchall(UPSERT, (digest(session_id), alloc_id, expiry_ms()))

    async def claim(self, session_id: str, alloc_id: str) -> str:
        db = self._db()
        key = digest(session_id)
        params = (key, alloc_id, expiry_ms(), now_ms(), None)
        for row in await db.execute_fetchall(CLAIM, params):
            return str(row[0])
        for row in await db.execute_fetchall(OWNER, (key,)):
            return str(row[0])
        raise RuntimeError("claim found no row after writing one")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
