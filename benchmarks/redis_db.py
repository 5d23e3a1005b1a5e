"""The Redis database the Redis subjects share: the benchmark's own (db 15 by default).

The run flushes that database (and only it) when it starts and when it ends.
Each subject keeps its keys under a prefix of its own and is preloaded once per
run: the library through its own ``upsert`` (its layout is its business), the
raw clients with a pipeline. Repetitions then rebind the same keys (upsert) or
add fresh ones (claim); a store's cost does not depend on how many keys it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["DEFAULT_URL", "PREFIX", "RedisTemplate", "in_batches", "run_all"]

DEFAULT_URL = "redis://127.0.0.1:6379/15"
PREFIX = "session-repo-bench:"
PRELOAD_TASKS = 64


def in_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class RedisTemplate:
    """Flushes the benchmark's database, and preloads each subject's keys once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._flushed = False

    @staticmethod
    def prefix(subject: str) -> str:
        return f"{PREFIX}{subject}:"

    async def unreachable(self) -> str | None:
        """Why the server cannot be used, or None when it answers."""
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=3)
        try:
            await client.ping()
        except (OSError, RedisError) as exc:
            return f"Redis not reachable ({type(exc).__name__}: {exc})"
        finally:
            await client.aclose()
        return None

    async def server_version(self) -> str:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=3)
        try:
            info = await client.info("server")
        finally:
            await client.aclose()
        return f"Redis {info.get('redis_version', '?')}"

    async def flush(self) -> None:
        """Empty the benchmark's database (FLUSHDB: this database only)."""
        client = aioredis.Redis.from_url(self.url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    async def preload_once(self, subject: str, load: Callable[[], Awaitable[None]]) -> None:
        """Run ``load`` the first time ``subject`` opens in this run."""
        async with self._lock:
            if not self._flushed:
                await self.flush()
                self._flushed = True
            if subject not in self._loaded:
                await load()
                self._loaded.add(subject)

    async def finish(self) -> None:
        """Leave the database empty at the end of a run."""
        if self._flushed:
            await self.flush()


async def run_all(action: Callable[..., Awaitable[Any]], items: Iterable[tuple[Any, ...]]) -> None:
    """``action(*item)`` for every item, from ``PRELOAD_TASKS`` tasks (preloading only)."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await action(*item)

    await asyncio.gather(*(worker() for _ in range(PRELOAD_TASKS)))
