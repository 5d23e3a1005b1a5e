"""Leases on the SQL backends, where SQL is what could get them wrong.

The contract suite (tests/contract/test_leases.py) holds every backend to the
rules; here: the generation source outlives rows and repositories on each
dialect (and serves a writer that names no generation), concurrent acquires on
separate connections agree on one winner and take fresh generations only after
the row is locked, cleanup removes a lapsed owner's bindings before its row, and
a tick of lookups is still one statement. Each dialect runs on a database of its
own (created here), so triggers and raw writes touch nobody else's tables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from session_repo import SqlSessionRepository
from session_repo.backends.sql.engine import create_engine
from session_repo.testing import FakeClock
from tests.servers import require_server

DB = "session_repo_sql_leases"
SERVERS = [
    pytest.param("postgresql", marks=pytest.mark.server),
    pytest.param("mariadb", marks=pytest.mark.server),
]


async def _recreate(url: str) -> str:
    """A fresh database of this module's, next to the test database; its URL."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
            await conn.execute(text(f"DROP DATABASE IF EXISTS {DB}{force}"))
            await conn.execute(text(f"CREATE DATABASE {DB}"))
    finally:
        await engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + DB


async def _created(url: str) -> str:
    location = await _recreate(url)
    async with SqlSessionRepository(location, auto_migrate=True, cleanup_interval=0):
        pass  # migrated
    return location


@functools.cache
def _server_database(name: str) -> str:
    """This module's database on the server, made and migrated once per test session."""
    url = require_server(name)
    # In a thread with its own loop, so it works from sync and async code alike.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _created(url)).result()


