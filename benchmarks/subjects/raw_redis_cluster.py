"""Baseline: raw redis-py ``RedisCluster`` running the library's own Lua scripts, one per call.

The same work as ``RedisSessionRepository`` on a cluster: its ``upsert`` and ``claim``
scripts with the same KEYS and ARGV as its cluster layout (``<prefix>{<bucket>}s:<hex>``,
``<prefix>{<bucket>}e``, ``<prefix>{<bucket>}o:<owner>``, the bucket from the digest's
first byte), and lookup a ``GET``. No batching, no checks, no counters. The cluster is
``.ci/redis-cluster``'s (``SESSION_REPO_BENCH_REDIS_CLUSTER_URL``); each subject keeps
its keys under a prefix of its own and removes them when it closes.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.redis_db import PREFIX, in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.lua import load
from benchmarks.subjects.sql import digest, now_ms
from benchmarks.workload import TTL_S
from session_repo.backends.redis.clients import family_of_url
from session_repo.backends.redis.cluster import BUCKETS, parse_cluster_url

__all__ = ["CLUSTER_URL", "RawRedisCluster", "cluster_client", "cluster_prefix", "remove_keys"]

CLUSTER_URL = os.environ.get(
    "SESSION_REPO_BENCH_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7000/"
)
TTL_MS = TTL_S * 1000


def cluster_prefix(subject: str) -> str:
    return f"{PREFIX}{subject}:"


async def cluster_client(max_connections: int = 100) -> Any:
    """A connected ``RedisCluster`` on the benchmark's cluster.

    Raises:
        RuntimeError: the cluster does not answer (start it: ``.ci/redis-cluster start``).
    """
    client = parse_cluster_url(CLUSTER_URL).client(
        family_of_url(CLUSTER_URL), max_connections=max_connections
    )
    try:
        await client.initialize()
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise RuntimeError(
            f"Redis Cluster not reachable ({type(exc).__name__}: {exc}): .ci/redis-cluster start"
        ) from None
    return client


async def remove_keys(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix``, on every master."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=10_000)]
    for batch in in_batches(keys, 1000):
        await client.delete(*batch)


class RawRedisCluster:
    name = "redis-py-cluster"
    description = (
        "raw redis.asyncio RedisCluster with the library's Lua scripts and cluster layout; GET"
    )
    server: str | None = None  # the cluster is checked in open()

    def __init__(self) -> None:
        self._client: Any = None
        self._prefix = cluster_prefix(self.name)
        self._tags = [f"{self._prefix}{{{bucket}}}" for bucket in range(BUCKETS)]
        self._upsert: Any = None
        self._claim: Any = None

    async def open(self, setup: Setup) -> None:
        client = self._client = await cluster_client()
        await remove_keys(client, self._prefix)
        self._upsert = client.register_script(load("upsert"))
        self._claim = client.register_script(load("claim"))
        await client.script_load(load("upsert"))  # every master
        await client.script_load(load("claim"))
        for batch in in_batches(setup.dataset.sessions, 10_000):
            pipe = client.pipeline()
            for sid, alloc in batch:
                hexed, bucket = self._where(sid)
                args = [hexed, alloc, now_ms() + TTL_MS, TTL_MS]
                keys = self._keys(hexed, bucket, alloc)
                pipe.execute_command("EVALSHA", self._upsert.sha, len(keys), *keys, *args)
            await pipe.execute()

    def _where(self, session_id: str) -> tuple[str, int]:
        key = digest(session_id)
        return key.hex(), key[0] % BUCKETS

    def _keys(self, hexed: str, bucket: int, owner: str) -> list[str]:
        tag = self._tags[bucket]
        return [f"{tag}s:{hexed}", f"{tag}e", f"{tag}o:{owner}"]

    def _c(self) -> Any:
        assert self._client is not None, "open() first"
        return self._client

    async def lookup(self, session_id: str) -> str | None:
        hexed, bucket = self._where(session_id)
        owner: str | None = await self._c().get(f"{self._tags[bucket]}s:{hexed}")
        return owner

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        hexed, bucket = self._where(session_id)
        args = [hexed, alloc_id, now_ms() + TTL_MS, TTL_MS]
        await self._upsert(keys=self._keys(hexed, bucket, alloc_id), args=args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        hexed, bucket = self._where(session_id)
        args = [hexed, alloc_id, now_ms() + TTL_MS, TTL_MS, ""]
        return str(await self._claim(keys=self._keys(hexed, bucket, alloc_id), args=args))

    async def close(self) -> None:
        if self._client is not None:
            await remove_keys(self._client, self._prefix)
            await self._client.aclose()
            self._client = None
