"""A tick's upserts under one tag travel as one ``upserts`` script call, each its own.

Each test breaks what the batch script could get wrong: one round trip for the tick,
every binding and index as separate calls would leave them, a failing write failing
only its caller, and an index emptied and re-made within the call keeping a ttl.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from session_repo import RedisSessionRepository, StorageError
from tests.backends.test_redis import PREFIX, CountingConnection, counting_client, digest
from tests.backends.test_redis import client as client

pytestmark = pytest.mark.server

SETUP = {"HELLO", "CLIENT", "SELECT", "PING"}  # a connection the burst opened


@pytest.fixture
async def counted(client: Any) -> AsyncIterator[RedisSessionRepository]:
    raw = counting_client()
    try:
        async with RedisSessionRepository(raw, key_prefix=PREFIX, cleanup_interval=0) as repo:
            await repo.heartbeat("machine-a", 30)  # liveness read in the same script
            await repo.upsert("warm", "machine-a")  # the lone upsert's script is loaded
            yield repo
    finally:
        await raw.aclose()


async def test_a_ticks_upserts_are_one_script_call_and_all_land(
    counted: RedisSessionRepository, client: Any
) -> None:
    await asyncio.gather(*(counted.upsert(f"s{n}", f"machine-{n % 3}") for n in range(30)))
    CountingConnection.sent.clear()
    await asyncio.gather(*(counted.upsert(f"t{n}", f"machine-{n % 4}") for n in range(40)))
    sent = [c for c in CountingConnection.sent if c not in SETUP]
    assert sent == ["EVALSHA", "EVALSHA"]  # the first alone, the 39 behind it in one call
    owners = await asyncio.gather(*(counted.lookup(f"t{n}") for n in range(40)))
    assert owners == [f"machine-{n % 4}" for n in range(40)]
    leases = await asyncio.gather(*(counted.lease(f"t{n}") for n in range(40)))
    generations = [lease.generation for lease in leases if lease is not None]
    assert len(set(generations)) == 40  # each fresh, as forty separate calls give
    for n in range(4):  # every index holds its owner's, with a ttl
        index = f"{PREFIX}o:machine-{n}"
        members = set(await client.zrange(index, 0, -1))
        expected = {digest(f"t{m}") for m in range(n, 40, 4)} | {
            digest(f"s{m}") for m in range(30) if m % 3 == n
        }
        assert members == expected
        assert await client.pttl(index) > 0
    assert await counted.delete_owner("machine-1") == 10 + 10


async def test_a_binding_of_the_wrong_type_fails_only_its_own_upsert(
    counted: RedisSessionRepository, client: Any
) -> None:
    await client.rpush(f"{PREFIX}s:{digest('bad')}", "not a binding")
    calls = [counted.upsert(f"s{n}", "machine-a") for n in range(6)]
    calls.insert(3, counted.upsert("bad", "machine-b"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
    assert failed == [3]
    assert isinstance(results[3], StorageError)
    assert [await counted.lookup(f"s{n}") for n in range(6)] == ["machine-a"] * 6
    assert await client.zscore(f"{PREFIX}o:machine-b", digest("bad")) is None


async def test_a_session_rebound_twice_in_one_call_ends_with_the_last_and_a_later_generation(
    counted: RedisSessionRepository, client: Any
) -> None:
    await counted.upsert("moved", "machine-a")
    before = await counted.lease("moved")
    assert before is not None
    await asyncio.gather(
        counted.upsert("other", "machine-c"),
        counted.upsert("moved", "machine-b"),
        counted.upsert("moved", "machine-c"),
    )
    after = await counted.lease("moved")
    assert after is not None
    assert after.owner == "machine-c"
    assert after.generation > before.generation
    assert await client.zscore(f"{PREFIX}o:machine-a", digest("moved")) is None
    assert await client.zscore(f"{PREFIX}o:machine-b", digest("moved")) is None
    assert await client.zscore(f"{PREFIX}o:machine-c", digest("moved")) is not None


async def test_an_index_emptied_and_made_again_in_one_call_still_expires(
    counted: RedisSessionRepository, client: Any
) -> None:
    # x's index is made (its ttl learned), emptied by the rebind (Redis deletes an empty
    # sorted set, ttl and all), then made again: the call must set its ttl again.
    await asyncio.gather(
        counted.upsert("warm", "machine-a"),
        counted.upsert("first", "machine-x"),
        counted.upsert("first", "machine-y"),
        counted.upsert("second", "machine-x"),
    )
    index = f"{PREFIX}o:machine-x"
    assert await client.zrange(index, 0, -1) == [digest("second")]
    assert await client.pttl(index) > 0
