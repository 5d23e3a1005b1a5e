"""PostgreSQL ``claim(replacing=X)`` racing other writes to the same session.

Linearizable means the answer is the owner at one instant between call and
return: the caller (it took over) or an owner it could not take over from. ``X``
itself is never a right answer for another caller: wherever the claim takes effect,
a row held by ``X`` is one it replaces.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid

import pytest

from session_repo import SqlSessionRepository
from tests.servers import migrated_url

pytestmark = pytest.mark.server

HOT_KEYS = 6
REPOS = 4
CLAIMERS = 4
WRITERS = 2
SECONDS = 3.0


async def _race(url: str) -> tuple[int, int]:
    """Claims and violations in a bounded run on hot keys."""
    prefix = uuid.uuid4().hex
    keys = [f"race-{prefix}-{i}" for i in range(HOT_KEYS)]
    repos = [SqlSessionRepository(url, cleanup_interval=0, pool_size=4) for _ in range(REPOS)]
    for repo in repos:
        await repo.__aenter__()
    written: dict[str, set[str]] = {key: set() for key in keys}
    counter = itertools.count()
    deadline = time.monotonic() + SECONDS
    violations = 0
    claims = 0

    async def writer(repo: SqlSessionRepository) -> None:
        while time.monotonic() < deadline:
            key = random.choice(keys)
            owner = f"w{next(counter)}"
            written[key].add(owner)
            await repo.upsert(key, owner, ttl=60)

    async def claimer(repo: SqlSessionRepository) -> None:
        nonlocal violations, claims
        while time.monotonic() < deadline:
            key = random.choice(keys)
            replacing = await repo.lookup(key) or "nobody"
            me = f"c{next(counter)}"
            written[key].add(me)
            answer = await repo.claim(key, me, ttl=60, replacing=replacing)
            claims += 1
            if answer != me and (answer == replacing or answer not in written[key]):
                violations += 1

    try:
        tasks = [writer(repo) for repo in repos for _ in range(WRITERS)]
        tasks += [claimer(repo) for repo in repos for _ in range(CLAIMERS)]
        await asyncio.gather(*tasks)
    finally:
        for repo in repos:
            for key in keys:
                await repo.delete(key)
            await repo.close()
    return claims, violations


async def test_claim_replacing_never_answers_the_replaced_owner() -> None:
    url = migrated_url("postgresql")
    claims, violations = await _race(url)
    assert claims > 100, "the race did not run long enough to mean anything"
    assert violations == 0, f"{violations} of {claims} claims answered a replaced owner"


@pytest.mark.server
async def test_a_call_cancelled_mid_statement_leaves_no_busy_connection_behind() -> None:
    """A caller cancelled while its statement waits on the server breaks no later call.

    Lone calls run in the caller's task, so the cancellation reaches the statement;
    the connection it was on is dropped (asyncpg would also recover it by itself
    here; a connection cut off by the server, as in tests/resilience/test_faults.py,
    is the case it could not).
    """
    import hashlib

    import asyncpg

    url = migrated_url("postgresql")
    async with SqlSessionRepository(url, cleanup_interval=0, pool_size=1) as repo:
        await repo.upsert("held", "machine-a")
        raw_url = url.replace("postgresql+asyncpg://", "postgresql://")
        locker = await asyncpg.connect(raw_url)
        try:
            digest = hashlib.sha256(b"held").digest()
            lock = locker.transaction()
            await lock.start()
            await locker.execute(
                "SELECT 1 FROM session_bindings WHERE session_key = $1 FOR UPDATE", digest
            )
            blocked = asyncio.create_task(repo.upsert("held", "machine-b"))
            await asyncio.sleep(0.3)  # the upsert waits for the row lock, on the server
            assert not blocked.done()
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
            # The lock still held, so the cut-off statement is still running on its
            # connection: each of these would meet that connection first.
            for n in range(20):
                await repo.upsert(f"after-{n}", "machine-a")
                assert await repo.lookup(f"after-{n}") == "machine-a"
            await lock.rollback()
        finally:
            await locker.close()
        assert await repo.lookup("held") in {"machine-a", "machine-b"}
