"""``RedisSessionRepository``: bindings as Redis keys with native expiry.

Layout under ``key_prefix``: ``s:<digest hex>`` holds the owner with a ``PX``
ttl; ``o:<alloc id>`` is the owner's index, a sorted set of digests scored by
expiry (ms), used by ``delete_owner``; ``e`` scores every binding's digest by
its expiry, so the gauges are two ``ZCOUNT`` (O(log n)), never a scan. Every
change to a binding and its indexes happens in one Lua script, so they cannot
drift; an owner index expires itself after its longest binding, and ``cleanup``
drops the entries whose binding has gone.

Every key a script touches is in its ``KEYS``. A script cannot know beforehand
whose index a rebinding leaves, so the caller names the owner it believes holds
the binding (remembered from recent calls); when that is wrong the script changes
nothing and answers the real owner, and the call runs again with it. Every key
starts with ``key_prefix``: a prefix with a hash tag (``"{sessions}:"``) puts a
tenant's keys in one Redis Cluster slot, as its multi-key scripts need.

Redis decides expiry by its own clock (a fake clock does not expire bindings);
the injected clock only scores the indexes. The lookups of one event-loop tick
go to Redis as one ``MGET``.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

from session_repo._base import BackendBase
from session_repo._batching import TickBatcher
from session_repo._cancel import cancel_requests, reraise_swallowed
from session_repo._inputs import Ttl
from session_repo._translate import storage_errors
from session_repo.clock import Clock
from session_repo.errors import ConfigError, InvalidInput, StorageError

__all__ = ["RedisSessionRepository"]

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]

# Owners remembered per digest, to name the right index on the first try.
_HINTS = 10_000
# Tries of a write whose binding keeps changing owner under it.
_TRIES = 5

# The write scripts: KEYS[1] = binding, KEYS[2] = expiries, KEYS[3] = the index of
# the owner the caller believes holds the binding, KEYS[4] = the new owner's index;
# ARGV[1] = digest hex, ARGV[2] = that believed owner ("" for none). A reply
# {-1, owner} means "believed wrong, nothing changed: the owner is this".
_BIND = """
local function index(idx, expires_at, ttl)
  redis.call('ZADD', idx, expires_at, ARGV[1])
  local left = redis.call('PTTL', idx)
  if left == -1 or left < ttl then redis.call('PEXPIRE', idx, ttl) end
end
local function bind(current, owner, expires_at, ttl)
  if current and current ~= owner then redis.call('ZREM', KEYS[3], ARGV[1]) end
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
  redis.call('ZADD', KEYS[2], expires_at, ARGV[1])
  index(KEYS[4], expires_at, ttl)
end
"""

# ARGV[3] = owner, ARGV[4] = expires_at, ARGV[5] = ttl ms.
_UPSERT = (
    _BIND
    + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] and current ~= ARGV[3] then return {-1, current} end
bind(current, ARGV[3], ARGV[4], tonumber(ARGV[5]))
return {1, ARGV[3]}
"""
)

# As upsert; ARGV[2] = replacing ("" for none), KEYS[3] its index. Returns the owner.
_CLAIM = (
    _BIND
    + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then return current end
bind(current, ARGV[3], ARGV[4], tonumber(ARGV[5]))
return ARGV[3]
"""
)

# ARGV[3] = expires_at, ARGV[4] = ttl ms; KEYS[4] unused.
_TOUCH = (
    _BIND
    + """
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
if current ~= ARGV[2] then return {-1, current} end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
index(KEYS[3], ARGV[3], tonumber(ARGV[4]))
return {1, current}
"""
)

# KEYS[4] unused.
_DELETE = """
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
if current ~= ARGV[2] then return {-1, current} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {1, current}
"""

# KEYS[1] = owner index, KEYS[2] = expiries, KEYS[3..] = bindings; ARGV[1] = owner,
# ARGV[2..] = their digests. Drops the digests from the index, and the bindings
# (with their expiry entries) that are still this owner's.
_DROP_OWNED = """
local removed = 0
for i = 3, #KEYS do
  local digest = ARGV[i - 1]
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], digest)
    removed = removed + 1
  end
  redis.call('ZREM', KEYS[1], digest)
end
return removed
"""

# KEYS[1] = owner index, KEYS[2..] = bindings; ARGV[1] = owner, ARGV[2..] = digests
# whose score says expired. Drops those whose binding is gone or rebound.
_PRUNE = """
local pruned = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
"""

# KEYS[1] = expiries, KEYS[2..] = bindings; ARGV[1..] = digests whose score says
# expired. Drops those whose binding Redis has expired; how many.
_FORGET = """
local forgotten = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i - 1])
    forgotten = forgotten + 1
  end
