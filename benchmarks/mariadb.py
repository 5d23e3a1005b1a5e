"""The MariaDB database the MariaDB subjects share: the benchmark's own.

As for PostgreSQL: a dedicated database (``session_repo_bench`` by default,
created through a maintenance connection to the server's ``test`` database),
so a run never touches what the test suite uses. The library migrates it;
before each subject and repetition the table is emptied and the preloaded rows
inserted again (in key order, many rows per statement), so every subject
starts from the same rows.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncmy
from asyncmy.errors import Error as AsyncmyError
from sqlalchemy.engine import make_url

from benchmarks.redis_db import in_batches
from benchmarks.workload import Dataset, Row, rows_of
from session_repo import SqlSessionRepository

__all__ = ["DEFAULT_ADMIN_URL", "DEFAULT_DATABASE", "MariadbTemplate"]

DEFAULT_ADMIN_URL = "mysql+asyncmy://root@127.0.0.1:3306/test"
DEFAULT_DATABASE = "session_repo_bench"
INSERT = "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (%s, %s, %s)"
CHUNK = 5_000  # rows per executemany (asyncmy sends them as multi-row INSERTs)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def connect_args(url: str, database: str | None = None) -> dict[str, Any]:
    """``asyncmy.connect`` / ``create_pool`` keywords from a SQLAlchemy URL."""
    parsed = make_url(url)
    args: dict[str, Any] = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username or "root",
        "database": database if database is not None else parsed.database,
    }
    if parsed.password is not None:
        args["password"] = parsed.password
    return args


class MariadbTemplate:
    """The benchmark database: created and migrated once, reloaded for each subject."""

    def __init__(self, admin_url: str, database: str, dataset: Dataset) -> None:
        if not _NAME.match(database):
            raise ValueError(f"not a plain database name: {database!r}")
        self._admin = connect_args(admin_url)
        self._database = database
        self._dataset = dataset
        self.url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
        self.connect_args = connect_args(admin_url, database)
        self._rows: list[Row] | None = None
        self._lock = asyncio.Lock()

    async def unreachable(self) -> str | None:
        """Why the server cannot be used, or None when it answers."""
        try:
            conn = await asyncmy.connect(**self._admin, connect_timeout=3)
        except (OSError, TimeoutError, AsyncmyError) as exc:
            return f"MariaDB not reachable ({type(exc).__name__}: {exc})"
        await conn.ensure_closed()
        return None

    async def server_version(self) -> str:
        conn = await asyncmy.connect(**self._admin, connect_timeout=3)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT VERSION()")
                (version,) = await cursor.fetchone()
        finally:
            await conn.ensure_closed()
        return f"MariaDB {version}"

    async def reset(self) -> None:
        """Leave exactly the dataset's rows in the table (creating and migrating it first)."""
        async with self._lock:
            if self._rows is None:
                await self._create()
                self._rows = sorted(rows_of(self._dataset))
            conn = await asyncmy.connect(**self.connect_args)
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute("TRUNCATE TABLE session_bindings")
                    for chunk in in_batches(self._rows, CHUNK):
                        await cursor.executemany(INSERT, chunk)
                    await conn.commit()
                    await cursor.execute("ANALYZE TABLE session_bindings")
                    await cursor.fetchall()
            finally:
                await conn.ensure_closed()

    async def empty(self) -> None:
        """Leave the table empty at the end of a run (the database stays for the next)."""
        if self._rows is None:
            return
        conn = await asyncmy.connect(**self.connect_args)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("TRUNCATE TABLE session_bindings")
        finally:
            await conn.ensure_closed()

    async def _create(self) -> None:
        admin = await asyncmy.connect(**self._admin)
        try:
            async with admin.cursor() as cursor:
                found = await cursor.execute(
                    "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                    (self._database,),
                )
                if not found:  # another run may make it first
                    await cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{self._database}`")
        finally:
            await admin.ensure_closed()
        async with SqlSessionRepository(self.url, auto_migrate=True, cleanup_interval=0):
            pass  # opening applies the migrations
