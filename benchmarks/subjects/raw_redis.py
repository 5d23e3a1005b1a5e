"""Baseline: raw redis-py (``redis.asyncio``), one command per operation.

lookup is ``GET``, upsert ``SET .. PX``, claim ``SET .. NX PX`` (plus a ``GET``
of the owner when the key was taken, which this workload never does). Keys are
the SHA-256 digest in hex under the subject's prefix, as the library keys them.
The client is ``Redis.from_url`` with its default pool, as a user writes it.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from benchmarks.redis_db import in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest
from benchmarks.workload import TTL_MS

__all__ = ["RawRedis"]


class RawRedis:
    name = "redis-py"
    description = "raw redis.asyncio: GET; SET PX; SET NX PX (then GET if taken)"
    server: str | None = "redis"

    def __init__(self) -> None:
        self._client: Any = None
        self._prefix = ""

    async def open(self, setup: Setup) -> None:
        store = setup.need_redis()
        client = self._client = aioredis.Redis.from_url(store.url, decode_responses=True)
        prefix = self._prefix = store.prefix(self.name)

        async def preload() -> None:
            for batch in in_batches(setup.dataset.sessions, 10_000):
                pipe = client.pipeline(transaction=False)
                for sid, alloc in batch:
                    pipe.set(prefix + digest(sid).hex(), alloc, px=TTL_MS)
                await pipe.execute()

        await store.preload_once(self.name, preload)

    def _c(self) -> Any:
        assert self._client is not None, "open() first"
        return self._client

    async def lookup(self, session_id: str) -> str | None:
        owner: str | None = await self._c().get(self._prefix + digest(session_id).hex())
        return owner

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._c().set(self._prefix + digest(session_id).hex(), alloc_id, px=TTL_MS)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        client = self._c()
        key = self._prefix + digest(session_id).hex()
        while True:
            if await client.set(key, alloc_id, px=TTL_MS, nx=True):
                return alloc_id
            owner: str | None = await client.get(key)
            if owner is not None:
                return owner  # else it expired in between: try again

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
