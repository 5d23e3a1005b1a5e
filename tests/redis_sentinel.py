"""The Redis backend through Sentinel, as the shared suite's ``redis-sentinel`` backend.

The repository runs on a ``sentinel_client()`` it closes itself; the suite's reset
and read-back go to whichever node the sentinels name master at the time.
"""

from __future__ import annotations

from typing import Any

from session_repo import RedisSessionRepository, SessionRepository
from session_repo.backends.redis.clients import ClientFamily, families
from session_repo.backends.redis.sentinel import sentinel_client
from session_repo.clock import Clock
from tests.redis_keys import bindings_under, delete_under
from tests.servers import server_url

__all__ = [
    "SENTINEL_PREFIX",
    "SentinelRepository",
    "build_sentinel",
    "clear_sentinel",
    "master_client",
    "redis_family",
    "sentinel_rows",
]

SENTINEL_PREFIX = "session-repo-suite:"


def redis_family() -> ClientFamily:
    """redis-py's family (the ``[redis]`` extra is part of ``[test]``)."""
    return next(family for family in families() if family.name == "redis")


def master_client(url: str, **options: Any) -> Any:
    """A client of the current master, for reading behind a repository's back."""
    options.setdefault("decode_responses", True)
    options.setdefault("socket_timeout", 5)
    options.setdefault("socket_connect_timeout", 5)
    return sentinel_client(url, redis_family(), **options)


class SentinelRepository(RedisSessionRepository):
    """The repository on a sentinel client of its own, closed with it."""

    def __init__(self, url: str, **options: Any) -> None:
        slots = options.get("max_connections", 50)
        self.url = url
        self._owned = sentinel_client(
            url,
            redis_family(),
            max_connections=slots + 2,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=10,
            health_check_interval=30,
        )
        super().__init__(self._owned, **options)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._owned.aclose()


def build_sentinel(location: str | None, clock: Clock, kwargs: dict[str, Any]) -> SessionRepository:
    assert location is not None
    # The URL itself, as a user gives it (SentinelRepository: a client built here).
    return RedisSessionRepository(location, clock=clock, key_prefix=SENTINEL_PREFIX, **kwargs)


async def clear_sentinel(location: str | None) -> None:
    assert location is not None
    await delete_under(master_client(location), SENTINEL_PREFIX)


async def sentinel_rows(repo: SessionRepository) -> list[tuple[bytes, str]]:
    assert isinstance(repo, RedisSessionRepository)
    client = master_client(server_url("redis-sentinel"))
    return await bindings_under(client, f"{SENTINEL_PREFIX}s:*")
