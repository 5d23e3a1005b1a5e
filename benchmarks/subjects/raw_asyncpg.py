"""Baseline: raw ``asyncpg``, a pool, one query per operation.

``asyncpg.create_pool`` with its default size (10 connections, as many as the
library's pool may open); each operation is one ``fetchval``/``execute`` on the
pool (acquire, one statement in autocommit, release), running the SQL the
library's statements compile to. Released connections are not sent asyncpg's
default reset query (``RESET ALL`` and friends): that would be a second round
trip per operation, and this baseline makes exactly one.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import (
    PG_CLAIM,
    PG_LOOKUP,
    PG_OWNER,
    PG_UPSERT,
    digest,
    expiry_ms,
    now_ms,
)

__all__ = ["RawAsyncpg"]


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
        owner = await self._p().fetchval(PG_LOOKUP, digest(session_id), now_ms())
        return None if owner is None else str(owner)

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._p().execute(PG_UPSERT, digest(session_id), alloc_id, expiry_ms())

    async def claim(self, session_id: str, alloc_id: str) -> str:
        pool = self._p()
        key = digest(session_id)
        owner = await pool.fetchval(PG_CLAIM, key, alloc_id, expiry_ms(), now_ms(), None)
        if owner is None:  # a live binding of someone else's: read who holds it
            owner = await pool.fetchval(PG_OWNER, key)
        if owner is None:
            raise RuntimeError("claim found no row after writing one")
        return str(owner)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
