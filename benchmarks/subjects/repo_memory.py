"""The library's in-process backend: ``MemorySessionRepository``."""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.workload import TTL_S
from session_repo import MemorySessionRepository

__all__ = ["RepoMemory"]


class RepoMemory:
    name = "repo-memory"
    description = "MemorySessionRepository, bound large enough that nothing is evicted"
    server: str | None = None

    def __init__(self) -> None:
        self._repo: MemorySessionRepository | None = None

    async def open(self, setup: Setup) -> None:
        sessions = setup.dataset.sessions
        # Room for every claim of the run too: eviction is not what is measured.
        repo = MemorySessionRepository(max_sessions=10 * len(sessions) + 1_000_000)
        await repo.__aenter__()
        for session_id, alloc_id in sessions:
            await repo.upsert(session_id, alloc_id, TTL_S)
        self._repo = repo

    def _r(self) -> MemorySessionRepository:
        assert self._repo is not None, "open() first"
        return self._repo

    async def lookup(self, session_id: str) -> str | None:
        return await self._r().lookup(session_id)

    async def upsert(self, session_id: str, alloc_id: str) -> None:
        await self._r().upsert(session_id, alloc_id, TTL_S)

    async def claim(self, session_id: str, alloc_id: str) -> str:
        return await self._r().claim(session_id, alloc_id, TTL_S)

    async def close(self) -> None:
        if self._repo is not None:
            await self._repo.close()
            self._repo = None
