"""One SQLite connection on its own thread, checked out of a SQLAlchemy engine.

The pipeline's two workers (reader and writer) each hold one connection from the
pipeline's sync engine (``sqlite_engine.sync_engine_for``: its ``connect`` event
sets the pragmas) for as long as they live, and use it only on their own thread.
After an error that says the file itself is bad (corrupt, not a database, I/O,
read-only, cannot open) the connection is invalidated and the next job checks
out a new one, so a file that is repaired or replaced heals a running process.

The hand-off is what aiosqlite's is, and no more: a ``SimpleQueue`` to the thread,
one ``call_soon_threadsafe`` back that settles the caller's asyncio future. A
``ThreadPoolExecutor`` with ``asyncio.wrap_future`` cost a second future, its lock
and condition, and a chain of callbacks, about 20 us a job on a small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from session_repo.backends.sql.errors import file_is_bad
from session_repo.errors import RepositoryClosed

__all__ = ["Job", "SqliteWorker"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
_Item = tuple["asyncio.Future[Any]", Job]


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # a caller cancelled while its job ran: nobody to tell
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class SqliteWorker:
    """A thread that runs jobs on one connection of ``engine``.

    The thread starts with the first job and is a daemon: a repository never closed
    does not hold the interpreter at exit (SQLite's journal makes an interrupted
    write safe).

    Args:
        engine: the pipeline's sync engine.
        name: ``"reader"`` or ``"writer"``, for the thread's name.
        read_only: the connection refuses writes (``PRAGMA query_only``).
        pragmas: statements run on the connection once it is opened.
    """

    def __init__(
        self, engine: Engine, name: str, *, read_only: bool, pragmas: tuple[str, ...] = ()
    ) -> None:
        self._engine = engine
        self._pragmas = ("PRAGMA query_only = 1", *pragmas) if read_only else pragmas
        self._name = f"session-repo-sqlite-{name}"
        self._jobs: SimpleQueue[_Item | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopped: asyncio.Future[None] | None = None  # settled when the thread ends
        self._held: PoolProxiedConnection | None = None
        self._conn: sqlite3.Connection | None = None

    def run(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``job`` on the connection, on the worker's thread.

        A job whose future is cancelled before the thread takes it never runs; one
        cancelled later runs to its end, its outcome dropped.

        Args:
            job: given the ``sqlite3`` connection.

        Returns:
            A future of ``job``'s result, on the running loop.

        Raises:
            RepositoryClosed: the worker was closed.
        """
        if self._closed:
            raise RepositoryClosed("the repository closed before this call ran")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, job))
        return future

    def _serve(self) -> None:
        """The thread: jobs in order until the ``None`` that ``close()`` sends."""
        get = self._jobs.get
        while (item := get()) is not None:
            future, job = item
            if future.cancelled():  # one attribute read, safe from this thread
                continue
            settle: Callable[[asyncio.Future[Any], Any], None] = _settle
            try:
                outcome = job(self._conn if self._conn is not None else self._checkout())
            except BaseException as exc:  # the caller's to see, whatever it is
                if isinstance(exc, sqlite3.Error) and file_is_bad(exc):
                    self._release(invalidate=True)
                outcome, settle = exc, _fail
            try:  # noqa: SIM105 - contextlib.suppress is three Python calls a job
                future.get_loop().call_soon_threadsafe(settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits
                pass
            del item, future, job, outcome  # no reference outlives the job on this thread
        self._release()
        stopped = self._stopped
        if stopped is not None:
            with contextlib.suppress(RuntimeError):
                stopped.get_loop().call_soon_threadsafe(_settle, stopped, None)

    def _checkout(self) -> sqlite3.Connection:
        held = self._engine.raw_connection()
        conn = held.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
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
        """Give the connection back to the engine (on its thread) and stop the thread.

        Jobs queued before run first; later ones are refused with ``RepositoryClosed``.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._stopped = asyncio.get_running_loop().create_future()
        self._jobs.put(None)  # behind every job queued before it
        await asyncio.shield(self._stopped)
