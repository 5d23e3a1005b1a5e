"""The MariaDB hot path: SQLAlchemy-compiled statements on the engine's asyncmy connections.

Why: through SQLAlchemy's async engine every operation pays a pool checkout with
pre-ping, its statement, a COMMIT and the pool's rollback on return: four round
trips where one does. Here each operation is one autocommit statement (each is
atomic on its own; a claim is one ``INSERT .. ON DUPLICATE KEY UPDATE .. RETURNING``,
MariaDB 10.5 and later), and two kinds of work travel together, as on PostgreSQL:

- the lookups made in one event-loop tick go as one ``IN (..)`` query;
- the upserts made in one tick go as one multi-row ``INSERT .. ON DUPLICATE KEY
  UPDATE`` (asyncmy's ``executemany``), and its claims as one multi-row claim
  ``.. RETURNING`` (``batched_writes``: keys sorted, a refused statement tried row
  by row, a lost answer never sent again).

Every caller is resolved only after its statement committed. The connections are
the engine's own (``held_connections.HeldConnections``), in ``AUTOCOMMIT``; errors
reach the front as asyncmy raised them. MySQL has no ``RETURNING``: it stays on
``EngineOps``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy.dialects.mysql.asyncmy import dialect as asyncmy_dialect
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.ext.asyncio import AsyncEngine

from session_repo._core.batching import Batcher
from session_repo._core.storage import Gauges
from session_repo.backends.sql.batched_writes import Claim, claim_batch, upsert_batch
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.held_connections import HeldConnections
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.statements import Statements, claims_of, rows_of_keys
from session_repo.errors import StorageError

__all__ = ["MariadbPipeline", "has_fast_path"]

T = TypeVar("T")
_DIALECT = asyncmy_dialect()
# The most lookups one IN (..) query carries; more go as further queries.
_MAX_KEYS = 512
# The most claims one statement carries: each size is compiled once, and kept.
_MAX_CLAIMS = 64


def has_fast_path(engine: AsyncEngine) -> bool:
    """Whether ``engine`` (connected once) is asyncmy on MariaDB 10.5 or later.

    Args:
        engine: the repository's engine, after it has connected (the dialect then
            knows the server).
    """
    dialect = engine.dialect
    if not isinstance(dialect, MySQLDialect) or dialect.driver != "asyncmy":
        return False
    return bool(dialect.is_mariadb) and tuple(dialect.server_version_info or ()) >= (10, 5)


@cache
def _rows_of(count: int) -> Compiled:
    return Compiled.of(rows_of_keys(count), _DIALECT)


@cache
def _claims_of(count: int) -> Compiled:
    return Compiled.of(claims_of(count), _DIALECT)


def _size_of(count: int) -> int:
    """The next power of two: few statement sizes, each compiled once."""
    return 1 << max(count - 1, 0).bit_length()


class MariadbPipeline(SqlPath):
    """The contract's operations on MariaDB, on connections of the engine's pool.

    Args:
        engine: the repository's ``mysql+asyncmy`` engine, on a MariaDB server.
        statements: the mysql dialect's statements.
        connections: the most connections held at once.
    """

    def __init__(self, engine: AsyncEngine, statements: Statements, *, connections: int) -> None:
        if statements.claim_returning is None:  # pragma: no cover - mysql statements have it
            raise ValueError("the MariaDB path needs a claim with RETURNING")
        self._connections = HeldConnections(
            engine,
            connections,
            is_closed=lambda driver: not driver.connected,
            options={"isolation_level": "AUTOCOMMIT"},
        )
        self._reads = Batcher(self._lookup_batch)
        self._upserts = Batcher(self._upsert_batch)
        self._claims = Batcher(self._claim_batch, max_batch=_MAX_CLAIMS, alone=self._claim_one)
        compile_ = Compiled.of
        self._lookup = compile_(statements.lookup, _DIALECT)
        self._size = str(statements.storage_size)
        self._upsert = compile_(statements.upsert, _DIALECT)
        self._claim = compile_(statements.claim_returning, _DIALECT)
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

    async def _on_cursor(self, work: Callable[[Any], Awaitable[T]]) -> T:
        held = await self._connections.acquire()
        try:
            async with held[1].cursor() as cursor:
                result = await work(cursor)
        except BaseException:
            # Cut off mid-protocol (a cancellation, a dropped connection, a timeout): the
            # connection may still be busy with the statement, so it is never lent again.
            await self._connections.release(held, broken=True)
            raise
        await self._connections.release(held)
        return result

    async def _retrying(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await retry_conflicts(lambda: self._on_cursor(work))

    @staticmethod
    async def _one(cursor: Any, sql: str, args: tuple[Any, ...] | None) -> Any:
        """The first column of the statement's first row, or None."""
        await cursor.execute(sql, args)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    @staticmethod
    async def _count(cursor: Any, sql: str, args: tuple[Any, ...]) -> int:
        """How many rows the statement matched."""
        await cursor.execute(sql, args)
        return int(cursor.rowcount)

    # -- batches ------------------------------------------------------------

    async def _lookup_batch(self, requests: list[tuple[bytes, int]]) -> list[str | None]:
        if len(requests) == 1:  # alone in its tick: the plain statement
            key, now = requests[0]
            return [await self._on_cursor(lambda c: self._one(c, self._lookup.sql, (key, now)))]
        keys = list({key for key, _ in requests})
        found: dict[bytes, tuple[str, int]] = {}
        for start in range(0, len(keys), _MAX_KEYS):
            for key, owner, expires in await self._rows(keys[start : start + _MAX_KEYS]):
                found[bytes(key)] = (owner, expires)
        results: list[str | None] = []
        for key, now in requests:
            row = found.get(key)
            results.append(row[0] if row is not None and row[1] > now else None)
        return results

    async def _rows(self, keys: list[bytes]) -> Any:
        """The rows of ``keys``, whatever their expiry, in one query."""
        size = _size_of(len(keys))
        padded = tuple(keys + [keys[-1]] * (size - len(keys)))  # a repeat changes nothing

        async def read(cursor: Any) -> Any:
            await cursor.execute(_rows_of(size).sql, padded)
            return await cursor.fetchall()

        return await self._on_cursor(read)

    async def _upsert_one(self, args: tuple[Any, ...]) -> None:
        await self._retrying(lambda c: c.execute(self._upsert.sql, args))

    async def _upsert_batch(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        return await upsert_batch(requests, many=self._upsert_many, one=self._upsert_one)

    async def _upsert_many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._retrying(lambda c: c.executemany(self._upsert.sql, rows))

    async def _claim_batch(self, requests: list[Claim]) -> list[Any]:
        return await claim_batch(requests, many=self._claim_many, one=self._claim_one)

    async def _claim_many(self, claims: list[Claim], now: int) -> dict[bytes, str]:
        statement = _claims_of(len(claims))
        args = (*(value for claim in claims for value in claim[:3]), now)

        async def run(cursor: Any) -> Any:
            await cursor.execute(statement.sql, args)
            return await cursor.fetchall()

        return {bytes(key): str(owner) for key, owner in await self._retrying(run)}

    async def _claim_one(self, request: Claim) -> str:
        key, alloc_id, expires_at, now, replacing = request
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        owner = await self._retrying(lambda c: self._one(c, self._claim.sql, args))
        if owner is None:  # pragma: no cover - the statement always returns its row
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

    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        args = compiled.args(**values)
        return await self._retrying(lambda c: self._count(c, compiled.sql, args))

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        return await self._matched(self._touch, key=key, expires=expires_at, now=now) > 0

    async def delete(self, key: bytes, now: int) -> bool:
        return await self._matched(self._delete, key=key, now=now) > 0

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return await self._matched(self._delete_owner, alloc=alloc_id, now=now)

    async def cleanup_batch(self, now: int, batch: int) -> int:
        return await self._matched(self._cleanup, now=now, batch=batch)

    async def gauges(self, now: int) -> Gauges:
        async def read(cursor: Any) -> Gauges:
            await cursor.execute(self._gauges.sql, self._gauges.args(now=now))
            live, expired = await cursor.fetchone()
            size = await self._one(cursor, self._size, None)
            return Gauges(int(live or 0), int(expired or 0), None if size is None else int(size))

        return await self._on_cursor(read)

    async def probe(self) -> None:
        await self._on_cursor(lambda c: self._one(c, "SELECT 1", None))
