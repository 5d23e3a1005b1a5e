"""``RedisStorage``: the ``Storage`` of ``RedisSessionRepository``.

A binding is ``s:<digest hex>`` holding ``"owner generation epoch expires_at"``
with a native ttl (``PX``): Redis expires it by its own clock; ``expires_at`` is
the front's clock, for ``lease``. The owner goes first and alloc ids hold no
space, so a plain owner (a binding written before leases) still reads, as
generation 0. The epoch is the owner's heartbeat epoch when it was written
(``session_repo.backends.redis.owners``).

Each change to a binding and its indexes is one Lua script (``scripts/*.lua``),
so they cannot drift, and reads the binding it replaces: the same live owner keeps
its generation, any other write takes a fresh one, and the old owner's index entry
goes. Generations come from ``g``, a counter under the binding's tag that never
expires: each fresh one is above every one given there and at least the server's
clock in microseconds, so a generation still rises after a failover lost the
counter's last increments (replication is asynchronous), as long as the new
master's clock is past the old one's last write.

The lookups of one event-loop tick are one script per tag (one in all on a single
node): the bindings' values and, for owners that heartbeat, their marks and
heartbeat keys, in one round trip.
"""

from __future__ import annotations

from typing import Any

from session_repo._core.batching import TickBatcher
from session_repo._core.storage import LeaseRow
from session_repo.backends.redis.owners import OwnerOps

__all__ = ["RedisStorage"]


def _lease(value: str) -> LeaseRow:
    owner, generation, _, expires_at = value.split(" ")
    return LeaseRow(owner, int(generation), int(expires_at))


class RedisStorage(OwnerOps):
    """Bindings under ``prefix`` in one Redis client; implements ``Storage``.

    Args:
        client: a ``redis.asyncio.Redis`` client (with ``decode_responses``).
        prefix: starts every key.
        batch: the most index entries one cleanup, release or ``delete_owner`` step handles.
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
        slots: int,
        no_script: type[Exception] | tuple[type[Exception], ...],
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(client, prefix, batch=batch, slots=slots, no_script=no_script, wait=wait)
        self._lookups = TickBatcher(self._lookup_batch, alone=self._lookup_alone)
        self._lookup = self._script("lookup")
        self._lookup_one = self._script("lookup_one")
        self._acquire = self._script("acquire")
        self._touch = self._script("touch")
        self._delete = self._script("delete")

    async def close(self) -> None:
        """Let batched calls finish (the client is closed by its owner)."""
        await self._lookups.drain()
        await super().close()

    def _write(self, key: bytes) -> tuple[list[str], list[Any]]:
        """A write script's KEYS (binding, expiries, counter, marks) and first ARGV."""
        tag, digest = self._tag(key), key.hex()
        return [f"{tag}s:{digest}", f"{tag}e", f"{tag}g", f"{tag}M"], [tag, digest]

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        keys, args = self._write(key)
        # At least 1 ms: native TTLs take no less (an expiry of ``now`` is "not live").
        args += [alloc_id, expires_at, max(expires_at - now, 1)]
        await self._run_script(self._upsert, keys, args)

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return (await self.acquire(key, alloc_id, expires_at, now, replacing)).owner

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        keys, args = self._write(key)
        args += [alloc_id, expires_at, max(expires_at - now, 1), replacing or ""]
        owner, generation, end = await self._run_script(self._acquire, keys, args)
        return LeaseRow(self._text(owner), int(generation), int(end))

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        keys, args = self._write(key)
        args += [expires_at, max(expires_at - now, 1), "" if generation is None else generation]
        return int(await self._run_script(self._touch, keys, args)) == 1

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        keys, args = self._write(key)
        args.append("" if generation is None else generation)
        return int(await self._run_script(self._delete, keys, args)) == 1

    async def lookup(self, key: bytes, now: int) -> str | None:
        tag = self._tag(key)
        value: str | None = await self._lookups.call((tag, f"{tag}s:{key.hex()}"))
        return None if value is None else value.partition(" ")[0]

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        tag = self._tag(key)
        value: str | None = await self._lookups.call((tag, f"{tag}s:{key.hex()}"))
        return None if value is None else _lease(value)

    async def _lookup_alone(self, request: tuple[str, str]) -> str | None:
        tag, key = request
        value = await self._script_alone((self._lookup_one, [key], [tag]))
        return None if value is None else self._text(value)

    async def _lookup_batch(self, requests: list[tuple[str, str]]) -> list[str | None]:
        """The lookups of one tick: one script per tag, all in one pipeline."""
        tags: dict[str, list[int]] = {}
        for n, (tag, _) in enumerate(requests):
            tags.setdefault(tag, []).append(n)
        scripts = [
            (self._lookup, [requests[n][1] for n in members], [tag])
            for tag, members in tags.items()
        ]
        if len(scripts) == 1:
            async with self._slots:
                replies = [await self._script_alone(scripts[0])]
        else:
            async with self._slots:
                replies = await self._pipelined(scripts)
        values: list[Any] = [None] * len(requests)
        for members, reply in zip(tags.values(), replies, strict=True):
            if isinstance(reply, Exception):  # fails the lookups of its tag only
                for n in members:
                    values[n] = reply
                continue
            for n, value in zip(members, reply, strict=True):
                values[n] = None if value is None else self._text(value)
        return values

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
