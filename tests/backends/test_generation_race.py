"""A bind stalled between drawing its generation and looking at the key, on the real servers.

A write that finds no row for its key inserts the generation its ``VALUES`` drew
when the statement began. A trigger in this file's own database stalls one bind
right there (``BEFORE INSERT`` runs after ``VALUES``, before the key is checked),
while another repository binds the key, shows its lease and deletes it: the
stalled bind must still land with a generation above the one that was shown.
With a delete that removes the row, it lands with its older draw (the lease
history checker found that under contention; this makes it happen every time);
so the servers leave a tombstone, and cleanup keeps it for a grace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import Lease, SqlSessionRepository
from tests.servers import own_database

pytestmark = pytest.mark.server

RACE_DB = "session_repo_race"
SLOW = "slow-machine"
STALL_SECONDS = 1.5

_DROP = {
    "postgresql": "DROP TRIGGER IF EXISTS slow_bind ON session_bindings",
    "mariadb": "DROP TRIGGER IF EXISTS slow_bind",
}
_PG_TRIGGER = [
    _DROP["postgresql"],
    "CREATE OR REPLACE FUNCTION session_repo_test_slow_bind() RETURNS trigger AS $$ "
    f"BEGIN IF NEW.alloc_id = '{SLOW}' THEN PERFORM pg_sleep({STALL_SECONDS}); END IF; "
    "RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER slow_bind BEFORE INSERT ON session_bindings "
    "FOR EACH ROW EXECUTE FUNCTION session_repo_test_slow_bind()",
]
_MARIADB_TRIGGER = [
    _DROP["mariadb"],
    "CREATE TRIGGER slow_bind BEFORE INSERT ON session_bindings FOR EACH ROW "
    f"BEGIN IF NEW.alloc_id = '{SLOW}' THEN SET @stalled = SLEEP({STALL_SECONDS}); END IF; END",
]
_STALLED = {
    "postgresql": (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event = 'PgSleep'"
    ),
    "mariadb": (
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE DB = :db AND STATE = 'User sleep'"
    ),
}


async def _own_database(name: str) -> str:
    """This file's database on server ``name``: schema at head, emptied, the trigger in."""
    url = await own_database(name, RACE_DB)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in _PG_TRIGGER if name == "postgresql" else _MARIADB_TRIGGER:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()
    return url


async def _wait_for_the_stall(conn: AsyncConnection, name: str) -> None:
    deadline = time.monotonic() + 10
    while not await conn.scalar(text(_STALLED[name]), {"db": RACE_DB}):
        assert time.monotonic() < deadline, "the slow bind never reached its trigger"
        await asyncio.sleep(0.01)


@pytest.fixture(params=["postgresql", "mariadb"])
async def race(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    name = str(request.param)
    url = await _own_database(name)
    yield name, url
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:  # the database is left as the others are
            await conn.execute(text(_DROP[name]))
    finally:
        await engine.dispose()


async def _stalled_bind_over(
    name: str, url: str, operation: str, *, cleaned: int, grace: float | None = None
) -> tuple[Lease, Lease]:
    """The lease shown while a bind stalled, and the one the bind landed with.

    Meanwhile another repository binds the key, shows it, deletes it and cleans up
    (removing ``cleaned`` rows: what its grace lets go).
    """
    watcher = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    stalled = SqlSessionRepository(url, cleanup_interval=0)
    other = SqlSessionRepository(url, cleanup_interval=0, cleanup_grace=grace)
    try:
        async with stalled, other, watcher.connect() as conn:
            bind = getattr(stalled, operation)
            slow = asyncio.create_task(bind("s-1", SLOW, ttl=60))
            await _wait_for_the_stall(conn, name)
            shown = await other.acquire("s-1", "machine-b", ttl=60)
            assert shown.owner == "machine-b"
            assert await other.delete("s-1") is True
            assert await other.cleanup() == cleaned
            assert not slow.done()  # all of it went in while the bind was stalled
            await slow
            landed = await other.lease("s-1")
            assert landed is not None
            assert landed.owner == SLOW
            return shown, landed
    finally:
        await watcher.dispose()


@pytest.mark.parametrize("operation", ["upsert", "claim"])
async def test_a_stalled_bind_lands_above_a_binding_made_deleted_and_cleaned_meanwhile(
    race: tuple[str, str], operation: str
) -> None:
    shown, landed = await _stalled_bind_over(*race, operation, cleaned=0)  # the default grace
    assert landed.generation > shown.generation, (shown, landed)


async def test_with_no_grace_cleanup_lets_the_stalled_bind_land_below(
    race: tuple[str, str],
) -> None:
    """What the grace is for: the check above fails when cleanup removes the tombstone."""
    shown, landed = await _stalled_bind_over(*race, "upsert", cleaned=1, grace=0)
    assert landed.generation < shown.generation, (shown, landed)
