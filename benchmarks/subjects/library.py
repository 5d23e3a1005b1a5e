"""What every one of the library's own stacks shares: open one repository, pass calls through.

A stack says how to build (and preload) its repository and what to remove after;
the calls are the library's public API with the workload's ttl, as a user makes them.
"""

from __future__ import annotations

from benchmarks.subjects.base import Setup
from benchmarks.workload import ALLOC_IDS, CLAIMER, TTL_S
from session_repo import SessionRepository

__all__ = ["LibrarySubject"]


class LibrarySubject:
    name = "library"
    description = ""
    server: str | None = None

    def __init__(self) -> None:
        self._repo: SessionRepository | None = None

    async def build(self, setup: Setup) -> SessionRepository:
        """The repository, not yet opened; preloading may happen in ``preload``."""
        raise NotImplementedError

    async def preload(self, repo: SessionRepository, setup: Setup) -> None:
        """Load the dataset after opening, if the store does not hold it already."""

    async def remove(self) -> None:
        """Delete what ``build`` created outside the repository."""

    async def open(self, setup: Setup) -> None:
        repo = await self.build(setup)
        await repo.__aenter__()
        self._repo = repo
        await self.preload(repo, setup)
        if setup.heartbeats:  # after preloading: a heartbeat's epoch is what rows carry
            for owner in (*ALLOC_IDS, CLAIMER):
                await repo.heartbeat(owner, 10 * TTL_S)

    def _r(self) -> SessionRepository:
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
        await self.remove()
