"""Redis Cluster specifics: keys over many slots and nodes, per-slot MGET, and failover.

Runs on ``.ci/redis-cluster``'s cluster (127.0.0.1:7000-7005: masters 7000-7002, a
replica each). The failover tests promote a replica while traffic runs and put the
roles back before they end, so later tests find the cluster as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from session_repo import (
    RedisSessionRepository,
    ResilientSessionRepository,
    SessionStoreConfig,
    StorageError,
    SystemClock,
    create_session_repository,
)
from session_repo.backends.redis.clients import family_of_client
from session_repo.backends.redis.cluster import BUCKETS, parse_cluster_url
from session_repo.backends.redis.errors import is_transient
from session_repo.backends.redis.scripts import load
from session_repo.errors import ConfigError
from tests.redis_cluster import cluster_client
from tests.servers import require_server

PREFIX = "session-repo-cluster-test:"
MASTERS = (7000, 7001, 7002)
SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "redis-cluster"


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


# --- URLs and clients: no server needed -------------------------------------------


def test_a_cluster_url_builds_the_redis_backend() -> None:
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"
    wrapped = create_session_repository(SessionStoreConfig(url=url))
    assert isinstance(wrapped, ResilientSessionRepository)
    assert isinstance(wrapped.primary, RedisSessionRepository)
    bare = create_session_repository(SessionStoreConfig(url=url, fallback="none"))
    assert isinstance(bare, RedisSessionRepository)


def test_a_cluster_url_names_its_nodes_and_credentials() -> None:
    address = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001,cache/")
    assert address.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("cache", 6379))
    assert (address.username, address.password, address.ssl) == ("app", "p@ss", True)
    assert "p@ss" not in repr(address)
    plain = parse_cluster_url("redis+cluster://127.0.0.1:7000")
    assert (plain.username, plain.password, plain.ssl) == (None, None, False)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://:s3cret@/", "host:port"),
        ("redis+cluster://user:s3cret@127.0.0.1:notaport/", "valid port"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000,127.0.0.1:99999/", "valid port"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000,/", "host:port"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000/?ssl_cert_reqs=none", "no options"),
    ],
)
def test_a_malformed_cluster_url_is_a_config_error_that_hides_the_password(
    url: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        RedisSessionRepository(url)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError) as through_factory:
        create_session_repository(SessionStoreConfig(url=url, fallback="none"))
    assert "s3cret" not in str(through_factory.value)


def test_cluster_clients_are_recognized() -> None:
    from redis.asyncio.cluster import RedisCluster
    from valkey.asyncio.cluster import ValkeyCluster

    redis_client = RedisCluster(host="127.0.0.1", port=7000)
    valkey_client = ValkeyCluster(host="127.0.0.1", port=7000)
    redis_family, valkey_family = family_of_client(redis_client), family_of_client(valkey_client)
    assert redis_family is not None
    assert redis_family.name == "redis"
    assert valkey_family is not None
    assert valkey_family.name == "valkey"
    assert isinstance(RedisSessionRepository(redis_client), RedisSessionRepository)


async def test_a_write_on_a_connection_closed_under_it_is_transient() -> None:
    """redis-py #4287: asyncio's AttributeError/TypeError, not ConnectionError, escapes.

    A connection whose writer another task tore down (the cluster client closes every
    connection on CLUSTERDOWN) fails its write from inside redis-py's connection module:
    with an AttributeError before redis-py 8.2, a ConnectionError from 8.2 on. Either is
    transient.
    """
    from redis.asyncio import Connection
    from redis.exceptions import ConnectionError as RedisConnectionError

    connection = Connection(host="127.0.0.1", port=7000)
    assert connection._writer is None  # never connected, or disconnected meanwhile
    with pytest.raises((AttributeError, RedisConnectionError)) as caught:
        await connection._send_packed_command([b"PING\r\n"])
    assert is_transient(caught.value)
    with pytest.raises(AttributeError) as elsewhere:
        await _writelines_on(None)
    assert not is_transient(elsewhere.value)


async def _writelines_on(writer: Any) -> None:
    writer.writelines([b"PING\r\n"])  # the same error, raised outside redis-py


# --- on the cluster ---------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    require_server("redis-cluster")
    raw = cluster_client()
    await _clear(raw)
    yield raw
    await _clear(raw)
    await raw.aclose()


async def _clear(raw: Any) -> None:
    async for key in raw.scan_iter(match=f"{PREFIX}*", count=1000):
        await raw.delete(key)


def _url() -> str:
    return require_server("redis-cluster")


@pytest.fixture
async def repo(client: Any) -> AsyncIterator[RedisSessionRepository]:
    async with RedisSessionRepository(_url(), key_prefix=PREFIX, cleanup_interval=0) as repo:
        yield repo


async def _keys(client: Any, pattern: str = "*") -> list[str]:
    return [key async for key in client.scan_iter(match=f"{PREFIX}{pattern}", count=1000)]


async def test_keys_spread_over_every_bucket_and_every_master(
    repo: RedisSessionRepository, client: Any
) -> None:
    await asyncio.gather(*(repo.upsert(f"session-{n}", "machine-a", ttl=60) for n in range(600)))
    bindings = await _keys(client, "{*}s:*")
    assert len(bindings) == 600
    slots = {client.keyslot(key) for key in bindings}
    assert len(slots) == BUCKETS
    masters = {client.get_node_from_key(key).port for key in bindings}
    assert masters == set(MASTERS)
    # A binding shares its slot with its bucket's expiries and its owner's index there.
    for key in bindings[:50]:
        tag = key[: key.index("}") + 1]
        assert client.keyslot(f"{tag}e") == client.keyslot(key)
        assert client.keyslot(f"{tag}o:machine-a") == client.keyslot(key)
    first = digest("session-0")
    assert f"{PREFIX}{{{int(first[:2], 16) % BUCKETS}}}s:{first}" in bindings


async def test_writes_lookups_and_gauges_agree_across_nodes(repo: RedisSessionRepository) -> None:
    ids = [f"session-{n}" for n in range(300)]
    await asyncio.gather(*(repo.upsert(s, f"machine-{n % 3}", ttl=60) for n, s in enumerate(ids)))
    owners = await asyncio.gather(*(repo.lookup(s) for s in ids))
    assert owners == [f"machine-{n % 3}" for n in range(300)]
    assert (await repo.metrics()).sessions == 300
    claims = await asyncio.gather(*(repo.claim(s, "machine-z") for s in ids[:30]))
    assert claims == [f"machine-{n % 3}" for n in range(30)]
    assert await repo.claim("fresh", "machine-z") == "machine-z"
    assert await repo.touch(ids[0], ttl=120) is True
    assert await repo.delete(ids[1]) is True
    assert await repo.lookup(ids[1]) is None
    assert (await repo.metrics()).sessions == 300
    health = await repo.health()
    assert health.status == "ok"
    assert "3 masters" in health.detail


async def test_an_owners_liveness_is_read_in_every_bucket_on_every_master(
    client: Any,
) -> None:
    """A heartbeat marks the owner in all 64 buckets, so a session in any slot sees it
    lapse at once, and stay dead; release clears every bucket."""
    async with RedisSessionRepository(
        _url(), key_prefix=PREFIX, cleanup_interval=0, clock=SystemClock()
    ) as repo:
        await repo.heartbeat("machine-a", 0.3)
        marks = await _keys(client, "{*}M")
        beats = await _keys(client, "{*}h:machine-a")
        assert len(marks) == len(beats) == BUCKETS
        assert {client.get_node_from_key(key).port for key in beats} == set(MASTERS)
        ids = [f"session-{n}" for n in range(300)]
        old = await asyncio.gather(*(repo.acquire(s, "machine-a", 600) for s in ids))
        await repo.upsert("never-beats", "machine-b", 600)
        bindings = await _keys(client, "{*}s:*")
        assert len({client.keyslot(key) for key in bindings}) == BUCKETS
        assert await asyncio.gather(*(repo.lookup(s) for s in ids)) == ["machine-a"] * 300
        assert (await repo.metrics()).owners == 1
        await asyncio.sleep(0.45)  # every bucket's heartbeat key expired natively
        assert await _keys(client, "{*}h:machine-a") == []
        assert await asyncio.gather(*(repo.lookup(s) for s in ids)) == [None] * 300
        assert await repo.owners() == {}
        metrics = await repo.metrics()
        assert (metrics.sessions, metrics.expired, metrics.owners) == (1, 300, 0)
        await repo.heartbeat("machine-a", 30)
        assert await asyncio.gather(*(repo.lookup(s) for s in ids)) == [None] * 300
        again = await asyncio.gather(*(repo.acquire(s, "machine-a", 600) for s in ids[:40]))
        assert all(a.generation > o.generation for a, o in zip(again, old, strict=False))
        assert set(await repo.owners()) == {"machine-a"}
        assert await repo.release("machine-a") == 40
        assert await _keys(client, "{*}h:*") == []
        assert await _keys(client, "{*}o:machine-a") == []
        assert await repo.lookup("never-beats") == "machine-b"


async def test_delete_owner_reaches_every_node(repo: RedisSessionRepository, client: Any) -> None:
    await asyncio.gather(
        *(repo.upsert(f"session-{n}", "gone" if n % 2 else "stays", ttl=60) for n in range(400))
    )
    gone_nodes = {client.get_node_from_key(key).port for key in await _keys(client, "{*}o:gone")}
    assert gone_nodes == set(MASTERS)
    assert await repo.delete_owner("gone") == 200
    assert await _keys(client, "{*}o:gone") == []
    survivors = await asyncio.gather(*(repo.lookup(f"session-{n}") for n in range(400)))
    assert survivors == [None if n % 2 else "stays" for n in range(400)]
    assert (await repo.metrics()).sessions == 200


async def test_cleanup_sweeps_every_bucket_on_every_node(
    repo: RedisSessionRepository, client: Any
) -> None:
    await asyncio.gather(*(repo.upsert(f"short-{n}", "machine-a", ttl=0.2) for n in range(300)))
    await asyncio.gather(*(repo.upsert(f"long-{n}", "machine-b", ttl=60) for n in range(30)))
    await asyncio.sleep(0.4)  # Redis expires the short ones by its own clock
    assert await repo.cleanup() == 300
    async with client.pipeline() as pipe:
        for bucket in range(BUCKETS):
            pipe.zcard(f"{PREFIX}{{{bucket}}}e")
        assert sum(await pipe.execute()) == 30
    assert await _keys(client, "{*}o:machine-a") == []  # pruned, then gone
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired) == (30, 0)


async def _command_calls(client: Any, command: str) -> int:
    total = 0
    for port in MASTERS:
        node = client.get_node(host="127.0.0.1", port=port)
        stats = await client.info("commandstats", target_nodes=node)
        total += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return total


async def test_a_burst_of_lookups_is_one_script_per_bucket(
    repo: RedisSessionRepository, client: Any
) -> None:
    ids = [f"session-{n}" for n in range(64)]
    await repo.heartbeat("machine-a", 60)  # its liveness is read in every bucket's script
    await asyncio.gather(*(repo.upsert(s, "machine-a", ttl=60) for s in ids))
    await asyncio.gather(*(repo.lookup(s) for s in ids))  # the script is on every master
    # The first goes alone (nothing else waiting); the other 63 wait one tick.
    batched = ids[1:]
    slots = {client.keyslot(f"{PREFIX}{{{int(digest(s)[:2], 16) % BUCKETS}}}") for s in batched}
    assert 20 < len(slots) < len(batched)  # some sessions share a bucket
    scripts = await _command_calls(client, "evalsha")
    owners = await asyncio.gather(*(repo.lookup(s) for s in ids))
    assert owners == ["machine-a"] * 64
    assert await _command_calls(client, "evalsha") - scripts == 1 + len(slots)


async def test_valkey_cluster_urls_run_the_same_layout_through_valkey_py(client: Any) -> None:
    url = _url().replace("redis+cluster://", "valkey+cluster://", 1)
    async with RedisSessionRepository(url, key_prefix=PREFIX, cleanup_interval=0) as repo:
        assert (await repo.health()).backend == "valkey"
        await asyncio.gather(*(repo.upsert(f"s{n}", f"m{n % 2}", ttl=60) for n in range(200)))
        assert await repo.claim("s1", "m9") == "m1"
        assert await asyncio.gather(*(repo.lookup(f"s{n}") for n in range(4))) == [
            "m0",
            "m1",
            "m0",
            "m1",
        ]
        bindings = await _keys(client, "{*}s:*")
        assert {client.get_node_from_key(key).port for key in bindings} == set(MASTERS)
        assert await repo.delete_owner("m0") == 100
        assert (await repo.metrics()).sessions == 100


async def test_a_hash_tag_in_the_prefix_puts_everything_in_one_slot(client: Any) -> None:
    prefix = "{session-repo-cluster-test}:"
    async with RedisSessionRepository(_url(), key_prefix=prefix, cleanup_interval=0) as repo:
        try:
            await asyncio.gather(*(repo.upsert(f"s{n}", f"m{n % 2}", ttl=60) for n in range(50)))
            assert await repo.claim("s1", "m9") == "m1"
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            assert len({client.keyslot(key) for key in keys}) == 1
            assert await repo.delete_owner("m0") == 25
            assert (await repo.metrics()).sessions == 25
        finally:
            for key in [key async for key in client.scan_iter(match=f"{prefix}*")]:
                await client.delete(key)


async def test_scripts_the_cluster_lost_are_loaded_again(
    repo: RedisSessionRepository, client: Any
) -> None:
    await repo.upsert("before", "machine-a", ttl=60)
    claim_sha = hashlib.sha1(load("acquire").encode()).hexdigest()

    async def loaded() -> list[bool]:
        masters = [client.get_node(host="127.0.0.1", port=port) for port in MASTERS]
        return [
            (await client.execute_command("SCRIPT EXISTS", claim_sha, target_nodes=node))[0]
            for node in masters
        ]

    await client.execute_command("SCRIPT FLUSH", target_nodes=client.ALL_NODES)
    assert await loaded() == [False, False, False]
    results = await asyncio.gather(
        *(repo.claim(f"after-{n}", "machine-b", ttl=60) for n in range(40))
    )
    assert results == ["machine-b"] * 40
    assert await loaded() == [True, True, True]
    assert await repo.upsert("alone", "machine-c", ttl=60) is None
    assert await repo.lookup("alone") == "machine-c"


# --- failover ---------------------------------------------------------------------


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout


def _role(port: int) -> str:
    return _cli(port, "ROLE").split("\n", 1)[0].strip()


def _replica_of(master: int) -> int:
    for line in _cli(master, "CLUSTER", "NODES").splitlines():
        parts = line.split()
        if len(parts) > 3 and "myself" in parts[2]:
            me = parts[0]
    for line in _cli(master, "CLUSTER", "NODES").splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == me and "fail" not in parts[2]:
            return int(parts[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no replica of 127.0.0.1:{master}")


def _healthy() -> bool:
    done = subprocess.run([str(SCRIPT), "status"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


async def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.2)


async def _restore_roles() -> None:
    """Masters back on 7000-7002 (a coordinated failover on each that is a replica)."""
    for master in MASTERS:
        if await asyncio.to_thread(_role, master) != "master":
            await _until(_healthy, 20, "the cluster healthy before failing back")
            await asyncio.to_thread(_cli, master, "CLUSTER", "FAILOVER")
            await _until(lambda m=master: _role(m) == "master", 15, f"{master} master again")
    await _until(_healthy, 20, "the cluster healthy (cluster_state:ok, replicas linked)")


@dataclass
class Traffic:
    """What traffic saw: acknowledged upserts, each claim's winners, every error."""

    acked: dict[str, str] = field(default_factory=dict)
    claimed: dict[str, set[str]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0
    # Upserts acknowledged after the failover was over (the new topology served them).
    acked_after: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    over: bool = False


async def _run_traffic(
    repo: RedisSessionRepository, during: Callable[[], Awaitable[None]]
) -> Traffic:
    """Eight workers upsert fresh keys, look up and claim contested ones, while ``during``."""
    traffic = Traffic()
    acked: dict[str, str] = {}

    async def worker(n: int) -> None:
        i = 0
        while not traffic.stop.is_set():
            i += 1
            session, owner = f"w{n}-{i}", f"m{n}"
            try:
                traffic.calls += 1
                await repo.upsert(session, owner, ttl=300)
                acked[session] = owner
                traffic.acked_after += traffic.over
                traffic.calls += 1
                await repo.lookup(f"w{n}-{random.randint(1, i)}")
                contested = f"c-{i % 500}-{n // 2}"  # two workers contend for each
                traffic.calls += 1
                winner = await repo.claim(contested, owner, ttl=300)
                traffic.claimed.setdefault(contested, set()).add(winner)
            except Exception as exc:  # checked below: transient StorageError only
                traffic.errors.append(exc)
                await asyncio.sleep(0.05)

    workers = [asyncio.create_task(worker(n)) for n in range(8)]
    try:
        await asyncio.sleep(0.5)
        await during()
        traffic.over = True
        await asyncio.sleep(1.0)
    finally:
        traffic.stop.set()
        await asyncio.gather(*workers)
    traffic.acked = acked
    return traffic


async def _check(repo: RedisSessionRepository, traffic: Traffic) -> None:
    bad = [e for e in traffic.errors if not (isinstance(e, StorageError) and e.transient)]
    assert bad == [], bad[:3]
    assert len(traffic.acked) > 100, traffic.calls
    assert traffic.acked_after > 50, traffic.acked_after
    print(f"{traffic.calls} calls, {len(traffic.errors)} transient errors")  # for -s runs
    sessions = list(traffic.acked)
    owners = await asyncio.gather(*(repo.lookup(s) for s in sessions))
    lost = [s for s, owner in zip(sessions, owners, strict=True) if owner != traffic.acked[s]]
    assert lost == [], f"{len(lost)} of {len(sessions)} acknowledged upserts lost"
    for contested, winners in traffic.claimed.items():
        assert len(winners) == 1, (contested, winners)  # every claimer saw one winner
        assert await repo.lookup(contested) in winners


@pytest.fixture
async def failover_repo(client: Any) -> AsyncIterator[RedisSessionRepository]:
    await _until(_healthy, 30, "the cluster healthy before the test")
    try:
        async with RedisSessionRepository(_url(), key_prefix=PREFIX, cleanup_interval=0) as repo:
            yield repo
    finally:
        await _restore_roles()


@pytest.mark.timeout(60)
async def test_a_coordinated_failover_under_traffic_loses_no_acknowledged_write(
    failover_repo: RedisSessionRepository,
) -> None:
    replica = await asyncio.to_thread(_replica_of, 7000)

    async def fail_over() -> None:
        assert "OK" in await asyncio.to_thread(_cli, replica, "CLUSTER", "FAILOVER")
        await _until(lambda: _role(replica) == "master", 15, f"{replica} promoted")

    traffic = await _run_traffic(failover_repo, fail_over)
    assert await asyncio.to_thread(_role, 7000) == "slave"
    await _check(failover_repo, traffic)


@pytest.mark.timeout(60)
async def test_a_master_that_stops_is_replaced_and_callers_see_only_transient_errors(
    failover_repo: RedisSessionRepository,
) -> None:
    """SHUTDOWN waits for the replica to catch up (Redis 7), so nothing acked is lost."""
    replica = await asyncio.to_thread(_replica_of, 7001)

    async def stop_master() -> None:
        await asyncio.to_thread(_cli, 7001, "SHUTDOWN", "NOSAVE")
        await _until(lambda: _role(replica) == "master", 20, f"{replica} promoted")
        await asyncio.sleep(0.5)  # traffic on the new master
        subprocess.run([str(SCRIPT), "start-node", "7001"], check=True, timeout=10)
        await _until(lambda: _role(7001) == "slave", 20, "7001 back, as a replica")

    traffic = await _run_traffic(failover_repo, stop_master)
    await _check(failover_repo, traffic)


# --- WAIT for replicas ------------------------------------------------------------


async def test_writes_can_wait_for_their_replicas(client: Any) -> None:
    async with RedisSessionRepository(
        _url(), key_prefix=PREFIX, cleanup_interval=0, wait_replicas=1, wait_timeout=2
    ) as repo:
        owners = await asyncio.gather(*(repo.claim(f"s{n}", "m1", ttl=60) for n in range(50)))
        assert owners == ["m1"] * 50
        # a tick's upserts, coalesced by bucket into one script call each, wait too
        await asyncio.gather(*(repo.upsert(f"u{n}", "m3", ttl=60) for n in range(50)))
        owners = await asyncio.gather(*(repo.lookup(f"u{n}") for n in range(50)))
        assert owners == ["m3"] * 50
        await repo.upsert("alone", "m2", ttl=60)  # a lone write waits too
        assert await repo.touch("alone", ttl=90) is True
        assert await repo.delete("s0") is True
        assert await repo.lookup("alone") == "m2"


async def test_a_write_fewer_replicas_acknowledged_fails_transiently(client: Any) -> None:
    async with RedisSessionRepository(
        _url(), key_prefix=PREFIX, cleanup_interval=0, wait_replicas=2, wait_timeout=0.1
    ) as repo:  # each master has one replica
        started = time.monotonic()
        with pytest.raises(StorageError, match="1 of 2 replicas") as caught:
            await repo.upsert("s1", "m1", ttl=60)
        assert caught.value.transient
        assert time.monotonic() - started < 2
        assert await repo.lookup("s1") == "m1"  # written on the master all the same
        results = await asyncio.gather(
            *(repo.upsert(f"b{n}", "m1", ttl=60) for n in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, StorageError) and r.transient for r in results)


def test_wait_settings_are_checked() -> None:
    with pytest.raises(TypeError, match="wait_replicas"):
        RedisSessionRepository("redis://127.0.0.1:6379/0", wait_replicas=True)
    with pytest.raises(ValueError, match="wait_replicas"):
        RedisSessionRepository("redis://127.0.0.1:6379/0", wait_replicas=-1)
    with pytest.raises(ValueError, match="wait_timeout"):
        RedisSessionRepository("redis://127.0.0.1:6379/0", wait_replicas=1, wait_timeout=0)


async def test_waiting_on_a_single_node_without_replicas_fails_transiently() -> None:
    url = require_server("redis")
    prefix = "session-repo-cluster-test-wait:"
    async with RedisSessionRepository(
        url, key_prefix=prefix, cleanup_interval=0, wait_replicas=1, wait_timeout=0.05
    ) as repo:
        try:
            with pytest.raises(StorageError, match="0 of 1 replicas") as caught:
                await repo.claim("s1", "m1", ttl=60)
            assert caught.value.transient
            assert await repo.lookup("s1") == "m1"
        finally:
            assert await repo.delete_owner("m1") == 1


@pytest.mark.server
async def test_the_config_turns_replica_waits_on() -> None:
    config = SessionStoreConfig(
        url=_url(),
        fallback="none",
        cleanup_interval=0,
        redis_wait_replicas=5,
        redis_wait_timeout=0.1,
    )
    async with create_session_repository(config) as repo:
        with pytest.raises(StorageError, match="replicas") as caught:  # the cluster has 1 each
            await repo.upsert("waits", "machine-1")
        assert caught.value.transient
