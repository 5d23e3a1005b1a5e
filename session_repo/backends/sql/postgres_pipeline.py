"""The PostgreSQL hot path: SQLAlchemy-compiled statements on the engine's asyncpg connections.

Why: through SQLAlchemy's async engine every operation pays a pool checkout with
pre-ping, BEGIN and COMMIT around its one statement: three or four round trips
where one does. Here each write is one autocommit statement (each is atomic on its
own), and two kinds of work travel together:

- the lookups and lease reads made in one event-loop tick go as one ``= ANY($1)``
  query, each binding with its owner's heartbeat row (one outer join by its key);
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
from session_repo._core.storage import Gauges, LeaseRow
from session_repo.backends.sql.batch_statements import pg_claims
from session_repo.backends.sql.batched_writes import Claim, claim_batch, upsert_batch
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.held_connections import HeldConnections
from session_repo.backends.sql.liveness import KEY_AT, answer_reads
from session_repo.backends.sql.server_pipeline import Read, ServerPipeline
from session_repo.backends.sql.statements import Statements
from session_repo.backends.sql.tombstones import released_view
from session_repo.errors import StorageError

__all__ = ["PostgresPipeline"]

T = TypeVar("T")
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class PostgresPipeline(ServerPipeline):
    """The contract's operations on PostgreSQL, on connections of the engine's pool.

    Args:
        engine: the repository's ``postgresql+asyncpg`` engine.
        statements: the postgresql dialect's statements.
        connections: the most connections held at once.
    """

    def __init__(self, engine: AsyncEngine, statements: Statements, *, connections: int) -> None:
        super().__init__(statements, _DIALECT)
        self._connections = HeldConnections(
            engine, connections, is_closed=lambda driver: bool(driver.is_closed())
        )
        self._reads = Batcher(self._read_batch)
        self._upserts = Batcher(self._upsert_batch)
        self._claims = Batcher(self._claim_batch, alone=self._claim_one)
        self._rows_many = Compiled.of(statements.rows_many, _DIALECT)
        self._upsert = Compiled.of(statements.upsert, _DIALECT)
        self._claim = Compiled.of(statements.claim, _DIALECT)
        self._claim_many = Compiled.of(pg_claims(), _DIALECT)

    async def close(self) -> None:
        await self._reads.drain()
        await self._upserts.drain()
        await self._claims.drain()
        await self._connections.close()

    async def _on_connection(self, work: Callable[[Any], Awaitable[T]]) -> T:
        connections = self._connections
        held = connections.idle() or await connections.acquire()
        try:
            result = await work(held[1])
        except BaseException:
            # Cut off mid-protocol (a cancellation, a dropped connection, a timeout): the
            # connection may still be busy with the statement, so it is never lent again.
            await connections.release(held, broken=True)
            raise
        if not connections.give_back(held):  # the server closed it meanwhile
            await connections.release(held, broken=True)
        return result

    async def _retrying(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await retry_conflicts(lambda: self._on_connection(work))

    # -- batches ------------------------------------------------------------

    async def _read_one(self, key: bytes, now: int, lease: bool) -> Any:
        if not lease:
            sql = self._lookup.sql
            return await self._on_connection(lambda c: c.fetchval(sql, key, now))
        row = await self._on_connection(lambda c: c.fetchrow(self._lease.sql, key, now))
        return None if row is None else LeaseRow(*row)

    async def _read_batch(self, requests: list[Read]) -> list[Any]:
        if len(requests) == 1:  # alone in its tick: the plain statement, no array
            return [await self._read_one(*requests[0])]
        keys = list({key for key, _, _ in requests})
        rows = await self._on_connection(lambda c: c.fetch(self._rows_many.sql, keys))
        return answer_reads(requests, {bytes(row[KEY_AT]): row for row in rows})

    async def _upsert_one(self, args: tuple[Any, ...]) -> None:
        await self._retrying(lambda c: c.execute(self._upsert.sql, *args))

    async def _upsert_batch(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        return await upsert_batch(requests, many=self._upsert_many, one=self._upsert_one)

    async def _upsert_many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._retrying(lambda c: c.executemany(self._upsert.sql, rows))

    async def _claim_batch(self, requests: list[Claim]) -> list[Any]:
        return await claim_batch(requests, many=self._claim_many_rows, one=self._claim_one)

    async def _claim_many_rows(self, claims: list[Claim], now: int) -> dict[bytes, LeaseRow]:
        keys, allocs, expireses = (
            [c[0] for c in claims],
            [c[1] for c in claims],
            [c[2] for c in claims],
        )
        args = self._claim_many.args(keys=keys, allocs=allocs, expireses=expireses, now=now)
        rows = await self._retrying(lambda c: c.fetch(self._claim_many.sql, *args))
        return {bytes(key): LeaseRow(str(owner), gen, end) for key, owner, gen, end in rows}

    async def _claim_one(self, request: Claim) -> LeaseRow:
        key, alloc_id, expires_at, now, replacing = request
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        # One round trip; the statement always locks the row and returns its lease.
        row = await self._retrying(lambda c: c.fetchrow(self._claim.sql, *args))
        if row is None:  # pragma: no cover - an upsert always returns its row
            raise StorageError("claim returned no owner", transient=True)
        return LeaseRow(str(row[0]), row[1], row[2])

    # -- operations ----------------------------------------------------------

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        args = self._upsert.args(key=key, alloc=alloc_id, expires=expires_at, now=now)
        await self._upserts.call(args)

    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        args = compiled.args(**values)
        status = await self._retrying(lambda c: c.execute(compiled.sql, *args))
        return _counted(status)

    async def release(self, alloc_id: str, now: int) -> int:
        row, live, dead = self._release_row, self._release_live, self._release_dead

        async def work(conn: Any) -> int:
            # The row first (heartbeats wait on it), then the bindings as of it, in one
            # transaction (see OwnerStatements).
            async with conn.transaction():
                owner = await conn.fetchrow(row.sql, *row.args(alloc=alloc_id))
                values = {"alloc": alloc_id, "now": now, "epoch": released_view(owner, now)}
                count = _counted(await conn.execute(live.sql, *live.args(**values)))
                await conn.execute(dead.sql, *dead.args(**values))
            return count

        return await self._retrying(work)

    async def owners(self, now: int) -> dict[str, int]:
        sql, args = self._owners.sql, self._owners.args(now=now)
        rows = await self._on_connection(lambda c: c.fetch(sql, *args))
        return {str(owner): int(end) for owner, end in rows}

    async def gauges(self, now: int) -> Gauges:
        async def read(conn: Any) -> Gauges:
            args = self._gauges.args(now=now)
            live, dead, owners = await conn.fetchrow(self._gauges.sql, *args)
            size = await conn.fetchval(self._size)
            size = None if size is None else int(size)
            return Gauges(int(live or 0), int(dead or 0), size, int(owners))

        return await self._on_connection(read)

    async def probe(self) -> None:
        await self._on_connection(lambda c: c.fetchval("SELECT 1"))


def _counted(status: object) -> int:
    """The row count of a command status: "UPDATE 1", "DELETE 3", "INSERT 0 1"."""
    return int(str(status).rsplit(" ", 1)[-1])
