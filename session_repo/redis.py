"""``RedisSessionRepository``: bindings as Redis keys with native expiry.

Layout under ``key_prefix``: ``s:<digest hex>`` holds the owner with a ``PX``
ttl; ``o:<alloc id>`` is the owner's index, a sorted set of digests scored by
expiry (ms), used by ``delete_owner``. Every change to a binding and its index
happens in one Lua script, so they cannot drift; an index expires itself after
its longest binding, and ``cleanup`` drops entries whose binding has gone.

Redis decides expiry by its own clock (a fake clock does not expire bindings);
the injected clock only scores the index. The lookups of one event-loop tick go
to Redis as one ``MGET``.
"""

from __future__ import annotations

from typing import Any

from session_repo._base import BackendBase
from session_repo._batching import TickBatcher
from session_repo._inputs import Ttl
from session_repo._translate import storage_errors
from session_repo.clock import Clock
from session_repo.errors import ConfigError, InvalidInput

__all__ = ["RedisSessionRepository"]

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]

# Shared Lua: KEYS[1] = binding key; ARGV[1] = prefix, ARGV[2] = digest hex.
_INDEX = """
local function unindex(owner)
  redis.call('ZREM', ARGV[1] .. 'o:' .. owner, ARGV[2])
end
local function index(owner, expires_at, ttl)
  local idx = ARGV[1] .. 'o:' .. owner
  redis.call('ZADD', idx, expires_at, ARGV[2])
  local left = redis.call('PTTL', idx)
  if left == -1 or left < ttl then redis.call('PEXPIRE', idx, ttl) end
end
local function bind(current, owner, expires_at, ttl)
  if current and current ~= owner then unindex(current) end
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
  index(owner, expires_at, ttl)
end
"""

# ARGV[3] = owner, ARGV[4] = expires_at, ARGV[5] = ttl ms.
_UPSERT = (
    _INDEX
    + """
bind(redis.call('GET', KEYS[1]), ARGV[3], ARGV[4], tonumber(ARGV[5]))
return 1
"""
)

