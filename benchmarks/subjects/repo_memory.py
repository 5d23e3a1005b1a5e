"""The library's in-process backend: ``MemorySessionRepository``."""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from benchmarks.workload import TTL_S
from session_repo import MemorySessionRepository, SessionRepository

__all__ = ["RepoMemory"]


class RepoMemory(LibrarySubject):
    name = "repo-memory"
    description = "MemorySessionRepository, bound large enough that nothing is evicted"

    async def build(self, setup: Setup) -> SessionRepository:
        # Room for every claim of the run too: eviction is not what is measured.
        return MemorySessionRepository(max_sessions=10 * len(setup.dataset.sessions) + 1_000_000)

    async def preload(self, repo: SessionRepository, setup: Setup) -> None:
        for session_id, alloc_id in setup.dataset.sessions:
            await repo.upsert(session_id, alloc_id, TTL_S)
