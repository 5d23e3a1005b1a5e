"""Baseline: raw redis-py ``RedisCluster`` running the library's own Lua scripts, one per call.

The same work as ``RedisSessionRepository`` on a cluster: its current ``upsert``,
``acquire`` (claim) and ``lookup_one`` scripts with the same KEYS and ARGV as its
cluster layout (``<prefix>{<bucket>}s:<hex>``, ``..e``, ``..g``, ``..M``, the bucket
from the digest's first byte), each a raw ``EVALSHA``. No batching, no checks, no
counters. (Until 2026-12-04: the pre-lease scripts and a ``GET``.) The cluster is
``.ci/redis-cluster``'s (``SESSION_REPO_BENCH_REDIS_CLUSTER_URL``); each subject keeps
its keys under a prefix of its own and removes them when it closes.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.redis_db import PREFIX, in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest, now_ms
from benchmarks.workload import TTL_MS
from session_repo.backends.redis.clients import family_of_url
from session_repo.backends.redis.cluster import BUCKETS, parse_cluster_url
from session_repo.backends.redis.scripts import load

__all__ = ["CLUSTER_URL", "RawRedisCluster", "cluster_client", "cluster_prefix", "remove_keys"]

CLUSTER_URL = os.environ.get(
    "SESSION_REPO_BENCH_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7000/"
)


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
    description = "raw redis.asyncio RedisCluster with the library's Lua scripts and cluster layout"
    server: str | None = None  # the cluster is checked in open()

    def __init__(self) -> None:
        self._client: Any = None
        self._prefix = cluster_prefix(self.name)
        self._tags = [f"{self._prefix}{{{bucket}}}" for bucket in range(BUCKETS)]
        self._sha: dict[str, str] = {}

    async def open(self, setup: Setup) -> None:
        client = self._client = await cluster_client()
        await remove_keys(client, self._prefix)
        for name in ("upsert", "acquire", "lookup_one"):
            self._sha[name] = await client.script_load(load(name))  # every master
        for batch in in_batches(setup.dataset.sessions, 10_000):
            pipe = client.pipeline()
            for sid, alloc in batch:
                pipe.execute_command("EVALSHA", self._sha["upsert"], *self._write(sid, alloc))
            await pipe.execute()

    def _write(self, session_id: str, owner: str, *more: str) -> list[Any]:
        """A write script's key count, KEYS and ARGV, as the cluster storage sends them."""
        key = digest(session_id)
        tag, hexed = self._tags[key[0] % BUCKETS], key.hex()
        keys = [f"{tag}s:{hexed}", f"{tag}e", f"{tag}g", f"{tag}M"]
        return [len(keys), *keys, tag, hexed, owner, now_ms() + TTL_MS, TTL_MS, *more]

    def _c(self) -> Any:
        assert self._client is not None, "open() first"
        return self._client

    async def lookup(self, session_id: str) -> str | None:
        key = digest(session_id)
        tag = self._tags[key[0] % BUCKETS]
        value = await self._c().execute_command(
            "EVALSHA", self._sha["lookup_one"], 1, f"{tag}s:{key.hex()}", tag
        )
        return None if value is None else str(value).partition(" ")[0]

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._c().execute_command(
            "EVALSHA", self._sha["upsert"], *self._write(session_id, alloc_id)
        )

    async def claim(self, session_id: str, alloc_id: str) -> str:
        args = self._write(session_id, alloc_id, "")
        owner, _, _ = await self._c().execute_command("EVALSHA", self._sha["acquire"], *args)
        return str(owner)

    async def close(self) -> None:
        if self._client is not None:
            await remove_keys(self._client, self._prefix)
            await self._client.aclose()
            self._client = None
