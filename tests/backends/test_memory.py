"""Memory backend specifics: LRU bound, and full scans that share the event loop."""

from __future__ import annotations

import asyncio

from session_repo import MemorySessionRepository
from session_repo.testing import FakeClock

ROWS = 50_000


async def _fill(repo: MemorySessionRepository, count: int, ttl: float) -> None:
    for n in range(count):
        await repo.upsert(f"s{n}", f"machine-{n % 5}", ttl=ttl)


async def test_full_scans_yield_to_other_tasks(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock, max_sessions=ROWS) as repo:
        await _fill(repo, ROWS, ttl=1)
        fake_clock.advance(1)
        turns = 0

        async def other_request() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_request())
        await asyncio.sleep(0)
        before = turns
        metrics = await repo.metrics()
        during_metrics = turns - before
        removed = await repo.cleanup()
        other.cancel()
        assert (metrics.expired, removed) == (ROWS, ROWS)
        # One turn per slice of rows: the scan never held the loop for all 50,000.
        assert during_metrics >= ROWS // 4096
        assert turns - before >= 2 * (ROWS // 4096)


async def test_least_recently_used_is_evicted(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock, max_sessions=3) as repo:
        for name in ("a", "b", "c"):
            await repo.upsert(name, "machine-a")
        assert await repo.lookup("a") == "machine-a"  # a is now the most recently used
        await repo.upsert("d", "machine-a")  # evicts b
        assert [await repo.lookup(n) for n in "abcd"] == [
            "machine-a",
            None,
            "machine-a",
            "machine-a",
        ]
        assert (await repo.metrics()).sessions == 3


async def test_delete_owner_while_others_write(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock, max_sessions=ROWS) as repo:
        await _fill(repo, 20_000, ttl=60)
        removed, _ = await asyncio.gather(
            repo.delete_owner("machine-0"),
            asyncio.gather(*(repo.upsert(f"new{n}", "machine-9") for n in range(100))),
        )
        assert removed == 4000
        assert await repo.lookup("s0") is None
        assert await repo.lookup("s1") == "machine-1"
        assert await repo.lookup("new99") == "machine-9"
