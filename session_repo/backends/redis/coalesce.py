"""A tick's upserts under one tag travel as one ``upserts`` script call.

Pipelined, each upsert is its own ``EVALSHA``: Redis starts a script per write and
reads the same owners' marks, heartbeats and index ttls and the generation counter
again each time. ``upserts.lua`` runs a tag's upserts in one call, each as
``upsert.lua`` would, and answers each alone (a write that fails fails only its own
caller). A call carries at most ``MOST`` upserts: a script holds Redis for as long as
it runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MOST", "coalesced", "spread"]

MOST = 64
Request = tuple[Any, list[str], list[Any]]
Place = tuple[int, int | None]
"""Where a request went: the call that carries it, and its item there (None: alone)."""


def coalesced(
    requests: list[Request], upsert: Any, upserts: Any
) -> tuple[list[Request], list[Place]]:
    """The calls to send for ``requests``, and where each request went.

    Args:
        requests: ``(script, KEYS, ARGV)`` per caller, as ``RedisStorage`` makes them
            (an upsert's KEYS: binding, expiries, counter, marks; ARGV: tag, digest,
            owner, expires_at, ttl).
        upsert: the ``upsert`` script: its requests are coalesced by tag.
        upserts: the ``upserts`` script that carries them.
    """
    calls: list[Request] = []
    places: list[Place] = [(0, None)] * len(requests)
    tags: dict[str, list[int]] = {}
    for n, request in enumerate(requests):
        if request[0] is upsert:
            tags.setdefault(request[2][0], []).append(n)
        else:
            places[n] = (len(calls), None)
            calls.append(request)
    for tag, members in tags.items():
        for start in range(0, len(members), MOST):
            part = members[start : start + MOST]
            if len(part) == 1:
                places[part[0]] = (len(calls), None)
                calls.append(requests[part[0]])
                continue
            keys = [requests[n][1][0] for n in part] + requests[part[0]][1][1:]
            args: list[Any] = [tag]
            for item, n in enumerate(part):
                args += requests[n][2][1:]
                places[n] = (len(calls), item)
            calls.append((upserts, keys, args))
    return calls, places


def spread(replies: list[Any], places: list[Place]) -> list[Any]:
    """Each request's outcome: its call's reply, or its item of it.

    Args:
        replies: one per call, in order: a reply or an exception instance (a coalesced
            call's failure fails every request it carried).
        places: as ``coalesced`` gave them.
    """
    outcomes: list[Any] = []
    for call, item in places:
        reply = replies[call]
        outcomes.append(reply if item is None or isinstance(reply, BaseException) else reply[item])
    return outcomes
