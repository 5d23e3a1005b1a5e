"""The preloaded SQLite files the SQL subjects start from.

The schema is made by the library itself (its Alembic migration, as a user's
first open does), then the rows are bulk-loaded with ``sqlite3``. Each subject
and repetition gets its own copy, so no one runs on another's leftovers.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from benchmarks.workload import Dataset, Row, rows_of
from session_repo import SqlSessionRepository

__all__ = ["SqliteTemplate", "build_sqlite", "remove_sqlite"]

INSERT = "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (?, ?, ?)"


async def build_sqlite(path: Path, rows: Iterable[Row]) -> int:
    """A WAL-mode file with the library's schema and ``rows``; returns its size in bytes."""
    async with SqlSessionRepository(f"sqlite+aiosqlite:///{path}", cleanup_interval=0):
        pass  # opening applies the migrations
    return _bulk_load(path, rows)


def _bulk_load(path: Path, rows: Iterable[Row]) -> int:
    """Insert in key order (a B-tree appended to, not split at random) in one transaction,
    then checkpoint, so the file alone holds the rows."""
    ordered = sorted(rows)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a bulk load: nothing to lose if it dies
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: the load does not spill
        with conn:
            conn.executemany(INSERT, ordered)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if mode != "wal":
        raise RuntimeError(f"{path.name} is in {mode!r} mode, expected WAL")
    return path.stat().st_size


def remove_sqlite(path: Path) -> None:
    """Delete a database file and its WAL files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class SqliteTemplate:
    """A migrated, preloaded SQLite file (WAL mode), built once per run and copied."""

    def __init__(self, workdir: Path, dataset: Dataset) -> None:
        self._workdir = workdir
        self._dataset = dataset
        self._path = workdir / "template.sqlite"
        self._lock = asyncio.Lock()
        self._copies = 0
        self.size_bytes: int | None = None  # known once built

    async def copy(self, name: str) -> Path:
        """A fresh copy of the preloaded file, named after its user."""
        async with self._lock:
            if self.size_bytes is None:
                self.size_bytes = await build_sqlite(self._path, rows_of(self._dataset))
        self._copies += 1
        target = self._workdir / f"{name}-{self._copies}.sqlite"
        shutil.copyfile(self._path, target)
        target.chmod(0o600)
        return target

    def remove(self, path: Path) -> None:
        """Delete a copy and its WAL files."""
        remove_sqlite(path)
