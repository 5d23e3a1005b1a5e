"""Engines configured for this store: SQLite done right, servers with bounded waits.

SQLite: the file (and its directory) is created owner-only and put in WAL mode
before the first connect; every connection runs with ``synchronous=NORMAL`` (or
``FULL`` when asked: docs/backends.md says what each survives) and a busy timeout;
write transactions start with ``BEGIN IMMEDIATE`` so two writers never deadlock
upgrading a read lock; plain reads run without a transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from session_repo.backends.sql.asyncpg_options import asyncpg_query_options
from session_repo.config import mask_url
from session_repo.errors import ConfigError, InvalidInput, StorageError

__all__ = [
    "BEGIN_OPTION",
    "BUSY_TIMEOUT_MS",
    "configure_sqlite",
    "create_engine",
    "parse_url",
    "shown_url",
    "sqlite_file",
]

# Execution option read by the SQLite "begin" hook: "IMMEDIATE", "DEFERRED" or "NONE".
BEGIN_OPTION = "session_repo_begin"
BUSY_TIMEOUT_MS = 5000
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
        parsed = make_url(url)
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


@contextlib.contextmanager
def storage_errors_for(path: Path) -> Iterator[None]:
    """sqlite3 errors while preparing ``path``, as a ``StorageError`` naming it."""
    try:
        yield
    except sqlite3.Error as exc:
        transient = "locked" in str(exc) or "busy" in str(exc)
        raise StorageError(
            f"cannot open SQLite database {str(path)!r}: {exc}{_why_unopenable(path)}",
            transient=transient,
        ) from exc


def _why_unopenable(path: Path) -> str:
    """What SQLite's "unable to open database file" does not say, when the OS can tell."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return " (Read-only file system)"
        if not os.access(folder, os.W_OK):
            return f" (cannot write in {str(folder)!r}: Permission denied)"
    except OSError:
        return ""
    return ""


def prepare_sqlite_file(path: Path) -> None:
    """Create the directory and an owner-only (0600) file before SQLite opens it.

    An existing file is not touched: closing any descriptor of a database file drops
    every POSIX lock this process holds on it, including those of SQLite connections
    already open (the classic way to corrupt a database). A new file is created with
    O_EXCL, so no connection can have it open yet, and set to 0600 whatever the umask;
    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it meanwhile
            else:
                try:
                    os.fchmod(fd, 0o600)  # the umask may have taken bits away
                finally:
                    os.close(fd)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, FileExistsError):  # mkdir met a file where a directory should be
            reason = "a parent of the path is not a directory"
        raise StorageError(
            f"cannot open SQLite database {str(path)!r}: {reason}", transient=False
        ) from exc


Synchronous = Literal["NORMAL", "FULL"]
SYNCHRONOUS_MODES: tuple[Synchronous, ...] = ("NORMAL", "FULL")


def check_synchronous(value: object) -> Synchronous:
    """``value`` if it is a ``synchronous`` mode this library offers."""
    if value not in SYNCHRONOUS_MODES:
        raise InvalidInput(f"sqlite_synchronous must be 'NORMAL' or 'FULL', not {value!r}")
    return value


def ensure_wal(path: Path, busy_timeout: float, synchronous: Synchronous = "NORMAL") -> None:
    """Put the file in WAL mode once; the mode is stored in the file, so every later
    connection (this process's or another's) finds it set.

    Switching needs the file to itself, and SQLite answers "locked" at once, without
    its busy handler, while another connection has it open: so try again until
    ``busy_timeout``. Blocking: call it off the event loop.
    """
    deadline = time.monotonic() + busy_timeout
    with contextlib.closing(sqlite3.connect(path, timeout=busy_timeout)) as conn:
        conn.execute(f"PRAGMA synchronous = {check_synchronous(synchronous)}")
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal":
                    return
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)


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
            with storage_errors_for(path):
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
    statement_ms = max(1, round(statement_timeout * 1000))
    if parsed.get_driver_name() == "asyncpg":
        kwargs["connect_args"] = {
            "timeout": connect_timeout,
            # The server's own timeout acts first; this one catches a server that hangs.
            "command_timeout": statement_timeout + 1,
            "server_settings": {
                "statement_timeout": str(statement_ms),
                "lock_timeout": str(statement_ms),
            },
            # The URL's own options win, typed (connect_args override the URL's text).
            **asyncpg_query_options(parsed),
        }
        return create_async_engine(parsed, **kwargs)
    kwargs["connect_args"] = {"connect_timeout": max(1, round(connect_timeout))}
    kwargs["isolation_level"] = "READ COMMITTED"
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


def configure_sqlite(
    engine: AsyncEngine,
    *,
    busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    synchronous: Synchronous = "NORMAL",
) -> None:
    """Install the pragmas and explicit BEGIN handling on a SQLite engine.

    Args:
        engine: a SQLite engine; installing twice with the same mode does nothing.
        busy_timeout: seconds each connection waits for another's write lock.
        synchronous: the ``synchronous`` mode, ``"NORMAL"`` or ``"FULL"``.

    Raises:
        InvalidInput: ``synchronous`` is neither ``"NORMAL"`` nor ``"FULL"``.
        ConfigError: the engine was configured before with another ``synchronous``.
    """
    sync_engine = engine.sync_engine
    mode = check_synchronous(synchronous)
    configured = getattr(sync_engine, "_session_repo_synchronous", None)
    if configured is not None:
        if configured != mode:
            raise ConfigError(
                f"this engine already runs SQLite with synchronous={configured}, not {mode}"
            )
        return

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (through the "begin" hook below) own transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
            cursor.execute(f"PRAGMA synchronous = {mode}")  # WAL is set once, in the file
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode != "NONE":
            conn.exec_driver_sql(f"BEGIN {mode}")

    sync_engine._session_repo_synchronous = mode  # type: ignore[attr-defined]
