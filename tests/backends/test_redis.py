"""Redis specifics: native expiry, the key layout, and an owner index that cannot leak."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from session_repo import RedisSessionRepository, StorageError, SystemClock
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


def aioredis_connection() -> type[Any]:
    from redis.asyncio import Connection

    return Connection


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def test_layout_keeps_only_digests(repo: RedisSessionRepository, client: Any) -> None:
    await repo.upsert("secret-session-id", "machine-a", ttl=30)
    keys = sorted([key async for key in client.scan_iter(match=f"{PREFIX}*")])
    binding = f"{PREFIX}s:{digest('secret-session-id')}"
    assert keys == [f"{PREFIX}e", f"{PREFIX}g", f"{PREFIX}o:machine-a", binding]
    assert not any("secret-session-id" in key for key in keys)
    owner, generation, epoch, expires_at = (await client.get(binding)).split(" ")
    lease = await repo.lease("secret-session-id")
    assert lease is not None
    assert (owner, int(generation), epoch) == ("machine-a", lease.generation, "0")
    assert int(expires_at) == int(lease.expires_at.timestamp() * 1000)
    assert await client.get(f"{PREFIX}g") == generation  # the last one given
    assert await client.pttl(f"{PREFIX}g") == -1  # never expires
    ttl = await client.pttl(binding)
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


async def test_a_rebound_session_is_not_taken_down_with_its_old_owner(
    repo: RedisSessionRepository, client: Any
) -> None:
    await repo.upsert("s", "machine-a")
    await repo.upsert("s", "machine-b")
    assert await client.zrange(f"{PREFIX}o:machine-b", 0, -1) == [digest("s")]
    assert await repo.delete_owner("machine-a") == 0  # its stale entry is checked, dropped
    assert await client.exists(f"{PREFIX}o:machine-a") == 0
    assert await repo.lookup("s") == "machine-b"
    assert await repo.claim("s", "machine-c", replacing="machine-b") == "machine-c"
    assert await repo.delete_owner("machine-b") == 0
    assert await repo.lookup("s") == "machine-c"
    assert await repo.delete("s") is True
    assert await client.exists(f"{PREFIX}o:machine-c") == 0  # the owner it knew: tidied


async def test_a_rebind_moves_the_index_entry_at_once(
    repo: RedisSessionRepository, client: Any
) -> None:
    await repo.upsert("keep", "machine-a", ttl=60)
    await repo.upsert("s", "machine-a", ttl=0.05)
    await repo.upsert("s", "machine-b", ttl=60)  # the script read the old owner: its entry goes
    await asyncio.sleep(0.1)
    assert await client.zrange(f"{PREFIX}o:machine-a", 0, -1) == [digest("keep")]
    assert await client.zrange(f"{PREFIX}o:machine-b", 0, -1) == [digest("s")]
    assert await repo.cleanup() == 0  # nothing expired: the binding lives, with machine-b
    assert await repo.lookup("s") == "machine-b"


async def test_cleanup_drops_stale_index_entries_once_past_their_expiry(
    repo: RedisSessionRepository, client: Any
) -> None:
    """An index entry whose binding went elsewhere (as a write before leases left it)."""
    await repo.upsert("keep", "machine-a", ttl=60)
    await repo.upsert("s", "machine-b", ttl=60)
    await client.zadd(f"{PREFIX}o:machine-a", {digest("s"): 1})  # scored long expired
    assert await repo.cleanup() == 0  # nothing expired: the binding lives, with machine-b
    assert await client.zrange(f"{PREFIX}o:machine-a", 0, -1) == [digest("keep")]
    assert await client.zrange(f"{PREFIX}o:machine-b", 0, -1) == [digest("s")]
    assert await repo.lookup("s") == "machine-b"


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
    # An owner index of the wrong type makes that one script fail inside Redis.
    await client.hset(f"{PREFIX}o:machine-bad", "not", "a sorted set")
    calls = [repo.upsert(f"s{n}", "machine-a") for n in range(5)]
    calls += [repo.upsert("bad", "machine-bad"), repo.claim("c", "machine-b")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
    assert failed == [5]
    assert isinstance(results[5], StorageError)
    assert results[6] == "machine-b"
    assert [await repo.lookup(f"s{n}") for n in range(5)] == ["machine-a"] * 5
    assert await repo.lookup("bad") is None  # the failed script wrote nothing


class CountingConnection(aioredis_connection()):  # type: ignore[misc]
    """A real connection that counts the commands it sends (MONITOR-free, per client)."""

    sent: ClassVar[list[str]] = []

    def pack_command(self, *args: Any) -> Any:
        CountingConnection.sent.append(str(args[0]))
        return super().pack_command(*args)


def counting_client() -> Any:
    """A client whose connections count what they send in ``CountingConnection.sent``."""
    import redis.asyncio as aioredis

    require_server("redis")
    pool = aioredis.ConnectionPool.from_url(
        REDIS_URL, decode_responses=True, connection_class=CountingConnection
    )
    return aioredis.Redis(connection_pool=pool)


async def test_lookups_of_one_tick_share_one_round_trip(client: Any) -> None:
    counted = counting_client()
    try:
        async with RedisSessionRepository(counted, key_prefix=PREFIX, cleanup_interval=0) as repo:
            await repo.heartbeat("machine-0", 30)  # liveness read in the same script
            for n in range(20):
                await repo.upsert(f"s{n}", f"machine-{n % 3}")
            await repo.lookup("s0")  # the lone lookup's script is loaded
            await asyncio.gather(repo.lookup("s1"), repo.lookup("s2"))  # and the batch's
            CountingConnection.sent.clear()
            owners = await asyncio.gather(*(repo.lookup(f"s{n}") for n in range(20)))
            assert owners == [f"machine-{n % 3}" for n in range(20)]
            setup = {"HELLO", "CLIENT", "SELECT", "PING"}  # a connection the burst opened
            # The first goes at once, alone; the 19 queued behind it share one script.
            sent = [c for c in CountingConnection.sent if c not in setup]
            assert sent == ["EVALSHA", "EVALSHA"]
    finally:
        await counted.aclose()


LONG, SHORT = 18_000, 2000


async def test_metrics_costs_the_same_few_commands_for_20k_sessions() -> None:
    prefix = f"{PREFIX}gauges:"
    counted = counting_client()
    repo = RedisSessionRepository(counted, key_prefix=prefix, cleanup_interval=0)
    try:
        async with repo:
            for start in range(0, LONG, 1000):
                await asyncio.gather(
                    *(
                        repo.upsert(f"long{n}", f"m{n % 7}", ttl=60)
                        for n in range(start, start + 1000)
                    )
                )
            # Written last, and measured at once: they live 3 s in Redis's own time.
            await asyncio.gather(*(repo.upsert(f"short{n}", "m0", ttl=3) for n in range(SHORT)))
            short_written = time.monotonic()
            CountingConnection.sent.clear()
            first = await repo.metrics()
            commands = list(CountingConnection.sent)
            assert (first.sessions, first.expired) == (20_000, 0)
            assert len(commands) <= 3, commands  # not a SCAN per 1000 keys
            assert "SCAN" not in commands

            await asyncio.sleep(short_written + 3.2 - time.monotonic())
            later = await repo.metrics()
            assert (later.sessions, later.expired) == (LONG, SHORT)
            assert await repo.lookup("short0") is None
            assert await repo.cleanup() == SHORT
            cleaned = await repo.metrics()
            assert (cleaned.sessions, cleaned.expired) == (LONG, 0)
            assert await repo.delete("long0") is True
            assert await repo.delete_owner("m1") == len(range(1, LONG, 7))
            assert (await repo.metrics()).sessions == LONG - 1 - len(range(1, LONG, 7))
    finally:
        async for key in counted.scan_iter(match=f"{prefix}*", count=1000):
            await counted.delete(key)
        await counted.aclose()


async def test_rebinding_unknown_to_this_instance_keeps_every_index_right(
    repo: RedisSessionRepository, client: Any
) -> None:
    # Another instance rebinds behind this one's back: its remembered owner is stale.
    async with RedisSessionRepository(REDIS_URL, key_prefix=PREFIX, cleanup_interval=0) as other:
        await repo.upsert("s", "machine-a")
        await other.upsert("s", "machine-b")
        assert await repo.touch("s", ttl=30) is True
        score = await client.zscore(f"{PREFIX}o:machine-b", digest("s"))
        assert score < time.time() * 1000 + 31_000  # was 600 s ahead: the touch reached it
        await repo.upsert("s", "machine-c")
        assert await client.zrange(f"{PREFIX}o:machine-c", 0, -1) == [digest("s")]
        await other.upsert("s", "machine-d")
        for owner in "abc":  # none of them holds it: stale entries, checked and dropped
            assert await repo.delete_owner(f"machine-{owner}") == 0
        assert await repo.lookup("s") == "machine-d"
        assert await repo.delete("s") is True
        assert await client.zcard(f"{PREFIX}e") == 0
        assert await repo.delete_owner("machine-d") == 0
        for owner in "abcd":
            assert await client.exists(f"{PREFIX}o:machine-{owner}") == 0


async def test_a_burst_beyond_max_connections_waits_its_turn(client: Any) -> None:
    """64 callers of every kind, 2 batches at a time: none fails, at most 4 connections
    (two more for a lone lookup and a lone write)."""
    name = "session-repo-burst"
    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}client_name={name}"
    seen: list[int] = []
    stop = asyncio.Event()

    async def count_connections() -> None:
        while not stop.is_set():
            clients = await client.client_list()
            seen.append(sum(1 for c in clients if c.get("name") == name))
            await asyncio.sleep(0.001)

    async with RedisSessionRepository(
        url, key_prefix=PREFIX, cleanup_interval=0, max_connections=2
    ) as repo:
        counting = asyncio.create_task(count_connections())
        calls = []
        for n in range(64):
            calls += [repo.upsert(f"b{n}", f"m{n % 3}"), repo.lookup(f"b{n}")]
            calls += [repo.claim(f"c{n}", "m0"), repo.touch(f"b{n}")]
        calls += [repo.cleanup(), repo.delete_owner("m1"), repo.metrics(), repo.health()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        stop.set()
        await counting
    errors = [result for result in results if isinstance(result, BaseException)]
    assert errors == []
    assert seen
    assert max(seen) <= 2 + 2


async def test_writes_pipelined_after_redis_lost_its_scripts_still_land(
    repo: RedisSessionRepository, client: Any
) -> None:
    await repo.upsert("warm", "machine-a")  # the scripts are loaded
    await client.script_flush()  # as a restart of Redis would leave it
    calls = [repo.upsert(f"s{n}", "machine-a") for n in range(10)]
    calls += [repo.claim(f"c{n}", "machine-b") for n in range(10)]
    assert await asyncio.gather(*calls) == [None] * 10 + ["machine-b"] * 10
    owners = await asyncio.gather(*(repo.lookup(f"s{n}") for n in range(10)))
    assert owners == ["machine-a"] * 10


async def test_lone_calls_after_redis_lost_its_scripts_load_them_and_answer(
    repo: RedisSessionRepository, client: Any
) -> None:
    """A lone call sends EVALSHA as a raw command: a NOSCRIPT reply loads the script."""
    await repo.upsert("warm", "machine-a")
    assert await repo.lookup("warm") == "machine-a"  # every lone script is loaded
    await client.script_flush()
    assert await repo.lookup("warm") == "machine-a"
    await client.script_flush()
    await repo.upsert("alone", "machine-b")
    await client.script_flush()
    assert await repo.claim("alone", "machine-c") == "machine-b"
    await client.script_flush()
    assert (await repo.lease("alone")) is not None
    assert await repo.lookup("nobody") is None


VALKEY_URL = REDIS_URL.replace("redis://", "valkey://", 1)


async def test_valkey_py_and_redis_py_share_one_layout(client: Any) -> None:
    """A valkey:// repository and a redis:// one on the same server see the same bindings."""
    import valkey.asyncio as aiovalkey

    async with (
        RedisSessionRepository(VALKEY_URL, key_prefix=PREFIX, cleanup_interval=0) as valkey,
        RedisSessionRepository(REDIS_URL, key_prefix=PREFIX, cleanup_interval=0) as redis,
    ):
        assert (await valkey.health()).backend == "valkey"
        await valkey.upsert("s", "machine-a")
        assert await redis.lookup("s") == "machine-a"
        assert await redis.claim("s", "machine-b", replacing="machine-a") == "machine-b"
        assert await valkey.lookup("s") == "machine-b"
        assert await valkey.delete_owner("machine-b") == 1
        assert await redis.lookup("s") is None
    own = aiovalkey.Valkey.from_url(VALKEY_URL, decode_responses=True)
    try:
        async with RedisSessionRepository(own, key_prefix=PREFIX, cleanup_interval=0) as given:
            await given.upsert("t", "machine-c")
            assert await given.lookup("t") == "machine-c"
        assert await own.ping()  # a client the caller passed stays open
    finally:
        await own.aclose()


