"""The database servers the tests use: where they are, and whether to skip without them.

URLs come from ``SESSION_REPO_TEST_PG_URL``, ``SESSION_REPO_TEST_MYSQL_URL`` and
``SESSION_REPO_TEST_REDIS_URL``. A server that does not answer skips its tests,
except in CI (``CI=true`` or ``SESSION_REPO_REQUIRE_SERVERS=1``), where a skip
would hide a failure, so it fails instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import SqlSessionRepository

__all__ = [
    "SERVERS",
    "clear_sql_table",
    "migrated_url",
    "own_database",
    "require_server",
    "server_url",
    "servers_required",
]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Server:
    title: str
    env_var: str
    default_url: str
    default_port: int


SERVERS: dict[str, Server] = {
    "postgresql": Server(
        "PostgreSQL",
        "SESSION_REPO_TEST_PG_URL",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        5432,
    ),
    "mariadb": Server(
        "MariaDB", "SESSION_REPO_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test", 3306
    ),
    "redis": Server("Redis", "SESSION_REPO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", 6379),
    # .ci/redis-sentinel start: a primary, a replica and these three sentinels.
    "redis-sentinel": Server(
        "Redis Sentinel",
        "SESSION_REPO_TEST_REDIS_SENTINEL_URL",
        "redis+sentinel://127.0.0.1:26390,127.0.0.1:26391,127.0.0.1:26392/sessionrepo/0",
        26379,
    ),
    # .ci/redis-cluster start: three masters and three replicas on 7000-7005.
    "redis-cluster": Server(
        "Redis Cluster",
        "SESSION_REPO_TEST_REDIS_CLUSTER_URL",
        "redis+cluster://127.0.0.1:7000/",
        7000,
    ),
    # .ci/pgbouncer start: PgBouncer in front of the local PostgreSQL, database
    # pgbouncer_test (its own: never the `test` database other tests empty).
    "pgbouncer": Server(
        "PgBouncer (transaction mode)",
        "SESSION_REPO_TEST_PGBOUNCER_URL",
        "postgresql+asyncpg://postgres@127.0.0.1:6432/pgbouncer_test",
        6432,
    ),
    "pgbouncer-session": Server(
        "PgBouncer (session mode)",
        "SESSION_REPO_TEST_PGBOUNCER_SESSION_URL",
        "postgresql+asyncpg://postgres@127.0.0.1:6433/pgbouncer_test",
        6433,
    ),
}


def server_url(name: str) -> str:
    server = SERVERS[name]
    return os.environ.get(server.env_var) or server.default_url


def servers_required() -> bool:
    """In CI a missing server is a failure, not a skip."""
    return (
        os.environ.get("CI", "").strip().lower() in _TRUE
        or os.environ.get("SESSION_REPO_REQUIRE_SERVERS", "").strip().lower() in _TRUE
    )


@functools.cache
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_server(name: str) -> str:
    """The server's URL; skips the test (fails it in CI) when the server does not answer."""
    server = SERVERS[name]
    url = server_url(name)
    parts = urlsplit(url)
    # A URL of several hosts (h:p,h:p, as Sentinel's) is probed at its first.
    parts = parts._replace(netloc=parts.netloc.split(",")[0])
    host = parts.hostname or "127.0.0.1"
    port = parts.port or server.default_port
    if not _reachable(host, port):
        reason = f"{server.title} not reachable at {host}:{port}"
        if servers_required():
            pytest.fail(f"{reason} (servers are required here: CI / SESSION_REPO_REQUIRE_SERVERS)")
        pytest.skip(reason)
    return url


async def _migrate(url: str) -> None:
    async with SqlSessionRepository(url, auto_migrate=True, cleanup_interval=0):
        pass


@functools.cache
def _migrate_once(url: str) -> None:
    # In a thread with its own loop, so it works from sync and async code alike.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _migrate(url)).result()


def migrated_url(name: str) -> str:
    """A SQL server's URL, its schema upgraded to head once per test session."""
    url = require_server(name)
    _migrate_once(url)
    return url


async def clear_sql_table(url: str) -> None:
    """Empty ``session_bindings`` and ``session_owners`` so each test starts from nothing."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM session_bindings"))
            await conn.execute(text("DELETE FROM session_owners"))
    finally:
        await engine.dispose()


async def own_database(name: str, database: str) -> str:
    """The URL of ``database`` on SQL server ``name`` (made if missing): schema at head, empty.

    For tests that kill connections, stall statements or add triggers, away from the
    database every other test shares.
    """
    base = make_url(require_server(name))
    admin = create_async_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            if name == "postgresql":
                found = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database}
                )
                if not found:
                    await conn.execute(text(f"CREATE DATABASE {database}"))
            else:
                await conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {database}"))
    finally:
        await admin.dispose()
    url = base.set(database=database).render_as_string(hide_password=False)
    repo = SqlSessionRepository(url, auto_migrate=True, cleanup_interval=0)
    async with repo, repo.engine.begin() as conn:
        await conn.execute(text("DELETE FROM session_bindings"))
        await conn.execute(text("DELETE FROM session_owners"))
    return url
