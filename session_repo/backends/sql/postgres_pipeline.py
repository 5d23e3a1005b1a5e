"""The PostgreSQL hot path: SQLAlchemy-compiled statements on an asyncpg pool.

Why: through SQLAlchemy's async engine every operation pays a pool checkout with
pre-ping, BEGIN and COMMIT around its one statement: three or four round trips
where one does. Here each write is one autocommit statement (each is atomic on its
own), and two kinds of work travel together:

- the lookups made in one event-loop tick go as one ``= ANY($1)`` query;
- the upserts made in one tick go as one pipelined ``executemany`` in one
  transaction, keys sorted so that two instances never deadlock; if that fails,
  each upsert is tried alone, so one bad row fails only its own caller.

Every caller is resolved only after its statement committed. Connections come
from the repository's engine (then leave its pool), so they are made exactly as
SQLAlchemy makes them for the URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import LargeBinary, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from session_repo._core.batching import TickBatcher
from session_repo._core.storage import Gauges
from session_repo._core.translate import is_conflict
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.model import bindings
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.statements import Statements
from session_repo.errors import StorageError

__all__ = ["PostgresPipeline"]

T = TypeVar("T")
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_LOOKUP_MANY = Compiled.of(
    select(bindings.c.session_key, bindings.c.alloc_id, bindings.c.expires_at).where(
        bindings.c.session_key == any_(bindparam("keys", type_=ARRAY(LargeBinary)))
    ),
    _DIALECT,
)
_SIZE = "SELECT pg_total_relation_size('session_bindings')"
# Attempts for a deadlock or serialization failure inside one operation.
CONFLICT_ATTEMPTS = 5


async def _no_reset(_conn: Any) -> None:
    """Nothing to undo on release: these statements leave no session state behind
    (no SET, LISTEN, advisory lock or open cursor). asyncpg's default reset would
    cost a second round trip per operation."""


def _from_engine(engine: AsyncEngine) -> Callable[..., Awaitable[Any]]:
    """An asyncpg pool ``connect`` callback that takes each connection from ``engine``.

    So every connection is made exactly as SQLAlchemy makes it for that engine: the
    dialect's reading of the URL (``?ssl=``, ``?command_timeout=`` ...), the engine's
    ``connect_args`` and its ``connect`` events. The connection is then detached from
    the engine's pool and belongs to the asyncpg pool alone.
    """

    async def connect(*_args: Any, **_kwargs: Any) -> Any:
        proxied = await engine.raw_connection()
        driver = proxied.driver_connection
        proxied.detach()  # the engine forgets it; closing the asyncpg pool closes it
        return driver

    return connect


class PostgresPipeline(SqlPath):
    """The contract's operations on PostgreSQL through one asyncpg pool."""

    def __init__(self, pool: Any, statements: Statements) -> None:
        self._pool = pool
        self._reads = TickBatcher(self._lookup_batch)
        self._upserts = TickBatcher(self._upsert_batch)
        compile_ = Compiled.of
        self._lookup = compile_(statements.lookup, _DIALECT)
        self._upsert = compile_(statements.upsert, _DIALECT)
        self._claim = compile_(statements.claim, _DIALECT)
        self._touch = compile_(statements.touch, _DIALECT)
        self._delete = compile_(statements.delete, _DIALECT)
        self._delete_owner = compile_(statements.delete_owner, _DIALECT)
        self._cleanup = compile_(statements.cleanup_batch, _DIALECT)
        self._gauges = compile_(statements.gauges, _DIALECT)

    @classmethod
    async def connect(
        cls, engine: AsyncEngine, statements: Statements, *, pool_size: int
    ) -> PostgresPipeline:
        """A pipeline whose connections ``engine`` makes (see ``_from_engine``)."""
        import asyncpg

        pool = await asyncpg.create_pool(
            min_size=0,  # no connection floor to restore (and log) during an outage
            max_size=pool_size * 2,
            max_inactive_connection_lifetime=60,
            reset=_no_reset,
            connect=_from_engine(engine),
        )
        return cls(pool, statements)

    async def close(self) -> None:
        await self._reads.drain()
        await self._upserts.drain()
        await self._pool.close()

    async def _retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(CONFLICT_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.005, max=0.1),
            reraise=True,
        ):
            with attempt:
                return await work()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- batches ------------------------------------------------------------

    async def _lookup_batch(self, requests: list[tuple[bytes, int]]) -> list[str | None]:
        if len(requests) == 1:  # alone in its tick: the plain statement, no array
            key, now = requests[0]
            return [await self._pool.fetchval(self._lookup.sql, key, now)]
        keys = list({key for key, _ in requests})
        rows = await self._pool.fetch(_LOOKUP_MANY.sql, keys)
        found = {bytes(key): (owner, expires) for key, owner, expires in rows}
        results: list[str | None] = []
        for key, now in requests:
            row = found.get(key)
            results.append(row[0] if row is not None and row[1] > now else None)
        return results

    async def _upsert_one(self, args: tuple[Any, ...]) -> None:
        await self._retrying(lambda: self._pool.execute(self._upsert.sql, *args))

    async def _upsert_batch(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        if len(requests) == 1:
            await self._upsert_one(requests[0])
            return [None]
        rows = sorted(requests, key=lambda args: args[0])  # one lock order for every instance
        try:
            await self._retrying(lambda: self._pool.executemany(self._upsert.sql, rows))
        except Exception:  # find the bad one(s): each upsert alone, each its own outcome
            outcomes: list[Any] = []
            for args in requests:
                try:
                    await self._upsert_one(args)
                    outcomes.append(None)
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes
        return [None] * len(requests)

    # -- operations ----------------------------------------------------------

    async def lookup(self, key: bytes, now: int) -> str | None:
        owner: str | None = await self._reads.submit((key, now))
        return owner

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        await self._upserts.submit(self._upsert.args(key=key, alloc=alloc_id, expires=expires_at))

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        # One round trip; the statement always locks the row and returns its owner.
        owner = await self._retrying(lambda: self._pool.fetchval(self._claim.sql, *args))
        if owner is None:  # pragma: no cover - an upsert always returns its row
            raise StorageError("claim returned no owner", transient=True)
        return str(owner)

    async def _count(self, compiled: Compiled, **values: Any) -> int:
        args = compiled.args(**values)
        status = await self._retrying(lambda: self._pool.execute(compiled.sql, *args))
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
        async with self._pool.acquire() as conn:
            live, expired = await conn.fetchrow(self._gauges.sql, *self._gauges.args(now=now))
            size = await conn.fetchval(_SIZE)
        return Gauges(int(live or 0), int(expired or 0), None if size is None else int(size))

    async def probe(self) -> None:
        await self._pool.fetchval("SELECT 1")
