"""The MariaDB hot path: SQLAlchemy-compiled statements on the engine's asyncmy connections.

Why: through SQLAlchemy's async engine every operation pays a pool checkout with
pre-ping, its statement, a COMMIT and the pool's rollback on return: four round
trips where one does. Here each operation is one autocommit statement (each is
atomic on its own; a claim is one ``INSERT .. ON DUPLICATE KEY UPDATE .. RETURNING``,
MariaDB 10.5 and later), and two kinds of work travel together, as on PostgreSQL:

- the lookups and lease reads made in one event-loop tick go as one ``IN (..)``
  query, each binding with its owner's heartbeat row (one outer join by its key);
- the upserts made in one tick go as one multi-row ``INSERT .. ON DUPLICATE KEY
  UPDATE`` (up to 64, one ``now``), and its claims as one multi-row claim
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
from session_repo._core.storage import Gauges, LeaseRow
from session_repo.backends.sql.batch_statements import mariadb_claims, mariadb_upserts, rows_of_keys
from session_repo.backends.sql.batched_writes import Claim, claim_batch, upsert_batch
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.errors import retry_conflicts
from session_repo.backends.sql.held_connections import HeldConnections
from session_repo.backends.sql.liveness import KEY_AT, answer_read, answer_reads
from session_repo.backends.sql.server_pipeline import Read, ServerPipeline
from session_repo.backends.sql.statements import Statements
from session_repo.backends.sql.tombstones import released_view
from session_repo.errors import StorageError

__all__ = ["MariadbPipeline", "has_fast_path"]

T = TypeVar("T")
_DIALECT = asyncmy_dialect()
# The most lookups one IN (..) query carries; more go as further queries.
_MAX_KEYS = 512
# The most claims (or upserts) one statement carries: each size is compiled once, and kept.
_MAX_WRITES = 64


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
    return Compiled.of(mariadb_claims(count), _DIALECT)


@cache
def _upserts_of(count: int) -> Compiled:
    return Compiled.of(mariadb_upserts(count), _DIALECT)


def _size_of(count: int) -> int:
    """The next power of two: few statement sizes, each compiled once."""
    return 1 << max(count - 1, 0).bit_length()


def _numbered(rows: list[tuple[Any, ...]], names: tuple[str, ...], now: int) -> dict[str, Any]:
    """A batch statement's named values: ``key0, alloc0, expires0, key1, ..`` and ``now``."""
    values: dict[str, Any] = {"now": now}
    for n, row in enumerate(rows):
        for name, value in zip(names, row, strict=False):
            values[f"{name}{n}"] = value
    return values


