"""The SQLite hot path: two connections, each on its own thread, fed in batches.

Why: a thread hand-off costs 80-200 us on a small machine, and SQLAlchemy's async
layer makes five or more per operation. Here every hand-off carries a batch:

- reads: the lookups that arrive while the reader is busy go together as one
  ``SELECT .. WHERE session_key IN (..)`` on the reader connection;
- writes: the writes that arrive while the writer is busy go together into one
  ``BEGIN IMMEDIATE .. COMMIT`` on the writer connection (group commit); each caller
  is resolved only after that commit, so an acknowledged write is durable.

A statement that fails inside a group fails only its own caller (SQLite rolls back
just that statement); a failed BEGIN or COMMIT fails the whole group. A caller
cancelled before its batch starts is dropped; one cancelled later still runs, like
any request that reached the database. Statements come from SQLAlchemy, compiled
once for the sqlite dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from session_repo._core.storage import Gauges
from session_repo._core.translate import translate
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.engine import Synchronous, check_synchronous
from session_repo.backends.sql.model import bindings
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.statements import Statements
from session_repo.errors import RepositoryClosed, SessionRepoError

__all__ = ["SqlitePipeline"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Request = TypeVar("Request")

# Most requests one batch carries; SQLite allows 32766 parameters per statement.
MAX_BATCH = 256
# Expired rows one write group deletes: a few milliseconds, so writers queued behind it
# wait little while a large cleanup runs.
CLEANUP_SLICE = 500
_DIALECT = sqlite_dialect.dialect(paramstyle="qmark")


@functools.lru_cache(maxsize=MAX_BATCH)
def _lookup_many_sql(count: int) -> str:
    many = select(bindings.c.session_key, bindings.c.alloc_id, bindings.c.expires_at).where(
        bindings.c.session_key.in_(bindparam("keys", expanding=True))
    )
    keys = [b""] * count
    return str(
        many.params(keys=keys).compile(
            dialect=_DIALECT, compile_kwargs={"render_postcompile": True}
        )
    )


class _Worker:
    """One sqlite3 connection, used only on its own thread.

    After an error that says the file itself is bad (corrupt, not a database, I/O,
    read-only, cannot open), the connection is dropped and the next job opens a new
    one, so a file that is repaired or replaced heals a running process.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        *,
        read_only: bool,
        busy_timeout: float,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        self._path = path
        self._read_only = read_only
        self._busy_timeout = busy_timeout
        self._synchronous = check_synchronous(synchronous)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"session-repo-sqlite-{name}")
        self._conn: sqlite3.Connection | None = None

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> ThreadFuture[T]:
        return self._executor.submit(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            if _file_is_bad(exc):
                conn, self._conn = self._conn, None
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=True
        )
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        if self._read_only:
            conn.execute("PRAGMA query_only = 1")
        return conn

    async def close(self) -> None:
        def close(_: Any) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.wrap_future(self._executor.submit(close, None))
        finally:
            self._executor.shutdown(wait=False)


