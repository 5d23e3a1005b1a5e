"""The preloaded SQLite file every SQL subject starts from.

The schema is made by the library itself (its Alembic migration, as a user's
first open does), then the rows are bulk-loaded with ``sqlite3``. Each subject
and repetition gets its own copy, so no one runs on another's leftovers.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from pathlib import Path

from benchmarks.workload import Dataset
from session_repo import SqlSessionRepository

__all__ = ["SqliteTemplate"]


class SqliteTemplate:
    """A migrated, preloaded SQLite file (WAL mode), built once per run and copied."""

    def __init__(self, workdir: Path, dataset: Dataset) -> None:
        self._workdir = workdir
        self._dataset = dataset
        self._path = workdir / "template.sqlite"
        self._lock = asyncio.Lock()
        self._built = False
        self._copies = 0

    async def copy(self, name: str) -> Path:
        """A fresh copy of the preloaded file, named after its user."""
        async with self._lock:
            if not self._built:
                await self._build()
                self._built = True
        self._copies += 1
        target = self._workdir / f"{name}-{self._copies}.sqlite"
        shutil.copyfile(self._path, target)
        target.chmod(0o600)
        return target

    async def _build(self) -> None:
        url = f"sqlite+aiosqlite:///{self._path}"
        async with SqlSessionRepository(url, cleanup_interval=0):
            pass  # opening applies the migrations
        expires = self._dataset.expires_at_ms
        rows = (
            (hashlib.sha256(sid.encode()).digest(), alloc, expires)
            for sid, alloc in self._dataset.sessions
        )
        conn = sqlite3.connect(self._path)
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) "
                    "VALUES (?, ?, ?)",
                    rows,
                )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
        if mode != "wal":
            raise RuntimeError(f"template database is in {mode!r} mode, expected WAL")

    def remove(self, path: Path) -> None:
        """Delete a copy and its WAL files."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