# ARGV[3..5] as upsert, ARGV[6] = replacing ("" for none). Returns the owner.
_CLAIM = (
    _INDEX
    + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[6] then return current end
bind(current, ARGV[3], ARGV[4], tonumber(ARGV[5]))
return ARGV[3]
"""
)

# ARGV[3] = expires_at, ARGV[4] = ttl ms.
_TOUCH = (
    _INDEX
    + """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
index(current, ARGV[3], tonumber(ARGV[4]))
return 1
"""
)

_DELETE = (
    _INDEX
    + """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
redis.call('DEL', KEYS[1])
unindex(current)
return 1
"""
)

# KEYS[1] = owner index; ARGV[1] = prefix, ARGV[2] = owner, ARGV[3..] = digests.
# Removes the digests from the index, and their bindings if still this owner's.
_DROP_OWNED = """
local removed = 0
for i = 3, #ARGV do
  local key = ARGV[1] .. 's:' .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then
    redis.call('DEL', key)
    removed = removed + 1
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return removed
"""

# KEYS[1] = owner index; ARGV[1] = prefix, ARGV[2] = owner, ARGV[3..] = digests
# whose score says expired. Drops those whose binding is gone or rebound.
_PRUNE = """
local pruned = 0
for i = 3, #ARGV do
  if redis.call('GET', ARGV[1] .. 's:' .. ARGV[i]) ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
"""


class RedisSessionRepository(BackendBase):
    """Bindings in Redis (``redis://`` or ``rediss://``), or a ``redis.asyncio.Redis`` client."""

    backend = "redis"

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        clock: Clock | None = None,
        default_ttl: Ttl = 600,
        key_prefix: str = "session-repo:",
        cleanup_interval: float = 60,
        cleanup_batch: int = 5000,
        max_connections: int = 50,
    ) -> None:
        super().__init__(
            clock=clock,
            default_ttl=default_ttl,
            cleanup_interval=cleanup_interval,
            cleanup_batch=cleanup_batch,
        )
        if aioredis is None:
            raise ConfigError("the Redis backend needs: pip install 'session-repo[redis]'")
        if not isinstance(key_prefix, str):
            raise TypeError("key_prefix must be a str")
        self._prefix = key_prefix
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an int")
        if max_connections < 1:
            raise InvalidInput("max_connections must be >= 1")
        self._max_connections = max_connections
        if isinstance(url_or_client, str):
            if not url_or_client.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"not a Redis URL: {url_or_client.split('@')[-1]!r}")
            self._url: str | None = url_or_client
            self._client: Any = None
            self._owns_client = True
        elif isinstance(url_or_client, aioredis.Redis):
            self._url = None
            self._client = url_or_client
            self._owns_client = False
        else:
            raise TypeError(
                f"url_or_client must be a Redis URL or client, not {type(url_or_client).__name__}"
            )

    def __repr__(self) -> str:
        return f"RedisSessionRepository(prefix={self._prefix!r})"

    def _key(self, key: bytes) -> str:
        return f"{self._prefix}s:{key.hex()}"

    def _index(self, alloc_id: str) -> str:
        return f"{self._prefix}o:{alloc_id}"

    async def _do_open(self) -> None:
        if self._client is None:
            assert self._url is not None
            # A blocking pool: a burst waits for a connection instead of failing.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=10,
                decode_responses=True,
                socket_timeout=10,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
            self._client = aioredis.Redis(connection_pool=pool)
        client = self._client
        self._lookups = TickBatcher(self._lookup_batch)
        self._scripts = TickBatcher(self._script_batch)
        self._upsert = client.register_script(_UPSERT)
        self._claim = client.register_script(_CLAIM)
        self._touch = client.register_script(_TOUCH)
        self._delete = client.register_script(_DELETE)
        self._drop_owned = client.register_script(_DROP_OWNED)
        self._prune = client.register_script(_PRUNE)
        try:
            await self._do_ping()
        except BaseException:
            await self._do_close()
            raise

    async def _do_close(self) -> None:
        for batcher in (getattr(self, "_lookups", None), getattr(self, "_scripts", None)):
            if batcher is not None:
                await batcher.drain()
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts.submit((script, keys, args))

    async def _script_batch(self, requests: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """The writes of one event-loop tick as one pipeline (each script still atomic)."""
        if len(requests) == 1:
            script, keys, args = requests[0]
            return [await script(keys=keys, args=args)]
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in requests:
            await script(keys=keys, args=args, client=pipe)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _do_upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        ttl = expires_at - self._now_ms()
        with storage_errors("upsert"):
            await self._run_script(
                self._upsert,
                keys=[self._key(key)],
                args=[self._prefix, key.hex(), alloc_id, expires_at, max(ttl, 1)],
            )

    async def _do_lookup(self, key: bytes, now: int) -> str | None:
        with storage_errors("lookup"):
            owner: str | None = await self._lookups.submit(self._key(key))
        return owner

    async def _lookup_batch(self, keys: list[str]) -> list[str | None]:
        """The lookups of one event-loop tick as one MGET."""
        if len(keys) == 1:
            owners = [await self._client.get(keys[0])]
        else:
            owners = await self._client.mget(keys)
        return [None if owner is None else self._text(owner) for owner in owners]

    async def _do_claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        with storage_errors("claim"):
            owner = await self._run_script(
                self._claim,
                keys=[self._key(key)],
                args=[
                    self._prefix,
                    key.hex(),
                    alloc_id,
                    expires_at,
                    expires_at - now,
                    replacing or "",
                ],
            )
        return self._text(owner)

    async def _do_touch(self, key: bytes, expires_at: int, now: int) -> bool:
        with storage_errors("touch"):
            touched = await self._run_script(
                self._touch,
                keys=[self._key(key)],
                args=[self._prefix, key.hex(), expires_at, expires_at - now],
            )
        return bool(touched)

    async def _do_delete(self, key: bytes, now: int) -> bool:
        with storage_errors("delete"):
            deleted = await self._run_script(
                self._delete, keys=[self._key(key)], args=[self._prefix, key.hex()]
            )
        return bool(deleted)

    async def _do_delete_owner(self, alloc_id: str, now: int) -> int:
        index = self._index(alloc_id)
        removed = 0
        with storage_errors("delete_owner"):
            while digests := await self._client.zrange(index, 0, self._cleanup_batch - 1):
                removed += int(
                    await self._drop_owned(
                        keys=[index], args=[self._prefix, alloc_id, *map(self._text, digests)]
                    )
                )
        return removed

    async def _do_cleanup(self, now: int, batch: int) -> int:
        """Drop index entries whose binding Redis has expired (or that were rebound)."""
        pruned = 0
        owner_prefix = len(self._prefix) + 2
        with storage_errors("cleanup"):
            async for raw_index in self._client.scan_iter(match=f"{self._prefix}o:*", count=1000):
                index = self._text(raw_index)
                owner = index[owner_prefix:]
                start = 0
                while digests := await self._client.zrangebyscore(
                    index, "-inf", now, start=start, num=batch
                ):
                    dropped = int(
                        await self._prune(
                            keys=[index], args=[self._prefix, owner, *map(self._text, digests)]
                        )
                    )
                    pruned += dropped
                    start += len(digests) - dropped
                    if len(digests) < batch:
                        break
        return pruned

    async def _do_gauges(self, now: int) -> tuple[int, int, int | None]:
        sessions = 0
        expired = 0  # index entries past their score: bindings Redis drops or has dropped
        with storage_errors("metrics"):
            async for _ in self._client.scan_iter(match=f"{self._prefix}s:*", count=1000):
                sessions += 1
            async for index in self._client.scan_iter(match=f"{self._prefix}o:*", count=1000):
                expired += int(await self._client.zcount(index, "-inf", now))
        return sessions, expired, None

    async def _do_ping(self) -> str:
        with storage_errors("health check"):
            await self._client.ping()
        pool = self._client.connection_pool.connection_kwargs
        where = pool.get("path") or f"{pool.get('host', '?')}:{pool.get('port', '?')}"
        return f"redis: {where}/{pool.get('db', 0)} prefix {self._prefix!r}"
