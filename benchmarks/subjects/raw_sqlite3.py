"""Baseline: the standard library's ``sqlite3``, in-process, one connection.

Each operation is one statement in autocommit mode, so every write commits
before it returns, like the library's. The calls block the event loop for as
long as SQLite takes (microseconds here), which is what makes it the ceiling. The
statements are the library's own (``benchmarks.subjects.sql``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from benchmarks.database import remove_sqlite
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import PRAGMAS, SQLITE, digest, now_ms
from benchmarks.workload import TTL_MS

__all__ = ["RawSqlite3"]

LOOKUP, UPSERT, CLAIM, CURRENT = SQLITE.lookup, SQLITE.upsert, SQLITE.claim, SQLITE.current


class RawSqlite3:
    name = "sqlite3"
    description = "raw sqlite3, in-process, one connection, autocommit (WAL, synchronous=NORMAL)"
    server: str | None = None

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._path: Path | None = None

    async def open(self, setup: Setup) -> None:
        path = self._path = await setup.need_sqlite().copy(self.name)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            conn.execute(pragma)
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "open() first"
        return self._conn

    async def lookup(self, session_id: str) -> str | None:
        args = LOOKUP.args(key=digest(session_id), now=now_ms())
        row = self._db().execute(LOOKUP.sql, args).fetchone()
        return None if row is None else str(row[0])

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        now = now_ms()
        args = UPSERT.args(key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now)
        self._db().execute(UPSERT.sql, args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        db = self._db()
        key, now = digest(session_id), now_ms()
        args = CLAIM.args(key=key, alloc=alloc_id, expires=now + TTL_MS, now=now, replacing=None)
        # fetchall() steps the statement to its end, which commits it.
        rows = db.execute(CLAIM.sql, args).fetchall()  # the lease, when it took it
        if rows:
            return str(rows[0][0])
        return str(db.execute(CURRENT.sql, CURRENT.args(key=key)).fetchone()[0])

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._path is not None:
            remove_sqlite(self._path)
            self._path = None
