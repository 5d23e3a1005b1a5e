"""Cancellation always propagates: cancelled at random moments, during real faults.

Tasks call random operations through ``ResilientSessionRepository`` (what the
factory hands out) while the store is broken for real, again and again: the
SQLite file's write lock taken by another process, PostgreSQL backends
terminated, MariaDB connections killed, Redis clients killed. A canceller
cancels tasks at random moments. Every task whose ``cancel()`` took must end
with ``CancelledError``, promptly; none may finish as if nothing happened (a
swallowed cancellation), and no other exception may reach a caller.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import (
    RedisSessionRepository,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
)
from tests.servers import clear_sql_table, migrated_url, require_server

pytestmark = pytest.mark.slow

TUNING = {"retry_count": 2, "retry_delay": 0.01, "probe_delay": 0.05, "probe_max_delay": 0.2}
KEYS = [f"cancel-key-{i}" for i in range(8)]
PROMPTLY = 2.0  # seconds a cancelled task may take to end
Fault = Callable[[], Awaitable[None]]

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
for _ in range(int(sys.argv[2])):
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(0.15)
    conn.execute("COMMIT")
    time.sleep(0.1)
"""


def random_call(repo: SessionRepository, rng: random.Random) -> Awaitable[object]:
    sid, owner = rng.choice(KEYS), f"m{rng.randrange(3)}"
    return rng.choice(
        [
            lambda: repo.lookup(sid),
            lambda: repo.upsert(sid, owner, ttl=60),
            lambda: repo.claim(sid, owner, ttl=60),
            lambda: repo.claim(sid, owner, ttl=60, replacing=f"m{rng.randrange(3)}"),
            lambda: repo.touch(sid, ttl=60),
            lambda: repo.delete(sid),
            lambda: repo.health(),
            lambda: repo.metrics(),
        ]
    )()


async def chaos(repo: SessionRepository, fault: Fault, seconds: float = 2.5) -> tuple[int, int]:
    """Random calls, random cancels, faults meanwhile; (cancelled, completed)."""
    rng = random.Random(20261201)
    cancelled = completed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    failures: list[str] = []

    async def one() -> None:
        nonlocal cancelled, completed
        task = asyncio.ensure_future(random_call(repo, rng))
        await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002, 0.01, 0.05, 0.3]))
        took = task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), PROMPTLY)
        except asyncio.CancelledError:
            if not took:
                failures.append("cancelled though cancel() did not take")
            cancelled += 1
            return
        except TimeoutError:
            failures.append(f"still running {PROMPTLY} s after cancel(): {task!r}")
            return
        except Exception as exc:
            failures.append(f"raised {exc!r}")
            return
        if took:
            failures.append(f"cancel() took, yet the call returned: {task!r}")
        completed += 1

    # On a loaded machine the calls are slower: go on past the deadline (up to a
    # cap) until enough of each outcome happened for the callers' assertions.
    cap = deadline + 4 * seconds

    def more() -> bool:
        now = loop.time()
        return now < deadline or (now < cap and (cancelled <= 60 or completed <= 15))

    async def worker() -> None:
        while more():
            await one()

    faults = asyncio.create_task(_repeat(fault, cap))
    try:
        await asyncio.gather(*(worker() for _ in range(8)))
    finally:
        faults.cancel()
        await asyncio.gather(faults, return_exceptions=True)
    assert failures == []
    return cancelled, completed


async def _repeat(fault: Fault, deadline: float) -> None:
    """The fault every 0.1 s for half a second, then half a second of quiet: with faults
    all the time the wrapper's probe may never see the primary answer, and a degraded
    wrapper answers from memory at once, leaving no call in flight to cancel."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        burst = loop.time() + 0.5
        while loop.time() < min(burst, deadline):
            await fault()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)


@asynccontextmanager
async def wrapped(primary: SessionRepository) -> AsyncIterator[ResilientSessionRepository]:
    async with ResilientSessionRepository(primary, **TUNING) as repo:
        yield repo


async def test_cancellation_propagates_on_sqlite_while_its_file_is_locked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cancel.sqlite"
    primary = SqlSessionRepository(
        f"sqlite+aiosqlite:///{path}", busy_timeout=0.05, cleanup_interval=0
    )
    async with wrapped(primary) as repo:
        await repo.lookup("open")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path), "12"])
        try:

            async def nothing() -> None:
                return None

            cancelled, completed = await chaos(repo, nothing)
        finally:
            locker.kill()
            locker.wait()
        metrics = await repo.metrics()
    assert cancelled > 50
    assert completed > 10
    assert metrics.errors > 0  # the lock was really in the way


async def _sql_killer(url: str, statement: str) -> tuple[Fault, Callable[[], Awaitable[None]]]:
    killer = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    async def kill() -> None:
        async with killer.connect() as conn:
            if statement.startswith("SELECT"):
                await conn.execute(text(statement))
                return
            ids = (await conn.execute(text(statement))).scalars().all()
            for conn_id in ids:
                try:
                    await conn.execute(text(f"KILL {int(conn_id)}"))
                except Exception:  # it may have ended by itself meanwhile
                    continue

    return kill, killer.dispose


KILLERS = {
    "postgresql": "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT id FROM information_schema.processlist "
    "WHERE db = DATABASE() AND id <> CONNECTION_ID() AND command <> 'Daemon'",
}


@pytest.mark.server
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
async def test_cancellation_propagates_on_sql_servers_while_connections_are_killed(
    server: str,
) -> None:
    url = migrated_url(server)
    await clear_sql_table(url)
    kill, dispose = await _sql_killer(url, KILLERS[server])
    try:
        primary = SqlSessionRepository(url, cleanup_interval=0, connect_timeout=2)
        async with wrapped(primary) as repo:
            cancelled, completed = await chaos(repo, kill)
    finally:
        await dispose()
    assert cancelled > 50
    assert completed > 10


@pytest.mark.server
async def test_cancellation_propagates_on_redis_while_clients_are_killed() -> None:
    import redis.asyncio as aioredis

    url = require_server("redis")
    killer = aioredis.Redis.from_url(url)
    await killer.client_setname("cancel-killer")

    async def kill() -> None:
        for client in await killer.client_list():
            if client.get("name") != "cancel-killer":
                await killer.client_kill_filter(_id=client["id"])

    try:
        primary = RedisSessionRepository(url, key_prefix="session-repo-cancel:")
        async with wrapped(primary) as repo:
            cancelled, completed = await chaos(repo, kill)
    finally:
        await killer.aclose()
    assert cancelled > 50
    assert completed > 10
