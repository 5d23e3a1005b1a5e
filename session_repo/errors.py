"""The errors session-repo raises, and nothing else.

::

    SessionRepoError
     +-- InvalidInput (also ValueError)      bad argument; nothing was written
     +-- ConfigError (also ValueError)       bad SESSION_STORE_* value
     +-- RepositoryClosed                    used after close()
     +-- StorageError (.transient: bool)     the store failed
          +-- SchemaOutOfDate                database behind the code's migrations

Driver exceptions never escape a backend: the store's front translates each one
once (``session_repo._core.translate.translate``) into ``StorageError``, with
``transient`` set by the driver's error table, which lives beside the driver
(``backends/sql/errors.py``, ``backends/redis/errors.py``). Retries look only at
that flag.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidInput",
    "RepositoryClosed",
    "SchemaOutOfDate",
    "SessionRepoError",
    "StorageError",
]


class SessionRepoError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidInput(SessionRepoError, ValueError):
    """An argument broke an input rule; the store was not touched."""


class ConfigError(SessionRepoError, ValueError):
    """A configuration value is malformed; names the variable and the value."""


class RepositoryClosed(SessionRepoError):
    """The repository was closed and cannot be used again."""


class StorageError(SessionRepoError):
    """The backing store failed.

    ``transient`` is True when the same call may succeed if tried again
    (locked, busy, deadlock, dropped connection, timeout) and False when it
    will not (corrupt file, permission denied, missing schema).

    Args:
        message: what failed.
        transient: whether trying the same call again can help.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class SchemaOutOfDate(StorageError):
    """The database schema is behind this version; the message names the fix.

    Never transient: retrying cannot help until the migration runs.

    Args:
        message: what is out of date and the command that fixes it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)
