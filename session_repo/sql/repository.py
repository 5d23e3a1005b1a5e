"""``SqlSessionRepository``: the contract on SQLAlchemy 2 async.

One engine per repository. Writes run in a transaction (``BEGIN IMMEDIATE`` on
SQLite); a deadlock or serialization failure is retried here with tenacity, so
callers never see one. Reads run without a transaction where the dialect allows.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from session_repo._base import BackendBase
from session_repo._inputs import Ttl
from session_repo._translate import is_conflict, storage_errors
from session_repo.clock import Clock
from session_repo.errors import InvalidInput, StorageError
from session_repo.sql.engine import (
    BEGIN_OPTION,
    configure_sqlite,
    create_engine,
    parse_url,
    sqlite_file,
)
from session_repo.sql.migrate import ensure_schema
from session_repo.sql.statements import statements_for

__all__ = ["SqlSessionRepository"]

T = TypeVar("T")

# Attempts for a deadlock or serialization failure inside one operation.
_CONFLICT_ATTEMPTS = 5


class SqlSessionRepository(BackendBase):
    """Bindings in a SQL database: ``sqlite+aiosqlite``, ``postgresql+asyncpg``, ``mysql+asyncmy``.

    ``auto_migrate=None`` upgrades the schema on open for SQLite and refuses a
    server database whose schema is behind with ``SchemaOutOfDate``.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        clock: Clock | None = None,
        default_ttl: Ttl = 600,
        cleanup_interval: float = 60,
        cleanup_batch: int = 5000,
        auto_migrate: bool | None = None,
        pool_size: int = 5,
        connect_timeout: float = 10,
        statement_timeout: float = 30,
    ) -> None:
        super().__init__(
            clock=clock,
            default_ttl=default_ttl,
            cleanup_interval=cleanup_interval,
            cleanup_batch=cleanup_batch,
        )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError("pool_size must be an int")
        if pool_size < 1:
            raise InvalidInput("pool_size must be >= 1")
        self._engine: AsyncEngine | None
        if isinstance(url_or_engine, AsyncEngine):
            self._url = url_or_engine.url
            self._engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, str | URL):
            self._url = parse_url(url_or_engine)
            self._engine = None
            self._owns_engine = True
        else:
            raise TypeError(
                "url_or_engine must be a database URL or an AsyncEngine, "
                f"not {type(url_or_engine).__name__}"
            )
        dialect = self._url.get_backend_name()
        self.backend = dialect
        self._sql = statements_for(dialect)
        self._auto_migrate = dialect == "sqlite" if auto_migrate is None else auto_migrate
        self._pool_size = pool_size
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("statement_timeout", statement_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise InvalidInput(f"{name} must be finite and > 0 seconds")
        self._timeouts = {
            "connect_timeout": connect_timeout,
            "statement_timeout": statement_timeout,
        }

    def __repr__(self) -> str:
        return f"SqlSessionRepository({self._url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> AsyncEngine:
        """The engine in use (for migrations and diagnostics); opens nothing."""
        if self._engine is None:
            raise StorageError("the repository is not open yet", transient=False)
        return self._engine

    # -- lifecycle -------------------------------------------------------

    async def _do_open(self) -> None:
        if self._engine is None:
            self._engine = create_engine(self._url, pool_size=self._pool_size, **self._timeouts)
        elif self.backend == "sqlite":
            configure_sqlite(self._engine)
        engine = self._engine
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._reader = engine.execution_options(**{BEGIN_OPTION: "NONE"})
        try:
            await ensure_schema(engine, auto_migrate=self._auto_migrate)
        except BaseException:
            await self._do_close()
            raise

    async def _do_close(self) -> None:
        engine = self._engine
        if engine is not None and self._owns_engine:
            self._engine = None
            await engine.dispose()

    # -- running statements ----------------------------------------------

    async def _write(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, retrying deadlocks and serialization failures."""
        with storage_errors(action):
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_conflict),
                stop=stop_after_attempt(_CONFLICT_ATTEMPTS),
                wait=wait_random_exponential(multiplier=0.005, max=0.1),
                reraise=True,
            ):
                with attempt:
                    async with self._writer.begin() as conn:
                        return await work(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with storage_errors(action):
            async with self._reader.connect() as conn:
                return await work(conn)

    # -- the hooks -------------------------------------------------------

    async def _do_upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        params = {"key": key, "alloc": alloc_id, "expires": expires_at}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.upsert, params)

        await self._write("upsert", work)

    async def _do_lookup(self, key: bytes, now: int) -> str | None:
        async def work(conn: AsyncConnection) -> str | None:
            result = await conn.execute(self._sql.lookup, {"key": key, "now": now})
            return result.scalar_one_or_none()

        return await self._read("lookup", work)

    async def _do_claim(
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

        return await self._write("claim", work)

    async def _do_touch(self, key: bytes, expires_at: int, now: int) -> bool:
        params = {"key": key, "expires": expires_at, "now": now}

        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.touch, params)).rowcount > 0

        return await self._write("touch", work)

    async def _do_delete(self, key: bytes, now: int) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.delete, {"key": key, "now": now})).rowcount > 0

        return await self._write("delete", work)

    async def _do_delete_owner(self, alloc_id: str, now: int) -> int:
        params = {"alloc": alloc_id, "now": now}

        async def work(conn: AsyncConnection) -> int:
            return (await conn.execute(self._sql.delete_owner, params)).rowcount

        return await self._write("delete_owner", work)

    async def _do_cleanup(self, now: int, batch: int) -> int:
        params = {"now": now, "batch": batch}

        async def one_batch(conn: AsyncConnection) -> int:
            return (await conn.execute(self._sql.cleanup_batch, params)).rowcount

        removed = 0
        while True:
            # Each batch is its own short transaction, so writers wait at most one batch.
            count = await self._write("cleanup", one_batch)
            removed += count
            if count < batch:
                return removed
            await asyncio.sleep(0)

    async def _do_gauges(self, now: int) -> tuple[int, int, int | None]:
        async def work(conn: AsyncConnection) -> tuple[int, int, int | None]:
            live, expired = (await conn.execute(self._sql.gauges, {"now": now})).one()
            size = await self._storage_bytes(conn)
            return int(live or 0), int(expired or 0), size

        return await self._read("metrics", work)

    async def _storage_bytes(self, conn: AsyncConnection) -> int | None:
        if self.backend == "sqlite":
            if sqlite_file(self._url) is None:
                return None
            query = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        elif self.backend == "postgresql":
            query = "SELECT pg_total_relation_size('session_bindings')"
        else:
            query = (
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'session_bindings'"
            )
        value = (await conn.execute(text(query))).scalar()
        return None if value is None else int(value)

    async def _do_ping(self) -> str:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 1"))

        await self._read("health check", work)
        return f"{self.backend}: {self._url.render_as_string(hide_password=True)}"
