"""Alembic environment for session-repo (async, after alembic's async template).

The URL is ``sqlalchemy.url`` when set, else the library's own resolution of
``SESSION_STORE_URL`` / ``SESSION_STORE_URL_FROM`` / ``SESSION_STORE_PATH``. A
caller that already holds a connection (the library, tests) passes it as
``config.attributes["connection"]``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import URL, Connection

from alembic import context
from session_repo.backends.sql.engine import BEGIN_OPTION, create_engine, parse_url
from session_repo.backends.sql.migrate import migration_lock
from session_repo.backends.sql.model import GENERATION_SOURCE, metadata
from session_repo.config import SessionStoreConfig

config = context.config

if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> URL:
    """The URL as the library reads it (``postgres://`` from a host: asyncpg)."""
    return parse_url(config.get_main_option("sqlalchemy.url") or SessionStoreConfig.from_env().url)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave SQLite's generation counter to the migrations: it is no model table.

    PostgreSQL and MariaDB keep the generations in a sequence, which autogenerate
    does not compare; SQLite in a one-row table of that name (revision 0002).
    """
    return not (type_ == "table" and name == GENERATION_SOURCE)


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (``session-repo migrate --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    migration_lock(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
