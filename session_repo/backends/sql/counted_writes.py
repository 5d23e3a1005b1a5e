"""The writes both SQL pipelines make as one compiled statement, answered by a row count.

``ServerPipeline`` (PostgreSQL, MariaDB) and ``SqlitePipeline`` differ only in how a
statement runs (``_matched``); what each write asks for is the same, so it lives here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.path import SqlPath

__all__ = ["CountedWrites"]


class CountedWrites(SqlPath, ABC):
    """touch, delete, delete_owner and heartbeat over the subclass's compiled statements."""

    _touch: Compiled
    _touch_held: Compiled
    _delete: Compiled
    _delete_held: Compiled
    _delete_owner: Compiled
    _heartbeat: Compiled

    @abstractmethod
    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        """Run ``compiled`` with ``values``; how many rows it matched."""

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        if generation is None:
            return await self._matched(self._touch, key=key, expires=expires_at, now=now) > 0
        values = {"key": key, "expires": expires_at, "now": now, "generation": generation}
        return await self._matched(self._touch_held, **values) > 0

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        if generation is None:
            return await self._matched(self._delete, key=key, now=now) > 0
        held = self._delete_held
        return await self._matched(held, key=key, now=now, generation=generation) > 0

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return await self._matched(self._delete_owner, alloc=alloc_id, now=now)

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        await self._matched(self._heartbeat, alloc=alloc_id, expires=expires_at, now=now)
