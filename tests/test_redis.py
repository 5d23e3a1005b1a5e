"""Redis specifics: native expiry, the key layout, and an owner index that cannot leak."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from session_repo import RedisSessionRepository, StorageError
from tests.servers import require_server, server_url

pytestmark = pytest.mark.server

PREFIX = "session-repo-test:"
REDIS_URL = server_url("redis")


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    require_server("redis")
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    async for key in raw.scan_iter(match=f"{PREFIX}*"):
        await raw.delete(key)
    yield raw
    async for key in raw.scan_iter(match=f"{PREFIX}*"):
        await raw.delete(key)
    await raw.aclose()


@pytest.fixture
async def repo(client: Any) -> AsyncIterator[RedisSessionRepository]:
    async with RedisSessionRepository(REDIS_URL, key_prefix=PREFIX, cleanup_interval=0) as repo:
        yield repo


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def test_layout_keeps_only_digests(repo: RedisSessionRepository, client: Any) -> None:
    await repo.upsert("secret-session-id", "machine-a", ttl=30)
    keys = sorted([key async for key in client.scan_iter(match=f"{PREFIX}*")])
    assert keys == [f"{PREFIX}o:machine-a", f"{PREFIX}s:{digest('secret-session-id')}"]
    assert not any("secret-session-id" in key for key in keys)
    ttl = await client.pttl(f"{PREFIX}s:{digest('secret-session-id')}")
    assert 29_000 < ttl <= 30_000
    # The index lives as long as its longest binding (read a moment later: a little slack).
    assert await client.pttl(f"{PREFIX}o:machine-a") >= ttl - 50


async def test_native_ttl_expires(repo: RedisSessionRepository) -> None:
    await repo.upsert("s", "machine-a", ttl=0.05)
    assert await repo.lookup("s") == "machine-a"
    await asyncio.sleep(0.12)
    assert await repo.lookup("s") is None
    assert await repo.touch("s") is False
    assert await repo.claim("s", "machine-b") == "machine-b"


async def test_rebinding_moves_the_index_entry(repo: RedisSessionRepository, client: Any) -> None:
    await repo.upsert("s", "machine-a")
    await repo.upsert("s", "machine-b")
    assert await client.zrange(f"{PREFIX}o:machine-a", 0, -1) == []
    assert await client.zrange(f"{PREFIX}o:machine-b", 0, -1) == [digest("s")]
    assert await repo.claim("s", "machine-c", replacing="machine-b") == "machine-c"
    assert await client.zrange(f"{PREFIX}o:machine-b", 0, -1) == []
    assert await repo.delete("s") is True
    assert await client.zrange(f"{PREFIX}o:machine-c", 0, -1) == []


async def test_delete_owner_counts_live_bindings_only(
    repo: RedisSessionRepository, client: Any
) -> None:
    for i in range(25):
        await repo.upsert(f"a{i}", "machine-a")
    await repo.upsert("b", "machine-b")
    await repo.upsert("gone", "machine-a", ttl=0.02)
    await asyncio.sleep(0.06)
    assert await repo.delete_owner("machine-a") == 25
    assert await client.exists(f"{PREFIX}o:machine-a") == 0
    assert await repo.lookup("b") == "machine-b"


async def test_cleanup_prunes_index_entries_of_expired_bindings(
    repo: RedisSessionRepository,
    client: Any,
) -> None:
    for i in range(7):
        await repo.upsert(f"short{i}", "machine-a", ttl=0.02)
    await repo.upsert("long", "machine-a", ttl=60)
    await asyncio.sleep(0.06)
    assert await client.zcard(f"{PREFIX}o:machine-a") == 8
    assert await repo.cleanup() == 7
    assert await client.zrange(f"{PREFIX}o:machine-a", 0, -1) == [digest("long")]
    assert await repo.cleanup() == 0


async def test_cleanup_in_small_batches(client: Any) -> None:
    async with RedisSessionRepository(
        REDIS_URL, key_prefix=PREFIX, cleanup_interval=0, cleanup_batch=3
    ) as repo:
        for i in range(10):
            await repo.upsert(f"s{i}", "machine-a", ttl=0.02)
        await repo.upsert("keeps-the-index", "machine-a", ttl=60)
        await asyncio.sleep(0.06)
        assert await repo.cleanup() == 10
        assert await client.zcard(f"{PREFIX}o:machine-a") == 1


async def test_an_index_expires_with_its_last_binding(
    repo: RedisSessionRepository, client: Any
) -> None:
    await repo.upsert("s", "machine-a", ttl=0.02)
    await asyncio.sleep(0.06)
    assert await client.exists(f"{PREFIX}o:machine-a") == 0  # nothing left to leak


async def test_prefixes_isolate_tenants(client: Any) -> None:
    async with (
        RedisSessionRepository(REDIS_URL, key_prefix=PREFIX + "one:") as one,
        RedisSessionRepository(REDIS_URL, key_prefix=PREFIX + "two:") as two,
    ):
        await one.upsert("s", "machine-a")
        assert await two.lookup("s") is None
        assert await two.claim("s", "machine-b") == "machine-b"
        assert await one.lookup("s") == "machine-a"


async def test_accepts_a_client(client: Any) -> None:
    repo = RedisSessionRepository(client, key_prefix=PREFIX)
    async with repo:
        await repo.upsert("s", "machine-a")
        assert await repo.lookup("s") == "machine-a"
    assert await client.ping()  # a caller's client is not closed for them


def test_rejects_a_non_redis_url() -> None:
    from session_repo import ConfigError

    with pytest.raises(ConfigError):
        RedisSessionRepository("postgresql://x/y")
    with pytest.raises(TypeError):
        RedisSessionRepository(42)


async def test_one_failing_write_in_a_pipelined_tick_fails_only_its_caller(
    repo: RedisSessionRepository, client: Any
) -> None:
    # A key of the wrong type makes that one script fail inside Redis.
    await client.hset(f"{PREFIX}s:{digest('bad')}", "not", "a string")
    calls = [repo.upsert(f"s{n}", "machine-a") for n in range(5)]
    calls += [repo.upsert("bad", "machine-a"), repo.claim("c", "machine-b")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
    assert failed == [5]
    assert isinstance(results[5], StorageError)
    assert results[6] == "machine-b"
    assert [await repo.lookup(f"s{n}") for n in range(5)] == ["machine-a"] * 5


async def test_lookups_of_one_tick_share_one_round_trip(
    repo: RedisSessionRepository, client: Any
) -> None:
    for n in range(20):
        await repo.upsert(f"s{n}", f"machine-{n}")
    before = (await client.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
    owners = await asyncio.gather(*(repo.lookup(f"s{n}") for n in range(20)))
    after = (await client.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
    assert owners == [f"machine-{n}" for n in range(20)]
    assert after - before == 1
