"""What the SQL execution paths share, on top of their statements: a ``Storage``.

Three paths run the same compiled statements: ``SqlitePipeline`` (a SQLite
file), ``PostgresPipeline`` (asyncpg) and ``EngineOps`` (SQLAlchemy's async
engine, for everything else). Each implements one cleanup batch and a probe;
this base turns them into the storage's ``cleanup`` and ``ping``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from session_repo._core.storage import Storage

__all__ = ["SqlPath"]


class SqlPath(Storage, ABC):
    """A SQL execution path; ``detail`` is what ``health()`` shows (no password)."""

    detail: str = ""

    @abstractmethod
    async def cleanup_batch(self, now: int, batch: int) -> int:
        """Remove up to ``batch`` rows expired at ``now`` in one transaction; how many."""

    @abstractmethod
    async def probe(self) -> None:
        """One round trip to the database."""

    async def cleanup(self, now: int, batch: int) -> int:
        """Remove every expired row, one short transaction per batch (writers wait one batch)."""
        removed = 0
        while True:
            count = await self.cleanup_batch(now, batch)
            removed += count
            if count < batch:
                return removed
            await asyncio.sleep(0)

    async def ping(self) -> str:
        """Check the database answers; ``detail`` for ``health()``."""
        await self.probe()
        return self.detail
