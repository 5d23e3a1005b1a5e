"""The PostgreSQL hot path: SQLAlchemy-compiled statements on the engine's asyncpg connections.

Why: through SQLAlchemy's async engine every operation pays a pool checkout with
pre-ping, BEGIN and COMMIT around its one statement: three or four round trips
where one does. Here each write is one autocommit statement (each is atomic on its
own), and two kinds of work travel together:

- the lookups made in one event-loop tick go as one ``= ANY($1)`` query;
- the upserts made in one tick go as one pipelined ``executemany`` in one
  transaction, and its claims as one ``INSERT .. SELECT FROM unnest(..) ..
  RETURNING`` (``batched_writes``: keys sorted, a refused statement tried row by
  row, a lost answer never sent again).

Every caller is resolved only after its statement committed. The connections are
the engine's own (``held_connections.HeldConnections``), made exactly as SQLAlchemy
makes them for the URL; errors reach the front as asyncpg raised them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from session_repo._core.batching import Batcher
from session_repo._core.storage import Gauges
from session_repo.backends.sql.batched_writes import Claim, claim_batch, upsert_batch
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.held_connections import HeldConnections
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.statements import Statements, pg_claims
from session_repo.errors import StorageError

__all__ = ["PostgresPipeline"]

T = TypeVar("T")
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class PostgresPipeline(SqlPath):
    """The contract's operations on PostgreSQL, on connections of the engine's pool.

    Args:
        engine: the repository's ``postgresql+asyncpg`` engine.
        statements: the postgresql dialect's statements.
        connections: the most connections held at once.
    """

    def __init__(self, engine: AsyncEngine, statements: Statements, *, connections: int) -> None:
        self._connections = HeldConnections(
            engine, connections, is_closed=lambda driver: bool(driver.is_closed())
        )
        self._reads = Batcher(self._lookup_batch)
        self._upserts = Batcher(self._upsert_batch)
        self._claims = Batcher(self._claim_batch, alone=self._claim_one)
        compile_ = Compiled.of
        self._lookup = compile_(statements.lookup, _DIALECT)
        self._lookup_many = compile_(statements.rows_many, _DIALECT)
        self._size = str(statements.storage_size)
        self._upsert = compile_(statements.upsert, _DIALECT)
        self._claim = compile_(statements.claim, _DIALECT)
        self._claim_many = compile_(pg_claims(), _DIALECT)
        self._touch = compile_(statements.touch, _DIALECT)
        self._delete = compile_(statements.delete, _DIALECT)
        self._delete_owner = compile_(statements.delete_owner, _DIALECT)
        self._cleanup = compile_(statements.cleanup_batch, _DIALECT)
        self._gauges = compile_(statements.gauges, _DIALECT)

    async def close(self) -> None:
        await self._reads.drain()
        await self._upserts.drain()
        await self._claims.drain()
        await self._connections.close()

    async def _on_connection(self, work: Callable[[Any], Awaitable[T]]) -> T:
        held = await self._connections.acquire()
        try:
            result = await work(held[1])
        except BaseException:
            # Cut off mid-protocol (a cancellation, a dropped connection, a timeout): the
            # connection may still be busy with the statement, so it is never lent again.
            await self._connections.release(held, broken=True)
            raise
        await self._connections.release(held)
        return result

    async def _retrying(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await retry_conflicts(lambda: self._on_connection(work))

    # -- batches ------------------------------------------------------------

    async def _lookup_batch(self, requests: list[tuple[bytes, int]]) -> list[str | None]:
        if len(requests) == 1:  # alone in its tick: the plain statement, no array
            key, now = requests[0]
            return [await self._on_connection(lambda c: c.fetchval(self._lookup.sql, key, now))]
        keys = list({key for key, _ in requests})
        rows = await self._on_connection(lambda c: c.fetch(self._lookup_many.sql, keys))
        found = {bytes(key): (owner, expires) for key, owner, expires in rows}
        results: list[str | None] = []
        for key, now in requests:
            row = found.get(key)
            results.append(row[0] if row is not None and row[1] > now else None)
        return results

    async def _upsert_one(self, args: tuple[Any, ...]) -> None:
        await self._retrying(lambda c: c.execute(self._upsert.sql, *args))

    async def _upsert_batch(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        return await upsert_batch(requests, many=self._upsert_many, one=self._upsert_one)

    async def _upsert_many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._retrying(lambda c: c.executemany(self._upsert.sql, rows))

    async def _claim_batch(self, requests: list[Claim]) -> list[Any]:
        return await claim_batch(requests, many=self._claim_many_rows, one=self._claim_one)

    async def _claim_many_rows(self, claims: list[Claim], now: int) -> dict[bytes, str]:
        keys, allocs, expireses = (
            [c[0] for c in claims],
            [c[1] for c in claims],
            [c[2] for c in claims],
        )
        args = self._claim_many.args(keys=keys, allocs=allocs, expireses=expireses, now=now)
        rows = await self._retrying(lambda c: c.fetch(self._claim_many.sql, *args))
        return {bytes(key): str(owner) for key, owner in rows}

    async def _claim_one(self, request: Claim) -> str:
        key, alloc_id, expires_at, now, replacing = request
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        # One round trip; the statement always locks the row and returns its owner.
        owner = await self._retrying(lambda c: c.fetchval(self._claim.sql, *args))
        if owner is None:  # pragma: no cover - an upsert always returns its row
            raise StorageError("claim returned no owner", transient=True)
        return str(owner)

    # -- operations ----------------------------------------------------------

    async def lookup(self, key: bytes, now: int) -> str | None:
        owner: str | None = await self._reads.call((key, now))
        return owner

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        await self._upserts.call(self._upsert.args(key=key, alloc=alloc_id, expires=expires_at))

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        owner: str = await self._claims.call((key, alloc_id, expires_at, now, replacing))
        return owner

    async def _count(self, compiled: Compiled, **values: Any) -> int:
        args = compiled.args(**values)
        status = await self._retrying(lambda c: c.execute(compiled.sql, *args))
        return int(str(status).rsplit(" ", 1)[-1])  # "UPDATE 1", "DELETE 3"

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        return await self._count(self._touch, key=key, expires=expires_at, now=now) > 0

    async def delete(self, key: bytes, now: int) -> bool:
        return await self._count(self._delete, key=key, now=now) > 0

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return await self._count(self._delete_owner, alloc=alloc_id, now=now)

    async def cleanup_batch(self, now: int, batch: int) -> int:
        return await self._count(self._cleanup, now=now, batch=batch)

    async def gauges(self, now: int) -> Gauges:
        async def read(conn: Any) -> Gauges:
            live, expired = await conn.fetchrow(self._gauges.sql, *self._gauges.args(now=now))
            size = await conn.fetchval(self._size)
            return Gauges(int(live or 0), int(expired or 0), None if size is None else int(size))

        return await self._on_connection(read)

    async def probe(self) -> None:
        await self._on_connection(lambda c: c.fetchval("SELECT 1"))
