"""The PostgreSQL database the PostgreSQL subjects share: the benchmark's own.

A dedicated database (``session_repo_bench`` by default, created through a
maintenance connection to the server's ``test`` database), so a run never
touches what the test suite uses. The library migrates it; before each subject
and repetition the table is emptied and the preloaded rows copied back in, so
every subject starts from the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.workload import Dataset, Row, rows_of
from session_repo import SqlSessionRepository

__all__ = ["DEFAULT_ADMIN_URL", "DEFAULT_DATABASE", "PostgresTemplate"]

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_DATABASE = "session_repo_bench"
COLUMNS = ("session_key", "alloc_id", "expires_at")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _dsn(url: str, database: str | None = None) -> str:
    """A libpq-style DSN for asyncpg from a SQLAlchemy URL."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


class PostgresTemplate:
    """The benchmark database: created and migrated once, reloaded for each subject."""

    def __init__(self, admin_url: str, database: str, dataset: Dataset) -> None:
        if not _NAME.match(database):
            raise ValueError(f"not a plain database name: {database!r}")
        self._admin_dsn = _dsn(admin_url)
        self._database = database
        self._dataset = dataset
        self.url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
        self.dsn = _dsn(admin_url, database)
        self._rows: list[Row] | None = None
        self._lock = asyncio.Lock()

    async def unreachable(self) -> str | None:
        """Why the server cannot be used, or None when it answers."""
        try:
            conn = await asyncpg.connect(self._admin_dsn, timeout=3)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            return f"PostgreSQL not reachable ({type(exc).__name__}: {exc})"
        await conn.close()
        return None

    async def server_version(self) -> str:
        conn = await asyncpg.connect(self._admin_dsn, timeout=3)
        try:
            return f"PostgreSQL {await conn.fetchval('SHOW server_version')}"
        finally:
            await conn.close()

    async def reset(self) -> None:
        """Leave exactly the dataset's rows in the table (creating and migrating it first)."""
        async with self._lock:
            if self._rows is None:
                await self._create()
                self._rows = sorted(rows_of(self._dataset))
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute("TRUNCATE session_bindings")
                await conn.copy_records_to_table(
                    "session_bindings", records=self._rows, columns=COLUMNS
                )
                await conn.execute("VACUUM ANALYZE session_bindings")
            finally:
                await conn.close()

    async def empty(self) -> None:
        """Leave the table empty at the end of a run (the database stays for the next)."""
        if self._rows is None:
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("TRUNCATE session_bindings")
        finally:
            await conn.close()

    async def _create(self) -> None:
        admin = await asyncpg.connect(self._admin_dsn)
        try:
            found = await admin.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self._database
            )
            if not found:
                # Another run may make it first.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await admin.execute(f'CREATE DATABASE "{self._database}"')
        finally:
            await admin.close()
        async with SqlSessionRepository(self.url, auto_migrate=True, cleanup_interval=0):
            pass  # opening applies the migrations
