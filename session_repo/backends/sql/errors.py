"""The SQL drivers' error table: which errors are worth another try.

The front (``StoreFront``) turns any driver error into ``StorageError`` once, with
``is_transient`` below as the SQL backend's classifier. What each driver says:

- SQLAlchemy wraps DBAPI errors (``DBAPIError.orig``), and its async adapters
  keep the driver's own error as ``__cause__``: ``driver_error`` unwraps both;
- sqlite3: the primary result code (``sqlite_errorcode & 0xFF``), else the message;
- asyncpg / PostgreSQL: the SQLSTATE and its class;
- asyncmy / aiomysql (MariaDB, MySQL): the error number.

Conflicts (deadlock, serialization failure) are retried inside an operation by
``retry_conflicts``; callers never see one. A SQLite error that says the file itself
is bad (``file_is_bad``) makes the pipeline drop its connection and reopen it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from session_repo._core.translate import is_transient as generic_is_transient
from session_repo._core.translate import storage_errors as generic_storage_errors
from session_repo.errors import StorageError

__all__ = [
    "CONFLICT_ATTEMPTS",
    "retry_conflicts",
    "driver_error",
    "file_is_bad",
    "is_conflict",
    "is_transient",
    "refused_by_server",
    "sqlite_open_error",
    "storage_errors",
]

T = TypeVar("T")

# Attempts for a deadlock or serialization failure inside one operation.
CONFLICT_ATTEMPTS = 5

# SQLite primary result codes (``sqlite_errorcode & 0xFF``): BUSY, LOCKED, INTERRUPT,
# IOERR, PROTOCOL. CORRUPT, NOTADB, READONLY, PERM, FULL, CANTOPEN, ERROR (no such
# table) and CONSTRAINT are permanent. An error without a code goes by its message.
_SQLITE_TRANSIENT_CODES = {5, 6, 9, 10, 15}
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o error", "interrupted")
# Primary result codes that mean the file, not the statement, is the problem:
# READONLY, IOERR, CORRUPT, CANTOPEN, NOTADB.
_SQLITE_BAD_FILE = {8, 10, 11, 14, 26}
_SQLITE_BAD_FILE_WORDS = ("malformed", "not a database", "disk i/o", "readonly")

# PostgreSQL SQLSTATE classes and codes.
_PG_CONFLICT = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, shutdown, system
_PG_PERMANENT = {"57P04", "53100"}  # database_dropped, disk_full
_PG_TRANSIENT = {"55P03"}  # lock_not_available (lock_timeout)
# asyncpg's own client-side errors that mean the connection is gone.
_ASYNCPG_TRANSIENT = {
    "ConnectionDoesNotExistError",
    "InterfaceError",
    "CannotConnectNowError",
    "InternalClientError",  # a pooled connection left mid-protocol when the server cut it
}

# MySQL / MariaDB error numbers; from 2000 on they are the client's own (CR_*).
_MYSQL_CLIENT_ERRORS = 2000
_MYSQL_CONFLICT = {1213}  # deadlock (a lock wait timeout is transient, not retried inside)
_MYSQL_TRANSIENT = {
    1040,  # too many connections
    1053,  # server shutdown
    1077,
    1152,  # aborted connection
    1159,  # read / write timeouts
    1160,
    1161,
    1927,  # connection killed
    2002,  # cannot connect
    2003,
    2006,  # server has gone away
    2013,  # lost connection
    2026,
    2055,
    1205,  # lock wait timeout
    1317,  # query interrupted (a KILL QUERY, a server shutting down)
    1969,  # statement timeouts (MariaDB, MySQL)
    3024,
}


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrapper and its async adapters.

    Args:
        exc: what an operation raised.

    Returns:
        The innermost driver error, or ``exc`` itself when nothing wraps it.
    """
    inner: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        inner = exc.orig
    cause = inner.__cause__
    return cause if cause is not None else inner


