"""Several instances cleaning one table at once, while another writes: bounded batches,
no deadlock reaching a caller, no row counted twice, no live binding touched."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import insert

from session_repo import SessionRepository, SqlSessionRepository
from session_repo.backends.sql.model import bindings
from session_repo.testing import FakeClock
from tests.conftest import RepoFactory, backend_params

EXPIRED = 20_000
WRITES = 400


async def _preload_expired(repo: SessionRepository, now_ms: int) -> None:
    assert isinstance(repo, SqlSessionRepository)
    rows = [
        {
            "session_key": hashlib.sha256(f"old-{n}".encode()).digest(),
            "alloc_id": f"machine-{n % 7}",
            "expires_at": now_ms - 1 - n % 1000,
        }
        for n in range(EXPIRED)
    ]
    async with repo.engine.begin() as conn:
        for start in range(0, EXPIRED, 5000):
            await conn.execute(insert(bindings), rows[start : start + 5000])


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", backend_params("sqlite", "postgresql", "mariadb"))
async def test_two_cleaners_and_a_writer(make_repo: RepoFactory, fake_clock: FakeClock) -> None:
    cleaner_a = make_repo(cleanup_batch=500)
    cleaner_b = make_repo(cleanup_batch=500)
    writer = make_repo()
    async with cleaner_a, cleaner_b, writer:
        await _preload_expired(writer, int(fake_clock.now() * 1000))
        assert (await writer.metrics()).expired == EXPIRED

        async def write() -> None:
            for n in range(WRITES):
                await writer.upsert(f"new-{n}", "machine-live", ttl=600)
                if n % 50 == 0:
                    await asyncio.sleep(0)

        removed_a, removed_b, _ = await asyncio.gather(
            cleaner_a.cleanup(), cleaner_b.cleanup(), write()
        )

        assert removed_a + removed_b == EXPIRED  # every expired row, none counted twice
        metrics = await writer.metrics()
        assert (metrics.sessions, metrics.expired, metrics.errors) == (WRITES, 0, 0)
        assert await writer.lookup(f"new-{WRITES - 1}") == "machine-live"
        for cleaner in (cleaner_a, cleaner_b):
            assert (await cleaner.metrics()).errors == 0