class MariadbPipeline(ServerPipeline):
    """The contract's operations on MariaDB, on connections of the engine's pool.

    Args:
        engine: the repository's ``mysql+asyncmy`` engine, on a MariaDB server.
        statements: the mysql dialect's statements.
        connections: the most connections held at once.
    """

    def __init__(self, engine: AsyncEngine, statements: Statements, *, connections: int) -> None:
        if statements.claim_returning is None:  # pragma: no cover - mysql statements have it
            raise ValueError("the MariaDB path needs a claim with RETURNING")
        super().__init__(statements, _DIALECT)
        self._connections = HeldConnections(
            engine,
            connections,
            is_closed=lambda driver: not driver.connected,
            options={"isolation_level": "AUTOCOMMIT"},
        )
        self._reads = Batcher(self._read_batch, alone=self._read_one)
        self._upserts = Batcher(self._upsert_batch, max_batch=_MAX_WRITES)
        self._claims = Batcher(self._claim_batch, max_batch=_MAX_WRITES, alone=self._claim_one)
        self._upsert = Compiled.of(statements.upsert, _DIALECT)
        self._claim = Compiled.of(statements.claim_returning, _DIALECT)
        # One key's row, for a lookup and for a lease read; the key is the only parameter.
        self._row_sql = (
            Compiled.of(statements.row_for_lookup, _DIALECT).sql,
            Compiled.of(statements.row_for_lease, _DIALECT).sql,
        )

    async def close(self) -> None:
        await self._reads.drain()
        await self._upserts.drain()
        await self._claims.drain()
        await self._connections.close()

    async def _on_cursor(self, work: Callable[[Any], Awaitable[T]]) -> T:
        connections = self._connections
        held = connections.idle() or await connections.acquire()
        try:
            async with held[1].cursor() as cursor:
                result = await work(cursor)
        except BaseException:
            # Cut off mid-protocol (a cancellation, a dropped connection, a timeout): the
            # connection may still be busy with the statement, so it is never lent again.
            await connections.release(held, broken=True)
            raise
        if not connections.give_back(held):  # the server closed it meanwhile
            await connections.release(held, broken=True)
        return result

    async def _retrying(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await retry_conflicts(lambda: self._on_cursor(work))

    @staticmethod
    async def _row(cursor: Any, sql: str, args: tuple[Any, ...] | None) -> Any:
        """The statement's first row, or None."""
        await cursor.execute(sql, args)
        return await cursor.fetchone()

    @staticmethod
    async def _count(cursor: Any, sql: str, args: tuple[Any, ...]) -> int:
        """How many rows the statement matched."""
        await cursor.execute(sql, args)
        return int(cursor.rowcount)

    # -- batches ------------------------------------------------------------

    async def _read_one(self, request: Read) -> Any:
        key, now, lease = request
        # The row with its owner's, judged here: MariaDB plans the owners join about
        # 15 us faster than the NOT EXISTS that decides liveness in the statement.
        # ``_on_cursor`` written out: a lone read is every quiet request's path, and
        # each coroutine layer costs it about 2k instructions.
        connections = self._connections
        held = connections.idle() or await connections.acquire()
        try:
            async with held[1].cursor() as cursor:
                await cursor.execute(self._row_sql[lease], (key,))
                row = await cursor.fetchone()
        except BaseException:  # as _on_cursor: never lent again
            await connections.release(held, broken=True)
            raise
        if not connections.give_back(held):
            await connections.release(held, broken=True)
        return answer_read(row, now, lease)

    async def _read_batch(self, requests: list[Read]) -> list[Any]:
        if len(requests) == 1:  # alone in its tick: the plain statement
            return [await self._read_one(requests[0])]
        keys = list({key for key, _, _ in requests})
        found: dict[bytes, Any] = {}
        for start in range(0, len(keys), _MAX_KEYS):
            for row in await self._rows(keys[start : start + _MAX_KEYS]):
                found[bytes(row[KEY_AT])] = row
        return answer_reads(requests, found)

    async def _rows(self, keys: list[bytes]) -> Any:
        """The owned rows of ``keys``, whatever their liveness, in one query."""
        size = _size_of(len(keys))
        padded = tuple(keys + [keys[-1]] * (size - len(keys)))  # a repeat changes nothing

        async def read(cursor: Any) -> Any:
            await cursor.execute(_rows_of(size).sql, padded)
            return await cursor.fetchall()

        return await self._on_cursor(read)

    async def _upsert_one(self, request: tuple[Any, ...]) -> None:
        key, alloc_id, expires_at, now = request
        args = self._upsert.args(key=key, alloc=alloc_id, expires=expires_at, now=now)
        await self._retrying(lambda c: c.execute(self._upsert.sql, args))

    async def _upsert_batch(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        return await upsert_batch(requests, many=self._upsert_many, one=self._upsert_one)

    async def _upsert_many(self, rows: list[tuple[Any, ...]]) -> None:
        # One statement, one ``now`` (the latest): liveness read later takes fresh more often.
        statement = _upserts_of(len(rows))
        values = _numbered(rows, ("key", "alloc", "expires"), max(row[3] for row in rows))
        args = statement.args(**values)
        await self._retrying(lambda c: c.execute(statement.sql, args))

    async def _claim_batch(self, requests: list[Claim]) -> list[Any]:
        return await claim_batch(requests, many=self._claim_many, one=self._claim_one)

    async def _claim_many(self, claims: list[Claim], now: int) -> dict[bytes, LeaseRow]:
        statement = _claims_of(len(claims))
        args = statement.args(**_numbered(claims, ("key", "alloc", "expires"), now))

        async def run(cursor: Any) -> Any:
            await cursor.execute(statement.sql, args)
            return await cursor.fetchall()

        rows = await self._retrying(run)
        return {bytes(key): LeaseRow(str(owner), gen, end) for key, owner, gen, end in rows}

    async def _claim_one(self, request: Claim) -> LeaseRow:
        key, alloc_id, expires_at, now, replacing = request
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        row = await self._retrying(lambda c: self._row(c, self._claim.sql, args))
        if row is None:  # pragma: no cover - the statement always returns its row
            raise StorageError("claim returned no owner", transient=True)
        return LeaseRow(str(row[0]), row[1], row[2])

    # -- operations ----------------------------------------------------------

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        await self._upserts.call((key, alloc_id, expires_at, now))

    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        args = compiled.args(**values)
        return await self._retrying(lambda c: self._count(c, compiled.sql, args))

    async def release(self, alloc_id: str, now: int) -> int:
        row, live, dead = self._release_row, self._release_live, self._release_dead

        async def work(cursor: Any) -> int:
            # The row first (heartbeats wait on it), then the bindings as of it, in one
            # transaction (see OwnerStatements). A failure drops the connection
            # (``_on_cursor``), which rolls it back.
            await cursor.execute("START TRANSACTION")
            owner = await self._row(cursor, row.sql, row.args(alloc=alloc_id))
            values = {"alloc": alloc_id, "now": now, "epoch": released_view(owner, now)}
            count = await self._count(cursor, live.sql, live.args(**values))
            await cursor.execute(dead.sql, dead.args(**values))
            await cursor.execute("COMMIT")
            return count

        return await self._retrying(work)

    async def owners(self, now: int) -> dict[str, int]:
        args = self._owners.args(now=now)

        async def read(cursor: Any) -> Any:
            await cursor.execute(self._owners.sql, args)
            return await cursor.fetchall()

        return {str(owner): int(end) for owner, end in await self._on_cursor(read)}

    async def gauges(self, now: int) -> Gauges:
        async def read(cursor: Any) -> Gauges:
            await cursor.execute(self._gauges.sql, self._gauges.args(now=now))
            live, dead, owners = await cursor.fetchone()
            size = (await self._row(cursor, self._size, None))[0]
            size = None if size is None else int(size)
            return Gauges(int(live or 0), int(dead or 0), size, int(owners))

        return await self._on_cursor(read)

    async def probe(self) -> None:
        await self._on_cursor(lambda c: self._row(c, "SELECT 1", None))
