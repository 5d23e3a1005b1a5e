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

from session_repo._core.storage import Gauges, LeaseRow
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.path import SqlPath, Swept
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

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        async def work(conn: AsyncConnection) -> LeaseRow | None:
            row = (await conn.execute(self._sql.lease, {"key": key, "now": now})).one_or_none()
            return None if row is None else LeaseRow(*row)

        return await self._read(work)

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        params = {"key": key, "alloc": alloc_id, "expires": expires_at, "now": now}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.upsert, params)

        await self._write(work)

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return (await self.acquire(key, alloc_id, expires_at, now, replacing)).owner

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        params = {
            "key": key,
            "alloc": alloc_id,
            "expires": expires_at,
            "now": now,
            "replacing": replacing,
        }

        async def work(conn: AsyncConnection) -> LeaseRow:
            result = await conn.execute(self._sql.claim, params)
            if self._sql.claim_returns_lease:
                taken = result.one_or_none()
                if taken is not None:
                    return LeaseRow(*taken)
            # In the claim's transaction: the row it left is locked (or SQLite's writer).
            row = (await conn.execute(self._sql.current, {"key": key})).one_or_none()
            if row is None:
                raise StorageError("claim found no row after writing one", transient=True)
            return LeaseRow(*row)

        return await self._write(work)

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        params = {"key": key, "expires": expires_at, "now": now, "generation": generation}
        statement = self._sql.touch if generation is None else self._sql.touch_held

        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(statement, params)).rowcount > 0

        return await self._write(work)

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        params = {"key": key, "now": now, "generation": generation}
        statement = self._sql.delete if generation is None else self._sql.delete_held

        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(statement, params)).rowcount > 0

        return await self._write(work)

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        params = {"alloc": alloc_id, "now": now}

        async def work(conn: AsyncConnection) -> int:
            return (await conn.execute(self._sql.delete_owner, params)).rowcount

        return await self._write(work)

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        params = {"alloc": alloc_id, "expires": expires_at, "now": now}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.owner.heartbeat, params)

        await self._write(work)

    async def release(self, alloc_id: str, now: int) -> int:
        params = {"alloc": alloc_id, "now": now}
        owner = self._sql.owner

        async def work(conn: AsyncConnection) -> int:
            # Bindings first, the row last: one transaction, so none outlives the row.
            live = (await conn.execute(self._sql.delete_owner, params)).rowcount
            await conn.execute(owner.release_rest, params)
            await conn.execute(owner.release_owner, params)
            return int(live)

        return await self._write(work)

    async def owners(self, now: int) -> dict[str, int]:
        async def work(conn: AsyncConnection) -> dict[str, int]:
            rows = await conn.execute(self._sql.owner.owners, {"now": now})
            return {str(owner): int(end) for owner, end in rows}

        return await self._read(work)

    async def cleanup_batch(self, now: int, batch: int) -> Swept:
        owner = self._sql.owner

        async def work(conn: AsyncConnection) -> Swept:
            params = {"now": now, "batch": batch}
            removed = int((await conn.execute(self._sql.cleanup_batch, params)).rowcount)
            marked = 0
            if removed < batch:
                params["batch"] = batch - removed
                lapsed = int((await conn.execute(owner.cleanup_lapsed, params)).rowcount)
                if owner.marks_lapsed:
                    marked = lapsed
                else:
                    removed += lapsed
            if removed + marked < batch:
                await conn.execute(owner.cleanup_owners, params)
            return Swept(removed, marked)

        return await self._write(work)

    async def gauges(self, now: int) -> Gauges:
        async def work(conn: AsyncConnection) -> Gauges:
            live, dead, owners = (await conn.execute(self._sql.gauges, {"now": now})).one()
            size = None
            if self._sized:
                value = (await conn.execute(self._sql.storage_size)).scalar()
                size = None if value is None else int(value)
            return Gauges(int(live or 0), int(dead or 0), size, int(owners or 0))

        return await self._read(work)

    async def probe(self) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 1"))

        await self._read(work)
