"""What the SQL execution paths share, on top of their statements: a ``Storage``.

Three paths run the same compiled statements: ``SqlitePipeline`` (a SQLite
file), ``PostgresPipeline`` (asyncpg) and ``EngineOps`` (SQLAlchemy's async
engine, for everything else). Each implements one cleanup batch and a probe;
this base turns them into the storage's ``cleanup`` and ``ping``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import NamedTuple

from session_repo._core.storage import Storage

__all__ = ["SqlPath", "Swept"]


class Swept(NamedTuple):
    """What one cleanup batch did: rows ``removed``, and lapsed owners' bindings ``marked``.

    The servers mark (tombstone) a lapsed owner's bindings, and remove them a grace
    later (``tombstones``); SQLite removes them at once and marks none.
    """

    removed: int
    marked: int = 0


class SqlPath(Storage, ABC):
    """A SQL execution path; ``detail`` is what ``health()`` shows (no password)."""

    detail: str = ""

    @abstractmethod
    async def cleanup_batch(self, now: int, batch: int) -> Swept:
        """Remove (or mark) up to ``batch`` rows dead at ``now``, in short transactions."""

    @abstractmethod
    async def probe(self) -> None:
        """One round trip to the database."""

    async def cleanup(self, now: int, batch: int) -> int:
        """Remove every expired row, one short transaction per batch (writers wait one batch)."""
        removed = 0
        while True:
            swept = await self.cleanup_batch(now, batch)
            removed += swept.removed
            # Once more after marking: with no grace, the marks are removable at once.
            if not swept.marked and swept.removed < batch:
                return removed
            await asyncio.sleep(0)

    async def ping(self) -> str:
        """Check the database answers; ``detail`` for ``health()``."""
        await self.probe()
        return self.detail
