"""Alembic, driven from the library: the schema is checked on open and upgraded
on command. The migration scripts live in the top-level ``alembic/`` folder and
ship inside the wheel as ``session_repo/backends/sql/migrations``.

``upgrade`` and ``schema_revision``, which the CLI calls with no repository (and
so no front) around them, turn driver errors into ``StorageError`` by the SQL
error table themselves.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from session_repo.backends.sql.errors import storage_errors
from session_repo.backends.sql.sqlite_engine import BEGIN_OPTION
from session_repo.errors import SchemaOutOfDate, StorageError

__all__ = [
    "MIGRATE_HINT",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "migration_lock",
    "schema_revision",
    "script_location",
    "upgrade",
]

MIGRATE_HINT = "run `session-repo migrate` (or `alembic upgrade head` in a checkout)"
_LOCK_NAME = "session_repo_migrate"
_PG_LOCK_KEY = 0x5E55_10_4E90  # an arbitrary, fixed advisory-lock key


def script_location() -> Path:
    """The migration scripts: inside the installed wheel, else the source tree's.

    Raises:
        StorageError: neither holds the scripts.
    """
    here = Path(__file__).resolve().parent
    source_tree = here.parents[2]  # session_repo/backends/sql -> the project root
    for candidate in (here / "migrations", source_tree / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StorageError("session-repo's migration scripts are missing", transient=False)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at our scripts (no ini file needed).

    Args:
        url: the database URL to set as ``sqlalchemy.url``, or None for none.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this version ships: the one a current schema is at."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - we always ship at least one revision
        raise StorageError("no migration head found", transient=False)
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's Alembic revision, or None when it has no schema yet.

    Args:
        connection: a sync connection (``AsyncConnection.run_sync`` passes one).
    """
    return MigrationContext.configure(connection).get_current_revision()


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision, or None when it has no schema yet.

    Read without a write lock (SQLite's plain ``BEGIN``), so it never waits for writers.

    Args:
        engine: the database's engine.

    Raises:
        StorageError: the database failed or could not be reached.
    """
    with storage_errors("schema check"):
        async with engine.connect() as conn:
            await conn.execution_options(**{BEGIN_OPTION: "DEFERRED"})
            return await conn.run_sync(current_revision)


def migration_lock(connection: Connection) -> None:
    """Serialize migrations across processes, for the transaction's duration.

    SQLite needs nothing more: the transaction began with BEGIN IMMEDIATE.

    Args:
        connection: a sync connection inside the migration's transaction.

    Raises:
        StorageError: MariaDB/MySQL's lock was not granted within 60 seconds.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    elif dialect in ("mysql", "mariadb"):
        got = connection.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": _LOCK_NAME}).scalar()
        if got != 1:
            raise StorageError("timed out waiting for another migration", transient=True)


def _release_lock(connection: Connection) -> None:
    if connection.dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK_NAME})


def _upgrade_locked(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    try:
        command.upgrade(config, revision)
    finally:
        _release_lock(connection)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``; safe to run from several instances at once.

    Args:
        engine: the database's engine.
        revision: the Alembic revision to reach.

    Raises:
        StorageError: the database failed or could not be reached.
    """
    with storage_errors("schema upgrade"):
        async with engine.connect() as conn:
            await conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with conn.begin():
                await conn.run_sync(_upgrade_locked, revision)


async def ensure_schema(engine: AsyncEngine, *, auto_migrate: bool) -> None:
    """Make sure the schema is at head: upgrade it, or refuse with ``SchemaOutOfDate``.

    Args:
        engine: the database's engine.
        auto_migrate: upgrade a schema that is behind, instead of refusing it.

    Raises:
        SchemaOutOfDate: the schema is behind and ``auto_migrate`` is false, or it is
            at a revision this version does not know (a newer version migrated it).
        StorageError: the database failed or could not be reached.
    """
    head = head_revision()
    current = await schema_revision(engine)
    if current == head:
        return
    if current is not None and not _known(current):
        raise SchemaOutOfDate(
            f"database schema is at revision {current}, which this session-repo does not "
            "know: it was migrated by a newer version; upgrade session-repo"
        )
    if not auto_migrate:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or '(none)'} but this session-repo "
            f"needs {head}: {MIGRATE_HINT}"
        )
    await upgrade(engine)


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False
