"""Reads made on the event loop's own thread, when they cannot wait.

A lookup of one key in a SQLite file takes a few microseconds; handing it to a
thread and back takes 80-200. So a lookup that finds no read batch in progress is
made here, on a read-only connection of the pipeline's engine whose
``busy_timeout`` is 0: in WAL mode a reader never waits for a writer, and in the
rare case it would wait for a lock (a WAL being recovered) it answers ``None`` at
once and the caller hands the read to the reader thread, which may wait.

Each SELECT runs outside a transaction, so it reads the latest commit: every write
the pipeline has acknowledged (a write is acknowledged after its commit).

The connection is opened off the loop (``connect()``, on the reader thread): opening
runs the engine's pragmas, which may wait for a lock. Until it is open, or after a
bad file dropped it, reads go to the reader thread, which opens it again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from session_repo.backends.sql.errors import file_is_bad

__all__ = ["InlineReader"]

_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class InlineReader:
    """One read-only connection, used only on the event loop's thread.

    Args:
        engine: the pipeline's sync engine (its ``connect`` event sets the pragmas).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held: PoolProxiedConnection | None = None
        self._conn: sqlite3.Connection | None = None

    def rows(self, sql: str, args: Any) -> list[Any] | None:
        """The rows of ``sql``, or ``None`` if reading now would wait for a lock.

        Args:
            sql: a read-only statement.
            args: its parameters.

        Raises:
            sqlite3.Error: the read failed (a bad file also drops the connection).
        """
        conn = self._conn
        if conn is None:
            return None  # not open (yet, or again): the reader thread's turn
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) in _BUSY:
                return None
            if file_is_bad(exc):
                self.close(invalidate=True)
            raise

    def connect(self) -> None:
        """Open the connection if it is not open; on a thread that may wait, never the loop's.

        Raises:
            sqlite3.Error: it cannot be opened now.
        """
        if self._conn is None:
            self._checkout()

    def _checkout(self) -> sqlite3.Connection:
        held = self._engine.raw_connection()
        conn = held.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA busy_timeout = 0")  # never hold the loop waiting for a lock
        except BaseException:
            held.invalidate()
            raise
        self._held = held
        self._conn = conn  # last: once the loop sees it, it is ready
        return conn

    def close(self, *, invalidate: bool = False) -> None:
        """Give the connection back (``invalidate``: closed for real, a bad file).

        Args:
            invalidate: drop the connection instead of returning it to the engine.
        """
        held, self._held, self._conn = self._held, None, None
        if held is not None:
            with contextlib.suppress(Exception):
                if invalidate:
                    held.invalidate()
                else:
                    held.close()
