"""The contract's operations through a SQLAlchemy ``AsyncEngine`` (every dialect).

Writes run in one transaction each (``BEGIN IMMEDIATE`` on SQLite); a deadlock or
serialization failure is retried here with tenacity, so callers never see one.
Reads run without a transaction where the dialect allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_repo._core.storage import Gauges
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.sqlite_engine import BEGIN_OPTION
from session_repo.backends.sql.statements import Statements
from session_repo.errors import StorageError

__all__ = ["EngineOps"]

T = TypeVar("T")


class EngineOps(SqlPath):
    """Each operation as one short transaction on a pooled connection.

    Args:
        engine: the repository's engine.
        statements: its dialect's statements.
        sized: read the storage size for ``metrics()`` (not for in-memory SQLite).
    """

    def __init__(self, engine: AsyncEngine, statements: Statements, *, sized: bool) -> None:
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._reader = engine.execution_options(**{BEGIN_OPTION: "NONE"})
        self._sql = statements
        self._sized = sized

    async def close(self) -> None:
        return None

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def attempt() -> T:
            async with self._writer.begin() as conn:
                return await work(conn)

        return await retry_conflicts(attempt)

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._reader.connect() as conn:
            return await work(conn)

    async def lookup(self, key: bytes, now: int) -> str | None:
        async def work(conn: AsyncConnection) -> str | None:
            result = await conn.execute(self._sql.lookup, {"key": key, "now": now})
            return result.scalar_one_or_none()

        return await self._read(work)

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        params = {"key": key, "alloc": alloc_id, "expires": expires_at}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.upsert, params)

        await self._write(work)

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        params = {
            "key": key,
            "alloc": alloc_id,
            "expires": expires_at,
            "now": now,
            "replacing": replacing,
        }

        async def work(conn: AsyncConnection) -> str:
            result = await conn.execute(self._sql.claim, params)
            if self._sql.claim_returns_owner:
                taken = result.scalar_one_or_none()
                if taken is not None:
                    return str(taken)
            owner = (await conn.execute(self._sql.owner, {"key": key})).scalar_one_or_none()
            if owner is None:
                raise StorageError("claim found no row after writing one", transient=True)
            return owner

        return await self._write(work)

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        params = {"key": key, "expires": expires_at, "now": now}

        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.touch, params)).rowcount > 0

        return await self._write(work)

    async def delete(self, key: bytes, now: int) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.delete, {"key": key, "now": now})).rowcount > 0

        return await self._write(work)

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        params = {"alloc": alloc_id, "now": now}

        async def work(conn: AsyncConnection) -> int:
            return (await conn.execute(self._sql.delete_owner, params)).rowcount

        return await self._write(work)

    async def cleanup_batch(self, now: int, batch: int) -> int:
        params = {"now": now, "batch": batch}

        async def work(conn: AsyncConnection) -> int:
            return (await conn.execute(self._sql.cleanup_batch, params)).rowcount

        return await self._write(work)

    async def gauges(self, now: int) -> Gauges:
        async def work(conn: AsyncConnection) -> Gauges:
            live, expired = (await conn.execute(self._sql.gauges, {"now": now})).one()
            size = None
            if self._sized:
                value = (await conn.execute(self._sql.storage_size)).scalar()
                size = None if value is None else int(value)
            return Gauges(int(live or 0), int(expired or 0), size)

        return await self._read(work)

    async def probe(self) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 1"))

        await self._read(work)
