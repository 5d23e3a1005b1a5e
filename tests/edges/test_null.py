"""``NullSessionRepository``: the store turned off keeps nothing, leases included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from session_repo import InvalidInput, Lease, NullSessionRepository, SessionRepository


async def test_acquire_always_wins_with_a_new_generation() -> None:
    async with NullSessionRepository() as repo:
        before = datetime.now(UTC)
        first = await repo.acquire("s", "machine-a", 60)
        assert isinstance(first, Lease)
        assert first.owner == "machine-a"
        assert first.generation >= 1  # a valid generation= argument
        assert before + timedelta(seconds=59) < first.expires_at
        assert first.expires_at <= datetime.now(UTC) + timedelta(seconds=60)
        # nothing was kept: another owner wins too, with a binding made anew
        second = await repo.acquire("s", "machine-b")
        assert second.owner == "machine-b"
        assert second.generation > first.generation
        again = await repo.acquire("s", "machine-b", replacing="machine-a")
        assert again.generation > second.generation


async def test_lookups_miss_and_conditional_ops_find_nothing() -> None:
    async with NullSessionRepository() as repo:
        lease = await repo.acquire("s", "machine-a")
        assert await repo.lease("s") is None
        assert await repo.lookup("s") is None
        assert await repo.touch("s", 30, generation=lease.generation) is False
        assert await repo.touch("s") is False
        assert await repo.delete("s", generation=lease.generation) is False
        assert await repo.delete("s") is False


async def test_heartbeats_are_kept_nowhere() -> None:
    async with NullSessionRepository() as repo:
        await repo.heartbeat("machine-a", 30)
        assert await repo.owners() == {}
        await repo.acquire("s", "machine-a")
        assert await repo.release("machine-a") == 0
        metrics = await repo.metrics()
        assert (metrics.sessions, metrics.expired, metrics.owners) == (0, 0, 0)


async def test_inputs_are_still_checked() -> None:
    async with NullSessionRepository() as repo:
        with pytest.raises(InvalidInput):
            await repo.touch("s", generation=0)
        with pytest.raises(TypeError):
            await repo.delete("s", generation=True)
        with pytest.raises(InvalidInput):
            await repo.heartbeat("machine a", 30)
        with pytest.raises(TypeError):
            await repo.release(7)  # type: ignore[arg-type]


def test_satisfies_the_contract() -> None:
    assert isinstance(NullSessionRepository(), SessionRepository)
