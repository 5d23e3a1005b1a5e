"""WAL checkpoints off the writer's path, on a connection and thread of their own.

In WAL mode SQLite checkpoints in the connection whose commit takes the WAL past
``wal_autocheckpoint`` pages (1000): that commit copies the pages back into the
database file and, with ``synchronous=NORMAL``, waits for two fsyncs (10-40 ms on a
small virtual machine), and every write queued behind it waits too. Here a
connection of its own runs a ``PASSIVE`` checkpoint on its own thread every
``CHECKPOINT_ROWS`` rows written, while the writer goes on: a passive checkpoint
takes no lock a writer needs and never waits for one.

Under a steady load such a checkpoint never catches up (frames keep coming while it
syncs), and SQLite starts the WAL over only once every frame is back in the file.
So once the WAL holds ``RESTART_FRAMES`` frames, the writer itself checkpoints, between
two groups: only the frames written since the last checkpoint are left to copy, and
the next write starts the WAL from the beginning. The writer pays two fsyncs per
``RESTART_FRAMES`` frames instead of per 1000, and the WAL stays bounded (a few
times ``RESTART_FRAMES``; more while a stalled disk holds a checkpoint, after which
``journal_size_limit`` cuts the file back). The writer's own autocheckpoint stays on,
at ``4 * RESTART_FRAMES``, as the safety net should this machinery fall behind.

A checkpoint that fails is left for the writes to report: the file's trouble
(locked, read-only, corrupt) reaches their callers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from sqlalchemy.engine import Engine

from session_repo.backends.sql.sqlite_worker import SqliteWorker
from session_repo.errors import RepositoryClosed

__all__ = ["CHECKPOINT_ROWS", "RESTART_FRAMES", "WRITER_PRAGMAS", "Checkpointer"]

# Rows written between two checkpoints: 1000-2000 WAL frames. Each checkpoint's
# fsyncs slow the writes beside it a little; at 128 rows, p99 at one task was
# 0.8-0.9 ms, at 512 0.6-0.7 ms, throughput the same.
CHECKPOINT_ROWS = 512
# WAL frames (pages) at which the writer checkpoints the rest and the WAL starts over.
RESTART_FRAMES = 2000
# The writer's own autocheckpoint, the safety net; and the size the WAL file is cut
# back to when it starts over, after a slow disk let it grow (a checkpoint that
# waits seconds for an fsync: the writes go on meanwhile).
WRITER_PRAGMAS = (
    f"PRAGMA wal_autocheckpoint = {4 * RESTART_FRAMES}",
    f"PRAGMA journal_size_limit = {32 * 2**20}",
)

_Then = Callable[["asyncio.Future[int]"], None]


def _passive(conn: sqlite3.Connection) -> int:
    """A checkpoint that waits for no one; the frames the WAL holds."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


class Checkpointer:
    """Passive checkpoints once enough rows were written, one at a time.

    Args:
        engine: the pipeline's sync engine (its ``connect`` event sets the pragmas).
        writer: the pipeline's writer, which checkpoints what is left when the WAL is long.
    """

    def __init__(self, engine: Engine, writer: SqliteWorker) -> None:
        self._worker = SqliteWorker(engine, "checkpointer", read_only=False)
        self._writer = writer
        self._rows = 0
        self._running = False  # a checkpoint here, or the writer's, is under way

    def wrote(self, rows: int) -> None:
        """Count ``rows`` handed to the writer; start a checkpoint when one is due.

        Args:
            rows: how many write requests the writer was just given.
        """
        self._rows += rows
        if self._rows >= CHECKPOINT_ROWS and not self._running:
            self._rows = 0
            self._start(self._worker, self._checkpointed)

    def _start(self, worker: SqliteWorker, then: _Then) -> None:
        try:
            done = worker.run(_passive)
        except RepositoryClosed:
            return
        self._running = True
        done.add_done_callback(then)

    def _checkpointed(self, done: asyncio.Future[int]) -> None:
        self._running = False
        if not _failed(done) and done.result() >= RESTART_FRAMES:
            self._start(self._writer, self._restarted)  # queued behind the writes

    def _restarted(self, done: asyncio.Future[int]) -> None:
        self._running = False
        _failed(done)

    async def close(self) -> None:
        """Let a checkpoint in progress end, then close the connection and the thread."""
        await self._worker.close()


def _failed(done: asyncio.Future[int]) -> bool:
    """Whether the checkpoint did not finish (its error retrieved: the writes report it)."""
    return done.cancelled() or done.exception() is not None
