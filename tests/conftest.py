"""One ``repo`` fixture over every backend, so one behaviour suite runs against all.

A backend is an entry in ``BACKENDS``: how to find this test's store, build a
repository on it, empty it, and read back what it keeps. Adding one (Redis) is
an entry there and a name in ``BACKEND_PARAMS``. ``fake_clock`` comes from the
project's pytest plugin (``session_repo.testing.plugin``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from session_repo import (
    MemorySessionRepository,
    RedisSessionRepository,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
)
from session_repo.backends.sql.model import bindings, owners
from session_repo.clock import Clock
from session_repo.testing import FakeClock
from tests.redis_cluster import clear_cluster, cluster_rows
from tests.redis_keys import bindings_under, delete_under
from tests.redis_sentinel import build_sentinel, clear_sentinel, sentinel_rows
from tests.servers import clear_sql_table, migrated_url, require_server, server_url

# (stored key, owner) pairs as the backend keeps them.
StoredRows = list[tuple[bytes, str]]
RepoFactory = Callable[..., SessionRepository]


@dataclass(frozen=True)
class Backend:
    """How the suite drives one kind of store."""

    name: str
    # What ``health().backend`` reports.
    health_name: str
    # Where this test's store lives (a URL), given the test's tmp_path; may skip.
    location: Callable[[Path], str | None]
    # A new, unopened repository on that store.
    build: Callable[[str | None, Clock, dict[str, Any]], SessionRepository]
    # Empty the store before a test.
    reset: Callable[[str | None], Awaitable[None]]
    # Everything the store keeps, read behind the repository's back.
    stored: Callable[[SessionRepository], Awaitable[StoredRows]]
    # A server backend (tests marked ``server``).
    server: bool = False
    # Rows expire when the fake clock says so (Redis expires by its own TTL).
    expires_by_fake_clock: bool = True
    # Two repositories built on one location see the same bindings.
    shares_store: bool = True
    # A delete leaves a dead row that keeps the key's generation, until cleanup
    # removes it (the SQL servers: see session_repo.backends.sql.liveness).
    tombstones: bool = False


async def _nothing_to_reset(location: str | None) -> None:
    return None


async def _clear_sql(location: str | None) -> None:
    assert location is not None
    await clear_sql_table(location)


async def _clear_through_pooler(location: str | None) -> None:
    # Through the library's engine: a plain one would leave named statements on the
    # pooler's shared server connections for the next client to collide with.
    from session_repo.backends.sql.engine import create_engine

    assert location is not None
    engine = create_engine(location, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(bindings.delete())
            await conn.execute(owners.delete())
    finally:
        await engine.dispose()


def _build_memory(location: str | None, clock: Clock, kwargs: dict[str, Any]) -> SessionRepository:
    return MemorySessionRepository(clock=clock, **kwargs)


def _build_sql(location: str | None, clock: Clock, kwargs: dict[str, Any]) -> SessionRepository:
    assert location is not None
    # The suite moves a fake clock and asks cleanup to remove what died; how long a
    # server keeps a dead row first is tested on its own (tests/backends/test_cleanup_grace.py).
    return SqlSessionRepository(location, clock=clock, **{"cleanup_grace": 0, **kwargs})


def _build_resilient(
    location: str | None, clock: Clock, kwargs: dict[str, Any]
) -> SessionRepository:
    """What ``create_session_repository()`` hands out: the wrapper over SQLite."""
    return ResilientSessionRepository(_build_sql(location, clock, kwargs))


async def _resilient_rows(repo: SessionRepository) -> StoredRows:
    assert isinstance(repo, ResilientSessionRepository)
    return await _sql_rows(repo.primary)


async def _memory_rows(repo: SessionRepository) -> StoredRows:
    assert isinstance(repo, MemorySessionRepository)
    return [(key, owner) for key, owner, _ in repo.bindings()]


async def _sql_rows(repo: SessionRepository) -> StoredRows:
    assert isinstance(repo, SqlSessionRepository)
    async with repo.engine.connect() as conn:
        result = await conn.execute(select(bindings.c.session_key, bindings.c.alloc_id))
        return [(bytes(key), owner) for key, owner in result.all()]


def _sqlite_location(tmp_path: Path) -> str:
    path = tmp_path / "store.sqlite"
    template = os.environ.get("SESSION_REPO_TEST_SQLITE_FROM")
    if template:  # tests/backends/test_upgrade_from_0001.py: a file upgraded from 0001
        shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"


REDIS_PREFIX = "session-repo-suite:"


def _build_redis(location: str | None, clock: Clock, kwargs: dict[str, Any]) -> SessionRepository:
    assert location is not None
    return RedisSessionRepository(location, clock=clock, key_prefix=REDIS_PREFIX, **kwargs)


async def _clear_redis(location: str | None) -> None:
    import redis.asyncio as aioredis

    assert location is not None
    url = location.replace("valkey://", "redis://", 1)
    await delete_under(aioredis.Redis.from_url(url), REDIS_PREFIX)


async def _redis_rows(repo: SessionRepository) -> StoredRows:
    import redis.asyncio as aioredis

    assert isinstance(repo, RedisSessionRepository)
    client = aioredis.Redis.from_url(server_url("redis"), decode_responses=True)
    return await bindings_under(client, f"{REDIS_PREFIX}s:*")


BACKENDS: dict[str, Backend] = {
    "memory": Backend(
        name="memory",
        health_name="memory",
        location=lambda _: None,
        build=_build_memory,
        reset=_nothing_to_reset,
        stored=_memory_rows,
        shares_store=False,
    ),
    "sqlite": Backend(
        name="sqlite",
        health_name="sqlite",
        location=_sqlite_location,
        build=_build_sql,
        reset=_nothing_to_reset,
        stored=_sql_rows,
    ),
    "resilient": Backend(
        name="resilient",
        health_name="sqlite",
        location=_sqlite_location,
        build=_build_resilient,
        reset=_nothing_to_reset,
        stored=_resilient_rows,
    ),
    "postgresql": Backend(
        name="postgresql",
        health_name="postgresql",
        location=lambda _: migrated_url("postgresql"),
        build=_build_sql,
        reset=_clear_sql,
        stored=_sql_rows,
        server=True,
        tombstones=True,
    ),
    # PostgreSQL through PgBouncer in transaction mode (.ci/pgbouncer), no URL option.
    "pgbouncer": Backend(
        name="pgbouncer",
        health_name="postgresql",
        location=lambda _: migrated_url("pgbouncer"),
        build=_build_sql,
        reset=_clear_through_pooler,
        stored=_sql_rows,
        server=True,
        tombstones=True,
    ),
    "mariadb": Backend(
        name="mariadb",
        health_name="mysql",
        location=lambda _: migrated_url("mariadb"),
        build=_build_sql,
        reset=_clear_sql,
        stored=_sql_rows,
        server=True,
        tombstones=True,
    ),
    "redis": Backend(
        name="redis",
        health_name="redis",
        location=lambda _: require_server("redis"),
        build=_build_redis,
        reset=_clear_redis,
        stored=_redis_rows,
        server=True,
        expires_by_fake_clock=False,
    ),
    # valkey-py, the Valkey project's client, against the same server (the protocol is one).
    "valkey": Backend(
        name="valkey",
        health_name="valkey",
        location=lambda _: require_server("redis").replace("redis://", "valkey://", 1),
        build=_build_redis,
        reset=_clear_redis,
        stored=_redis_rows,
        server=True,
        expires_by_fake_clock=False,
    ),
    # The master that Redis Sentinel names (.ci/redis-sentinel), found through the sentinels.
    "redis-sentinel": Backend(
        name="redis-sentinel",
        health_name="redis",
        location=lambda _: require_server("redis-sentinel"),
        build=build_sentinel,
        reset=clear_sentinel,
        stored=sentinel_rows,
        server=True,
        expires_by_fake_clock=False,
    ),
    # A Redis Cluster (.ci/redis-cluster): the bucketed layout, keys in many slots.
    "redis-cluster": Backend(
        name="redis-cluster",
        health_name="redis",
        location=lambda _: require_server("redis-cluster"),
        build=_build_redis,
        reset=clear_cluster,
        stored=cluster_rows,
        server=True,
        expires_by_fake_clock=False,
    ),
}


def backend_params(*names: str) -> list[Any]:
    """``pytest.param`` per backend, server ones marked ``server``."""
    names = names or tuple(BACKENDS)
    return [
        pytest.param(name, marks=[pytest.mark.server] if BACKENDS[name].server else [], id=name)
        for name in names
    ]


BACKEND_PARAMS = backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def backend(backend_name: str) -> Backend:
    return BACKENDS[backend_name]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out (not skip) expiry tests for backends the fake clock cannot expire.

    Redis expires by its own TTL; tests/backends/test_redis.py covers its expiry in real time.
    """

    def cannot_run(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend_name") if callspec is not None else None
        return (
            name in BACKENDS
            and not BACKENDS[name].expires_by_fake_clock
            and "expiry_clock" in getattr(item, "fixturenames", ())
        )

    left_out = [item for item in items if cannot_run(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not cannot_run(item)]


@pytest.fixture
def expiry_clock(backend: Backend, fake_clock: FakeClock) -> FakeClock:
    """``fake_clock``, for tests that need it to expire rows (skips a backend that cannot)."""
    if not backend.expires_by_fake_clock:
        pytest.skip(f"{backend.name} expires bindings by its own TTL, not by the fake clock")
    return fake_clock


@pytest.fixture
async def store_location(backend: Backend, tmp_path: Path) -> str | None:
    """This test's store, emptied."""
    location = backend.location(tmp_path)
    await backend.reset(location)
    return location


@pytest.fixture
async def make_repo(
    backend: Backend, store_location: str | None, fake_clock: FakeClock
) -> AsyncIterator[RepoFactory]:
    """``make_repo(**options)``: another repository on this test's store, unopened.

    Background cleanup is off unless ``cleanup_interval`` is given. Every
    repository made here is closed at teardown.
    """
    made: list[SessionRepository] = []

    def make(**options: Any) -> SessionRepository:
        options.setdefault("cleanup_interval", 0)
        repo = backend.build(store_location, options.pop("clock", fake_clock), options)
        made.append(repo)
        return repo

    yield make
    for repo in made:
        await repo.close()


@pytest.fixture
async def repo(make_repo: RepoFactory) -> AsyncIterator[SessionRepository]:
    """An opened repository on ``fake_clock`` with no background cleanup."""
    async with make_repo() as opened:
        yield opened
