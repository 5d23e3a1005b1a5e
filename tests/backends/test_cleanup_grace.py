"""How long cleanup keeps a dead binding on PostgreSQL and MariaDB (``cleanup_grace``).

A delete leaves a tombstone that says when it died, and cleanup removes a dead row
only once it has been dead for the grace: an expired row after its expiry, a
tombstone after its delete; a lapsed owner's bindings are marked (tombstoned) once
it has been lapsed for the grace, and go (then its row) a grace later. Driven by a
fake clock, which is what the servers' rows are judged by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from session_repo import InvalidInput, SqlSessionRepository
from session_repo.testing import FakeClock
from tests.servers import clear_sql_table, migrated_url

pytestmark = pytest.mark.server

T0 = 1_800_000_000.0


@pytest.fixture(params=["postgresql", "mariadb"])
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    location = migrated_url(str(request.param))
    await clear_sql_table(location)
    yield location
    await clear_sql_table(location)


async def _owner_rows(repo: SqlSessionRepository) -> int:
    async with repo.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT COUNT(*) FROM session_owners")) or 0)


async def test_a_dead_binding_stays_for_the_grace_then_goes(url: str) -> None:
    clock = FakeClock(T0)
    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0, cleanup_grace=10) as repo:
        await repo.upsert("expires", "machine-a", ttl=5)
        await repo.upsert("deleted", "machine-a", ttl=60)
        await repo.upsert("lives", "machine-a", ttl=600)
        assert await repo.delete("deleted") is True
        clock.set(T0 + 5)
        assert await repo.lookup("expires") is None
        assert await repo.cleanup() == 0  # dead 0 s and 5 s
        assert (await repo.metrics()).expired == 2
        clock.set(T0 + 9.999)
        assert await repo.cleanup() == 0
        clock.set(T0 + 10)
        assert await repo.cleanup() == 1  # the tombstone: dead since T0
        clock.set(T0 + 15)
        assert await repo.cleanup() == 1  # expired at T0 + 5
        metrics = await repo.metrics()
        assert (metrics.sessions, metrics.expired, metrics.cleaned) == (1, 0, 2)
        assert await repo.lookup("lives") == "machine-a"


async def _binding_rows(repo: SqlSessionRepository) -> int:
    async with repo.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT COUNT(*) FROM session_bindings")) or 0)


async def test_a_lapsed_owners_bindings_are_marked_after_the_grace_then_go(url: str) -> None:
    clock = FakeClock(T0)
    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0, cleanup_grace=10) as repo:
        await repo.heartbeat("machine-m", ttl=5)
        await repo.upsert("held", "machine-m", ttl=600)
        clock.set(T0 + 5)
        assert await repo.lookup("held") is None  # its owner lapsed
        clock.set(T0 + 14.999)
        assert await repo.cleanup() == 0
        assert (await _binding_rows(repo), await _owner_rows(repo)) == (1, 1)
        clock.set(T0 + 15)
        assert await repo.cleanup() == 0  # marked: a tombstone since T0 + 15
        assert (await _binding_rows(repo), await _owner_rows(repo)) == (1, 1)
        clock.set(T0 + 24.999)
        assert await repo.cleanup() == 0
        clock.set(T0 + 25)
        assert await repo.cleanup() == 1
        assert (await _binding_rows(repo), await _owner_rows(repo)) == (0, 0)
        assert (await repo.metrics()).cleaned == 1


async def test_a_binding_a_long_dead_owner_writes_stays_for_the_grace(url: str) -> None:
    """Written by an owner lapsed longer than the grace, it is dead at birth, and young."""
    clock = FakeClock(T0)
    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0, cleanup_grace=10) as repo:
        await repo.heartbeat("machine-m", ttl=5)
        clock.set(T0 + 30)
        late = await repo.acquire("late", "machine-m", ttl=600)
        assert await repo.lease("late") is None  # dead at birth: its owner lapsed at T0 + 5
        assert await repo.cleanup() == 0
        clock.set(T0 + 39.999)
        assert await repo.cleanup() == 0
        assert await _binding_rows(repo) == 1  # its generation still stands in the row
        clock.set(T0 + 40)
        assert await repo.cleanup() == 1
        assert (await _binding_rows(repo), await _owner_rows(repo)) == (0, 0)
        taken = await repo.acquire("late", "machine-b", ttl=600)
        assert (taken.owner, taken.generation > late.generation) == ("machine-b", True)


async def test_the_default_grace_is_twice_the_statement_timeout(url: str) -> None:
    clock = FakeClock(T0)
    async with SqlSessionRepository(
        url, clock=clock, cleanup_interval=0, statement_timeout=3
    ) as repo:
        await repo.upsert("deleted", "machine-a", ttl=60)
        assert await repo.delete("deleted") is True
        clock.set(T0 + 5.999)
        assert await repo.cleanup() == 0
        clock.set(T0 + 6)
        assert await repo.cleanup() == 1


async def test_a_deleted_binding_is_rebound_anew_over_its_tombstone(url: str) -> None:
    clock = FakeClock(T0)
    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0) as repo:
        first = await repo.acquire("s-1", "machine-a")
        assert await repo.delete("s-1") is True
        assert await repo.lease("s-1") is None
        assert await repo.touch("s-1") is False
        assert await repo.delete("s-1") is False
        again = await repo.acquire("s-1", "machine-a")
        assert again.owner == "machine-a"
        assert again.generation > first.generation


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf")])
def test_a_bad_grace_is_refused(grace: float) -> None:
    with pytest.raises(InvalidInput, match="cleanup_grace"):
        SqlSessionRepository("postgresql+asyncpg://postgres@127.0.0.1/test", cleanup_grace=grace)


def test_a_grace_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="cleanup_grace"):
        SqlSessionRepository("postgresql+asyncpg://postgres@127.0.0.1/test", cleanup_grace="5")  # type: ignore[arg-type]
