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
any request that reached the database. Errors reach the callers as the driver
raised them; the front translates them. The connections come from a SQLAlchemy
engine (``sqlite_engine.sync_engine_for``) and the statements from ``statements``,
compiled once for the sqlite dialect.
"""

from __future__ import annotations

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


def _run_writes(conn: sqlite3.Connection, requests: list[Job]) -> list[Any]:
    """One transaction for the whole group; each request's statement stands alone."""
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
        self._writer = SqliteWorker(self._engine, "writer", read_only=False)
        self._inline = InlineReader(self._engine)
        self._reads = Batcher(self._read_batch, max_batch=MAX_BATCH, overlap=False)
        self._writes = Batcher(self._write_batch, max_batch=MAX_BATCH, overlap=False)
        self._rows = Compiled.of(statements.rows, _DIALECT)
        self._rows_many = statements.rows_many
        self._size = str(statements.storage_size)
        compile_ = functools.partial(Compiled.of, dialect=_DIALECT)
        self._upsert = compile_(statements.upsert)
        self._claim = compile_(statements.claim)
        self._owner = compile_(statements.owner)
        self._touch = compile_(statements.touch)
        self._delete = compile_(statements.delete)
        self._delete_owner = compile_(statements.delete_owner)
        self._cleanup = compile_(statements.cleanup_batch)
        self._gauges = compile_(statements.gauges)

    async def start(self) -> None:
        """Open the loop's own reader, on the reader thread (opening may wait for a lock)."""
        await self._reader.run(lambda conn: self._inline.connect())

    async def close(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
        self._inline.close()
        try:
            await self._reader.close()
        finally:
            await self._writer.close()
            self._engine.dispose()

    # -- batches ------------------------------------------------------------

    async def _read_batch(self, requests: list[Lookup | Job]) -> list[Any]:
        return await self._reader.run(lambda conn: self._run_reads(conn, requests))

    async def _write_batch(self, requests: list[Job]) -> list[Any]:
        return await self._writer.run(lambda conn: _run_writes(conn, requests))

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
            size = conn.execute(self._size).fetchone()[0]
            return Gauges(int(live or 0), int(expired or 0), int(size))

        return await self.read(read)

    async def probe(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())
