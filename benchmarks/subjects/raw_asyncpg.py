"""Baseline: raw ``asyncpg``, a pool, one query per operation.

``asyncpg.create_pool`` with its default size (10 connections, as many as the
library's pool may open); each operation is one ``fetchval``/``execute`` on the
pool (acquire, one statement in autocommit, release), running the library's
own statements (``benchmarks.subjects.sql``). Released connections are not sent asyncpg's
default reset query (``RESET ALL`` and friends): that would be a second round
trip per operation, and this baseline makes exactly one.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import POSTGRES, digest, now_ms
from benchmarks.workload import TTL_MS

__all__ = ["RawAsyncpg"]

LOOKUP, UPSERT, CLAIM = POSTGRES.lookup, POSTGRES.upsert, POSTGRES.claim


async def _no_reset(_conn: Any) -> None:
    """Nothing to undo: the statements leave no session state behind."""


class RawAsyncpg:
    name = "asyncpg"
    description = "raw asyncpg pool (10 connections), one query per op, no reset on release"
    server: str | None = "postgresql"

    def __init__(self) -> None:
        self._pool: Any = None

    async def open(self, setup: Setup) -> None:
        postgres = setup.need_postgres()
        await postgres.reset()
        self._pool = await asyncpg.create_pool(postgres.dsn, reset=_no_reset)

    def _p(self) -> Any:
        assert self._pool is not None, "open() first"
        return self._pool

    async def lookup(self, session_id: str) -> str | None:
        args = LOOKUP.args(key=digest(session_id), now=now_ms())
        owner = await self._p().fetchval(LOOKUP.sql, *args)
        return None if owner is None else str(owner)

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        now = now_ms()
        args = UPSERT.args(key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now)
        await self._p().execute(UPSERT.sql, *args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        now = now_ms()
        args = CLAIM.args(
            key=digest(session_id), alloc=alloc_id, expires=now + TTL_MS, now=now, replacing=None
        )
        row = await self._p().fetchrow(CLAIM.sql, *args)  # always the lease, whoever holds it
        if row is None:
            raise RuntimeError("claim returned no row")
        return str(row[0])

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
