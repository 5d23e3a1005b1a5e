"""``SqlSessionRepository``: the contract on SQLAlchemy 2 async.

One engine per repository owns the schema (Alembic, on open). Operations take the
fastest path the database has: a SQLite file goes through ``SqlitePipeline``
(batched, two connections of a sync SQLAlchemy engine on their own threads),
PostgreSQL on asyncpg through ``PostgresPipeline`` and MariaDB on asyncmy through
``MariadbPipeline`` (the engine's own connections, one round trip per operation,
lookups and upserts batched), anything else through
``EngineOps`` (SQLAlchemy's async engine, one short transaction per operation). All
run statements built in ``statements`` and compiled by SQLAlchemy; the front
translates their errors with this backend's table (``errors.is_transient``).
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from session_repo._core.front import StoreFront
from session_repo._core.inputs import (
    DEFAULT_TTL,
    Ttl,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from session_repo.backends.sql.engine import create_engine, parse_url, shown_url, sqlite_file
from session_repo.backends.sql.engine_ops import EngineOps
from session_repo.backends.sql.errors import is_transient
from session_repo.backends.sql.mariadb_pipeline import MariadbPipeline, has_fast_path
from session_repo.backends.sql.migrate import ensure_schema
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.postgres_pipeline import PostgresPipeline
from session_repo.backends.sql.sqlite_engine import (
    Synchronous,
    check_synchronous,
    configure_sqlite,
    ensure_wal,
    prepare_sqlite_file,
)
from session_repo.backends.sql.sqlite_pipeline import SqlitePipeline
from session_repo.backends.sql.statements import statements_for
from session_repo.clock import Clock
from session_repo.errors import StorageError

__all__ = ["SqlSessionRepository"]


class SqlSessionRepository(StoreFront):
    """Bindings in a SQL database: ``sqlite+aiosqlite``, ``postgresql+asyncpg``, ``mysql+asyncmy``.

    ``auto_migrate=None`` upgrades the schema on open for SQLite and refuses a
    server database whose schema is behind with ``SchemaOutOfDate``. Servers bound
    each statement by ``statement_timeout`` and connecting by ``connect_timeout``;
    SQLite waits up to ``busy_timeout`` for another process's write lock, and runs
    every connection with ``synchronous=sqlite_synchronous``: ``"NORMAL"`` survives a
    crash of the process or the OS's other processes, ``"FULL"`` also a power loss
    (each commit waits for the disk). A new SQLite file is created 0600.

    Args:
        url_or_engine: a database URL, or an ``AsyncEngine`` the caller owns (closing
            the repository does not dispose of it).
        clock: the time source for expiry (the system clock when None).
        default_ttl: a binding's life when a call gives no ``ttl``, in seconds or a
            ``timedelta``.
        cleanup_interval: seconds between background cleanups of expired rows; 0
            turns them off.
        cleanup_batch: the most expired rows one cleanup transaction removes.
        auto_migrate: upgrade an out-of-date schema on open (True), refuse it with
            ``SchemaOutOfDate`` (False), or None: True for SQLite only.
        pool_size: the size of the connection pool to a server database.
        connect_timeout: seconds a connection attempt to a server may take.
        statement_timeout: seconds a statement on a server may take, lock waits
            included.
        cleanup_grace: seconds cleanup keeps a dead binding on a server before it
            removes the row (``backends.sql.tombstones``: a bind still running from
            before the binding was made must find it); None is twice
            ``statement_timeout``. Keep it above ``statement_timeout`` plus the
            instances' clock skew. SQLite removes dead rows at once.
        busy_timeout: seconds SQLite waits for another connection's write lock.
        sqlite_synchronous: SQLite's ``synchronous`` mode, ``"NORMAL"`` or ``"FULL"``.

    Raises:
        TypeError: an argument has the wrong type.
        InvalidInput: a number is out of range, or ``sqlite_synchronous`` is neither
            ``"NORMAL"`` nor ``"FULL"``.
        ConfigError: the URL does not parse or names an unsupported database.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        clock: Clock | None = None,
        default_ttl: Ttl = DEFAULT_TTL,
        cleanup_interval: float = 60,
        cleanup_batch: int = 5000,
        auto_migrate: bool | None = None,
        pool_size: int = 5,
        connect_timeout: float = 10,
        statement_timeout: float = 30,
        cleanup_grace: float | None = None,
        busy_timeout: float = 5,
        sqlite_synchronous: Synchronous = "NORMAL",
    ) -> None:
        self._pool_size = positive_int("pool_size", pool_size)
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
        super().__init__(
            connect=self._connect,
            backend=dialect,
            clock=clock,
            default_ttl=default_ttl,
            cleanup_interval=cleanup_interval,
            cleanup_batch=cleanup_batch,
            classify=is_transient,
        )
        self._auto_migrate = dialect == "sqlite" if auto_migrate is None else auto_migrate
        self._timeouts = {
            "connect_timeout": positive_seconds("connect_timeout", connect_timeout),
            "statement_timeout": positive_seconds("statement_timeout", statement_timeout),
        }
        grace = (
            2 * self._timeouts["statement_timeout"]
            if cleanup_grace is None
            else non_negative_seconds("cleanup_grace", cleanup_grace)
        )
        self._sql = statements_for(dialect, cleanup_grace_ms=round(grace * 1000))
        self._busy_timeout = positive_seconds("busy_timeout", busy_timeout)
        self._synchronous = check_synchronous(sqlite_synchronous)

    def __repr__(self) -> str:
        return f"SqlSessionRepository({shown_url(self._url)!r})"

    @property
    def engine(self) -> AsyncEngine:
        """The engine in use (for migrations and diagnostics); opens nothing.

        Raises:
            StorageError: the repository was not opened yet (or is closed) and was
                given a URL, not an engine.
        """
        if self._engine is None:
            raise StorageError("the repository is not open yet", transient=False)
        return self._engine

    # -- lifecycle -------------------------------------------------------

    async def _connect(self, resources: contextlib.AsyncExitStack) -> SqlPath:
        if self._engine is None:
            # Off the loop: a new SQLite file is created and put in WAL mode here.
            self._engine = await asyncio.to_thread(
                create_engine,
                self._url,
                pool_size=self._pool_size,
                busy_timeout=self._busy_timeout,
                sqlite_synchronous=self._synchronous,
                **self._timeouts,
            )
            resources.push_async_callback(self._dispose)
        elif self.backend == "sqlite":
            configure_sqlite(
                self._engine, busy_timeout=self._busy_timeout, synchronous=self._synchronous
            )
            path = sqlite_file(self._url)
            if path is not None:
                # The engine may not have made the file yet: make it as the URL path does.
                await asyncio.to_thread(prepare_sqlite_file, path)
                await asyncio.to_thread(ensure_wal, path, self._busy_timeout, self._synchronous)
        await ensure_schema(self._engine, auto_migrate=self._auto_migrate)
        chosen = await self._fast_path(self._engine)
        chosen.detail = f"{self.backend}: {shown_url(self._url)}"
        return chosen

    async def _fast_path(self, engine: AsyncEngine) -> SqlPath:
        path = sqlite_file(self._url)
        if path is not None:
            pipeline = SqlitePipeline(
                path, self._sql, busy_timeout=self._busy_timeout, synchronous=self._synchronous
            )
            try:
                await pipeline.start()
            except BaseException:
                await pipeline.close()
                raise
            return pipeline
        if engine.dialect.driver == "asyncpg":
            return PostgresPipeline(engine, self._sql, connections=self._pool_size * 2)
        if has_fast_path(engine):
            return MariadbPipeline(engine, self._sql, connections=self._pool_size * 2)
        # MySQL, or an in-memory SQLite database that lives in one connection.
        return EngineOps(engine, self._sql, sized=self.backend != "sqlite")

    async def _dispose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