async def test_valkey_py_errors_are_classified_like_redis_py_ones(client: Any) -> None:
    import valkey.asyncio as aiovalkey

    from session_repo.backends.redis.errors import is_transient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = aiovalkey.Valkey.from_url(f"valkey://127.0.0.1:{closed}/0")
    try:
        with pytest.raises(Exception) as info:
            await refused.ping()
    finally:
        await refused.aclose()
    assert is_transient(info.value), repr(info.value)
    await client.hset(f"{PREFIX}wrong-type", "a", "b")
    typed = aiovalkey.Valkey.from_url(VALKEY_URL)
    try:
        with pytest.raises(Exception) as info:
            await typed.get(f"{PREFIX}wrong-type")
    finally:
        await typed.aclose()
    assert not is_transient(info.value), repr(info.value)


async def test_valkey_pipelined_writes_after_the_server_lost_its_scripts_still_land(
    client: Any,
) -> None:
    async with RedisSessionRepository(VALKEY_URL, key_prefix=PREFIX, cleanup_interval=0) as repo:
        await repo.upsert("warm", "machine-a")
        await client.script_flush()
        calls = [repo.upsert(f"s{n}", "machine-a") for n in range(10)]
        calls += [repo.claim(f"c{n}", "machine-b") for n in range(10)]
        assert await asyncio.gather(*calls) == [None] * 10 + ["machine-b"] * 10


