"""``RedisStorage``: the ``Storage`` of ``RedisSessionRepository``.

The Lua scripts live in ``scripts/*.lua`` (shipped in the wheel); each change to a
binding and its indexes is one script, so they cannot drift. Every key a script
touches is passed in KEYS. A write names the index of the owner it writes, so
upsert, claim and delete take one round trip whoever held the session before; the
old owner's index keeps a stale entry, which ``delete_owner`` and cleanup check
against the binding (and drop) before acting on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from session_repo._core.batching import TickBatcher
from session_repo._core.cancel import cancel_requests, reraise_swallowed
from session_repo._core.storage import Gauges
from session_repo.backends.redis.replica_wait import waited_batch
from session_repo.backends.redis.scripts import load
from session_repo.errors import StorageError

__all__ = ["RedisStorage"]

# Owners remembered per digest, so touch names the right index on the first try and
# delete tidies it; when full, forgotten at once (a missing hint costs a touch one
# more round trip, and leaves delete's index entry to cleanup).
_HINTS = 10_000
# Tries of a touch whose binding keeps changing owner under it.
_TRIES = 5


class RedisStorage:
    """Bindings under ``prefix`` in one Redis client; implements ``Storage``.

    Args:
        client: a ``redis.asyncio.Redis`` client (with ``decode_responses``).
        prefix: starts every key.
        batch: the most index entries one cleanup or ``delete_owner`` step handles.
        now_ms: the front's clock, in milliseconds (to turn an expiry into a ttl).
        slots: the most batches and maintenance commands in flight at once; a burst
            waits for a slot (the client's own pool need not block, which costs every
            command). A lone lookup and a lone write take no slot: with them, at most
            ``slots + 2`` connections are in use.
        no_script: the client library's ``NoScriptError``; a pipelined script that
            failed with it (or with any class in a tuple given here) did not run, and
            is sent again alone.
        wait: (replicas, timeout ms): with replicas > 0, every write waits (``WAIT``)
            until that many replicas have it, or fails (transient) when fewer did in
            time; (0, 0) waits for none.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        *,
        batch: int,
        now_ms: Callable[[], int],
        slots: int,
        no_script: type[Exception] | tuple[type[Exception], ...],
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._batch = batch
        self._now_ms = now_ms
        self._slots = asyncio.Semaphore(slots)
        self._no_script = no_script
        self._expiries = f"{prefix}e"
        self._owners: dict[bytes, str] = {}
        self._lookups = TickBatcher(self._lookup_batch, alone=self._lookup_alone)
        self._scripts = TickBatcher(self._script_batch, alone=self._script_alone)
        self._wait = wait
        if wait[0]:  # no lone path: a WAIT must follow its writes on their connection
            self._scripts = TickBatcher(self._waited_batch)
        self._upsert = client.register_script(load("upsert"))
        self._claim = client.register_script(load("claim"))
        self._touch = client.register_script(load("touch"))
        self._delete = client.register_script(load("delete"))
        self._drop_owned = client.register_script(load("drop_owned"))
        self._prune = client.register_script(load("prune"))
        self._forget = client.register_script(load("forget"))

    def _hint(self, key: bytes, owner: str) -> None:
        if len(self._owners) >= _HINTS:
            self._owners.clear()
        self._owners[key] = owner

    def _key(self, key: bytes) -> str:
        return f"{self._prefix}s:{key.hex()}"

    def _keys(self, key: bytes, owner: str) -> list[str]:
        """A write script's KEYS: the binding, the expiries and ``owner``'s index."""
        prefix = self._prefix
        return [f"{prefix}s:{key.hex()}", self._expiries, f"{prefix}o:{owner}"]

    def _shards(self) -> list[tuple[str, str, str]]:
        """Each part of the layout: (bindings' prefix, expiries, owner indexes' prefix)."""
        prefix = self._prefix
        return [(f"{prefix}s:", self._expiries, f"{prefix}o:")]

    async def _owned_shards(self, alloc_id: str) -> list[tuple[str, str, str]]:
        """The shards where ``alloc_id`` may have an index (all of them, here: one)."""
        return self._shards()

    def _index_pattern(self) -> str:
        """A ``SCAN`` match for every owner index."""
        return f"{self._prefix}o:*"

    def _parse_index(self, index: str) -> tuple[str, str]:
        """An owner index's (bindings' prefix, owner)."""
        return f"{self._prefix}s:", index[len(self._prefix) + 2 :]

    async def close(self) -> None:
        """Let batched calls finish (the client is closed by its owner)."""
        for batcher in (self._lookups, self._scripts):
            await batcher.drain()

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts.call((script, keys, args))

    @staticmethod
    async def _script_alone(request: tuple[Any, list[str], list[Any]]) -> Any:
        script, keys, args = request
        return await script(keys=keys, args=args)

    async def _script_batch(self, requests: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """The writes of one event-loop tick as one pipeline (each script still atomic).

        ``EVALSHA`` by hand: redis-py's pipelined scripts ask ``SCRIPT EXISTS`` first,
        a round trip more per batch. A script Redis lost (a restart, ``SCRIPT FLUSH``)
        did not run: that request is sent again alone, which loads it. Sent as a raw
        command: a cluster pipeline refuses its ``evalsha()`` method (redis-py #2914),
        yet routes ``EVALSHA`` by its keys.
        """
        async with self._slots:
            async with self._client.pipeline(transaction=False) as pipe:  # reset if cut off
                for script, keys, args in requests:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            for n, result in enumerate(results):
                if isinstance(result, self._no_script):
                    script, keys, args = requests[n]
                    try:
                        results[n] = await script(keys=keys, args=args)
                    except Exception as exc:  # its own caller's failure only
                        results[n] = exc
        return results

    def _wait_groups(self, requests: list[Any]) -> list[tuple[dict[str, Any], list[int]]]:
        """Which requests one ``WAIT`` covers, and its options: here, one for all."""
        return [({}, list(range(len(requests))))]

    async def _waited_batch(self, requests: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        return await waited_batch(
            self._client,
            requests,
            wait=self._wait,
            slots=self._slots,
            no_script=self._no_script,
            groups=self._wait_groups,
        )

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        ttl = max(expires_at - self._now_ms(), 1)
        keys = self._keys(key, alloc_id)
        await self._run_script(self._upsert, keys, [key.hex(), alloc_id, expires_at, ttl])
        self._hint(key, alloc_id)

    async def lookup(self, key: bytes, now: int) -> str | None:
        owner: str | None = await self._lookups.call(self._key(key))
        if owner is None:
            self._owners.pop(key, None)
        elif self._owners.get(key) != owner:
            self._hint(key, owner)
        return owner

    async def _lookup_alone(self, key: str) -> str | None:
        owner = await self._client.get(key)
        return None if owner is None else self._text(owner)

    async def _lookup_batch(self, keys: list[str]) -> list[str | None]:
        """The lookups of one event-loop tick as one MGET."""
        async with self._slots:
            owners = await self._client.mget(keys)
        return [None if owner is None else self._text(owner) for owner in owners]

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        keys = self._keys(key, alloc_id)
        # At least 1 ms: native TTLs take no less (an expiry of ``now`` is "not live").
        args = [key.hex(), alloc_id, expires_at, max(expires_at - now, 1), replacing or ""]
        owner = self._text(await self._run_script(self._claim, keys, args))
        self._hint(key, owner)
        return owner

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        """Extend in the owner's index too: named by the owner last seen, again if wrong."""
        believed = self._owners.get(key, "")
        for _ in range(_TRIES):
            keys = self._keys(key, believed)
            args = [key.hex(), believed, expires_at, max(expires_at - now, 1)]
            reply = await self._run_script(self._touch, keys, args)
            status = int(reply[0])
            if status == 1:
                return True
            if status == 0:
                self._owners.pop(key, None)
                return False
            believed = self._text(reply[1])
            self._hint(key, believed)
        raise StorageError("the binding kept changing owner; try again", transient=True)

    async def delete(self, key: bytes, now: int) -> bool:
        believed = self._owners.pop(key, "")
        keys = self._keys(key, believed)
        reply = await self._run_script(self._delete, keys, [key.hex(), believed])
        return int(reply[0]) == 1

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        removed = 0
        before = cancel_requests()
        async with self._slots:  # one command at a time: one connection
            for bindings, expiries, owners in await self._owned_shards(alloc_id):
                index = owners + alloc_id
                while found := await self._client.zrange(index, 0, self._batch - 1):
                    reraise_swallowed(before)  # a long loop stops at once when cancelled
                    digests = [self._text(digest) for digest in found]
                    keys = [index, expiries, *(bindings + d for d in digests)]
                    removed += int(await self._drop_owned(keys=keys, args=[alloc_id, *digests]))
        return removed

    async def cleanup(self, now: int, batch: int) -> int:
        """Forget the expiries of bindings Redis has expired; prune the owner indexes."""
        forgotten = 0
        async with self._slots:  # one command at a time: one connection
            for bindings, expiries, _ in self._shards():
                forgotten += await self._sweep(self._forget, expiries, bindings, now, batch)
            async for raw_index in self._client.scan_iter(match=self._index_pattern(), count=1000):
                index = self._text(raw_index)
                bindings, owner = self._parse_index(index)
                await self._sweep(self._prune, index, bindings, now, batch, owner)
        return forgotten

    async def _sweep(
        self, script: Any, zset: str, bindings: str, now: int, batch: int, *lead: str
    ) -> int:
        """Run ``script`` over the entries of ``zset`` scored <= now, a batch at a time.

        It gets ``KEYS = [zset, *bindings]`` and ``ARGV = [*lead, *digests]`` and says
        how many entries it dropped; those it keeps are skipped, so the sweep ends.
        ``bindings`` is the prefix of the bindings' keys, before the digest.
        """
        dropped = start = 0
        before = cancel_requests()
        while found := await self._client.zrangebyscore(zset, "-inf", now, start=start, num=batch):
            reraise_swallowed(before)  # a long sweep stops at once when cancelled
            digests = [self._text(digest) for digest in found]
            keys = [zset, *(bindings + d for d in digests)]
            gone = int(await script(keys=keys, args=[*lead, *digests]))
            dropped += gone
            start += len(digests) - gone
            if len(digests) < batch:
                break
        return dropped

    async def gauges(self, now: int) -> Gauges:
        """Live and expired bindings: two ZCOUNT in one round trip, whatever the count."""
        async with self._slots, self._client.pipeline(transaction=False) as pipe:
            pipe.zcount(self._expiries, f"({now}", "+inf")
            pipe.zcount(self._expiries, "-inf", now)
            sessions, expired = await pipe.execute()
        return Gauges(int(sessions), int(expired), None)

    async def ping(self) -> str:
        async with self._slots:
            await self._client.ping()
        pool = self._client.connection_pool
        kwargs = pool.connection_kwargs
        if service := getattr(pool, "service_name", None):  # found through Sentinel
            where = f"the master of sentinel service {service!r}"
        else:
            where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        return f"redis: {where}/{kwargs.get('db', 0)} prefix {self._prefix!r}"
