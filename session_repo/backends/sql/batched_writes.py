"""The writes of one event-loop tick as one statement: what PostgreSQL and MariaDB share.

The server fast paths send a tick's upserts as one statement and its claims as
another, keys sorted so that two instances lock rows in one order and never
deadlock. Each caller is answered only after the statement committed. If the
server refused the statement (nothing was written: a bad row, a trigger), each
request is tried alone, so one bad row fails only its own caller; a statement
whose answer was lost (it may have been written) fails every caller and is never
sent again as new.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from session_repo.backends.sql.errors import refused_by_server
from session_repo.errors import StorageError

__all__ = ["Claim", "claim_batch", "upsert_batch"]

R = TypeVar("R")
Claim = tuple[bytes, str, int, int, "str | None"]
"""``(key, alloc_id, expires_at, now, replacing)``."""

_by_key = itemgetter(0)
_log = logging.getLogger(__name__)


async def _outcome(one: Callable[[R], Awaitable[Any]], request: R) -> Any:
    try:
        return await one(request)
    except Exception as exc:  # this caller's failure only
        return exc


async def _each_alone_if_refused(
    together: Callable[[], Awaitable[list[Any]]],
    one: Callable[[R], Awaitable[Any]],
    requests: Sequence[R],
) -> list[Any]:
    try:
        return await together()
    except Exception as exc:
        if not refused_by_server(exc):
            raise  # it may have been written: no request is sent again as new
        _log.debug(
            "the server refused %d writes together (%s); each goes alone",
            len(requests),
            type(exc).__name__,
        )
    return [await _outcome(one, request) for request in requests]


async def upsert_batch(
    requests: list[tuple[Any, ...]],
    *,
    many: Callable[[list[tuple[Any, ...]]], Awaitable[object]],
    one: Callable[[tuple[Any, ...]], Awaitable[object]],
) -> list[Any]:
    """Each upsert's outcome (None, or its exception): one statement for them all.

    Args:
        requests: each upsert's statement arguments, the key first.
        many: writes the rows given (sorted by key) in one statement.
        one: writes one row.
    """
    if len(requests) == 1:
        await one(requests[0])
        return [None]

    async def together() -> list[Any]:
        await many(sorted(requests, key=_by_key))
        return [None] * len(requests)

    return await _each_alone_if_refused(together, one, requests)


async def claim_batch(
    requests: list[Claim],
    *,
    many: Callable[[list[Claim], int], Awaitable[dict[bytes, Any]]],
    one: Callable[[Claim], Awaitable[Any]],
) -> list[Any]:
    """Each claim's outcome (its lease, or its exception): one statement for most.

    One statement updates a row once and compares one ``now``: the claims of
    distinct keys naming no ``replacing`` go together (with the latest ``now`` of
    them, read before the statement ran), a repeated key or a ``replacing`` claim
    alone, after them, in turn.

    Args:
        requests: the claims.
        many: the claims given (sorted by key) and their ``now`` as one statement,
            answering each key's lease.
        one: one claim, answering its lease.
    """
    if len(requests) == 1:
        return [await one(requests[0])]
    together: dict[bytes, int] = {}
    alone: list[int] = []
    for n, request in enumerate(requests):
        if request[4] is None and request[0] not in together:
            together[request[0]] = n
        else:
            alone.append(n)
    outcomes: list[Any] = [None] * len(requests)
    if len(together) > 1:
        claims = sorted((requests[n] for n in together.values()), key=_by_key)

        async def run_together() -> list[Any]:
            leases = await many(claims, max(claim[3] for claim in claims))
            missing = StorageError("claim returned no owner", transient=True)
            return [leases.get(claim[0], missing) for claim in claims]

        answered = await _each_alone_if_refused(run_together, one, claims)
        for claim, outcome in zip(claims, answered, strict=True):
            outcomes[together[claim[0]]] = outcome
    else:
        alone = [*together.values(), *alone]
    for n in alone:
        outcomes[n] = await _outcome(one, requests[n])
    return outcomes