async def test_a_master_short_of_replicas_refuses_writes_as_a_transient_error(
    tmp_path: Any,
) -> None:
    """``min-replicas-to-write``: NOREPLICAS means nothing was written; another try may do."""
    require_server("redis")  # the same binary; this test runs its own server
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path), "--min-replicas-to-write", "1",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        async with RedisSessionRepository(url, cleanup_interval=0) as repo:
            assert await repo.lookup("short-of-replicas") is None  # reads still work
            with pytest.raises(StorageError, match="NOREPLICAS") as caught:
                await repo.upsert("short-of-replicas", "machine-a")
            assert caught.value.transient
            assert await repo.lookup("short-of-replicas") is None
    finally:
        server.terminate()
        await server.wait()


# --- leases: what the native ttls and the counter must not undo ---------------------


async def test_a_lapse_stays_final_after_the_heartbeat_key_expired(
    client: Any,
) -> None:
    """The heartbeat key goes by its PX ttl; the mark stays, so its bindings stay dead."""
    async with RedisSessionRepository(
        REDIS_URL, key_prefix=PREFIX, cleanup_interval=0, clock=SystemClock()
    ) as repo:
        await repo.heartbeat("machine-a", 0.1)
        old = await repo.acquire("s", "machine-a", 600)
        await asyncio.sleep(0.2)
        assert await client.exists(f"{PREFIX}h:machine-a") == 0  # expired natively
        assert await client.hget(f"{PREFIX}M", "machine-a") == "0"  # still marked
        assert await client.exists(f"{PREFIX}s:{digest('s')}") == 1  # its own ttl runs
        assert await repo.lookup("s") is None
        assert await repo.lease("s") is None
        assert not await repo.touch("s", 600)
        assert not await repo.delete("s")
        gauges = await repo.metrics()
        assert (gauges.sessions, gauges.expired, gauges.owners) == (0, 1, 0)
        await repo.upsert("written-while-dead", "machine-a", 600)
        assert await repo.lookup("written-while-dead") is None
        await repo.heartbeat("machine-a", 30)  # a new epoch: the killed ones are gone
        assert await client.hget(f"{PREFIX}M", "machine-a") == "1"
        assert await client.exists(f"{PREFIX}s:{digest('s')}") == 0
        assert await repo.lookup("s") is None
        assert await repo.lookup("written-while-dead") is None
        again = await repo.acquire("s", "machine-a", 600)
        assert again.owner == "machine-a"
        assert again.generation > old.generation
        assert await repo.lookup("s") == "machine-a"
        gauges = await repo.metrics()
        assert (gauges.sessions, gauges.expired, gauges.owners) == (1, 0, 1)