async def _empty(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM session_bindings"))
            await conn.execute(text("DELETE FROM session_owners"))
    finally:
        await engine.dispose()


@pytest.fixture(params=[pytest.param("sqlite"), *SERVERS])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty, migrated store of the dialect: a SQLite file, or this module's database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'leases.sqlite'}"
        return
    location = _server_database(str(request.param))
    await _empty(location)
    yield location
    await _empty(location)


@pytest.fixture(params=SERVERS)
async def server_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    location = _server_database(str(request.param))
    await _empty(location)
    yield location
    await _empty(location)


def repository(location: str, clock: FakeClock, **options: Any) -> SqlSessionRepository:
    # Cleanup removes what died at once here (the grace is tests/backends/test_cleanup_grace.py).
    options = {"cleanup_grace": 0, **options}
    return SqlSessionRepository(
        location, clock=clock, cleanup_interval=0, auto_migrate=True, **options
    )


def digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


async def rows(engine: AsyncEngine, table: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(text(f"SELECT * FROM {table}"))]


# -- the generation source ---------------------------------------------------------


async def test_generations_rise_across_delete_cleanup_and_a_new_repository(
    url: str, fake_clock: FakeClock
) -> None:
    seen = []
    async with repository(url, fake_clock) as repo:
        seen.append((await repo.acquire("s", "machine-a", ttl=10)).generation)
        assert await repo.delete("s")
        seen.append((await repo.acquire("s", "machine-a", ttl=10)).generation)
        fake_clock.advance(10)  # expired at exactly its end
        assert await repo.cleanup() == 1
        assert await rows(repo.engine, "session_bindings") == []
        seen.append((await repo.acquire("s", "machine-a", ttl=10)).generation)
        assert await repo.delete_owner("machine-a") == 1
    async with repository(url, fake_clock) as again:  # nothing kept in the process
        seen.append((await again.acquire("s", "machine-a", ttl=10)).generation)
        lease = await again.lease("s")
        assert lease is not None
        assert lease.generation == seen[-1]
    assert seen == sorted(set(seen)), f"generations went back or repeated: {seen}"


async def test_a_row_written_without_a_generation_gets_a_fresh_one(
    url: str, fake_clock: FakeClock
) -> None:
    """What a 0001-era instance writes during a rolling deploy: the column's default
    (the sequence, or SQLite's trigger) gives it a generation above all others."""
    async with repository(url, fake_clock) as repo:
        before = (await repo.acquire("s", "machine-a", ttl=60)).generation
        now_ms = int(fake_clock.now() * 1000)
        insert = "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES "
        values = [(digest(f"old-{n}"), "machine-old", now_ms + 60_000) for n in range(2)]
        if repo.backend == "sqlite":
            with sqlite3.connect(url.split("///", 1)[1]) as raw:
                raw.executemany(insert + "(?, ?, ?)", values)
        else:
            async with repo.engine.begin() as conn:
                for key, owner, end in values:
                    await conn.execute(
                        text(insert + "(:k, :a, :e)"), {"k": key, "a": owner, "e": end}
                    )
        old = [await repo.lease(f"old-{n}") for n in range(2)]
        assert all(lease is not None and lease.owner == "machine-old" for lease in old)
        generations = [lease.generation for lease in old if lease is not None]
        assert before < generations[0] < generations[1]
        after = (await repo.acquire("s", "machine-b", replacing="machine-a")).generation
        assert after > generations[1]


# -- concurrent acquires on separate connections ----------------------------------


async def test_concurrent_acquires_agree_on_one_winner_with_a_fresh_generation(
    server_url: str, fake_clock: FakeClock
) -> None:
    repos = [repository(server_url, fake_clock, pool_size=2) for _ in range(4)]
    for repo in repos:
        await repo.open()
    try:
        last = 0
        for round_ in range(8):
            contenders = [
                repos[n % len(repos)].acquire("hot", f"machine-{round_}-{n}", ttl=5)
                for n in range(12)
            ]
            leases = await asyncio.gather(*contenders)
            assert len(set(leases)) == 1, f"round {round_}: callers disagree: {set(leases)}"
            assert leases[0].generation > last
            last = leases[0].generation
            fake_clock.advance(5)  # the binding dies: the next round takes it anew
    finally:
        for repo in repos:
            await repo.close()


async def test_takeovers_racing_on_one_session_never_go_back(
    server_url: str, fake_clock: FakeClock
) -> None:
    """Each instance takes the session over from whoever it saw holding it, on
    connections of its own: no generation is held by two owners, and the last holder
    has the highest (the order the row's lock gave the takeovers)."""
    repos = [repository(server_url, fake_clock, pool_size=2) for _ in range(4)]
    names = itertools.count()
    won: list[tuple[int, str]] = []
    for repo in repos:
        await repo.open()

    async def taker(repo: SqlSessionRepository) -> None:
        for _ in range(40):
            held = await repo.lease("hot")
            me = f"machine-{next(names)}"
            replacing = None if held is None else held.owner
            lease = await repo.acquire("hot", me, ttl=60, replacing=replacing)
            if lease.owner == me:
                won.append((lease.generation, me))

    try:
        await asyncio.gather(*(taker(repo) for repo in repos for _ in range(3)))
        final = await repos[0].lease("hot")
    finally:
        for repo in repos:
            await repo.close()
    assert final is not None
    assert len(won) > 40
    owners_of: dict[int, set[str]] = {}
    for generation, owner in won:
        owners_of.setdefault(generation, set()).add(owner)
    assert all(len(owners) == 1 for owners in owners_of.values()), "one generation, two owners"
    assert (final.generation, final.owner) == max(won), "the holder's generation is not the last"


async def test_a_fresh_generation_is_taken_once_the_row_is_locked(
    server_url: str, fake_clock: FakeClock
) -> None:
    """A takeover waiting for the row's lock while the holder moves the generation on
    gets one above it: taken at VALUES, before the wait, it would be below."""
    async with repository(server_url, fake_clock) as repo:
        first = await repo.acquire("hot", "machine-a", ttl=60)
        key = {"k": digest("hot")}
        fresh = "nextval('session_generation')"
        if repo.backend != "postgresql":
            fresh = "NEXTVAL(session_generation)"
        async with repo.engine.connect() as holder, holder.begin():
            lock = "SELECT 1 FROM session_bindings WHERE session_key = :k FOR UPDATE"
            await holder.execute(text(lock), key)
            taking = asyncio.create_task(
                repo.acquire("hot", "machine-b", ttl=60, replacing="machine-a")
            )
            await asyncio.sleep(0.3)
            assert not taking.done()  # waiting for the lock, its VALUES long evaluated
            moved = f"UPDATE session_bindings SET generation = {fresh} WHERE session_key = :k"
            await holder.execute(text(moved), key)
            read = "SELECT generation FROM session_bindings WHERE session_key = :k"
            held = (await holder.execute(text(read), key)).scalar_one()
        lease = await asyncio.wait_for(taking, 10)
        assert lease.owner == "machine-b"
        assert lease.generation > held > first.generation


# -- cleanup and lapsed owners -----------------------------------------------------


async def test_cleanup_removes_a_lapsed_owners_bindings_then_its_row(
    url: str, fake_clock: FakeClock
) -> None:
    """Also the binding the owner wrote while lapsed (dead from birth): if the row went
    first, or alone, it would count as an owner's that never heartbeated, and live."""
    async with repository(url, fake_clock, cleanup_batch=1) as repo:
        await repo.heartbeat("machine-a", 10)
        for n in range(3):
            await repo.acquire(f"s{n}", "machine-a", ttl=600)
        await repo.upsert("other", "machine-b", ttl=600)  # no heartbeat: untouched
        fake_clock.advance(10)
        await repo.upsert("late", "machine-a", ttl=600)  # by a lapsed owner: dead
        assert await repo.lookup("late") is None
        assert len(await rows(repo.engine, "session_owners")) == 1
        assert await repo.cleanup() == 4
        assert await rows(repo.engine, "session_owners") == []
        left = [row[1] for row in await rows(repo.engine, "session_bindings")]
        assert left == ["machine-b"]
        await repo.heartbeat("machine-a", 10)  # a new incarnation finds nothing to revive
        assert [await repo.lookup(s) for s in ("s0", "s1", "s2", "late")] == [None] * 4
        assert (await repo.metrics()).sessions == 1


async def test_a_heartbeat_after_a_lapse_leaves_the_old_bindings_dead_in_the_table(
    url: str, fake_clock: FakeClock
) -> None:
    async with repository(url, fake_clock) as repo:
        await repo.heartbeat("machine-a", 10)
        old = await repo.acquire("s", "machine-a", ttl=600)
        fake_clock.advance(10)
        await repo.heartbeat("machine-a", 10)
        assert await repo.lease("s") is None
        assert not await repo.touch("s", generation=old.generation)
        owners = await rows(repo.engine, "session_owners")
        assert [(owner, epoch) for owner, _, epoch in owners] == [("machine-a", 1)]
        fresh = await repo.acquire("s", "machine-a", ttl=600)
        assert fresh.generation > old.generation
        assert await repo.lookup("s") == "machine-a"


# -- batching ------------------------------------------------------------------------


@pytest.mark.server
async def test_a_ticks_lookups_and_leases_on_postgresql_are_one_statement(
    fake_clock: FakeClock,
) -> None:
    location = _server_database("postgresql")
    await _empty(location)
    engine = create_engine(location, pool_size=2)
    sent: list[str] = []

    def log_queries(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda r: sent.append(r.query))

    event.listen(engine.sync_engine, "connect", log_queries)
    try:
        async with SqlSessionRepository(engine, clock=fake_clock, cleanup_interval=0) as repo:
            await repo.heartbeat("machine-b", 60)
            for n in range(20):
                await repo.upsert(f"s{n}", f"machine-{'ab'[n % 2]}")
            sent.clear()
            first = asyncio.create_task(repo.lookup("s0"))  # alone, at once
            await asyncio.sleep(0)
            looked, leased = await asyncio.gather(
                asyncio.gather(*(repo.lookup(f"s{n}") for n in range(20))),
                asyncio.gather(*(repo.lease(f"s{n}") for n in range(20))),
            )
            assert await first == "machine-a"
        reads_sent = [q for q in sent if q.startswith("SELECT") and "session_bindings" in q]
        assert len(reads_sent) == 2, reads_sent  # the lone lookup, then one for the 40
        assert looked == [f"machine-{'ab'[n % 2]}" for n in range(20)]
        assert [lease.owner if lease else None for lease in leased] == looked
    finally:
        await engine.dispose()
        await _empty(location)
