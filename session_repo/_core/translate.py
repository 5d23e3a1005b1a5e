"""Errors in, ``StorageError`` out: the generic half of error translation.

Each backend keeps its driver's error table beside its driver (a ``Classifier``:
``session_repo.backends.sql.errors.is_transient``,
``session_repo.backends.redis.errors.is_transient``) and gives it to the front,
which translates once per operation with ``translate`` / ``storage_errors``. This
module knows no driver: only the library's own ``StorageError``, the operating
system's errors, and ``TimeoutError`` / ``ConnectionError``.

Transient (worth another try): locked or busy, deadlock, serialization failure,
lost, refused or reset connection, timeout. Everything else is permanent:
corrupt file, not a database, permission denied, read-only, disk full, missing
table, integrity. Retries look only at ``StorageError.transient``.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator

from session_repo.errors import SessionRepoError, StorageError

__all__ = ["Classifier", "is_transient", "storage_errors", "translate"]

Classifier = Callable[[BaseException], bool]
"""A backend's error table: whether a driver error is worth another try."""

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


def is_transient(exc: BaseException) -> bool:
    """What every backend's table falls back on: the library's own flag, the OS's errors.

    Args:
        exc: what an operation raised.
    """
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return isinstance(exc, OSError) and exc.errno not in _OS_PERMANENT


def _reason(exc: BaseException) -> str:
    """The first line of the innermost error's text: under a wrapper that keeps the
    driver's error as ``orig`` (SQLAlchemy's) or as ``__cause__`` (async adapters)."""
    inner = getattr(exc, "orig", None)
    if not isinstance(inner, BaseException):
        inner = exc
    if inner.__cause__ is not None:
        inner = inner.__cause__
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def translate(exc: BaseException, action: str, classify: Classifier = is_transient) -> StorageError:
    """A ``StorageError`` for ``exc``; the message says what failed, never the data.

    Args:
        exc: what the operation raised; a ``StorageError`` is returned as it is.
        action: the operation's name, which starts the message (``"lookup failed: ..."``).
        classify: the backend's error table.
    """
    if isinstance(exc, StorageError):
        return exc
    return StorageError(f"{action} failed: {_reason(exc)}", transient=classify(exc))


@contextlib.contextmanager
def storage_errors(action: str, classify: Classifier = is_transient) -> Iterator[None]:
    """Turn any exception raised inside into a ``StorageError``, the cause chained.

    Total on purpose: a driver raises more than its documented errors (a
    ``TypeError`` for a bad connect argument, ``RuntimeError`` from its event loop
    glue), and none of them may reach the caller. The library's own errors
    (``InvalidInput``, ``RepositoryClosed``, ...) pass unchanged, and so do
    ``CancelledError``, ``KeyboardInterrupt`` and ``SystemExit``, which are not
    ``Exception``. An error not known to be transient is permanent.

    Args:
        action: the operation's name, for the message.
        classify: the backend's error table.

    Raises:
        StorageError: for any ``Exception`` raised inside but the library's own.
    """
    try:
        yield
    except SessionRepoError:
        raise
    except Exception as exc:
        raise translate(exc, action, classify) from exc
