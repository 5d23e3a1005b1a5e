"""The server paths' held connections: never more than their bound, and a connection
the server dropped is replaced, not lent again.

Connections wait in a last-in, first-out queue, each one not made yet a ``None``;
these tests watch the server's own list of connections while the repository works.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import SqlSessionRepository, StorageError
from tests.servers import clear_sql_table, migrated_url

pytestmark = [pytest.mark.server, pytest.mark.parametrize("server", ["postgresql", "mariadb"])]

OTHERS = {  # the repository's connections to this database, the watcher's own left out
    "postgresql": "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT id FROM information_schema.processlist "
    "WHERE db = DATABASE() AND id <> CONNECTION_ID()",
}
KILL = {"postgresql": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}
# asyncpg sees a closed socket while the connection waits, so none is lent again;
# asyncmy only when it next reads, so each dead one fails the call (or batch) it serves
CALLS_PER_DEAD = {"postgresql": 0, "mariadb": 30}


async def _others(watcher: AsyncEngine, server: str) -> list[int]:
    async with watcher.connect() as conn:
        return [int(row) for row in (await conn.scalars(text(OTHERS[server]))).all()]


async def test_a_burst_never_holds_more_than_its_bound(server: str) -> None:
    url = migrated_url(server)
    await clear_sql_table(url)
    watcher = create_async_engine(url, poolclass=NullPool)
    seen: list[int] = []
    try:
        async with SqlSessionRepository(url, cleanup_interval=0, pool_size=1) as repo:
            await repo.upsert("warm", "machine-a")
            done = asyncio.Event()

            async def watch() -> None:
                while not done.is_set():
                    seen.append(len(await _others(watcher, server)))
                    await asyncio.sleep(0.005)

            watching = asyncio.create_task(watch())
            for wave in range(20):
                calls = [repo.lookup(f"s{n}") for n in range(40)]
                calls += [repo.upsert(f"s{wave}-{n}", "machine-a") for n in range(20)]
                calls += [repo.claim(f"c{wave}-{n}", "machine-b") for n in range(20)]
                await asyncio.gather(*calls)
                await asyncio.sleep(0)
            done.set()
            await watching
    finally:
        await watcher.dispose()
    # pool_size=1: the engine's pool (1 + its overflow) and at most 2 held by the path
    assert seen
    assert max(seen) <= 2 + 1 + 10


async def test_connections_the_server_dropped_are_replaced(server: str) -> None:
    url = migrated_url(server)
    await clear_sql_table(url)
    watcher = create_async_engine(url, poolclass=NullPool)
    try:
        async with SqlSessionRepository(url, cleanup_interval=0, pool_size=2) as repo:
            await repo.upsert("kept", "machine-a")
            await asyncio.gather(*(repo.lookup(f"open-{n}") for n in range(30)))
            victims = await _others(watcher, server)
            assert victims
            async with watcher.connect() as conn:
                for victim in victims:
                    with contextlib.suppress(Exception):
                        await conn.execute(text(KILL[server].format(victim)))
            await asyncio.sleep(0.2)  # the drivers have seen their sockets close
            failures = 0
            waves = [1] * 5 + [30] * 3  # lone calls, then bursts
            for size in waves:
                calls = [repo.lookup("kept") for _ in range(size)]
                for result in await asyncio.gather(*calls, return_exceptions=True):
                    if isinstance(result, BaseException):
                        assert isinstance(result, StorageError), repr(result)
                        assert result.transient, repr(result)
                        failures += 1
                    else:
                        assert result == "machine-a"
            assert failures <= CALLS_PER_DEAD[server] * len(victims)
            owners = await asyncio.gather(*(repo.lookup("kept") for _ in range(30)))
            assert owners == ["machine-a"] * 30
            assert await repo.claim("kept", "machine-b") == "machine-a"
            assert not set(victims) & set(await _others(watcher, server))
    finally:
        await watcher.dispose()
