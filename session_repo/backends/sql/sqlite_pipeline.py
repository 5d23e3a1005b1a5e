"""The SQLite hot path: two connections, each on its own thread, fed in batches.

Why: a thread hand-off costs 80-200 us on a small machine, and SQLAlchemy's async
layer makes five or more per operation. Here every hand-off carries a batch:

- reads: the lookups that arrive while the reader is busy go together as one
  ``SELECT .. WHERE session_key IN (..)`` on the reader connection;
- writes: the writes that arrive while the writer is busy go together into one
  ``BEGIN IMMEDIATE .. COMMIT`` on the writer connection (group commit); each caller
  is resolved only after that commit, so an acknowledged write is durable. A write
  alone is one statement in autocommit: SQLite makes it its own transaction,
  committed before the statement returns (a claim that loses reads its owner in a
  transaction of its own);
- checkpoints: a third connection copies the WAL back into the file on a thread of
  its own, so the writer seldom waits for a checkpoint's fsyncs (``sqlite_checkpoint``).

A statement that fails inside a group fails only its own caller (SQLite rolls back
just that statement); a failed BEGIN or COMMIT fails the whole group. A caller
cancelled before its batch starts is dropped; one cancelled later still runs, like
any request that reached the database. Errors reach the callers as the driver
raised them; the front translates them. The connections come from a SQLAlchemy
engine (``sqlite_engine.sync_engine_for``) and the statements from ``statements``,
compiled once for the sqlite dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from session_repo._core.batching import Batcher
from session_repo._core.storage import Gauges
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.errors import file_is_bad
from session_repo.backends.sql.path import SqlPath
from session_repo.backends.sql.sqlite_checkpoint import WRITER_PRAGMAS, Checkpointer
from session_repo.backends.sql.sqlite_engine import Synchronous, sync_engine_for
from session_repo.backends.sql.sqlite_inline import InlineReader
from session_repo.backends.sql.sqlite_worker import Job, SqliteWorker
from session_repo.backends.sql.statements import Statements

__all__ = ["SqlitePipeline"]

T = TypeVar("T")
Lookup = tuple[bytes, int]

# Most requests one batch carries; SQLite allows 32766 parameters per statement.
MAX_BATCH = 256
# Expired rows one write group deletes: a few milliseconds, so writers queued behind it
# wait little while a large cleanup runs.
CLEANUP_SLICE = 500
_DIALECT = sqlite_dialect.dialect(paramstyle="qmark")


@functools.lru_cache(maxsize=MAX_BATCH)
def _expanded(statement: Select[Any], count: int) -> str:
    """``statement`` with its expanding ``keys`` list rendered for ``count`` keys."""
    compiled = statement.params(keys=[b""] * count).compile(
        dialect=_DIALECT, compile_kwargs={"render_postcompile": True}
    )
    return str(compiled)


def _in_order(compiled: Compiled, *names: str) -> str:
    """``compiled``'s SQL, once its parameters are checked to be exactly ``names``, in order.

    Raises:
        ValueError: the statement takes other parameters (statements changed).
    """
    if compiled.order != names:
        raise ValueError(f"statement parameters {compiled.order}, expected {names}")
    return compiled.sql


def _run_writes(conn: sqlite3.Connection, requests: list[Job]) -> list[Any]:
    """One transaction for the whole group; each request's statement stands alone.

    A request alone runs in autocommit: one statement is its own transaction in
    SQLite, committed before ``execute`` returns (or its rows are all fetched), so
    the BEGIN IMMEDIATE and COMMIT around it would be two statements for nothing.
    Its error is raised as the driver raised it.
    """
    if len(requests) == 1 and not conn.in_transaction:
        return [requests[0](conn)]
    conn.execute("BEGIN IMMEDIATE")
    try:
        results: list[Any] = []
        for request in requests:
            try:
                results.append(request(conn))
            except sqlite3.Error as exc:
                if file_is_bad(exc) or not conn.in_transaction:  # the group cannot go on
                    raise
                results.append(exc)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _execute(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> None:
    conn.execute(sql, args)


def _claim(conn: sqlite3.Connection, claim: str, owner: str, args: tuple[Any, ...]) -> str:
    """The claim statement; if it did not take the session, who holds it.

    In a group, the owner is read in the group's transaction. Alone, in autocommit,
    the claim runs again with the owner's read in one ``BEGIN IMMEDIATE``
    transaction: the owner answered is the one that held the session as it lost.
    """
    taken = conn.execute(claim, args).fetchall()  # to the end: alone, that commits it
    if taken:
        return str(taken[0][0])
    if conn.in_transaction:
        return str(conn.execute(owner, args[:1]).fetchone()[0])
    conn.execute("BEGIN IMMEDIATE")
    try:
        taken = conn.execute(claim, args).fetchall() or conn.execute(owner, args[:1]).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return str(taken[0][0])


class SqlitePipeline(SqlPath):
    """The contract's operations on one SQLite file, in batches on two threads.

    Args:
        path: the database file (created and in WAL mode already).
        statements: the sqlite dialect's statements.
        busy_timeout: seconds a connection waits for another's write lock.
        synchronous: the ``synchronous`` mode of every connection.
    """

    def __init__(
        self,
        path: Path,
        statements: Statements,
        *,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        self._engine = sync_engine_for(path, busy_timeout=busy_timeout, synchronous=synchronous)
        self._reader = SqliteWorker(self._engine, "reader", read_only=True)
        self._writer = SqliteWorker(self._engine, "writer", read_only=False, pragmas=WRITER_PRAGMAS)
        self._inline = InlineReader(self._engine)
        self._checkpoints = Checkpointer(self._engine, self._writer)
        self._reads = Batcher(self._read_batch, max_batch=MAX_BATCH, overlap=False)
        self._writes = Batcher(self._write_batch, max_batch=MAX_BATCH, overlap=False)
        self._rows = Compiled.of(statements.rows, _DIALECT)
        self._rows_many = statements.rows_many
        self._size = str(statements.storage_size)
        compile_ = functools.partial(Compiled.of, dialect=_DIALECT)
        self._touch = compile_(statements.touch)
        self._delete = compile_(statements.delete)
        self._delete_owner = compile_(statements.delete_owner)
        self._cleanup = compile_(statements.cleanup_batch)
        self._gauges = compile_(statements.gauges)
        # The hot statements take their values in the order the callers have them.
        self._upsert = _in_order(compile_(statements.upsert), "key", "alloc", "expires")
        claim = compile_(statements.claim)
        self._claim = _in_order(claim, "key", "alloc", "expires", "now", "replacing")
        self._owner = _in_order(compile_(statements.owner), "key")

    async def start(self) -> None:
        """Open the loop's own reader, on the reader thread (opening may wait for a lock)."""
        await self._reader.run(lambda conn: self._inline.connect())

    async def close(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
        self._inline.close()
        try:
            await self._checkpoints.close()
            await self._reader.close()
        finally:
            await self._writer.close()
            self._engine.dispose()

    # -- batches ------------------------------------------------------------

    # Plain functions returning the worker's future: the batcher awaits it, one
    # coroutine less per call than an ``async def`` around it.

    def _read_batch(self, requests: list[Lookup | Job]) -> asyncio.Future[list[Any]]:
        return self._reader.run(functools.partial(self._run_reads, requests=requests))

    def _write_batch(self, requests: list[Job]) -> asyncio.Future[list[Any]]:
        self._checkpoints.wrote(len(requests))
        return self._writer.run(functools.partial(_run_writes, requests=requests))

    def _run_reads(self, conn: sqlite3.Connection, requests: list[Lookup | Job]) -> list[Any]:
        """Key lookups as one IN query; other read jobs one by one."""
        with contextlib.suppress(sqlite3.Error):  # the loop's own reader, (re)opened here
            self._inline.connect()
        keys = list({request[0] for request in requests if isinstance(request, tuple)})
        rows: dict[bytes, tuple[str, int]] = {}
        if keys:
            sql = self._rows.sql if len(keys) == 1 else _expanded(self._rows_many, len(keys))
            rows = {key: (owner, expires) for key, owner, expires in conn.execute(sql, keys)}
        results: list[Any] = []
        for request in requests:
            if isinstance(request, tuple):
                row = rows.get(request[0])
                results.append(row[0] if row is not None and row[1] > request[1] else None)
            else:
                try:
                    results.append(request(conn))
                except sqlite3.Error as exc:
                    if file_is_bad(exc):
                        raise
                    results.append(exc)
        return results

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the reader connection, in the next read batch."""
        result: T = await self._reads.call(job)
        return result

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the writer connection, inside the next write group's transaction."""
        result: T = await self._writes.call(job)
        return result

    # -- operations ----------------------------------------------------------

    async def lookup(self, key: bytes, now: int) -> str | None:
        if self._reads.idle():  # nothing to join: read here, without the thread hop
            rows = self._inline.rows(self._rows.sql, [key])
            if rows is not None:
                return rows[0][1] if rows and rows[0][2] > now else None
        owner: str | None = await self._reads.submit((key, now))
        return owner

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        sql, args = self._upsert, (key, alloc_id, expires_at)
        await self._writes.call(lambda conn: _execute(conn, sql, args))

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        args = (key, alloc_id, expires_at, now, replacing)
        claim, owner = self._claim, self._owner
        result: str = await self._writes.call(lambda conn: _claim(conn, claim, owner, args))
        return result

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
            size = conn.execute(self._size).fetchone()[0]
            return Gauges(int(live or 0), int(expired or 0), int(size))

        return await self.read(read)

    async def probe(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())
