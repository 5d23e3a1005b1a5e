"""SQLite done right, on SQLAlchemy's engines: one configuration for every connection.

The file (and its directory) is created owner-only and put in WAL mode before the
first connect. Every connection, whether the async engine's (aiosqlite, for
migrations and the in-memory path) or the pipeline's sync engine's (stdlib
``sqlite3`` on the pipeline's threads), gets the same pragmas from the same
``connect`` event: a busy timeout and ``synchronous=NORMAL`` (or ``FULL`` when
asked: docs/backends.md says what each survives); transactions are left to the
caller (``BEGIN IMMEDIATE`` for writes, so two writers never deadlock upgrading a
read lock).
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from session_repo.backends.sql.errors import sqlite_open_error
from session_repo.errors import ConfigError, InvalidInput, StorageError

__all__ = [
    "BEGIN_OPTION",
    "BUSY_TIMEOUT_MS",
    "SYNCHRONOUS_MODES",
    "Synchronous",
    "check_synchronous",
    "configure_sqlite",
    "ensure_wal",
    "prepare_sqlite_file",
    "sync_engine_for",
]

# Execution option read by the SQLite "begin" hook: "IMMEDIATE", "DEFERRED" or "NONE".
BEGIN_OPTION = "session_repo_begin"
BUSY_TIMEOUT_MS = 5000

Synchronous = Literal["NORMAL", "FULL"]
SYNCHRONOUS_MODES: tuple[Synchronous, ...] = ("NORMAL", "FULL")
# The mode each engine's pragmas were installed with.
_CONFIGURED: weakref.WeakKeyDictionary[Engine, Synchronous] = weakref.WeakKeyDictionary()


def check_synchronous(value: object) -> Synchronous:
    """``value`` if it is a ``synchronous`` mode this library offers.

    Args:
        value: the mode asked for.

    Raises:
        InvalidInput: it is neither ``"NORMAL"`` nor ``"FULL"``.
    """
    if value not in SYNCHRONOUS_MODES:
        raise InvalidInput(f"sqlite_synchronous must be 'NORMAL' or 'FULL', not {value!r}")
    return value


def _install_pragmas(sync_engine: Engine, busy_timeout: float, synchronous: Synchronous) -> None:
    """The one ``connect`` event that configures every SQLite connection of an engine.

    Installing twice with the same mode does nothing; another mode is refused.
    """
    mode = check_synchronous(synchronous)
    configured = _CONFIGURED.get(sync_engine)
    if configured is not None:
        if configured != mode:
            raise ConfigError(
                f"this engine already runs SQLite with synchronous={configured}, not {mode}"
            )
        return
    busy_ms = round(busy_timeout * 1000)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver opens no transaction of its own: BEGIN is the caller's.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute(f"PRAGMA synchronous = {mode}")  # WAL is set once, in the file
        finally:
            cursor.close()

    _CONFIGURED[sync_engine] = mode


def configure_sqlite(
    engine: AsyncEngine,
    *,
    busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    synchronous: Synchronous = "NORMAL",
) -> None:
    """Install the pragmas and explicit BEGIN handling on an async SQLite engine.

    Args:
        engine: a SQLite engine; installing twice with the same mode does nothing.
        busy_timeout: seconds each connection waits for another's write lock.
        synchronous: the ``synchronous`` mode, ``"NORMAL"`` or ``"FULL"``.

    Raises:
        InvalidInput: ``synchronous`` is neither ``"NORMAL"`` nor ``"FULL"``.
        ConfigError: the engine was configured before with another ``synchronous``.
    """
    sync_engine = engine.sync_engine
    first = sync_engine not in _CONFIGURED
    _install_pragmas(sync_engine, busy_timeout, synchronous)
    if not first:
        return

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode != "NONE":
            conn.exec_driver_sql(f"BEGIN {mode}")


def sync_engine_for(
    path: Path, *, busy_timeout: float, synchronous: Synchronous = "NORMAL"
) -> Engine:
    """A sync (stdlib ``sqlite3``) engine on ``path``, configured like the async one.

    ``NullPool``: each connection is checked out by one thread and used only there
    for as long as it lives (the pipeline holds one per worker thread); a pool that
    handed a connection to another thread would gain nothing and risk a lot.

    Args:
        path: the database file.
        busy_timeout: seconds each connection waits for another's write lock.
        synchronous: the ``synchronous`` mode, ``"NORMAL"`` or ``"FULL"``.
    """
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    _install_pragmas(engine, busy_timeout, synchronous)
    return engine


def prepare_sqlite_file(path: Path) -> None:
    """Create the directory and an owner-only (0600) file before SQLite opens it.

    An existing file is not touched: closing any descriptor of a database file drops
    every POSIX lock this process holds on it, including those of SQLite connections
    already open (the classic way to corrupt a database). A new file is created with
    O_EXCL, so no connection can have it open yet, and set to 0600 whatever the umask;
    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.

    Args:
        path: the database file.

    Raises:
        StorageError: the directory or the file cannot be created.
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


def ensure_wal(path: Path, busy_timeout: float, synchronous: Synchronous = "NORMAL") -> None:
    """Put the file in WAL mode once; the mode is stored in the file, so every later
    connection (this process's or another's) finds it set.

    Switching needs the file to itself, and SQLite answers "locked" at once, without
    its busy handler, while another connection has it open: so try again until
    ``busy_timeout``. Blocking: call it off the event loop.

    Args:
        path: the database file (it may not exist yet).
        busy_timeout: seconds to keep trying while another connection holds the file.
        synchronous: the ``synchronous`` mode the connection runs with.

    Raises:
        StorageError: the file cannot be opened or is not a SQLite database; the
            message names the file.
    """
    engine = sync_engine_for(path, busy_timeout=busy_timeout, synchronous=synchronous)
    deadline = time.monotonic() + busy_timeout
    try:
        connection = engine.raw_connection()
        try:
            while True:
                try:
                    cursor = connection.cursor()
                    mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() == "wal":
                        return
                    cursor.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
        finally:
            connection.close()
    except StorageError:
        raise
    except Exception as exc:
        raise sqlite_open_error(path, exc) from exc
    finally:
        engine.dispose()
