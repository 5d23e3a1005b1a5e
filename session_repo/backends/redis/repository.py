"""``RedisSessionRepository``: bindings as Redis (or Valkey) keys with native expiry.

Layout under ``key_prefix``: ``s:<digest hex>`` holds the owner, the binding's
generation, its owner's epoch and its expiry, with a ``PX`` ttl; ``o:<alloc id>``
is the owner's index, a sorted set of digests scored by expiry (ms), used by
``delete_owner``, ``release`` and cleanup; ``e`` scores every binding's digest by
its expiry, so the gauges are a few ``ZCOUNT`` (O(log n)), never a scan; ``g`` is
the generation counter; ``M`` marks the owners that heartbeat (alloc id -> epoch)
and ``h:<alloc id>`` is an owner's heartbeat, with a ``PX`` ttl. Every change to
a binding and its indexes happens in one Lua script, so they cannot drift; an
owner index expires itself after its longest binding, and ``cleanup`` drops the
entries whose binding has gone or moved.

Every key starts with ``key_prefix``: a prefix with a hash tag (``"{sessions}:"``)
puts a tenant's keys in one Redis Cluster slot.

Redis decides expiry, of bindings and heartbeats alike, by its own clock (a fake
clock expires neither); the injected clock scores the indexes and gives the
``expires_at`` that leases and ``owners`` report. A lapse stays final after the
heartbeat key has expired: the owner's mark says it heartbeats
(``session_repo.backends.redis.owners``). The lookups of one event-loop tick go to
Redis as one script, the writes as one pipeline. ``valkey://`` and ``valkeys://``
URLs (or a ``valkey.asyncio.Valkey`` client) use valkey-py, with the same scripts
and semantics.

``redis+cluster://host:port[,host:port...]/`` (``rediss+cluster://``,
``valkey+cluster://``), or a ``RedisCluster`` client, is a Redis Cluster: the
same scripts over a layout whose keys spread over the cluster's slots
(``session_repo.backends.redis.cluster``); a plain URL or client keeps the
layout above.
"""

from __future__ import annotations

import contextlib
from typing import Any

from session_repo._core.front import StoreFront
from session_repo._core.inputs import DEFAULT_TTL, Ttl, positive_int, positive_seconds
from session_repo.backends.redis.clients import (
    family_of_client,
    family_of_url,
    is_cluster_client,
    is_cluster_url,
)
from session_repo.backends.redis.cluster import ClusterAddress, ClusterStorage, parse_cluster_url
from session_repo.backends.redis.errors import is_transient
from session_repo.backends.redis.sentinel import (
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_client,
)
from session_repo.backends.redis.storage import RedisStorage
from session_repo.clock import Clock
from session_repo.errors import InvalidInput

__all__ = ["RedisSessionRepository"]


