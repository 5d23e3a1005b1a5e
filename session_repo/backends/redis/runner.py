"""Scripts to Redis: the key layout's tags, and one tick's scripts as one pipeline
(a tag's upserts in it as one call: ``coalesce``).

Every key starts with a tag: the key prefix on one node (one tag), the prefix and
a bucket's hash tag on a cluster (``session_repo.backends.redis.cluster``). A
script touches the keys of one tag only, so of one slot: those in its ``KEYS``
(the first routes it) and those it names from an owner it read (that owner's index
and heartbeat), which a cluster allows in the script's own slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from session_repo._core.batching import TickBatcher
from session_repo.backends.redis.coalesce import coalesced, spread
from session_repo.backends.redis.replica_wait import waited_batch
from session_repo.backends.redis.scripts import load

__all__ = ["Request", "ScriptRunner"]

Request = tuple[Any, list[str], list[Any]]
"""A script call: (registered script, KEYS, ARGV)."""


class ScriptRunner:
    """The layout's tags and the script plumbing the storage's operations share.

    Args:
        client: a ``redis.asyncio.Redis`` (or cluster) client, with ``decode_responses``.
        prefix: starts every key.
        slots: the most batches and maintenance commands in flight at once.
        no_script: the client library's ``NoScriptError`` (or several classes): a
            pipelined script that failed with one did not run, and is sent again alone.
        wait: (replicas, timeout ms): with replicas > 0, every write waits (``WAIT``)
            until that many replicas have it, or fails (transient); (0, 0) for none.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        *,
        slots: int,
        no_script: type[Exception] | tuple[type[Exception], ...],
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._slots = asyncio.Semaphore(slots)
        self._no_script = no_script
        self._wait = wait
        self._upsert = self._script("upsert")
        self._upserts = self._script("upserts")  # a tick's upserts of one tag, in one call
        self._scripts = TickBatcher(self._script_batch, alone=self._script_alone)
        if wait[0]:  # no lone path: a WAIT must follow its writes on their connection
            self._scripts = TickBatcher(self._waited_batch)

    def _script(self, name: str) -> Any:
        return self._client.register_script(load(name))

    # -- the layout ---------------------------------------------------------------

    def _tag(self, key: bytes) -> str:
        """The tag of ``key``'s binding (here: the prefix)."""
        return self._prefix

    def _tags(self) -> list[str]:
        """Every tag of the layout (here: one)."""
        return [self._prefix]

    def _index_pattern(self) -> str:
        """A ``SCAN`` match for every owner index."""
        return f"{self._prefix}o:*"

    def _parse_index(self, index: str) -> tuple[str, str]:
        """An owner index's (tag, owner)."""
        return self._prefix, index[len(self._prefix) + 2 :]

    # -- sending scripts ----------------------------------------------------------

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A write: batched with the tick's others (and ``WAIT``-ed, if asked)."""
        return await self._scripts.call((script, keys, args))

    async def _each_tag(self, requests: list[Request]) -> list[Any]:
        """Writes on several tags, in one batch with the tick's others (``WAIT``-ed, if
        asked); the first failure raises, once every request is done."""
        return list(await asyncio.gather(*(self._run_script(*request) for request in requests)))

    async def _script_alone(self, request: Request) -> Any:
        """One script, by ``EVALSHA`` sent as a raw command (redis-py's script object
        costs 10 us more per call); one Redis lost is loaded, then run."""
        script, keys, args = request
        try:
            return await self._client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except self._no_script:
            return await self._reloaded(request)

    async def _reloaded(self, request: Request) -> Any:
        """A script Redis lost (a restart, ``SCRIPT FLUSH``): loaded again, then run."""
        script, keys, args = request
        script.sha = await self._client.script_load(script.script)
        return await self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _script_batch(self, requests: list[Request]) -> list[Any]:
        calls, places = coalesced(requests, self._upsert, self._upserts)
        async with self._slots:
            return spread(await self._pipelined(calls), places)

    async def _pipelined(self, requests: list[Request]) -> list[Any]:
        """Scripts as one pipeline (each still atomic); an outcome (or error) each.

        ``EVALSHA`` by hand: redis-py's pipelined scripts ask ``SCRIPT EXISTS`` first,
        a round trip more per batch. A script Redis lost (a restart, ``SCRIPT FLUSH``)
        did not run: it is loaded and that request sent again alone. Sent as a raw
        command: a cluster pipeline refuses its ``evalsha()`` method (redis-py #2914),
        yet routes ``EVALSHA`` by its keys.
        """
        async with self._client.pipeline(transaction=False) as pipe:  # reset if cut off
            for script, keys, args in requests:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for n, result in enumerate(results):
            if isinstance(result, self._no_script):
                try:
                    results[n] = await self._reloaded(requests[n])
                except Exception as exc:  # its own caller's failure only
                    results[n] = exc
        return results

    async def _direct(self, requests: list[Request]) -> list[Any]:
        """Scripts on several tags in one pipeline, never ``WAIT``-ed (reads, and upkeep
        whose loss in a failover the next run repairs); the first failure raises."""
        if len(requests) == 1:
            async with self._slots:
                return [await self._script_alone(requests[0])]
        async with self._slots:
            results = await self._pipelined(requests)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _wait_groups(self, requests: list[Request]) -> list[tuple[dict[str, Any], list[int]]]:
        """Which requests one ``WAIT`` covers, and its options: here, one for all."""
        return [({}, list(range(len(requests))))]

    async def _waited_batch(self, requests: list[Request]) -> list[Any]:
        calls, places = coalesced(requests, self._upsert, self._upserts)
        replies = await waited_batch(
            self._client,
            calls,
            wait=self._wait,
            slots=self._slots,
            no_script=self._no_script,
            groups=self._wait_groups,
        )
        return spread(replies, places)

    async def close(self) -> None:
        """Let batched writes finish (the client is closed by its owner)."""
        await self._scripts.drain()
