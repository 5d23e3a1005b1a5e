"""Peer: Litestar's ``MemoryStore`` (``litestar.stores.memory``) on the same loop.

``get`` and ``set(.., expires_in=..)`` keyed by the digest in hex. claim is
``get`` then ``set``, as with any plain key-value store.
"""

from __future__ import annotations

from litestar.stores.memory import MemoryStore

from benchmarks.subjects.base import Setup
from benchmarks.subjects.sql import digest
from benchmarks.workload import TTL_S

__all__ = ["LitestarMemory"]


class LitestarMemory:
    name = "litestar-memory"
    description = "litestar MemoryStore: get; set(expires_in); claim = get then set"
    server: str | None = None

    def __init__(self) -> None:
        self._store: MemoryStore | None = None

    async def open(self, setup: Setup) -> None:
        store = MemoryStore()
        for session_id, alloc_id in setup.dataset.sessions:
            await store.set(digest(session_id).hex(), alloc_id, expires_in=TTL_S)
        self._store = store

    def _s(self) -> MemoryStore:
        assert self._store is not None, "open() first"
        return self._store

    async def lookup(self, session_id: str) -> str | None:
        value = await self._s().get(digest(session_id).hex())
        return None if value is None else value.decode()

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._s().set(digest(session_id).hex(), alloc_id, expires_in=TTL_S)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        store = self._s()
        key = digest(session_id).hex()
        value = await store.get(key)
        if value is not None:
            return value.decode()
        await store.set(key, alloc_id, expires_in=TTL_S)
        return alloc_id

    async def close(self) -> None:
        self._store = None
