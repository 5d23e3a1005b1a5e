"""Driver errors in, ``StorageError`` out: the one place that classifies them.

Transient (worth another try): locked or busy, deadlock, serialization failure,
lost, refused or reset connection, timeout. Everything else is permanent:
corrupt file, not a database, permission denied, read-only, disk full, missing
table, integrity. Retries look only at ``StorageError.transient``.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Callable, Iterator

from sqlalchemy import exc as sa_exc

from session_repo.errors import SessionRepoError, StorageError

__all__ = ["Classifier", "is_conflict", "is_transient", "storage_errors", "translate"]

Classifier = Callable[[BaseException], bool]
"""A backend's error table: whether a driver error is worth another try."""

# SQLite primary result codes (``sqlite_errorcode & 0xFF``): BUSY, LOCKED, INTERRUPT,
# IOERR, PROTOCOL. CORRUPT, NOTADB, READONLY, PERM, FULL, CANTOPEN, ERROR (no such
# table) and CONSTRAINT are permanent. An error without a code goes by its message.
_SQLITE_TRANSIENT_CODES = {5, 6, 9, 10, 15}
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o error", "interrupted")

# OS errors that another try cannot fix: no permission, read-only, no space, bad path.
# (ENOENT is not here: a server's Unix socket vanishes while it restarts.)
_OS_PERMANENT = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
}

# PostgreSQL SQLSTATE classes and codes.
_PG_CONFLICT = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, shutdown, system
_PG_PERMANENT = {"57P04", "53100"}  # database_dropped, disk_full
_PG_TRANSIENT = {"55P03"}  # lock_not_available (lock_timeout)

# MySQL / MariaDB error numbers.
_MYSQL_CONFLICT = {1213}  # deadlock (a lock wait timeout is transient, not retried inside)
_MYSQL_TRANSIENT = {
    1040,
    1053,
    1077,
    1152,
    1159,
    1160,
    1161,
    1927,  # too many conns, shutdown, aborted, timeouts
    2002,
    2003,
    2006,
    2013,
    2026,
    2055,  # cannot connect, server gone / lost
    1205,  # lock wait timeout
    1317,  # query interrupted (a KILL QUERY, a server shutting down)
    1969,
    3024,  # statement timeouts (MariaDB, MySQL)
}


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI error under SQLAlchemy's wrapper and the async adapters."""
    inner: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        inner = exc.orig
    # SQLAlchemy's async adapters keep the driver's own error as __cause__.
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


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the backend retries these itself."""
    errors: tuple[BaseException | None, ...] = (exc,)
    if isinstance(exc, sa_exc.DBAPIError):
        errors = (exc.orig, _driver_error(exc))
    for error in errors:
        if error is None:
            continue
        if _sqlstate(error) in _PG_CONFLICT or _mysql_errno(error) in _MYSQL_CONFLICT:
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same operation again may succeed."""
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, _REDIS_ERRORS):
        return _redis_is_transient(exc)
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or is_conflict(exc):
            return True
        for error in {exc.orig, _driver_error(exc)}:
            if error is not None and _error_is_transient(error):
                return True
        return False
    if isinstance(exc, sa_exc.TimeoutError):  # pool checkout timeout
        return True
    if isinstance(exc, (sqlite3.Error, *_ASYNCPG_ERRORS)):  # the fast paths' own drivers
        return _error_is_transient(exc)
    return isinstance(exc, OSError) and _os_error_is_transient(exc)


def _os_error_is_transient(error: OSError) -> bool:
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    return error.errno not in _OS_PERMANENT


def _error_is_transient(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return _os_error_is_transient(error)
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in _SQLITE_TRANSIENT_CODES
        message = str(error).lower()
        return any(word in message for word in _SQLITE_TRANSIENT)
    number = _mysql_errno(error)  # MySQL errors carry a SQLSTATE too: the number decides
    if number is not None:
        return number in _MYSQL_TRANSIENT
    state = _sqlstate(error)
    if state is not None:
        if state in _PG_TRANSIENT:
            return True
        return state not in _PG_PERMANENT and state.startswith(_PG_TRANSIENT_CLASSES)
    name = type(error).__name__
    return name in {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "CannotConnectNowError",
        "InternalClientError",
    }


def translate(exc: BaseException, action: str, classify: Classifier | None = None) -> StorageError:
    """A ``StorageError`` for ``exc``; the message says what failed, never the data."""
    if isinstance(exc, StorageError):
        return exc
    detail = str(_driver_error(exc)).strip().splitlines()
    reason = detail[0] if detail else type(exc).__name__
    transient = (classify or is_transient)(exc)
    return StorageError(f"{action} failed: {reason}", transient=transient)


@contextlib.contextmanager
def storage_errors(action: str, classify: Classifier | None = None) -> Iterator[None]:
    """Turn any exception raised inside into a ``StorageError``, the cause chained.

    Total on purpose: a driver raises more than its documented errors (a
    ``TypeError`` for a bad connect argument, ``RuntimeError`` from its event loop
    glue), and none of them may reach the caller. The library's own errors
    (``InvalidInput``, ``RepositoryClosed``, ...) pass unchanged, and so do
    ``CancelledError``, ``KeyboardInterrupt`` and ``SystemExit``, which are not
    ``Exception``. An error not known to be transient is permanent.
    """
    try:
        yield
    except SessionRepoError:
        raise
    except Exception as exc:
        raise translate(exc, action, classify) from exc


def _redis_errors() -> tuple[type[Exception], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # the redis extra is not installed
        return ()
    return (RedisError,)


_REDIS_ERRORS = _redis_errors()


def _asyncpg_errors() -> tuple[type[Exception], ...]:
    try:
        from asyncpg import InterfaceError, PostgresError
        from asyncpg.exceptions import InternalClientError
    except ImportError:  # the postgres extra is not installed
        return ()
    # InternalClientError: a pooled connection left mid-protocol when the server cut it.
    return (PostgresError, InterfaceError, InternalClientError)


_ASYNCPG_ERRORS = _asyncpg_errors()


def _redis_is_transient(exc: BaseException) -> bool:
    from redis import exceptions as r

    if isinstance(exc, r.ConnectionError | r.TimeoutError | r.BusyLoadingError | r.TryAgainError):
        return not isinstance(exc, r.AuthenticationError)
    return isinstance(exc, r.ReadOnlyError)  # a replica during failover
