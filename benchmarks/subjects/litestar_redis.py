"""Peer: Litestar's ``RedisStore`` (``litestar.stores.redis``), a general key-value store.

``get`` and ``set(.., expires_in=..)`` keyed by the digest in hex. It has no
atomic set-if-absent, so claim is ``get`` then ``set``: what a user of this
store would write, and not safe between instances (the library's is).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from litestar.stores.redis import RedisStore

from benchmarks.redis_db import in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest
from benchmarks.workload import TTL_S

__all__ = ["LitestarRedis"]


class LitestarRedis:
    name = "litestar-redis"
    description = "litestar RedisStore: get; set(expires_in); claim = get then set (not atomic)"
    server: str | None = "redis"

    def __init__(self) -> None:
        self._client: Any = None
        self._store: RedisStore | None = None

    async def open(self, setup: Setup) -> None:
        redis_db = setup.need_redis()
        namespace = redis_db.prefix(self.name).rstrip(":")
        # As RedisStore.with_client builds it: a default pool, bytes in and out.
        client = self._client = aioredis.Redis.from_url(redis_db.url)
        self._store = RedisStore(client, namespace=namespace)

        async def preload() -> None:  # the store's own layout: "<namespace>:<key>", EX ttl
            for batch in in_batches(setup.dataset.sessions, 10_000):
                pipe = client.pipeline(transaction=False)
                for sid, alloc in batch:
                    pipe.set(f"{namespace}:{digest(sid).hex()}", alloc, ex=TTL_S)
                await pipe.execute()

        await redis_db.preload_once(self.name, preload)

    def _s(self) -> RedisStore:
        assert self._store is not None, "open() first"
        return self._store

    async def lookup(self, session_id: str) -> str | None:
        value = await self._s().get(digest(session_id).hex())
        return None if value is None else value.decode()

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._s().set(digest(session_id).hex(), alloc_id, expires_in=TTL_S)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        store = self._s()
        key = digest(session_id).hex()
        value = await store.get(key)
        if value is not None:
            return value.decode()
        await store.set(key, alloc_id, expires_in=TTL_S)
        return alloc_id

    async def close(self) -> None:
        self._store = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
