"""``NullSessionRepository``: the store turned off (``SESSION_STORE_ENABLED=false``).

It keeps no binding and no heartbeat, so every lookup misses and every claim wins.
Leases follow from that: ``acquire`` wins with a binding made anew each time (none
was kept), so each answer has a fresh generation from a counter of its own, strictly
greater than any it gave before (always a valid ``generation=`` argument, starting
at 1); ``lease`` is ``None``, a ``touch`` or ``delete`` finds nothing (``False``, with
or without a generation), ``heartbeat`` keeps nothing, ``release`` removes 0 and
``owners`` is empty.
"""

from __future__ import annotations

import contextlib
import itertools

from session_repo._core.front import StoreFront
from session_repo._core.inputs import DEFAULT_TTL
from session_repo._core.storage import Gauges, LeaseRow
from session_repo.metrics import Health

__all__ = ["NullSessionRepository"]


class NullStorage:
    """Keeps nothing; implements ``Storage``."""

    def __init__(self) -> None:
        # Not a binding: what makes each acquire's generation new, as a binding made anew's is.
        self._generations = itertools.count(1)

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        return None

    async def lookup(self, key: bytes, now: int) -> str | None:
        return None

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        return None

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return alloc_id

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        return LeaseRow(alloc_id, next(self._generations), expires_at)

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        return False

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        return False

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        return None

    async def release(self, alloc_id: str, now: int) -> int:
        return 0

    async def owners(self, now: int) -> dict[str, int]:
        return {}

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return 0

    async def cleanup(self, now: int, batch: int) -> int:
        return 0

    async def gauges(self, now: int) -> Gauges:
        return Gauges(0, 0, 0, 0)

    async def ping(self) -> str:
        return "disabled"

    async def close(self) -> None:
        return None


class NullSessionRepository(StoreFront):
    """Stores nothing: lookups miss, claims always win, health says disabled.

    ``acquire`` wins too, each time with a new generation (the binding is made anew
    every time, as none was kept); ``lease`` is ``None``; ``owners`` is empty.
    """

    def __init__(self) -> None:
        super().__init__(
            connect=self._connect,
            backend="null",
            clock=None,
            default_ttl=DEFAULT_TTL,
            guard_cancellation=False,
        )

    async def _connect(self, resources: contextlib.AsyncExitStack) -> NullStorage:
        return NullStorage()

    async def health(self) -> Health:
        """``"ok"``, with a detail saying the store is turned off.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        health = await super().health()
        return Health(health.status, self.backend, "disabled: the session store is turned off")