class RedisSessionRepository(StoreFront):
    """Bindings in Redis (``redis://`` or ``rediss://``), or a ``redis.asyncio.Redis`` client.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL (redis-py), a
            ``valkey://`` or ``valkeys://`` URL (valkey-py), a Redis Cluster's
            ``redis+cluster://host:port[,host:port...]/`` (``rediss+cluster://``,
            ``valkey+cluster://``), or a ``redis.asyncio.Redis``, ``RedisCluster``,
            ``valkey.asyncio.Valkey`` or ``ValkeyCluster`` client you built (then
            closing the repository leaves it open).
        clock: scores the indexes; Redis expires bindings by its own clock.
        default_ttl: the ttl (seconds or ``timedelta``) used when a call passes ``None``.
        key_prefix: starts every key, so services can share one Redis; a hash tag
            (``"{sessions}:"``) keeps them all in one Redis Cluster slot (one node).
        cleanup_interval: seconds between background cleanups; 0 turns them off.
        cleanup_batch: the most index entries one cleanup batch handles.
        max_connections: the most batches of commands in flight at once (a burst
            waits for a turn); the connection pool built from a URL has two more,
            for a lone lookup and a lone write (on a cluster: per node).
        wait_replicas: with n > 0, every write (upsert, claim, acquire, touch,
            delete, heartbeat, release) waits until n replicas have it (Redis's
            ``WAIT``, after the writes on their connection); if fewer did within
            ``wait_timeout``, the write stays on the master and the call raises a
            transient ``StorageError``. Narrows what a failover can lose; Redis's
            replication stays asynchronous.
        wait_timeout: seconds a write waits for its replicas.

    Raises:
        ConfigError: the ``[redis]`` (``[valkey]``) extra is not installed, or the
            URL is not a Redis (Valkey) URL, or a cluster URL is malformed.
        TypeError: an argument has the wrong type.
        InvalidInput: an argument is out of range.
    """

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        clock: Clock | None = None,
        default_ttl: Ttl = DEFAULT_TTL,
        key_prefix: str = "session-repo:",
        cleanup_interval: float = 60,
        cleanup_batch: int = 5000,
        max_connections: int = 50,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if isinstance(url_or_client, str):
            family = family_of_url(url_or_client)
            if is_sentinel_url(url_or_client):
                parse_sentinel_url(url_or_client)  # a bad URL fails here, not at first use
            self._url: str | None = url_or_client
            self._client: Any = None
            self._cluster: ClusterAddress | None = (
                parse_cluster_url(url_or_client) if is_cluster_url(url_or_client) else None
            )
        elif (found := family_of_client(url_or_client)) is not None:
            family = found
            self._url = None
            self._client = url_or_client
            self._cluster = None
        else:
            raise TypeError(
                "url_or_client must be a Redis or Valkey URL or client, "
                f"not {type(url_or_client).__name__}"
            )
        self._family = family
        super().__init__(
            connect=self._connect,
            backend=family.name,
            clock=clock,
            default_ttl=default_ttl,
            cleanup_interval=cleanup_interval,
            cleanup_batch=cleanup_batch,
            classify=is_transient,
        )
        if not isinstance(key_prefix, str):
            raise TypeError("key_prefix must be a str")
        self._prefix = key_prefix
        self._max_connections = positive_int("max_connections", max_connections)
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int):
            raise TypeError("wait_replicas must be an int")
        if wait_replicas < 0:
            raise InvalidInput("wait_replicas must be >= 0 (0 waits for none)")
        timeout_ms = max(int(positive_seconds("wait_timeout", wait_timeout) * 1000), 1)
        self._wait = (wait_replicas, timeout_ms if wait_replicas else 0)

    def __repr__(self) -> str:
        return f"RedisSessionRepository(prefix={self._prefix!r})"

    async def _connect(self, resources: contextlib.AsyncExitStack) -> RedisStorage:
        client = self._client
        if client is None and self._cluster is not None:
            client = self._cluster.client(self._family, max_connections=self._max_connections + 2)
            resources.push_async_callback(client.aclose)
        elif client is None and self._url is not None and is_sentinel_url(self._url):
            client = sentinel_client(
                self._url,
                self._family,
                max_connections=self._max_connections + 2,
                decode_responses=True,
                socket_timeout=10,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
            resources.push_async_callback(client.aclose)
        elif client is None:
            assert self._url is not None
            # Not a blocking pool (its lock and timer cost every command): the storage
            # lets at most max_connections batches run at once, a burst waits its turn,
            # and a lone lookup and a lone write take the two connections more.
            pool = self._family.client.ConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections + 2,
                decode_responses=True,
                socket_timeout=10,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
            client = self._family.client_class()(connection_pool=pool)
            resources.push_async_callback(client.aclose)
        storage: RedisStorage
        errors = self._family.errors
        if is_cluster_client(client):
            # A pipelined script refused by a cluster in change did not run: sent again
            # alone, it goes through the client's redirections and retries.
            again = (
                errors.NoScriptError,
                errors.ClusterDownError,
                errors.TryAgainError,
                errors.AskError,
                errors.ReadOnlyError,
            )
            storage = ClusterStorage(
                client,
                self._prefix,
                batch=self.cleanup_batch,
                slots=self._max_connections,
                no_script=again,
                wait=self._wait,
            )
        else:
            storage = RedisStorage(
                client,
                self._prefix,
                batch=self.cleanup_batch,
                slots=self._max_connections,
                no_script=errors.NoScriptError,
                wait=self._wait,
            )
        await storage.ping()
        return storage