def _sqlstate(error: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        code = getattr(error, attr, None)
        if isinstance(code, str):
            return code
    return None


def _mysql_errno(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _layers(exc: BaseException) -> tuple[BaseException, ...]:
    """``exc`` and what it wraps, outermost first."""
    if isinstance(exc, sa_exc.DBAPIError):
        return tuple(e for e in (exc.orig, driver_error(exc)) if e is not None)
    return (exc,)


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the backend retries these itself.

    Args:
        exc: what a statement raised.
    """
    return any(
        _sqlstate(error) in _PG_CONFLICT or _mysql_errno(error) in _MYSQL_CONFLICT
        for error in _layers(exc)
    )


def refused_by_server(exc: BaseException) -> bool:
    """The server answered the statement with an error: none of it was written.

    Otherwise (the connection dropped, a client-side timeout) the statement may have
    committed before its answer was lost, and must not be sent again as new.

    Args:
        exc: what a statement on a raw asyncpg or asyncmy connection raised.
    """
    if type(exc).__module__.startswith("asyncpg"):
        import asyncpg  # loaded already: it raised this

        # Its client-side errors carry no SQLSTATE or class 08 (connection exception,
        # asyncpg's own "connection was closed in the middle of operation" among them).
        connection_lost = isinstance(exc, asyncpg.PostgresConnectionError)
        return isinstance(exc, asyncpg.PostgresError) and not connection_lost
    number = _mysql_errno(exc)
    return number is not None and number < _MYSQL_CLIENT_ERRORS


def is_transient(exc: BaseException) -> bool:
    """The SQL backend's classifier: whether trying the operation again may succeed.

    Args:
        exc: what an operation raised (a driver error, wrapped or not).
    """
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or is_conflict(exc):
            return True
        return any(_driver_error_is_transient(error) for error in _layers(exc))
    if isinstance(exc, sa_exc.TimeoutError):  # pool checkout timeout
        return True
    if isinstance(exc, sqlite3.Error) or _sqlstate(exc) is not None:
        return _driver_error_is_transient(exc)
    if type(exc).__module__.startswith(("asyncpg", "asyncmy")):
        return _driver_error_is_transient(exc)
    return generic_is_transient(exc)


def _driver_error_is_transient(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in _SQLITE_TRANSIENT_CODES
        message = str(error).lower()
        return any(word in message for word in _SQLITE_TRANSIENT)
    if isinstance(error, OSError):
        return generic_is_transient(error)
    number = _mysql_errno(error)  # MySQL errors carry a SQLSTATE too: the number decides
    if number is not None:
        return number in _MYSQL_TRANSIENT
    state = _sqlstate(error)
    if state is not None:
        if state in _PG_TRANSIENT:
            return True
        return state not in _PG_PERMANENT and state.startswith(_PG_TRANSIENT_CLASSES)
    return type(error).__name__ in _ASYNCPG_TRANSIENT


def file_is_bad(exc: BaseException) -> bool:
    """A SQLite error that says the file itself is bad (corrupt, not a database, I/O,
    read-only, cannot open), so the connection should be dropped and opened again.

    Args:
        exc: what a statement raised.
    """
    error = driver_error(exc)
    if not isinstance(error, sqlite3.Error):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_BAD_FILE
    message = str(error).lower()
    return any(word in message for word in _SQLITE_BAD_FILE_WORDS)


def sqlite_open_error(path: Path, exc: BaseException) -> StorageError:
    """A ``StorageError`` naming ``path`` for a failure to open or prepare it.

    Adds what SQLite's "unable to open database file" does not say, when the OS can
    tell (a read-only file system, a directory this user cannot write in).

    Args:
        path: the database file.
        exc: the driver's error.
    """
    reason = str(driver_error(exc)).strip().splitlines()
    return StorageError(
        f"cannot open SQLite database {str(path)!r}: "
        f"{reason[0] if reason else type(exc).__name__}{_why_unopenable(path)}",
        transient=is_transient(exc),
    )


def _why_unopenable(path: Path) -> str:
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return " (Read-only file system)"
        if not os.access(folder, os.W_OK):
            return f" (cannot write in {str(folder)!r}: Permission denied)"
    except OSError:
        return ""
    return ""


async def retry_conflicts(work: Callable[[], Awaitable[T]]) -> T:
    """``work()``, tried again on a deadlock or serialization failure only, up to
    ``CONFLICT_ATTEMPTS`` tries in all, with a short random backoff between retries.

    The first try runs bare: tenacity's retry state costs more CPU than a statement
    (about 60 us), and almost every statement succeeds at once.

    Args:
        work: makes one attempt (a fresh statement each call).

    Raises:
        BaseException: what the last attempt raised.
    """
    try:
        return await work()
    except Exception as exc:
        if not is_conflict(exc):
            raise
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_conflict),
        stop=stop_after_attempt(CONFLICT_ATTEMPTS - 1),
        wait=wait_random_exponential(multiplier=0.005, max=0.1),
        reraise=True,
    )

    async def attempt() -> T:  # a coroutine function: tenacity would not await a lambda's
        return await work()

    return await retrying(attempt)


@contextlib.contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Any error raised inside as a ``StorageError`` classified by this table.

    For the library's own tools that use an engine outside a repository (the CLI's
    ``migrate`` and ``current``, ``doctor``, ``demo``); a repository's operations are
    translated by its front.

    Args:
        action: what was being done, for the message (``"schema check failed: ..."``).

    Raises:
        StorageError: for any ``Exception`` raised inside but the library's own.
    """
    with generic_storage_errors(action, is_transient):
        yield
