"""The store a command works on: its settings, the repository, its name, its schema.

Settings come from the ``SESSION_STORE_*`` variables with ``--url`` laid over them.
A command runs no background cleanup and, unless it asks, no fallback: a storage
error must surface, not be served from a memory store that vanishes on exit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from session_repo.backends.sql.engine import create_engine, parse_url, sqlite_file
from session_repo.backends.sql.migrate import schema_revision
from session_repo.cli.output import note
from session_repo.config import SessionStoreConfig, store_kind, url_scheme
from session_repo.contract import SessionRepository
from session_repo.factory import create_session_repository
from session_repo.metrics import Instrumented

__all__ = [
    "backend_name",
    "cli_config",
    "database_revision",
    "no_schema",
    "open_store",
    "read_session_id",
    "sql_url",
]


def cli_config(args: argparse.Namespace, *, fallback: bool = False) -> SessionStoreConfig:
    """Settings from the environment and ``--url``; no background cleanup in a CLI.

    Args:
        args: the parsed command line (its ``url``, when given, wins).
        fallback: keep the configured fallback; without it storage errors surface
            instead of being served from an in-process memory store that vanishes
            when the command exits.

    Returns:
        The settings the command uses.

    Raises:
        ConfigError: a ``SESSION_STORE_*`` value or ``--url`` is malformed.
    """
    overrides: dict[str, Any] = {"cleanup_interval": 0}
    url = vars(args).get("url")  # argparse leaves it out when not given
    if url is not None:
        overrides["url"] = url
    if not fallback:
        overrides["fallback"] = "none"
    return SessionStoreConfig.from_env().with_overrides(overrides)


def open_store(args: argparse.Namespace, *, warn: bool = True) -> SessionRepository:
    """The repository the settings name (built, not opened), without a fallback.

    Args:
        args: the parsed command line.
        warn: note on stderr when the store cannot hold anything across commands
            (disabled, or ``memory://``).

    Returns:
        The repository; use it with ``async with``.

    Raises:
        ConfigError: the settings are malformed or name a backend that cannot be built.
    """
    config = cli_config(args)
    if warn and not config.enabled:
        note("the store is disabled (SESSION_STORE_ENABLED=false): it keeps nothing")
    elif warn and store_kind(config.url) == "memory":
        note("memory:// lives inside one process: this command sees an empty store")
    return create_session_repository(config)


def backend_name(repo: SessionRepository) -> str:
    """The backend's name (``"sqlite"``, ``"redis"``, ...), as it declares it.

    Args:
        repo: a repository; a resilient wrapper is named by its primary.

    Returns:
        Its ``Instrumented.backend``; the class name for a repository that is not
        instrumented (not one of the library's).
    """
    return repo.backend if isinstance(repo, Instrumented) else type(repo).__name__


def sql_url(config: SessionStoreConfig) -> str | None:
    """The URL of the SQL database the settings name, if they name one.

    Args:
        config: the command's settings.

    Returns:
        ``config.url`` for an enabled SQL store; None for memory, Redis or a disabled store.
    """
    return config.url if config.enabled and store_kind(config.url) == "sql" else None


def no_schema(config: SessionStoreConfig) -> str:
    """The line that says a store has no schema to migrate.

    Args:
        config: the command's settings, for a store that is not SQL.

    Returns:
        E.g. ``"nothing to migrate: the memory:// store has no schema"``.
    """
    store = f"{url_scheme(config.url)}://" if config.enabled else "disabled"
    return f"nothing to migrate: the {store} store has no schema"


def read_session_id(value: str) -> str:
    """A session id from the command line; ``"-"`` reads it from stdin.

    Reading it from stdin keeps a secret out of ``ps`` and the shell's history.

    Args:
        value: the ``SID`` argument.

    Returns:
        The session id.
    """
    return sys.stdin.readline().rstrip("\r\n") if value == "-" else value


async def database_revision(url: str) -> str | None:
    """The revision of the database at ``url``, without creating a missing SQLite file.

    Args:
        url: a SQL database URL.

    Returns:
        The revision; None when the database (or its SQLite file) has no schema yet.

    Raises:
        ConfigError: ``url`` is not a database URL this library serves.
        StorageError: the database failed or could not be reached.
    """
    path = sqlite_file(parse_url(url))
    if path is not None and not path.exists():
        return None
    engine = create_engine(url, pool_size=1)
    try:
        return await schema_revision(engine)
    finally:
        await engine.dispose()
