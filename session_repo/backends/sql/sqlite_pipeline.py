"""The SQLite hot path: two connections, each on its own thread, fed in batches.

Why: a thread hand-off costs 80-200 us on a small machine, and SQLAlchemy's async
layer makes five or more per operation. Here every hand-off carries a batch:

- reads: the lookups that arrive while the reader is busy go together as one
  ``SELECT .. WHERE session_key IN (..)`` on the reader connection;
- writes: those that arrive while the writer is busy go together into one ``BEGIN
  IMMEDIATE .. COMMIT`` on the writer connection (group commit); each caller is
  resolved only after that commit, so an acknowledged write is durable. A write alone
  is one autocommit statement, committed before it returns (a claim that loses reads
  its owner in a transaction of its own);
- checkpoints: a third connection copies the WAL back on a thread of its own, so the
  writer seldom waits for a checkpoint's fsyncs (``sqlite_checkpoint``).

A statement that fails inside a group fails only its own caller (SQLite rolls back
just that statement); a failed BEGIN or COMMIT fails the whole group. A caller
cancelled before its batch starts is dropped; one cancelled later still runs. Errors
reach the callers as the driver raised them (the front translates them). The
connections come from ``sqlite_engine.sync_engine_for``, the statements from
``statements``, compiled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Coroutine
from operator import methodcaller
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from session_repo._core.batching import Batcher
from session_repo._core.storage import Gauges, LeaseRow
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.counted_writes import CountedWrites
from session_repo.backends.sql.errors import file_is_bad
from session_repo.backends.sql.liveness import KEY_AT, answer_read
from session_repo.backends.sql.path import Swept
from session_repo.backends.sql.sqlite_checkpoint import WRITER_PRAGMAS, Checkpointer
from session_repo.backends.sql.sqlite_engine import Synchronous, sync_engine_for
from session_repo.backends.sql.sqlite_inline import InlineReader
from session_repo.backends.sql.sqlite_worker import SqliteWorker
from session_repo.backends.sql.sqlite_writes import (
    Job,
    claim,
    in_transaction,
    run_alone,
    run_writes,
)
from session_repo.backends.sql.statements import Statements

__all__ = ["SqlitePipeline"]

T = TypeVar("T")
Read = tuple[bytes, int, bool]
"""``(key, now, lease)``: a lookup, or (``lease``) a lease read."""

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


class SqlitePipeline(CountedWrites):
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
        self._writes = Batcher(
            self._write_batch, max_batch=MAX_BATCH, overlap=False, alone=self._write_alone
        )
        compile_ = functools.partial(Compiled.of, dialect=_DIALECT)
        self._rows = compile_(statements.rows)
        self._lookup = compile_(statements.lookup)
        self._lease = compile_(statements.lease)
        assert self._lookup.order == self._lease.order == ("key", "now", "now")  # in-loop reads
        self._rows_many = statements.rows_many
        self._size = str(statements.storage_size)
        self._upsert = compile_(statements.upsert)
        self._claim = compile_(statements.claim)
        # upsert() and claim() build their parameters in this order, with no dict between.
        assert self._upsert.order == ("key", "alloc", "expires", "alloc", "now", "now")
        assert self._claim.order == (
            *("key", "alloc", "expires", "alloc"),
            *("now", "now", "now", "now", "replacing"),
        )
        self._current = compile_(statements.current).sql
        self._touch = compile_(statements.touch)
        self._touch_held = compile_(statements.touch_held)
        self._delete = compile_(statements.delete)
        self._delete_held = compile_(statements.delete_held)
        self._delete_owner = compile_(statements.delete_owner)
        self._cleanup = compile_(statements.cleanup_batch)
        self._gauges = compile_(statements.gauges)
        owner = statements.owner
        self._heartbeat = compile_(owner.heartbeat)
        self._owners = compile_(owner.owners)
        self._release_rest = compile_(owner.release_rest)
        self._release_owner = compile_(owner.release_owner)
        self._cleanup_lapsed = compile_(owner.cleanup_lapsed)
        self._cleanup_owners = compile_(owner.cleanup_owners)

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

    def _read_batch(self, requests: list[Read | Job]) -> asyncio.Future[list[Any]]:
        return self._reader.run(functools.partial(self._run_reads, requests=requests))

    def _write_batch(self, requests: list[Job]) -> asyncio.Future[list[Any]]:
        self._checkpoints.wrote(len(requests))
        return self._writer.run(functools.partial(run_writes, requests=requests))

    def _write_alone(self, job: Job) -> asyncio.Future[Any]:
        self._checkpoints.wrote(1)
        return self._writer.run(functools.partial(run_alone, job))

    def _run_reads(self, conn: sqlite3.Connection, requests: list[Read | Job]) -> list[Any]:
        """Key reads as one IN query; other read jobs one by one."""
        with contextlib.suppress(sqlite3.Error):  # the loop's own reader, (re)opened here
            self._inline.connect()
        keys = list({request[0] for request in requests if isinstance(request, tuple)})
        rows: dict[bytes, Any] = {}
        if keys:
            sql = self._rows.sql if len(keys) == 1 else _expanded(self._rows_many, len(keys))
            rows = {row[KEY_AT]: row for row in conn.execute(sql, keys)}
        results: list[Any] = []
        for request in requests:
            if isinstance(request, tuple):
                key, now, lease = request
                results.append(answer_read(rows.get(key), now, lease))
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
            # Liveness decided in the statement: one column back, no row to judge here.
            rows = self._inline.rows(self._lookup.sql, (key, now, now))
            if rows is not None:
                return rows[0][0] if rows else None
        owner: str | None = await self._reads.submit((key, now, False))
        return owner

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        if self._reads.idle():
            rows = self._inline.rows(self._lease.sql, (key, now, now))
            if rows is not None:
                return LeaseRow(*rows[0]) if rows else None
        row: LeaseRow | None = await self._reads.submit((key, now, True))
        return row

    # The write jobs are C callables (``methodcaller``, ``partial``), not closures: no
    # function, cells or Python frame per call.

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        args = (key, alloc_id, expires_at, alloc_id, now, now)
        await self._writes.call(methodcaller("execute", self._upsert.sql, args))

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        row: LeaseRow = await self._claiming(key, alloc_id, expires_at, now, replacing)
        return row.owner

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        row: LeaseRow = await self._claiming(key, alloc_id, expires_at, now, replacing)
        return row

    def _claiming(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> Coroutine[Any, Any, LeaseRow]:
        """The claim's write, handed back to await (one coroutine less per claim)."""
        args = (key, alloc_id, expires_at, alloc_id, now, now, now, now, replacing)
        job = functools.partial(claim, self._claim.sql, args, self._current, key)
        call: Coroutine[Any, Any, LeaseRow] = self._writes.call(job)
        return call

    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        sql, args = compiled.sql, compiled.args(**values)
        return await self.write(lambda conn: int(conn.execute(sql, args).rowcount))

    async def release(self, alloc_id: str, now: int) -> int:
        steps = [
            (self._delete_owner.sql, self._delete_owner.args(alloc=alloc_id, now=now)),
            (self._release_rest.sql, self._release_rest.args(alloc=alloc_id)),
            (self._release_owner.sql, self._release_owner.args(alloc=alloc_id)),
        ]

        def job(conn: sqlite3.Connection) -> int:
            # Bindings first, the row last: none outlives the row.
            return in_transaction(conn, lambda: [conn.execute(*step).rowcount for step in steps])[0]

        return await self.write(job)

    async def owners(self, now: int) -> dict[str, int]:
        sql, args = self._owners.sql, self._owners.args(now=now)
        rows = await self.read(lambda conn: conn.execute(sql, args).fetchall())
        return {str(owner): int(end) for owner, end in rows}

    async def cleanup_batch(self, now: int, batch: int) -> Swept:
        """Up to ``batch`` dead rows, in slices that each share a commit with writers.

        Expired bindings, then lapsed owners' bindings, then their rows left with none.
        """
        removed = 0
        for compiled in (self._cleanup, self._cleanup_lapsed):
            while removed < batch:
                size = min(CLEANUP_SLICE, batch - removed)
                count = await self._matched(compiled, now=now, batch=size)
                removed += count
                if count < size:
                    break
        if removed < batch:
            await self._matched(self._cleanup_owners, now=now)
        return Swept(removed)

    async def gauges(self, now: int) -> Gauges:
        args = self._gauges.args(now=now)

        def read(conn: sqlite3.Connection) -> Gauges:
            live, dead, owners = conn.execute(self._gauges.sql, args).fetchone()
            size = conn.execute(self._size).fetchone()[0]
            return Gauges(int(live or 0), int(dead or 0), int(size), int(owners))

        return await self.read(read)

    async def probe(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())
