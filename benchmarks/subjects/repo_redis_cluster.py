"""The library on a Redis Cluster: ``RedisSessionRepository('redis+cluster://...')``, as a
user constructs it, under its own prefix (``.ci/redis-cluster``'s cluster)."""

from __future__ import annotations

from benchmarks.redis_db import run_all
from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from benchmarks.subjects.raw_redis_cluster import (
    CLUSTER_URL,
    cluster_client,
    cluster_prefix,
    remove_keys,
)
from benchmarks.workload import TTL_S
from session_repo import RedisSessionRepository, SessionRepository

__all__ = ["RepoRedisCluster"]


class RepoRedisCluster(LibrarySubject):
    name = "repo-redis-cluster"
    description = "RedisSessionRepository('redis+cluster://...'), library defaults, own key prefix"
    server: str | None = None  # the cluster is checked in build()

    async def build(self, setup: Setup) -> SessionRepository:
        client = await cluster_client()  # says why when the cluster is not there
        try:
            await remove_keys(client, cluster_prefix(self.name))
        finally:
            await client.aclose()
        return RedisSessionRepository(CLUSTER_URL, key_prefix=cluster_prefix(self.name))

    async def preload(self, repo: SessionRepository, setup: Setup) -> None:
        rows = ((sid, alloc, TTL_S) for sid, alloc in setup.dataset.sessions)
        await run_all(repo.upsert, rows)

    async def remove(self) -> None:
        client = await cluster_client()
        try:
            await remove_keys(client, cluster_prefix(self.name))
        finally:
            await client.aclose()
