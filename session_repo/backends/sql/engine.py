"""Engines configured for this store: URLs checked up front, servers with bounded waits.

SQLite's own setup (file mode, WAL, pragmas) is in ``sqlite_engine``; here a URL
becomes an ``AsyncEngine`` whose every connection is bounded: ``connect_timeout``
for connecting, ``statement_timeout`` for each statement, lock waits included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from session_repo.backends.sql.asyncpg_connect import AsyncpgConnect
from session_repo.backends.sql.asyncpg_options import asyncpg_query_options
from session_repo.backends.sql.sqlite_engine import (
    BEGIN_OPTION,
    BUSY_TIMEOUT_MS,
    Synchronous,
    configure_sqlite,
    ensure_wal,
    prepare_sqlite_file,
)
from session_repo.config import mask_url
from session_repo.errors import ConfigError

__all__ = [
    "BEGIN_OPTION",
    "SUPPORTED",
    "create_engine",
    "parse_url",
    "shown_url",
    "sqlite_file",
    "with_async_driver",
]

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 30
SUPPORTED = ("sqlite", "postgresql", "mysql", "mariadb")


def parse_url(url: str | URL) -> URL:
    """Parse and check a database URL; a ``ConfigError`` names what is wrong.

    Args:
        url: the URL, as text or a SQLAlchemy ``URL``.

    Returns:
        The parsed URL.

    Raises:
        ConfigError: it does not parse, names a database other than SQLite,
            PostgreSQL or MariaDB/MySQL, or has an asyncpg option that is not valid.
    """
    try:
        parsed = with_async_driver(make_url(url))
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {mask_url(str(url))!r}") from exc
    if parsed.get_backend_name() not in SUPPORTED:
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r} in URL "
            f"{shown_url(parsed)!r}: "
            "use sqlite+aiosqlite, postgresql+asyncpg or mysql+asyncmy"
        )
    if parsed.get_driver_name() == "asyncpg":
        asyncpg_query_options(parsed)  # a wrong option fails here, not on every connect
    return parsed


# The URLs hosts hand out (Fly, Heroku, Render, Supabase: often as DATABASE_URL) name
# no driver, or the old ``postgres`` scheme: each is read with the async driver.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "sqlite": "sqlite+aiosqlite",
}


def with_async_driver(url: URL) -> URL:
    """``url`` with the async driver when it names none, and libpq's ``sslmode`` as
    asyncpg's ``ssl`` (the same values: ``disable`` .. ``verify-full``).

    Args:
        url: a parsed database URL, e.g. ``postgres://app@db.internal:5432/app``.
    """
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is not None:
        url = url.set(drivername=driver)
    mode = url.query.get("sslmode")
    if url.get_driver_name() == "asyncpg" and mode is not None:
        url = url.difference_update_query(["sslmode"])
        if "ssl" not in url.query:
            url = url.update_query_dict({"ssl": mode})
    return url


def shown_url(url: URL) -> str:
    """``url`` for messages and logs, its password masked.

    ``render_as_string(hide_password=True)`` alone is not enough: a password with
    an unescaped ``@`` is only partly parsed as the password, and the rest would show.

    Args:
        url: the URL to show.
    """
    return mask_url(url.render_as_string(hide_password=True))


def sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database.

    Args:
        url: a parsed URL; any other database's gives None too.

    Returns:
        The path, or None for in-memory databases, ``file:`` URI names and non-SQLite URLs.
    """
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None  # URI filenames: the caller manages the file
    return Path(database)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    statement_timeout: float = STATEMENT_TIMEOUT_S,
    busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    sqlite_synchronous: Synchronous = "NORMAL",
) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` with this library's settings.

    On servers, ``connect_timeout`` bounds connecting and ``statement_timeout``
    bounds each statement, lock waits included, so a hung server cannot hang a
    request forever.

    A SQLite file is created owner-only and put in WAL mode first: this blocks, so
    call it off the event loop.

    Args:
        url: the database URL.
        pool_size: the connection pool's size (an in-memory SQLite database has one).
        connect_timeout: seconds connecting to a server may take.
        statement_timeout: seconds a statement on a server may take.
        busy_timeout: seconds SQLite waits for another connection's write lock.
        sqlite_synchronous: SQLite's ``synchronous`` mode, ``"NORMAL"`` or ``"FULL"``.

    Raises:
        ConfigError: the URL does not parse or names an unsupported database.
        StorageError: the SQLite file cannot be created or opened.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        path = sqlite_file(parsed)
        if path is not None:
            prepare_sqlite_file(path)
            ensure_wal(path, busy_timeout, sqlite_synchronous)
            kwargs.update(pool_size=pool_size, max_overflow=0)
        else:
            # One shared connection: an in-memory database lives and dies with it.
            kwargs.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
        engine = create_async_engine(parsed, **kwargs)
        configure_sqlite(engine, busy_timeout=busy_timeout, synchronous=sqlite_synchronous)
        return engine
    kwargs.update(
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=connect_timeout,
    )
    if parsed.get_driver_name() == "asyncpg":
        # The PostgreSQL pipeline holds up to 2 * pool_size of these connections;
        # pool_size more are left for the engine's other users (migrations, tools).
        kwargs["max_overflow"] = pool_size * 2
        options = asyncpg_query_options(parsed)
        # Direct to PostgreSQL or through a pooler (PgBouncer): the connector finds
        # out on the first connection and sets timeouts and statements to match.
        connect = AsyncpgConnect(
            statement_timeout=statement_timeout,
            unnamed=options.get("statement_cache_size") == 0,
        )
        kwargs["connect_args"] = {
            "async_creator_fn": connect,
            "timeout": connect_timeout,
            # SQLAlchemy's statements (migrations, the schema check; operations go
            # through asyncpg's own cache) are not kept: behind a pooler one kept from
            # a transaction is gone in the next. With asyncpg's cache off there, they
            # are unnamed, so none is left on (or collides on) a shared server connection.
            "prepared_statement_cache_size": 0,
            # The URL's own options win, typed (connect_args override the URL's text).
            **options,
        }
        return create_async_engine(parsed, **kwargs)
    kwargs["connect_args"] = {"connect_timeout": max(1, round(connect_timeout))}
    kwargs["isolation_level"] = "READ COMMITTED"
    kwargs["max_overflow"] = pool_size * 2  # as for asyncpg: the MariaDB pipeline holds 2x
    engine = create_async_engine(parsed, **kwargs)
    _bound_mysql_statements(engine, statement_timeout)
    return engine


def _bound_mysql_statements(engine: AsyncEngine, seconds: float) -> None:
    """Per-session limits on MariaDB (max_statement_time) or MySQL (max_execution_time)."""
    lock_wait = max(1, round(seconds))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_wait}")
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
            if "mariadb" in version.lower():
                cursor.execute(f"SET SESSION max_statement_time = {seconds:.3f}")
            else:
                cursor.execute(f"SET SESSION max_execution_time = {round(seconds * 1000)}")
        finally:
            cursor.close()
