"""Baseline: raw redis-py running the library's own Lua scripts, one call per operation.

The same statements as ``RedisSessionRepository``: its current ``upsert``,
``acquire`` (claim) and ``lookup_one`` scripts (``session_repo.backends.redis.scripts``)
with the same KEYS and ARGV as its ``RedisStorage`` (the binding ``<prefix>s:<digest
hex>``, the expiry set ``<prefix>e``, the generation counter ``<prefix>g``, the owner
marks ``<prefix>M``), each sent as a raw ``EVALSHA`` (as the library sends a lone
call; redis-py's script object costs ~10 us more). No batching, no checks, no
counters: what the library adds is what the ratio shows. Until 2026-12-04 this
baseline ran the pre-lease scripts and a plain ``GET`` (less work than the library
does since owner liveness); ``redis-py`` (plain ``GET``/``SET``) is still what a user
without an owner index or liveness writes.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from benchmarks.redis_db import in_batches
from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest, now_ms
from benchmarks.workload import TTL_MS
from session_repo.backends.redis.scripts import load

__all__ = ["RawRedisLua"]


class RawRedisLua:
    name = "redis-py-lua"
    description = "raw redis.asyncio running the library's Lua scripts and key layout"
    server: str | None = "redis"

    def __init__(self) -> None:
        self._client: Any = None
        self._prefix = ""
        self._sha: dict[str, str] = {}

    async def open(self, setup: Setup) -> None:
        store = setup.need_redis()
        client = self._client = aioredis.Redis.from_url(store.url, decode_responses=True)
        self._prefix = store.prefix(self.name)
        for name in ("upsert", "acquire", "lookup_one"):
            self._sha[name] = await client.script_load(load(name))

        async def preload() -> None:  # through the upsert script: indexes and generations too
            for batch in in_batches(setup.dataset.sessions, 10_000):
                pipe = client.pipeline(transaction=False)
                for sid, alloc in batch:
                    pipe.execute_command("EVALSHA", self._sha["upsert"], *self._write(sid, alloc))
                await pipe.execute()

        await store.preload_once(self.name, preload)

    def _write(self, session_id: str, owner: str, *more: str) -> list[Any]:
        """A write script's key count, KEYS and ARGV, as ``RedisStorage`` sends them."""
        p, hexed = self._prefix, digest(session_id).hex()
        expires_at = now_ms() + TTL_MS
        keys = [f"{p}s:{hexed}", f"{p}e", f"{p}g", f"{p}M"]
        return [len(keys), *keys, p, hexed, owner, expires_at, TTL_MS, *more]

    def _c(self) -> Any:
        assert self._client is not None, "open() first"
        return self._client

    async def lookup(self, session_id: str) -> str | None:
        key = f"{self._prefix}s:{digest(session_id).hex()}"
        value = await self._c().execute_command(
            "EVALSHA", self._sha["lookup_one"], 1, key, self._prefix
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
            await self._client.aclose()
            self._client = None