class _Coalescer(Generic[Request]):
    """Requests made while a batch is in flight travel together in the next one."""

    def __init__(
        self,
        worker: _Worker,
        run: Callable[[sqlite3.Connection, list[Request]], list[Any]],
        action: str,
    ) -> None:
        self._worker = worker
        self._run = run
        self._action = action
        self._queue: list[tuple[Request, asyncio.Future[Any]]] = []
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, request: Request) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((request, future))
        if not self._busy:
            self._busy = True
            self._idle.clear()
            loop.call_soon(self._start)  # the rest of this tick's requests join the batch
        return future

    async def drain(self) -> None:
        await self._idle.wait()

    def _start(self) -> None:
        batch = [item for item in self._queue[:MAX_BATCH] if not item[1].done()]
        del self._queue[:MAX_BATCH]
        if not batch:
            if self._queue:
                self._start()
            else:
                self._busy = False
                self._idle.set()
            return
        loop = asyncio.get_running_loop()
        requests = [request for request, _ in batch]
        try:
            done = self._worker.submit(lambda conn: self._run(conn, requests))
        except RuntimeError:  # the worker was shut down: the repository is closing
            closed = RepositoryClosed("the repository closed before this call ran")
            for _, future in batch:
                if not future.done():
                    future.set_exception(closed)
            self._start()
            return
        done.add_done_callback(
            lambda outcome: loop.call_soon_threadsafe(self._finish, batch, outcome)
        )

    def _finish(
        self, batch: list[tuple[Request, asyncio.Future[Any]]], outcome: ThreadFuture[list[Any]]
    ) -> None:
        error = outcome.exception()
        if error is not None:
            failure = self._failure(error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        else:
            for (_, future), result in zip(batch, outcome.result(), strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(self._failure(result))
                else:
                    future.set_result(result)
        self._start()

    def _failure(self, error: BaseException) -> BaseException:
        """What the caller gets: a ``StorageError`` chained to ``error``, or the
        library's own error (or a ``BaseException`` like cancellation) as it is."""
        if isinstance(error, SessionRepoError) or not isinstance(error, Exception):
            return error
        failure = translate(error, self._action)
        failure.__cause__ = error
        return failure


def _run_reads(conn: sqlite3.Connection, requests: list[tuple[bytes, int] | Job]) -> list[Any]:
    """Key lookups as one IN query; other read jobs one by one."""
    keys = list({request[0] for request in requests if isinstance(request, tuple)})
    rows: dict[bytes, tuple[str, int]] = {}
    if len(keys) == 1:
        rows = {key: (owner, expires) for key, owner, expires in conn.execute(_LOOKUP_ONE, keys)}
    elif keys:
        rows = {
            key: (owner, expires)
            for key, owner, expires in conn.execute(_lookup_many_sql(len(keys)), keys)
        }
    results: list[Any] = []
    for request in requests:
        if isinstance(request, tuple):
            row = rows.get(request[0])
            results.append(row[0] if row is not None and row[1] > request[1] else None)
        else:
            try:
                results.append(request(conn))
            except sqlite3.Error as exc:
                if _file_is_bad(exc):
                    raise
                results.append(exc)
    return results


def _run_writes(conn: sqlite3.Connection, requests: list[Job]) -> list[Any]:
    """One transaction for the whole group; each request's statement stands alone."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results: list[Any] = []
        for request in requests:
            try:
                results.append(request(conn))
            except sqlite3.Error as exc:
                if _file_is_bad(exc) or not conn.in_transaction:  # the group cannot go on
                    raise
                results.append(exc)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


# Primary result codes that mean the file, not the statement, is the problem.
_BAD_FILE = {8, 10, 11, 14, 26}  # READONLY, IOERR, CORRUPT, CANTOPEN, NOTADB


def _file_is_bad(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BAD_FILE
    message = str(exc).lower()
    return any(word in message for word in ("malformed", "not a database", "disk i/o", "readonly"))


_LOOKUP_ONE = str(
    select(bindings.c.session_key, bindings.c.alloc_id, bindings.c.expires_at)
    .where(bindings.c.session_key == bindparam("key"))
    .compile(dialect=_DIALECT)
)


class SqlitePipeline(SqlPath):
    """The contract's operations on one SQLite file, in batches on two threads."""

    def __init__(
        self,
        path: Path,
        statements: Statements,
        *,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        self._reader, self._writer = (
            _Worker(
                path,
                name,
                read_only=name == "reader",
                busy_timeout=busy_timeout,
                synchronous=synchronous,
            )
            for name in ("reader", "writer")
        )
        self._reads: _Coalescer[tuple[bytes, int] | Job] = _Coalescer(
            self._reader, _run_reads, "read"
        )
        self._writes: _Coalescer[Job] = _Coalescer(self._writer, _run_writes, "write")
        self._upsert = Compiled.of(statements.upsert, _DIALECT)
        self._claim = Compiled.of(statements.claim, _DIALECT)
        self._owner = Compiled.of(statements.owner, _DIALECT)
        self._touch = Compiled.of(statements.touch, _DIALECT)
        self._delete = Compiled.of(statements.delete, _DIALECT)
        self._delete_owner = Compiled.of(statements.delete_owner, _DIALECT)
        self._cleanup = Compiled.of(statements.cleanup_batch, _DIALECT)
        self._gauges = Compiled.of(statements.gauges, _DIALECT)

    async def close(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
        await asyncio.gather(self._reader.close(), self._writer.close())

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._reads.submit(job)
        return result

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._writes.submit(job)
        return result

    async def lookup(self, key: bytes, now: int) -> str | None:
        owner: str | None = await self._reads.submit((key, now))
        return owner

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        args = self._upsert.args(key=key, alloc=alloc_id, expires=expires_at)

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(self._upsert.sql, args)

        await self.write(upsert)

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        args = self._claim.args(
            key=key, alloc=alloc_id, expires=expires_at, now=now, replacing=replacing
        )
        owner_args = self._owner.args(key=key)

        def claim(conn: sqlite3.Connection) -> str:
            taken = conn.execute(self._claim.sql, args).fetchone()
            if taken is not None:
                return str(taken[0])
            return str(conn.execute(self._owner.sql, owner_args).fetchone()[0])

        return await self.write(claim)

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        args = self._touch.args(key=key, expires=expires_at, now=now)
        return await self.write(lambda conn: conn.execute(self._touch.sql, args).rowcount > 0)

    async def delete(self, key: bytes, now: int) -> bool:
        args = self._delete.args(key=key, now=now)
        return await self.write(lambda conn: conn.execute(self._delete.sql, args).rowcount > 0)

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        args = self._delete_owner.args(alloc=alloc_id, now=now)
        return await self.write(lambda conn: conn.execute(self._delete_owner.sql, args).rowcount)

    async def cleanup_batch(self, now: int, batch: int) -> int:
        """Up to ``batch`` expired rows, in slices that each share a commit with writers."""
        removed = 0
        while removed < batch:
            size = min(CLEANUP_SLICE, batch - removed)
            count = await self.write(self._cleanup_job(now, size))
            removed += count
            if count < size:
                break
        return removed

    def _cleanup_job(self, now: int, size: int) -> Callable[[sqlite3.Connection], int]:
        args = self._cleanup.args(now=now, batch=size)
        return lambda conn: conn.execute(self._cleanup.sql, args).rowcount

    async def gauges(self, now: int) -> Gauges:
        args = self._gauges.args(now=now)

        def read(conn: sqlite3.Connection) -> Gauges:
            live, expired = conn.execute(self._gauges.sql, args).fetchone()
            size = conn.execute(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            ).fetchone()[0]
            return Gauges(int(live or 0), int(expired or 0), int(size))

        return await self.read(read)

    async def probe(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())
