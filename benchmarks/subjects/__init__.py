"""The stacks a run can measure, by name. Add a module and a line here for a new one."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.subjects.base import Setup, Subject
from benchmarks.subjects.raw_aiosqlite import RawAiosqlite
from benchmarks.subjects.raw_asyncmy import RawAsyncmy
from benchmarks.subjects.raw_asyncpg import RawAsyncpg
from benchmarks.subjects.raw_asyncpg_pgbouncer import RawAsyncpgPgbouncer
from benchmarks.subjects.raw_redis import RawRedis
from benchmarks.subjects.raw_redis_cluster import RawRedisCluster
from benchmarks.subjects.raw_redis_lua import RawRedisLua
from benchmarks.subjects.raw_sqlite3 import RawSqlite3
from benchmarks.subjects.repo_mariadb import RepoMariadb
from benchmarks.subjects.repo_memory import RepoMemory
from benchmarks.subjects.repo_pg_pgbouncer import RepoPgPgbouncer
from benchmarks.subjects.repo_postgres import RepoPostgres
from benchmarks.subjects.repo_redis import RepoRedis
from benchmarks.subjects.repo_redis_cluster import RepoRedisCluster
from benchmarks.subjects.repo_resilient import RepoResilient
from benchmarks.subjects.repo_sqlite import RepoSqlite
from benchmarks.subjects.ttl_cache import TtlCacheReference

__all__ = ["NAMES", "SUBJECTS", "UNAVAILABLE", "Setup", "Subject", "server_of"]

# Every stack, in report order; SUBJECTS holds those this environment can run.
NAMES = (
    "repo-sqlite",
    "repo-resilient",
    "aiosqlite",
    "sqlite3",
    "repo-pg",
    "asyncpg",
    "repo-pg-pgbouncer",
    "asyncpg-pgbouncer",
    "repo-mariadb",
    "asyncmy",
    "repo-redis",
    "redis-py-lua",
    "redis-py",
    "repo-redis-cluster",
    "redis-py-cluster",
    "litestar-redis",
    "repo-memory",
    "ttlcache",
    "litestar-memory",
)

_FOUND: dict[str, Callable[[], Subject]] = {
    "repo-sqlite": RepoSqlite,
    "repo-resilient": RepoResilient,
    "aiosqlite": RawAiosqlite,
    "sqlite3": RawSqlite3,
    "repo-pg": RepoPostgres,
    "asyncpg": RawAsyncpg,
    "repo-pg-pgbouncer": RepoPgPgbouncer,
    "asyncpg-pgbouncer": RawAsyncpgPgbouncer,
    "repo-mariadb": RepoMariadb,
    "asyncmy": RawAsyncmy,
    "repo-redis": RepoRedis,
    "redis-py-lua": RawRedisLua,
    "redis-py": RawRedis,
    "repo-redis-cluster": RepoRedisCluster,
    "redis-py-cluster": RawRedisCluster,
    "repo-memory": RepoMemory,
    "ttlcache": TtlCacheReference,
}

# Why a stack cannot run here: Litestar comes with the [dev] extra, not with [test].
UNAVAILABLE: dict[str, str] = {}
try:
    from benchmarks.subjects.litestar_memory import LitestarMemory
    from benchmarks.subjects.litestar_redis import LitestarRedis
except ImportError as exc:
    for _name in ("litestar-memory", "litestar-redis"):
        UNAVAILABLE[_name] = f"litestar is not installed ({exc}); pip install -e '.[dev]'"
else:
    _FOUND.update({"litestar-memory": LitestarMemory, "litestar-redis": LitestarRedis})

SUBJECTS: dict[str, Callable[[], Subject]] = {n: _FOUND[n] for n in NAMES if n in _FOUND}


def server_of(name: str) -> str | None:
    """The server a subject needs ("postgresql", "mariadb", "redis"), or None."""
    if name not in SUBJECTS:
        return None
    server: str | None = getattr(SUBJECTS[name], "server", None)
    return server
