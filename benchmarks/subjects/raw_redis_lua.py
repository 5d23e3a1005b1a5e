"""Baseline: raw redis-py running the library's own Lua scripts, one per write.

The same statements as ``RedisSessionRepository``: its ``upsert`` and ``claim``
scripts (``session_repo.backends.redis.scripts.load``) with the same KEYS and
ARGV as its ``RedisStorage`` (``<prefix>s:<digest hex>``, ``<prefix>e``, and
``<prefix>o:<owner>`` of the owner written), and lookup a ``GET``. No batching, no
checks, no counters: what the library adds is what the ratio shows. ``redis-py``
(plain ``GET``/``SET``) is what a user without an owner index writes.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from benchmarks.redis_db import in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.lua import load
from benchmarks.subjects.sql import digest, now_ms
from benchmarks.workload import TTL_S

__all__ = ["RawRedisLua"]

TTL_MS = TTL_S * 1000


class RawRedisLua:
    name = "redis-py-lua"
    description = "raw redis.asyncio with the library's Lua scripts and key layout; GET"
    server: str | None = "redis"

    def __init__(self) -> None:
        self._client: Any = None
        self._prefix = ""
        self._upsert: Any = None
        self._claim: Any = None

    async def open(self, setup: Setup) -> None:
        store = setup.need_redis()
        client = self._client = aioredis.Redis.from_url(store.url, decode_responses=True)
        self._prefix = store.prefix(self.name)
        self._upsert = client.register_script(load("upsert"))
        self._claim = client.register_script(load("claim"))

        async def preload() -> None:  # through the upsert script: the owner indexes too
            for batch in in_batches(setup.dataset.sessions, 10_000):
                pipe = client.pipeline(transaction=False)
                for sid, alloc in batch:
                    hexed = digest(sid).hex()
                    args = [hexed, alloc, now_ms() + TTL_MS, TTL_MS]
                    await self._upsert(keys=self._keys(hexed, alloc), args=args, client=pipe)
                await pipe.execute()

        await store.preload_once(self.name, preload)

    def _keys(self, hexed: str, owner: str) -> list[str]:
        p = self._prefix
        return [f"{p}s:{hexed}", f"{p}e", f"{p}o:{owner}"]

    def _c(self) -> Any:
        assert self._client is not None, "open() first"
        return self._client

    async def lookup(self, session_id: str) -> str | None:
        owner: str | None = await self._c().get(f"{self._prefix}s:{digest(session_id).hex()}")
        return owner

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        hexed = digest(session_id).hex()
        args = [hexed, alloc_id, now_ms() + TTL_MS, TTL_MS]
        await self._upsert(keys=self._keys(hexed, alloc_id), args=args)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        hexed = digest(session_id).hex()
        args = [hexed, alloc_id, now_ms() + TTL_MS, TTL_MS, ""]
        return str(await self._claim(keys=self._keys(hexed, alloc_id), args=args))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