async def test_cleanup_drops_a_lapsed_owners_mark_only_after_its_bindings(
    client: Any,
) -> None:
    async with RedisSessionRepository(
        REDIS_URL, key_prefix=PREFIX, cleanup_interval=0, clock=SystemClock(), cleanup_batch=2
    ) as repo:
        await repo.heartbeat("machine-a", 0.1)
        await repo.heartbeat("machine-b", 30)
        for n in range(5):
            await repo.upsert(f"a{n}", "machine-a", 600)
        await repo.upsert("b", "machine-b", 600)
        await asyncio.sleep(0.2)
        assert await repo.cleanup() == 5  # in batches of 2, then the mark
        assert await client.hkeys(f"{PREFIX}M") == ["machine-b"]
        assert await client.exists(f"{PREFIX}o:machine-a") == 0
        assert await repo.lookup("b") == "machine-b"
        assert await repo.owners() != {}
        assert await repo.release("machine-b") == 1
        assert await client.exists(f"{PREFIX}M", f"{PREFIX}h:machine-b") == 0


async def test_generations_rise_across_delete_and_native_expiry(
    repo: RedisSessionRepository, client: Any
) -> None:
    seen = [(await repo.acquire("s", "machine-a", 0.05)).generation]
    await asyncio.sleep(0.1)  # Redis expired it
    assert await client.exists(f"{PREFIX}s:{digest('s')}") == 0
    seen.append((await repo.acquire("s", "machine-a", 600)).generation)
    assert await repo.delete("s")
    seen.append((await repo.acquire("s", "machine-a", 600)).generation)
    assert seen == sorted(set(seen)), seen
    assert await client.pttl(f"{PREFIX}g") == -1  # the counter never expires


