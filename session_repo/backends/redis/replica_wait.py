"""Writes that wait for replicas: each connection's pipelined scripts, then ``WAIT``.

Redis replicates asynchronously: a write its master acknowledged can be lost in a
failover. With ``wait_replicas`` set, every write is followed, on the connection that
wrote it, by ``WAIT replicas timeout``; a write fewer replicas acknowledged in time
happened on the master but may not survive its failover, and its caller gets a
transient ``StorageError``. On a cluster one ``WAIT`` goes to each master written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from session_repo.errors import StorageError

__all__ = ["Groups", "waited_batch"]

Request = tuple[Any, list[str], list[Any]]
Groups = Callable[[list[Request]], list[tuple[dict[str, Any], list[int]]]]
"""Which requests one ``WAIT`` covers, with the options that route it (a cluster node)."""


async def waited_batch(
    client: Any,
    requests: list[Request],
    *,
    wait: tuple[int, int],
    slots: asyncio.Semaphore,
    no_script: type[Exception] | tuple[type[Exception], ...],
    groups: Groups,
) -> list[Any]:
    """Each script request's outcome, its writes acknowledged by ``wait[0]`` replicas.

    Scripts a node lost are loaded, then their writes sent again (once).

    Args:
        client: the Redis (or cluster) client.
        requests: ``(script, keys, args)`` per caller.
        wait: (replicas, timeout ms).
        slots: bounds the batches in flight.
        no_script: the client library's ``NoScriptError`` (or several classes).
        groups: splits the requests by the connection (master) that writes them.
    """
    replicas, timeout = wait
    results: list[Any] = [None] * len(requests)
    todo = list(range(len(requests)))
    for attempt in range(2):
        async with slots, client.pipeline(transaction=False) as pipe:
            for n in todo:
                script, keys, args = requests[n]
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            waits = groups([requests[n] for n in todo])
            for options, _ in waits:
                pipe.execute_command("WAIT", replicas, timeout, **options)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for n, reply in zip(todo, replies, strict=False):
            results[n] = reply
        for (_, members), acked in zip(waits, replies[len(todo) :], strict=True):
            if isinstance(acked, Exception) or int(acked) < replicas:
                count = "no answer" if isinstance(acked, Exception) else int(acked)
                error = StorageError(
                    f"written, but acknowledged by {count} of {replicas} replicas"
                    f" within {timeout} ms",
                    transient=True,
                )
                for member in members:
                    if not isinstance(results[todo[member]], Exception):
                        results[todo[member]] = error
        todo = [n for n in todo if isinstance(results[n], no_script)]
        if not todo or attempt:
            break
        for script in {requests[n][0].sha: requests[n][0] for n in todo}.values():
            await client.script_load(script.script)
    return results