end
return forgotten
"""


class RedisSessionRepository(BackendBase):
    """Bindings in Redis (``redis://`` or ``rediss://``), or a ``redis.asyncio.Redis`` client.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a
            ``redis.asyncio.Redis`` client you built (then closing the repository
            leaves it open).
        clock: scores the indexes; Redis expires bindings by its own clock.
        default_ttl: the ttl (seconds or ``timedelta``) used when a call passes ``None``.
        key_prefix: starts every key, so services can share one Redis; a hash tag
            (``"{sessions}:"``) keeps them in one Redis Cluster slot.
        cleanup_interval: seconds between background cleanups; 0 turns them off.
        cleanup_batch: the most index entries one cleanup batch handles.
        max_connections: the size of the blocking connection pool built from a URL.

    Raises:
        ConfigError: the ``[redis]`` extra is not installed, or the URL is not a
            Redis URL.
        TypeError: an argument has the wrong type.
        InvalidInput: an argument is out of range.
    """

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

    @property
    def _expiries(self) -> str:
        return f"{self._prefix}e"

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
        self._owners: LRUCache[bytes, str] = LRUCache(_HINTS)
        self._lookups = TickBatcher(self._lookup_batch)
        self._scripts = TickBatcher(self._script_batch)
        self._upsert = client.register_script(_UPSERT)
        self._claim = client.register_script(_CLAIM)
        self._touch = client.register_script(_TOUCH)
        self._delete = client.register_script(_DELETE)
        self._drop_owned = client.register_script(_DROP_OWNED)
        self._prune = client.register_script(_PRUNE)
        self._forget = client.register_script(_FORGET)
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
        async with self._client.pipeline(transaction=False) as pipe:  # reset even if cut off
            for script, keys, args in requests:
                await script(keys=keys, args=args, client=pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _write(self, script: Any, key: bytes, new_owner: str, args: list[Any]) -> int:
        """Run a write script, again with the real owner while the one believed was wrong.

        Returns the script's status (1 done, 0 no binding); remembers the owner.
        """
        believed = self._owners.get(key, new_owner)
        for _ in range(_TRIES):
            keys = [self._key(key), self._expiries, self._index(believed), self._index(new_owner)]
            reply = await self._run_script(script, keys, [key.hex(), believed, *args])
            status = int(reply[0])
            if status != -1:
                if status == 1 and script is not self._delete:
                    self._owners[key] = self._text(reply[1])
                else:
                    self._owners.pop(key, None)
                return status
            believed = self._text(reply[1])
        raise StorageError("the binding kept changing owner; try again", transient=True)

    async def _do_upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        ttl = expires_at - self._now_ms()
        with storage_errors("upsert"):
            await self._write(self._upsert, key, alloc_id, [alloc_id, expires_at, max(ttl, 1)])

    async def _do_lookup(self, key: bytes, now: int) -> str | None:
        with storage_errors("lookup"):
            owner: str | None = await self._lookups.submit(self._key(key))
        if owner is None:
            self._owners.pop(key, None)
        else:
            self._owners[key] = owner
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
        keys = [
            self._key(key),
            self._expiries,
            self._index(replacing or alloc_id),
            self._index(alloc_id),
        ]
        # At least 1 ms: native TTLs take no less (an expiry of ``now`` is "not live").
        args = [key.hex(), replacing or "", alloc_id, expires_at, max(expires_at - now, 1)]
        with storage_errors("claim"):
            owner = self._text(await self._run_script(self._claim, keys, args))
        self._owners[key] = owner
        return owner

    async def _do_touch(self, key: bytes, expires_at: int, now: int) -> bool:
        with storage_errors("touch"):
            status = await self._write(self._touch, key, "", [expires_at, max(expires_at - now, 1)])
        return status == 1

    async def _do_delete(self, key: bytes, now: int) -> bool:
        with storage_errors("delete"):
            status = await self._write(self._delete, key, "", [])
        return status == 1

    async def _do_delete_owner(self, alloc_id: str, now: int) -> int:
        index = self._index(alloc_id)
        removed = 0
        before = cancel_requests()
        with storage_errors("delete_owner"):
            while found := await self._client.zrange(index, 0, self._cleanup_batch - 1):
                reraise_swallowed(before)  # a long loop stops at once when cancelled
                digests = [self._text(digest) for digest in found]
                keys = [index, self._expiries, *(self._prefix + "s:" + d for d in digests)]
                removed += int(await self._drop_owned(keys=keys, args=[alloc_id, *digests]))
        return removed

    async def _do_cleanup(self, now: int, batch: int) -> int:
        """Forget the expiries of bindings Redis has expired; prune the owner indexes."""
        with storage_errors("cleanup"):
            forgotten = await self._sweep(self._forget, self._expiries, now, batch)
            owner_prefix = len(self._prefix) + 2
            async for raw_index in self._client.scan_iter(match=f"{self._prefix}o:*", count=1000):
                index = self._text(raw_index)
                await self._sweep(self._prune, index, now, batch, index[owner_prefix:])
        return forgotten

    async def _sweep(self, script: Any, zset: str, now: int, batch: int, *lead: str) -> int:
        """Run ``script`` over the entries of ``zset`` scored <= now, a batch at a time.

        It gets ``KEYS = [zset, *bindings]`` and ``ARGV = [*lead, *digests]`` and says
        how many entries it dropped; those it keeps are skipped, so the sweep ends.
        """
        dropped = start = 0
        before = cancel_requests()
        while found := await self._client.zrangebyscore(zset, "-inf", now, start=start, num=batch):
            reraise_swallowed(before)  # a long sweep stops at once when cancelled
            digests = [self._text(digest) for digest in found]
            keys = [zset, *(self._prefix + "s:" + d for d in digests)]
            gone = int(await script(keys=keys, args=[*lead, *digests]))
            dropped += gone
            start += len(digests) - gone
            if len(digests) < batch:
                break
        return dropped

    async def _do_gauges(self, now: int) -> tuple[int, int, int | None]:
        """Live and expired bindings: two ZCOUNT in one round trip, whatever the count."""
        with storage_errors("metrics"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zcount(self._expiries, f"({now}", "+inf")
                pipe.zcount(self._expiries, "-inf", now)
                sessions, expired = await pipe.execute()
        return int(sessions), int(expired), None

    async def _do_ping(self) -> str:
        with storage_errors("health check"):
            await self._client.ping()
        pool = self._client.connection_pool.connection_kwargs
        where = pool.get("path") or f"{pool.get('host', '?')}:{pool.get('port', '?')}"
        return f"redis: {where}/{pool.get('db', 0)} prefix {self._prefix!r}"
