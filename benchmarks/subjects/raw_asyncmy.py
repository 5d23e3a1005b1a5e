"""Baseline: raw ``asyncmy``, a pool, one statement per operation.

``asyncmy.create_pool`` in autocommit mode with at most 10 connections; each
operation acquires a connection, runs one statement (the SQL the library's
MariaDB statements compile to) and releases it. Claim is the library's own
claim statement with ``RETURNING alloc_id`` appended: on MariaDB (10.5 and
later) ``INSERT .. ON DUPLICATE KEY UPDATE .. RETURNING`` returns the row as the
statement left it, so who holds the session comes back in the same round trip
whether the claim won or not.
"""

from __future__ import annotations

from typing import Any

import asyncmy

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import MY_CLAIM, MY_LOOKUP, MY_UPSERT, digest, expiry_ms, now_ms

__all__ = ["RawAsyncmy"]


class RawAsyncmy:
    name = "asyncmy"
    description = "raw asyncmy pool (10 connections, autocommit), one statement per op"
    server: str | None = "mariadb"

    def __init__(self) -> None:
        self._pool: Any = None

    async def open(self, setup: Setup) -> None:
        mariadb = setup.need_mariadb()
        await mariadb.reset()
        self._pool = await asyncmy.create_pool(**mariadb.connect_args, autocommit=True, maxsize=10)

    async def _fetch(self, statement: str, args: tuple[Any, ...]) -> Any:
        assert self._pool is not None, "open() first"
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, args)
            return await cursor.fetchone()

    async def lookup(self, session_id: str) -> str | None:
        row = await self._fetch(MY_LOOKUP, (digest(session_id), now_ms()))
        return None if row is None else str(row[0])

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._fetch(MY_UPSERT, (digest(session_id), alloc_id, expiry_ms()))

    async def claim(self, session_id: str, alloc_id: str) -> str:
        args = (digest(session_id), alloc_id, expiry_ms(), now_ms(), None)
        row = await self._fetch(MY_CLAIM, args)
        if row is None:
            raise RuntimeError("claim returned no row")
        return str(row[0])

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
