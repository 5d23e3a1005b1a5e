"""One SQLite connection on its own thread, checked out of a SQLAlchemy engine.

The pipeline's workers (reader, writer, checkpointer) each hold one connection from the
pipeline's sync engine (``sqlite_engine.sync_engine_for``: its ``connect`` event
sets the pragmas) for as long as they live, and use it only on their own thread.
After an error that says the file itself is bad (corrupt, not a database, I/O,
read-only, cannot open) the connection is invalidated and the next job checks
out a new one, so a file that is repaired or replaced heals a running process.

The hand-off is what aiosqlite's is, and no more: a ``SimpleQueue`` to the thread,
one ``call_soon_threadsafe`` back that settles the caller's asyncio future. A
``ThreadPoolExecutor`` with ``asyncio.wrap_future`` cost a second future, its lock
and condition, and a chain of callbacks, about 20 us a job on a small machine.

The writer's batches come as groups (``run_group``): when the thread is free it
takes every group queued, runs them as one, and answers them all in one callback.
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
Group = Callable[[sqlite3.Connection, Any], Any]
_Item = tuple["asyncio.Future[Any]", "Job | list[Any]"]

# Most requests the thread runs as one group, however many batches they came in.
MAX_GROUP = 256


def _call(conn: sqlite3.Connection, job: Job) -> Any:
    return job(conn)


def _no_group(conn: sqlite3.Connection, requests: list[Any]) -> list[Any]:
    raise TypeError("run_group() on a worker made without a group")


def _post(future: asyncio.Future[Any], callback: Callable[..., None], *args: Any) -> None:
    """``callback(*args)`` on ``future``'s loop, from the thread (not if it closed)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
        future.get_loop().call_soon_threadsafe(callback, *args)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # a caller cancelled while its job ran: nobody to tell
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, result in outcomes:
        _settle(future, result)


def _fail_all(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        _fail(future, error)


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
        self,
        engine: Engine,
        name: str,
        *,
        read_only: bool,
        pragmas: tuple[str, ...] = (),
        group: Group = _no_group,
    ) -> None:
        self._engine = engine
        self._pragmas = ("PRAGMA query_only = 1", *pragmas) if read_only else pragmas
        self._group = group
        self._name = f"session-repo-sqlite-{name}"
        self._jobs: SimpleQueue[_Item | None] = SimpleQueue()
        self._carried: list[_Item | None] = []  # taken off the queue early, by _run_groups
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
        return self._put(job)

    def run_group(self, requests: list[Any]) -> asyncio.Future[list[Any]]:
        """Run ``requests`` with the worker's ``group``, together with the groups queued
        beside them: the thread takes every group waiting when it is free and runs them
        as one (a group commit across batches), then answers each its own outcomes.

        Args:
            requests: what ``group`` is given, with the other groups' requests.

        Returns:
            A future of the outcomes of ``requests``, in order.

        Raises:
            RepositoryClosed: the worker was closed.
        """
        return self._put(requests)

    def _put(self, work: Job | list[Any]) -> asyncio.Future[Any]:
        if self._closed:
            raise RepositoryClosed("the repository closed before this call ran")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, work))
        return future

    def _serve(self) -> None:
        """The thread: jobs in order until the ``None`` that ``close()`` sends."""
        carried, get = self._carried, self._jobs.get
        while (item := carried.pop() if carried else get()) is not None:
            future, work = item
            if isinstance(work, list):
                self._run_groups([(future, work)])
            elif not future.cancelled():  # one attribute read, safe from this thread
                self._run_job(future, work, _call)
            del item, future, work  # no reference outlives the job on this thread
        self._release()
        if self._stopped is not None:
            _post(self._stopped, _settle, self._stopped, None)

    def _run_job(self, future: asyncio.Future[Any], work: Any, run: Group) -> None:
        settle: Callable[[asyncio.Future[Any], Any], None] = _settle
        try:
            outcome = run(self._connection(), work)
        except BaseException as exc:  # the caller's to see, whatever it is
            self._failed(exc)
            outcome, settle = exc, _fail
        _post(future, settle, future, outcome)

    def _run_groups(self, items: list[tuple[asyncio.Future[Any], list[Any]]]) -> None:
        """The group in ``items`` and the groups queued after it, as one."""
        jobs, size = self._jobs, len(items[0][1])
        while size < MAX_GROUP and not jobs.empty():
            following = jobs.get_nowait()
            if following is None or not isinstance(following[1], list):
                self._carried.append(following)  # a job, or the end: next, in its turn
                break
            items.append((following[0], following[1]))
            size += len(following[1])
        if len(items) == 1:  # the common case, and all there is at concurrency 1
            future, work = items[0]
            if not future.cancelled():
                self._run_job(future, work, self._group)
            return
        live = [(future, work) for future, work in items if not future.cancelled()]
        if not live:
            return
        requests = [request for _, work in live for request in work]
        try:
            outcomes = self._group(self._connection(), requests)
        except BaseException as exc:  # the whole group failed: every caller sees why
            self._failed(exc)
            _post(live[0][0], _fail_all, [future for future, _ in live], exc)
            return
        answers, start = [], 0
        for future, work in live:
            answers.append((future, outcomes[start : start + len(work)]))
            start += len(work)
        _post(live[0][0], _settle_all, answers)

    def _connection(self) -> sqlite3.Connection:
        return self._conn if self._conn is not None else self._checkout()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.Error) and file_is_bad(exc):
            self._release(invalidate=True)

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
