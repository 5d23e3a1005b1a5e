"""``NullSessionRepository``: the store turned off (``SESSION_STORE_ENABLED=false``)."""

from __future__ import annotations

import contextlib

from session_repo._core.front import StoreFront
from session_repo._core.inputs import DEFAULT_TTL
from session_repo._core.storage import Gauges
from session_repo.metrics import Health

__all__ = ["NullSessionRepository"]


class NullStorage:
    """Keeps nothing; implements ``Storage``."""

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        return None

    async def lookup(self, key: bytes, now: int) -> str | None:
        return None

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return alloc_id

    async def touch(self, key: bytes, expires_at: int, now: int) -> bool:
        return False

    async def delete(self, key: bytes, now: int) -> bool:
        return False

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return 0

    async def cleanup(self, now: int, batch: int) -> int:
        return 0

    async def gauges(self, now: int) -> Gauges:
        return Gauges(0, 0, 0)

    async def ping(self) -> str:
        return "disabled"

    async def close(self) -> None:
        return None


class NullSessionRepository(StoreFront):
    """Stores nothing: lookups miss, claims always win, health says disabled."""

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
