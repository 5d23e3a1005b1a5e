"""What the PostgreSQL and MariaDB fast paths share: the operations that are one statement.

Each path batches its reads and claims its own way (``Batcher``s it sets up) and
runs a compiled statement its own way (``_matched``: how many rows it matched);
the operations on top are the same, and live here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import Dialect

from session_repo._core.batching import Batcher
from session_repo._core.storage import LeaseRow
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.counted_writes import CountedWrites
from session_repo.backends.sql.path import Swept
from session_repo.backends.sql.statements import Statements

__all__ = ["Read", "ServerPipeline"]

Read = tuple[bytes, int, bool]
"""``(key, now, lease)``: a lookup, or (``lease``) a lease read."""


class ServerPipeline(CountedWrites):
    """Operations of one statement each, on a server; reads and claims through batchers.

    Args:
        statements: the dialect's statements.
        dialect: the driver's dialect, to compile them for.
    """

    _reads: Batcher
    _claims: Batcher

    def __init__(self, statements: Statements, dialect: Dialect) -> None:
        compile_ = Compiled.of
        self._lookup = compile_(statements.lookup, dialect)
        self._lease = compile_(statements.lease, dialect)
        self._size = str(statements.storage_size)
        self._touch = compile_(statements.touch, dialect)
        self._touch_held = compile_(statements.touch_held, dialect)
        self._delete = compile_(statements.delete, dialect)
        self._delete_held = compile_(statements.delete_held, dialect)
        self._delete_owner = compile_(statements.delete_owner, dialect)
        self._cleanup = compile_(statements.cleanup_batch, dialect)
        self._gauges = compile_(statements.gauges, dialect)
        owner = statements.owner
        self._heartbeat = compile_(owner.heartbeat, dialect)
        self._owners = compile_(owner.owners, dialect)
        self._release_row = compile_(owner.release_row, dialect)
        self._release_live = compile_(owner.release_live, dialect)
        self._release_dead = compile_(owner.release_dead, dialect)
        self._cleanup_lapsed = compile_(owner.cleanup_lapsed, dialect)
        self._cleanup_owners = compile_(owner.cleanup_owners, dialect)

    @abstractmethod
    async def _matched(self, compiled: Compiled, **values: Any) -> int:
        """Run ``compiled`` with ``values`` (conflicts retried); how many rows it matched."""

    def lookup(self, key: bytes, now: int) -> Coroutine[Any, Any, str | None]:
        # The batcher's own coroutine, not one around it: a lookup is every request's.
        owner: Coroutine[Any, Any, str | None] = self._reads.call((key, now, False))
        return owner

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        row: LeaseRow | None = await self._reads.call((key, now, True))
        return row

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        return (await self.acquire(key, alloc_id, expires_at, now, replacing)).owner

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        row: LeaseRow = await self._claims.call((key, alloc_id, expires_at, now, replacing))
        return row

    async def cleanup_batch(self, now: int, batch: int) -> Swept:
        """Dead bindings, then lapsed owners' bindings marked, then their rows once bare.

        Each statement commits on its own; the order keeps every lapsed owner's row
        until its bindings are gone.
        """
        removed = await self._matched(self._cleanup, now=now, batch=batch)
        marked = 0
        if removed < batch:
            marked = await self._matched(self._cleanup_lapsed, now=now, batch=batch - removed)
        if removed + marked < batch:
            await self._matched(self._cleanup_owners, now=now)
        return Swept(removed, marked)
