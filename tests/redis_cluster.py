"""The Redis backend on a Redis Cluster, as the shared suite's ``redis-cluster`` backend.

The cluster is ``.ci/redis-cluster``'s (127.0.0.1:7000-7005); the suite's reset and
read-back go through a ``RedisCluster`` client of their own, across every node.
"""

from __future__ import annotations

from typing import Any

from session_repo import RedisSessionRepository, SessionRepository
from session_repo.backends.redis.clients import family_of_url
from session_repo.backends.redis.cluster import parse_cluster_url
from tests.redis_keys import bindings_under, delete_under
from tests.servers import server_url

__all__ = ["CLUSTER_PREFIX", "clear_cluster", "cluster_client", "cluster_rows"]

CLUSTER_PREFIX = "session-repo-suite:"


def cluster_client(url: str | None = None) -> Any:
    """A ``RedisCluster`` on the test cluster, behind the repository's back."""
    url = url or server_url("redis-cluster")
    return parse_cluster_url(url).client(family_of_url(url), max_connections=16)


async def clear_cluster(location: str | None) -> None:
    """Delete every key under the suite's prefix, on every master."""
    await delete_under(cluster_client(location), CLUSTER_PREFIX)


async def cluster_rows(repo: SessionRepository) -> list[tuple[bytes, str]]:
    """Every binding the cluster keeps under the suite's prefix: (digest, owner)."""
    assert isinstance(repo, RedisSessionRepository)
    return await bindings_under(cluster_client(), f"{CLUSTER_PREFIX}{{*}}s:*")
