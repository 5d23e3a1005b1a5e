"""What a benchmarked stack provides, and what it gets to prepare itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from benchmarks.database import SqliteTemplate
from benchmarks.workload import Dataset

__all__ = ["Setup", "Subject"]


@dataclass(frozen=True)
class Setup:
    """What a subject may use to preload itself: the sessions, or a preloaded SQLite copy."""

    dataset: Dataset
    sqlite: SqliteTemplate


class Subject(Protocol):
    """One stack under test. Every operation hashes the session id in its measured path."""

    name: str
    description: str

    async def open(self, setup: Setup) -> None:
        """Get ready with the dataset's sessions preloaded (not measured)."""

    async def lookup(self, session_id: str) -> str | None: ...

    async def upsert(self, session_id: str, alloc_id: str) -> None: ...

    async def claim(self, session_id: str, alloc_id: str) -> str: ...

    async def close(self) -> None: ...