async def test_generations_rise_even_when_the_counter_went_back(
    repo: RedisSessionRepository, client: Any
) -> None:
    """A failover can lose the counter's last increments (replication is asynchronous):
    the server's clock in microseconds is a floor, so no generation is handed out twice."""
    first = await repo.acquire("s", "machine-a")
    assert first.generation >= time.time() * 1_000_000 - 60_000_000
    await client.set(f"{PREFIX}g", 1)  # as a promoted replica that missed them
    taken = await repo.acquire("s", "machine-b", replacing="machine-a")
    assert taken.generation > first.generation
    await client.delete(f"{PREFIX}g")
    assert await repo.delete("s")
    assert (await repo.acquire("s", "machine-c")).generation > taken.generation


async def test_a_binding_written_before_leases_reads_and_is_rebound_anew(
    repo: RedisSessionRepository, client: Any
) -> None:
    """A plain owner (the value before leases) is that owner, generation 0, until rewritten."""
    await repo.upsert("s", "machine-a", ttl=60)
    binding = f"{PREFIX}s:{digest('s')}"
    await client.set(binding, "machine-old", px=60_000)
    assert await repo.lookup("s") == "machine-old"
    lease = await repo.lease("s")
    assert lease is not None
    assert (lease.owner, lease.generation) == ("machine-old", 0)
    again = await repo.acquire("s", "machine-old", 60, replacing="machine-old")
    assert again.generation > 0  # written anew, with a real generation
    assert (await client.get(binding)).startswith(f"machine-old {again.generation} ")
