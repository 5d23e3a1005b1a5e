"""One SQLite connection on its own thread, checked out of a SQLAlchemy engine.

The pipeline's two workers (reader and writer) each hold one connection from the
pipeline's sync engine (``sqlite_engine.sync_engine_for``: its ``connect`` event
sets the pragmas) for as long as they live, and use it only on their own thread.
After an error that says the file itself is bad (corrupt, not a database, I/O,
read-only, cannot open) the connection is invalidated and the next job checks
out a new one, so a file that is repaired or replaced heals a running process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from session_repo.backends.sql.errors import file_is_bad
from session_repo.errors import RepositoryClosed

__all__ = ["Job", "SqliteWorker"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


class SqliteWorker:
    """A thread that runs jobs on one connection of ``engine``.

    Args:
        engine: the pipeline's sync engine.
        name: ``"reader"`` or ``"writer"``, for the thread's name.
        read_only: the connection refuses writes (``PRAGMA query_only``).
    """

    def __init__(self, engine: Engine, name: str, *, read_only: bool) -> None:
        self._engine = engine
        self._read_only = read_only
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"session-repo-sqlite-{name}")
        self._held: PoolProxiedConnection | None = None
        self._conn: sqlite3.Connection | None = None

    def run(self, job: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """Run ``job`` on the connection, on the worker's thread.

        Args:
            job: given the ``sqlite3`` connection.

        Returns:
            An awaitable of ``job``'s result.

        Raises:
            RepositoryClosed: the worker was closed.
        """
        try:
            done = self._executor.submit(self._call, job)
        except RuntimeError:  # the executor was shut down: the repository is closing
            raise RepositoryClosed("the repository closed before this call ran") from None
        return asyncio.wrap_future(done)

    def _call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn if self._conn is not None else self._checkout()
        try:
            return job(conn)
        except sqlite3.Error as exc:
            if file_is_bad(exc):
                self._release(invalidate=True)
            raise

    def _checkout(self) -> sqlite3.Connection:
        held = self._engine.raw_connection()
        conn = held.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        try:
            if self._read_only:
                conn.execute("PRAGMA query_only = 1")
        except BaseException:
            held.invalidate()
            raise
        self._held, self._conn = held, conn
        return conn

    def _release(self, *, invalidate: bool = False) -> None:
        held, self._held, self._conn = self._held, None, None
        if held is not None:
            with contextlib.suppress(Exception):
                if invalidate:
                    held.invalidate()  # closed for real: the next job opens the file anew
                else:
                    held.close()

    async def close(self) -> None:
        """Give the connection back to the engine (on its thread) and stop the thread."""
        try:
            await asyncio.wrap_future(self._executor.submit(self._release))
        finally:
            self._executor.shutdown(wait=False)
