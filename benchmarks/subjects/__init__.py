"""The stacks a run can measure, by name. Add a module and a line here for a new one."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.subjects.base import Setup, Subject
from benchmarks.subjects.raw_aiosqlite import RawAiosqlite
from benchmarks.subjects.raw_sqlite3 import RawSqlite3
from benchmarks.subjects.repo_memory import RepoMemory
from benchmarks.subjects.repo_sqlite import RepoSqlite
from benchmarks.subjects.ttl_cache import TtlCacheReference

__all__ = ["SUBJECTS", "Setup", "Subject"]

SUBJECTS: dict[str, Callable[[], Subject]] = {
    "repo-sqlite": RepoSqlite,
    "aiosqlite": RawAiosqlite,
    "sqlite3": RawSqlite3,
    "repo-memory": RepoMemory,
    "ttlcache": TtlCacheReference,
}
