"""``NullSessionRepository``: the store turned off (``SESSION_STORE_ENABLED=false``)."""

from __future__ import annotations

from session_repo._base import BackendBase
from session_repo.metrics import Health

__all__ = ["NullSessionRepository"]


class NullSessionRepository(BackendBase):
    """Stores nothing: lookups miss, claims always win, health says disabled."""

    backend = "null"

    def __init__(self) -> None:
        super().__init__(clock=None, default_ttl=600)

    async def _do_open(self) -> None:
        return None

    async def _do_close(self) -> None:
        return None

    async def _do_upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None:
        return None

    async def _do_lookup(self, key: bytes, now: int) -> str | None:
        return None

    async def _do_claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return alloc_id

    async def _do_touch(self, key: bytes, expires_at: int, now: int) -> bool:
        return False

    async def _do_delete(self, key: bytes, now: int) -> bool:
        return False

    async def _do_delete_owner(self, alloc_id: str, now: int) -> int:
        return 0

    async def _do_cleanup(self, now: int, batch: int) -> int:
        return 0

    async def _do_gauges(self, now: int) -> tuple[int, int, int | None]:
        return 0, 0, 0

    async def _do_ping(self) -> str:
        return "disabled"

    async def health(self) -> Health:
        """``"ok"``, with a detail saying the store is turned off.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        health = await super().health()
        return Health(health.status, self.backend, "disabled: the session store is turned off")
