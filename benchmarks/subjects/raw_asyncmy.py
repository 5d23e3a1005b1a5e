"""Baseline: raw ``asyncmy``, a pool, one statement per operation.

``asyncmy.create_pool`` in autocommit mode with at most 10 connections; each
operation acquires a connection, runs one statement and releases it. The
statements are the library's own for a lone call (``benchmarks.subjects.sql``): a
lookup reads the binding's row with its owner's and judges liveness here, as the
library does; a claim is the library's ``INSERT .. ON DUPLICATE KEY UPDATE ..
RETURNING`` (MariaDB 10.5 and later), which returns the lease as the statement
left it, so who holds the session comes back in the same round trip.
"""

from __future__ import annotations

from typing import Any

import asyncmy

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import MARIADB, digest, live_row, now_ms
from benchmarks.workload import TTL_MS

__all__ = ["RawAsyncmy"]

LOOKUP, UPSERT, CLAIM = MARIADB.lookup, MARIADB.upsert, MARIADB.claim


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
        now = now_ms()  # the row with its owner's, judged here, as the library does
        return live_row(await self._fetch(LOOKUP.sql, LOOKUP.args(key=digest(session_id))), now)

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        now = now_ms()
        args = UPSERT.args(key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now)
        await self._fetch(UPSERT.sql, args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        now = now_ms()
        args = CLAIM.args(
            key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now, replacing=None
        )
        row = await self._fetch(CLAIM.sql, args)  # RETURNING: the lease as the statement left it
        if row is None:
            raise RuntimeError("claim returned no row")
        return str(row[0])

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
